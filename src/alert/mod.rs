//! Security alerts: blocks, failed challenges and replays, POSTed as signed JSON to the
//! security team's webhook.
//!
//! Owns: the alert queue, per-user throttling, signing, and delivery with retries and backoff
//! from a background worker. Never on the request path: [`Alerter::notify`] only puts the alert
//! in a bounded queue, and a full queue drops the alert (counted and audited) rather than wait.
//! Never logs the webhook secret, nor the webhook URL (it often carries a token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

use crate::audit::{kind, AuditRecord, Auditor};
use crate::config::Secret;
use crate::metrics::AlertMetrics;

/// The header carrying `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub const SIGNATURE_HEADER: &str = "X-Gaitkeeper-Signature";
/// The header carrying the Unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Gaitkeeper-Timestamp";

/// Deliveries under way at once; beyond it the queue fills (and then drops).
const MAX_IN_FLIGHT: usize = 16;
/// Users (and client addresses) remembered for throttling.
const MAX_THROTTLE_KEYS: usize = 10_000;
pub use crate::config::{AlertConfig, AlertEvent, WebhookConfig, WebhookUrl, MAX_BACKOFF};
use crate::shared::SharedState;

/// Longest value of a free-text field of an alert, in bytes.
const MAX_FIELD_BYTES: usize = 128;
/// Largest `reasons` document sent, in bytes of JSON; larger ones are left out.
const MAX_REASONS_BYTES: usize = 4096;

/// One alert, as the receiver gets it (plus a delivery `id`).
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub event: AlertEvent,
    /// The incident reference of the login (`gaitkeeper audit show` finds it).
    pub incident: String,
    /// The user's store key in hex, never the login name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// The app (`apps[].name`) the login was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub reasons: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// When it happened, Unix milliseconds.
    pub at: u64,
}

impl Alert {
    /// An alert of `event` for `incident`, stamped now, with no other field set.
    pub fn new(event: AlertEvent, incident: &str) -> Alert {
        Alert {
            event,
            incident: incident.to_string(),
            user_key: None,
            app: None,
            route: None,
            risk: None,
            reasons: serde_json::Value::Null,
            client_ip: None,
            at: crate::runtime::unix_millis(SystemTime::now()),
        }
    }

    /// The alert about what an audit record describes (same incident, user, route, risk,
    /// reasons, client address and time).
    pub(crate) fn for_record(event: AlertEvent, record: &AuditRecord) -> Alert {
        Alert {
            event,
            incident: record.incident.clone(),
            user_key: record.user_key.clone(),
            app: record.app.clone(),
            route: record.route.clone(),
            risk: record.risk,
            reasons: record.reasons.clone(),
            client_ip: record.client_ip.clone(),
            at: record.at,
        }
    }

    fn bounded(mut self) -> Alert {
        crate::audit::clip(&mut self.incident, 32);
        for field in [
            &mut self.user_key,
            &mut self.app,
            &mut self.route,
            &mut self.client_ip,
        ]
        .into_iter()
        .flatten()
        {
            crate::audit::clip(field, MAX_FIELD_BYTES);
        }
        if self.risk.is_some_and(|r| !r.is_finite()) {
            self.risk = None;
        }
        if self.reasons.to_string().len() > MAX_REASONS_BYTES {
            self.reasons = serde_json::json!({ "truncated": true });
        }
        self
    }

    /// Who the throttle counts this alert against: the user, else the client address.
    fn throttle_key(&self) -> Option<(AlertEvent, String)> {
        let who = self.user_key.as_ref().or(self.client_ip.as_ref())?;
        Some((self.event, who.clone()))
    }
}

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot set up the alert webhook client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the alert worker: {0}")]
    Thread(#[source] std::io::Error),
}

/// Sends security alerts. Cheap to clone, usable from any thread or runtime; [`Alerter::off`]
/// is one that sends nothing (no `alerts:` in the config).
#[derive(Clone)]
pub struct Alerter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    queue: mpsc::Sender<Alert>,
    events: Vec<AlertEvent>,
    auditor: Auditor,
    metrics: AlertMetrics,
}

impl Alerter {
    /// Starts the delivery worker on its own thread (with its own small runtime), so neither
    /// the caller's runtime nor a slow receiver can hold up a login.
    pub fn new(
        config: &AlertConfig,
        auditor: Auditor,
        metrics: AlertMetrics,
    ) -> Result<Alerter, AlertError> {
        Alerter::throttled_across(config, auditor, metrics, None)
    }

    /// [`Alerter::new`], with the throttle kept in `shared` as well, so several instances
    /// send one alert per user and event per throttle period between them.
    pub(crate) fn throttled_across(
        config: &AlertConfig,
        auditor: Auditor,
        metrics: AlertMetrics,
        shared: Option<Arc<dyn SharedState>>,
    ) -> Result<Alerter, AlertError> {
        let w = &config.webhook;
        let client = reqwest::Client::builder()
            .timeout(w.timeout.0)
            .connect_timeout(w.timeout.0)
            // A receiver that redirects is misconfigured; following it would send signed
            // alerts somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gaitkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertError::Client)?;
        let (queue, inbox) = mpsc::channel(w.queue);
        let sender = Arc::new(Sender {
            client,
            url: w.url.0.clone(),
            secret: w.secret.clone(),
            max_attempts: w.max_attempts,
            backoff: w.backoff.0,
            auditor: auditor.clone(),
            metrics: metrics.clone(),
        });
        let throttle = w.throttle.0;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AlertError::Thread)?;
        std::thread::Builder::new()
            .name("gk-alert".into())
            .spawn(move || runtime.block_on(run(inbox, sender, throttle, shared)))
            .map_err(AlertError::Thread)?;
        Ok(Alerter {
            inner: Some(Arc::new(Inner {
                queue,
                events: w.events.clone(),
                auditor,
                metrics,
            })),
        })
    }

    /// An alerter that sends nothing.
    pub fn off() -> Alerter {
        Alerter { inner: None }
    }

    /// Queues the alert if its event is configured; never waits and never fails. A full
    /// queue drops the alert, counts it and audits it (`alert.dropped`).
    pub fn notify(&self, alert: Alert) {
        let Some(inner) = &self.inner else { return };
        if !inner.events.contains(&alert.event) {
            return;
        }
        if let Err(e) = inner.queue.try_send(alert.bounded()) {
            let alert = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            inner
                .metrics
                .deliveries
                .with_label_values(&["dropped"])
                .inc();
            inner.auditor.record(audit_record(
                kind::ALERT_DROPPED,
                &alert,
                "the alert queue was full",
            ));
        }
    }
}

fn audit_record(kind: &str, alert: &Alert, why: &str) -> AuditRecord {
    let mut record = AuditRecord::new(kind, &alert.incident);
    record.user_key = alert.user_key.clone();
    record.app = alert.app.clone();
    record.route = alert.route.clone();
    record.client_ip = alert.client_ip.clone();
    record.outcome = Some(format!("{}: {why}", alert.event.as_str()));
    record
}

/// Whether an alert for `key` was sent within `throttle`: by this instance (`last_sent`,
/// bounded), or by another (`shared`; an error there sends the alert: better twice than
/// never). Not throttled: it is remembered as sent now.
async fn throttled(
    last_sent: &mut HashMap<(AlertEvent, String), Instant>,
    key: (AlertEvent, String),
    throttle: Duration,
    shared: Option<&dyn SharedState>,
) -> bool {
    let now = Instant::now();
    if last_sent
        .get(&key)
        .is_some_and(|at| now.duration_since(*at) < throttle)
    {
        return true;
    }
    if last_sent.len() >= MAX_THROTTLE_KEYS {
        last_sent.retain(|_, at| now.duration_since(*at) < throttle);
        if last_sent.len() >= MAX_THROTTLE_KEYS {
            // Under a flood of distinct users, alert rather than stay silent.
            last_sent.clear();
        }
    }
    let id = format!("{}\0{}", key.0.as_str(), key.1);
    last_sent.insert(key, now);
    let Some(shared) = shared else {
        return false;
    };
    let until = crate::runtime::unix_secs(SystemTime::now()) + throttle.as_secs().max(1);
    matches!(
        shared.first_use("alert", id.as_bytes(), until).await,
        Ok(false)
    )
}

/// The worker: throttles, then hands each alert to a delivery task (at most
/// [`MAX_IN_FLIGHT`] at once).
async fn run(
    mut inbox: mpsc::Receiver<Alert>,
    sender: Arc<Sender>,
    throttle: Duration,
    shared: Option<Arc<dyn SharedState>>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut last_sent: HashMap<(AlertEvent, String), Instant> = HashMap::new();
    while let Some(alert) = inbox.recv().await {
        let throttled = match alert.throttle_key() {
            Some(key) if !throttle.is_zero() => {
                throttled(&mut last_sent, key, throttle, shared.as_deref()).await
            }
            _ => false,
        };
        if throttled {
            sender
                .metrics
                .deliveries
                .with_label_values(&["throttled"])
                .inc();
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            sender.deliver(alert).await;
            drop(permit);
        });
    }
    // Every handle is gone: let the deliveries under way finish.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

struct Sender {
    client: reqwest::Client,
    url: url::Url,
    secret: Secret,
    max_attempts: u32,
    backoff: Duration,
    auditor: Auditor,
    metrics: AlertMetrics,
}

impl Sender {
    async fn deliver(&self, alert: Alert) {
        let body = serde_json::json!({
            "id": hex::encode(rand::random::<[u8; 16]>()),
            "alert": alert,
        })
        .to_string();
        let mut last_error = String::new();
        for attempt in 1..=self.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(self.backoff, attempt)).await;
            }
            match self.post(&body).await {
                Ok(()) => {
                    self.metrics
                        .deliveries
                        .with_label_values(&["delivered"])
                        .inc();
                    return;
                }
                Err((error, retry)) => {
                    last_error = error;
                    if !retry {
                        break;
                    }
                }
            }
        }
        self.metrics.deliveries.with_label_values(&["failed"]).inc();
        tracing::warn!(event = alert.event.as_str(), incident = %alert.incident, error = %last_error, "security alert not delivered");
        self.auditor.record(audit_record(
            kind::ALERT_DELIVERY_FAILED,
            &alert,
            &last_error,
        ));
    }

    /// One attempt. The error says what happened and whether another attempt may help.
    async fn post(&self, body: &str) -> Result<(), (String, bool)> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let signature = sign(self.secret.expose(), &timestamp, body.as_bytes());
        let response = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, format!("sha256={signature}"))
            .body(body.to_string())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let retry = status.is_server_error()
                    || status == http::StatusCode::REQUEST_TIMEOUT
                    || status == http::StatusCode::TOO_MANY_REQUESTS;
                Err((format!("the webhook answered {status}"), retry))
            }
            // Without the URL: it may carry a token.
            Err(e) => Err((format!("{}", e.without_url()), true)),
        }
    }
}

/// `hex(HMAC-SHA256(secret, timestamp + "." + body))`: what a receiver recomputes and
/// compares (in constant time) with the signature header.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The wait before `attempt` (2, 3, …): `base` doubled per retry, at most [`MAX_BACKOFF`],
/// times a random factor in [0.5, 1.5) so that many failed alerts do not retry in step.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << (attempt.saturating_sub(2)).min(16));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        let second = backoff(base, 2);
        assert!(second >= Duration::from_millis(500) && second < Duration::from_millis(1500));
        let fourth = backoff(base, 4);
        assert!(fourth >= Duration::from_secs(2) && fourth < Duration::from_secs(6));
        assert!(backoff(base, 20) < MAX_BACKOFF.mul_f64(1.5));
    }

    #[test]
    fn an_alert_for_a_record_carries_its_incident_and_user() {
        let mut record = AuditRecord::new(kind::LOGIN_DECISION, "GK-ABCDEFGHJK");
        record.user_key = Some("ab".repeat(32));
        record.risk = Some(0.9);
        let alert = Alert::for_record(AlertEvent::Block, &record);
        assert_eq!(alert.incident, "GK-ABCDEFGHJK");
        assert_eq!(alert.user_key, record.user_key);
        assert_eq!((alert.risk, alert.at), (Some(0.9), record.at));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // RFC 4231-style check against an independent computation.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"123.{}");
        assert_eq!(
            sign(b"key", "123", b"{}"),
            hex::encode(mac.finalize().into_bytes())
        );
    }
}
