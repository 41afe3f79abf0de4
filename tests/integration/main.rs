//! The integration tests, one module per area, built as one binary: one link instead of
//! sixteen, and one copy of the harness (`common`) they share. Every test runs the real
//! gaitkeeper binary, or the library against a real SQLite file and PostgreSQL, against real
//! sockets on 127.0.0.1; the browser tests drive headless Chromium.
//!
//! Run one area with `cargo test --test integration <module>::`, e.g.
//! `cargo test --test integration javascript_logins::`.

mod common;
mod support;

mod alert;
mod apps;
mod attacks;
mod audit;
mod browser;
mod capture;
mod cli;
mod console;
mod decision;
mod deploy;
mod edge;
mod factors;
mod faults;
mod hostile;
mod instances;
mod javascript_logins;
mod layers;
mod learn;
mod oidc;
mod proxy;
mod store;
mod users_cli;
mod whatif;
