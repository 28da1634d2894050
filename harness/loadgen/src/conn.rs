//! One HTTP/1.1 keep-alive connection and the execution of one request on it.
//!
//! A lean client, in the caller's task: each template's request is serialised once
//! ([`prepare`]), written with one `write` per send, and the response is read into a
//! buffer reused for the connection's life and parsed by the sans-IO
//! [`ResponseReader`](crate::http1::ResponseReader) (`httparse` for the head; body by
//! `Content-Length`, chunked encoding or close). Streaming bodies are fed to the
//! [`StreamTracker`] per read, so each SSE event is timed when its bytes arrive. The
//! bytes of every read are added to the request's `bytes_read` (one add per read), also
//! when the request then fails or times out.
//! Reconnects after an error, a timeout, `Connection: close`, or a close by the server
//! while idle (checked, without blocking, before each send). Errors are classified into
//! [`ErrorKind`]s; nothing here panics on network input.
//!
//! Replaces hyper's client connection, whose request and body channels cost about 20%
//! more CPU per request than wrk on a trivial response.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::counts::{Completion, ErrorKind};
use crate::http1::{serialize_request, ResponseReader, Step, MAX_HEAD_BYTES};
use crate::record::{Outcome, StreamTimes};
use crate::spec::{LoadError, RequestTemplate};
use crate::sse::StreamTracker;

/// Initial size of a connection's read buffer; it grows (up to the largest head
/// accepted) only for a head that does not fit.
const READ_BUF_BYTES: usize = 16 * 1024;

/// A resolved target.
#[derive(Debug)]
pub(crate) struct Target {
    pub addr: SocketAddr,
}

/// A request template made concrete for one target: its bytes on the wire.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    wire: Arc<[u8]>,
    /// A HEAD request: the response has no body whatever its headers say.
    head: bool,
    streaming: bool,
}

/// Resolves every base URL to one socket address.
pub(crate) async fn resolve(targets: &[Uri]) -> Result<Vec<Arc<Target>>, LoadError> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let authority = t.authority().map(|a| a.as_str()).unwrap_or_default();
        let host_port = if t.port().is_some() {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&host_port)
            .await
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses"))
            })
            .map_err(|source| LoadError::Resolve {
                target: t.to_string(),
                source,
            })?;
        out.push(Arc::new(Target { addr }));
    }
    Ok(out)
}

/// `[target][template]` concrete requests (origin-form URI, `host` header).
pub(crate) fn prepare(
    targets: &[Uri],
    templates: &[RequestTemplate],
) -> Result<Vec<Vec<Prepared>>, LoadError> {
    targets
        .iter()
        .map(|t| {
            templates
                .iter()
                .map(|r| {
                    let bad = |reason: String| LoadError::BadRequest {
                        template: r.name.clone(),
                        target: t.to_string(),
                        reason,
                    };
                    let base = t.path().trim_end_matches('/');
                    let uri: Uri = format!("{base}{}", r.path)
                        .parse()
                        .map_err(|e| bad(format!("path: {e}")))?;
                    let authority = t.authority().map(|a| a.as_str()).unwrap_or_default();
                    http::HeaderValue::from_str(authority)
                        .map_err(|e| bad(format!("host: {e}")))?;
                    let origin_form = uri.path_and_query().map_or("/", |p| p.as_str());
                    Ok(Prepared {
                        wire: serialize_request(
                            &r.method,
                            origin_form,
                            authority,
                            &r.headers,
                            &r.body,
                        )
                        .into(),
                        head: r.method == Method::HEAD,
                        streaming: r.streaming,
                    })
                })
                .collect()
        })
        .collect()
}

/// How far [`Conn::try_send`] got with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handover {
    /// Nothing written: the request is executed from the start (connecting if needed).
    NotSent,
    /// Its first `written` bytes (possibly 0: a full socket buffer) were written at `at`,
    /// the request's send instant.
    Sent { at: Instant, written: usize },
    /// The write failed at `at`: the request failed with `kind` and the connection is
    /// dropped (the next request reconnects).
    Failed { at: Instant, kind: ErrorKind },
}

/// A lazily (re)connecting keep-alive connection to one target.
pub(crate) struct Conn {
    target: Arc<Target>,
    stream: Option<TcpStream>,
    /// Read buffer, reused across requests and reconnects.
    buf: Vec<u8>,
    /// Request timeout timer, armed at or before the current request's deadline and
    /// moved later only when it fires early (see [`expired`]), so a request that
    /// finishes in time does not touch the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Self {
        Conn {
            target,
            stream: None,
            buf: vec![0; READ_BUF_BYTES],
            timer: None,
        }
    }

    /// Opens the connection now, before it carries a request. A failure leaves it closed
    /// (the first request connects again and fails visibly); it is returned so that the
    /// generator's own failures ([`ErrorKind::GeneratorResources`]) can stop a run or the
    /// pool's growth. A connect that takes longer than `timeout` is `Connect`.
    pub async fn warm(&mut self, timeout: Duration) -> Result<(), ErrorKind> {
        match tokio::time::timeout(timeout, connect(self.target.addr)).await {
            Ok(Ok(stream)) => {
                self.stream = Some(stream);
                Ok(())
            }
            Ok(Err(kind)) => Err(kind),
            Err(_) => Err(ErrorKind::Connect),
        }
    }

    /// Whether the connection is open (it may still have been closed by the peer).
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Sends one request and reads the whole response, within `timeout` of the actual
    /// send. `t0` is the run's origin; `intended` the intended send offset, or `None`
    /// for "now" (closed loop: intended = actual, no send lag).
    pub async fn execute(
        &mut self,
        req: &Prepared,
        t0: Instant,
        intended: Option<Duration>,
        timeout: Duration,
    ) -> Outcome {
        self.execute_sent(req, t0, intended, Handover::NotSent, timeout)
            .await
    }

    /// Writes `req` at once if this connection can take it without waiting: it is open,
    /// the server has not closed it or sent anything unasked, and the socket accepts
    /// bytes now. The open loop sends this way at the due instant, on the thread that
    /// releases the request, instead of handing it to the connection's task first.
    /// [`execute_sent`](Conn::execute_sent) then finishes the write if it was partial
    /// and reads the response. A connection that is not open (or was closed by the
    /// server while idle) is [`Handover::NotSent`], and `execute_sent` connects first.
    pub fn try_send(&mut self, req: &Prepared) -> Handover {
        let Some(stream) = self.stream.as_ref() else {
            return Handover::NotSent;
        };
        if !idle_and_open(stream, &mut self.buf) {
            self.stream = None;
            return Handover::NotSent;
        }
        let at = Instant::now();
        match stream.try_write(&req.wire) {
            Ok(written) => Handover::Sent { at, written },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Handover::Sent { at, written: 0 },
            Err(e) => {
                self.stream = None;
                Handover::Failed {
                    at,
                    kind: io_kind(&e, ErrorKind::Other),
                }
            }
        }
    }

    /// [`execute`](Conn::execute) for a request that [`try_send`](Conn::try_send) may
    /// have started: the send instant is the handover's, and its unwritten bytes are
    /// written first.
    pub async fn execute_sent(
        &mut self,
        req: &Prepared,
        t0: Instant,
        intended: Option<Duration>,
        handover: Handover,
        timeout: Duration,
    ) -> Outcome {
        let (start, written) = match handover {
            Handover::NotSent => (Instant::now(), None),
            Handover::Sent { at, written } => (at, Some(written)),
            Handover::Failed { at, kind } => {
                let actual = at.saturating_duration_since(t0);
                return Outcome {
                    intended: intended.unwrap_or(actual),
                    actual: Some(actual),
                    done: Instant::now().saturating_duration_since(t0),
                    result: Completion::Error(kind),
                    stream: None,
                    bytes_read: 0,
                };
            }
        };
        let actual = start.saturating_duration_since(t0);
        let intended = intended.unwrap_or(actual);
        let deadline = tokio::time::Instant::from_std(start + timeout);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Outside the request future, so a timeout keeps the count of what was read.
        let mut bytes_read = 0u64;
        let work = attempt(
            &mut self.stream,
            &mut self.buf,
            &self.target,
            req,
            written,
            t0,
            &mut bytes_read,
        );
        // Biased: a response complete when the deadline passes is not a timeout (as
        // with `tokio::time::timeout`).
        let result = tokio::select! {
            biased;
            r = work => Some(r),
            () = expired(timer, deadline) => None,
        };
        let (result, stream) = match result {
            Some(Ok(stream)) => (Completion::Ok, stream),
            Some(Err(kind)) => (Completion::Error(kind), None),
            None => {
                self.stream = None;
                (Completion::Timeout, None)
            }
        };
        Outcome {
            intended,
            actual: Some(actual),
            done: Instant::now().saturating_duration_since(t0),
            result,
            stream,
            bytes_read,
        }
    }
}

/// Resolves when `deadline` has passed. The timer is only re-armed when it fires before
/// the deadline (it was set for an earlier request) or is set later than the deadline.
async fn expired(timer: &mut Pin<Box<Sleep>>, deadline: tokio::time::Instant) {
    loop {
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().await;
        if timer.deadline() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// One request on `stream`, (re)connecting first if needed; drops the connection when
/// it cannot carry the next request.
async fn attempt(
    stream: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
    target: &Target,
    req: &Prepared,
    written: Option<usize>,
    t0: Instant,
    bytes_read: &mut u64,
) -> Result<Option<StreamTimes>, ErrorKind> {
    // A request handed over part-written goes on the connection that took its first bytes.
    let written = match (written, stream.is_some()) {
        (Some(w), true) => w,
        _ => {
            if !stream.as_ref().is_some_and(|s| idle_and_open(s, buf)) {
                *stream = None;
                *stream = Some(connect(target.addr).await?);
            }
            0
        }
    };
    let live = stream.as_mut().expect("set just above");
    let (result, keep) = exchange(live, buf, req, written, t0, bytes_read).await;
    if !keep {
        *stream = None;
    }
    result
}

/// Whether an idle keep-alive connection is still usable: the server has neither
/// closed it nor sent anything unasked. Does not block, and costs no syscall unless
/// the socket became readable since the last read (tokio clears read readiness after a
/// read shorter than the buffer, which is how a response's last read usually ends).
fn idle_and_open(stream: &TcpStream, buf: &mut [u8]) -> bool {
    matches!(stream.try_read(buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Writes the request and reads the response, adding what each read returned to
/// `bytes_read`. Returns the result and whether the connection can carry the next request.
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    req: &Prepared,
    written: usize,
    t0: Instant,
    bytes_read: &mut u64,
) -> (Result<Option<StreamTimes>, ErrorKind>, bool) {
    let rest = req.wire.get(written..).unwrap_or_default();
    if let Err(e) = stream.write_all(rest).await {
        return (Err(io_kind(&e, ErrorKind::Other)), false);
    }
    let mut reader = ResponseReader::new(req.head);
    let mut tracker: Option<StreamTracker> = None;
    let mut decode_error = false;
    // Arrival time of the bytes in `buf`, read once per read when streaming.
    let mut now = Duration::ZERO;
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        loop {
            let mut on_data = |data: &[u8]| {
                if let Some(t) = tracker.as_mut() {
                    if !decode_error {
                        decode_error = t.feed(now, data).is_err();
                    }
                }
            };
            match reader.feed(&buf[start..end], &mut on_data) {
                Ok((n, step)) => {
                    start += n;
                    match step {
                        Step::NeedMore => break,
                        Step::Head => {
                            if req.streaming && (200..300).contains(&reader.status()) {
                                tracker = Some(StreamTracker::new());
                            }
                        }
                        Step::Done => {
                            // Bytes after the response were not asked for: do not reuse.
                            let keep = !reader.must_close() && start == end;
                            return (finish(reader.status(), tracker, decode_error, t0), keep);
                        }
                    }
                }
                Err(_malformed) => return (Err(ErrorKind::Decode), false),
            }
        }
        // Need more bytes: make room after the unread ones.
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
            if end == buf.len() {
                if buf.len() >= MAX_HEAD_BYTES {
                    return (Err(ErrorKind::Decode), false);
                }
                buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
            }
        }
        match stream.read(&mut buf[end..]).await {
            Ok(0) => {
                return match reader.eof() {
                    Ok(()) => (finish(reader.status(), tracker, decode_error, t0), false),
                    // Closed before the response was complete (hyper: incomplete message).
                    Err(_incomplete) => (Err(ErrorKind::ConnectionReset), false),
                };
            }
            Ok(n) => {
                end += n;
                *bytes_read += n as u64;
                if req.streaming {
                    now = t0.elapsed();
                }
            }
            Err(e) => {
                let other = if reader.head_done() {
                    ErrorKind::Body
                } else {
                    ErrorKind::Other
                };
                return (Err(io_kind(&e, other)), false);
            }
        }
    }
}

/// The result of a completely read response.
fn finish(
    status: u16,
    tracker: Option<StreamTracker>,
    decode_error: bool,
    t0: Instant,
) -> Result<Option<StreamTimes>, ErrorKind> {
    if !(200..300).contains(&status) {
        return Err(ErrorKind::HttpStatus(status));
    }
    if decode_error {
        return Err(ErrorKind::Decode);
    }
    match tracker {
        Some(t) => t
            .finish(t0.elapsed())
            .map(Some)
            .map_err(|_| ErrorKind::Decode),
        None => Ok(None),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ErrorKind> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_kind(&e))?;
    // Small requests: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Maps a failed connect: the target refused or reset it, or the generator lacked the
/// descriptors, ports or buffers to make it (its own failure), or anything else.
fn connect_kind(e: &io::Error) -> ErrorKind {
    use nix::errno::Errno;
    let local = [
        Errno::EMFILE,
        Errno::ENFILE,
        Errno::EADDRNOTAVAIL,
        Errno::ENOBUFS,
    ];
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        io::ErrorKind::ConnectionReset => ErrorKind::ConnectionReset,
        _ if e
            .raw_os_error()
            .is_some_and(|n| local.contains(&Errno::from_raw(n))) =>
        {
            ErrorKind::GeneratorResources
        }
        _ => ErrorKind::Connect,
    }
}

/// Maps an I/O error on an open connection: resets and early closes are
/// `ConnectionReset`, anything else `other`.
fn io_kind(e: &io::Error, other: ErrorKind) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        _ => other,
    }
}

#[cfg(test)]
mod tests {
    //! The socket shell over real loopback connections; parsing details are in `http1`.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A server answering each request on a connection with the next of `responses`
    /// (written in the given pieces), closing the connection when they run out.
    /// Reports each closed connection on the returned channel; counts accepts.
    async fn canned(
        responses: Vec<Vec<&'static [u8]>>,
    ) -> (Arc<Target>, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let count = accepts.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_nodelay(true);
                let (responses, closed) = (responses.clone(), closed_tx.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    for pieces in responses {
                        if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                            break;
                        }
                        for p in pieces {
                            let _ = s.write_all(p).await;
                        }
                    }
                    drop(s);
                    let _ = closed.send(());
                });
            }
        });
        (Arc::new(Target { addr }), accepts, closed_rx)
    }

    fn get(streaming: bool) -> Prepared {
        let target: Uri = "http://127.0.0.1:1".parse().expect("uri");
        let mut t = RequestTemplate::get("/");
        t.streaming = streaming;
        prepare(&[target], &[t]).expect("valid").remove(0).remove(0)
    }

    async fn run(conn: &mut Conn, req: &Prepared) -> Completion {
        let t0 = Instant::now();
        conn.execute(req, t0, None, Duration::from_secs(5))
            .await
            .result
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn keep_alive_reuses_one_connection() {
        let (target, accepts, _closed) = canned(vec![vec![OK]; 3]).await;
        let mut conn = Conn::new(target);
        for _ in 0..3 {
            assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_sent_at_handover_is_finished_on_the_same_connection() {
        let (target, accepts, mut closed) = canned(vec![vec![OK]; 3]).await;
        let mut conn = Conn::new(target);
        let req = get(false);
        let t0 = Instant::now();
        let long = Duration::from_secs(30);
        // Not connected yet: nothing is written, and the worker connects.
        assert_eq!(conn.try_send(&req), Handover::NotSent);
        let first = conn
            .execute_sent(&req, t0, None, Handover::NotSent, long)
            .await;
        assert_eq!(first.result, Completion::Ok);
        // Open and idle: the whole request goes out at once, and its send instant is the
        // handover's.
        let sent = conn.try_send(&req);
        let Handover::Sent { at, written } = sent else {
            panic!("an idle open connection takes the request: {sent:?}");
        };
        assert_eq!(written, req.wire.len());
        let second = conn.execute_sent(&req, t0, None, sent, long).await;
        assert_eq!(second.result, Completion::Ok);
        assert_eq!(second.actual, Some(at.saturating_duration_since(t0)));
        // Handed over with nothing written yet (a full socket buffer): the worker writes
        // it all, on the same connection.
        let third = conn
            .execute_sent(
                &req,
                t0,
                None,
                Handover::Sent {
                    at: Instant::now(),
                    written: 0,
                },
                long,
            )
            .await;
        assert_eq!(third.result, Completion::Ok);
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
        // The server closed it after three answers: the next handover writes nothing.
        closed.recv().await.expect("server closed the connection");
        assert_eq!(conn.try_send(&req), Handover::NotSent);
    }

    #[tokio::test]
    async fn connection_close_is_ok_and_the_next_request_reconnects() {
        let close: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        let (target, accepts, _closed) = canned(vec![vec![close], vec![OK]]).await;
        let mut conn = Conn::new(target);
        assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_before_sending() {
        let (target, accepts, mut closed) = canned(vec![vec![OK]]).await;
        let mut conn = Conn::new(target);
        assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        closed
            .recv()
            .await
            .expect("server closed the first connection");
        assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn malformed_response_is_decode_and_early_eof_is_connection_reset() {
        let (target, _, _closed) = canned(vec![vec![b"HTTP/1.1 2x0 OK\r\n\r\n"]]).await;
        let got = run(&mut Conn::new(target), &get(false)).await;
        assert_eq!(got, Completion::Error(ErrorKind::Decode));
        let cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok";
        let (target, _, _closed) = canned(vec![vec![cut]]).await;
        let got = run(&mut Conn::new(target), &get(false)).await;
        assert_eq!(got, Completion::Error(ErrorKind::ConnectionReset));
        let (target, _, _closed) = canned(vec![vec![b"HTTP/1.1 200 OK\r\nContent-"]]).await;
        let got = run(&mut Conn::new(target), &get(false)).await;
        assert_eq!(got, Completion::Error(ErrorKind::ConnectionReset));
    }

    #[tokio::test]
    async fn error_status_reads_the_body_and_keeps_the_connection() {
        let e503: &[u8] = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy";
        let (target, accepts, _closed) = canned(vec![vec![e503], vec![OK]]).await;
        let mut conn = Conn::new(target);
        let got = run(&mut conn, &get(false)).await;
        assert_eq!(got, Completion::Error(ErrorKind::HttpStatus(503)));
        assert_eq!(run(&mut conn, &get(false)).await, Completion::Ok);
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_shorter_timeout_after_a_longer_one_fires_at_its_own_deadline_and_reconnects() {
        // The second request is read but never answered (the third never comes).
        let (target, _, _closed) = canned(vec![vec![OK], vec![], vec![]]).await;
        let mut conn = Conn::new(target);
        let t0 = Instant::now();
        let first = conn
            .execute(&get(false), t0, None, Duration::from_secs(60))
            .await;
        assert_eq!(first.result, Completion::Ok);
        // The timer armed for the first request's 60 s deadline must be pulled in.
        let req = get(false);
        let second = conn.execute(&req, t0, None, Duration::from_millis(50));
        let second = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("timed out at its own deadline, not the earlier request's");
        assert_eq!(second.result, Completion::Timeout);
        // The timed-out connection was dropped; a fresh one answers.
        let third = conn.execute(&req, t0, None, Duration::from_secs(60)).await;
        assert_eq!(third.result, Completion::Ok);
    }

    #[tokio::test]
    async fn every_byte_read_is_counted_for_ok_failed_and_timed_out_requests() {
        let e503: &[u8] = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy";
        let partial: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok";
        // The third response is written in two pieces; the fourth never ends (the server
        // then waits for a fifth request that never comes).
        let (target, _, _closed) = canned(vec![
            vec![OK],
            vec![e503],
            vec![&OK[..10], &OK[10..]],
            vec![partial],
            vec![],
        ])
        .await;
        let mut conn = Conn::new(target);
        let t0 = Instant::now();
        let req = get(false);
        let long = Duration::from_secs(30);
        let ok = conn.execute(&req, t0, None, long).await;
        assert_eq!(
            (ok.result, ok.bytes_read),
            (Completion::Ok, OK.len() as u64)
        );
        let failed = conn.execute(&req, t0, None, long).await;
        assert_eq!(failed.result, Completion::Error(ErrorKind::HttpStatus(503)));
        assert_eq!(failed.bytes_read, e503.len() as u64);
        let pieces = conn.execute(&req, t0, None, long).await;
        assert_eq!(pieces.bytes_read, OK.len() as u64);
        // Timed out with its head and 2 of its 10 body bytes read (2 s is ample for
        // loopback bytes already written to arrive).
        let cut = conn.execute(&req, t0, None, Duration::from_secs(2)).await;
        assert_eq!(cut.result, Completion::Timeout);
        assert_eq!(cut.bytes_read, partial.len() as u64);
    }

    #[tokio::test]
    async fn chunked_sse_in_pieces_counts_every_event() {
        let pieces: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n",
            b"Transfer-Encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n",
            b"17\r\ndata: b\n\ndata: [D",
            b"ONE]\n\n\r\n0\r\n\r\n",
        ];
        let (target, _, _closed) = canned(vec![pieces]).await;
        let t0 = Instant::now();
        let out = Conn::new(target)
            .execute(&get(true), t0, None, Duration::from_secs(5))
            .await;
        assert_eq!(out.result, Completion::Ok);
        let stream = out.stream.expect("stream timings");
        assert_eq!(stream.tokens, 2);
        assert_eq!(stream.itl_us.len(), 1);
        assert!(stream.first_token.is_some());
    }
}
