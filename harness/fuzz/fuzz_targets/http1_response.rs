//! The load generator's HTTP/1.1 response reader (`loadgen::fuzzing::read_response`, which
//! drives the private `http1::ResponseReader` as `conn` does, SSE parsing included).
//!
//! Input: one flags byte (bit 0: response to a HEAD request, bit 1: parse the body as SSE,
//! bit 2: the peer closes after the bytes, bits 3–5: how many piece-size bytes follow), the
//! piece sizes, then the bytes on the wire. Besides "never panics" (the driver asserts the
//! reader's contract), it checks that the reading does not depend on how the bytes were cut:
//! in one piece, in the fuzzer's pieces and byte by byte (inputs up to 1 KiB), the outcome
//! is the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loadgen::fuzzing::read_response;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 != 0;
    let streaming = flags & 2 != 0;
    let eof = flags & 4 != 0;
    let n_pieces = usize::from((flags >> 3) & 7).min(rest.len());
    let (pieces, wire) = rest.split_at(n_pieces);
    let pieces: Vec<usize> = pieces.iter().map(|&b| usize::from(b)).collect();

    let whole = read_response(wire, &[], head_request, streaming, eof);
    let cut = read_response(wire, &pieces, head_request, streaming, eof);
    assert_eq!(whole, cut, "one piece vs pieces of {pieces:?}");
    // Byte by byte re-parses a partial head once per byte: quadratic, so short inputs only.
    if wire.len() <= 1024 {
        let bytewise = read_response(wire, &[1], head_request, streaming, eof);
        assert_eq!(whole, bytewise, "one piece vs byte by byte");
    }
});
