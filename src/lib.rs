//! gaitkeeper: a reverse proxy that adds behavioural biometrics to the login of an existing
//! web app without touching the app's code.
//!
//! The modules follow a request through the product, and each imports only the layers below
//! it (docs/architecture.md, "Layers"; `tests/integration/layers.rs` checks it):
//! `config` (what the operator asked for) → `proxy` (pingora phases, delegating to stages) →
//! `inject` (capture script into login pages, page tokens) → `login` (telemetry taken out of
//! the login submit) → `telemetry` (validate the payload) → `features` (one vector per login)
//! → `model` (per-user detectors, global forest, fused risk with reasons) → `policy` (what the
//! YAML says to do with that risk) → `decision` (forward, hold for a second factor, or refuse;
//! reading the app's answer) → `challenge` (step-up MFA: TOTP, external provider assertions,
//! the challenge page) → `audit` (the trail of every login decision, the `audit` commands) and
//! `alert` (signed webhooks to the security team) → `store` (per-user profiles on disk) and
//! `cache` (fitted models in memory), kept up to date by `learn` (verified logins → model
//! updates and refits, the global model) → `admin` (health, metrics, the `users` commands).
//! Below them all: `metrics` (the Prometheus registry), `runtime` (background threads and
//! timers), `paths` and `wire` (how a request is read), `batch` and `files`. `services`
//! assembles the stages from the config; `server` starts the listeners around them; `eval`
//! runs the scoring stages on public data.
//!
//! The public modules are what the `gaitkeeper` binary, the integration tests, the
//! benchmarks and the fuzz targets use; the proxy glue, the assembly and the helpers under
//! it are crate-private.

pub mod admin;
pub mod alert;
pub mod audit;
mod batch;
pub mod cache;
pub mod challenge;
pub mod config;
pub(crate) mod decision;
pub mod demo;
pub mod edge;
pub mod eval;
pub mod features;
pub mod files;
pub mod inject;
pub mod learn;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod model;
pub(crate) mod paths;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod services;
pub mod shared;
pub mod store;
pub mod telemetry;
pub mod whatif;
pub(crate) mod wire;
