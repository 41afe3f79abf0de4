//! A diagnostic window onto the last few login submits' telemetry, for operators checking a
//! new deployment and for end-to-end tests. Off unless `admin.debug_telemetry: true`; shown
//! only on the private admin listener; holds a bounded number of entries in memory only.
//! Payloads hold timings and key classes, never key identities, field values or page tokens.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::TelemetryOutcome;

/// How many recent submits are kept.
const KEEP: usize = 16;

pub struct TelemetryInbox {
    enabled: bool,
    recent: Mutex<VecDeque<serde_json::Value>>,
}

impl TelemetryInbox {
    pub fn new(enabled: bool) -> Self {
        TelemetryInbox {
            enabled,
            recent: Mutex::new(VecDeque::with_capacity(KEEP)),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn record(&self, outcome: &TelemetryOutcome) {
        if !self.enabled {
            return;
        }
        let mut payload = outcome
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .unwrap_or(serde_json::Value::Null);
        // The page token is what would let a reader replay the payload while it is fresh:
        // it is never kept here.
        if let Some(object) = payload.as_object_mut() {
            object.remove("tk");
        }
        let entry = serde_json::json!({
            "route": outcome.route,
            "transport": outcome.transport.map(|t| t.as_str()),
            "outcome": outcome.status.code(),
            "payload": payload,
        });
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The recent entries, oldest first, as a JSON array.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_vec(&*recent).unwrap_or_else(|_| b"[]".to_vec())
    }
}
