//! Value types of the config file that validate themselves while they are parsed, so that a bad
//! value is reported with the exact line and column it came from.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// A duration written with a unit: `250ms`, `2s`, `5m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "A duration with a unit: ms, s, m or h (e.g. \"500ms\", \"30s\")."
)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }
}

/// Deserialises a YAML string with `parse`; its error message becomes the config error, which
/// serde-saphyr places at the value's line and column.
fn from_text<'de, D, T>(d: D, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| parse_duration(text).map(HumanDuration))
    }
}

/// The number and the unit of `12h`-like text: digits, then at least one other character.
/// `None` without digits, without a unit, or past `u64`.
pub(crate) fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || {
        format!("expected a duration with a unit such as \"500ms\", \"30s\", \"5m\" or \"1h\", found {text:?}")
    };
    let (number, unit) = number_and_unit(text.trim()).ok_or_else(expected)?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return Err(expected()),
    };
    // A day is far above any timeout or TTL gaitkeeper uses; larger values are typos.
    match millis {
        Some(ms) if ms <= 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is longer than the maximum of 24h")),
    }
}

/// How long data is kept, with a unit of hours or days: `72h`, `90d` (1h to 3650d).
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "A retention period in hours or days, e.g. \"72h\" or \"90d\"."
)]
pub struct RetentionPeriod(pub Duration);

impl RetentionPeriod {
    pub const fn days(days: u64) -> Self {
        RetentionPeriod(Duration::from_secs(days * 86_400))
    }
}

impl<'de> Deserialize<'de> for RetentionPeriod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| parse_retention(text).map(RetentionPeriod))
    }
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a period in hours or days such as \"72h\" or \"90d\", found {text:?}");
    let (number, unit) = number_and_unit(text.trim()).ok_or_else(expected)?;
    let hours = match unit {
        "h" => number,
        "d" => number.saturating_mul(24),
        _ => return Err(expected()),
    };
    if !(1..=3650 * 24).contains(&hours) {
        return Err(format!("{text:?} is outside 1h to 3650d"));
    }
    Ok(Duration::from_secs(hours * 3600))
}

/// A local address to listen on, `IP:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "An IP address and port to listen on, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"."
)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| {
            text.trim().parse().map(ListenAddr).map_err(|_| {
                format!(
                    "expected IP:PORT such as \"0.0.0.0:8080\" or \"127.0.0.1:9090\", found {text:?}"
                )
            })
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "An IP network in CIDR notation, e.g. \"10.0.0.0/8\" or \"192.0.2.7/32\"."
)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| Cidr(n.trunc()))
                .map_err(|_| {
                    format!("expected an IP network such as \"10.0.0.0/8\" or an address, found {text:?}")
                })
        })
    }
}

/// The upstream app's address, `HOST:PORT`. The host name is resolved when the config is
/// loaded (and again on every reload), never on the request path.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "The app's HOST:PORT, e.g. \"127.0.0.1:3000\" or \"app.internal:8080\"."
)]
pub struct UpstreamAddr {
    pub host: String,
    pub port: u16,
    pub resolved: SocketAddr,
}

impl<'de> Deserialize<'de> for UpstreamAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| parse_upstream(text.trim()))
    }
}

fn parse_upstream(text: &str) -> Result<UpstreamAddr, String> {
    let expected = || format!("expected HOST:PORT such as \"127.0.0.1:3000\", found {text:?}");
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(expected());
    }
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream host {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("upstream host {host:?} resolved to no address"))?;
    Ok(UpstreamAddr {
        host: host.to_string(),
        port,
        resolved,
    })
}

/// A URL path prefix that starts and ends with `/`, e.g. `/__gk/`.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "A path prefix starting and ending with '/', e.g. \"/__gk/\"."
)]
pub struct PathPrefix(pub String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_text(d, |text| {
            let valid = text.len() >= 3
                && text.len() <= 64
                && text.starts_with('/')
                && text.ends_with('/')
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
            if valid {
                Ok(PathPrefix(text.to_string()))
            } else {
                Err(format!(
                    "expected a path prefix of letters, digits, '_', '-', '.' that starts and ends with '/', such as \"/__gk/\", found {text:?}"
                ))
            }
        })
    }
}

/// A secret (signing keys and the like). Written in the file as a reference to where the value
/// lives, so the value itself never sits in the YAML: `{ env: NAME }` or `{ file: PATH }`.
/// Its Debug form is redacted so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq, JsonSchema)]
#[schemars(with = "SecretSource")]
pub struct Secret(Vec<u8>);

/// Where a secret's value is read from.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum SecretSource {
    /// The name of an environment variable holding the secret.
    Env(String),
    /// A file holding the secret (surrounding whitespace is ignored).
    File(String),
}

/// Secrets shorter than this are rejected: they sign tokens and key user identifiers.
pub(super) const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 4096;

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub fn for_tests(bytes: &[u8]) -> Self {
        Secret(bytes.to_vec())
    }

    /// A secret given directly (tests, tools); the same rules as the config file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET_BYTES || bytes.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "a secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes long, it has {}",
                bytes.len()
            ));
        }
        if let Some(why) = weakness(bytes) {
            return Err(format!("the secret is too weak: {why}"));
        }
        Ok(Secret(bytes.to_vec()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = SecretSource::deserialize(d)?;
        let (value, origin) = match &source {
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "environment variable {name} is not set (or is not valid UTF-8); set it to a random string of at least {MIN_SECRET_BYTES} characters, e.g. `export {name}=$(head -c 32 /dev/urandom | base64)`"
                    ))
                })?,
                format!("environment variable {name}"),
            ),
            SecretSource::File(path) => {
                crate::files::check_secret_file(std::path::Path::new(path))
                    .map_err(serde::de::Error::custom)?;
                (
                    std::fs::read_to_string(path).map_err(|e| {
                        serde::de::Error::custom(format!("cannot read secret file {path:?}: {e}"))
                    })?,
                    format!("secret file {path:?}"),
                )
            }
        };
        let value = value.trim();
        if value.len() < MIN_SECRET_BYTES || value.len() > MAX_SECRET_BYTES {
            return Err(serde::de::Error::custom(format!(
                "the secret in {origin} must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes long, it has {}",
                value.len()
            )));
        }
        if let Some(why) = weakness(value.as_bytes()) {
            return Err(serde::de::Error::custom(format!(
                "the secret in {origin} is too weak: {why}; generate one with `head -c 32 /dev/urandom | base64`"
            )));
        }
        Ok(Secret(value.as_bytes().to_vec()))
    }
}

/// Estimated entropy below which a secret is refused. The estimate from character frequencies
/// is low on short strings: a 32-character hex key of random bytes (128 real bits) comes out
/// at 100 to 120 bits, so the bar sits well below that.
const MIN_SECRET_BITS: f64 = 80.0;

/// Why `secret` looks guessable, if it does: a repeated pattern, few distinct characters, or
/// little entropy by the frequencies of its characters (an estimate: it cannot see that a
/// secret is a dictionary phrase, but it refuses `aaaa…`, `abcabc…` and `0123…0123…`).
/// Counting distinct characters alone would refuse a quarter of random hex keys
/// (`openssl rand -hex 32` uses only 16 characters, and often not all of them).
fn weakness(secret: &[u8]) -> Option<String> {
    let mut counts = [0usize; 256];
    for &b in secret {
        counts[b as usize] += 1;
    }
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    if distinct < 8 {
        return Some(format!("it uses only {distinct} different characters"));
    }
    let n = secret.len();
    if let Some(period) = (1..=n / 2).find(|&p| secret[p..] == secret[..n - p]) {
        return Some(format!("it repeats a pattern of {period} characters"));
    }
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -(c as f64) * p.log2()
        })
        .sum();
    (bits < MIN_SECRET_BITS).then(|| {
        format!(
            "its characters carry about {bits:.0} bits of entropy, fewer than {MIN_SECRET_BITS:.0}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused_and_random_ones_are_not() {
        for weak in [
            "a".repeat(40),
            "ab".repeat(20),
            "0123456789abcdef".repeat(2),
            "password-password-password-password".to_string(),
        ] {
            assert!(weakness(weak.as_bytes()).is_some(), "{weak}");
        }
        assert!(weakness(b"test-secret-0123456789abcdef0123456789").is_none());
        use base64::Engine;
        for _ in 0..2000 {
            let bytes: [u8; 32] = rand::random();
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            assert!(weakness(b64.as_bytes()).is_none(), "{b64}");
            let hex = hex::encode(bytes);
            assert!(weakness(hex.as_bytes()).is_none(), "{hex}");
            let half: [u8; 16] = rand::random();
            let hex = hex::encode(half);
            assert!(weakness(hex.as_bytes()).is_none(), "{hex}");
        }
    }

    #[test]
    fn durations_need_a_unit_and_a_sane_size() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "5",
            "s",
            "2 sec",
            "-1s",
            "1.5s",
            "25h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn retention_takes_hours_or_days() {
        assert_eq!(parse_retention("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_retention("90d"), Ok(Duration::from_secs(90 * 86_400)));
        for bad in [
            "",
            "90",
            "0d",
            "3651d",
            "1.5d",
            "2w",
            "99999999999999999999d",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn upstream_addresses_need_host_and_port() {
        let ok = parse_upstream("127.0.0.1:3000").unwrap();
        assert_eq!(ok.port, 3000);
        assert_eq!(ok.resolved, "127.0.0.1:3000".parse().unwrap());
        let v6 = parse_upstream("[::1]:80").unwrap();
        assert_eq!(v6.host, "::1");
        for bad in ["127.0.0.1", ":80", "host:0", "host:99999", "host:port"] {
            assert!(parse_upstream(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let secret = Secret::for_tests(b"correct horse battery staple 12345");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
