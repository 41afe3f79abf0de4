//! The smallest pingora reverse proxy: every request to one upstream, no filters, default
//! settings. Not part of gaitkeeper — the benchmark runs it next to gaitkeeper and nginx to show
//! how much of the cost is pingora's own and how much gaitkeeper adds.
//!
//! Usage: `bare_proxy LISTEN_ADDR UPSTREAM_ADDR THREADS`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR THREADS");
        std::process::exit(2);
    }
    let upstream = args[2].parse().expect("UPSTREAM_ADDR is IP:PORT");
    let threads = args[3].parse().expect("THREADS is a number");
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
