//! The app's state: sessions, the last login seen, API replies.

use super::*;

pub(crate) struct App {
    pub(crate) debug_endpoints: bool,
    pub(crate) sessions: Mutex<Sessions>,
    /// Bearer tokens of the single-page app (`/api/token`), bounded like sessions.
    pub(crate) tokens: Mutex<Sessions>,
    /// Last login request, kept only when debug endpoints are on.
    pub(crate) last_login: Mutex<Option<LoginRecord>>,
}

/// Live sessions: token -> user, with creation order for eviction.
#[derive(Default)]
pub(crate) struct Sessions {
    pub(crate) by_token: HashMap<String, (&'static str, u64)>,
    pub(crate) by_age: BTreeMap<u64, String>,
    pub(crate) next_seq: u64,
}

impl Sessions {
    pub(crate) fn create(&mut self, token: String, user: &'static str) {
        while self.by_token.len() >= MAX_SESSIONS {
            match self.by_age.pop_first() {
                Some((_, oldest)) => {
                    self.by_token.remove(&oldest);
                }
                None => break,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, token.clone());
        self.by_token.insert(token, (user, seq));
    }

    pub(crate) fn user(&self, token: &str) -> Option<&'static str> {
        self.by_token.get(token).map(|(user, _)| *user)
    }

    pub(crate) fn remove(&mut self, token: &str) {
        if let Some((_, seq)) = self.by_token.remove(token) {
            self.by_age.remove(&seq);
        }
    }
}

/// What `/__debug/last-login` reports. Never holds a password or cookie.
#[derive(Serialize, Clone)]
pub(crate) struct LoginRecord {
    pub(crate) path: String,
    pub(crate) content_type: Option<String>,
    pub(crate) field_names: Vec<String>,
    pub(crate) username: Option<String>,
    pub(crate) body_len: usize,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) method: String,
    /// The status the app answered with.
    pub(crate) status: u16,
}

/// Body of every `/api/login` answer, keys in this order.
#[derive(Serialize)]
pub(crate) struct ApiReply<'a> {
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
}

impl<'a> ApiReply<'a> {
    pub(crate) fn success(user: &'a str) -> Self {
        ApiReply {
            ok: true,
            user: Some(user),
            error: None,
        }
    }

    pub(crate) fn failure(error: &'a str) -> Self {
        ApiReply {
            ok: false,
            user: None,
            error: Some(error),
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // in a way that matters for a demo; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
