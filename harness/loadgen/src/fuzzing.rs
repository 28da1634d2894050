//! Entry points for the cargo-fuzz targets in `harness/fuzz`; not a stable API (hidden from
//! the docs, and nothing in the workspace calls it).
//!
//! The HTTP/1.1 codec (`http1`) is private to this crate, so [`read_response`] drives its
//! response reader the way `conn` does: bytes arrive in pieces, unconsumed bytes are offered
//! again with the next piece, body bytes of a 2xx response go through the SSE
//! [`StreamTracker`] when asked. It checks the reader's contract as it goes (it never claims
//! more bytes than offered, a final status is 200..=999 and never 101) and panics when the
//! contract breaks, so a fuzzer reports it.
//!
//! Not here: sockets or clocks (SSE times are all zero, so readings of the same bytes in
//! different pieces compare equal).

use std::time::Duration;

use crate::http1::{ResponseReader, Step};
use crate::sse::StreamTracker;

/// What reading one response gave; two readings of the same bytes must be equal however the
/// bytes were cut into pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The final status; 0 when no head was read.
    pub status: u16,
    /// Body bytes handed out, in order.
    pub body: Vec<u8>,
    /// Whether the connection must close after this response.
    pub must_close: bool,
    /// `Ok(true)`: complete; `Ok(false)`: more bytes needed; `Err`: malformed (message).
    pub outcome: Result<bool, String>,
    /// With `streaming`, for a 2xx response: the SSE events and token count, or the SSE
    /// decode error.
    pub sse: Option<Result<(u64, u64), String>>,
    /// Bytes not consumed: after a complete response, or a partial unit when more are
    /// needed; 0 for a malformed response.
    pub unconsumed: usize,
}

/// Reads `wire` as the response to one request, delivered in pieces of the sizes in `pieces`
/// (cycled; a 0 means "everything left"; an empty `pieces` delivers `wire` in one piece), then
/// reports the end of the connection when `eof`. `head_request` reads the response to a HEAD
/// request; `streaming` parses a 2xx body as server-sent events, as `conn` does for streaming
/// templates.
///
/// # Panics
/// When the reader breaks its contract (see the module docs): that is the bug a fuzzer finds.
pub fn read_response(
    wire: &[u8],
    pieces: &[usize],
    head_request: bool,
    streaming: bool,
    eof: bool,
) -> Reading {
    let mut reader = ResponseReader::new(head_request);
    let mut tracker: Option<StreamTracker> = None;
    let mut sse_error: Option<String> = None;
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut rest = wire;
    let mut sizes = pieces.iter().copied().cycle();
    let mut outcome = Ok(false);
    'read: while !rest.is_empty() {
        let size = match sizes.next() {
            None | Some(0) => rest.len(),
            Some(n) => n.min(rest.len()),
        };
        pending.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            let mut on_data = |data: &[u8]| {
                body.extend_from_slice(data);
                if let (Some(t), None) = (tracker.as_mut(), &sse_error) {
                    sse_error = t.feed(Duration::ZERO, data).err().map(|e| e.to_string());
                }
            };
            let (n, step) = match reader.feed(&pending, &mut on_data) {
                Ok(fed) => fed,
                Err(e) => {
                    outcome = Err(e.to_string());
                    break 'read;
                }
            };
            assert!(
                n <= pending.len(),
                "the reader consumed {n} bytes of {} offered",
                pending.len()
            );
            pending.drain(..n);
            match step {
                Step::NeedMore => break,
                Step::Head => {
                    let status = reader.status();
                    assert!(
                        (200..=999).contains(&status),
                        "a final head has status {status} (1xx heads are skipped, 101 refused)"
                    );
                    if streaming && (200..300).contains(&status) {
                        tracker = Some(StreamTracker::new());
                    }
                }
                Step::Done => {
                    outcome = Ok(true);
                    break 'read;
                }
            }
        }
    }
    if outcome == Ok(false) && eof && reader.eof().is_ok() {
        outcome = Ok(true);
    }
    let status = reader.status();
    if outcome == Ok(true) {
        assert!(
            (200..=999).contains(&status),
            "a complete response has status {status}"
        );
    }
    assert!(
        body.len() <= wire.len(),
        "{} body bytes from {} bytes on the wire",
        body.len(),
        wire.len()
    );
    let sse = match (tracker, sse_error) {
        (_, Some(e)) => Some(Err(e)),
        (Some(t), None) if outcome == Ok(true) => {
            let events = t.events();
            Some(
                t.finish(Duration::ZERO)
                    .map(|times| (events, times.tokens))
                    .map_err(|e| e.to_string()),
            )
        }
        (Some(t), None) => Some(Ok((t.events(), 0))),
        (None, None) => None,
    };
    let unconsumed = if outcome.is_ok() {
        pending.len() + rest.len()
    } else {
        0
    };
    Reading {
        status,
        body,
        must_close: reader.must_close(),
        outcome,
        sse,
        unconsumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_response_reads_the_same_in_one_piece_and_in_pieces() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            14\r\ndata: {\"a\":1}\n\ndata:\r\n9\r\n [DONE]\n\n\r\n0\r\n\r\nHTTP";
        let whole = read_response(wire, &[], false, true, false);
        assert_eq!(whole.outcome, Ok(true));
        assert_eq!(whole.sse, Some(Ok((1, 1))));
        assert_eq!(whole.unconsumed, 4, "the next response's bytes are left");
        for pieces in [&[1][..], &[3, 0], &[7, 2, 5]] {
            assert_eq!(read_response(wire, pieces, false, true, false), whole);
        }
    }
}
