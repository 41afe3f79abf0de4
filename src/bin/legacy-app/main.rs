//! `legacy-app`: the bundled demo "legacy" web application.
//!
//! This is a stand-in for the operator's existing, server-rendered web app: a
//! small intranet with a classic HTML login form (no JavaScript), a session
//! cookie, an account page, and a second "single-page app" style login that
//! posts JSON to `/api/login`. It is deliberately ordinary and knows nothing
//! about any proxy that may sit in front of it; demos and integration tests
//! run it as the upstream so the proxy can be exercised against an app that is
//! left completely unchanged.
//!
//! Routes:
//!
//! | method     | path                 | what                                          |
//! |------------|----------------------|-----------------------------------------------|
//! | GET        | `/`                  | home page                                     |
//! | GET        | `/login`             | login form (sets the `legacy_csrf` cookie)    |
//! | POST       | `/login`             | form login, 303 to `/account` on success      |
//! | GET        | `/account`           | needs a session, else 303 to `/login`         |
//! | POST       | `/logout`            | drops the session, 303 to `/login`            |
//! | GET        | `/spa-login`         | login page that submits JSON with `fetch`     |
//! | POST       | `/api/login`         | JSON login                                    |
//! | GET        | `/app`, `/app-xhr`   | token portal: the sign-in form is built by its script, which posts to `/api/token` by `fetch` (JSON) or `XMLHttpRequest` (form data) and keeps the bearer token |
//! | GET        | `/app-strict`        | `/app` with a CSP that forbids frames         |
//! | POST       | `/api/token`         | token login: 200 with `access_token`, or 200 `{"ok": false}` |
//! | GET        | `/api/me`            | the bearer token's user                       |
//! | GET        | `/__debug/last-login`| only with `--debug-endpoints`                 |
//!
//! `HEAD` is accepted wherever `GET` is. Everything is in memory and bounded:
//! request bodies over 64 KiB get 413 and at most 10,000 sessions are kept
//! (the oldest is dropped first). The demo accounts and their passwords are
//! hard-coded and printed at start-up: this is a demo, not a real app.
//!
//! The HTTP/1.1 server is a small one built in, on blocking `std::net`
//! sockets: `--workers` threads each serve one connection at a time, with
//! keep-alive and pipelining. It is bounded as well: request heads of at most
//! 16 KiB and 100 header fields, bodies (Content-Length or chunked) of at most
//! 64 KiB, and 10 s socket timeouts; anything malformed gets a 4xx answer and
//! the connection is closed.

mod handlers;
mod logins;
mod parsing;
mod state;
mod transport;

use handlers::*;
use logins::*;
use parsing::*;
use state::*;
use transport::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

const APP_NAME: &str = "Acme Intranet (legacy)";
/// Largest request body the app accepts.
const MAX_BODY: usize = 64 * 1024;
/// Largest number of live sessions; the oldest is dropped beyond that.
const MAX_SESSIONS: usize = 10_000;
const SESSION_COOKIE: &str = "legacy_session";
const CSRF_COOKIE: &str = "legacy_csrf";
/// Length of a token: 16 random bytes, hex encoded.
const TOKEN_LEN: usize = 32;

/// Largest request head (request line and header fields, with line ends).
const MAX_HEAD: usize = 16 * 1024;
/// Largest number of header fields in a request.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with any chunk extensions) in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of chunked framing (size lines, line ends, trailers) per body.
const MAX_CHUNK_OVERHEAD: usize = 2 * MAX_BODY;
/// Socket read and write timeout: the longest silence tolerated mid-request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head must be complete this long after its first byte arrived.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must be complete this long after its head.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle keep-alive connection checks whether it should make room
/// for a connection waiting for a worker.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// After answering and before closing, how long (and how many bytes) to read
/// and discard what the client still sends, so that closing with unread data
/// does not reset the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// Size of one socket read.
const READ_CHUNK: usize = 8 * 1024;
/// Accepted connections waiting for a worker, beyond which accepting pauses.
const ACCEPT_QUEUE: usize = 1024;

/// The demo accounts: (username, password).
const USERS: &[(&str, &str)] = &[
    ("alice", "wonderland-42"),
    ("bob", "builder-2024"),
    ("carol", "carolina-77"),
];

#[derive(Parser, Debug)]
#[command(
    name = "legacy-app",
    version,
    about = "Demo legacy web app (server-rendered login) to put behind a reverse proxy"
)]
struct Args {
    /// Address to listen on (IP:PORT); nothing else is bound.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Enable GET /__debug/last-login, which describes the last login request received.
    #[arg(long)]
    debug_endpoints: bool,

    /// Number of worker threads handling requests.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();

    let listener = match TcpListener::bind(args.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("legacy-app: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let bound = listener
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |addr| addr.to_string());

    println!("legacy-app listening on http://{bound}");
    println!("demo users (username / password):");
    for (user, password) in USERS {
        println!("  {user} / {password}");
    }
    if args.debug_endpoints {
        println!("debug endpoints enabled: GET /__debug/last-login");
    }

    let app = Arc::new(App {
        debug_endpoints: args.debug_endpoints,
        sessions: Mutex::new(Sessions::default()),
        tokens: Mutex::new(Sessions::default()),
        last_login: Mutex::new(None),
    });
    let pool = Arc::new(Pool::default());
    let (sender, receiver) = mpsc::sync_channel::<TcpStream>(ACCEPT_QUEUE);
    let receiver = Arc::new(Mutex::new(receiver));

    for i in 0..args.workers {
        let receiver = Arc::clone(&receiver);
        let app = Arc::clone(&app);
        let pool = Arc::clone(&pool);
        let spawned = thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(&receiver, &app, &pool));
        if let Err(err) = spawned {
            eprintln!("legacy-app: cannot start worker thread: {err}");
            return ExitCode::FAILURE;
        }
    }
    drop(receiver);

    accept_loop(&listener, &sender, &pool)
}

/// Accepts connections forever and queues them for the workers.
fn accept_loop(listener: &TcpListener, sender: &SyncSender<TcpStream>, pool: &Pool) -> ExitCode {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                pool.queued.fetch_add(1, Ordering::SeqCst);
                if sender.send(stream).is_err() {
                    eprintln!("legacy-app: no worker thread is left");
                    return ExitCode::FAILURE;
                }
            }
            Err(err) => {
                eprintln!("legacy-app: accepting a connection failed: {err}");
                // E.g. out of file descriptors: do not spin.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One worker: serve queued connections, one at a time, forever.
fn worker(receiver: &Mutex<Receiver<TcpStream>>, app: &App, pool: &Pool) {
    loop {
        pool.idle_workers.fetch_add(1, Ordering::SeqCst);
        let next = lock(receiver).recv();
        pool.idle_workers.fetch_sub(1, Ordering::SeqCst);
        let Ok(stream) = next else {
            return;
        };
        pool.queued.fetch_sub(1, Ordering::SeqCst);
        // A bug must cost one connection, never the worker.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| serve_connection(stream, app, pool)));
        if outcome.is_err() {
            eprintln!("legacy-app: connection handler panicked");
        }
    }
}
