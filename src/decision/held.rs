//! Held logins: a login the policy challenged waits here, in memory, under an unguessable id
//! until the user passes the second factor (then it is replayed to the app exactly as sent),
//! fails it, or the challenge expires. Bounded in count, bytes and time; taking a login out
//! for replay removes it, so a completed challenge cannot be used twice.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::{HeldDropped, LoginAttempt};

/// A login waiting for its second factor. Holds the password-bearing body: never logged,
/// dropped at expiry.
pub struct HeldLogin {
    /// The login as judged (its login name is needed to record it and to name the user to
    /// an external MFA provider).
    pub attempt: LoginAttempt,
    pub method: http::Method,
    pub uri: http::Uri,
    /// The request headers to replay, in order (hop-by-hop ones already dropped).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The body the app receives (telemetry already taken out).
    pub body: Bytes,
    /// The value of the per-browser cookie set with the challenge redirect; the challenge is
    /// only answered from the browser that holds it.
    pub binding: String,
    /// The login was sent with fetch/XHR: challenged with JSON, not a redirect.
    pub xhr: bool,
    attempts: AtomicU32,
    /// Where the challenge is shown inside the page ([`Inline`] as a number; 0: not inline).
    /// Once an inline challenge is passed, the page's script resumes the login itself
    /// (`HeldLogins::release`).
    inline: AtomicU8,
    /// Passed and waiting for the page to resume it, under a proof instead of its challenge id.
    released: AtomicBool,
}

/// How the capture script shows a challenge inside the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inline {
    /// In a frame of the page's overlay: other sites (an external provider) open in a window.
    Frame = 1,
    /// In a window the page opened (its CSP forbids frames).
    Popup = 2,
}

impl HeldLogin {
    /// Holds `attempt`'s request (its head and the body the app is to receive) for the browser
    /// holding `binding`.
    pub fn new(
        attempt: LoginAttempt,
        request: &http::request::Parts,
        body: Bytes,
        binding: String,
        xhr: bool,
    ) -> HeldLogin {
        let headers = request
            .headers
            .iter()
            .filter(|(name, _)| !is_hop_by_hop(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        HeldLogin {
            attempt,
            method: request.method.clone(),
            uri: request.uri.clone(),
            headers,
            body,
            binding,
            xhr,
            attempts: AtomicU32::new(0),
            inline: AtomicU8::new(0),
            released: AtomicBool::new(false),
        }
    }

    /// Marks the challenge as shown inside the page, in a frame or a popup.
    pub(crate) fn set_inline(&self, how: Inline) {
        self.inline.store(how as u8, Ordering::Relaxed);
    }

    pub(crate) fn is_inline(&self) -> bool {
        self.inline().is_some()
    }

    /// How the challenge is shown inside the page, if it is.
    pub fn inline(&self) -> Option<Inline> {
        match self.inline.load(Ordering::Relaxed) {
            1 => Some(Inline::Frame),
            2 => Some(Inline::Popup),
            _ => None,
        }
    }

    /// Passed and waiting under a resume proof (no longer a challenge).
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Counts one failed attempt; returns how many there have been.
    pub(crate) fn failed_attempt(&self) -> u32 {
        self.attempts.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Approximate memory taken, for the size bound.
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let total =
            512 + headers + self.body.len() + self.attempt.login.len() + self.uri.to_string().len();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Headers that describe one connection, not the request; never replayed.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "content-length"
    )
}

/// The held logins of this instance.
pub struct HeldLogins {
    logins: Cache<String, Arc<HeldLogin>>,
}

impl HeldLogins {
    /// At most `max_count` held logins and `max_bytes` of them, each kept at most `ttl`. When
    /// full, the least recently used held login is dropped. `on_dropped` hears of every held
    /// login that leaves without being taken: `expired` or `evicted` (to settle and audit it).
    pub fn new(
        max_count: usize,
        max_bytes: u64,
        ttl: Duration,
        on_dropped: impl Fn(Arc<HeldLogin>, HeldDropped) + Send + Sync + 'static,
    ) -> HeldLogins {
        // Every entry weighs at least its share of the byte budget, which bounds the count.
        let floor = u32::try_from(max_bytes / max_count.max(1) as u64).unwrap_or(u32::MAX);
        HeldLogins {
            logins: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(move |_id: &String, login: &Arc<HeldLogin>| login.weight().max(floor))
                .time_to_live(ttl)
                .eviction_listener(move |_id, login, cause| {
                    let why = match cause {
                        RemovalCause::Expired => HeldDropped::Expired,
                        RemovalCause::Size => HeldDropped::Evicted,
                        RemovalCause::Explicit | RemovalCause::Replaced => return,
                    };
                    on_dropped(login, why);
                })
                .build(),
        }
    }

    /// Runs expiry now (moka expires lazily); called periodically so expired challenges are
    /// settled and audited even when nobody touches the cache.
    pub(crate) fn sweep(&self) {
        self.logins.run_pending_tasks();
    }

    pub fn hold(&self, id: String, login: HeldLogin) -> Arc<HeldLogin> {
        let login = Arc::new(login);
        self.logins.insert(id, login.clone());
        login
    }

    /// The held login, left in place (showing the challenge page, counting attempts).
    pub fn get(&self, id: &str) -> Option<Arc<HeldLogin>> {
        if !plausible_id(id) {
            return None;
        }
        self.logins.get(id).filter(|l| !l.is_released())
    }

    /// Removes and returns the held login: only one caller ever gets it.
    pub fn take(&self, id: &str) -> Option<Arc<HeldLogin>> {
        if !plausible_id(id) {
            return None;
        }
        let taken = self.logins.remove(id)?;
        if taken.is_released() {
            // A proof is not a challenge id: put it back.
            self.logins.insert(id.to_string(), taken);
            return None;
        }
        Some(taken)
    }

    /// A passed challenge shown inside the page: the held login moves from its challenge id
    /// to a new random proof, which only the page that showed the challenge learns (from the
    /// frame or popup, by `postMessage` to its own origin). `None` when it is gone (another
    /// request passed it first).
    pub fn release(&self, id: &str) -> Option<String> {
        let held = self.take(id)?;
        held.released.store(true, Ordering::Relaxed);
        let proof = random_proof();
        self.logins.insert(proof.clone(), held);
        Some(proof)
    }

    /// The released login for `proof`, once.
    pub fn resume(&self, proof: &str) -> Option<Arc<HeldLogin>> {
        if !plausible_id(proof) {
            return None;
        }
        let held = self.logins.remove(proof)?;
        if held.is_released() {
            Some(held)
        } else {
            // A challenge id is not a proof: put it back.
            self.logins.insert(proof.to_string(), held);
            None
        }
    }

    /// Held logins right now (approximate).
    pub fn len(&self) -> u64 {
        self.logins.run_pending_tasks();
        self.logins.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held right now (approximate).
    pub fn weighted_bytes(&self) -> u64 {
        self.logins.run_pending_tasks();
        self.logins.weighted_size()
    }
}

/// 192 random bits, URL-safe (like a challenge id).
fn random_proof() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Challenge ids are URL-safe base64 of random bytes; anything else is not looked up.
fn plausible_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserKey;
    use std::sync::Mutex;

    fn login(body: &[u8]) -> HeldLogin {
        let (parts, ()) = http::Request::post("/login")
            .header("content-length", "3")
            .header("cookie", "app=1")
            .body(())
            .unwrap()
            .into_parts();
        let attempt = LoginAttempt {
            app: "default".into(),
            route: "login".into(),
            login: "alice".into(),
            user: UserKey([7; 32]),
            client_ip: "127.0.0.1".into(),
            incident: "GK-TEST".into(),
            request_id: "req".into(),
            features: None,
            risk: None,
            reasons: serde_json::Value::Null,
            verdict: crate::policy::decide(
                &crate::policy::DEFAULT_POLICY,
                crate::policy::Finding::MissingTelemetry,
            ),
            mode: crate::policy::Mode::Enforce,
        };
        HeldLogin::new(
            attempt,
            &parts,
            Bytes::copy_from_slice(body),
            "binding".into(),
            false,
        )
    }

    #[test]
    fn a_held_login_is_taken_once_and_hop_by_hop_headers_are_not_kept() {
        let held = HeldLogins::new(10, 1 << 20, Duration::from_secs(60), |_, _| {});
        let id = "A".repeat(24);
        held.hold(id.clone(), login(b"a=1"));
        let first = held.take(&id).expect("held");
        assert!(first.headers.iter().all(|(n, _)| n != "content-length"));
        assert!(first.headers.iter().any(|(n, _)| n == "cookie"));
        assert!(held.take(&id).is_none(), "single use");
        assert!(held.get("short").is_none());
        assert!(held.get("../../etc/passwd-aaaaaaaaaaaaa").is_none());
    }

    #[test]
    fn expired_and_evicted_logins_are_reported_and_counts_stay_bounded() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let seen = dropped.clone();
        let held = HeldLogins::new(4, 1 << 20, Duration::from_millis(50), move |l, why| {
            seen.lock().unwrap().push((l.attempt.incident.clone(), why));
        });
        for i in 0..10 {
            held.hold(format!("{i:0>24}"), login(b"x"));
        }
        held.sweep();
        assert!(held.len() <= 4, "{} held", held.len());
        std::thread::sleep(Duration::from_millis(120));
        held.sweep();
        assert_eq!(held.len(), 0);
        let dropped = dropped.lock().unwrap();
        assert_eq!(dropped.len(), 10);
        assert!(dropped.iter().any(|(_, why)| *why == HeldDropped::Expired));
        assert!(dropped.iter().any(|(_, why)| *why == HeldDropped::Evicted));
    }
}
