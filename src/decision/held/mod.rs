//! Held logins: a login the policy challenged waits here under an unguessable id until the
//! user passes the second factor (then it is replayed to the app exactly as sent), fails it,
//! or the challenge expires. Bounded in count, bytes and time; taking a login out for replay
//! removes it, so a completed challenge cannot be used twice.
//!
//! Kept in this process's memory (one instance), or sealed in the shared state
//! (`server.shared_state: store`, see `sealed`), where any instance can answer the challenge
//! and every single-use step is one atomic statement.

mod sealed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::{HeldDropped, LoginAttempt};
use crate::shared::{HeldRow, HeldTotals, SharedState, StateError};

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
    /// When the login was held: a second factor must be proven after it (an OpenID Connect
    /// provider's `auth_time`).
    pub held_at: SystemTime,
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
        HeldLogin::from_parts(
            attempt,
            request.method.clone(),
            request.uri.clone(),
            headers,
            body,
            binding,
            xhr,
            SystemTime::now(),
        )
    }

    /// A held login from what was kept of it (headers already without hop-by-hop ones).
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        attempt: LoginAttempt,
        method: http::Method,
        uri: http::Uri,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: Bytes,
        binding: String,
        xhr: bool,
        held_at: SystemTime,
    ) -> HeldLogin {
        HeldLogin {
            attempt,
            method,
            uri,
            headers,
            body,
            binding,
            xhr,
            held_at,
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
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let total =
            512 + headers + self.body.len() + self.attempt.login.len() + self.uri.to_string().len();
        total as u64
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

/// The held logins, in this process or shared by every instance.
pub struct HeldLogins {
    kept: Kept,
}

enum Kept {
    Memory(Cache<String, Arc<HeldLogin>>),
    Shared(Box<SharedHeld>),
}

/// Held logins in the shared state.
struct SharedHeld {
    state: Arc<dyn SharedState>,
    seal: sealed::HeldSeal,
    max_count: u64,
    max_bytes: u64,
    /// Every entry weighs at least its share of the byte budget, which bounds the count.
    floor: u64,
    ttl: Duration,
    on_dropped: Box<DroppedListener>,
}

type DroppedListener = dyn Fn(Arc<HeldLogin>, HeldDropped) + Send + Sync;

/// Expired held logins one sweep settles at most (the rest wait for the next sweep).
const SWEEP_LIMIT: u32 = 2_000;

impl HeldLogins {
    /// At most `max_count` held logins and `max_bytes` of them, each kept at most `ttl`, in
    /// this process. When full, the least recently used held login is dropped. `on_dropped`
    /// hears of every held login that leaves without being taken: `expired` or `evicted` (to
    /// settle and audit it).
    pub fn new(
        max_count: usize,
        max_bytes: u64,
        ttl: Duration,
        on_dropped: impl Fn(Arc<HeldLogin>, HeldDropped) + Send + Sync + 'static,
    ) -> HeldLogins {
        let floor = weight_floor(max_count, max_bytes);
        HeldLogins {
            kept: Kept::Memory(
                Cache::builder()
                    .max_capacity(max_bytes)
                    .weigher(move |_id: &String, login: &Arc<HeldLogin>| {
                        u32::try_from(login.weight().max(floor)).unwrap_or(u32::MAX)
                    })
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
            ),
        }
    }

    /// The same bounds over the held logins of every instance sharing `state`, sealed under
    /// a key derived from `secret` (`secrets.key`, the same on every instance). When full,
    /// the oldest are dropped; expired ones are settled by whichever instance sweeps first.
    pub fn shared(
        state: Arc<dyn SharedState>,
        secret: &[u8],
        max_count: usize,
        max_bytes: u64,
        ttl: Duration,
        on_dropped: impl Fn(Arc<HeldLogin>, HeldDropped) + Send + Sync + 'static,
    ) -> HeldLogins {
        HeldLogins {
            kept: Kept::Shared(Box::new(SharedHeld {
                state,
                seal: sealed::HeldSeal::derive(secret),
                max_count: max_count as u64,
                max_bytes,
                floor: weight_floor(max_count, max_bytes),
                ttl,
                on_dropped: Box::new(on_dropped),
            })),
        }
    }

    /// Runs expiry now; called periodically so expired challenges are settled and audited
    /// even when nobody touches them (moka expires lazily; shared rows only carry their
    /// deadline).
    pub(crate) async fn sweep(&self) -> Result<(), StateError> {
        match &self.kept {
            Kept::Memory(logins) => {
                logins.run_pending_tasks();
                Ok(())
            }
            Kept::Shared(shared) => {
                for row in shared.state.expired_held(SWEEP_LIMIT).await? {
                    shared.dropped(&row, HeldDropped::Expired);
                }
                Ok(())
            }
        }
    }

    /// Holds `login` under the challenge id `id`.
    pub async fn hold(&self, id: String, login: HeldLogin) -> Result<(), StateError> {
        match &self.kept {
            Kept::Memory(logins) => {
                logins.insert(id, Arc::new(login));
                Ok(())
            }
            Kept::Shared(shared) => {
                let key = sealed::row_key(&id);
                let row = HeldRow {
                    key,
                    sealed: shared.seal.seal(&key, &login),
                    bytes: login.weight().max(shared.floor),
                    attempts: 0,
                    inline: 0,
                    released: false,
                    expires_ms: crate::runtime::unix_millis(std::time::SystemTime::now())
                        + shared.ttl.as_millis() as u64,
                };
                let before = shared.state.hold(&row).await?;
                if before.count + 1 > shared.max_count
                    || before.bytes + row.bytes > shared.max_bytes
                {
                    for gone in shared
                        .state
                        .evict_held(shared.max_count, shared.max_bytes)
                        .await?
                    {
                        shared.dropped(&gone, HeldDropped::Evicted);
                    }
                }
                Ok(())
            }
        }
    }

    /// The held login, left in place (showing the challenge page, counting attempts).
    pub async fn get(&self, id: &str) -> Result<Option<Arc<HeldLogin>>, StateError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        match &self.kept {
            Kept::Memory(logins) => Ok(logins.get(id).filter(|l| !l.is_released())),
            Kept::Shared(shared) => {
                let key = sealed::row_key(id);
                let row = shared.state.held(&key, false).await?;
                Ok(row.and_then(|row| shared.open(&row)))
            }
        }
    }

    /// Removes and returns the held login: only one caller, on any instance, ever gets it.
    pub async fn take(&self, id: &str) -> Result<Option<Arc<HeldLogin>>, StateError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        match &self.kept {
            Kept::Memory(logins) => {
                let Some(taken) = logins.remove(id) else {
                    return Ok(None);
                };
                if taken.is_released() {
                    // A proof is not a challenge id: put it back.
                    logins.insert(id.to_string(), taken);
                    return Ok(None);
                }
                Ok(Some(taken))
            }
            Kept::Shared(shared) => {
                let row = shared.state.take_held(&sealed::row_key(id), false).await?;
                Ok(row.and_then(|row| shared.open(&row)))
            }
        }
    }

    /// Counts one failed attempt at `id`'s challenge; how many there have been, or `None`
    /// when the held login is gone.
    pub(crate) async fn failed_attempt(
        &self,
        id: &str,
        held: &HeldLogin,
    ) -> Result<Option<u32>, StateError> {
        match &self.kept {
            Kept::Memory(_) => Ok(Some(held.failed_attempt())),
            Kept::Shared(shared) => {
                let attempts = shared
                    .state
                    .count_held_attempt(&sealed::row_key(id))
                    .await?;
                if let Some(attempts) = attempts {
                    held.attempts.store(attempts, Ordering::Relaxed);
                }
                Ok(attempts)
            }
        }
    }

    /// Marks `id`'s challenge as shown inside the page, in a frame or a popup.
    pub(crate) async fn set_inline(
        &self,
        id: &str,
        held: &HeldLogin,
        how: Inline,
    ) -> Result<(), StateError> {
        held.set_inline(how);
        match &self.kept {
            Kept::Memory(_) => Ok(()),
            Kept::Shared(shared) => {
                shared
                    .state
                    .set_held_inline(&sealed::row_key(id), how as u8)
                    .await
            }
        }
    }

    /// A passed challenge shown inside the page: the held login moves from its challenge id
    /// to a new random proof, which only the page that showed the challenge learns (from the
    /// frame or popup, by `postMessage` to its own origin). `None` when it is gone (another
    /// request passed it first).
    pub async fn release(&self, id: &str, held: &HeldLogin) -> Result<Option<String>, StateError> {
        let proof = random_proof();
        match &self.kept {
            Kept::Memory(logins) => {
                let Some(held) = self.take(id).await? else {
                    return Ok(None);
                };
                held.released.store(true, Ordering::Relaxed);
                logins.insert(proof.clone(), held);
                Ok(Some(proof))
            }
            Kept::Shared(shared) => {
                let key = sealed::row_key(&proof);
                let row = HeldRow {
                    key,
                    sealed: shared.seal.seal(&key, held),
                    bytes: 0,
                    attempts: held.attempts(),
                    inline: held.inline.load(Ordering::Relaxed),
                    released: true,
                    expires_ms: 0,
                };
                let moved = shared
                    .state
                    .release_held(&sealed::row_key(id), &row)
                    .await?;
                Ok(moved.then_some(proof))
            }
        }
    }

    /// The released login for `proof`, once.
    pub async fn resume(&self, proof: &str) -> Result<Option<Arc<HeldLogin>>, StateError> {
        if !plausible_id(proof) {
            return Ok(None);
        }
        match &self.kept {
            Kept::Memory(logins) => {
                let Some(held) = logins.remove(proof) else {
                    return Ok(None);
                };
                if held.is_released() {
                    Ok(Some(held))
                } else {
                    // A challenge id is not a proof: put it back.
                    logins.insert(proof.to_string(), held);
                    Ok(None)
                }
            }
            Kept::Shared(shared) => {
                let row = shared
                    .state
                    .take_held(&sealed::row_key(proof), true)
                    .await?;
                Ok(row.and_then(|row| shared.open(&row)))
            }
        }
    }

    /// Held logins right now and their bytes (approximate), of every instance when shared.
    pub async fn totals(&self) -> Result<HeldTotals, StateError> {
        match &self.kept {
            Kept::Memory(logins) => {
                logins.run_pending_tasks();
                Ok(HeldTotals {
                    count: logins.entry_count(),
                    bytes: logins.weighted_size(),
                })
            }
            Kept::Shared(shared) => shared.state.held_totals().await,
        }
    }
}

impl SharedHeld {
    /// The held login in `row`, with its shared counters. A row that does not open (sealed
    /// with another `secrets.key`, or damaged) is as good as gone, and said so.
    fn open(&self, row: &HeldRow) -> Option<Arc<HeldLogin>> {
        let Some(login) = self.seal.open(&row.key, &row.sealed) else {
            tracing::warn!("a held login in the shared state does not open (another secrets.key on another instance?); its challenge cannot be answered");
            return None;
        };
        login.attempts.store(row.attempts, Ordering::Relaxed);
        login.inline.store(row.inline, Ordering::Relaxed);
        login.released.store(row.released, Ordering::Relaxed);
        Some(Arc::new(login))
    }

    fn dropped(&self, row: &HeldRow, why: HeldDropped) {
        if let Some(login) = self.open(row) {
            (self.on_dropped)(login, why);
        }
    }
}

/// The least weight a held login counts for: its share of the byte budget.
fn weight_floor(max_count: usize, max_bytes: u64) -> u64 {
    max_bytes / max_count.max(1) as u64
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
            inputs: Some(crate::policy::Inputs::of(
                crate::policy::Finding::MissingTelemetry,
            )),
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

    #[tokio::test]
    async fn a_held_login_is_taken_once_and_hop_by_hop_headers_are_not_kept() {
        let held = HeldLogins::new(10, 1 << 20, Duration::from_secs(60), |_, _| {});
        let id = "A".repeat(24);
        held.hold(id.clone(), login(b"a=1")).await.unwrap();
        let first = held.take(&id).await.unwrap().expect("held");
        assert!(first.headers.iter().all(|(n, _)| n != "content-length"));
        assert!(first.headers.iter().any(|(n, _)| n == "cookie"));
        assert!(held.take(&id).await.unwrap().is_none(), "single use");
        assert!(held.get("short").await.unwrap().is_none());
        assert!(held
            .get("../../etc/passwd-aaaaaaaaaaaaa")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn expired_and_evicted_logins_are_reported_and_counts_stay_bounded() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let seen = dropped.clone();
        let held = HeldLogins::new(4, 1 << 20, Duration::from_millis(50), move |l, why| {
            seen.lock().unwrap().push((l.attempt.incident.clone(), why));
        });
        for i in 0..10 {
            held.hold(format!("{i:0>24}"), login(b"x")).await.unwrap();
        }
        held.sweep().await.unwrap();
        let count = held.totals().await.unwrap().count;
        assert!(count <= 4, "{count} held");
        tokio::time::sleep(Duration::from_millis(120)).await;
        held.sweep().await.unwrap();
        assert_eq!(held.totals().await.unwrap().count, 0);
        let dropped = dropped.lock().unwrap();
        assert_eq!(dropped.len(), 10);
        assert!(dropped.iter().any(|(_, why)| *why == HeldDropped::Expired));
        assert!(dropped.iter().any(|(_, why)| *why == HeldDropped::Evicted));
    }

    /// A store on a SQLite file: the same statements the shared state runs on PostgreSQL
    /// (the integration tests run them there, with several instances).
    async fn store(dir: &std::path::Path) -> Arc<dyn SharedState> {
        let secret = crate::config::Secret::from_bytes(SECRET).unwrap();
        let store = crate::store::Store::open(&Default::default(), dir, &secret)
            .await
            .unwrap();
        Arc::new(store)
    }

    const SECRET: &[u8] = b"held-test-secret-0123456789abcdef";

    fn shared_held(
        state: &Arc<dyn SharedState>,
        max_count: usize,
        ttl: Duration,
        dropped: &Arc<Mutex<Vec<(String, HeldDropped)>>>,
    ) -> HeldLogins {
        let seen = dropped.clone();
        HeldLogins::shared(
            state.clone(),
            SECRET,
            max_count,
            1 << 20,
            ttl,
            move |l, why| {
                seen.lock().unwrap().push((l.attempt.incident.clone(), why));
            },
        )
    }

    #[tokio::test]
    async fn shared_held_logins_are_sealed_single_use_and_open_only_where_they_were_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let state = store(dir.path()).await;
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let held = shared_held(&state, 10, Duration::from_secs(60), &dropped);
        let id = "B".repeat(32);
        held.hold(id.clone(), login(b"username=alice&password=hunter2"))
            .await
            .unwrap();

        // Nothing of it in clear: not the password, the name, the id, the incident.
        let row = state
            .held(&sealed::row_key(&id), false)
            .await
            .unwrap()
            .expect("kept");
        for clear in [
            &b"hunter2"[..],
            b"alice",
            id.as_bytes(),
            b"GK-TEST",
            b"binding",
        ] {
            assert!(
                !row.sealed.windows(clear.len()).any(|w| w == clear),
                "{} in clear",
                String::from_utf8_lossy(clear)
            );
        }
        // Another key (another instance's secrets.key), or the row moved under another
        // key, does not open it.
        let other = sealed::HeldSeal::derive(b"another-secret-0123456789abcdef0");
        assert!(other.open(&row.key, &row.sealed).is_none());
        let mine = sealed::HeldSeal::derive(SECRET);
        assert!(mine
            .open(&sealed::row_key("C".repeat(32).as_str()), &row.sealed)
            .is_none());
        let opened = mine.open(&row.key, &row.sealed).expect("opens");
        assert_eq!(&opened.body[..], b"username=alice&password=hunter2");
        assert_eq!(opened.attempt.verdict.rule, "on_missing_telemetry");
        assert_eq!(opened.attempt.user, UserKey([7; 32]));

        // Attempts are counted in the row; the login is read back whole.
        let got = held.get(&id).await.unwrap().expect("held");
        assert_eq!(held.failed_attempt(&id, &got).await.unwrap(), Some(1));
        assert_eq!(held.failed_attempt(&id, &got).await.unwrap(), Some(2));
        let got = held.get(&id).await.unwrap().expect("held");
        assert_eq!(got.attempts(), 2);
        assert_eq!(got.method, http::Method::POST);
        assert!(got
            .headers
            .iter()
            .any(|(n, v)| n == "cookie" && v == "app=1"));

        // Shown in the page, passed: released under a proof, resumed once.
        held.set_inline(&id, &got, Inline::Popup).await.unwrap();
        let got = held.get(&id).await.unwrap().expect("held");
        assert_eq!(got.inline(), Some(Inline::Popup));
        let proof = held.release(&id, &got).await.unwrap().expect("released");
        assert!(
            held.get(&id).await.unwrap().is_none(),
            "no longer a challenge"
        );
        assert!(
            held.release(&id, &got).await.unwrap().is_none(),
            "released once"
        );
        assert!(
            held.take(&proof).await.unwrap().is_none(),
            "a proof is no challenge id"
        );
        assert!(
            held.resume(&id).await.unwrap().is_none(),
            "an id is no proof"
        );
        let resumed = held.resume(&proof).await.unwrap().expect("resumed");
        assert_eq!(&resumed.body[..], b"username=alice&password=hunter2");
        assert!(held.resume(&proof).await.unwrap().is_none(), "once");

        // Taken once; gone after.
        let id = "D".repeat(32);
        held.hold(id.clone(), login(b"x")).await.unwrap();
        assert!(held.take(&id).await.unwrap().is_some());
        assert!(held.take(&id).await.unwrap().is_none());
        assert_eq!(held.totals().await.unwrap().count, 0);
        assert!(dropped.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shared_held_logins_stay_within_the_bounds_and_expired_ones_are_settled() {
        let dir = tempfile::tempdir().unwrap();
        let state = store(dir.path()).await;
        let dropped = Arc::new(Mutex::new(Vec::new()));
        // Two "instances" on one table: the bound is over both.
        let a = shared_held(&state, 4, Duration::from_millis(300), &dropped);
        let b = shared_held(&state, 4, Duration::from_millis(300), &dropped);
        for i in 0..10 {
            let held = if i % 2 == 0 { &a } else { &b };
            held.hold(format!("{i:0>24}"), login(b"x")).await.unwrap();
            // Distinct creation times, so "oldest" is well defined.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(a.totals().await.unwrap().count, 4);
        assert_eq!(dropped.lock().unwrap().len(), 6);
        assert!(dropped
            .lock()
            .unwrap()
            .iter()
            .all(|(_, why)| *why == HeldDropped::Evicted));
        // The newest stayed.
        assert!(b.get(&format!("{:0>24}", 9)).await.unwrap().is_some());
        assert!(a.get(&format!("{:0>24}", 0)).await.unwrap().is_none());

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            a.get(&format!("{:0>24}", 9)).await.unwrap().is_none(),
            "expired"
        );
        a.sweep().await.unwrap();
        b.sweep().await.unwrap();
        let dropped = dropped.lock().unwrap();
        assert_eq!(dropped.len(), 10, "each settled once");
        assert_eq!(
            dropped
                .iter()
                .filter(|(_, why)| *why == HeldDropped::Expired)
                .count(),
            4
        );
    }
}
