//! One HTTP/1.1 keep-alive connection and the execution of one request on it.
//!
//! Uses hyper's low-level client (`hyper::client::conn::http1`) and drives the connection
//! future in the caller's task (no extra task, no cross-task wake-up per request).
//! Reconnects after an error, a timeout or a close. Errors are classified into
//! [`ErrorKind`]s; nothing here panics on network input.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::counts::{Completion, ErrorKind};
use crate::record::{Outcome, StreamTimes};
use crate::spec::{LoadError, RequestTemplate};
use crate::sse::StreamTracker;

/// A resolved target.
#[derive(Debug)]
pub(crate) struct Target {
    pub addr: SocketAddr,
}

/// A request template made concrete for one target.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    streaming: bool,
}

impl Prepared {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
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
                    let mut headers = HeaderMap::with_capacity(r.headers.len() + 1);
                    headers.insert(
                        HOST,
                        HeaderValue::from_str(authority).map_err(|e| bad(format!("host: {e}")))?,
                    );
                    for (k, v) in &r.headers {
                        headers.append(k.clone(), v.clone());
                    }
                    Ok(Prepared {
                        method: r.method.clone(),
                        uri,
                        headers,
                        body: r.body.clone(),
                        streaming: r.streaming,
                    })
                })
                .collect()
        })
        .collect()
}

type ConnFuture = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

struct Live {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<ConnFuture>>,
    /// The connection future has completed; polling it again is not allowed.
    conn_done: bool,
}

/// A lazily (re)connecting keep-alive connection to one target.
pub(crate) struct Conn {
    target: Arc<Target>,
    live: Option<Live>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Self {
        Conn { target, live: None }
    }

    /// Opens the connection now (before the schedule starts); failures are ignored here
    /// and surface on the first request.
    pub async fn warm(&mut self, timeout: Duration) {
        if let Ok(Ok(live)) = tokio::time::timeout(timeout, connect(self.target.addr)).await {
            self.live = Some(live);
        }
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
        let start = Instant::now();
        let actual = start.saturating_duration_since(t0);
        let intended = intended.unwrap_or(actual);
        let result = tokio::time::timeout(timeout, self.attempt(req, t0)).await;
        let (result, stream) = match result {
            Ok(Ok(stream)) => (Completion::Ok, stream),
            Ok(Err(kind)) => (Completion::Error(kind), None),
            Err(_elapsed) => {
                self.live = None;
                (Completion::Timeout, None)
            }
        };
        Outcome {
            intended,
            actual: Some(actual),
            done: Instant::now().saturating_duration_since(t0),
            result,
            stream,
        }
    }

    async fn attempt(
        &mut self,
        req: &Prepared,
        t0: Instant,
    ) -> Result<Option<StreamTimes>, ErrorKind> {
        let reusable = self.live.as_mut().is_some_and(|l| {
            if !l.conn_done && l.conn.as_mut().now_or_never().is_some() {
                l.conn_done = true;
            }
            !l.conn_done && l.sender.is_ready()
        });
        if !reusable {
            self.live = None;
            self.live = Some(connect(self.target.addr).await?);
        }
        let live = self.live.as_mut().expect("set just above");
        let response = live.sender.send_request(req.request());
        let streaming = req.streaming;
        let exchange = async move {
            let resp = response.await.map_err(|e| classify(&e))?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut tracker = (streaming && status.is_success()).then(StreamTracker::new);
            let mut decode_error = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| match classify(&e) {
                    ErrorKind::Other => ErrorKind::Body,
                    k => k,
                })?;
                if let (Some(t), Ok(data)) = (tracker.as_mut(), frame.into_data()) {
                    if !decode_error {
                        decode_error = t.feed(t0.elapsed(), &data).is_err();
                    }
                }
            }
            if !status.is_success() {
                return Err(ErrorKind::HttpStatus(status.as_u16()));
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
        };
        let result = drive(&mut live.conn, &mut live.conn_done, exchange).await;
        if result.is_err() && !matches!(result, Err(ErrorKind::HttpStatus(_))) {
            self.live = None;
        }
        result
    }
}

/// Polls `work` while also driving the connection future, until `work` completes.
async fn drive<T>(
    conn: &mut Pin<Box<ConnFuture>>,
    conn_done: &mut bool,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    if !*conn_done {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = conn.as_mut() => *conn_done = true,
        }
    }
    // The connection ended (closed or failed); the exchange resolves from what it had.
    work.await
}

async fn connect(addr: SocketAddr) -> Result<Live, ErrorKind> {
    let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        io::ErrorKind::ConnectionReset => ErrorKind::ConnectionReset,
        _ => ErrorKind::Connect,
    })?;
    // Small requests: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ErrorKind::Connect)?;
    Ok(Live {
        sender,
        conn: Box::pin(conn),
        conn_done: false,
    })
}

/// Maps a hyper error to a kind: resets and early closes are `ConnectionReset`.
fn classify(e: &hyper::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => ErrorKind::ConnectionReset,
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                _ => ErrorKind::Other,
            };
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ErrorKind::ConnectionReset
    } else {
        ErrorKind::Other
    }
}
