//! The Prometheus registry every stage reports into. One registry per process, owned here, so
//! later stages (decisions, scoring, cache) add their families next to the proxy's.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// All metric families, registered once at start.
pub struct Metrics {
    registry: Registry,
    /// Responses sent to clients, by status code.
    pub requests: IntCounterVec,
    /// Failures talking to the app, by kind (`connect`, `timeout`, `reset`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Time from sending the request to the app until its response header, in seconds.
    pub upstream_latency: Histogram,
    /// Config reloads by result (`ok`, `error`).
    pub config_reloads: IntCounterVec,
    /// Requests under the reserved prefix, answered by gaitkeeper itself, by status.
    pub own_endpoint_requests: IntCounterVec,
    /// 1 while a valid config is serving.
    pub config_loaded: IntGauge,
    /// Seconds until each listener certificate expires (negative once expired), by file.
    pub tls_cert_expiry: IntGaugeVec,
    /// Certificate reloads after their files changed or on SIGHUP, by result (`ok`, `error`).
    pub tls_cert_reloads: IntCounterVec,
    /// Operations on the shared state (`server.shared_state: store`) that failed.
    pub state_errors: IntCounter,
    /// Failed logins counted by regulation (in memory, or in the shared state).
    pub regulation_failures: IntCounter,
    /// Login pages the capture script was injected into, by where the tag went.
    pub pages_injected: IntCounterVec,
    /// Login-page responses left alone, by reason (`content_type`, `coding`, `charset`, `status`).
    pub injection_skipped: IntCounterVec,
    /// Login submits refused before their body was read whole, by reason (`timeout`:
    /// slower than `capture.body_timeout`; `too_large`).
    pub login_bodies_refused: IntCounterVec,
    /// Login submits whose name could not be read, by route and reason (`login::Unreadable`).
    pub unreadable_logins: IntCounterVec,
    /// Logins a rule flagged (`features::evidence`, replays), by rule and detail.
    pub rule_flags: IntCounterVec,
    /// 1 for a route whose answered logins have shown no success at all (a success signal
    /// that does not match the app).
    pub route_without_success: prometheus::IntGaugeVec,
    /// Login submits by what their telemetry turned out to be: `ok` or a rejection reason
    /// (`missing`, `malformed`, `bad_signature`, `expired`, `replayed`, `wrong_client`, …).
    pub telemetry: IntCounterVec,
    /// The model cache in front of the store.
    pub model_cache: CacheMetrics,
    /// Login decisions by route and decision (`allow`, `challenge`, `block`, `unscored`, …).
    pub decisions: IntCounterVec,
    /// Risk of scored logins.
    pub risk: Histogram,
    /// Time to score one login from a loaded model (validate to fused risk), in seconds.
    pub scoring_latency: Histogram,
    /// Challenges by event (`issued`, `passed`, `failed`, `expired`, `wrong_code`).
    pub challenges: IntCounterVec,
    /// Forwarded logins by route and what the app's answer showed (`verified`, `failed`).
    pub login_outcomes: IntCounterVec,
    /// Settled logins neither recorded nor learnt from because the store fell behind (their
    /// audit records are kept).
    pub settle_dropped: IntCounter,
    /// Logins held for a second factor right now, and the memory they take.
    pub held_logins: IntGauge,
    pub held_login_bytes: IntGauge,
    /// Used page-token ids remembered to refuse replays (bounded; updated every 5 s).
    pub page_tokens_remembered: IntGauge,
    /// The audit trail's (handed to `audit`).
    pub audit: AuditMetrics,
    /// The alert webhook's (handed to `alert`).
    pub alerts: AlertMetrics,
    /// Continuous learning and the global model.
    pub learning: LearnMetrics,
    /// One resolved counter per status code, so the hot path neither hashes labels nor
    /// allocates. Index 0 stands for "no response was written".
    by_status: Box<[OnceLock<IntCounter>]>,
}

/// What the audit trail reports.
#[derive(Clone)]
pub struct AuditMetrics {
    /// Audit records by where they went: `stored`, `spooled` (store unavailable; delivered
    /// later), `rejected` (the store refused the record itself), `lost` (the spool was full
    /// or unwritable).
    pub records: IntCounterVec,
    /// Bytes waiting in the audit spool for the store to return.
    pub spool_bytes: IntGauge,
}

/// What the alert webhook reports.
#[derive(Clone)]
pub struct AlertMetrics {
    /// Security alerts by result: `delivered`, `failed` (every attempt failed), `throttled`
    /// (the same event for the same user within `alerts.webhook.throttle`), `dropped` (the
    /// alert queue was full).
    pub deliveries: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("gaitkeeper".into()), None)
            .expect("a static prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Responses sent to clients, by status code",
            ),
            &["status"],
        )
        .expect("valid metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "upstream_errors_total",
                "Failures talking to the upstream app, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "upstream_response_seconds",
                "Time from request sent to the upstream until its response header",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Config reloads by result"),
            &["result"],
        )
        .expect("valid metric");
        let own_endpoint_requests = IntCounterVec::new(
            Opts::new(
                "own_endpoint_requests_total",
                "Requests under the reserved prefix answered by gaitkeeper, by status",
            ),
            &["status"],
        )
        .expect("valid metric");
        let config_loaded = IntGauge::new("config_loaded", "1 while a valid config is serving")
            .expect("valid metric");
        let tls_cert_expiry = IntGaugeVec::new(
            Opts::new(
                "tls_cert_expiry_seconds",
                "Seconds until a listener certificate expires (negative once expired)",
            ),
            &["cert"],
        )
        .expect("valid metric");
        let state_errors = IntCounter::new(
            "shared_state_errors_total",
            "Operations on the state instances share that failed (policy.on_state_error decided)",
        )
        .expect("valid metric");
        let regulation_failures = IntCounter::new(
            "regulation_failures_total",
            "Failed logins counted by regulation (per user and per client address)",
        )
        .expect("valid metric");
        let tls_cert_reloads = IntCounterVec::new(
            Opts::new(
                "tls_cert_reloads_total",
                "Listener certificate reloads by result (ok, error: the old one stays)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let pages_injected = IntCounterVec::new(
            Opts::new(
                "pages_injected_total",
                "Login pages the capture script was injected into",
            ),
            &["placement"],
        )
        .expect("valid metric");
        let injection_skipped = IntCounterVec::new(
            Opts::new(
                "injection_skipped_total",
                "Login-page responses left unmodified, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let login_bodies_refused = IntCounterVec::new(
            Opts::new(
                "login_bodies_refused_total",
                "Login submits refused while their body was read (timeout, too_large)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let unreadable_logins = IntCounterVec::new(
            Opts::new(
                "unreadable_logins_total",
                "Login submits whose login name could not be read exactly once, by route and reason",
            ),
            &["app", "route", "reason"],
        )
        .expect("valid metric");
        let rule_flags = IntCounterVec::new(
            Opts::new(
                "login_rule_flags_total",
                "Logins a rule flagged (insufficient_evidence, synthetic_input, timeline_mismatch, replayed_pattern), by rule and detail",
            ),
            &["rule", "detail"],
        )
        .expect("valid metric");
        let route_without_success = prometheus::IntGaugeVec::new(
            Opts::new(
                "route_without_success",
                "1 while a route's answered logins have shown no success at all (check its success signal)",
            ),
            &["app", "route"],
        )
        .expect("valid metric");
        let telemetry = IntCounterVec::new(
            Opts::new(
                "login_telemetry_total",
                "Login submits by telemetry outcome (ok or the rejection reason) and transport",
            ),
            &["outcome", "transport"],
        )
        .expect("valid metric");
        let model_cache = CacheMetrics::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "login_decisions_total",
                "Login decisions by route and decision",
            ),
            &["app", "route", "decision"],
        )
        .expect("valid metric");
        let risk = Histogram::with_opts(
            HistogramOpts::new("login_risk", "Risk of scored logins")
                .buckets((1..=10).map(|i| f64::from(i) / 10.0).collect()),
        )
        .expect("valid metric");
        let scoring_latency = Histogram::with_opts(
            HistogramOpts::new(
                "scoring_seconds",
                "Time to score one login from a loaded model",
            )
            .buckets(vec![
                0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005,
            ]),
        )
        .expect("valid metric");
        let challenges = IntCounterVec::new(
            Opts::new("challenges_total", "Step-up challenges by event"),
            &["event"],
        )
        .expect("valid metric");
        let login_outcomes = IntCounterVec::new(
            Opts::new(
                "login_outcomes_total",
                "Forwarded logins by route and the app's verdict",
            ),
            &["app", "route", "outcome"],
        )
        .expect("valid metric");
        let settle_dropped = IntCounter::new(
            "settle_dropped_total",
            "Logins not recorded or learnt from because the store fell behind",
        )
        .expect("valid metric");
        let held_logins = IntGauge::new(
            "held_logins",
            "Logins held for a second factor (updated every 5 s)",
        )
        .expect("valid metric");
        let held_login_bytes = IntGauge::new(
            "held_login_bytes",
            "Memory taken by held logins, in bytes (updated every 5 s)",
        )
        .expect("valid metric");
        let page_tokens_remembered = IntGauge::new(
            "page_tokens_remembered",
            "Used page-token ids remembered to refuse replays (updated every 5 s)",
        )
        .expect("valid metric");
        let audit_records = IntCounterVec::new(
            Opts::new(
                "audit_records_total",
                "Audit records by where they went (stored, spooled, rejected, lost)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let audit_spool_bytes = IntGauge::new(
            "audit_spool_bytes",
            "Bytes of audit records waiting in the spool for the store",
        )
        .expect("valid metric");
        let alert_deliveries = IntCounterVec::new(
            Opts::new(
                "alert_deliveries_total",
                "Security alerts by result (delivered, failed, throttled, dropped)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let learning = LearnMetrics::new();
        for collector in [
            Box::new(learning.logins.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(learning.refits.clone()),
            Box::new(learning.trainings.clone()),
            Box::new(learning.global_trained.clone()),
        ] {
            registry
                .register(collector)
                .expect("each family is registered once");
        }
        for collector in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(held_logins.clone()),
            Box::new(settle_dropped.clone()),
            Box::new(held_login_bytes.clone()),
            Box::new(page_tokens_remembered.clone()),
            Box::new(risk.clone()),
            Box::new(scoring_latency.clone()),
            Box::new(challenges.clone()),
            Box::new(login_outcomes.clone()),
            Box::new(model_cache.requests.clone()),
            Box::new(model_cache.loads.clone()),
            Box::new(model_cache.evictions.clone()),
            Box::new(model_cache.bytes.clone()),
            Box::new(model_cache.entries.clone()),
            Box::new(audit_records.clone()),
            Box::new(audit_spool_bytes.clone()),
            Box::new(alert_deliveries.clone()),
            Box::new(pages_injected.clone()),
            Box::new(injection_skipped.clone()),
            Box::new(login_bodies_refused.clone()),
            Box::new(unreadable_logins.clone()),
            Box::new(rule_flags.clone()),
            Box::new(route_without_success.clone()),
            Box::new(telemetry.clone()),
            Box::new(requests.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(config_reloads.clone()),
            Box::new(own_endpoint_requests.clone()),
            Box::new(config_loaded.clone()),
            Box::new(tls_cert_expiry.clone()),
            Box::new(tls_cert_reloads.clone()),
            Box::new(state_errors.clone()),
            Box::new(regulation_failures.clone()),
        ] {
            registry
                .register(collector)
                .expect("each family is registered once");
        }
        Metrics {
            registry,
            decisions,
            risk,
            scoring_latency,
            challenges,
            login_outcomes,
            held_logins,
            held_login_bytes,
            page_tokens_remembered,
            settle_dropped,
            requests,
            upstream_errors,
            upstream_latency,
            config_reloads,
            own_endpoint_requests,
            config_loaded,
            tls_cert_expiry,
            tls_cert_reloads,
            state_errors,
            regulation_failures,
            pages_injected,
            injection_skipped,
            login_bodies_refused,
            unreadable_logins,
            rule_flags,
            route_without_success,
            telemetry,
            model_cache,
            audit: AuditMetrics {
                records: audit_records,
                spool_bytes: audit_spool_bytes,
            },
            alerts: AlertMetrics {
                deliveries: alert_deliveries,
            },
            learning,
            by_status: (0..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one response sent to a client.
    pub(crate) fn count_response(&self, status: u16) {
        let index = if (100..600).contains(&status) {
            status as usize
        } else {
            0
        };
        self.by_status[index]
            .get_or_init(|| {
                let label = if index == 0 {
                    "none".to_string()
                } else {
                    index.to_string()
                };
                self.requests.with_label_values(&[&label])
            })
            .inc();
    }

    /// The registry, for stages that add their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// All families in the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The model cache's families (the `cache` stage). Cloning shares the counters.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Lookups by `result`: `hit` (in memory) or `miss` (went to the store, or waited for a
    /// load already under way).
    pub requests: IntCounterVec,
    /// Loads from the store by `result`: `ok` or `error`. With single-flight loading there is
    /// at most one per cold user, however many logins arrive at once.
    pub loads: IntCounterVec,
    /// Entries removed, by `cause`: `size` (over `store.cache_mb`), `idle` (unused for
    /// `store.cache_idle`), `replaced` (a newer model), `invalidated`.
    pub evictions: IntCounterVec,
    /// Weighted size of the cached models, in bytes.
    pub bytes: IntGauge,
    /// Number of cached entries (users with and without a model).
    pub entries: IntGauge,
}

impl CacheMetrics {
    /// Families not yet in any registry (each `Metrics` registers its own).
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        CacheMetrics {
            requests: counter(
                "model_cache_requests_total",
                "Model cache lookups by result (hit, miss)",
                "result",
            ),
            loads: counter(
                "model_cache_loads_total",
                "Model loads from the store by result (ok, error)",
                "result",
            ),
            evictions: counter(
                "model_cache_evictions_total",
                "Model cache entries removed, by cause (size, idle, replaced, invalidated)",
                "cause",
            ),
            bytes: IntGauge::new(
                "model_cache_bytes",
                "Weighted size of the cached user models in bytes",
            )
            .expect("valid metric"),
            entries: IntGauge::new("model_cache_entries", "Entries in the model cache")
                .expect("valid metric"),
        }
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The learning stage's families (the `learn` stage). Cloning shares the counters.
#[derive(Clone)]
pub struct LearnMetrics {
    /// Verified logins learnt from, by `result`: `ok` or `error`.
    pub logins: IntCounterVec,
    /// Full refits of a user's model, by `result`: `ok`, `empty` (no usable verified login)
    /// or `error`.
    pub refits: IntCounterVec,
    /// Global model trainings, by `result`: `trained`, `too_small` or `error`.
    pub trainings: IntCounterVec,
    /// 1 while a trained global model is in use; 0 while the per-user detectors decide alone.
    pub global_trained: IntGauge,
}

impl LearnMetrics {
    /// Families not yet in any registry (each `Metrics` registers its own).
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["result"]).expect("valid metric")
        };
        LearnMetrics {
            logins: counter(
                "learn_logins_total",
                "Verified logins learnt from, by result (ok, error)",
            ),
            refits: counter(
                "learn_refits_total",
                "Full refits of user models by result (ok, empty, error)",
            ),
            trainings: counter(
                "global_model_trainings_total",
                "Global model trainings by result (trained, too_small, error)",
            ),
            global_trained: IntGauge::new(
                "global_model_trained",
                "1 while a trained global model is in use, 0 while per-user detectors decide alone",
            )
            .expect("valid metric"),
        }
    }
}

impl Default for LearnMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
