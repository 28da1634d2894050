//! Incremental HTTP/1.1 message framing for the HTTP-aware toxics.
//!
//! The proxy moves bytes; the `http_error` toxic (answers chosen requests itself) and the
//! `http_abort` toxic (cuts chosen responses mid-body) need to know where the messages in
//! those bytes begin and end. [`RequestFramer`] (client → server) and [`ResponseFramer`]
//! (server → client) are sans-IO state machines: feed them the bytes as they pass, split at
//! any points, and they return [`Event`]s whose offsets point into the slice just fed. They
//! never hold the stream: bodies are counted, not copied, and only a message head that is
//! split across feeds is buffered, up to [`MAX_HEAD_BYTES`].
//!
//! Heads (request line or status line, and header fields) are parsed with `httparse`, the
//! parser under hyper: small, well kept, fuzzed, and as strict as the servers the proxy sits
//! in front of. It stops at the end of the head, so body framing (RFC 9112 section 6.3) is
//! written here:
//!
//! - responses to `HEAD`, `1xx`, `204` and `304` responses have no body, whatever their
//!   headers say;
//! - `101 Switching Protocols`, a `2xx` answer to `CONNECT` and a `CONNECT` request end the
//!   HTTP/1.1 stream: the rest is a tunnel ([`Event::Opaque`]);
//! - `Transfer-Encoding` ending in `chunked`: chunks (size lines with extensions, data,
//!   CRLF), the last chunk, trailer fields and the final CRLF. Chunk framing needs CRLF line
//!   ends (a bare LF is refused, as hyper does, since the two readings are a smuggling
//!   vector);
//! - `Content-Length`: that many bytes (repeated equal values are one value);
//! - otherwise a request has no body and a response runs until the server closes
//!   ([`ResponseFramer::eof`]);
//! - framing that cannot be trusted (both `Content-Length` and `Transfer-Encoding`,
//!   differing `Content-Length` values, a request whose transfer coding does not end in
//!   `chunked`, `Transfer-Encoding` in an HTTP/1.0 message, a bad chunk) ends framing too.
//!
//! What this is not: an HTTP implementation or a validator. It does not decode bodies,
//! interpret `Connection`, or check header values it does not need. When it cannot frame the
//! stream safely it says so once, with [`Event::Opaque`] and a reason from [`reason`], and
//! from then on returns no events; the caller passes the rest through untouched.
//!
//! Limits: a head (start line and header fields, after any leading empty lines) is at most
//! [`MAX_HEAD_BYTES`] with at most [`MAX_HEADERS`] fields; a chunk-size line is at most
//! [`MAX_CHUNK_LINE_BYTES`]; a chunk size has at most 16 hex digits (fits `u64`); a trailer
//! section is at most [`MAX_HEAD_BYTES`]; a [`ResponseFramer`] remembers at most
//! [`MAX_PENDING_REQUESTS`] unanswered requests. Going over any of them is an
//! [`Event::Opaque`] with the limit in its reason.

use std::collections::VecDeque;

/// Upper bound on a message head (request line / status line + headers), bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Upper bound on headers per message.
pub const MAX_HEADERS: usize = 128;
/// Upper bound on a chunk-size line (size, extensions; the CRLF not counted), bytes.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Upper bound on requests a [`ResponseFramer`] is told about that are not answered yet.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Hex digits in a chunk size: 16 fill a `u64`.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;
/// The head buffer is dropped instead of kept for reuse when it grew past this, bytes.
const HEAD_BUF_KEEP_BYTES: usize = 8 * 1024;

/// Why a framer stopped framing: the `reason` of [`Event::Opaque`]. A bounded set, fit for a
/// metric label.
pub mod reason {
    /// A `CONNECT` request: what follows its head is a tunnel.
    pub const CONNECT_REQUEST: &str = "CONNECT request: the connection becomes a tunnel";
    /// A `2xx` response to `CONNECT`: what follows its head is a tunnel.
    pub const CONNECT_TUNNEL: &str = "2xx response to CONNECT: the connection is a tunnel";
    /// A `101 Switching Protocols` response: what follows its head is another protocol.
    pub const SWITCHING_PROTOCOLS: &str =
        "101 Switching Protocols: the connection speaks another protocol";
    /// The bytes where a head should start are not an HTTP/1.x head.
    pub const UNPARSEABLE_HEAD: &str = "bytes are not an HTTP/1.x message head";
    /// A head with more header fields than [`super::MAX_HEADERS`].
    pub const TOO_MANY_HEADERS: &str = "message head has more than MAX_HEADERS (128) fields";
    /// A head longer than [`super::MAX_HEAD_BYTES`].
    pub const HEAD_TOO_LARGE: &str = "message head is over MAX_HEAD_BYTES (64 KiB)";
    /// A `Content-Length` value that is not a decimal number fitting `u64`.
    pub const INVALID_CONTENT_LENGTH: &str = "Content-Length is not a decimal number of bytes";
    /// `Content-Length` given more than once with different values.
    pub const CONFLICTING_CONTENT_LENGTH: &str = "Content-Length values differ";
    /// Both `Content-Length` and `Transfer-Encoding` (a request smuggling vector).
    pub const CONTENT_LENGTH_AND_TRANSFER_ENCODING: &str =
        "both Content-Length and Transfer-Encoding";
    /// A `Transfer-Encoding` list that is empty or names `chunked` before the last coding.
    pub const INVALID_TRANSFER_ENCODING: &str =
        "Transfer-Encoding is empty or has chunked before its last coding";
    /// A request whose last transfer coding is not `chunked`: its length is unknowable.
    pub const REQUEST_NOT_CHUNKED: &str = "request Transfer-Encoding does not end in chunked";
    /// `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 section 6.1: faulty framing).
    pub const TRANSFER_ENCODING_IN_HTTP_1_0: &str = "Transfer-Encoding in an HTTP/1.0 message";
    /// A chunk-size line that is not hex digits, optional extensions and CRLF.
    pub const INVALID_CHUNK_SIZE: &str = "chunk-size line is not hex digits, extensions and CRLF";
    /// A chunk size with more than 16 hex digits.
    pub const CHUNK_SIZE_OVERFLOW: &str = "chunk size has more than 16 hex digits";
    /// A chunk-size line longer than [`super::MAX_CHUNK_LINE_BYTES`].
    pub const CHUNK_LINE_TOO_LONG: &str = "chunk-size line is over MAX_CHUNK_LINE_BYTES (4 KiB)";
    /// Chunk data not followed by CRLF.
    pub const CHUNK_DATA_NOT_CRLF: &str = "chunk data is not followed by CRLF";
    /// A trailer line not ended by CRLF.
    pub const INVALID_TRAILER: &str = "trailer line is not ended by CRLF";
    /// A trailer section longer than [`super::MAX_HEAD_BYTES`].
    pub const TRAILERS_TOO_LARGE: &str = "trailer section is over MAX_HEAD_BYTES (64 KiB)";
    /// More than [`super::MAX_PENDING_REQUESTS`] requests awaiting responses.
    pub const TOO_MANY_PENDING_REQUESTS: &str =
        "more than MAX_PENDING_REQUESTS (1024) requests await responses";
}

/// What a framer found in the bytes just fed. Offsets (`end`, `at`) are byte offsets into
/// the slice passed to that `feed` call; events come in stream order.
///
/// Every head event is followed, in the same or a later feed, by exactly one
/// [`Event::MessageEnd`] for that message, unless the stream goes [`Event::Opaque`] inside
/// the body or ends first (a truncated message has no end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request head ended at `end` (exclusive), where its body starts.
    RequestHead {
        /// Offset just past the head's final CRLF.
        end: usize,
        /// The method, as sent (methods are case-sensitive): `"GET"`, `"HEAD"`, ….
        method: String,
        /// The request-target, as sent: usually the path and query, `"/v1/generate?x=1"`.
        target: String,
    },
    /// A response head ended at `end` (exclusive), where its body starts. A `status` in
    /// `100..=199` other than 101 is an interim response (`100 Continue`, `103 Early
    /// Hints`): its [`Event::MessageEnd`] follows at the same offset and the final response
    /// to the same request is still to come.
    ResponseHead {
        /// Offset just past the head's final CRLF.
        end: usize,
        /// The status code, `100..=999`.
        status: u16,
    },
    /// The message (head + body) ended at `end` (exclusive).
    MessageEnd {
        /// Offset just past the message's last byte.
        end: usize,
    },
    /// From `at` on the stream is no longer HTTP/1.1 messages (a tunnel, another protocol,
    /// bytes that are not HTTP, framing that cannot be trusted, a limit exceeded): the framer
    /// emits nothing more and the caller passes everything through. `at` is the first byte
    /// of this slice not framed: for a protocol switch the end of the switching message; for
    /// a bad head that head's first byte, or 0 when that head began in an earlier slice; for
    /// a bad body the first offending byte. `reason` is one of the [`reason`] constants.
    Opaque {
        /// First byte (in this slice) the framer makes no claim about.
        at: usize,
        /// Why: one of the [`reason`] constants.
        reason: &'static str,
    },
}

impl Event {
    /// The offset this event points at: `end` for heads and message ends, `at` for opaque.
    pub fn offset(&self) -> usize {
        match self {
            Event::RequestHead { end, .. }
            | Event::ResponseHead { end, .. }
            | Event::MessageEnd { end } => *end,
            Event::Opaque { at, .. } => *at,
        }
    }
}

/// Frames the client → server byte stream into requests.
///
/// A request without `Content-Length` or `Transfer-Encoding` has no body. After a `CONNECT`
/// request's head the stream is [`Event::Opaque`]. A request asking to `Upgrade` is framed
/// as usual; whether the switch happens is the response's to say (`101`), so a caller that
/// sees its [`ResponseFramer`] go opaque should stop reading this framer's events too.
#[derive(Debug, Default)]
pub struct RequestFramer {
    core: Core,
}

impl RequestFramer {
    /// A framer at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the events inside `data`, in order, with
    /// offsets relative to `data`. Heads may be split across any number of feeds. Each
    /// [`Event::RequestHead`]'s `method` is what the caller passes to
    /// [`ResponseFramer::expect_response_to`] for a request it forwards.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Event> {
        self.core.feed(data, &mut parse_request)
    }

    /// Whether the framer has stopped ([`Event::Opaque`] was emitted).
    pub fn is_opaque(&self) -> bool {
        matches!(self.core.state, State::Opaque)
    }
}

/// Frames the server → client byte stream into responses.
///
/// Which responses have a body depends on the request (`HEAD`, `CONNECT`), so the caller
/// tells the framer each forwarded request's method with
/// [`ResponseFramer::expect_response_to`], in order, before that request's response head
/// is fed. A response with no request to match is framed as a response to `GET`.
#[derive(Debug, Default)]
pub struct ResponseFramer {
    core: Core,
    /// Requests forwarded but not answered by a final response yet, oldest first.
    pending: VecDeque<Awaiting>,
    /// More than [`MAX_PENDING_REQUESTS`] were pending: go opaque at the next feed.
    overflowed: bool,
}

impl ResponseFramer {
    /// A framer at the start of a connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the framer the method of the next request on this connection (first in, first
    /// out), so it knows that responses to `HEAD` have no body and that a `2xx` to `CONNECT`
    /// starts a tunnel. Call it once per request forwarded to the server; not for a request
    /// the proxy answered itself. Beyond [`MAX_PENDING_REQUESTS`] unanswered requests the
    /// next feed returns [`Event::Opaque`] with [`reason::TOO_MANY_PENDING_REQUESTS`].
    pub fn expect_response_to(&mut self, method: &str) {
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            self.overflowed = true;
            return;
        }
        self.pending.push_back(match method {
            "HEAD" => Awaiting::Head,
            "CONNECT" => Awaiting::Connect,
            _ => Awaiting::Other,
        });
    }

    /// Feeds the next bytes of the stream; returns the events inside `data`, in order, with
    /// offsets relative to `data`. Heads may be split across any number of feeds.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Event> {
        if self.overflowed && !matches!(self.core.state, State::Opaque) {
            let mut events = Vec::new();
            self.core
                .opaque(0, reason::TOO_MANY_PENDING_REQUESTS, &mut events);
            return events;
        }
        let pending = &mut self.pending;
        self.core
            .feed(data, &mut |head| parse_response(head, pending))
    }

    /// The server closed its side. A body delimited by the close (a response with neither
    /// `Content-Length` nor `Transfer-Encoding`) ends here: returns
    /// `Some(Event::MessageEnd { end: 0 })`, offset 0 meaning "just after the last byte fed".
    /// Returns `None` when no message was open, and when the open message was cut short (an
    /// unfinished head, a `Content-Length` or chunked body short of its end): that message
    /// has no end. After `eof` the framer is back at the start of a stream (or stays opaque).
    pub fn eof(&mut self) -> Option<Event> {
        let state = std::mem::take(&mut self.core.state);
        self.core.head_buf = Vec::new();
        match state {
            State::UntilClose => Some(Event::MessageEnd { end: 0 }),
            State::Opaque => {
                self.core.state = State::Opaque;
                None
            }
            State::Head | State::Length { .. } | State::Chunked(_) => None,
        }
    }

    /// Whether the framer has stopped ([`Event::Opaque`] was emitted).
    pub fn is_opaque(&self) -> bool {
        matches!(self.core.state, State::Opaque)
    }
}

/// What a pending request means for its response's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Head,
    Connect,
    Other,
}

/// Where a framer is in its stream.
#[derive(Debug, Default)]
enum State {
    /// Between messages, or inside a head whose prefix is in `Core::head_buf`.
    #[default]
    Head,
    /// Inside a `Content-Length` body.
    Length { remaining: u64 },
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Inside a response body that ends when the server closes.
    UntilClose,
    /// Framing stopped for good.
    Opaque,
}

/// Where a chunked body parser is. `line` counts bytes of the current chunk-size line;
/// `total` counts bytes of the trailer section.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex digits of a chunk size.
    Size { size: u64, digits: u8, line: usize },
    /// After the digits, in optional whitespace before `;` or CR.
    AfterSize { size: u64, line: usize },
    /// In chunk extensions, up to CR.
    Ext { size: u64, line: usize },
    /// After the size line's CR.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data's CR, expecting LF.
    DataLf,
    /// Inside a trailer line (or at the start of one, `line == 0`).
    Trailer { line: usize, total: usize },
    /// After a trailer line's CR; `empty` when the line was empty (the end of the message).
    TrailerLf { empty: bool, total: usize },
}

impl Chunk {
    const START: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        line: 0,
    };
}

/// The next chunked-parser state after one byte.
enum ChunkStep {
    Next(Chunk),
    /// The byte was the final LF of the message.
    End,
}

/// Advances the chunked-body parser by one byte `b`.
fn chunk_byte(c: Chunk, b: u8) -> Result<ChunkStep, &'static str> {
    let next = match c {
        Chunk::Size { size, digits, line } => match hex_value(b) {
            Some(v) if digits < MAX_CHUNK_SIZE_DIGITS => Chunk::Size {
                size: size << 4 | u64::from(v),
                digits: digits + 1,
                line: line + 1,
            },
            Some(_) => return Err(reason::CHUNK_SIZE_OVERFLOW),
            None if digits == 0 => return Err(reason::INVALID_CHUNK_SIZE),
            None => after_size(size, line, b)?,
        },
        Chunk::AfterSize { size, line } => after_size(size, line, b)?,
        Chunk::Ext { size, line } => match b {
            b'\r' => Chunk::SizeLf { size },
            b'\n' => return Err(reason::INVALID_CHUNK_SIZE),
            _ => Chunk::Ext {
                size,
                line: chunk_line(line)?,
            },
        },
        Chunk::SizeLf { size } => match b {
            b'\n' if size == 0 => Chunk::Trailer { line: 0, total: 0 },
            b'\n' => Chunk::Data { remaining: size },
            _ => return Err(reason::INVALID_CHUNK_SIZE),
        },
        Chunk::Data { remaining } if remaining > 1 => Chunk::Data {
            remaining: remaining - 1,
        },
        Chunk::Data { .. } => Chunk::DataCr,
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            _ => return Err(reason::CHUNK_DATA_NOT_CRLF),
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::START,
            _ => return Err(reason::CHUNK_DATA_NOT_CRLF),
        },
        Chunk::Trailer { line, total } => {
            let total = trailer_total(total)?;
            match b {
                b'\r' => Chunk::TrailerLf {
                    empty: line == 0,
                    total,
                },
                b'\n' => return Err(reason::INVALID_TRAILER),
                _ => Chunk::Trailer {
                    line: line + 1,
                    total,
                },
            }
        }
        Chunk::TrailerLf { empty, total } => match b {
            b'\n' if empty => return Ok(ChunkStep::End),
            b'\n' => Chunk::Trailer {
                line: 0,
                total: trailer_total(total)?,
            },
            _ => return Err(reason::INVALID_TRAILER),
        },
    };
    Ok(ChunkStep::Next(next))
}

/// The chunk-size line after its digits: whitespace, `;` extensions or CR.
fn after_size(size: u64, line: usize, b: u8) -> Result<Chunk, &'static str> {
    Ok(match b {
        b' ' | b'\t' => Chunk::AfterSize {
            size,
            line: chunk_line(line)?,
        },
        b';' => Chunk::Ext {
            size,
            line: chunk_line(line)?,
        },
        b'\r' => Chunk::SizeLf { size },
        _ => return Err(reason::INVALID_CHUNK_SIZE),
    })
}

/// One more byte on a chunk-size line, within [`MAX_CHUNK_LINE_BYTES`].
fn chunk_line(line: usize) -> Result<usize, &'static str> {
    if line >= MAX_CHUNK_LINE_BYTES {
        return Err(reason::CHUNK_LINE_TOO_LONG);
    }
    Ok(line + 1)
}

/// One more byte in a trailer section, within [`MAX_HEAD_BYTES`].
fn trailer_total(total: usize) -> Result<usize, &'static str> {
    if total >= MAX_HEAD_BYTES {
        return Err(reason::TRAILERS_TOO_LARGE);
    }
    Ok(total + 1)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How a message's body is delimited, decided from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    /// No body, and the stream is something else after the head.
    Switch(&'static str),
}

/// The parts of a head that make its event.
enum Head {
    Request { method: String, target: String },
    Response { status: u16 },
}

impl Head {
    fn into_event(self, end: usize) -> Event {
        match self {
            Head::Request { method, target } => Event::RequestHead {
                end,
                method,
                target,
            },
            Head::Response { status } => Event::ResponseHead { end, status },
        }
    }
}

/// The outcome of parsing bytes that start with a head.
enum HeadParse {
    /// The head is not complete yet.
    Partial,
    /// The head is the first `len` bytes.
    Complete { len: usize, head: Head, body: Body },
    /// Not a head, or its framing cannot be trusted.
    Invalid(&'static str),
}

/// The framing state and head buffer shared by both directions.
#[derive(Debug, Default)]
struct Core {
    state: State,
    /// The prefix of a head split across feeds; empty otherwise. At most [`MAX_HEAD_BYTES`].
    head_buf: Vec<u8>,
}

impl Core {
    /// Frames `data`, calling `parse` on bytes that start with a head.
    fn feed(&mut self, data: &[u8], parse: &mut dyn FnMut(&[u8]) -> HeadParse) -> Vec<Event> {
        let mut events = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            pos = match &mut self.state {
                State::Opaque => break,
                State::Head => self.head(data, pos, parse, &mut events),
                State::Length { remaining } => {
                    let take = body_bytes(*remaining, data.len() - pos);
                    *remaining -= take as u64;
                    let pos = pos + take;
                    if *remaining == 0 {
                        self.state = State::Head;
                        events.push(Event::MessageEnd { end: pos });
                    }
                    pos
                }
                State::Chunked(chunk) => {
                    let chunk = *chunk;
                    self.chunked(chunk, data, pos, &mut events)
                }
                State::UntilClose => data.len(),
            };
        }
        events
    }

    /// Reads head bytes from `data[pos..]`; returns where framing continues.
    fn head(
        &mut self,
        data: &[u8],
        mut pos: usize,
        parse: &mut dyn FnMut(&[u8]) -> HeadParse,
        events: &mut Vec<Event>,
    ) -> usize {
        if self.head_buf.is_empty() {
            // Empty lines before a head are skipped (RFC 9112 section 2.2).
            match data[pos..].iter().position(|b| !matches!(b, b'\r' | b'\n')) {
                Some(skip) => pos += skip,
                None => return data.len(),
            }
            // The common case: the whole head is in this slice; parse it where it lies.
            let rest = &data[pos..];
            return match parse(rest) {
                HeadParse::Complete { len, .. } if len > MAX_HEAD_BYTES => {
                    self.opaque(pos, reason::HEAD_TOO_LARGE, events)
                }
                HeadParse::Complete { len, head, body } => {
                    self.start(pos + len, head, body, events)
                }
                HeadParse::Partial if rest.len() > MAX_HEAD_BYTES => {
                    self.opaque(pos, reason::HEAD_TOO_LARGE, events)
                }
                HeadParse::Partial => {
                    self.head_buf.extend_from_slice(rest);
                    data.len()
                }
                HeadParse::Invalid(why) => self.opaque(pos, why, events),
            };
        }
        // The head began in an earlier slice. Parse again only once its end is here, so a
        // head fed a byte at a time costs linear, not quadratic, time.
        let rest = &data[pos..];
        let terminator = head_terminator(&self.head_buf, rest);
        let take = terminator.unwrap_or(rest.len());
        if self.head_buf.len() + take > MAX_HEAD_BYTES {
            return self.opaque(0, reason::HEAD_TOO_LARGE, events);
        }
        let before = self.head_buf.len();
        self.head_buf.extend_from_slice(&rest[..take]);
        if terminator.is_none() {
            return data.len();
        }
        match parse(&self.head_buf) {
            HeadParse::Complete { len, head, body } => {
                match len.checked_sub(before).filter(|used| *used > 0) {
                    Some(used) => {
                        self.release_head_buf();
                        self.start(pos + used, head, body, events)
                    }
                    // httparse ended the head inside bytes that held no head end: never seen
                    // on valid input, but not worth trusting.
                    None => self.opaque(0, reason::UNPARSEABLE_HEAD, events),
                }
            }
            HeadParse::Partial => pos + take,
            HeadParse::Invalid(why) => self.opaque(0, why, events),
        }
    }

    /// A head ended at `end`: emits its event and enters its body.
    fn start(&mut self, end: usize, head: Head, body: Body, events: &mut Vec<Event>) -> usize {
        events.push(head.into_event(end));
        self.state = match body {
            Body::None | Body::Length(0) => {
                events.push(Event::MessageEnd { end });
                State::Head
            }
            Body::Length(remaining) => State::Length { remaining },
            Body::Chunked => State::Chunked(Chunk::START),
            Body::UntilClose => State::UntilClose,
            Body::Switch(why) => {
                events.push(Event::MessageEnd { end });
                return self.opaque(end, why, events);
            }
        };
        end
    }

    /// Frames chunked-body bytes from `data[pos..]`, starting in state `chunk`.
    fn chunked(
        &mut self,
        mut chunk: Chunk,
        data: &[u8],
        mut pos: usize,
        events: &mut Vec<Event>,
    ) -> usize {
        while pos < data.len() {
            if let Chunk::Data { remaining } = chunk {
                // Chunk data is counted, not walked.
                let take = body_bytes(remaining, data.len() - pos);
                pos += take;
                chunk = match remaining - take as u64 {
                    0 => Chunk::DataCr,
                    remaining => Chunk::Data { remaining },
                };
                continue;
            }
            match chunk_byte(chunk, data[pos]) {
                Ok(ChunkStep::Next(next)) => chunk = next,
                Ok(ChunkStep::End) => {
                    self.state = State::Head;
                    events.push(Event::MessageEnd { end: pos + 1 });
                    return pos + 1;
                }
                Err(why) => return self.opaque(pos, why, events),
            }
            pos += 1;
        }
        self.state = State::Chunked(chunk);
        pos
    }

    /// Stops framing for good; returns `at` (`feed`'s loop stops at the opaque state).
    fn opaque(&mut self, at: usize, why: &'static str, events: &mut Vec<Event>) -> usize {
        self.state = State::Opaque;
        self.head_buf = Vec::new();
        events.push(Event::Opaque { at, reason: why });
        at
    }

    fn release_head_buf(&mut self) {
        if self.head_buf.capacity() > HEAD_BUF_KEEP_BYTES {
            self.head_buf = Vec::new();
        } else {
            self.head_buf.clear();
        }
    }
}

/// How many of `available` bytes a body with `remaining` bytes to go takes.
fn body_bytes(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Where in `rest` a head whose earlier bytes are `prev` ends: the length of `rest` up to
/// and including the LF of the empty line (`\n\r\n` or `\n\n`), if it is in `rest`.
fn head_terminator(prev: &[u8], rest: &[u8]) -> Option<usize> {
    // 0: nothing; 1: just after LF; 2: just after LF CR.
    let mut state = match prev {
        [.., b'\n'] => 1,
        [.., b'\n', b'\r'] => 2,
        _ => 0,
    };
    for (i, &b) in rest.iter().enumerate() {
        state = match (state, b) {
            (1 | 2, b'\n') => return Some(i + 1),
            (_, b'\n') => 1,
            (1, b'\r') => 2,
            _ => 0,
        };
    }
    None
}

/// Parses a request head at the start of `buf` and decides its body.
fn parse_request(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(e) => return HeadParse::Invalid(parse_error(e)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return HeadParse::Invalid(reason::UNPARSEABLE_HEAD);
    };
    let head = Head::Request {
        method: method.to_owned(),
        target: target.to_owned(),
    };
    if method == "CONNECT" {
        let body = Body::Switch(reason::CONNECT_REQUEST);
        return HeadParse::Complete { len, head, body };
    }
    let body = match Framing::of(req.headers, version) {
        Ok(Framing::None) => Body::None,
        Ok(Framing::Length(n)) => Body::Length(n),
        Ok(Framing::Chunked) => Body::Chunked,
        Ok(Framing::OtherCoding) => return HeadParse::Invalid(reason::REQUEST_NOT_CHUNKED),
        Err(why) => return HeadParse::Invalid(why),
    };
    HeadParse::Complete { len, head, body }
}

/// Parses a response head at the start of `buf` and decides its body; a final response
/// takes its request off `pending`.
fn parse_response(buf: &[u8], pending: &mut VecDeque<Awaiting>) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(e) => return HeadParse::Invalid(parse_error(e)),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return HeadParse::Invalid(reason::UNPARSEABLE_HEAD);
    };
    let head = Head::Response { status };
    let interim = (100..200).contains(&status) && status != 101;
    // An interim response leaves its request waiting for the final one.
    let request = if interim {
        Awaiting::Other
    } else {
        pending.pop_front().unwrap_or(Awaiting::Other)
    };
    let body = if status == 101 {
        Body::Switch(reason::SWITCHING_PROTOCOLS)
    } else if interim || status == 204 || status == 304 || request == Awaiting::Head {
        Body::None
    } else if request == Awaiting::Connect && (200..300).contains(&status) {
        Body::Switch(reason::CONNECT_TUNNEL)
    } else {
        match Framing::of(res.headers, version) {
            Ok(Framing::Length(n)) => Body::Length(n),
            Ok(Framing::Chunked) => Body::Chunked,
            Ok(Framing::None | Framing::OtherCoding) => Body::UntilClose,
            Err(why) => return HeadParse::Invalid(why),
        }
    };
    HeadParse::Complete { len, head, body }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::TooManyHeaders => reason::TOO_MANY_HEADERS,
        _ => reason::UNPARSEABLE_HEAD,
    }
}

/// What a head's `Content-Length` and `Transfer-Encoding` fields say about its body.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// Neither field.
    None,
    Length(u64),
    /// Transfer codings ending in `chunked`.
    Chunked,
    /// Transfer codings not ending in `chunked`.
    OtherCoding,
}

impl Framing {
    /// Reads the framing fields of a head with HTTP/1.`minor_version`.
    fn of(headers: &[httparse::Header<'_>], minor_version: u8) -> Result<Framing, &'static str> {
        let mut length = None;
        let mut codings = None;
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                let mut values = 0;
                for n in list(h.value) {
                    let n = parse_length(n).ok_or(reason::INVALID_CONTENT_LENGTH)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(reason::CONFLICTING_CONTENT_LENGTH);
                    }
                    length = Some(n);
                    values += 1;
                }
                if values == 0 {
                    return Err(reason::INVALID_CONTENT_LENGTH);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let mut values = 0;
                for coding in list(h.value) {
                    let name = coding.split(|b| *b == b';').next().unwrap_or(coding);
                    if codings == Some(true) {
                        // `chunked` must be the last coding.
                        return Err(reason::INVALID_TRANSFER_ENCODING);
                    }
                    codings = Some(trim(name).eq_ignore_ascii_case(b"chunked"));
                    values += 1;
                }
                if values == 0 {
                    return Err(reason::INVALID_TRANSFER_ENCODING);
                }
            }
        }
        match (length, codings) {
            (Some(_), Some(_)) => Err(reason::CONTENT_LENGTH_AND_TRANSFER_ENCODING),
            (None, Some(_)) if minor_version == 0 => Err(reason::TRANSFER_ENCODING_IN_HTTP_1_0),
            (None, Some(true)) => Ok(Framing::Chunked),
            (None, Some(false)) => Ok(Framing::OtherCoding),
            (Some(n), None) => Ok(Framing::Length(n)),
            (None, None) => Ok(Framing::None),
        }
    }
}

/// The non-empty elements of a comma-separated field value, trimmed of whitespace.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A `Content-Length` value: 1 to 19 decimal digits (any 19 digits fit `u64`).
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Either framer, for helpers that feed both.
    trait Framer {
        fn feed(&mut self, data: &[u8]) -> Vec<Event>;
    }

    impl Framer for RequestFramer {
        fn feed(&mut self, data: &[u8]) -> Vec<Event> {
            RequestFramer::feed(self, data)
        }
    }

    impl Framer for ResponseFramer {
        fn feed(&mut self, data: &[u8]) -> Vec<Event> {
            ResponseFramer::feed(self, data)
        }
    }

    /// `e` with its offset moved by `base`: from a slice's offsets to the stream's.
    fn shifted(e: Event, base: usize) -> Event {
        match e {
            Event::RequestHead {
                end,
                method,
                target,
            } => Event::RequestHead {
                end: end + base,
                method,
                target,
            },
            Event::ResponseHead { end, status } => Event::ResponseHead {
                end: end + base,
                status,
            },
            Event::MessageEnd { end } => Event::MessageEnd { end: end + base },
            Event::Opaque { at, reason } => Event::Opaque {
                at: at + base,
                reason,
            },
        }
    }

    /// Feeds `data` cut at `cuts` (offsets into `data`, any order); returns the events with
    /// offsets into `data`. Checks what must hold on every feed: offsets inside the slice and
    /// in order, heads and ends alternating, nothing after `Opaque`.
    fn feed_cut<F: Framer + ?Sized>(f: &mut F, data: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(data.len())).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        let mut events = Vec::new();
        let mut start = 0;
        for cut in cuts {
            let piece = &data[start..cut];
            let mut last = 0;
            for e in f.feed(piece) {
                assert!(
                    e.offset() <= piece.len(),
                    "{e:?} outside a {}-byte slice",
                    piece.len()
                );
                assert!(e.offset() >= last, "{e:?} before offset {last}");
                last = e.offset();
                events.push(shifted(e, start));
            }
            start = cut;
        }
        check_grammar(&events);
        events
    }

    /// Heads and message ends alternate, and `Opaque` is the last event if any.
    fn check_grammar(events: &[Event]) {
        let mut open = false;
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::RequestHead { .. } | Event::ResponseHead { .. } => {
                    assert!(!open, "head inside an open message: {events:?}");
                    open = true;
                }
                Event::MessageEnd { .. } => {
                    assert!(open, "end without a head: {events:?}");
                    open = false;
                }
                Event::Opaque { .. } => {
                    assert_eq!(i + 1, events.len(), "events after Opaque: {events:?}");
                }
            }
        }
    }

    fn bytewise(len: usize) -> Vec<usize> {
        (1..len).collect()
    }

    fn find(data: &[u8], needle: &str) -> usize {
        data.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("needle is in the test input")
    }

    fn head_event(end: usize, method: &str, target: &str) -> Event {
        Event::RequestHead {
            end,
            method: method.into(),
            target: target.into(),
        }
    }

    fn response_framer_for(methods: &[&str]) -> ResponseFramer {
        let mut f = ResponseFramer::new();
        for m in methods {
            f.expect_response_to(m);
        }
        f
    }

    /// A byte stream under construction and the events its framer must report, offsets into
    /// the whole stream.
    #[derive(Debug, Default)]
    struct Stream {
        bytes: Vec<u8>,
        events: Vec<Event>,
    }

    /// How a chunked body is written.
    #[derive(Debug, Clone, Copy, Default)]
    struct ChunkStyle {
        upper_hex: bool,
        leading_zeros: bool,
        extensions: bool,
        trailers: bool,
    }

    impl Stream {
        fn put(&mut self, bytes: &[u8]) {
            self.bytes.extend_from_slice(bytes);
        }

        /// A request head with `fields` (each ending in CRLF).
        fn request(&mut self, method: &str, target: &str, fields: &str) {
            self.put(
                format!("{method} {target} HTTP/1.1\r\nHost: model\r\n{fields}\r\n").as_bytes(),
            );
            let end = self.bytes.len();
            self.events.push(head_event(end, method, target));
        }

        /// A response head with `fields` (each ending in CRLF).
        fn response(&mut self, status: u16, fields: &str) {
            self.put(format!("HTTP/1.1 {status} Reason Phrase\r\n{fields}\r\n").as_bytes());
            let end = self.bytes.len();
            self.events.push(Event::ResponseHead { end, status });
        }

        fn end(&mut self) {
            let end = self.bytes.len();
            self.events.push(Event::MessageEnd { end });
        }

        /// A `Content-Length` body and the message's end.
        fn length_body(&mut self, body: &[u8]) {
            self.put(body);
            self.end();
        }

        /// A chunked body (chunks, last chunk, trailers, final CRLF) and the message's end.
        fn chunked_body(&mut self, chunks: &[Vec<u8>], style: ChunkStyle) {
            for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                let mut size = if style.upper_hex {
                    format!("{:X}", chunk.len())
                } else {
                    format!("{:x}", chunk.len())
                };
                if style.leading_zeros {
                    size.insert_str(0, "00");
                }
                if style.extensions {
                    size.push_str(" ; name=value;quoted=\"a;b\\\"c\"");
                }
                self.put(format!("{size}\r\n").as_bytes());
                self.put(chunk);
                self.put(b"\r\n");
            }
            self.put(if style.extensions {
                b"0;last\r\n"
            } else {
                b"0\r\n"
            });
            if style.trailers {
                self.put(b"Expires: never\r\nX-Checksum: 1234\r\n");
            }
            self.put(b"\r\n");
            self.end();
        }
    }

    /// One request and its response(s).
    #[derive(Debug, Clone)]
    struct Exchange {
        kind: u8,
        body: Vec<u8>,
        chunks: Vec<Vec<u8>>,
        style: ChunkStyle,
        blank_line_first: bool,
    }

    const EXCHANGE_KINDS: u8 = 9;

    /// Writes `exchanges` as a pipelined request stream and the matching response stream;
    /// with `close_last`, one more response whose body runs until the server closes.
    fn build(exchanges: &[Exchange], close_last: bool) -> (Stream, Stream) {
        let mut req = Stream::default();
        let mut res = Stream::default();
        for x in exchanges {
            if x.blank_line_first {
                req.put(b"\r\n");
            }
            let n = x.body.len();
            let cl = format!("Content-Length: {n}\r\n");
            match x.kind % EXCHANGE_KINDS {
                0 => {
                    req.request("GET", "/v1/models?x=1", "Accept: */*\r\n");
                    req.end();
                    res.response(200, &cl);
                    res.length_body(&x.body);
                }
                1 => {
                    req.request("POST", "/v1/generate", &cl);
                    req.length_body(&x.body);
                    res.response(200, "transfer-encoding: Chunked\r\n");
                    res.chunked_body(&x.chunks, x.style);
                }
                2 => {
                    req.request("POST", "/upload", "Transfer-Encoding: chunked\r\n");
                    req.chunked_body(&x.chunks, x.style);
                    res.response(200, &cl);
                    res.length_body(&x.body);
                }
                3 => {
                    req.request("HEAD", "/big", "");
                    req.end();
                    let framing = if x.style.trailers {
                        "Transfer-Encoding: chunked\r\n"
                    } else {
                        "Content-Length: 1234\r\n"
                    };
                    res.response(200, framing);
                    res.end();
                }
                4 => {
                    req.request("DELETE", "/item", "");
                    req.end();
                    res.response(204, "");
                    res.end();
                }
                5 => {
                    req.request("GET", "/cached", "If-None-Match: \"x\"\r\n");
                    req.end();
                    res.response(304, "ETag: \"x\"\r\nContent-Length: 99\r\n");
                    res.end();
                }
                6 => {
                    req.request("POST", "/slow", &format!("Expect: 100-continue\r\n{cl}"));
                    req.length_body(&x.body);
                    res.response(100, "");
                    res.end();
                    res.response(200, &cl);
                    res.length_body(&x.body);
                }
                7 => {
                    req.request("GET", "/page", "");
                    req.end();
                    res.response(103, "Link: </style.css>; rel=preload\r\n");
                    res.end();
                    res.response(200, "Transfer-Encoding: gzip, chunked\r\n");
                    res.chunked_body(&x.chunks, x.style);
                }
                _ => {
                    req.request("PUT", "/item", &format!("Content-Length: {n}, {n}\r\n{cl}"));
                    req.length_body(&x.body);
                    res.response(201, "Content-Length: 0\r\n");
                    res.end();
                }
            }
        }
        if close_last {
            req.request("GET", "/stream", "");
            req.end();
            res.response(200, "Connection: close\r\n");
            res.put(b"data: 1\r\n\r\ndata: 2\r\n\r\n");
            res.end();
        }
        (req, res)
    }

    /// Frames a response stream the way the proxy does: the methods come from the request
    /// framer's heads, and the close is fed as `eof`.
    fn frame_responses(requests: &[Event], responses: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut f = ResponseFramer::new();
        for e in requests {
            if let Event::RequestHead { method, .. } = e {
                f.expect_response_to(method);
            }
        }
        let mut events = feed_cut(&mut f, responses, cuts);
        events.extend(f.eof().map(|e| shifted(e, responses.len())));
        events
    }

    /// Every kind of exchange, chunk style and a close-delimited last response.
    fn sample() -> (Stream, Stream) {
        let style = ChunkStyle {
            upper_hex: true,
            leading_zeros: true,
            extensions: true,
            trailers: true,
        };
        let exchanges: Vec<Exchange> = (0..EXCHANGE_KINDS)
            .map(|kind| Exchange {
                kind,
                body: b"hello\r\n\r\nHTTP/1.1 200 OK\r\n".to_vec(),
                chunks: vec![b"ab".to_vec(), vec![b'\n'; 17], b"0\r\n\r\n".to_vec()],
                style: if kind % 2 == 0 {
                    style
                } else {
                    ChunkStyle::default()
                },
                blank_line_first: kind == 4,
            })
            .collect();
        build(&exchanges, true)
    }

    #[test]
    fn sample_is_framed_at_its_message_boundaries_when_fed_whole() {
        let (req, res) = sample();
        assert_eq!(
            feed_cut(&mut RequestFramer::new(), &req.bytes, &[]),
            req.events
        );
        assert_eq!(frame_responses(&req.events, &res.bytes, &[]), res.events);
    }

    #[test]
    fn offsets_are_the_same_when_the_stream_is_cut_at_any_one_byte() {
        let (req, res) = sample();
        for cut in 0..=req.bytes.len() {
            let got = feed_cut(&mut RequestFramer::new(), &req.bytes, &[cut]);
            assert_eq!(got, req.events, "requests cut at {cut}");
        }
        for cut in 0..=res.bytes.len() {
            let got = frame_responses(&req.events, &res.bytes, &[cut]);
            assert_eq!(got, res.events, "responses cut at {cut}");
        }
    }

    #[test]
    fn offsets_are_the_same_when_the_stream_is_fed_a_byte_at_a_time() {
        let (req, res) = sample();
        let got = feed_cut(
            &mut RequestFramer::new(),
            &req.bytes,
            &bytewise(req.bytes.len()),
        );
        assert_eq!(got, req.events);
        let got = frame_responses(&req.events, &res.bytes, &bytewise(res.bytes.len()));
        assert_eq!(got, res.events);
    }

    #[test]
    fn a_request_without_length_or_coding_has_no_body() {
        let data = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let first = find(data, "GET /b");
        assert_eq!(
            RequestFramer::new().feed(data),
            vec![
                head_event(first, "GET", "/a"),
                Event::MessageEnd { end: first },
                head_event(data.len(), "GET", "/b"),
                Event::MessageEnd { end: data.len() },
            ]
        );
    }

    #[test]
    fn empty_lines_before_a_request_are_skipped() {
        let data = b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n";
        let events = feed_cut(&mut RequestFramer::new(), data, &[1, 2]);
        assert_eq!(
            events,
            vec![
                head_event(data.len(), "GET", "/"),
                Event::MessageEnd { end: data.len() }
            ]
        );
    }

    #[test]
    fn a_response_without_length_or_coding_ends_at_eof() {
        let mut f = response_framer_for(&["GET"]);
        let events = f.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body");
        assert_eq!(
            events,
            vec![Event::ResponseHead {
                end: 19,
                status: 200
            }]
        );
        assert_eq!(f.feed(b"more body"), vec![]);
        assert_eq!(f.eof(), Some(Event::MessageEnd { end: 0 }));
        assert_eq!(f.eof(), None, "a second eof has nothing open");
    }

    #[test]
    fn a_response_whose_coding_does_not_end_in_chunked_ends_at_eof() {
        let mut f = response_framer_for(&["GET"]);
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        let events = f.feed(format!("{head}0\r\n\r\n").as_bytes());
        assert_eq!(
            events,
            vec![Event::ResponseHead {
                end: head.len(),
                status: 200
            }]
        );
        assert_eq!(f.eof(), Some(Event::MessageEnd { end: 0 }));
    }

    #[test]
    fn eof_with_nothing_open_or_a_cut_body_has_no_message_end() {
        assert_eq!(ResponseFramer::new().eof(), None);

        let mut f = response_framer_for(&["GET"]);
        f.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
        assert_eq!(f.eof(), None, "a Content-Length body cut short");

        let mut f = response_framer_for(&["GET"]);
        f.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
        assert_eq!(f.eof(), None, "a chunked body cut short");

        let mut f = response_framer_for(&["GET"]);
        f.feed(b"HTTP/1.1 200 OK\r\nContent-");
        assert_eq!(f.eof(), None, "a head cut short");
    }

    #[test]
    fn responses_to_head_have_no_body_whatever_their_framing_fields_say() {
        let one = "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n";
        let two = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let data = format!("{one}{two}");
        let mut f = response_framer_for(&["HEAD", "HEAD"]);
        assert_eq!(
            f.feed(data.as_bytes()),
            vec![
                Event::ResponseHead {
                    end: one.len(),
                    status: 200
                },
                Event::MessageEnd { end: one.len() },
                Event::ResponseHead {
                    end: data.len(),
                    status: 200
                },
                Event::MessageEnd { end: data.len() },
            ]
        );
    }

    #[test]
    fn no_content_and_not_modified_responses_have_no_body() {
        let one = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
        let two = "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
        let data = format!("{one}{two}");
        let events = response_framer_for(&["GET", "GET"]).feed(data.as_bytes());
        assert_eq!(
            events,
            vec![
                Event::ResponseHead {
                    end: one.len(),
                    status: 204
                },
                Event::MessageEnd { end: one.len() },
                Event::ResponseHead {
                    end: data.len(),
                    status: 304
                },
                Event::MessageEnd { end: data.len() },
            ]
        );
    }

    #[test]
    fn an_interim_response_leaves_its_request_waiting_for_the_final_response() {
        // The request is HEAD: the final 200 after the 100 must still have no body.
        let interim = "HTTP/1.1 100 Continue\r\n\r\n";
        let last = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
        let data = format!("{interim}{last}");
        let mut f = response_framer_for(&["HEAD", "GET"]);
        assert_eq!(
            f.feed(data.as_bytes()),
            vec![
                Event::ResponseHead {
                    end: interim.len(),
                    status: 100
                },
                Event::MessageEnd { end: interim.len() },
                Event::ResponseHead {
                    end: data.len(),
                    status: 200
                },
                Event::MessageEnd { end: data.len() },
            ]
        );
        // The next response answers the GET: it has a body.
        assert_eq!(
            f.feed(last.as_bytes()),
            vec![Event::ResponseHead {
                end: last.len(),
                status: 200
            }]
        );
    }

    #[test]
    fn a_non_2xx_response_to_connect_is_framed_as_usual() {
        let refused = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\nno!";
        let mut f = response_framer_for(&["CONNECT"]);
        let events = f.feed(refused.as_bytes());
        assert_eq!(events[1], Event::MessageEnd { end: refused.len() });
        assert!(!f.is_opaque());
    }

    #[test]
    fn a_response_with_no_request_to_match_is_framed_as_a_response_to_get() {
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let events = ResponseFramer::new().feed(data);
        assert_eq!(events[1], Event::MessageEnd { end: data.len() });
    }

    #[test]
    fn repeated_equal_content_lengths_are_one_length() {
        let data = b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nokGET";
        let events = RequestFramer::new().feed(data);
        assert_eq!(
            events[1],
            Event::MessageEnd {
                end: data.len() - 3
            }
        );
    }

    #[test]
    fn a_request_asking_to_upgrade_is_framed_as_usual() {
        let data = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let mut f = RequestFramer::new();
        assert_eq!(f.feed(data)[1], Event::MessageEnd { end: data.len() });
        assert!(!f.is_opaque());
    }

    #[test]
    fn a_chunked_body_ends_after_its_trailers_and_final_crlf() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = "0005;ext=\"v\"\r\nhello\r\nA\r\n0123456789\r\n0 ; last\r\nX-Sum: 9\r\n\r\n";
        let data = format!("{head}{body}HTTP/1.1 2");
        let expected = vec![
            Event::ResponseHead {
                end: head.len(),
                status: 200,
            },
            Event::MessageEnd {
                end: head.len() + body.len(),
            },
        ];
        let bytes = data.as_bytes();
        assert_eq!(
            feed_cut(&mut response_framer_for(&["GET"]), bytes, &[]),
            expected
        );
        for cut in 0..=bytes.len() {
            let got = feed_cut(&mut response_framer_for(&["GET"]), bytes, &[cut]);
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_whole_message_in_one_feed_is_not_copied() {
        let body = vec![b'x'; 100_000];
        let mut data =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        data.extend_from_slice(&body);
        let mut f = response_framer_for(&["GET"]);
        assert_eq!(f.feed(&data).len(), 2);
        assert_eq!(f.core.head_buf.capacity(), 0);
    }

    #[test]
    fn a_huge_body_is_counted_not_stored() {
        let mut f = RequestFramer::new();
        let head = b"PUT /blob HTTP/1.1\r\nContent-Length: 1000000000000000\r\n\r\n";
        assert_eq!(f.feed(head).len(), 1);
        let piece = vec![0u8; 1 << 20];
        for _ in 0..8 {
            assert_eq!(f.feed(&piece), vec![]);
        }
        assert_eq!(f.core.head_buf.capacity(), 0);
        assert!(
            matches!(f.core.state, State::Length { remaining } if remaining == 1_000_000_000_000_000 - 8 * (1 << 20))
        );
    }

    #[test]
    fn an_empty_feed_reports_nothing() {
        assert_eq!(RequestFramer::new().feed(b""), vec![]);
        assert_eq!(ResponseFramer::new().feed(b""), vec![]);
    }

    #[test]
    fn event_offset_is_end_or_at() {
        assert_eq!(Event::MessageEnd { end: 3 }.offset(), 3);
        assert_eq!(
            Event::ResponseHead {
                end: 4,
                status: 200
            }
            .offset(),
            4
        );
        assert_eq!(head_event(5, "GET", "/").offset(), 5);
        let opaque = Event::Opaque {
            at: 6,
            reason: reason::UNPARSEABLE_HEAD,
        };
        assert_eq!(opaque.offset(), 6);
    }

    // ---- every reason to go opaque ----

    /// Feeding `data` whole ends in `Opaque { at, reason }`; fed a byte at a time it ends in
    /// the same reason (where a head began in an earlier slice, `at` differs by design).
    fn assert_opaque(mut new: impl FnMut() -> Box<dyn Framer>, data: &[u8], at: usize, why: &str) {
        let whole = feed_cut(&mut *new(), data, &[]);
        assert_eq!(
            whole.last(),
            Some(&Event::Opaque {
                at,
                reason: reason_str(why)
            }),
            "{whole:?}"
        );
        let bytes = feed_cut(&mut *new(), data, &bytewise(data.len()));
        assert!(
            matches!(bytes.last(), Some(Event::Opaque { reason, .. }) if *reason == why),
            "byte at a time: {bytes:?}"
        );
        let mut f = new();
        feed_cut(&mut *f, data, &[]);
        assert_eq!(
            f.feed(b"GET / HTTP/1.1\r\n\r\n"),
            vec![],
            "nothing after Opaque"
        );
    }

    /// The `reason` constant equal to `why` (the constants are `&'static str`).
    fn reason_str(why: &str) -> &'static str {
        const ALL: &[&str] = &[
            reason::CONNECT_REQUEST,
            reason::CONNECT_TUNNEL,
            reason::SWITCHING_PROTOCOLS,
            reason::UNPARSEABLE_HEAD,
            reason::TOO_MANY_HEADERS,
            reason::HEAD_TOO_LARGE,
            reason::INVALID_CONTENT_LENGTH,
            reason::CONFLICTING_CONTENT_LENGTH,
            reason::CONTENT_LENGTH_AND_TRANSFER_ENCODING,
            reason::INVALID_TRANSFER_ENCODING,
            reason::REQUEST_NOT_CHUNKED,
            reason::TRANSFER_ENCODING_IN_HTTP_1_0,
            reason::INVALID_CHUNK_SIZE,
            reason::CHUNK_SIZE_OVERFLOW,
            reason::CHUNK_LINE_TOO_LONG,
            reason::CHUNK_DATA_NOT_CRLF,
            reason::INVALID_TRAILER,
            reason::TRAILERS_TOO_LARGE,
            reason::TOO_MANY_PENDING_REQUESTS,
        ];
        ALL.iter()
            .copied()
            .find(|r| *r == why)
            .expect("a reason constant")
    }

    fn requests() -> Box<dyn Framer> {
        Box::new(RequestFramer::new())
    }

    fn responses() -> Box<dyn Framer> {
        Box::new(response_framer_for(&["GET"]))
    }

    const CHUNKED_RESPONSE: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn a_connect_request_turns_the_rest_into_a_tunnel() {
        let head = "CONNECT model:443 HTTP/1.1\r\nHost: model:443\r\n\r\n";
        let data = format!("{head}\x16\x03\x01\x02\x00");
        let events = RequestFramer::new().feed(data.as_bytes());
        assert_eq!(
            events,
            vec![
                head_event(head.len(), "CONNECT", "model:443"),
                Event::MessageEnd { end: head.len() },
                Event::Opaque {
                    at: head.len(),
                    reason: reason::CONNECT_REQUEST
                },
            ]
        );
        assert_opaque(
            requests,
            data.as_bytes(),
            head.len(),
            reason::CONNECT_REQUEST,
        );
    }

    #[test]
    fn a_2xx_response_to_connect_turns_the_rest_into_a_tunnel() {
        let head = "HTTP/1.1 200 Connection Established\r\n\r\n";
        let data = format!("{head}\x16\x03\x01\x02\x00");
        let mut f = response_framer_for(&["CONNECT"]);
        assert_eq!(
            f.feed(data.as_bytes()),
            vec![
                Event::ResponseHead {
                    end: head.len(),
                    status: 200
                },
                Event::MessageEnd { end: head.len() },
                Event::Opaque {
                    at: head.len(),
                    reason: reason::CONNECT_TUNNEL
                },
            ]
        );
        assert!(f.is_opaque());
        assert_eq!(f.eof(), None);
        let connect = || -> Box<dyn Framer> { Box::new(response_framer_for(&["CONNECT"])) };
        assert_opaque(connect, data.as_bytes(), head.len(), reason::CONNECT_TUNNEL);
    }

    #[test]
    fn switching_protocols_turns_the_rest_into_another_protocol() {
        let head =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let data = format!("{head}\u{1}\u{5}hello");
        let events = response_framer_for(&["GET"]).feed(data.as_bytes());
        assert_eq!(events[1], Event::MessageEnd { end: head.len() });
        assert_opaque(
            responses,
            data.as_bytes(),
            head.len(),
            reason::SWITCHING_PROTOCOLS,
        );
    }

    #[test]
    fn bytes_that_are_not_http_are_opaque_from_where_a_head_should_start() {
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert_opaque(requests, tls_hello, 0, reason::UNPARSEABLE_HEAD);
        let after_one = b"GET / HTTP/1.1\r\n\r\nSSH-2.0-OpenSSH_9.6\r\n\r\n";
        assert_opaque(requests, after_one, 18, reason::UNPARSEABLE_HEAD);
        assert_opaque(
            responses,
            b"HTTP/2 200\r\n\r\n",
            0,
            reason::UNPARSEABLE_HEAD,
        );
        let obs_fold = b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n";
        assert_opaque(responses, obs_fold, 0, reason::UNPARSEABLE_HEAD);
    }

    #[test]
    fn a_head_with_more_than_max_headers_fields_is_opaque() {
        let fields: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let data = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        assert_opaque(requests, data.as_bytes(), 0, reason::TOO_MANY_HEADERS);
        let fields: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let data = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        let events = RequestFramer::new().feed(data.as_bytes());
        assert_eq!(
            events[1],
            Event::MessageEnd { end: data.len() },
            "exactly MAX_HEADERS is fine"
        );
    }

    #[test]
    fn a_head_over_max_head_bytes_is_opaque_from_its_start() {
        let first = "GET / HTTP/1.1\r\n\r\n";
        let big = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let data = format!("{first}{big}");
        assert_opaque(
            requests,
            data.as_bytes(),
            first.len(),
            reason::HEAD_TOO_LARGE,
        );
        // Still unfinished at the limit: the framer does not buffer past it.
        let endless = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_opaque(requests, endless.as_bytes(), 0, reason::HEAD_TOO_LARGE);
        let mut f = RequestFramer::new();
        let events = feed_cut(&mut f, endless.as_bytes(), &[10]);
        assert_eq!(
            events,
            vec![Event::Opaque {
                at: 10,
                reason: reason::HEAD_TOO_LARGE
            }]
        );
        assert_eq!(f.core.head_buf.capacity(), 0, "the buffer is released");
        // A head of exactly MAX_HEAD_BYTES is fine, whole or split.
        let fill = MAX_HEAD_BYTES - "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(fill));
        assert_eq!(exact.len(), MAX_HEAD_BYTES);
        for cuts in [vec![], vec![1], vec![MAX_HEAD_BYTES - 1]] {
            let events = feed_cut(&mut RequestFramer::new(), exact.as_bytes(), &cuts);
            assert_eq!(
                events[1],
                Event::MessageEnd {
                    end: MAX_HEAD_BYTES
                },
                "cuts {cuts:?}"
            );
        }
    }

    #[test]
    fn a_content_length_that_is_not_a_number_is_opaque() {
        for value in [
            "12a",
            "-1",
            "+5",
            "0x10",
            "",
            " , ",
            "99999999999999999999",
            "1 2",
        ] {
            let data = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_opaque(requests, data.as_bytes(), 0, reason::INVALID_CONTENT_LENGTH);
        }
    }

    #[test]
    fn differing_content_lengths_are_opaque() {
        let data = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
        assert_opaque(requests, data, 0, reason::CONFLICTING_CONTENT_LENGTH);
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!";
        assert_opaque(responses, data, 0, reason::CONFLICTING_CONTENT_LENGTH);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_opaque() {
        let data =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_opaque(
            requests,
            data,
            0,
            reason::CONTENT_LENGTH_AND_TRANSFER_ENCODING,
        );
        let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_opaque(
            responses,
            data,
            0,
            reason::CONTENT_LENGTH_AND_TRANSFER_ENCODING,
        );
    }

    #[test]
    fn chunked_before_the_last_coding_or_an_empty_coding_list_is_opaque() {
        let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
        assert_opaque(responses, data, 0, reason::INVALID_TRANSFER_ENCODING);
        let data =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_opaque(responses, data, 0, reason::INVALID_TRANSFER_ENCODING);
        let data = b"POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n";
        assert_opaque(requests, data, 0, reason::INVALID_TRANSFER_ENCODING);
    }

    #[test]
    fn a_request_whose_coding_does_not_end_in_chunked_is_opaque() {
        let data = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc";
        assert_opaque(requests, data, 0, reason::REQUEST_NOT_CHUNKED);
    }

    #[test]
    fn transfer_encoding_in_an_http_1_0_message_is_opaque() {
        let data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_opaque(requests, data, 0, reason::TRANSFER_ENCODING_IN_HTTP_1_0);
        let data = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_opaque(responses, data, 0, reason::TRANSFER_ENCODING_IN_HTTP_1_0);
    }

    #[test]
    fn a_malformed_chunk_size_line_is_opaque_at_the_offending_byte() {
        let h = CHUNKED_RESPONSE.len();
        for (body, offset) in [
            ("zz\r\n", 0),     // not hex
            (";x\r\n", 0),     // no digits
            ("5\nhello", 1),   // bare LF
            ("5;a\nhello", 3), // bare LF in an extension
            ("5 x\r\n", 2),    // junk after the size
            ("5\rhello", 2),   // CR without LF
        ] {
            let data = format!("{CHUNKED_RESPONSE}{body}");
            assert_opaque(
                responses,
                data.as_bytes(),
                h + offset,
                reason::INVALID_CHUNK_SIZE,
            );
        }
    }

    #[test]
    fn a_chunk_size_over_16_hex_digits_is_opaque() {
        let data = format!("{CHUNKED_RESPONSE}10000000000000000\r\n");
        let at = CHUNKED_RESPONSE.len() + 16;
        assert_opaque(responses, data.as_bytes(), at, reason::CHUNK_SIZE_OVERFLOW);
        // 16 digits are fine.
        let data = format!("{CHUNKED_RESPONSE}000000000000000F\r\n");
        let events = response_framer_for(&["GET"]).feed(data.as_bytes());
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_chunk_size_line_over_max_chunk_line_bytes_is_opaque() {
        let ext = "a".repeat(MAX_CHUNK_LINE_BYTES);
        let data = format!("{CHUNKED_RESPONSE}5;{ext}\r\n");
        let at = CHUNKED_RESPONSE.len() + MAX_CHUNK_LINE_BYTES;
        assert_opaque(responses, data.as_bytes(), at, reason::CHUNK_LINE_TOO_LONG);
        // A line of exactly the limit is fine.
        let ext = "a".repeat(MAX_CHUNK_LINE_BYTES - 2);
        let data = format!("{CHUNKED_RESPONSE}5;{ext}\r\nhello\r\n0\r\n\r\n");
        let events = response_framer_for(&["GET"]).feed(data.as_bytes());
        assert_eq!(events[1], Event::MessageEnd { end: data.len() });
    }

    #[test]
    fn chunk_data_not_followed_by_crlf_is_opaque() {
        let h = CHUNKED_RESPONSE.len();
        let data = format!("{CHUNKED_RESPONSE}5\r\nhello!\r\n");
        assert_opaque(
            responses,
            data.as_bytes(),
            h + 8,
            reason::CHUNK_DATA_NOT_CRLF,
        );
        let data = format!("{CHUNKED_RESPONSE}5\r\nhello\r!");
        assert_opaque(
            responses,
            data.as_bytes(),
            h + 9,
            reason::CHUNK_DATA_NOT_CRLF,
        );
    }

    #[test]
    fn a_trailer_line_not_ended_by_crlf_is_opaque() {
        let h = CHUNKED_RESPONSE.len();
        let data = format!("{CHUNKED_RESPONSE}0\r\nX: y\nZ: w\r\n\r\n");
        assert_opaque(responses, data.as_bytes(), h + 7, reason::INVALID_TRAILER);
        let data = format!("{CHUNKED_RESPONSE}0\r\n\rX");
        assert_opaque(responses, data.as_bytes(), h + 4, reason::INVALID_TRAILER);
    }

    #[test]
    fn a_trailer_section_over_max_head_bytes_is_opaque() {
        let value = "a".repeat(MAX_HEAD_BYTES);
        let data = format!("{CHUNKED_RESPONSE}0\r\nX: {value}\r\n\r\n");
        let at = CHUNKED_RESPONSE.len() + 3 + MAX_HEAD_BYTES;
        assert_opaque(responses, data.as_bytes(), at, reason::TRAILERS_TOO_LARGE);
    }

    #[test]
    fn more_than_max_pending_requests_is_opaque_at_the_next_feed() {
        let mut f = ResponseFramer::new();
        for _ in 0..MAX_PENDING_REQUESTS {
            f.expect_response_to("GET");
        }
        let ok = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(f.feed(ok).len(), 2, "the limit itself is fine");
        f.expect_response_to("GET");
        f.expect_response_to("GET");
        assert_eq!(
            f.feed(ok),
            vec![Event::Opaque {
                at: 0,
                reason: reason::TOO_MANY_PENDING_REQUESTS
            }]
        );
        assert_eq!(f.feed(ok), vec![]);
    }

    // ---- properties ----

    fn body_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b'0')];
        proptest::collection::vec(byte, 0..max)
    }

    fn exchange_strategy() -> impl Strategy<Value = Exchange> {
        (
            0..EXCHANGE_KINDS,
            body_strategy(40),
            proptest::collection::vec(body_strategy(24), 0..4),
            any::<(bool, bool, bool, bool, bool)>(),
        )
            .prop_map(|(kind, body, chunks, (a, b, c, d, e))| Exchange {
                kind,
                body,
                chunks,
                style: ChunkStyle {
                    upper_hex: a,
                    leading_zeros: b,
                    extensions: c,
                    trailers: d,
                },
                blank_line_first: e,
            })
    }

    fn cuts_in(len: usize, cuts: &[proptest::sample::Index]) -> Vec<usize> {
        cuts.iter().map(|i| i.index(len + 1)).collect()
    }

    /// Bytes that look like pieces of HTTP/1.1, to reach deep framer states at random.
    fn http_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"GET / HTTP/1.1\r\n"[..]),
            Just(&b"HEAD /x HTTP/1.0\r\n"[..]),
            Just(&b"CONNECT a:1 HTTP/1.1\r\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\n"[..]),
            Just(&b"HTTP/1.1 100 Continue\r\n"[..]),
            Just(&b"HTTP/1.0 204 No\r\n"[..]),
            Just(&b"Content-Length: 3\r\n"[..]),
            Just(&b"Content-Length: 3, 4\r\n"[..]),
            Just(&b"Transfer-Encoding: chunked\r\n"[..]),
            Just(&b"Transfer-Encoding: gzip\r\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"5\r\n"[..]),
            Just(&b"ffffffffffffffffff\r\n"[..]),
            Just(&b"0\r\n"[..]),
            Just(&b";x=\"y\""[..]),
            Just(&b"abc"[..]),
            Just(&b"X: y\r\n"[..]),
            Just(&b"\x00\xff"[..]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        /// A pipelined stream of every kind of exchange, cut anywhere, is framed exactly at
        /// the message boundaries written, the same as when fed whole.
        #[test]
        fn cut_streams_are_framed_at_the_true_message_boundaries(
            exchanges in proptest::collection::vec(exchange_strategy(), 1..8),
            close_last in any::<bool>(),
            req_cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
            res_cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
        ) {
            let (req, res) = build(&exchanges, close_last);
            let whole = feed_cut(&mut RequestFramer::new(), &req.bytes, &[]);
            prop_assert_eq!(&whole, &req.events);
            let cut = feed_cut(&mut RequestFramer::new(), &req.bytes, &cuts_in(req.bytes.len(), &req_cuts));
            prop_assert_eq!(&cut, &req.events);

            let whole = frame_responses(&req.events, &res.bytes, &[]);
            prop_assert_eq!(&whole, &res.events);
            let cut = frame_responses(&req.events, &res.bytes, &cuts_in(res.bytes.len(), &res_cuts));
            prop_assert_eq!(&cut, &res.events);
        }

        /// Random bytes, cut anywhere, never panic and keep offsets inside their slices.
        #[test]
        fn random_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            methods in proptest::collection::vec(prop_oneof![Just("GET"), Just("HEAD"), Just("CONNECT")], 0..4),
        ) {
            let cuts = cuts_in(data.len(), &cuts);
            feed_cut(&mut RequestFramer::new(), &data, &cuts);
            let mut f = response_framer_for(&methods);
            feed_cut(&mut f, &data, &cuts);
            f.eof();
        }

        /// Streams made of pieces of HTTP never panic, and whatever framing they get, a cut
        /// stream gets the same heads and ends until one of them goes opaque.
        #[test]
        fn http_like_soup_never_panics(
            data in http_soup(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            methods in proptest::collection::vec(prop_oneof![Just("GET"), Just("HEAD"), Just("CONNECT")], 0..4),
        ) {
            let cuts = cuts_in(data.len(), &cuts);
            for framer in [requests as fn() -> Box<dyn Framer>, || Box::new(response_framer_for(&[]))] {
                let whole = feed_cut(&mut *framer(), &data, &[]);
                let cut = feed_cut(&mut *framer(), &data, &cuts);
                let framed = |events: &[Event]| -> Vec<Event> {
                    events.iter().filter(|e| !matches!(e, Event::Opaque { .. })).cloned().collect()
                };
                // Heads are only reported once their end is seen, so before any opaque the
                // two agree; after it, the cut one may have stopped earlier or later.
                let (w, c) = (framed(&whole), framed(&cut));
                let n = w.len().min(c.len());
                prop_assert_eq!(&w[..n], &c[..n]);
            }
            let mut f = response_framer_for(&methods);
            feed_cut(&mut f, &data, &cuts);
            f.eof();
        }

        /// A valid stream with one byte changed never panics.
        #[test]
        fn a_corrupted_stream_never_panics(
            exchanges in proptest::collection::vec(exchange_strategy(), 1..5),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let (mut req, mut res) = build(&exchanges, true);
            for s in [&mut req, &mut res] {
                let i = at.index(s.bytes.len());
                s.bytes[i] = byte;
            }
            feed_cut(&mut RequestFramer::new(), &req.bytes, &cuts_in(req.bytes.len(), &cuts));
            frame_responses(&req.events, &res.bytes, &cuts_in(res.bytes.len(), &cuts));
        }
    }
}
