//! Connections: the accept loop, one hyper HTTP/1.1 connection per socket, and their limits.
//!
//! * **Open connections** are capped at `--max-connections`. A connection beyond the cap is
//!   accepted, answered at once with a `503` (`Retry-After`, `Connection: close`, the
//!   OpenAI-style error body naming the flag) and closed, so a client sees why instead of a
//!   connect timeout; counted in `faultline_connections_rejected_total`.
//! * **Header bytes** held per connection are capped at `--max-header-bytes` (hyper's read
//!   buffer; a larger head gets `431`).
//! * **A request head** must be complete within `--header-read-timeout-s` of its first byte
//!   (of the connection's accept for the first request); **an idle keep-alive connection**
//!   is closed `--keep-alive-timeout-s` after its last response ended. hyper 1 has one timer
//!   for both (its header timer starts when a connection goes idle), so [`ConnClock`], a
//!   sans-IO state machine fed by the socket wrapper and the service, decides instead.
//! * **Drain** ([`DrainSignal`]): idle connections and those still receiving a request head
//!   close at once; connections with a request in flight finish it and close; connections
//!   accepted while draining serve one request (which gets `503`) and close.
//!
//! Every connection task is owned by the accept loop's `JoinSet` and aborted when
//! [`serve`] returns. Not here: TLS, HTTP/2, routes (see [`crate::api`]).

use crate::metrics::Metrics;
use axum::body::{Body, HttpBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits; see the module docs and the `--max-connections`,
/// `--max-header-bytes`, `--header-read-timeout-s` and `--keep-alive-timeout-s` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A request head was not complete within the header read timeout.
    HeaderTimeout,
    /// No request for the keep-alive timeout after the last response.
    IdleTimeout,
    /// The server is draining and the connection had no request in flight.
    Drain,
}

impl CloseReason {
    /// The `reason` label of `faultline_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Drain => "drain",
        }
    }
}

/// What [`ConnClock::decide`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection; ask again at `recheck_at` (never, while a request is in flight)
    /// or when the clock changes.
    Open { recheck_at: Option<Instant> },
    /// Close it now.
    Close(CloseReason),
}

/// Sans-IO timer state of one connection. Inputs: bytes read, request started (head
/// parsed), request finished (response body ended or dropped). Output: [`Verdict`].
#[derive(Debug, Clone)]
pub struct ConnClock {
    /// Requests whose head was parsed and whose response has not ended.
    active: usize,
    /// When the current request head began arriving (the accept, for the first one).
    head_started: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
}

impl ConnClock {
    /// A connection accepted at `now`: its first head is due within the header timeout.
    pub fn accepted(now: Instant) -> Self {
        Self {
            active: 0,
            head_started: Some(now),
            idle_since: now,
        }
    }

    /// Bytes arrived. Returns `true` when this starts a new request head on an idle
    /// connection (the deadline moved earlier: the watcher must recompute).
    pub fn bytes_read(&mut self, now: Instant) -> bool {
        if self.active == 0 && self.head_started.is_none() {
            self.head_started = Some(now);
            return true;
        }
        false
    }

    /// A request head was parsed and handed to the service.
    pub fn request_started(&mut self) {
        self.active += 1;
        self.head_started = None;
    }

    /// A response ended (fully written, or dropped with its connection).
    pub fn request_finished(&mut self, now: Instant) {
        self.active = self.active.saturating_sub(1);
        if self.active == 0 {
            self.idle_since = now;
        }
    }

    /// No request in flight (a partly received head does not count).
    pub fn is_idle(&self) -> bool {
        self.active == 0
    }

    /// Whether the connection may stay open at `now`.
    pub fn decide(&self, now: Instant, limits: &ConnLimits) -> Verdict {
        if self.active > 0 {
            return Verdict::Open { recheck_at: None };
        }
        let (deadline, reason) = match self.head_started {
            Some(t) => (t + limits.header_read_timeout, CloseReason::HeaderTimeout),
            None => (
                self.idle_since + limits.keep_alive_timeout,
                CloseReason::IdleTimeout,
            ),
        };
        if now >= deadline {
            Verdict::Close(reason)
        } else {
            Verdict::Open {
                recheck_at: Some(deadline),
            }
        }
    }
}

/// A [`ConnClock`] shared by a connection's socket wrapper, service and watcher.
#[derive(Debug)]
struct Shared {
    clock: Mutex<ConnClock>,
    /// Woken when a head starts arriving on an idle connection.
    changed: Notify,
}

impl Shared {
    fn clock(&self) -> MutexGuard<'_, ConnClock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The socket, reporting every read to the clock.
struct WatchedIo {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let head_started = self.shared.clock().bytes_read(Instant::now());
            if head_started {
                self.shared.changed.notify_one();
            }
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks a request finished when dropped (with the response body that carries it).
struct RequestGuard(Arc<Shared>);

impl RequestGuard {
    fn start(shared: &Arc<Shared>) -> Self {
        shared.clock().request_started();
        Self(shared.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.clock().request_finished(Instant::now());
        // The idle deadline moved: let the watcher recompute it.
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`RequestGuard`] until hyper drops it.
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tells connections the server is draining.
#[derive(Debug, Clone, Default)]
pub struct DrainSignal(CancellationToken);

impl DrainSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain: see the module docs.
    pub fn start(&self) {
        self.0.cancel();
    }

    fn started(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// The bytes sent to a connection refused by the cap.
fn rejection_response(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": format!(
                "the server has {max_connections} connections open (--max-connections); retry later"
            ),
            "type": "too_many_connections",
            "code": 503,
            "param": null,
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::api::RETRY_AFTER_S,
        body.len()
    )
    .into_bytes()
}

/// Most refused connections being answered at once; beyond it they are closed unanswered.
const MAX_REJECTIONS_IN_FLIGHT: usize = 64;
/// How long a refused connection is read (so its request does not turn the close into a
/// reset that hides the `503`).
const REJECTION_LINGER: Duration = Duration::from_millis(500);

async fn reject(mut stream: TcpStream, response: Arc<[u8]>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let linger = async {
        stream.write_all(&response).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0usize;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REJECTION_LINGER, linger).await;
}

/// Accepts connections on `listener` and serves each with `router` until `stop` is
/// cancelled; then aborts every connection still open and returns.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    drain: DrainSignal,
    stop: CancellationToken,
) {
    let mut conns = JoinSet::new();
    let mut rejections = JoinSet::new();
    let rejection: Arc<[u8]> = rejection_response(limits.max_connections).into();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            Some(_) = rejections.join_next(), if !rejections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // EMFILE/ENFILE and aborted handshakes: back off briefly, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if conns.len() >= limits.max_connections {
                    metrics.connections_rejected.inc();
                    if rejections.len() < MAX_REJECTIONS_IN_FLIGHT {
                        rejections.spawn(reject(stream, rejection.clone()));
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                conns.spawn(serve_connection(
                    stream,
                    router.clone(),
                    limits,
                    metrics.clone(),
                    drain.clone(),
                ));
            }
        }
        metrics.connections_open.set(conns.len() as i64);
    }
    conns.abort_all();
    rejections.abort_all();
    while conns.join_next().await.is_some() {}
    metrics.connections_open.set(0);
}

async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    drain: DrainSignal,
) {
    let shared = Arc::new(Shared {
        clock: Mutex::new(ConnClock::accepted(Instant::now())),
        changed: Notify::new(),
    });
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        shared: shared.clone(),
    });
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = RequestGuard::start(&shared);
            let router = router.clone();
            async move {
                let resp = match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(resp.map(|inner| TrackedBody {
                    inner,
                    _guard: guard,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_header_bytes)
        // Connections opened during a drain answer one request (503) and close.
        .keep_alive(!drain.started())
        // ConnClock owns both timeouts (module docs).
        .header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // A connection accepted during a drain is not closed for it: it answers its one request
    // (keep-alive is off) and closes, as the module docs promise.
    let mut draining = drain.started();
    loop {
        let recheck_at = match shared.clock().decide(Instant::now(), &limits) {
            Verdict::Close(reason) => {
                metrics.connection_closed(reason.label());
                return;
            }
            Verdict::Open { recheck_at } => recheck_at,
        };
        let recheck = async {
            match recheck_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = drain.0.cancelled(), if !draining => {
                draining = true;
                if shared.clock().is_idle() {
                    metrics.connection_closed(CloseReason::Drain.label());
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
            () = shared.changed.notified() => {}
            () = recheck => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 4,
            max_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
        }
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn first_head_is_due_within_the_header_timeout_of_the_accept() {
        let t0 = Instant::now();
        let mut c = ConnClock::accepted(t0);
        assert_eq!(
            c.decide(at(t0, 9), &limits()),
            Verdict::Open {
                recheck_at: Some(at(t0, 10))
            }
        );
        // Bytes of the first head do not move its deadline.
        assert!(!c.bytes_read(at(t0, 5)));
        assert_eq!(
            c.decide(at(t0, 10), &limits()),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn a_request_in_flight_is_never_timed_out_by_the_connection() {
        let t0 = Instant::now();
        let mut c = ConnClock::accepted(t0);
        c.request_started();
        assert_eq!(
            c.decide(at(t0, 3600), &limits()),
            Verdict::Open { recheck_at: None }
        );
        assert!(!c.is_idle());
    }

    #[test]
    fn idle_keep_alive_closes_after_its_timeout_and_a_new_head_restarts_the_header_clock() {
        let t0 = Instant::now();
        let mut c = ConnClock::accepted(t0);
        c.request_started();
        c.request_finished(at(t0, 1));
        assert!(c.is_idle());
        assert_eq!(
            c.decide(at(t0, 30), &limits()),
            Verdict::Open {
                recheck_at: Some(at(t0, 61))
            }
        );
        assert_eq!(
            c.decide(at(t0, 61), &limits()),
            Verdict::Close(CloseReason::IdleTimeout)
        );
        // A head starting at 50 s is due at 60 s, before the idle deadline.
        assert!(c.bytes_read(at(t0, 50)));
        assert!(!c.bytes_read(at(t0, 51)));
        assert_eq!(
            c.decide(at(t0, 55), &limits()),
            Verdict::Open {
                recheck_at: Some(at(t0, 60))
            }
        );
        assert_eq!(
            c.decide(at(t0, 60), &limits()),
            Verdict::Close(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn pipelined_requests_keep_the_connection_busy_until_the_last_ends() {
        let t0 = Instant::now();
        let mut c = ConnClock::accepted(t0);
        c.request_started();
        // Bytes of the next request read while one is in flight start no head clock.
        assert!(!c.bytes_read(at(t0, 1)));
        c.request_started();
        c.request_finished(at(t0, 2));
        assert!(!c.is_idle());
        c.request_finished(at(t0, 3));
        assert_eq!(
            c.decide(at(t0, 4), &limits()),
            Verdict::Open {
                recheck_at: Some(at(t0, 63))
            }
        );
    }

    #[test]
    fn rejection_is_a_complete_http_response_naming_the_flag() {
        let bytes = rejection_response(7);
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains("7 connections") && msg.contains("--max-connections"));
    }
}
