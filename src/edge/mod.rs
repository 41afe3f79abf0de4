//! The edge: what happens between the client's TCP connection and the HTTP request the proxy
//! sees. Owns TLS on the public listeners (certificates chosen by SNI, reloaded when their
//! files change, their expiry watched), the PROXY protocol from trusted load balancers, and
//! the client's real address and scheme ([`ClientOrigin`]) — believed from forwarding headers
//! only when the TCP peer is one of `server.trusted_proxies`.

mod origin;
mod proxy_protocol;
mod tls;

pub use origin::{client_origin, ClientOrigin};
pub use proxy_protocol::{parse_proxy_header, ProxyHeader, ProxyHeaderError, ProxyProtocol};
pub use tls::{CertPool, CertPoolError, ListenerCerts};
mod redirect;
pub use redirect::RedirectToHttps;
