//! gaitkeeper: a reverse proxy that adds behavioural biometrics to the login of an existing
//! web app without touching the app's code.
//!
//! The modules follow a request through the product:
//! `config` (what the operator asked for) → `proxy` (pingora phases, delegating to stages) →
//! `inject` (capture script into login pages, page tokens) → `login` (telemetry taken out of
//! the login submit) → `store` (per-user profiles on disk) and `cache` (fitted models in
//! memory) → `admin` (health, metrics, the `users` commands). `server` wires them into a process.

pub mod admin;
pub mod cache;
pub mod config;
pub mod demo;
pub mod inject;
pub mod logging;
pub mod login;
pub mod proxy;
pub mod server;
pub mod store;
