//! The trainer's control endpoint (`trainer::control`): the real axum router, started once
//! with `control::start` on a loopback port, sent arbitrary requests over HTTP/1.1, then the
//! training loop's device hooks (`check_alive`, `check_alloc`, `corrupt`, `throttle`) run on
//! the faults the requests left. (The router is private to the trainer, so it is driven through its
//! socket rather than `tower::ServiceExt::oneshot`.)
//!
//! Input: requests separated by a `---` line. Each is `METHOD PATH`, header lines
//! `name: value` up to an empty line, then the body. Bytes that cannot be sent are dropped
//! or percent-encoded, so every input becomes valid HTTP and reaches the router: a method
//! that is not a token becomes `GET`, path bytes other than RFC 3986's (unreserved,
//! sub-delims, `:@/?%`) are percent-encoded, headers with a bad name or value are dropped
//! (and `host`, `content-length`, `transfer-encoding` and `connection`, which the target
//! sets). At most 8 requests and 8 headers each.
//!
//! Checked besides "the trainer never panics": every request gets one valid HTTP/1.1 answer
//! within 10 s and nothing after it; none is a 5xx (but `/readyz`'s 503); a 200 to
//! `POST /faults` is an `ActiveFaults` listing the kind just injected, to `DELETE /faults`
//! an empty one, to `DELETE /faults/{kind}` one without that kind; a 200 to `GET /status`
//! is a `Status` whose `faults_active` are the device's. Routes are compared without the
//! query string, as the router matches them.
//! Event lines go to stdout: run with `-close_fd_mask=1` (run.sh does) to keep them out.

#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use trainer::control::{self, ControlServer, Shared};
use wire::trainer::{ActiveFaults, FaultRequest, GpuFaultKind, Status};

const MAX_REQUESTS: usize = 8;
const MAX_HEADERS: usize = 8;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const SET_BY_TARGET: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

fn endpoint() -> &'static (ControlServer, Shared) {
    static SERVER: OnceLock<(ControlServer, Shared)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let shared = Shared::default();
        let server = control::start("127.0.0.1:0", shared.clone())
            .expect("the control endpoint binds a loopback port");
        (server, shared)
    })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One request of the input, made sendable. Returns the bytes, the method and the path.
///
/// The path must be a valid request target: hyper closes the connection without an answer
/// on some invalid ones (`GET /<` with an HTTP/2 preface in the body).
fn request(block: &[u8]) -> (Vec<u8>, String, String) {
    let (head, body) = match find(block, b"\n\n") {
        Some(i) => (&block[..i], &block[i + 2..]),
        None => (block, &b""[..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b"/"[..]),
    };
    let method = if !method.is_empty() && method.iter().all(|&b| is_token(b)) {
        String::from_utf8_lossy(method).into_owned()
    } else {
        "GET".to_owned()
    };
    let mut path = String::from("/");
    for &b in target.strip_prefix(b"/").unwrap_or(target) {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n").into_bytes();
    for line in lines.take(MAX_HEADERS) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let name_ok = !name.is_empty() && name.iter().all(|&b| is_token(b));
        let value_ok = value.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f);
        let ours = SET_BY_TARGET
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name));
        if name_ok && value_ok && !ours {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    (out, method, path)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request on a fresh connection and reads the answer to its end. `None` when the
/// endpoint reset the connection: it answers a request it has no route for without reading
/// the body, and closing a socket with unread bytes sends a reset, which may discard the
/// answer before it is read. (A panicking handler still shows: libfuzzer-sys aborts the
/// process on a panic in any thread.)
fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("the control endpoint accepts");
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .expect("a read timeout can be set");
    // The endpoint may answer (and close) before reading a body it does not want.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(answer),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("no answer within {ANSWER_TIMEOUT:?}: {e}"),
    }
}

/// `%XX` sequences decoded, anything else (a `%` without two hex digits) kept, as
/// `percent_encoding::percent_decode` does for axum's `Path`.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| char::from(c).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(u8::try_from(hi * 16 + lo).expect("two hex digits make a byte"));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(block: &[u8]) -> &[u8] {
    find(block, b"\n\n").map_or(&b""[..], |i| &block[i + 2..])
}

fuzz_target!(|data: &[u8]| {
    let (server, shared) = endpoint();
    shared.device.heal(None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut blocks = Vec::new();
    let mut rest = data;
    while let Some(i) = find(rest, b"\n---\n") {
        blocks.push(&rest[..i]);
        rest = &rest[i + 5..];
    }
    blocks.push(rest);
    for block in blocks.into_iter().take(MAX_REQUESTS) {
        let (wire, method, path) = request(block);
        let shown = String::from_utf8_lossy(&wire);
        let Some(answer) = exchange(server.addr, &wire) else {
            continue;
        };
        assert!(
            !answer.is_empty(),
            "no answer to {shown:?}: the endpoint closed the connection without one"
        );
        let reading = loadgen::fuzzing::read_response(&answer, &[], method == "HEAD", false, true);
        assert_eq!(
            reading.outcome,
            Ok(true),
            "the answer to {shown:?} is not a complete HTTP/1.1 response: {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            reading.unconsumed,
            0,
            "bytes after the answer to {shown:?}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let status = reading.status;
        // The router matches the path without its query.
        let route = path
            .split_once('?')
            .map_or(path.as_str(), |(route, _)| route);
        assert!(
            status < 500 || (status == 503 && route == "/readyz"),
            "{status} to {shown:?}: {:?}",
            String::from_utf8_lossy(&reading.body)
        );
        if status == 200 && method != "HEAD" {
            if route == "/faults" || route.starts_with("/faults/") {
                let active: ActiveFaults = serde_json::from_slice(&reading.body)
                    .unwrap_or_else(|e| panic!("200 to {shown:?} is not ActiveFaults: {e}"));
                if method == "POST" {
                    let injected: FaultRequest = serde_json::from_slice(body_of(block))
                        .expect("the endpoint accepted the body");
                    assert!(
                        active.active.contains(&injected.kind()),
                        "{:?} injected but not active: {active:?}",
                        injected.kind()
                    );
                } else if method == "DELETE" && route == "/faults" {
                    assert!(
                        active.active.is_empty(),
                        "all healed but still active: {active:?}"
                    );
                } else if let Some(kind) = route.strip_prefix("/faults/") {
                    // The router percent-decodes the `{kind}` segment.
                    let healed: GpuFaultKind = percent_decoded(kind)
                        .parse()
                        .unwrap_or_else(|e| panic!("200 to {shown:?} for no kind: {e}"));
                    assert!(
                        !active.active.contains(&healed),
                        "{healed:?} healed but still active: {active:?}"
                    );
                }
            } else if route == "/status" {
                let status: Status = serde_json::from_slice(&reading.body)
                    .unwrap_or_else(|e| panic!("200 to {shown:?} is not a Status: {e}"));
                assert_eq!(
                    status.device.faults_active,
                    shared.device.active_kinds(),
                    "/status disagrees with the device"
                );
            }
        }
        // One training step's device hooks on the faults now active.
        if shared.device.check_alive().is_ok() {
            let _ = shared.device.check_alloc(1 << 20);
            let mut grads = [0.5f32; 8];
            let _ = shared.device.corrupt(&mut grads, &mut rng);
            // A 1 ns compute phase: the throttle sleeps `factor - 1` ns, under 1 µs within the
            // trainer's bound on the factor (1000); a factor past the bound would stall the
            // fuzzer (a timeout) or overflow (a panic), as 1e300 did before the bound
            // (commit 123a0d8).
            let _ = shared.device.throttle(Duration::from_nanos(1));
        }
    }
});
