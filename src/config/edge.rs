//! The edge: the public listeners (plain, TLS, redirect-only, PROXY protocol) and which peers
//! are trusted to say who the client is.
//!
//! Certificate and key files are read and checked while the file is parsed, so a missing file,
//! an unreadable key or a key that does not belong to its certificate is reported at the line
//! and column of the key that names it (by `check-config` as by a reload).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::{self, MapAccess, Visitor};
use serde::Deserializer;

use super::*;

/// One public listener: `"ADDR:PORT"` (plain HTTP) or a mapping with `address` and `tls`,
/// `redirect_to_https` or `proxy_protocol`.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(with = "ListenerSchema")]
pub struct Listener {
    pub address: ListenAddr,
    /// Serve HTTPS (HTTP/2 by ALPN, HTTP/1.1 otherwise) with this default certificate.
    pub tls: Option<TlsFiles>,
    /// Answer every request with a redirect to the same URL over HTTPS; nothing is proxied.
    pub redirect_to_https: bool,
    /// The connection starts with a PROXY protocol (v1 or v2) header naming the client. Only
    /// peers in `server.trusted_proxies` may connect to such a listener.
    pub proxy_protocol: bool,
}

impl Listener {
    pub fn plain(address: ListenAddr) -> Listener {
        Listener {
            address,
            tls: None,
            redirect_to_https: false,
            proxy_protocol: false,
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.address)?;
        if self.redirect_to_https {
            f.write_str(" (redirects to https)")?;
        }
        if self.proxy_protocol {
            f.write_str(" (PROXY protocol)")?;
        }
        Ok(())
    }
}

/// What the JSON Schema says a listener is (the deserializer accepts the same two shapes).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ListenerSchema {
    /// A plain HTTP listener, e.g. "0.0.0.0:8080".
    Address(String),
    Table(ListenerTable),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListenerTable {
    /// IP:PORT to listen on.
    address: ListenAddr,
    /// Certificate and key of this listener (PEM); the default certificate when several are
    /// given by apps.
    #[serde(default)]
    tls: Option<TlsFiles>,
    /// A plain listener that only redirects to HTTPS.
    #[serde(default)]
    redirect_to_https: bool,
    /// Expect a PROXY protocol v1/v2 header from trusted peers (TLS listeners only).
    #[serde(default)]
    proxy_protocol: bool,
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListenerVisitor;
        impl<'de> Visitor<'de> for ListenerVisitor {
            type Value = Listener;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"IP:PORT\" or a mapping with `address` and `tls`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Listener, E> {
                let address = text.trim().parse().map(ListenAddr).map_err(|_| {
                    E::custom(format!(
                        "expected IP:PORT such as \"0.0.0.0:8080\" or \"127.0.0.1:9090\", found {text:?}"
                    ))
                })?;
                Ok(Listener::plain(address))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Listener, A::Error> {
                let table = ListenerTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if table.tls.is_some() && table.redirect_to_https {
                    return Err(de::Error::custom(
                        "a listener either serves HTTPS (`tls`) or redirects to it (`redirect_to_https`), not both",
                    ));
                }
                if table.proxy_protocol && table.tls.is_none() {
                    return Err(de::Error::custom(
                        "`proxy_protocol` needs `tls` on the same listener (the PROXY header is read before the TLS handshake); behind an HTTP load balancer use `server.trusted_proxies` and X-Forwarded-For instead",
                    ));
                }
                Ok(Listener {
                    address: table.address,
                    tls: table.tls,
                    redirect_to_https: table.redirect_to_https,
                    proxy_protocol: table.proxy_protocol,
                })
            }
        }
        d.deserialize_any(ListenerVisitor)
    }
}

/// A certificate chain and its private key, both PEM, checked to belong together.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "TlsFilesTable")]
pub struct TlsFiles {
    /// PEM file with the certificate first and its intermediates after it.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Keep it readable by
    /// gaitkeeper's user only.
    pub key_file: PathBuf,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TlsFilesTable {
    cert_file: CertFile,
    key_file: KeyFile,
}

impl TryFrom<TlsFilesTable> for TlsFiles {
    type Error = String;
    fn try_from(table: TlsFilesTable) -> Result<Self, String> {
        let files = TlsFiles {
            cert_file: table.cert_file.0,
            key_file: table.key_file.0,
        };
        files.load().map_err(|e| e.to_string())?;
        Ok(files)
    }
}

/// A certificate file that was readable and held a certificate when the config was parsed.
#[derive(JsonSchema)]
#[schemars(with = "PathBuf")]
struct CertFile(PathBuf);

impl<'de> Deserialize<'de> for CertFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(d)?;
        read_chain(&path).map_err(|e| de::Error::custom(e.to_string()))?;
        Ok(CertFile(path))
    }
}

/// A key file that was readable and held a private key when the config was parsed.
#[derive(JsonSchema)]
#[schemars(with = "PathBuf")]
struct KeyFile(PathBuf);

impl<'de> Deserialize<'de> for KeyFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::deserialize(d)?;
        read_key(&path).map_err(|e| de::Error::custom(e.to_string()))?;
        Ok(KeyFile(path))
    }
}

/// Why a certificate or key could not be used. The Display form names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error(
        "{path} holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)"
    )]
    NoKey { path: String },
    #[error("{path}: the key cannot be used for TLS: {reason}")]
    BadKey { path: String, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: String, key: String },
}

/// The largest certificate or key file read; a real chain is a few kilobytes.
const MAX_PEM_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    use std::io::Read;
    let read_err = |reason| TlsFileError::Read {
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_PEM_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The certificate chain of a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read_bounded(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(chain)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsFileError::NoKey {
        path: path.display().to_string(),
    })
}

impl TlsFiles {
    /// Reads both files and checks that the key signs for the certificate.
    pub fn load(&self) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, TlsFileError> {
        let chain = read_chain(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let key_path = || self.key_file.display().to_string();
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
            TlsFileError::BadKey {
                path: key_path(),
                reason: e.to_string(),
            }
        })?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => Ok(std::sync::Arc::new(certified)),
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsFileError::Mismatch {
                cert: self.cert_file.display().to_string(),
                key: key_path(),
            }),
            // Keys whose public half rustls cannot compare (rare) are accepted as they are.
            Err(_) => Ok(std::sync::Arc::new(certified)),
        }
    }
}
