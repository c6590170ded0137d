//! Incremental HTTP/1.0 and HTTP/1.1 decoding of one connection, fed with what the kernel saw
//! of each read/write: a bounded prefix of the bytes plus the count of all bytes moved.
//!
//! Each direction is a stream parser (start line, head, body by Content-Length / chunked /
//! until close). Requests queue in arrival order (pipelining) and each final response is paired
//! with the oldest unanswered request; interim 1xx responses are skipped. Bytes the kernel did
//! not copy are a "gap": a body counts them down exactly; a gap inside a head or a chunk-size
//! line loses framing, and the stream resynchronises at the next syscall whose bytes start a
//! message. A response whose end cannot be known (no length, or framing lost) ends at the last
//! byte seen before the next request, the connection's close, or its expiry.
//!
//! State per connection is bounded: head buffer [`MAX_HEAD`], [`MAX_PENDING`] queued requests,
//! target kept up to [`MAX_TARGET`] bytes. Nothing is reported unless a request head and a
//! final response status were both seen.
use std::collections::VecDeque;

/// Largest head (start line + headers) buffered; longer heads lose framing.
pub const MAX_HEAD: usize = 16 * 1024;
/// Requests awaiting a response on one connection (pipelining depth).
pub const MAX_PENDING: usize = 64;
/// Bytes of a request target kept (longer targets are truncated before route normalisation).
pub const MAX_TARGET: usize = 2048;
const MAX_CHUNK_LINE: usize = 1024;

/// Which side of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It accepted the connection: reads carry requests, writes carry responses.
    Server,
    /// It connected: writes carry requests, reads carry responses.
    Client,
}

/// Direction of a syscall's bytes, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// A request/response exchange whose both ends were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The method's label: a known method, or `_OTHER` for any other token.
    pub method: &'static str,
    /// Request target, truncated to [`MAX_TARGET`] bytes; may be non-UTF-8. Server side only
    /// (empty on the client side, which has no route label).
    pub target: Target,
    pub status: u16,
    /// Timestamps in ns: first byte of the request, last byte of the response.
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Target bytes kept without a heap allocation (most request targets are shorter).
const INLINE_TARGET: usize = 38;

/// The bytes of a request target: inline when short, on the heap otherwise.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    Inline { len: u8, buf: [u8; INLINE_TARGET] },
    Heap(Box<[u8]>),
}

impl Target {
    pub fn new(b: &[u8]) -> Target {
        if b.len() <= INLINE_TARGET {
            let mut buf = [0; INLINE_TARGET];
            buf[..b.len()].copy_from_slice(b);
            Target::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Target::Heap(b.into())
        }
    }
}

impl std::ops::Deref for Target {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Target::Inline { len, buf } => &buf[..usize::from(*len)],
            Target::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// Decoding anomalies, counted by the probe (`hostlens_http_decode_errors_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// Bytes where a request or status line should start that are not one.
    BadStartLine,
    /// A head longer than [`MAX_HEAD`], or cut by bytes the kernel did not copy.
    HeadLost,
    /// Invalid or unsupported framing (bad Content-Length, bad chunk size).
    BadFraming,
    /// A final response with no request waiting for it.
    UnpairedResponse,
    /// More than [`MAX_PENDING`] requests waiting.
    TooManyPending,
    /// Requests still waiting when the connection closed or expired.
    Unanswered,
    /// A connection's buffered heads and targets dropped because the decoder as a whole held
    /// more than its memory budget.
    MemoryBudget,
}

impl Anomaly {
    pub const ALL: [Anomaly; 7] = [
        Anomaly::BadStartLine,
        Anomaly::HeadLost,
        Anomaly::BadFraming,
        Anomaly::UnpairedResponse,
        Anomaly::TooManyPending,
        Anomaly::Unanswered,
        Anomaly::MemoryBudget,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::BadStartLine => "bad_start_line",
            Anomaly::HeadLost => "head_lost",
            Anomaly::BadFraming => "bad_framing",
            Anomaly::UnpairedResponse => "unpaired_response",
            Anomaly::TooManyPending => "too_many_pending",
            Anomaly::Unanswered => "unanswered",
            Anomaly::MemoryBudget => "memory_budget",
        }
    }
}

/// What a feed produced.
#[derive(Debug, Default)]
pub struct Output {
    pub exchanges: Vec<Exchange>,
    pub anomalies: Vec<Anomaly>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.anomalies.is_empty()
    }
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
}

#[derive(Debug)]
enum Chunk {
    /// Reading the chunk-size line.
    Size(Vec<u8>),
    /// Chunk data bytes left, then its CRLF.
    Data(u64),
    /// Bytes of the CRLF after chunk data left.
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty line; `line_len` of the current line.
    Trailer { line_len: usize },
}

#[derive(Debug)]
enum State {
    /// Expecting a start line at the next byte.
    Start,
    /// Accumulating a head.
    Head(Vec<u8>),
    Body(Body),
    /// Framing lost; wait for a syscall whose bytes start a message.
    Lost,
    /// The connection switched protocols (101, CONNECT): nothing more to decode.
    Opaque,
}

#[derive(Debug)]
struct Pending {
    method: &'static str,
    target: Target,
    start_ns: u64,
}

/// A response whose status is known but whose end is not yet.
#[derive(Debug)]
struct Open {
    req: Pending,
    status: u16,
    /// Last byte of it seen so far.
    last_ns: u64,
    /// Ends when its body is done (false: ends at next request / close).
    framed: bool,
}

/// Parser of one direction.
#[derive(Debug)]
struct Stream {
    state: State,
    /// Start of the message being parsed (first byte).
    msg_start_ns: u64,
}

impl Stream {
    fn new() -> Self {
        Stream {
            state: State::Start,
            msg_start_ns: 0,
        }
    }
}

/// One connection's decoder.
#[derive(Debug)]
pub struct Conn {
    role: Role,
    requests: Stream,
    responses: Stream,
    pending: VecDeque<Pending>,
    open: Option<Open>,
    pub last_ns: u64,
}

/// A parsed head.
struct Head<'a> {
    first: &'a [u8],
    content_length: Option<Option<u64>>,
    chunked: bool,
}

impl Conn {
    pub fn new(role: Role) -> Self {
        Conn {
            role,
            requests: Stream::new(),
            responses: Stream::new(),
            pending: VecDeque::new(),
            open: None,
            last_ns: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The connection has been silent for the idle timeout: what it left unfinished is given
    /// up as at a close (an unframed response ends, requests still waiting count as
    /// unanswered), partial heads and bodies are dropped, and each direction decodes again
    /// from its next message start. The connection itself stays. Returns whether there was
    /// anything to give up.
    pub fn expire(&mut self, out: &mut Output) -> bool {
        let partial = |s: &Stream| matches!(s.state, State::Head(_) | State::Body(_));
        if self.open.is_none()
            && self.pending.is_empty()
            && !partial(&self.requests)
            && !partial(&self.responses)
        {
            return false;
        }
        self.close(out);
        for st in [&mut self.requests, &mut self.responses] {
            if partial(st) {
                st.state = State::Lost;
            }
        }
        self.pending = VecDeque::new();
        true
    }

    /// Requests waiting for their response (for tests and bounds).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Heap bytes this connection holds beyond its fixed size: partial heads, a chunk-size
    /// line, and request targets too long to be kept inline.
    pub fn heap_bytes(&self) -> usize {
        fn stream(s: &Stream) -> usize {
            match &s.state {
                State::Head(v) | State::Body(Body::Chunked(Chunk::Size(v))) => v.capacity(),
                _ => 0,
            }
        }
        fn target(t: &Target) -> usize {
            match t {
                Target::Heap(b) => b.len(),
                Target::Inline { .. } => 0,
            }
        }
        stream(&self.requests)
            + stream(&self.responses)
            + self
                .pending
                .iter()
                .map(|p| target(&p.target))
                .sum::<usize>()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.open.as_ref().map_or(0, |o| target(&o.req.target))
    }

    /// Drops what the connection buffers (see [`Conn::heap_bytes`]): the requests waiting and
    /// the open response are abandoned, both directions wait for the next message start.
    /// Counted as one [`Anomaly::MemoryBudget`].
    pub fn shed(&mut self, out: &mut Output) {
        for st in [&mut self.requests, &mut self.responses] {
            if !matches!(st.state, State::Opaque) {
                st.state = State::Lost;
            }
        }
        self.pending = VecDeque::new();
        self.open = None;
        out.anomalies.push(Anomaly::MemoryBudget);
    }

    /// Feeds one syscall's bytes: `data` is the copied prefix of the `total` bytes moved.
    pub fn feed(&mut self, dir: Dir, ts_ns: u64, data: &[u8], total: u64, out: &mut Output) {
        self.last_ns = self.last_ns.max(ts_ns);
        let total = total.max(data.len() as u64);
        let is_request = matches!(
            (self.role, dir),
            (Role::Server, Dir::In) | (Role::Client, Dir::Out)
        );
        if is_request {
            // A new request while a response of unknown length is open: that response ended
            // (a client does not send its next request mid-response unless pipelining, and
            // a pipelined response is always framed).
            if matches!(self.open, Some(Open { framed: false, .. }))
                && self.pending.is_empty()
                && starts_request(data)
            {
                self.finish_open(out);
            }
            self.feed_requests(ts_ns, data, total, out);
        } else {
            self.feed_responses(ts_ns, data, total, out);
        }
    }

    /// The connection closed: a response running until close ends; requests without one are
    /// dropped (counted as [`Anomaly::Unanswered`]).
    pub fn close(&mut self, out: &mut Output) {
        if self.open.is_some() {
            let framed = self.open.as_ref().is_some_and(|o| o.framed);
            if framed {
                // Closed mid-body: not a completed response.
                self.open = None;
                out.anomalies.push(Anomaly::Unanswered);
            } else {
                self.finish_open(out);
            }
        }
        if !self.pending.is_empty() {
            self.pending.clear();
            out.anomalies.push(Anomaly::Unanswered);
        }
    }

    fn finish_open(&mut self, out: &mut Output) {
        if let Some(o) = self.open.take() {
            out.exchanges.push(Exchange {
                method: o.req.method,
                target: o.req.target,
                status: o.status,
                start_ns: o.req.start_ns,
                end_ns: o.last_ns,
            });
        }
    }

    fn feed_requests(&mut self, ts: u64, data: &[u8], total: u64, out: &mut Output) {
        // `pos` runs over all `total` bytes; only `data` (the first bytes) is visible.
        let mut pos = 0u64;
        let vis = data.len() as u64;
        let mut boundary = true;
        loop {
            let rest = &data[pos.min(vis) as usize..];
            match &mut self.requests.state {
                State::Opaque => return,
                State::Lost => {
                    if boundary && starts_request(rest) {
                        self.requests.state = State::Start;
                        continue;
                    }
                    return;
                }
                State::Start => {
                    // Tolerate blank lines before a request line (RFC 9112 section 2.2).
                    let skip = rest
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    pos += skip as u64;
                    if pos >= total {
                        return;
                    }
                    if pos >= vis {
                        // The next message starts in bytes we did not see.
                        self.requests.state = State::Lost;
                        return;
                    }
                    self.requests.msg_start_ns = ts;
                    // A head wholly inside this syscall's bytes is parsed in place.
                    if let Some((n, parsed)) = scan_head(rest) {
                        pos += n as u64;
                        if !self.request_head(parsed, out) {
                            return;
                        }
                    } else {
                        self.requests.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    let (done, used) = take_head(buf, rest);
                    pos += used as u64;
                    if buf.len() > MAX_HEAD {
                        self.requests.state = State::Lost;
                        out.anomalies.push(Anomaly::HeadLost);
                        return;
                    }
                    if !done {
                        if total > vis {
                            // The rest of the head is in bytes we did not copy: keep what the
                            // request line says, lose the framing.
                            let head = std::mem::take(buf);
                            self.requests.state = State::Lost;
                            out.anomalies.push(Anomaly::HeadLost);
                            if let Some((method, target)) = request_line(first_line(&head), true) {
                                self.push_pending(method, target, out);
                            }
                        } else if !plausible_request_prefix(buf) {
                            self.requests.state = State::Lost;
                            out.anomalies.push(Anomaly::BadStartLine);
                        }
                        return;
                    }
                    let head = std::mem::take(buf);
                    if !self.request_head(parse_head(&head), out) {
                        return;
                    }
                }
                State::Body(body) => match advance_body(body, rest, total - pos) {
                    BodyStep::NeedMore => return,
                    BodyStep::Done(used) => {
                        pos += used;
                        self.requests.state = State::Start;
                    }
                    BodyStep::Lost => {
                        self.requests.state = State::Lost;
                        out.anomalies.push(Anomaly::BadFraming);
                        return;
                    }
                },
            }
            boundary = false;
        }
    }

    /// A complete request head: queues the request and sets what follows it. False when the
    /// stream lost its framing.
    fn request_head(&mut self, parsed: Head<'_>, out: &mut Output) -> bool {
        let Some((method, target)) = request_line(parsed.first, false) else {
            self.requests.state = State::Lost;
            out.anomalies.push(Anomaly::BadStartLine);
            return false;
        };
        let Ok(body) = body_of(&parsed, false) else {
            self.requests.state = State::Lost;
            out.anomalies.push(Anomaly::BadFraming);
            return false;
        };
        self.push_pending(method, target, out);
        if matches!(self.requests.state, State::Lost) {
            return false;
        }
        self.requests.state = match body {
            Some(Some(b)) => State::Body(b),
            _ => State::Start,
        };
        true
    }

    /// Forgets the waiting requests (counted as [`Anomaly::Unanswered`]).
    fn drop_pending(&mut self, out: &mut Output) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.anomalies.push(Anomaly::Unanswered);
        }
    }

    fn push_pending(&mut self, method: &'static str, target: &[u8], out: &mut Output) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
            self.requests.state = State::Lost;
            self.responses.state = State::Lost;
            out.anomalies.push(Anomaly::TooManyPending);
            return;
        }
        self.pending.push_back(Pending {
            method,
            // Only the server side names a route; a client's exchange needs no target.
            target: Target::new(if self.role == Role::Server {
                target
            } else {
                &[]
            }),
            start_ns: self.requests.msg_start_ns,
        });
    }

    fn feed_responses(&mut self, ts: u64, data: &[u8], total: u64, out: &mut Output) {
        let mut pos = 0u64;
        let vis = data.len() as u64;
        let mut boundary = true;
        let resync = matches!(self.responses.state, State::Lost) && data.starts_with(b"HTTP/1.");
        if !resync && let Some(o) = self.open.as_mut() {
            // Bytes of the open response (body, or until-close data).
            o.last_ns = ts;
        }
        loop {
            let rest = &data[pos.min(vis) as usize..];
            match &mut self.responses.state {
                State::Opaque => return,
                State::Lost => {
                    if boundary && rest.starts_with(b"HTTP/1.") {
                        // A new response: whatever was open before ended at its last byte.
                        if let Some(o) = self.open.as_mut() {
                            o.framed = false;
                        }
                        self.finish_unframed(out);
                        self.responses.state = State::Start;
                        continue;
                    }
                    return;
                }
                State::Start => {
                    let skip = rest
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    pos += skip as u64;
                    if pos >= total {
                        return;
                    }
                    if pos >= vis {
                        // Responses start in bytes we did not see: which requests they
                        // answer is unknowable, so none of the waiting ones is paired.
                        self.responses.state = State::Lost;
                        self.drop_pending(out);
                        return;
                    }
                    self.responses.msg_start_ns = ts;
                    if let Some((n, parsed)) = scan_head(rest) {
                        pos += n as u64;
                        if !self.response_head(parsed, ts, out) {
                            return;
                        }
                    } else {
                        self.responses.state = State::Head(Vec::new());
                    }
                }
                State::Head(buf) => {
                    let (done, used) = take_head(buf, rest);
                    pos += used as u64;
                    if buf.len() > MAX_HEAD {
                        self.responses.state = State::Lost;
                        out.anomalies.push(Anomaly::HeadLost);
                        return;
                    }
                    if !done {
                        if total > vis {
                            // Head cut by uncopied bytes: the status is known, the end is not.
                            let head = std::mem::take(buf);
                            self.responses.state = State::Lost;
                            out.anomalies.push(Anomaly::HeadLost);
                            if let Some(status) = status_line(first_line(&head))
                                && status >= 200
                            {
                                self.open_response(status, ts, false, out);
                            }
                            // Pipelined requests behind it cannot be paired any more.
                            self.drop_pending(out);
                        } else if !b"HTTP/1.".starts_with(&buf[..buf.len().min(7)]) {
                            self.responses.state = State::Lost;
                            out.anomalies.push(Anomaly::BadStartLine);
                        }
                        return;
                    }
                    let head = std::mem::take(buf);
                    if !self.response_head(parse_head(&head), ts, out) {
                        return;
                    }
                }
                State::Body(body) => match advance_body(body, rest, total - pos) {
                    BodyStep::NeedMore => return,
                    BodyStep::Done(used) => {
                        pos += used;
                        if let Some(o) = self.open.as_mut() {
                            o.last_ns = ts;
                        }
                        self.finish_open(out);
                        self.responses.state = State::Start;
                    }
                    BodyStep::Lost => {
                        // Framing lost mid-body: the end is no longer knowable exactly.
                        if let Some(o) = self.open.as_mut() {
                            o.framed = false;
                        }
                        self.responses.state = State::Lost;
                        out.anomalies.push(Anomaly::BadFraming);
                        return;
                    }
                },
            }
            boundary = false;
        }
    }

    /// A complete response head: pairs a final response with its request and sets what
    /// follows it. False when decoding this direction stops for this syscall's bytes.
    fn response_head(&mut self, parsed: Head<'_>, ts: u64, out: &mut Output) -> bool {
        let Some(status) = status_line(parsed.first) else {
            self.responses.state = State::Lost;
            out.anomalies.push(Anomaly::BadStartLine);
            return false;
        };
        if (100..200).contains(&status) && status != 101 {
            // Interim response: the final one follows.
            self.responses.state = State::Start;
            return true;
        }
        let method = self.pending.front().map(|p| p.method);
        let tunnel = status == 101 || (method == Some("CONNECT") && (200..300).contains(&status));
        let no_body = tunnel || status == 204 || status == 304 || method == Some("HEAD");
        let body = if no_body {
            Ok(None)
        } else {
            body_of(&parsed, true)
        };
        match body {
            Err(()) => {
                self.responses.state = State::Lost;
                out.anomalies.push(Anomaly::BadFraming);
                false
            }
            Ok(None) => {
                if self.open_response(status, ts, true, out) {
                    self.finish_open(out);
                }
                if tunnel {
                    self.requests.state = State::Opaque;
                    self.responses.state = State::Opaque;
                    return false;
                }
                self.responses.state = State::Start;
                true
            }
            Ok(Some(Some(b))) => {
                // Without a waiting request the body is still skipped to stay in step.
                self.open_response(status, ts, true, out);
                self.responses.state = State::Body(b);
                true
            }
            Ok(Some(None)) => {
                // Until close (HTTP/1.0 style).
                self.open_response(status, ts, false, out);
                self.responses.state = State::Lost;
                false
            }
        }
    }

    /// Ends an open response of unknown length at its last byte seen; a framed one still
    /// open cannot have completed and is dropped.
    fn finish_unframed(&mut self, out: &mut Output) {
        if matches!(self.open, Some(Open { framed: false, .. })) {
            self.finish_open(out);
        } else if self.open.is_some() {
            self.open = None;
        }
    }

    /// Pairs a final response with the oldest waiting request. Returns false when none waits.
    fn open_response(&mut self, status: u16, ts: u64, framed: bool, out: &mut Output) -> bool {
        // An unframed response still open ends where this one starts.
        self.finish_unframed(out);
        match self.pending.pop_front() {
            Some(req) => {
                self.open = Some(Open {
                    req,
                    status,
                    last_ns: ts,
                    framed,
                });
                true
            }
            None => {
                out.anomalies.push(Anomaly::UnpairedResponse);
                false
            }
        }
    }
}

enum BodyStep {
    /// All of `data`/`total` consumed, body continues.
    NeedMore,
    /// Body ended after this many bytes of the chunk.
    Done(u64),
    Lost,
}

/// Advances a body over `data` (visible) followed by `total - data.len()` unseen bytes.
fn advance_body(body: &mut Body, data: &[u8], total: u64) -> BodyStep {
    match body {
        Body::Length(left) => {
            if *left > total {
                *left -= total;
                BodyStep::NeedMore
            } else {
                BodyStep::Done(*left)
            }
        }
        Body::Chunked(ch) => {
            let mut i = 0u64;
            loop {
                let vis = data.len() as u64;
                match ch {
                    Chunk::Data(left) => {
                        let avail = total - i;
                        if *left >= avail {
                            *left -= avail;
                            if *left == 0 {
                                *ch = Chunk::DataEnd(2);
                            }
                            return BodyStep::NeedMore;
                        }
                        i += *left;
                        *ch = Chunk::DataEnd(2);
                    }
                    Chunk::DataEnd(n) => {
                        if i >= total {
                            return BodyStep::NeedMore;
                        }
                        if i >= vis {
                            return BodyStep::Lost;
                        }
                        let b = data[i as usize];
                        i += 1;
                        if *n == 2 && b == b'\n' {
                            *ch = Chunk::Size(Vec::new());
                        } else if *n == 2 && b == b'\r' {
                            *n = 1;
                        } else if *n == 1 && b == b'\n' {
                            *ch = Chunk::Size(Vec::new());
                        } else {
                            return BodyStep::Lost;
                        }
                    }
                    Chunk::Size(line) => {
                        if i >= total {
                            return BodyStep::NeedMore;
                        }
                        if i >= vis {
                            return BodyStep::Lost;
                        }
                        let b = data[i as usize];
                        i += 1;
                        if b != b'\n' {
                            if line.len() >= MAX_CHUNK_LINE {
                                return BodyStep::Lost;
                            }
                            line.push(b);
                            continue;
                        }
                        let Some(size) = chunk_size(line) else {
                            return BodyStep::Lost;
                        };
                        *ch = if size == 0 {
                            Chunk::Trailer { line_len: 0 }
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Trailer { line_len } => {
                        if i >= total {
                            return BodyStep::NeedMore;
                        }
                        if i >= vis {
                            return BodyStep::Lost;
                        }
                        let b = data[i as usize];
                        i += 1;
                        match b {
                            b'\n' if *line_len == 0 => return BodyStep::Done(i),
                            b'\n' => *line_len = 0,
                            b'\r' => {}
                            _ => {
                                *line_len += 1;
                                if *line_len > MAX_CHUNK_LINE {
                                    return BodyStep::Lost;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Hex chunk size before any `;extension`, surrounding whitespace and CR allowed.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let hex = std::str::from_utf8(&line[..end]).ok()?.trim();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The head at the start of `data` when the whole of it is there within [`MAX_HEAD`]: its
/// length up to and including its blank line (CRLF CRLF or bare LF LF) and its fields, found
/// in one pass over its lines (a line after the first that is empty or a lone CR ends it).
fn scan_head(data: &[u8]) -> Option<(usize, Head<'_>)> {
    let data = &data[..data.len().min(MAX_HEAD)];
    // The line ends in order, from one pass over the head.
    let mut ends = LineEnds::new(data);
    let first_end = ends.next()?;
    let first = &data[..first_end];
    let mut h = Head {
        first: first.strip_suffix(b"\r").unwrap_or(first),
        content_length: None,
        chunked: false,
    };
    let mut start = first_end + 1;
    for end in ends {
        let line = &data[start..end];
        if line.is_empty() || line == b"\r" {
            return Some((end + 1, h));
        }
        header_line(&mut h, line);
        start = end + 1;
    }
    None
}

/// The positions of the LF bytes of `data`, in order. Each 64-byte block is compared with LF
/// at once into a bit mask, and the positions come from its set bits: a head's lines are short
/// (tens of bytes), and a search started per line costs more in its setup than in its scan.
struct LineEnds<'a> {
    data: &'a [u8],
    /// Offset of the block `mask` describes.
    base: usize,
    /// LF bytes of that block not yet returned, bit i for byte `base + i`.
    mask: u64,
}

impl<'a> LineEnds<'a> {
    fn new(data: &'a [u8]) -> Self {
        LineEnds {
            data,
            base: 0,
            mask: lf_mask(data),
        }
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 64;
            let block = self.data.get(self.base..)?;
            if block.is_empty() {
                return None;
            }
            self.mask = lf_mask(block);
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + i)
    }
}

/// Bit i set when byte i of the first 64 of `data` (fewer at its end) is LF.
fn lf_mask(data: &[u8]) -> u64 {
    match data.first_chunk::<64>() {
        Some(block) => lf_mask64(block),
        None => {
            // The last, short block: its bytes after zero padding (never LF).
            let mut block = [0u8; 64];
            block[..data.len()].copy_from_slice(data);
            lf_mask64(&block)
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn lf_mask64(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let mut mask = 0u64;
    for (k, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of every x86_64 CPU; an unaligned load of the 16 bytes of
        // `part`.
        let bits = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        mask |= u64::from(bits as u16) << (16 * k);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
fn lf_mask64(block: &[u8; 64]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, b)| m | (u64::from(*b == b'\n') << i))
}

/// Appends head bytes from `data` to `buf` until the blank line (CRLF CRLF, or bare LF LF).
/// Returns (complete, bytes of `data` used).
fn take_head(buf: &mut Vec<u8>, data: &[u8]) -> (bool, usize) {
    let old = buf.len();
    let room = (MAX_HEAD + 1).saturating_sub(old);
    let take = data.len().min(room.max(1));
    buf.extend_from_slice(&data[..take]);
    // Only new line ends are searched; the blank-line test may look back into older bytes.
    for nl in memchr::memchr_iter(b'\n', &buf[old..]).map(|i| old + i) {
        let blank = (nl >= 1 && buf[nl - 1] == b'\n')
            || (nl >= 2 && buf[nl - 1] == b'\r' && buf[nl - 2] == b'\n');
        if blank {
            buf.truncate(nl + 1);
            return (true, nl + 1 - old);
        }
    }
    (false, take)
}

fn first_line(head: &[u8]) -> &[u8] {
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let l = &head[..end];
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn parse_head(head: &[u8]) -> Head<'_> {
    let first_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let first = &head[..first_end];
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut h = Head {
        first,
        content_length: None,
        chunked: false,
    };
    let mut rest = head.get(first_end + 1..).unwrap_or_default();
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        header_line(&mut h, line);
    }
    h
}

/// Takes what matters of one header line (without its LF) into `h`: Content-Length and
/// Transfer-Encoding; other lines are skipped by their first byte.
fn header_line<'a>(h: &mut Head<'a>, line: &'a [u8]) {
    // A field name runs up to its colon, with no space before it (RFC 9112 section 5.1), so
    // the two names wanted are prefixes "name:" of the line.
    const LENGTH: &[u8] = b"content-length:";
    const ENCODING: &[u8] = b"transfer-encoding:";
    let name = match line.first() {
        Some(b'c' | b'C') => LENGTH,
        Some(b't' | b'T') => ENCODING,
        _ => return,
    };
    if line.len() < name.len() || !line[..name.len()].eq_ignore_ascii_case(name) {
        return;
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let value = line.get(name.len()..).unwrap_or_default().trim_ascii();
    if name == LENGTH {
        let v = digits(value);
        h.content_length = match (h.content_length, v) {
            // Differing repeated lengths make the framing ambiguous (RFC 9112 6.3).
            (Some(Some(a)), Some(b)) if a != b => Some(None),
            (Some(None), _) => Some(None),
            (_, v) => Some(v),
        };
    } else {
        let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
        h.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
    }
}

/// `1*DIGIT` as a number (None: empty, another byte, or past `u64`).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Body framing of a head: `Ok(None)` no body, `Ok(Some(Some(b)))` framed body,
/// `Ok(Some(None))` until close (responses only), `Err` invalid.
#[expect(
    clippy::option_option,
    reason = "three cases: none, framed, until close"
)]
fn body_of(h: &Head<'_>, response: bool) -> Result<Option<Option<Body>>, ()> {
    if h.chunked {
        return Ok(Some(Some(Body::Chunked(Chunk::Size(Vec::new())))));
    }
    match h.content_length {
        Some(None) => Err(()),
        Some(Some(0)) => Ok(None),
        Some(Some(n)) => Ok(Some(Some(Body::Length(n)))),
        None if response => Ok(Some(None)),
        None => Ok(None),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target SP HTTP/1.x`. With `partial`, the line may be cut short after the method
/// (the target is then what was seen).
fn request_line(line: &[u8], partial: bool) -> Option<(&'static str, &[u8])> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let method = &line[..sp];
    if method.is_empty() || method.len() > 20 || !method.iter().all(|b| is_tchar(*b)) {
        return None;
    }
    let rest = &line[sp + 1..];
    let target = match rest.iter().position(|b| *b == b' ') {
        Some(i) => {
            let version = &rest[i + 1..];
            if !(version.len() == 8
                && version.starts_with(b"HTTP/1.")
                && version[7].is_ascii_digit())
            {
                return None;
            }
            &rest[..i]
        }
        None if partial => rest,
        None => return None,
    };
    if target.is_empty() || target.iter().any(|b| *b < 0x21 || *b == 0x7f) {
        return None;
    }
    Some((
        method_label(method),
        &target[..target.len().min(MAX_TARGET)],
    ))
}

/// OTel `http.request.method`: the known methods, everything else `_OTHER`.
pub fn method_label(m: &[u8]) -> &'static str {
    match m {
        b"GET" => "GET",
        b"HEAD" => "HEAD",
        b"POST" => "POST",
        b"PUT" => "PUT",
        b"DELETE" => "DELETE",
        b"CONNECT" => "CONNECT",
        b"OPTIONS" => "OPTIONS",
        b"TRACE" => "TRACE",
        b"PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`.
fn status_line(line: &[u8]) -> Option<u16> {
    if line.len() < 12 || !line.starts_with(b"HTTP/1.") || !line[7].is_ascii_digit() {
        return None;
    }
    if line[8] != b' ' || !line[9..12].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if line.len() > 12 && line[12] != b' ' {
        return None;
    }
    let s =
        (line[9] - b'0') as u16 * 100 + (line[10] - b'0') as u16 * 10 + (line[11] - b'0') as u16;
    (100..=599).contains(&s).then_some(s)
}

/// Whether bytes could begin a request line (resynchronisation point).
pub fn starts_request(data: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| data.starts_with(m))
}

/// Whether a partial head can still become a request line (stops buffering garbage early).
fn plausible_request_prefix(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|b| *b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    match line.iter().position(|b| *b == b' ') {
        None => line.len() <= 20 && line.iter().all(|b| is_tchar(*b)),
        Some(sp) => {
            sp > 0
                && sp <= 20
                && line[..sp].iter().all(|b| is_tchar(*b))
                && (line_end.is_none() || request_line(first_line(buf), false).is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of heads, valid and not: start lines, header lines of the two names that matter
    /// (in both cases, repeated, malformed), other headers, and every kind of line end.
    const PIECES: [&[u8]; 14] = [
        b"GET / HTTP/1.1",
        b"HTTP/1.1 200 OK",
        b"\r\n",
        b"\n",
        b"\r",
        b"Content-Length: 5",
        b"content-length:7",
        b"Content-Length: x",
        b"Transfer-Encoding: gzip, chunked",
        b"transfer-encoding: chunked, gzip",
        b"Connection: close",
        b"X-Y: z",
        b"c",
        b"t:",
    ];

    proptest! {
        /// The one-pass scan of a head read whole finds the same end and fields as the
        /// buffered path (`take_head`, then `parse_head`) used when a head is split.
        #[test]
        fn scan_head_agrees_with_the_buffered_path(
            picks in proptest::collection::vec(0..PIECES.len(), 0..24)
        ) {
            let data: Vec<u8> = picks.iter().flat_map(|i| PIECES[*i].iter().copied()).collect();
            let mut buf = Vec::new();
            let (done, used) = take_head(&mut buf, &data);
            match scan_head(&data) {
                Some((n, h)) => {
                    prop_assert!(done);
                    prop_assert_eq!(n, used);
                    let p = parse_head(&buf);
                    prop_assert_eq!(h.first, p.first);
                    prop_assert_eq!(h.content_length, p.content_length);
                    prop_assert_eq!(h.chunked, p.chunked);
                }
                None => prop_assert!(!done),
            }
        }
    }

    proptest! {
        /// The block-wise LF finder returns what a byte-by-byte search does, for every length
        /// (blocks whole, short, and empty) and any bytes.
        #[test]
        fn line_ends_are_the_lf_bytes(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()],
                0..300,
            )
        ) {
            let want: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(LineEnds::new(&data).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn line_ends_at_block_edges() {
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 200] {
            let mut data = vec![b'a'; len];
            let marks: Vec<usize> = [0, 15, 16, 63, 64, 127, 128, len.saturating_sub(1)]
                .into_iter()
                .filter(|i| *i < len)
                .collect();
            for i in &marks {
                data[*i] = b'\n';
            }
            let mut want = marks.clone();
            want.sort_unstable();
            want.dedup();
            assert_eq!(
                LineEnds::new(&data).collect::<Vec<_>>(),
                want,
                "length {len}"
            );
        }
    }

    fn feed_all(c: &mut Conn, steps: &[(Dir, u64, &[u8])]) -> Output {
        let mut out = Output::default();
        for (d, ts, b) in steps {
            c.feed(*d, *ts, b, b.len() as u64, &mut out);
        }
        out
    }

    fn statuses(o: &Output) -> Vec<(String, String, u16, u64, u64)> {
        o.exchanges
            .iter()
            .map(|e| {
                (
                    e.method.to_string(),
                    String::from_utf8_lossy(&e.target).into_owned(),
                    e.status,
                    e.start_ns,
                    e.end_ns,
                )
            })
            .collect()
    }

    #[test]
    fn framing_headers_by_exact_name() {
        let framing = |fields: &str| {
            let head = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
            let h = parse_head(head.as_bytes());
            (h.content_length, h.chunked)
        };
        assert_eq!(framing("Content-Length: 12\r\n"), (Some(Some(12)), false));
        assert_eq!(framing("content-length:7\r\n"), (Some(Some(7)), false));
        assert_eq!(framing("CONTENT-LENGTH: \t9 \r\n"), (Some(Some(9)), false));
        // Not 1*DIGIT, or past u64: invalid framing.
        for bad in ["+5", "-1", "5 5", "", "0x10", "18446744073709551616"] {
            assert_eq!(
                framing(&format!("Content-Length: {bad}\r\n")),
                (Some(None), false),
                "{bad}"
            );
        }
        assert_eq!(
            framing("Content-Length: 18446744073709551615\r\n"),
            (Some(Some(u64::MAX)), false)
        );
        // Space before the colon, or a longer name: not the field.
        assert_eq!(framing("Content-Length : 5\r\n"), (None, false));
        assert_eq!(
            framing("Content-Lengths: 5\r\nContent-Type: x\r\n"),
            (None, false)
        );
        // Repeats must agree.
        assert_eq!(
            framing("Content-Length: 3\r\ncontent-length: 3\r\n"),
            (Some(Some(3)), false)
        );
        assert_eq!(
            framing("Content-Length: 3\r\nContent-Length: 4\r\n"),
            (Some(None), false)
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, Chunked\r\n"),
            (None, true)
        );
        assert_eq!(framing("transfer-encoding:chunked\n"), (None, true));
        assert_eq!(
            framing("Transfer-Encoding: chunked, gzip\r\n"),
            (None, false)
        );
        assert_eq!(framing("Trailer: Transfer-Encoding\r\n"), (None, false));
    }

    #[test]
    fn targets_short_inline_long_on_the_heap() {
        for n in [
            0,
            1,
            INLINE_TARGET - 1,
            INLINE_TARGET,
            INLINE_TARGET + 1,
            MAX_TARGET,
        ] {
            let bytes: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let t = Target::new(&bytes);
            assert_eq!(&*t, &bytes[..]);
            assert_eq!(matches!(t, Target::Inline { .. }), n <= INLINE_TARGET);
            assert_eq!(t, Target::new(&bytes));
        }
        assert_ne!(Target::new(b"/a"), Target::new(b"/b"));
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn keep_alive_server() {
        let mut c = Conn::new(Role::Server);
        let o = feed_all(
            &mut c,
            &[
                (Dir::In, 10, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
                (Dir::Out, 20, OK),
                (Dir::In, 30, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
                (
                    Dir::Out,
                    45,
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        assert_eq!(
            statuses(&o),
            vec![
                ("GET".into(), "/a?x=1".into(), 200, 10, 20),
                ("GET".into(), "/b".into(), 404, 30, 45)
            ]
        );
        assert!(o.anomalies.is_empty(), "{:?}", o.anomalies);
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut c = Conn::new(Role::Server);
        let mut reqs = Vec::new();
        for i in 0..10 {
            reqs.extend_from_slice(format!("GET /p/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        }
        let mut resps = Vec::new();
        for i in 0..10 {
            let code = if i % 2 == 0 { 200 } else { 404 };
            resps.extend_from_slice(
                format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok").as_bytes(),
            );
        }
        let mut out = Output::default();
        c.feed(Dir::In, 1, &reqs, reqs.len() as u64, &mut out);
        assert_eq!(c.pending(), 10);
        // Responses split at arbitrary points.
        c.feed(Dir::Out, 2, &resps[..50], 50, &mut out);
        c.feed(
            Dir::Out,
            3,
            &resps[50..],
            (resps.len() - 50) as u64,
            &mut out,
        );
        let s = statuses(&out);
        assert_eq!(s.len(), 10);
        for (i, e) in s.iter().enumerate() {
            assert_eq!(e.1, format!("/p/{i}"));
            assert_eq!(e.2, if i % 2 == 0 { 200 } else { 404 });
        }
        assert!(out.anomalies.is_empty());
    }

    #[test]
    fn pipelined_responses_beyond_the_capture_are_not_mispaired() {
        let mut c = Conn::new(Role::Server);
        let mut out = Output::default();
        let mut reqs = Vec::new();
        for i in 0..6 {
            reqs.extend_from_slice(format!("GET /q/{i} HTTP/1.1\r\n\r\n").as_bytes());
        }
        c.feed(Dir::In, 1, &reqs, reqs.len() as u64, &mut out);
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let all: Vec<u8> = one.repeat(4);
        // Two responses visible, two in uncopied bytes.
        c.feed(
            Dir::Out,
            2,
            &all[..2 * one.len()],
            all.len() as u64,
            &mut out,
        );
        c.feed(Dir::Out, 3, &one.repeat(2), 2 * one.len() as u64, &mut out);
        let s = statuses(&out);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].1, "/q/0");
        assert_eq!(s[1].1, "/q/1");
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn head_split_across_reads_and_chunked_body() {
        let mut c = Conn::new(Role::Server);
        let o = feed_all(
            &mut c,
            &[
                (Dir::In, 1, b"PO"),
                (Dir::In, 2, b"ST /up HTTP/1.1\r\nContent-Le"),
                (Dir::In, 3, b"ngth: 3\r\n\r\nabc"),
                (Dir::Out, 4, b"HTTP/1.1 100 Continue\r\n\r\n"),
                (
                    Dir::Out,
                    5,
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
                ),
                (Dir::Out, 6, b"4\r\nwiki\r\n"),
                (Dir::Out, 7, b"5;ext=1\r\npedia\r\n0\r\n"),
                (Dir::Out, 8, b"\r\n"),
            ],
        );
        assert_eq!(statuses(&o), vec![("POST".into(), "/up".into(), 201, 1, 8)]);
    }

    #[test]
    fn body_counted_through_uncopied_bytes_and_sendfile() {
        let mut c = Conn::new(Role::Server);
        let mut out = Output::default();
        c.feed(Dir::In, 1, b"GET /big HTTP/1.1\r\n\r\n", 21, &mut out);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
        c.feed(Dir::Out, 2, head, head.len() as u64, &mut out);
        // sendfile: no bytes copied, only counted.
        c.feed(Dir::Out, 3, b"", 6_000_000, &mut out);
        assert!(out.exchanges.is_empty());
        c.feed(Dir::Out, 9, b"", 4_000_000, &mut out);
        assert_eq!(
            statuses(&out),
            vec![("GET".into(), "/big".into(), 200, 1, 9)]
        );
    }

    #[test]
    fn head_request_has_no_body_and_304_204() {
        let mut c = Conn::new(Role::Server);
        let o = feed_all(
            &mut c,
            &[
                (
                    Dir::In,
                    1,
                    b"HEAD / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
                ),
                (
                    Dir::Out,
                    2,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 615\r\n\r\n",
                ),
                (
                    Dir::Out,
                    3,
                    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 615\r\n\r\n",
                ),
            ],
        );
        assert_eq!(o.exchanges.len(), 2);
        assert_eq!(o.exchanges[0].status, 200);
        assert_eq!(o.exchanges[1].status, 304);
    }

    #[test]
    fn until_close_response_ends_at_last_byte() {
        let mut c = Conn::new(Role::Server);
        let mut o = feed_all(
            &mut c,
            &[
                (Dir::In, 1, b"GET / HTTP/1.0\r\n\r\n"),
                (Dir::Out, 2, b"HTTP/1.0 200 OK\r\n\r\nbody"),
                (Dir::Out, 5, b"more body"),
            ],
        );
        assert!(o.exchanges.is_empty());
        c.close(&mut o);
        assert_eq!(statuses(&o), vec![("GET".into(), "/".into(), 200, 1, 5)]);
    }

    #[test]
    fn client_side() {
        let mut c = Conn::new(Role::Client);
        let o = feed_all(
            &mut c,
            &[
                (Dir::Out, 1, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"),
                (Dir::In, 7, OK),
            ],
        );
        // The client side keeps no target (it has no route label).
        assert_eq!(statuses(&o), vec![("GET".into(), "".into(), 200, 1, 7)]);
    }

    #[test]
    fn truncated_head_keeps_request_line_and_resyncs() {
        // 64 KiB URL: only the first 1024 bytes were copied.
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 65536));
        line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let mut c = Conn::new(Role::Server);
        let mut out = Output::default();
        c.feed(Dir::In, 1, &line[..1024], line.len() as u64, &mut out);
        c.feed(
            Dir::Out,
            2,
            b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n",
            47,
            &mut out,
        );
        assert_eq!(out.exchanges.len(), 1);
        assert_eq!(out.exchanges[0].status, 414);
        assert!(out.exchanges[0].target.len() <= MAX_TARGET);
        // And the next request decodes normally.
        c.feed(Dir::In, 3, b"GET /n HTTP/1.1\r\n\r\n", 19, &mut out);
        c.feed(Dir::Out, 4, OK, OK.len() as u64, &mut out);
        assert_eq!(out.exchanges.len(), 2);
        assert_eq!(&*out.exchanges[1].target, b"/n");
    }

    #[test]
    fn bad_input_never_counts() {
        let cases: [&[u8]; 6] = [
            b"GET\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"*1\r\n$4\r\nPING\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"GET /x HTTP/9.9\r\n\r\n",
        ];
        for input in cases {
            let mut c = Conn::new(Role::Server);
            let o = feed_all(
                &mut c,
                &[
                    (Dir::In, 1, input),
                    (
                        Dir::Out,
                        2,
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                    ),
                ],
            );
            assert!(
                o.exchanges.is_empty(),
                "{:?} counted",
                String::from_utf8_lossy(input)
            );
            assert_eq!(c.pending(), 0);
        }
    }

    #[test]
    fn random_bytes_no_panic_bounded() {
        // xorshift: deterministic pseudo-random input in many shapes.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let mut c = Conn::new(if round % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            });
            let mut out = Output::default();
            for step in 0..40 {
                let len = (next() % 700) as usize;
                let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if step % 5 == 0 {
                    let p: &[u8] = if next() % 2 == 0 {
                        b"GET /r HTTP/1.1\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    };
                    buf.splice(0..0, p.iter().copied());
                }
                let total = buf.len() as u64 + next() % 3 * (next() % 100_000);
                let dir = if next() % 2 == 0 { Dir::In } else { Dir::Out };
                c.feed(dir, step, &buf, total, &mut out);
                assert!(c.pending() <= MAX_PENDING);
                if let State::Head(b) = &c.requests.state {
                    assert!(b.len() <= MAX_HEAD + 1);
                }
            }
            c.close(&mut out);
            for e in &out.exchanges {
                assert!(e.target.len() <= MAX_TARGET);
            }
        }
    }

    #[test]
    fn response_without_request_is_not_counted() {
        let mut c = Conn::new(Role::Server);
        let o = feed_all(&mut c, &[(Dir::Out, 1, OK), (Dir::Out, 2, OK)]);
        assert!(o.exchanges.is_empty());
        assert_eq!(o.anomalies, vec![Anomaly::UnpairedResponse; 2]);
    }

    #[test]
    fn reset_mid_request_is_not_counted() {
        let mut c = Conn::new(Role::Server);
        let mut o = feed_all(
            &mut c,
            &[(
                Dir::In,
                1,
                b"POST /p HTTP/1.1\r\nContent-Length: 100\r\n\r\nab",
            )],
        );
        c.close(&mut o);
        assert!(o.exchanges.is_empty());
        assert_eq!(o.anomalies, vec![Anomaly::Unanswered]);
        // Response cut mid-body by close: not completed either.
        let mut c = Conn::new(Role::Server);
        let mut o = feed_all(
            &mut c,
            &[
                (Dir::In, 1, b"GET / HTTP/1.1\r\n\r\n"),
                (
                    Dir::Out,
                    2,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab",
                ),
            ],
        );
        c.close(&mut o);
        assert!(o.exchanges.is_empty());
    }

    #[test]
    fn upgrade_makes_connection_opaque() {
        let mut c = Conn::new(Role::Server);
        let o = feed_all(
            &mut c,
            &[
                (
                    Dir::In,
                    1,
                    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
                ),
                (Dir::Out, 2, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
                (Dir::In, 3, b"GET / HTTP/1.1\r\n\r\n"),
                (Dir::Out, 4, OK),
            ],
        );
        assert_eq!(o.exchanges.len(), 1);
        assert_eq!(o.exchanges[0].status, 101);
    }
}
