//! The HTTP/1.1 transport: a small, bounded server on blocking sockets.

use super::*;

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
pub(crate) struct Pool {
    /// Accepted connections no worker has picked up yet.
    pub(crate) queued: AtomicUsize,
    /// Workers waiting for a connection.
    pub(crate) idle_workers: AtomicUsize,
}

impl Pool {
    /// Whether a connection is waiting and no worker is free to take it.
    pub(crate) fn others_waiting(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0 && self.idle_workers.load(Ordering::SeqCst) == 0
    }
}

/// Why a socket read gave up.
pub(crate) enum Stop {
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
pub(crate) enum Abort {
    /// Close without answering: the peer went away, the connection was idle
    /// too long, or the socket failed.
    Quiet,
    /// Answer with this status (and a reason for the log), then close.
    Reject(u16, &'static str),
}

/// A socket failure once part of a request has arrived.
pub(crate) fn mid_request(stop: Stop) -> Abort {
    match stop {
        Stop::TimedOut => Abort::Reject(408, "request not received in time"),
        Stop::Closed => Abort::Reject(400, "connection closed mid-request"),
        Stop::Yield | Stop::Failed => Abort::Quiet,
    }
}

/// How the request body is delimited.
pub(crate) enum BodyKind {
    Empty,
    Length(usize),
    Chunked,
}

/// What the head says about reading the body and reusing the connection.
pub(crate) struct Framing {
    pub(crate) body: BodyKind,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
}

/// One client connection and the bytes received on it but not yet used.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Received bytes; `buf[start..]` are not consumed yet.
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
}

pub(crate) fn serve_connection(stream: TcpStream, app: &App, pool: &Pool) {
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
    pub(crate) fn buffered(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Reads at least one more byte into the buffer, waiting until `deadline`
    /// at the latest and for at most `IO_TIMEOUT` of silence. With `idle`,
    /// gives up early when another connection is waiting for a worker.
    pub(crate) fn fill(&mut self, deadline: Instant, idle: Option<&Pool>) -> Result<(), Stop> {
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
    pub(crate) fn read_head(&mut self, pool: &Pool) -> Result<(Request, bool), Abort> {
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
    pub(crate) fn read_body(&mut self, kind: &BodyKind) -> Result<Vec<u8>, Abort> {
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
    pub(crate) fn read_exact_into(
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
    pub(crate) fn read_chunked(
        &mut self,
        body: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<(), Abort> {
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
    pub(crate) fn read_line(&mut self, limit: usize, deadline: Instant) -> Result<Vec<u8>, Abort> {
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
    pub(crate) fn send(
        &mut self,
        reply: &Reply,
        head_only: bool,
        connection: Option<&str>,
    ) -> io::Result<()> {
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
    pub(crate) fn reject(mut self, request: Option<&Request>, status: u16, why: &str) {
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
    pub(crate) fn linger_close(mut self) {
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
pub(crate) fn head_end(data: &[u8], from: usize) -> Option<usize> {
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
pub(crate) fn parse_head(raw: &[u8]) -> Result<(Request, bool), (u16, &'static str)> {
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
pub(crate) fn request_path(target: &[u8]) -> Option<String> {
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
pub(crate) fn parse_header(line: &[u8]) -> Option<(String, String)> {
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
pub(crate) fn framing(request: &Request, http10: bool) -> Result<Framing, (u16, &'static str)> {
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
pub(crate) fn parse_hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(n.saturating_mul(16).saturating_add(digit as usize))
    })
}

/// Strips optional whitespace (spaces and tabs) from both ends.
pub(crate) fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether `b` may appear in a token (method, header name; RFC 9110, 5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The page sent with a status the transport answers on its own.
pub(crate) fn error_reply(status: u16) -> Reply {
    if status == 413 {
        return too_large();
    }
    let title = reason(status);
    Reply::html(status, page(title, &format!("<h2>{title}</h2>\n")))
}

pub(crate) fn reason(status: u16) -> &'static str {
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
pub(crate) fn http_date(now: SystemTime) -> String {
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
