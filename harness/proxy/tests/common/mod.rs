//! In-process proxy API servers and peers for the proxy's tests: real sockets on
//! loopback, nothing mocked.
#![allow(dead_code)]

use proxy::{router, ApiConfig, Registry};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Api {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    client: reqwest::Client,
}

impl Api {
    pub async fn start(seed: u64) -> Self {
        Self::start_with(seed, ApiConfig::default()).await
    }

    pub async fn start_with(seed: u64, config: ApiConfig) -> Self {
        let registry = Registry::new(seed);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API");
        let addr = listener.local_addr().expect("API address");
        let app = router(registry.clone(), &config);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            registry,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(PATIENCE)
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request; returns the status and the body parsed as JSON (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(m, self.url(path));
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let r = req.send().await.expect("API answers");
        let status = r.status().as_u16();
        let text = r.text().await.expect("API body");
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Creates a proxy to `upstream` on a free port; returns its address.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let (status, v) = self
            .call(
                "POST",
                "/proxies",
                Some(&format!(
                    r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#
                )),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["listen"]
            .as_str()
            .expect("listen")
            .parse()
            .expect("an address")
    }

    pub async fn toxic(&self, proxy: &str, json: &str) -> Value {
        let (status, v) = self
            .call("POST", &format!("/proxies/{proxy}/toxics"), Some(json))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

/// An echo server: every connection gets back what it sends, then the close.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A minimal HTTP/1.1 server: keep-alive, answers every request `200` with body
/// `hello <path>`, reading request bodies by Content-Length.
pub async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let addr = l.local_addr().expect("http address");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_http(s));
        }
    });
    addr
}

async fn serve_http(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read a head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let len = content_length(&head).unwrap_or(0);
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let body = format!("hello {path}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Waits for `check` to hold (polling), failing after PATIENCE.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The Content-Length of an HTTP message head, if it has one.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}
