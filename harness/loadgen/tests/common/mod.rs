//! Real loopback servers with controllable behaviour, for the load generator's tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

/// A server that stops (listener and every connection closed) when killed or dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub kill: CancellationToken,
}

impl TestServer {
    pub fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().expect("valid uri")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// An HTTP/1.1 keep-alive server calling `handler` for each request.
pub async fn serve<F, Fut>(handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let kill = CancellationToken::new();
    let token = kill.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            // Streamed events must not wait for Nagle + delayed ACK.
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                // Biased: once killed, not one more byte is served.
                tokio::select! {
                    biased;
                    _ = token.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    TestServer { addr, kill }
}

/// A server that accepts, reads the request and then resets the connection.
pub async fn resetting() -> TestServer {
    raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await
}

/// A server that accepts and reads but never answers.
pub async fn silent() -> TestServer {
    raw(|mut s| async move {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

async fn raw<F, Fut>(on_conn: F) -> TestServer
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let kill = CancellationToken::new();
    let token = kill.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            let token = token.clone();
            let fut = on_conn(stream);
            tokio::spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = fut => {}
                }
            });
        }
    });
    TestServer { addr, kill }
}

/// A loopback port with nothing listening.
pub async fn refused_uri() -> Uri {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}").parse().expect("valid uri")
}

/// An OK server answering `ok`.
pub async fn ok_server() -> TestServer {
    serve(|_req| async { full(StatusCode::OK, "ok") }).await
}

/// A streaming body sending `events` SSE data events `gap` apart, then `[DONE]`.
pub fn sse_body(events: usize, gap: Duration) -> Body {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i > events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let chunk = if i < events {
            format!("data: {{\"choices\":[{{\"text\":\"t{i}\"}}]}}\n\n")
        } else {
            "data: [DONE]\n\n".to_owned()
        };
        Some((
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(chunk))),
            i + 1,
        ))
    });
    http_body_util::StreamBody::new(stream).boxed()
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
