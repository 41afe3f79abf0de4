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

// ---------------------------------------------------------------------------
// HTTP/1.1 transport
// ---------------------------------------------------------------------------
//
// A deliberately small HTTP/1.1 server on blocking `std::net` sockets: each
// worker serves one connection at a time (keep-alive, pipelined requests
// answered in order). Every limit is enforced before anything is allocated:
// the head is at most `MAX_HEAD` bytes and `MAX_HEADERS` fields, a body at
// most `MAX_BODY` bytes (Content-Length or chunked), and nothing is ever
// sized from a length the client declared. Each answer goes out in a single
// write with TCP_NODELAY set, so a keep-alive client (or proxy) is never left
// waiting on Nagle's algorithm and delayed ACKs.

/// Counters shared by the accept loop and the workers, so that an idle
/// keep-alive connection can make room when every worker is taken.
#[derive(Default)]
struct Pool {
    /// Accepted connections no worker has picked up yet.
    queued: AtomicUsize,
    /// Workers waiting for a connection.
    idle_workers: AtomicUsize,
}

impl Pool {
    /// Whether a connection is waiting and no worker is free to take it.
    fn others_waiting(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0 && self.idle_workers.load(Ordering::SeqCst) == 0
    }
}

/// Why a socket read gave up.
enum Stop {
    /// The peer closed its side.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
    /// Idle, and another connection is waiting for a worker.
    Yield,
    /// Any other socket error.
    Failed,
}

/// Why a request cannot be answered by the routes.
enum Abort {
    /// Close without answering: the peer went away, the connection was idle
    /// too long, or the socket failed.
    Quiet,
    /// Answer with this status (and a reason for the log), then close.
    Reject(u16, &'static str),
}

/// A socket failure once part of a request has arrived.
fn mid_request(stop: Stop) -> Abort {
    match stop {
        Stop::TimedOut => Abort::Reject(408, "request not received in time"),
        Stop::Closed => Abort::Reject(400, "connection closed mid-request"),
        Stop::Yield | Stop::Failed => Abort::Quiet,
    }
}

/// How the request body is delimited.
enum BodyKind {
    Empty,
    Length(usize),
    Chunked,
}

/// What the head says about reading the body and reusing the connection.
struct Framing {
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

/// One client connection and the bytes received on it but not yet used.
struct Conn {
    stream: TcpStream,
    /// Received bytes; `buf[start..]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
}

fn serve_connection(stream: TcpStream, app: &App, pool: &Pool) {
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(err) = setup {
        eprintln!("legacy-app: cannot set up connection: {err}");
        return;
    }
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
        start: 0,
    };

    loop {
        let (mut request, http10) = match conn.read_head(pool) {
            Ok(head) => head,
            Err(Abort::Quiet) => return,
            Err(Abort::Reject(status, why)) => return conn.reject(None, status, why),
        };
        let framing = match framing(&request, http10) {
            Ok(framing) => framing,
            Err((status, why)) => return conn.reject(Some(&request), status, why),
        };
        if framing.expect_continue
            && !matches!(framing.body, BodyKind::Empty)
            && conn.buffered().is_empty()
            && conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return;
        }
        request.body = match conn.read_body(&framing.body) {
            Ok(body) => body,
            Err(Abort::Quiet) => return,
            Err(Abort::Reject(status, why)) => return conn.reject(Some(&request), status, why),
        };

        // A bug must cost one request, never the connection or the worker.
        let routed = panic::catch_unwind(AssertUnwindSafe(|| {
            route(app, &request, &request.method, &request.path)
        }));
        let reply = routed.unwrap_or_else(|_| {
            eprintln!("legacy-app: request handler panicked");
            internal_error()
        });
        println!(
            "{} {} {}",
            request.method,
            printable(&request.path),
            reply.status
        );

        // Give the worker up between requests if others are queued for one.
        let keep_alive =
            framing.keep_alive && !(conn.buffered().is_empty() && pool.others_waiting());
        let connection = match (keep_alive, http10) {
            (false, _) => Some("close"),
            (true, true) => Some("keep-alive"),
            (true, false) => None,
        };
        if let Err(err) = conn.send(&reply, request.method == "HEAD", connection) {
            eprintln!("legacy-app: sending response failed: {err}");
            return;
        }
        if !keep_alive {
            return conn.linger_close();
        }
    }
}

impl Conn {
    /// Received bytes not consumed yet.
    fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Reads at least one more byte into the buffer, waiting until `deadline`
    /// at the latest and for at most `IO_TIMEOUT` of silence. With `idle`,
    /// gives up early when another connection is waiting for a worker.
    fn fill(&mut self, deadline: Instant, idle: Option<&Pool>) -> Result<(), Stop> {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
        let deadline = deadline.min(Instant::now() + IO_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::TimedOut);
            }
            let wait = if idle.is_some() {
                left.min(IDLE_POLL)
            } else {
                left
            };
            if self.stream.set_read_timeout(Some(wait)).is_err() {
                return Err(Stop::Failed);
            }
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK, 0);
            let result = self.stream.read(&mut self.buf[filled..]);
            let got = result.as_ref().map_or(0, |n| (*n).min(READ_CHUNK));
            self.buf.truncate(filled + got);
            match result {
                Ok(0) => return Err(Stop::Closed),
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if idle.is_some_and(Pool::others_waiting) {
                        return Err(Stop::Yield);
                    }
                }
                Err(_) => return Err(Stop::Failed),
            }
        }
    }

    /// Waits for the next request head and parses it. Returns the request
    /// (without its body) and whether it is HTTP/1.0.
    fn read_head(&mut self, pool: &Pool) -> Result<(Request, bool), Abort> {
        let idle_deadline = Instant::now() + KEEP_ALIVE_TIMEOUT;
        // Set once the first byte of this request is here (maybe pipelined).
        let mut head_deadline =
            (!self.buffered().is_empty()).then(|| Instant::now() + HEAD_TIMEOUT);
        let mut scanned = 0;
        loop {
            // Empty lines before a request line are ignored (RFC 9112, 2.2).
            let blank = self
                .buffered()
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                self.start += blank;
                scanned = 0;
            }

            let pending = self.buffered();
            if let Some(end) = head_end(pending, scanned) {
                if end > MAX_HEAD {
                    return Err(Abort::Reject(431, "request head too large"));
                }
                let parsed = parse_head(pending.get(..end).unwrap_or_default());
                self.start += end;
                return parsed.map_err(|(status, why)| Abort::Reject(status, why));
            }
            if pending.len() >= MAX_HEAD {
                return Err(Abort::Reject(431, "request head too large"));
            }
            scanned = pending.len().saturating_sub(2);
            let partial = !pending.is_empty();

            let result = match head_deadline {
                Some(deadline) => self.fill(deadline, None),
                None => self.fill(idle_deadline, Some(pool)),
            };
            match result {
                Ok(()) => {
                    head_deadline.get_or_insert_with(|| Instant::now() + HEAD_TIMEOUT);
                }
                Err(stop) if partial => return Err(mid_request(stop)),
                Err(_) => return Err(Abort::Quiet),
            }
        }
    }

    /// Reads the whole body as framed, never more than `MAX_BODY` bytes.
    fn read_body(&mut self, kind: &BodyKind) -> Result<Vec<u8>, Abort> {
        let deadline = Instant::now() + BODY_TIMEOUT;
        let mut body = Vec::new();
        match *kind {
            BodyKind::Empty => {}
            BodyKind::Length(len) => self.read_exact_into(&mut body, len, deadline)?,
            BodyKind::Chunked => self.read_chunked(&mut body, deadline)?,
        }
        Ok(body)
    }

    /// Moves exactly `len` more body bytes into `body`.
    fn read_exact_into(
        &mut self,
        body: &mut Vec<u8>,
        len: usize,
        deadline: Instant,
    ) -> Result<(), Abort> {
        let mut missing = len;
        while missing > 0 {
            if self.buffered().is_empty() {
                self.fill(deadline, None).map_err(mid_request)?;
            }
            let available = self.buffered();
            let take = missing.min(available.len());
            body.extend_from_slice(available.get(..take).unwrap_or_default());
            self.start += take;
            missing -= take;
        }
        Ok(())
    }

    /// Decodes a chunked body (RFC 9112, 7.1); chunk extensions and trailer
    /// fields are read and ignored.
    fn read_chunked(&mut self, body: &mut Vec<u8>, deadline: Instant) -> Result<(), Abort> {
        // Bytes of framing around the data, bounded so tiny chunks with
        // long extensions cannot keep the connection busy for long.
        let mut overhead = 0;
        loop {
            let line = self.read_line(MAX_CHUNK_LINE, deadline)?;
            overhead += line.len() + 2;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size =
                parse_hex(trim_ows(size)).ok_or(Abort::Reject(400, "malformed chunk size"))?;
            if size == 0 {
                break;
            }
            if size > MAX_BODY.saturating_sub(body.len()) {
                return Err(Abort::Reject(413, "chunked body too large"));
            }
            self.read_exact_into(body, size, deadline)?;
            if !self.read_line(0, deadline)?.is_empty() {
                return Err(Abort::Reject(400, "chunk data not followed by CRLF"));
            }
            overhead += 2;
            if overhead > MAX_CHUNK_OVERHEAD {
                return Err(Abort::Reject(413, "too much chunked framing"));
            }
        }
        loop {
            let line = self.read_line(MAX_HEAD, deadline)?;
            if line.is_empty() {
                return Ok(());
            }
            overhead += line.len() + 2;
            if overhead > MAX_CHUNK_OVERHEAD {
                return Err(Abort::Reject(431, "trailer section too large"));
            }
        }
    }

    /// Reads one line of at most `limit` bytes, without its CRLF (or LF).
    fn read_line(&mut self, limit: usize, deadline: Instant) -> Result<Vec<u8>, Abort> {
        loop {
            let pending = self.buffered();
            if let Some(newline) = pending.iter().position(|&b| b == b'\n') {
                let line = pending.get(..newline).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > limit {
                    return Err(Abort::Reject(400, "malformed chunked framing"));
                }
                let line = line.to_vec();
                self.start += newline + 1;
                return Ok(line);
            }
            // The `+ 1` leaves room for the CR of a line of exactly `limit`.
            if pending.len() > limit + 1 {
                return Err(Abort::Reject(400, "chunked framing line too long"));
            }
            self.fill(deadline, None).map_err(mid_request)?;
        }
    }

    /// Writes a whole response (head and body) with a single write.
    fn send(&mut self, reply: &Reply, head_only: bool, connection: Option<&str>) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            reply.status,
            reason(reply.status),
            http_date(SystemTime::now())
        );
        for (name, value) in &reply.headers {
            let valid_name = !name.is_empty() && name.bytes().all(is_tchar);
            let valid_value = value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            if valid_name && valid_value {
                head.push_str(name);
                head.push_str(": ");
                head.push_str(value);
                head.push_str("\r\n");
            } else {
                eprintln!("legacy-app: dropping unrepresentable header {name}");
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        if let Some(connection) = connection {
            head.push_str(&format!("Connection: {connection}\r\n"));
        }
        head.push_str("\r\n");

        let body: &[u8] = if head_only { &[] } else { &reply.body };
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        self.stream.write_all(&out)
    }

    /// Answers a request the transport refuses, then closes.
    fn reject(mut self, request: Option<&Request>, status: u16, why: &str) {
        let peer = self
            .stream
            .peer_addr()
            .map_or_else(|_| "unknown peer".to_string(), |addr| addr.to_string());
        eprintln!("legacy-app: {peer}: {why}, answering {status}");
        if let Some(request) = request {
            println!("{} {} {status}", request.method, printable(&request.path));
        }
        let head_only = request.is_some_and(|request| request.method == "HEAD");
        if self
            .send(&error_reply(status), head_only, Some("close"))
            .is_ok()
        {
            self.linger_close();
        }
    }

    /// Closes after an answer: stops sending, then reads and discards what
    /// the client still sends for a moment, so that unread data does not
    /// make the kernel reset the connection before the client has read the
    /// answer. Bounded in time and bytes; nothing is kept.
    fn linger_close(mut self) {
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut scratch = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// End of the request head in `data` (just past its empty line), looking
/// for line ends from offset `from` on. Lines may end in CRLF or LF.
fn head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = data.get(at..)?.iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        let rest = data.get(newline + 1..)?;
        if rest.starts_with(b"\n") {
            return Some(newline + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(newline + 3);
        }
        at = newline + 1;
    }
    None
}

/// Parses a request head (request line and header fields, ending with its
/// empty line). Returns the request and whether it is HTTP/1.0, or the
/// status to answer with.
fn parse_head(raw: &[u8]) -> Result<(Request, bool), (u16, &'static str)> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().copied().all(is_tchar) {
        return Err((400, "malformed request method"));
    }
    let http10 = match version {
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err((505, "unsupported HTTP version"));
        }
        _ => return Err((400, "malformed HTTP version")),
    };
    let path = request_path(target).ok_or((400, "malformed request target"))?;

    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err((431, "too many header fields"));
        }
        headers.push(parse_header(line).ok_or((400, "malformed header field"))?);
    }
    let request = Request {
        method: String::from_utf8_lossy(method).into_owned(),
        path,
        headers,
        body: Vec::new(),
    };
    Ok((request, http10))
}

/// The path of a request target in origin form (`/path?query`), absolute
/// form (`http://host/path?query`) or `*`. Anything but visible ASCII, or
/// any other form, is refused.
fn request_path(target: &[u8]) -> Option<String> {
    if target.is_empty() || !target.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return None;
    }
    let target = std::str::from_utf8(target).ok()?;
    let path = if target.starts_with('/') || target == "*" {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if authority_end == 0 {
            return None;
        }
        rest.get(authority_end..)?
    };
    let path = path.split('?').next().unwrap_or_default();
    Some(if path.is_empty() { "/" } else { path }.to_string())
}

/// Parses one `name: value` header line.
fn parse_header(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line.get(..colon)?;
    let value = trim_ows(line.get(colon + 1..)?);
    // Also refuses obsolete line folding: a line starting with whitespace.
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return None;
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
    {
        return None;
    }
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Reads the framing of a request from its header fields (RFC 9112, 6).
fn framing(request: &Request, http10: bool) -> Result<Framing, (u16, &'static str)> {
    let fields = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let list = |name: &'static str| {
        fields(name)
            .flat_map(|value| value.split(','))
            .map(|item| item.trim_matches([' ', '\t']))
    };

    let mut length: Option<u64> = None;
    for item in list("Content-Length") {
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err((400, "invalid Content-Length"));
        }
        let value = item.bytes().fold(0u64, |n, digit| {
            n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        });
        if length.is_some_and(|previous| previous != value) {
            return Err((400, "conflicting Content-Length values"));
        }
        length = Some(value);
    }

    let has_transfer_encoding = fields("Transfer-Encoding").next().is_some();
    let body = if has_transfer_encoding {
        if http10 {
            return Err((400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if length.is_some() {
            return Err((400, "both Transfer-Encoding and Content-Length"));
        }
        let codings: Vec<&str> = list("Transfer-Encoding")
            .filter(|coding| !coding.is_empty())
            .collect();
        match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => BodyKind::Chunked,
            [.., last] if last.eq_ignore_ascii_case("chunked") => {
                return Err((501, "unsupported transfer coding"));
            }
            _ => return Err((400, "chunked is not the final transfer coding")),
        }
    } else {
        match length {
            None | Some(0) => BodyKind::Empty,
            Some(len) => match usize::try_from(len) {
                Ok(len) if len <= MAX_BODY => BodyKind::Length(len),
                _ => return Err((413, "declared body too large")),
            },
        }
    };

    let close = list("Connection").any(|token| token.eq_ignore_ascii_case("close"));
    let keep_alive_asked = list("Connection").any(|token| token.eq_ignore_ascii_case("keep-alive"));
    let keep_alive = !close && (!http10 || keep_alive_asked);

    let mut expect_continue = false;
    if !http10 {
        for expectation in fields("Expect") {
            if !expectation.eq_ignore_ascii_case("100-continue") {
                return Err((417, "unsupported expectation"));
            }
            expect_continue = true;
        }
    }

    Ok(Framing {
        body,
        keep_alive,
        expect_continue,
    })
}

/// A chunk size: hex digits, saturating instead of overflowing.
fn parse_hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(n.saturating_mul(16).saturating_add(digit as usize))
    })
}

/// Strips optional whitespace (spaces and tabs) from both ends.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether `b` may appear in a token (method, header name; RFC 9110, 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The page sent with a status the transport answers on its own.
fn error_reply(status: u16) -> Reply {
    if status == 413 {
        return too_large();
    }
    let title = reason(status);
    Reply::html(status, page(title, &format!("<h2>{title}</h2>\n")))
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// An IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(now: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = WEEKDAYS.get((days % 7) as usize).unwrap_or(&"Thu");
    let month = MONTHS.get((month - 1) as usize).unwrap_or(&"Jan");
    format!("{weekday}, {day:02} {month} {year} {hour:02}:{minute:02}:{second:02} GMT")
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct App {
    debug_endpoints: bool,
    sessions: Mutex<Sessions>,
    /// Bearer tokens of the single-page app (`/api/token`), bounded like sessions.
    tokens: Mutex<Sessions>,
    /// Last login request, kept only when debug endpoints are on.
    last_login: Mutex<Option<LoginRecord>>,
}

/// Live sessions: token -> user, with creation order for eviction.
#[derive(Default)]
struct Sessions {
    by_token: HashMap<String, (&'static str, u64)>,
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Sessions {
    fn create(&mut self, token: String, user: &'static str) {
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

    fn user(&self, token: &str) -> Option<&'static str> {
        self.by_token.get(token).map(|(user, _)| *user)
    }

    fn remove(&mut self, token: &str) {
        if let Some((_, seq)) = self.by_token.remove(token) {
            self.by_age.remove(&seq);
        }
    }
}

/// What `/__debug/last-login` reports. Never holds a password or cookie.
#[derive(Serialize, Clone)]
struct LoginRecord {
    path: String,
    content_type: Option<String>,
    field_names: Vec<String>,
    username: Option<String>,
    body_len: usize,
    headers: BTreeMap<String, String>,
    method: String,
    /// The status the app answered with.
    status: u16,
}

/// Body of every `/api/login` answer, keys in this order.
#[derive(Serialize)]
struct ApiReply<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> ApiReply<'a> {
    fn success(user: &'a str) -> Self {
        ApiReply {
            ok: true,
            user: Some(user),
            error: None,
        }
    }

    fn failure(error: &'a str) -> Self {
        ApiReply {
            ok: false,
            user: None,
            error: Some(error),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // in a way that matters for a demo; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// A response before the transport writes it out.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/html; charset=utf-8".to_string())],
            body: body.into_bytes(),
        }
    }

    fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        // Serialising these plain structs cannot fail; answer 500 if it ever does.
        let (status, body) = match serde_json::to_vec(value) {
            Ok(body) => (status, body),
            Err(_) => (500, b"null".to_vec()),
        };
        Reply {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        }
    }

    fn redirect(location: &'static str) -> Reply {
        let body = page(
            "Redirect",
            &format!("<p>Continue to <a href=\"{location}\">{location}</a>.</p>"),
        );
        Reply::html(303, body).header("Location", location.to_string())
    }

    fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn no_store(self) -> Reply {
        self.header("Cache-Control", "no-store".to_string())
    }
}

/// One request, as the transport hands it to the routes: the body has
/// already been read in full (at most `MAX_BODY` bytes).
struct Request {
    method: String,
    /// The request target's path, without the query.
    path: String,
    /// Header fields in the order received, values trimmed.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn route(app: &App, request: &Request, method: &str, path: &str) -> Reply {
    let is_get = matches!(method, "GET" | "HEAD");
    let is_post = method == "POST";

    match path {
        "/" if is_get => home_page(),
        "/login" if is_get => login_page(request),
        "/login" if is_post => login_submit(app, request),
        "/login" => method_not_allowed("GET, HEAD, POST"),
        "/account" if is_get => account_page(app, request),
        "/logout" if is_post => logout(app, request),
        "/logout" => method_not_allowed("POST"),
        "/spa-login" if is_get => spa_login_page(),
        "/api/login" if is_post => api_login(app, request),
        "/api/login" => method_not_allowed("POST"),
        "/app" if is_get => token_app_page(false),
        "/app-xhr" if is_get => token_app_page(true),
        // A stricter app: its CSP forbids frames, so a challenge cannot be framed in its page.
        "/app-strict" if is_get => token_app_page(false).header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-src 'none'".to_string(),
        ),
        "/api/token" if is_post => api_token(app, request),
        "/api/token" => method_not_allowed("POST"),
        "/api/me" if is_get => api_me(app, request),
        "/__debug/last-login" if app.debug_endpoints && is_get => debug_last_login(app),
        "/__debug/last-login" if app.debug_endpoints => method_not_allowed("GET, HEAD"),
        "/" | "/account" | "/spa-login" | "/app" | "/app-xhr" | "/app-strict" | "/api/me" => {
            method_not_allowed("GET, HEAD")
        }
        _ => not_found(),
    }
}

fn home_page() -> Reply {
    let body = "<h2>Welcome</h2>\n\
        <p>Welcome to the Acme Corp intranet. Please sign in to continue.</p>\n\
        <ul>\n\
        <li><a href=\"/login\">Sign in</a></li>\n\
        <li><a href=\"/account\">My account</a></li>\n\
        <li><a href=\"/spa-login\">Sign in (new single-page version)</a></li>\n\
        <li><a href=\"/app\">Acme Portal (fetch)</a> and <a href=\"/app-xhr\">(XMLHttpRequest)</a></li>\n\
        </ul>\n";
    Reply::html(200, page("Home", body))
}

fn login_page(request: &Request) -> Reply {
    let existing = cookie(request, CSRF_COOKIE).filter(|token| is_token(token));
    let (token, fresh) = match existing {
        Some(token) => (token, false),
        None => match random_token() {
            Ok(token) => (token, true),
            Err(err) => return server_error(&err),
        },
    };
    let reply = Reply::html(200, login_form(&token, "", None)).no_store();
    if fresh {
        reply.header("Set-Cookie", cookie_header(CSRF_COOKIE, &token))
    } else {
        reply
    }
}

fn login_form(csrf_token: &str, username: &str, error: Option<&str>) -> String {
    let error = error
        .map(|msg| format!("<p class=\"error\">{}</p>\n", escape(msg)))
        .unwrap_or_default();
    let body = format!(
        "<h2>Sign in</h2>\n\
         {error}\
         <form method=\"post\" action=\"/login\">\n\
         <table class=\"form\">\n\
         <tr><td><label for=\"username\">Username:</label></td>\
         <td><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" \
         size=\"24\" value=\"{username}\"></td></tr>\n\
         <tr><td><label for=\"password\">Password:</label></td>\
         <td><input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" size=\"24\"></td></tr>\n\
         <tr><td></td><td><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <input type=\"submit\" value=\"Sign in\"></td></tr>\n\
         </table>\n\
         </form>\n\
         <p class=\"small\">Forgot your password? Contact the help desk on extension 4357.</p>\n",
        username = escape(username),
        csrf = escape(csrf_token),
    );
    page("Sign in", &body)
}

fn login_submit(app: &App, request: &Request) -> Reply {
    let body = &request.body;
    let content_type = header_value(request, "Content-Type");
    let fields = parse_form(body);
    let username = form_field(&fields, "username");

    let reply = if media_type(content_type.as_deref()) != "application/x-www-form-urlencoded" {
        Reply::html(
            415,
            page(
                "Unsupported form encoding",
                "<h2>Unsupported form encoding</h2>\n<p>Please use the <a href=\"/login\">login page</a>.</p>\n",
            ),
        )
    } else {
        check_form_login(app, request, &fields)
    };

    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/login".to_string(),
            content_type,
            field_names: fields.iter().map(|(name, _)| name.clone()).collect(),
            username: username.map(str::to_string),
            body_len: body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

fn check_form_login(app: &App, request: &Request, fields: &[(String, String)]) -> Reply {
    let cookie_token = cookie(request, CSRF_COOKIE).filter(|token| is_token(token));
    let form_token = form_field(fields, "csrf_token");
    let csrf_ok = match (&cookie_token, form_token) {
        (Some(cookie), Some(form)) => constant_time_eq(cookie.as_bytes(), form.as_bytes()),
        _ => false,
    };
    let Some(csrf_token) = cookie_token.filter(|_| csrf_ok) else {
        let body = "<h2>Session expired</h2>\n\
            <p class=\"error\">Your session expired, please reload the login page.</p>\n\
            <p><a href=\"/login\">Back to the login page</a></p>\n";
        return Reply::html(403, page("Session expired", body)).no_store();
    };

    let username = form_field(fields, "username").unwrap_or("");
    let password = form_field(fields, "password").unwrap_or("");
    match check_credentials(username, password) {
        Some(user) => match start_session(app, request, user) {
            Ok(set_cookie) => Reply::redirect("/account").header("Set-Cookie", set_cookie),
            Err(err) => server_error(&err),
        },
        None => Reply::html(
            401,
            login_form(&csrf_token, username, Some("Invalid username or password.")),
        )
        .no_store(),
    }
}

fn account_page(app: &App, request: &Request) -> Reply {
    let token = cookie(request, SESSION_COOKIE);
    let user = token
        .as_deref()
        .and_then(|token| lock(&app.sessions).user(token));
    let Some(user) = user else {
        let reply = Reply::redirect("/login");
        return if token.is_some() {
            reply.header("Set-Cookie", expired_cookie_header(SESSION_COOKIE))
        } else {
            reply
        };
    };
    let body = format!(
        "<h2>Welcome, {user}</h2>\n\
         <p>This is your account page.</p>\n\
         <table class=\"data\">\n\
         <tr><th>Department</th><td>Operations</td></tr>\n\
         <tr><th>Holiday balance</th><td>12 days</td></tr>\n\
         <tr><th>Open tickets</th><td>3</td></tr>\n\
         </table>\n\
         <form method=\"post\" action=\"/logout\">\n\
         <input type=\"submit\" value=\"Sign out\">\n\
         </form>\n",
        user = escape(user)
    );
    Reply::html(200, page("My account", &body)).no_store()
}

fn logout(app: &App, request: &Request) -> Reply {
    if let Some(token) = cookie(request, SESSION_COOKIE) {
        lock(&app.sessions).remove(&token);
    }
    Reply::redirect("/login").header("Set-Cookie", expired_cookie_header(SESSION_COOKIE))
}

fn spa_login_page() -> Reply {
    let body = r#"<h2>Sign in</h2>
<p class="small">New! Single-page sign in.</p>
<form id="spa-login">
<table class="form">
<tr><td><label for="username">Username:</label></td><td><input type="text" id="username" name="username" autocomplete="username" size="24"></td></tr>
<tr><td><label for="password">Password:</label></td><td><input type="password" id="password" name="password" autocomplete="current-password" size="24"></td></tr>
<tr><td></td><td><input type="submit" value="Sign in"></td></tr>
</table>
</form>
<p id="error" class="error" role="alert"></p>
<script>
(function () {
  var form = document.getElementById('spa-login');
  var error = document.getElementById('error');
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    error.textContent = '';
    var username = form.elements.username.value;
    var password = form.elements.password.value;
    fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({username, password})})
      .then(function (response) {
        return response.json().catch(function () {
          return {ok: false, error: 'unexpected response (HTTP ' + response.status + ')'};
        });
      })
      .then(function (data) {
        if (data && data.ok === true) {
          window.location.href = '/account';
        } else {
          error.textContent = (data && data.error) || 'login failed';
        }
      })
      .catch(function () {
        error.textContent = 'could not reach the server';
      });
  });
})();
</script>
"#;
    Reply::html(200, page("Sign in", body)).no_store()
}

/// The newer single-page app: its script builds the sign-in form, posts the credentials to
/// `/api/token` (JSON by `fetch`, or — `xhr` — form-urlencoded by `XMLHttpRequest`, as jQuery
/// does), keeps the bearer token it gets in memory and `localStorage`, and shows the protected
/// profile only with that token. No cookie session at all.
fn token_app_page(xhr: bool) -> Reply {
    let send = if xhr {
        r#"var x = new XMLHttpRequest();
    x.open('POST', '/api/token');
    x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded; charset=UTF-8');
    x.onload = function () {
      var data = null;
      try { data = JSON.parse(x.responseText); } catch (e) {}
      done(x.status, data);
    };
    x.onerror = function () { done(0, null); };
    x.send('username=' + encodeURIComponent(username) + '&password=' + encodeURIComponent(password));"#
    } else {
        r#"fetch('/api/token', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({username: username, password: password})})
      .then(function (r) { return r.json().then(function (d) { return [r.status, d]; }, function () { return [r.status, null]; }); })
      .then(function (a) { done(a[0], a[1]); }, function () { done(0, null); });"#
    };
    let body = format!(
        r#"<h2>Acme Portal</h2>
<p class="small">The new portal ({kind}).</p>
<div id="signin"></div>
<p id="status" class="error" role="alert"></p>
<div id="profile" hidden><p>Signed in as <b id="who"></b>.</p><p>Your documents: 3 reports, 1 memo.</p></div>
<script>
(function () {{
  var token = null;
  var signin = document.getElementById('signin');
  var status = document.getElementById('status');
  signin.innerHTML = '<form id="token-login"><table class="form">' +
    '<tr><td><label for="username">Username:</label></td><td><input type="text" id="username" name="username" autocomplete="username" size="24"></td></tr>' +
    '<tr><td><label for="password">Password:</label></td><td><input type="password" id="password" name="password" autocomplete="current-password" size="24"></td></tr>' +
    '<tr><td></td><td><input type="submit" id="go" value="Sign in"></td></tr></table></form>';
  function show(user) {{
    document.getElementById('who').textContent = user;
    document.getElementById('profile').hidden = false;
    signin.hidden = true;
    status.textContent = '';
  }}
  function profile() {{
    fetch('/api/me', {{headers: {{'Authorization': 'Bearer ' + token}}}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (d) {{ if (d && d.user) show(d.user); else status.textContent = 'Session expired'; }});
  }}
  function done(code, data) {{
    if (data && data.access_token) {{
      token = data.access_token;
      try {{ localStorage.setItem('acme_token', token); }} catch (e) {{}}
      profile();
    }} else {{
      status.textContent = 'Login failed' + (data && data.error ? ': ' + data.error : '');
    }}
  }}
  document.getElementById('token-login').addEventListener('submit', function (event) {{
    event.preventDefault();
    status.textContent = '';
    var username = document.getElementById('username').value;
    var password = document.getElementById('password').value;
    {send}
  }});
}})();
</script>
"#,
        kind = if xhr { "XMLHttpRequest" } else { "fetch" },
    );
    Reply::html(200, page("Acme Portal", &body)).no_store()
}

/// `POST /api/token`: JSON or form-urlencoded credentials. Answers 200 either way, as many
/// APIs do: `{"access_token": …, "user": …}` on success, `{"ok": false, "error": …}` when the
/// credentials are wrong (only a malformed request gets a 4xx).
fn api_token(app: &App, request: &Request) -> Reply {
    let content_type = header_value(request, "Content-Type");
    let media = media_type(content_type.as_deref());
    let (username, password, field_names) = if media == "application/json" {
        let parsed = serde_json::from_slice::<OrderedObject>(&request.body).ok();
        let fields = parsed.map(|obj| obj.0).unwrap_or_default();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_str())
                .map(str::to_string)
        };
        (
            get("username"),
            get("password"),
            fields.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        )
    } else if media == "application/x-www-form-urlencoded" {
        let fields = parse_form(&request.body);
        (
            form_field(&fields, "username").map(str::to_string),
            form_field(&fields, "password").map(str::to_string),
            fields.iter().map(|(k, _)| k.clone()).collect(),
        )
    } else {
        (None, None, Vec::new())
    };
    let reply = match (&username, &password) {
        (Some(u), Some(p)) => match check_credentials(u, p) {
            Some(user) => match random_token() {
                Ok(token) => {
                    lock(&app.tokens).create(token.clone(), user);
                    Reply::json(
                        200,
                        &serde_json::json!({"access_token": token, "token_type": "Bearer", "user": user}),
                    )
                }
                Err(err) => server_error(&err),
            },
            None => Reply::json(200, &ApiReply::failure("invalid credentials")),
        },
        _ => Reply::json(400, &ApiReply::failure("username and password are required")),
    }
    .no_store();
    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/api/token".to_string(),
            content_type,
            field_names,
            username,
            body_len: request.body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

/// `GET /api/me` with `Authorization: Bearer TOKEN`: the token's user.
fn api_me(app: &App, request: &Request) -> Reply {
    let token = header_value(request, "Authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    match token.and_then(|t| lock(&app.tokens).user(&t)) {
        Some(user) => Reply::json(200, &serde_json::json!({"user": user})).no_store(),
        None => Reply::json(401, &ApiReply::failure("no valid bearer token")).no_store(),
    }
}

fn api_login(app: &App, request: &Request) -> Reply {
    let body = &request.body;
    let content_type = header_value(request, "Content-Type");
    let parsed = serde_json::from_slice::<OrderedObject>(body).ok();
    let fields = parsed.as_ref().map(|obj| obj.0.as_slice()).unwrap_or(&[]);
    let string_field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_str())
    };
    let username = string_field("username");
    let password = string_field("password");

    let reply = if media_type(content_type.as_deref()) != "application/json" {
        Reply::json(
            415,
            &ApiReply::failure("expected Content-Type: application/json"),
        )
    } else {
        match (username, password) {
            (Some(username), Some(password)) => match check_credentials(username, password) {
                Some(user) => match start_session(app, request, user) {
                    Ok(set_cookie) => {
                        Reply::json(200, &ApiReply::success(user)).header("Set-Cookie", set_cookie)
                    }
                    Err(err) => {
                        eprintln!("legacy-app: cannot create session: {err}");
                        Reply::json(500, &ApiReply::failure("internal error"))
                    }
                },
                None => Reply::json(401, &ApiReply::failure("invalid credentials")),
            },
            _ => Reply::json(400, &ApiReply::failure("malformed request body")),
        }
    }
    .no_store();

    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/api/login".to_string(),
            content_type,
            field_names: fields.iter().map(|(name, _)| name.clone()).collect(),
            username: username.map(str::to_string),
            body_len: body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

fn debug_last_login(app: &App) -> Reply {
    let record = lock(&app.last_login).clone();
    Reply::json(200, &record).no_store()
}

fn not_found() -> Reply {
    let body = "<h2>Not found</h2>\n\
        <p>The page you requested does not exist.</p>\n\
        <p><a href=\"/\">Home</a></p>\n";
    Reply::html(404, page("Not found", body))
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let body = "<h2>Method not allowed</h2>\n<p><a href=\"/\">Home</a></p>\n";
    Reply::html(405, page("Method not allowed", body)).header("Allow", allow.to_string())
}

fn too_large() -> Reply {
    let body = "<h2>Request too large</h2>\n<p>The request body is too large.</p>\n";
    Reply::html(413, page("Request too large", body))
}

fn server_error(err: &io::Error) -> Reply {
    eprintln!("legacy-app: internal error: {err}");
    internal_error()
}

fn internal_error() -> Reply {
    let body = "<h2>Internal error</h2>\n<p>Something went wrong. Please try again.</p>\n";
    Reply::html(500, page("Internal error", body))
}

/// Wraps page content in the shared, old-fashioned layout.
fn page(title: &str, content: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - {APP_NAME}</title>
<style>
body {{ margin: 0; background: #d4d0c8; font-family: Verdana, Tahoma, Arial, sans-serif; font-size: 13px; color: #000; }}
#page {{ width: 620px; margin: 24px auto; background: #fff; border: 1px solid #808080; }}
#banner {{ background: #000080; color: #fff; padding: 8px 12px; font-size: 16px; font-weight: bold; }}
#nav {{ background: #ece9d8; border-bottom: 1px solid #808080; padding: 4px 12px; font-size: 11px; }}
#content {{ padding: 8px 16px 16px 16px; }}
#footer {{ border-top: 1px solid #c0c0c0; padding: 6px 12px; font-size: 10px; color: #666; }}
h2 {{ font-size: 15px; color: #000080; }}
a {{ color: #0000ee; }}
.error {{ color: #c00000; font-weight: bold; }}
.small {{ font-size: 11px; color: #444; }}
table.form td {{ padding: 3px 6px 3px 0; }}
table.data {{ border-collapse: collapse; margin-bottom: 12px; }}
table.data th, table.data td {{ border: 1px solid #c0c0c0; padding: 3px 8px; text-align: left; }}
table.data th {{ background: #ece9d8; }}
</style>
</head>
<body>
<div id="page">
<div id="banner">{APP_NAME}</div>
<div id="nav"><a href="/">Home</a> | <a href="/login">Sign in</a> | <a href="/account">My account</a></div>
<div id="content">
{content}</div>
<div id="footer">&copy; 2004 Acme Corp. Internal use only.</div>
</div>
</body>
</html>
"#,
        title = escape(title),
    )
}

// ---------------------------------------------------------------------------
// Login helpers
// ---------------------------------------------------------------------------

/// Checks a username and password against the demo accounts. Compares
/// against every account so the time taken does not depend on which (if
/// any) username matched.
fn check_credentials(username: &str, password: &str) -> Option<&'static str> {
    let mut found = None;
    for (user, pass) in USERS {
        let user_ok = constant_time_eq(user.as_bytes(), username.as_bytes());
        let pass_ok = constant_time_eq(pass.as_bytes(), password.as_bytes());
        if user_ok & pass_ok {
            found = Some(*user);
        }
    }
    found
}

/// Starts a fresh session for `user` (dropping any session the client already
/// had) and returns the `Set-Cookie` value.
fn start_session(app: &App, request: &Request, user: &'static str) -> io::Result<String> {
    let token = random_token()?;
    let mut sessions = lock(&app.sessions);
    if let Some(old) = cookie(request, SESSION_COOKIE) {
        sessions.remove(&old);
    }
    sessions.create(token.clone(), user);
    Ok(cookie_header(SESSION_COOKIE, &token))
}

fn record_login(app: &App, request: &Request, mut record: LoginRecord) {
    if !app.debug_endpoints {
        return;
    }
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        let value = if matches!(
            name.as_str(),
            "cookie" | "authorization" | "proxy-authorization"
        ) {
            "[redacted]".to_string()
        } else {
            value.clone()
        };
        record
            .headers
            .entry(name)
            .and_modify(|existing| {
                if existing != "[redacted]" {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
            })
            .or_insert(value);
    }
    *lock(&app.last_login) = Some(record);
}

/// Compares two byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// 16 bytes from the kernel's random source, hex encoded.
fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_LEN / 2];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_token(value: &str) -> bool {
    value.len() == TOKEN_LEN && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn cookie_header(name: &str, value: &str) -> String {
    format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/")
}

fn expired_cookie_header(name: &str) -> String {
    format!("{name}=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/")
}

// ---------------------------------------------------------------------------
// HTTP parsing helpers
// ---------------------------------------------------------------------------

/// First value of a request header (case-insensitive name).
fn header_value(request: &Request, name: &'static str) -> Option<String> {
    request
        .headers
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

/// The media type of a Content-Type value, lower-cased, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Value of the first cookie called `name`, across all Cookie headers.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case("Cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_string())
}

/// Parses an `application/x-www-form-urlencoded` body into ordered pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// First value of form field `name`.
fn form_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Decodes one form component: `+` is a space, `%XX` a byte. A `%` not
/// followed by two hex digits is kept as is; invalid UTF-8 becomes U+FFFD.
fn form_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3).and_then(|pair| {
                    let hi = (pair[0] as char).to_digit(16)?;
                    let lo = (pair[1] as char).to_digit(16)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Makes a request path safe to print on one log line.
fn printable(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A JSON object with its keys in the order they were sent.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(OrderedObject(fields))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}
