//! Sans-IO HTTP/1.1 client codec: request serialisation and an incremental response
//! reader.
//!
//! The request of each template is serialised once ([`serialize_request`]) and written
//! as is for every send. [`ResponseReader`] is fed whatever bytes have arrived and
//! hands out body bytes as they come (so SSE events are timed per chunk), for bodies
//! delimited by `Content-Length`, chunked transfer encoding or the end of the connection.
//! The head is parsed with `httparse`. Nothing here does I/O or reads a clock; `conn`
//! moves the bytes.
//!
//! Not here: pipelining (one response per request, in order), `Upgrade`, HTTP/2.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method};

/// Largest response head accepted (status line and headers), bytes.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted (hyper's default is 100 too).
const MAX_HEADERS: usize = 100;

/// The response was not valid HTTP/1.1 (or used a feature this client does not speak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed HTTP/1.1 response: {0}")]
pub(crate) struct Malformed(pub &'static str);

/// The bytes of one request: request line, `host`, the template's headers, a
/// `content-length` where one is needed, and the body.
///
/// A template header named `host` replaces the target's authority. A body with a
/// template `transfer-encoding: chunked` header is sent as one chunk; otherwise
/// `content-length` is added unless the template sets it, or the body is empty on a
/// method that has none (GET, HEAD, CONNECT), as hyper does.
pub(crate) fn serialize_request(
    method: &Method,
    origin_form: &str,
    authority: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + origin_form.len() + body.len());
    let line = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin_form.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k == HOST) {
        line(&mut out, b"host", authority.as_bytes());
    }
    let mut has_length = false;
    let mut chunked = false;
    for (k, v) in headers {
        has_length |= k == CONTENT_LENGTH;
        if k == TRANSFER_ENCODING {
            has_length = true;
            chunked |= is_chunked(v.as_bytes());
        }
        line(&mut out, k.as_str().as_bytes(), v.as_bytes());
    }
    let bodiless = matches!(*method, Method::GET | Method::HEAD | Method::CONNECT);
    let implied_empty = body.is_empty() && bodiless;
    let needs_length = !has_length && !implied_empty;
    if needs_length {
        line(
            &mut out,
            b"content-length",
            body.len().to_string().as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    if chunked {
        if !body.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
    out
}

/// Whether the last transfer coding in a `transfer-encoding` value is `chunked`.
fn is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Body bytes left (Content-Length).
    Length(u64),
    ChunkSize,
    /// Bytes left in the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to the blank line.
    Trailers,
    /// No length: the body ends when the server closes the connection.
    UntilEof,
    Done,
}

/// Incremental reader of one response. Feed it the unread bytes with [`feed`]
/// (repeatedly, as more arrive) and, if the peer closes first, call [`eof`].
///
/// [`feed`]: ResponseReader::feed
/// [`eof`]: ResponseReader::eof
#[derive(Debug)]
pub(crate) struct ResponseReader {
    state: State,
    /// Response to a HEAD request: never a body.
    head_request: bool,
    status: u16,
    close: bool,
}

impl ResponseReader {
    pub fn new(head_request: bool) -> Self {
        ResponseReader {
            state: State::Head,
            head_request,
            status: 0,
            close: false,
        }
    }

    /// The final status code; 0 until the head has been read.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the head has been read (the body may still be arriving).
    pub fn head_done(&self) -> bool {
        self.state != State::Head
    }

    /// Whether the connection cannot carry another request after this response
    /// (`Connection: close`, HTTP/1.0 without keep-alive, or a close-delimited body).
    pub fn must_close(&self) -> bool {
        self.close
    }

    /// Consumes a prefix of `buf`, calling `on_data` with each run of body bytes.
    /// Returns how many bytes were consumed and where the response stands; after
    /// [`Step::Head`], call again with the rest. Unconsumed bytes (a partial head, chunk
    /// size or CRLF) must be offered again, followed by the next bytes to arrive. Bytes
    /// after a complete response are not consumed.
    pub fn feed(
        &mut self,
        buf: &[u8],
        on_data: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, Step), Malformed> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Done => return Ok((pos, Step::Done)),
                State::Head => match self.parse_head(rest)? {
                    Some(n) if self.state == State::Head => pos += n, // 1xx skipped
                    Some(n) => return Ok((pos + n, Step::Head)),
                    None => return Ok((pos, Step::NeedMore)),
                },
                State::Length(left) | State::ChunkData(left) => {
                    if rest.is_empty() {
                        return Ok((pos, Step::NeedMore));
                    }
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    on_data(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => return Ok((pos, Step::NeedMore)),
                    Err(httparse::InvalidChunkSize) => return Err(Malformed("invalid chunk size")),
                },
                State::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    [b'\n', ..] => {
                        pos += 1;
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok((pos, Step::NeedMore)),
                    _ => return Err(Malformed("chunk data longer than its size")),
                },
                State::Trailers => match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        pos += nl + 1;
                        if rest[..nl].trim_ascii().is_empty() {
                            self.state = State::Done;
                        }
                    }
                    None if rest.len() > MAX_HEAD_BYTES => {
                        return Err(Malformed("trailer line too long"))
                    }
                    None => return Ok((pos, Step::NeedMore)),
                },
                State::UntilEof => {
                    if !rest.is_empty() {
                        on_data(rest);
                    }
                    return Ok((buf.len(), Step::NeedMore));
                }
            }
        }
    }

    /// The peer closed the connection. Ok (and complete) only if the body was
    /// close-delimited; otherwise the response was cut short.
    pub fn eof(&mut self) -> Result<(), Incomplete> {
        match self.state {
            State::UntilEof | State::Done => {
                self.state = State::Done;
                self.close = true;
                Ok(())
            }
            _ => Err(Incomplete),
        }
    }

    /// Parses a head from the start of `buf`; `Some(consumed)` when one was complete
    /// (an interim 1xx head is consumed and skipped).
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(Malformed("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many headers")),
            Err(_) => return Err(Malformed("invalid status line or header")),
        };
        let status = resp.code.expect("a complete head has a status code");
        match status {
            // httparse takes any three digits; hyper (through `http::StatusCode`) refuses
            // these, and 0 would read as "no head yet" in `status()`.
            0..=99 => return Err(Malformed("status code below 100")),
            101 => return Err(Malformed("unexpected protocol upgrade (101)")),
            100..=199 => return Ok(Some(n)), // interim response; the final one follows
            _ => {}
        }
        let http10 = resp.version == Some(0);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut close = http10;
        for h in resp.headers.iter() {
            let v = h.value;
            if h.name.eq_ignore_ascii_case("content-length") {
                let parsed = std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(Malformed("invalid content-length"))?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(Malformed("conflicting content-length headers"));
                }
                length = Some(parsed);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
                chunked = is_chunked(v);
            } else if h.name.eq_ignore_ascii_case("connection") {
                if has_token(v, b"close") {
                    close = true;
                } else if http10 && has_token(v, b"keep-alive") {
                    close = false;
                }
            }
        }
        self.status = status;
        self.close = close;
        self.state = if self.head_request || status == 204 || status == 304 {
            State::Done
        } else if chunked {
            State::ChunkSize
        } else if transfer_encoding {
            // A coding other than chunked last: the body runs to the close (RFC 9112 6.3).
            State::UntilEof
        } else {
            match length {
                Some(0) => State::Done,
                Some(l) => State::Length(l),
                None => State::UntilEof,
            }
        };
        if self.state == State::UntilEof {
            self.close = true;
        }
        Ok(Some(n))
    }
}

/// Where a response stands after [`ResponseReader::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Everything offered was consumed or is an incomplete unit: read more.
    NeedMore,
    /// The final head was just read ([`ResponseReader::status`] is set); feed the rest.
    Head,
    /// The response is complete.
    Done,
}

/// The connection ended before the response was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incomplete;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes, as a socket might deliver them, keeping
    /// unconsumed bytes like `conn` does. Returns (status, body, close, complete).
    fn read(wire: &[u8], step: usize, eof: bool) -> Result<(u16, Vec<u8>, bool, bool), String> {
        let mut r = ResponseReader::new(false);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut complete = false;
        'read: for piece in wire.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let (n, step) = r
                    .feed(&pending, &mut |d: &[u8]| body.extend_from_slice(d))
                    .map_err(|e| e.to_string())?;
                pending.drain(..n);
                match step {
                    Step::NeedMore => break,
                    Step::Head => continue,
                    Step::Done => {
                        complete = true;
                        break 'read;
                    }
                }
            }
        }
        if !complete && eof {
            r.eof().map_err(|_| "incomplete".to_owned())?;
            complete = true;
        }
        Ok((r.status(), body, r.must_close(), complete))
    }

    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n\
        Content-Length: 2\r\nConnection: keep-alive\r\n\r\nok";

    #[test]
    fn content_length_body_is_complete_in_one_or_many_reads() {
        for step in [1, 3, 7, NGINX.len()] {
            assert_eq!(
                read(NGINX, step, false),
                Ok((200, b"ok".to_vec(), false, true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn bytes_after_a_complete_response_are_not_consumed() {
        let mut wire = NGINX.to_vec();
        wire.extend_from_slice(b"HTTP/1.1 200");
        let mut r = ResponseReader::new(false);
        let head = NGINX.len() - 2;
        assert_eq!(r.feed(&wire, &mut |_: &[u8]| {}), Ok((head, Step::Head)));
        assert_eq!(
            r.feed(&wire[head..], &mut |_: &[u8]| {}),
            Ok((2, Step::Done))
        );
    }

    #[test]
    fn chunked_body_split_across_reads_is_delivered_in_order() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\ndata:\r\n12\r\n a\n\ndata: [DONE]\n\n\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(
                read(wire, step, false),
                Ok((200, b"data: a\n\ndata: [DONE]\n\n".to_vec(), false, true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn data_arrives_before_the_chunk_ends() {
        // SSE timing needs each event when it arrives, not when its chunk completes.
        let mut r = ResponseReader::new(false);
        let mut body = Vec::new();
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ndata: x\n\n";
        let (head, step) = r.feed(wire, &mut |_: &[u8]| {}).expect("valid");
        assert_eq!(step, Step::Head);
        let (n, step) = r
            .feed(&wire[head..], &mut |d: &[u8]| body.extend_from_slice(d))
            .expect("valid");
        assert_eq!((head + n, step), (wire.len(), Step::NeedMore));
        assert_eq!(body, b"data: x\n\n");
    }

    #[test]
    fn connection_close_and_http10_mean_the_connection_ends() {
        let close =
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read(close, 4, false), Ok((200, vec![], true, true)));
        let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(read(http10, 4, false), Ok((200, b"x".to_vec(), true, true)));
        let http10_ka = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(
            read(http10_ka, 4, false),
            Ok((200, b"x".to_vec(), false, true))
        );
    }

    #[test]
    fn body_without_length_runs_to_eof_and_closes() {
        let wire = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(
            read(wire, 5, false),
            Ok((200, b"all of it".to_vec(), true, false))
        );
        assert_eq!(
            read(wire, 5, true),
            Ok((200, b"all of it".to_vec(), true, true))
        );
    }

    #[test]
    fn early_eof_is_incomplete() {
        let cut = &NGINX[..NGINX.len() - 1];
        assert_eq!(read(cut, 8, true), Err("incomplete".to_owned()));
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nCont", 8, true),
            Err("incomplete".into())
        );
        assert_eq!(read(b"", 8, true), Err("incomplete".into()));
        let chunk_cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert_eq!(read(chunk_cut, 8, true), Err("incomplete".into()));
    }

    #[test]
    fn malformed_responses_are_rejected() {
        for wire in [
            &b"HTTP/1.1 2OO OK\r\n\r\n"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let r = read(wire, wire.len(), false);
            assert!(
                matches!(&r, Err(e) if e.starts_with("malformed")),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn status_codes_below_100_are_malformed() {
        // httparse reads any three digits; found by the http1_response fuzz target, which
        // saw `050` taken as a final status (and `000` would read as "no head yet").
        for wire in [
            &b"HTTP/1.1 050 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..],
            b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 099 Almost\r\nContent-Length: 0\r\n\r\n",
        ] {
            let r = read(wire, wire.len(), false);
            assert_eq!(
                r,
                Err("malformed HTTP/1.1 response: status code below 100".to_owned()),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let highest = b"HTTP/1.1 999 Custom\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read(highest, 4, false), Ok((999, vec![], false, true)));
    }

    #[test]
    fn interim_responses_are_skipped_and_bodiless_statuses_have_no_body() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(read(wire, 3, false), Ok((204, vec![], false, true)));
        let mut r = ResponseReader::new(true);
        let head = NGINX.len() - 2;
        assert_eq!(r.feed(NGINX, &mut |_: &[u8]| {}), Ok((head, Step::Head)));
        let after = r.feed(&NGINX[head..], &mut |_: &[u8]| {});
        assert_eq!(
            after,
            Ok((0, Step::Done)),
            "a HEAD response ends with its head"
        );
    }

    #[test]
    fn requests_are_serialised_with_host_and_length() {
        let ct = (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        );
        let get = serialize_request(&Method::GET, "/a?b=1", "h:1", &[], b"");
        assert_eq!(get, b"GET /a?b=1 HTTP/1.1\r\nhost: h:1\r\n\r\n");
        let post = serialize_request(&Method::POST, "/p", "h", std::slice::from_ref(&ct), b"{}");
        assert_eq!(
            post,
            &b"POST /p HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\n\
               content-length: 2\r\n\r\n{}"[..]
        );
        let empty_post = serialize_request(&Method::POST, "/p", "h", &[], b"");
        assert!(empty_post.ends_with(b"content-length: 0\r\n\r\n"));
        let host = (HOST, HeaderValue::from_static("other"));
        let te = (TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let chunked = serialize_request(&Method::PUT, "/", "h", &[host, te], b"abc");
        assert_eq!(
            chunked,
            &b"PUT / HTTP/1.1\r\nhost: other\r\ntransfer-encoding: chunked\r\n\r\n\
               3\r\nabc\r\n0\r\n\r\n"[..]
        );
    }
}
