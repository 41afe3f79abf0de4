//! Security alerts against a real HTTP receiver on 127.0.0.1: signed deliveries, retries when
//! the receiver is down or failing, throttling per user, and a full queue that drops and counts.

use crate::common;

use common::receiver::Receiver;

use std::sync::Arc;
use std::time::Duration;

use gaitkeeper::alert::{
    Alert, AlertConfig, AlertEvent, Alerter, WebhookConfig, WebhookUrl, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
use gaitkeeper::audit::{AuditConfig, AuditStream, Auditor};
use gaitkeeper::config::{HumanDuration, Secret, StoreConfig};
use gaitkeeper::metrics::Metrics;
use gaitkeeper::store::Store;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;

const WEBHOOK_SECRET: &[u8] = b"webhook-secret-0123456789abcdef0123";

struct Setup {
    alerter: Alerter,
    auditor: Auditor,
    store: Store,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn deliveries(&self, result: &str) -> u64 {
        self.metrics
            .alerts
            .deliveries
            .with_label_values(&[result])
            .get()
    }
}

fn webhook(port: u16) -> WebhookConfig {
    let yaml = format!(
        "url: \"http://127.0.0.1:{port}/hooks/gk\"\nsecret: {{ env: GK_TEST_WEBHOOK_SECRET }}\ntimeout: 2s\nmax_attempts: 5\nbackoff: 50ms\nthrottle: 0s\n"
    );
    // Every test sets the same value.
    std::env::set_var(
        "GK_TEST_WEBHOOK_SECRET",
        std::str::from_utf8(WEBHOOK_SECRET).unwrap(),
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

async fn setup(webhook: WebhookConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &StoreConfig::default(),
        dir.path(),
        &Secret::from_bytes(common::SECRET.as_bytes()).unwrap(),
    )
    .await
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let audit = AuditConfig {
        stream: AuditStream::Off,
        ..AuditConfig::default()
    };
    let auditor = Auditor::new(&audit, store.clone(), dir.path(), metrics.audit.clone()).unwrap();
    let alerter = Alerter::new(
        &AlertConfig { webhook },
        auditor.clone(),
        metrics.alerts.clone(),
    )
    .unwrap();
    Setup {
        alerter,
        auditor,
        store,
        metrics,
        _dir: dir,
    }
}

fn block(incident: &str, user: &str) -> Alert {
    let mut alert = Alert::new(AlertEvent::Block, incident);
    alert.user_key = Some(user.to_string());
    alert.route = Some("login".into());
    alert.risk = Some(0.97);
    alert.reasons = serde_json::json!([{ "feature": "flight_mean", "z": 5.2 }]);
    alert.client_ip = Some("127.0.0.1".into());
    alert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_arrives_with_a_signature_the_receiver_can_verify() {
    let (receiver, port) = Receiver::start(&[], false).await;
    let setup = setup(webhook(port)).await;
    setup.alerter.notify(block("GK-SIGNED0001", "ab12"));
    common::eventually(Duration::from_secs(10), "the alert arrives", || async {
        setup.deliveries("delivered") == 1
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    let timestamp = request.header(TIMESTAMP_HEADER).unwrap();
    let signature = request.header(SIGNATURE_HEADER).unwrap();
    // What a receiver does: HMAC-SHA256 over "timestamp.body", compared in constant time.
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    let hex_sig = signature.strip_prefix("sha256=").unwrap();
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("the signature verifies");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp.parse::<u64>().unwrap()) < 60);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["alert"]["event"], "block");
    assert_eq!(body["alert"]["incident"], "GK-SIGNED0001");
    assert_eq!(body["alert"]["user_key"], "ab12");
    assert_eq!(body["alert"]["risk"], 0.97);
    assert_eq!(body["alert"]["reasons"][0]["feature"], "flight_mean");
    assert!(body["id"].is_string());

    // A tampered body does not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET).unwrap();
    mac.update(format!("{timestamp}.{{}}").as_bytes());
    assert!(mac.verify_slice(&hex::decode(hex_sig).unwrap()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_until_it_accepts() {
    let (receiver, port) = Receiver::start(&[503, 500], false).await;
    let setup = setup(webhook(port)).await;
    setup.alerter.notify(block("GK-RETRY00001", "cd34"));
    common::eventually(
        Duration::from_secs(10),
        "the alert is delivered",
        || async { setup.deliveries("delivered") == 1 },
    )
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 3, "two failures, then the delivery");
    assert_eq!(
        got[0].json()["id"],
        got[2].json()["id"],
        "the same alert each time"
    );
    assert_eq!(setup.deliveries("failed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_alert_once_it_is_up() {
    let port = common::free_port();
    let setup = setup(WebhookConfig {
        max_attempts: 20,
        backoff: HumanDuration(Duration::from_millis(100)),
        ..webhook(port)
    })
    .await;
    setup.alerter.notify(block("GK-DOWN000001", "ef56"));
    // The receiver stays down for a while (the condition under test, not a wait for it).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(setup.deliveries("delivered"), 0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let receiver = Receiver::start_on(listener, &[], false).await;
    common::eventually(
        Duration::from_secs(30),
        "the alert is delivered",
        || async { setup.deliveries("delivered") == 1 },
    )
    .await;
    assert_eq!(
        receiver.received()[0].json()["alert"]["incident"],
        "GK-DOWN000001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_is_counted_and_audited() {
    let (receiver, port) = Receiver::start(&[500, 500, 500], false).await;
    let setup = setup(WebhookConfig {
        max_attempts: 2,
        ..webhook(port)
    })
    .await;
    setup.alerter.notify(block("GK-FAILED0001", "0a0b"));
    common::eventually(Duration::from_secs(10), "the alert fails", || async {
        setup.deliveries("failed") == 1
    })
    .await;
    assert_eq!(receiver.received().len(), 2);
    // The audit record is handed over right after the count.
    common::eventually(Duration::from_secs(5), "the failure is audited", || async {
        setup.auditor.flush().await;
        !setup
            .store
            .audit_by_incident("GK-FAILED0001")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let events = setup
        .store
        .audit_by_incident("GK-FAILED0001")
        .await
        .unwrap();
    assert_eq!(events[0].kind, "alert.delivery_failed");
    assert!(
        events[0].detail["outcome"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{:?}",
        events[0].detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_alerts_for_one_user_are_throttled() {
    let (receiver, port) = Receiver::start(&[], false).await;
    let setup = setup(WebhookConfig {
        throttle: HumanDuration(Duration::from_secs(3600)),
        ..webhook(port)
    })
    .await;
    setup.alerter.notify(block("GK-THROTTLE01", "user-a"));
    setup.alerter.notify(block("GK-THROTTLE02", "user-a"));
    setup.alerter.notify(block("GK-THROTTLE03", "user-b"));
    let mut failed = Alert::new(AlertEvent::ChallengeFailed, "GK-THROTTLE04");
    failed.user_key = Some("user-a".into());
    setup.alerter.notify(failed);
    common::eventually(
        Duration::from_secs(10),
        "three alerts delivered",
        || async { setup.deliveries("delivered") == 3 },
    )
    .await;
    assert_eq!(setup.deliveries("throttled"), 1);
    let mut incidents: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["alert"]["incident"].as_str().unwrap().to_string())
        .collect();
    incidents.sort();
    assert_eq!(
        incidents,
        ["GK-THROTTLE01", "GK-THROTTLE03", "GK-THROTTLE04"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_not_configured_are_not_sent() {
    let (receiver, port) = Receiver::start(&[], false).await;
    let setup = setup(WebhookConfig {
        events: vec![AlertEvent::Replay],
        ..webhook(port)
    })
    .await;
    setup.alerter.notify(block("GK-NOTSENT001", "u"));
    setup
        .alerter
        .notify(Alert::new(AlertEvent::Replay, "GK-REPLAY0001"));
    common::eventually(
        Duration::from_secs(10),
        "the replay alert arrives",
        || async { setup.deliveries("delivered") == 1 },
    )
    .await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(receiver.received()[0].json()["alert"]["event"], "replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_alerts_counts_and_audits_them() {
    let (_receiver, port) = Receiver::start(&[], true).await;
    let setup = setup(WebhookConfig {
        queue: 1,
        ..webhook(port)
    })
    .await;
    let started = std::time::Instant::now();
    for i in 0..100 {
        setup
            .alerter
            .notify(block(&format!("GK-FLOOD{i:04}"), &format!("user-{i}")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "notify never waits for the receiver"
    );
    // At most 16 deliveries in flight plus one queued; the rest are dropped.
    let dropped = setup.deliveries("dropped");
    assert!(dropped >= 100 - 17 - 1, "dropped {dropped}");
    setup.auditor.flush().await;
    let events = setup.store.audit_tail(1000, None).await.unwrap();
    let audited = events.iter().filter(|e| e.kind == "alert.dropped").count();
    assert_eq!(audited as u64, dropped);
}

#[test]
fn the_webhook_url_is_checked_when_the_config_loads() {
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    let text = "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: { env: GK_TEST_SECRET }\nalerts:\n  webhook:\n    url: \"ftp://siem.internal/hook\"\n    secret: { env: GK_TEST_SECRET }\n";
    let err = gaitkeeper::config::Config::parse(text, "FILE")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("FILE:7:10: key `alerts.webhook.url`: expected an http:// or https:// URL"),
        "{err}"
    );
    let text = common::edited(
        text,
        "ftp://siem.internal/hook",
        "https://siem.internal/hook",
    );
    let config = gaitkeeper::config::Config::parse(&text, "FILE").unwrap();
    let webhook = config.alerts.unwrap().webhook;
    assert_eq!(
        webhook.url,
        WebhookUrl("https://siem.internal/hook".parse().unwrap())
    );
    assert_eq!(webhook.events.len(), 5, "every event by default");
}
