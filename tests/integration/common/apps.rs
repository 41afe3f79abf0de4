//! Real third-party apps behind gaitkeeper: Django's admin (from PyPI), an Express app and
//! Node-RED's editor (from npm), installed by `scripts/test-apps.sh` (which `scripts/test.sh` runs). Each runs as its
//! own process on 127.0.0.1 and is killed on drop.
//!
//! When they are not installed, tests that need them say so and skip, unless
//! `GAITKEEPER_TEST_REQUIRE_APPS` is set (`scripts/test.sh` sets it), which makes a missing app
//! a failure: CI never skips them silently.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the real apps are installed; prints why a test skips when they are not.
pub fn installed(test: &str) -> bool {
    let django = root().join(".test-deps/python/django");
    let express = root().join("tests/apps/express-login/node_modules/express");
    let node_red = root().join("tests/apps/node-red/node_modules/node-red");
    if django.exists() && express.exists() && node_red.exists() {
        return true;
    }
    let hint =
        "run scripts/test-apps.sh (scripts/test.sh does) to install Django, the Express app and Node-RED";
    if std::env::var_os("GAITKEEPER_TEST_REQUIRE_APPS").is_some() {
        panic!("{test}: the real test apps are missing; {hint}");
    }
    eprintln!("SKIPPED {test}: the real test apps are not installed; {hint}");
    false
}

/// Whether the OpenID Connect provider (`tests/apps/oidc-provider`, npm's oidc-provider 8.x)
/// is installed; prints why a test skips when it is not (a failure under
/// `GAITKEEPER_TEST_REQUIRE_APPS`).
pub fn oidc_provider_installed(test: &str) -> bool {
    if root()
        .join("tests/apps/oidc-provider/node_modules/oidc-provider")
        .exists()
    {
        return true;
    }
    let hint = "run scripts/test-apps.sh (scripts/test.sh does) to install the OpenID Connect provider (tests/apps/oidc-provider)";
    if std::env::var_os("GAITKEEPER_TEST_REQUIRE_APPS").is_some() {
        panic!("{test}: the OpenID Connect test provider is missing; {hint}");
    }
    eprintln!("SKIPPED {test}: the OpenID Connect test provider is not installed; {hint}");
    false
}

/// A child process that prints `ready` once it listens.
pub struct RealApp {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for RealApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealApp {
    fn spawn(
        mut command: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
        what: &str,
    ) -> RealApp {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        // Wait for its `ready` line on a thread, with a deadline.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        if rx.recv_timeout(deadline - Instant::now()).is_err() {
            let _ = child.kill();
            panic!("{what} did not become ready within 60 s");
        }
        RealApp {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Django's admin with `users` as superusers (login at `/admin/login/`).
    pub fn django(users: &[(&str, &str)]) -> RealApp {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new("python3");
        command
            .arg(root().join("tests/apps/django_admin.py"))
            .args(["--port", &addr.port().to_string()])
            .arg("--dir")
            .arg(dir.path())
            .env("PYTHONPATH", root().join(".test-deps/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (user, password) in users {
            command.args(["--user", user, "--password", password]);
        }
        Self::spawn(command, addr, dir, "Django")
    }

    /// The Express login app with `users` (login at `/login`, JSON answers a bearer token).
    pub fn express(users: &[(&str, &str)]) -> RealApp {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new("node");
        command
            .arg(root().join("tests/apps/express-login/app.js"))
            .args(["--port", &addr.port().to_string()]);
        for (user, password) in users {
            command.args(["--user", &format!("{user}:{password}")]);
        }
        Self::spawn(command, addr, dir, "the Express app")
    }

    /// Node-RED's editor with credential logins for `users` (editor at `/`; its login dialog
    /// posts `/auth/token` by XMLHttpRequest and keeps the token from the JSON answer).
    pub fn node_red(users: &[(&str, &str)]) -> RealApp {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new("node");
        command
            .arg(root().join("tests/apps/node-red/run.js"))
            .args(["--port", &addr.port().to_string()])
            .arg("--dir")
            .arg(dir.path());
        for (user, password) in users {
            command.args(["--user", &format!("{user}:{password}")]);
        }
        Self::spawn(command, addr, dir, "Node-RED")
    }

    /// The OpenID Connect provider on `port` (issuer `http://127.0.0.1:PORT`) with `clients`
    /// (id, secret, redirect URI) and `users` (name, password); see its `provider.js`.
    pub fn oidc_provider(
        port: u16,
        clients: &[(&str, &str, &str)],
        users: &[(&str, &str)],
    ) -> RealApp {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new("node");
        command
            .arg(root().join("tests/apps/oidc-provider/provider.js"))
            .args(["--port", &port.to_string()]);
        for (id, secret, redirect) in clients {
            command.args(["--client", &format!("{id}:{secret}:{redirect}")]);
        }
        for (user, password) in users {
            command.args(["--user", &format!("{user}:{password}")]);
        }
        Self::spawn(command, addr, dir, "the OpenID Connect provider")
    }
}
