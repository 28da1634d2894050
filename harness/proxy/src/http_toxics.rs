//! The HTTP-aware toxics, `http_error` and `http_abort`, on one connection: both byte
//! streams are framed into HTTP/1.1 messages ([`crate::http`]) so a chosen request can be
//! answered by the proxy instead of the server, and a chosen response cut mid-body,
//! without breaking keep-alive or pipelining for the others.
//!
//! * Requests: at each request's first byte, the `http_error` toxics draw (toxicity, then
//!   `count`). A chosen request is kept from the server whole (head and body); once it has
//!   been read, its answer takes its place in the connection's queue of expected
//!   responses. Requests that go through are queued as "the server answers".
//! * Responses: the server's responses are matched to that queue in order; an answer of
//!   the proxy's is written when its turn comes (right away when nothing is in flight
//!   before it). At each final response head the `http_abort` toxics draw; a chosen
//!   response passes its head and `after_bytes` of body, then the connection is closed or
//!   reset. A response that ends before `after_bytes` passes whole.
//! * A stream that stops being HTTP/1.1 (a tunnel, an upgrade, bytes that do not parse)
//!   is passed through untouched from then on; the toxics no longer act on it.
//!
//! The framers cost nothing until the proxy has an HTTP toxic: a connection opened while
//! one exists is framed from its first byte. On a connection opened before the first
//! HTTP toxic, framing starts at the next read from the client that begins with a request
//! head (for clients that wait for each answer before the next request — nearly all —
//! that is the next request), so toxics added later still act on open keep-alive
//! connections from their next message. A connection whose next read does not start
//! with a request head is left alone.

use crate::http::{Event, RequestFramer, ResponseFramer};
use crate::pipe::{Close, Entry};
use crate::toxic::{Kind, Stream};
use rand::rngs::StdRng;
use rand::Rng;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

enum Slot {
    /// The server answers this request.
    Server,
    /// The proxy answers with these bytes.
    Proxy(Vec<u8>),
}

struct Inner {
    toxics: Vec<Arc<Entry>>,
    rng: StdRng,
    requests: RequestFramer,
    responses: ResponseFramer,
    /// Either stream stopped being HTTP: nothing is framed any more.
    opaque: bool,
    /// The next request byte starts a new request.
    request_boundary: bool,
    /// The request being read is kept from the server; its answer when it ends.
    dropping: Option<Vec<u8>>,
    queue: VecDeque<Slot>,
    /// A response from the server is being passed (between its head and its end).
    in_response: bool,
    /// The response being passed is final (not a 1xx).
    final_response: bool,
    /// The response being passed is cut after this many more body bytes.
    abort: Option<(u64, Close)>,
    fired: Vec<u64>,
}

/// Both streams of one connection, as the HTTP toxics see them.
pub struct HttpLayer {
    inner: Mutex<Inner>,
    answers: Notify,
    /// Framing is on (the lock is taken for every read only then).
    active: AtomicBool,
    /// The proxy has HTTP toxics but this connection is not framed yet: start at the next
    /// client read that begins with a request head.
    resync: AtomicBool,
    /// Something fired since the last `take_fired`.
    fired: AtomicBool,
}

impl std::fmt::Debug for HttpLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLayer").finish_non_exhaustive()
    }
}

/// Draws whether one of `toxics` of the kind `pick` acts on the next message: the first
/// whose toxicity draw succeeds and whose `count` is not used up.
fn draw<'a>(
    toxics: &'a [Arc<Entry>],
    rng: &mut StdRng,
    pick: impl Fn(&Kind) -> Option<u64>,
) -> Option<&'a Arc<Entry>> {
    for e in toxics {
        let Some(count) = pick(&e.toxic.kind) else {
            continue;
        };
        if rng.gen::<f32>() >= e.toxic.toxicity {
            continue;
        }
        if count > 0 {
            let before = e.acted.fetch_add(1, Ordering::SeqCst);
            if before >= count {
                continue;
            }
        } else {
            e.acted.fetch_add(1, Ordering::SeqCst);
        }
        return Some(e);
    }
    None
}

fn answer(status: u16, body: &str, toxic: &str) -> Vec<u8> {
    let reason = http_reason(status);
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nx-faultline-toxic: {toxic}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn http_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// Copies `data[..upto]` into `out` lazily: `out` stays `None` while nothing differs
/// from the input.
struct Edit<'a> {
    data: &'a [u8],
    out: Option<Vec<u8>>,
    /// Input bytes up to here are decided (kept or dropped).
    done: usize,
}

impl<'a> Edit<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            out: None,
            done: 0,
        }
    }
    fn keep_to(&mut self, upto: usize) {
        if let Some(o) = &mut self.out {
            o.extend_from_slice(&self.data[self.done..upto]);
        }
        self.done = upto;
    }
    fn drop_to(&mut self, upto: usize) {
        if self.out.is_none() && upto > self.done {
            self.out = Some(self.data[..self.done].to_vec());
        }
        self.done = upto;
    }
    fn insert(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let o = self
            .out
            .get_or_insert_with(|| self.data[..self.done].to_vec());
        o.extend_from_slice(bytes);
    }
    /// Keeps the rest (or drops it) and returns the result.
    fn finish(mut self, keep_rest: bool) -> Cow<'a, [u8]> {
        let end = self.data.len();
        if keep_rest {
            self.keep_to(end);
        } else {
            self.drop_to(end);
        }
        match self.out {
            None => Cow::Borrowed(self.data),
            Some(o) => Cow::Owned(o),
        }
    }
}

impl HttpLayer {
    pub fn new(rng: StdRng) -> Self {
        Self {
            inner: Mutex::new(Inner {
                toxics: Vec::new(),
                rng,
                requests: RequestFramer::new(),
                responses: ResponseFramer::new(),
                opaque: false,
                request_boundary: true,
                dropping: None,
                queue: VecDeque::new(),
                in_response: false,
                final_response: false,
                abort: None,
                fired: Vec::new(),
            }),
            answers: Notify::new(),
            active: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            fired: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The proxy's HTTP toxics now. `fresh`: the connection has not carried a byte yet,
    /// so framing can start at its beginning.
    pub fn set_toxics(&self, toxics: &[Arc<Entry>], fresh: bool) {
        self.lock().toxics = toxics.to_vec();
        if !toxics.is_empty() && !self.active.load(Ordering::SeqCst) {
            if fresh {
                self.active.store(true, Ordering::SeqCst);
            } else {
                self.resync.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Whether the proxy may owe this connection an answer: it is framed, or about to be
    /// (the downstream side listens for answers only then).
    pub fn may_answer(&self) -> bool {
        self.active.load(Ordering::SeqCst) || self.resync.load(Ordering::SeqCst)
    }

    /// Ids of toxics that acted since the last call.
    pub fn take_fired(&self) -> Vec<u64> {
        if !self.fired.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        std::mem::take(&mut self.lock().fired)
    }

    /// Starts framing at `data` if it begins with a request head (complete or not).
    fn try_resync(&self, data: &[u8]) {
        if !self.resync.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let looks_like_a_request = match req.parse(data) {
            Ok(_) => req.method.is_some(),
            // Too many headers for this probe still means a request head.
            Err(httparse::Error::TooManyHeaders) => true,
            Err(_) => false,
        };
        if looks_like_a_request {
            let mut st = self.lock();
            st.requests = RequestFramer::new();
            st.responses = ResponseFramer::new();
            st.request_boundary = true;
            st.in_response = false;
            st.queue.clear();
            drop(st);
            self.active.store(true, Ordering::SeqCst);
        }
    }

    /// Resolves when an answer of the proxy's may be due on the downstream stream.
    pub async fn answers_ready(&self) {
        self.answers.notified().await;
    }

    /// Bytes read from `stream`'s source; returns what goes on (toxics on the stream come
    /// after) and whether the connection must end after it.
    pub fn incoming<'a>(&self, stream: Stream, data: &'a [u8]) -> (Cow<'a, [u8]>, Option<Close>) {
        if stream == Stream::Upstream && !data.is_empty() {
            self.try_resync(data);
        }
        if !self.active.load(Ordering::SeqCst) {
            return (Cow::Borrowed(data), None);
        }
        let mut st = self.lock();
        match stream {
            Stream::Upstream => {
                let out = st.requests_in(data);
                let wake = st.answer_due();
                if !st.fired.is_empty() {
                    self.fired.store(true, Ordering::SeqCst);
                }
                drop(st);
                if wake {
                    self.answers.notify_one();
                }
                (out, None)
            }
            Stream::Downstream => {
                let out = st.responses_in(data);
                if !st.fired.is_empty() {
                    self.fired.store(true, Ordering::SeqCst);
                }
                out
            }
        }
    }

    /// `stream`'s source closed. Downstream: returns answers still owed (written before
    /// the close).
    pub fn incoming_eof(&self, stream: Stream) -> Vec<u8> {
        if !self.active.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let mut st = self.lock();
        if stream == Stream::Upstream || st.opaque {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let Some(Event::MessageEnd { .. }) = st.responses.eof() {
            st.response_ended(&mut out);
        }
        out
    }
}

impl Inner {
    fn answer_due(&self) -> bool {
        !self.in_response && matches!(self.queue.front(), Some(Slot::Proxy(_)))
    }

    fn requests_in<'a>(&mut self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if self.opaque || data.is_empty() {
            return Cow::Borrowed(data);
        }
        let events = self.requests.feed(data);
        let mut edit = Edit::new(data);
        let mut start = 0; // where the current request's bytes begin in this slice
        for ev in events {
            if self.request_boundary && ev.offset() >= start {
                self.begin_request();
            }
            match ev {
                Event::RequestHead { end, method, .. } => {
                    if self.dropping.is_some() {
                        edit.drop_to(end);
                    } else {
                        edit.keep_to(end);
                        self.responses.expect_response_to(&method);
                        self.queue.push_back(Slot::Server);
                    }
                }
                Event::MessageEnd { end } => {
                    if let Some(answer) = self.dropping.take() {
                        edit.drop_to(end);
                        self.queue.push_back(Slot::Proxy(answer));
                    } else {
                        edit.keep_to(end);
                    }
                    self.request_boundary = true;
                    start = end;
                }
                Event::ResponseHead { .. } => {}
                Event::Opaque { at, .. } => {
                    if self.dropping.is_some() {
                        edit.drop_to(at);
                    }
                    self.opaque = true;
                    self.dropping = None;
                    return edit.finish(true);
                }
            }
        }
        if self.request_boundary && data.len() > start {
            // A request began in this slice and its head is not complete yet.
            self.begin_request();
        }
        let keep = self.dropping.is_none();
        edit.finish(keep)
    }

    /// A request's first byte: the http_error toxics draw.
    fn begin_request(&mut self) {
        self.request_boundary = false;
        let Inner {
            toxics, rng, fired, ..
        } = self;
        let chosen = draw(toxics, rng, |k| match k {
            Kind::HttpError { count, .. } => Some(*count),
            _ => None,
        });
        if let Some(e) = chosen {
            if let Kind::HttpError { status, body, .. } = &e.toxic.kind {
                fired.push(e.id);
                self.dropping = Some(answer(*status, body, &e.toxic.name));
            }
        }
    }

    /// A final response from the server ended: the proxy's answers whose turn it is now.
    fn response_ended(&mut self, out: &mut Vec<u8>) {
        self.in_response = false;
        self.abort = None;
        if self.final_response {
            if let Some(Slot::Server) = self.queue.front() {
                self.queue.pop_front();
            }
        }
        while let Some(Slot::Proxy(_)) = self.queue.front() {
            if let Some(Slot::Proxy(a)) = self.queue.pop_front() {
                out.extend_from_slice(&a);
            }
        }
    }

    fn responses_in<'a>(&mut self, data: &'a [u8]) -> (Cow<'a, [u8]>, Option<Close>) {
        if self.opaque {
            return (Cow::Borrowed(data), None);
        }
        let mut edit = Edit::new(data);
        // Answers already due (a kept request with nothing before it in flight).
        if !self.in_response {
            let mut due = Vec::new();
            while let Some(Slot::Proxy(_)) = self.queue.front() {
                if let Some(Slot::Proxy(a)) = self.queue.pop_front() {
                    due.extend_from_slice(&a);
                }
            }
            edit.insert(&due);
        }
        if data.is_empty() {
            return (edit.finish(true), None);
        }
        let events = self.responses.feed(data);
        let mut body_from = None; // offset where the current response's body starts here
        if self.in_response {
            body_from = Some(0);
        }
        for ev in events {
            match ev {
                Event::ResponseHead { end, status } => {
                    edit.keep_to(end);
                    self.in_response = true;
                    self.final_response = status >= 200 || status == 101;
                    body_from = Some(end);
                    if self.final_response {
                        let Inner {
                            toxics, rng, fired, ..
                        } = self;
                        let chosen = draw(toxics, rng, |k| match k {
                            Kind::HttpAbort { count, .. } => Some(*count),
                            _ => None,
                        });
                        if let Some(e) = chosen {
                            if let Kind::HttpAbort {
                                after_bytes, reset, ..
                            } = e.toxic.kind
                            {
                                fired.push(e.id);
                                let close = if reset { Close::Reset } else { Close::Fin };
                                self.abort = Some((after_bytes, close));
                            }
                        }
                    }
                }
                Event::MessageEnd { end } => {
                    if let Some(cut) = self.cut(&mut edit, body_from.unwrap_or(0), end) {
                        return cut;
                    }
                    let mut due = Vec::new();
                    self.response_ended(&mut due);
                    edit.insert(&due);
                    body_from = None;
                }
                Event::RequestHead { .. } => {}
                Event::Opaque { at, .. } => {
                    if let Some(cut) = self.cut(&mut edit, body_from.unwrap_or(0), at) {
                        return cut;
                    }
                    self.opaque = true;
                    return (edit.finish(true), None);
                }
            }
        }
        if let Some(from) = body_from {
            if let Some(cut) = self.cut(&mut edit, from, data.len()) {
                return cut;
            }
        }
        (edit.finish(true), None)
    }

    /// Passes body bytes `[from, to)` of the response, cutting the connection when an
    /// `http_abort` has passed its `after_bytes`.
    fn cut<'a>(
        &mut self,
        edit: &mut Edit<'a>,
        from: usize,
        to: usize,
    ) -> Option<(Cow<'a, [u8]>, Option<Close>)> {
        let Some((left, close)) = self.abort else {
            edit.keep_to(to);
            return None;
        };
        let len = (to - from) as u64;
        if len <= left {
            self.abort = Some((left - len, close));
            edit.keep_to(to);
            // Exactly at the end of the response: the cut still comes (after_bytes
            // reached), unless the response ended, which the caller handles.
            return None;
        }
        edit.keep_to(from + left as usize);
        let out = std::mem::replace(edit, Edit::new(&[])).finish(false);
        self.opaque = true; // the connection is over
        Some((out, Some(close)))
    }
}
