//! Each toxic's effect on real connections through the proxy, against real peers on
//! loopback. Timing assertions are lower bounds only (a busy machine is only slower).

mod common;

use common::{echo_server, http_server, Api};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn roundtrip(addr: std::net::SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect(addr).await?;
    c.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).await?;
    Ok(got)
}

/// Sends raw HTTP/1.1 requests on one keep-alive connection, reading each response whole
/// (by Content-Length). Returns (status, body) per request; stops at the first read error.
async fn http_exchanges(
    addr: std::net::SocketAddr,
    paths: &[&str],
) -> (Vec<(u16, String)>, Option<std::io::Error>) {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for p in paths {
        let req = format!("GET {p} HTTP/1.1\r\nhost: x\r\n\r\n");
        if let Err(e) = c.write_all(req.as_bytes()).await {
            return (out, Some(e));
        }
        loop {
            if let Some(i) = buf.windows(4).position(|w: &[u8]| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_string();
                let len = common::content_length(&head).unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    let status = head[9..12].parse().expect("status");
                    let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
                    buf.drain(..i + 4 + len);
                    out.push((status, body));
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            match c.read(&mut chunk).await {
                Ok(0) => {
                    return (
                        out,
                        Some(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                    )
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

#[tokio::test]
async fn latency_delays_answers_by_at_least_its_value() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    api.toxic("p", r#"{"type":"latency","attributes":{"latency":150}}"#)
        .await;
    let t0 = Instant::now();
    assert_eq!(roundtrip(addr, b"abc").await.expect("echo"), b"abc");
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn a_toxic_added_to_an_open_connection_acts_on_it() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"1").await.expect("write");
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.expect("echo before");
    api.toxic(
        "p",
        r#"{"type":"latency","stream":"upstream","attributes":{"latency":200}}"#,
    )
    .await;
    let t0 = Instant::now();
    c.write_all(b"2").await.expect("write");
    c.read_exact(&mut b).await.expect("echo after");
    assert_eq!(&b, b"2");
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn timeout_zero_holds_data_until_removed_and_timeout_n_closes_and_a_hole_resets() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    api.toxic("p", r#"{"type":"timeout","attributes":{"timeout":0}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"held").await.expect("write");
    let mut b = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_millis(300), c.read(&mut b)).await;
    assert!(r.is_err(), "nothing comes back while held: {r:?}");
    let (s, _) = api
        .call("DELETE", "/proxies/p/toxics/timeout_downstream", None)
        .await;
    assert_eq!(s, 204);
    // It swallowed "held": resuming would hand the client a stream with a hole, so the
    // connection is reset instead (Toxiproxy resumes silently).
    let e = c.read(&mut b).await.expect_err("reset");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    // A toxic removed before it swallowed anything leaves the connection flowing.
    api.toxic("p", r#"{"type":"timeout","attributes":{"timeout":0}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let (s, _) = api
        .call("DELETE", "/proxies/p/toxics/timeout_downstream", None)
        .await;
    assert_eq!(s, 204);
    c.write_all(b"free").await.expect("write");
    c.read_exact(&mut b).await.expect("flows");
    assert_eq!(&b, b"free");

    api.toxic("p", r#"{"type":"timeout","attributes":{"timeout":100}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    let n = c.read(&mut b).await.expect("a clean close");
    assert_eq!(n, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(90),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn reset_peer_resets_the_client() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    api.toxic("p", r#"{"type":"reset_peer","attributes":{"timeout":50}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut b = [0u8; 4];
    let e = c
        .read(&mut b)
        .await
        .expect_err("a reset, not a clean close");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test]
async fn limit_data_passes_exactly_its_bytes_then_closes() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    api.toxic("p", r#"{"type":"limit_data","attributes":{"bytes":10}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(&[b'x'; 25]).await.expect("write");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    assert_eq!(got, vec![b'x'; 10]);
}

#[tokio::test]
async fn a_disabled_proxy_refuses_and_closes_open_connections() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    let mut open = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(roundtrip(addr, b"ok").await.expect("echo"), b"ok");
    let (s, _) = api
        .call("POST", "/proxies/p", Some(r#"{"enabled":false}"#))
        .await;
    assert_eq!(s, 200);
    let mut b = [0u8; 1];
    let n = open.read(&mut b).await.unwrap_or(0);
    assert_eq!(n, 0, "the open connection is closed");
    assert!(TcpStream::connect(addr).await.is_err(), "new ones refused");
}

#[tokio::test]
async fn a_blackhole_answers_nothing_and_closes_nothing_even_when_the_server_closes() {
    let api = Api::start(1).await;
    // A server that closes each connection right after accepting it.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let addr = api.proxy("p", up).await;
    api.toxic("p", r#"{"type":"blackhole"}"#).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"anyone?").await.expect("accepted and read");
    let mut b = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_millis(500), c.read(&mut b)).await;
    assert!(
        r.is_err(),
        "no answer and no close: only the client's timeout reveals it ({r:?})"
    );
    // Removing the blackhole lets what comes next through: the server's close.
    let (s, _) = api
        .call("DELETE", "/proxies/p/toxics/blackhole_downstream", None)
        .await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn http_error_answers_the_first_n_requests_and_keeps_the_connection_alive() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", http_server().await).await;
    api.toxic(
        "p",
        r#"{"type":"http_error","attributes":{"status":503,"body":"try later","count":2}}"#,
    )
    .await;
    let (got, err) = http_exchanges(addr, &["/a", "/b", "/c", "/d"]).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        got,
        vec![
            (503, "try later".to_owned()),
            (503, "try later".to_owned()),
            (200, "hello /c".to_owned()),
            (200, "hello /d".to_owned()),
        ]
    );
}

#[tokio::test]
async fn http_error_with_toxicity_answers_about_that_share_and_replays_with_the_seed() {
    let run = |seed| async move {
        let api = Api::start(seed).await;
        let addr = api.proxy("p", http_server().await).await;
        api.toxic(
            "p",
            r#"{"type":"http_error","toxicity":0.3,"attributes":{"status":500}}"#,
        )
        .await;
        let paths: Vec<String> = (0..200).map(|i| format!("/{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let (got, err) = http_exchanges(addr, &refs).await;
        assert!(err.is_none(), "{err:?}");
        for (i, (status, body)) in got.iter().enumerate() {
            if *status == 200 {
                assert_eq!(body, &format!("hello /{i}"), "answers stay in order");
            }
        }
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    };
    let a = run(42).await;
    let errors = a.iter().filter(|s| **s == 500).count();
    assert!(
        (30..=90).contains(&errors),
        "{errors} of 200 at toxicity 0.3"
    );
    assert_eq!(a, run(42).await, "the same seed replays the same choices");
}

#[tokio::test]
async fn http_abort_cuts_the_chosen_response_after_its_head_and_some_body() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", http_server().await).await;
    api.toxic(
        "p",
        r#"{"type":"http_abort","attributes":{"after_bytes":3,"count":1}}"#,
    )
    .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /cut HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nhel"),
        "head and 3 body bytes: {text:?}"
    );
    // count = 1: the next connection is whole.
    let (got, err) = http_exchanges(addr, &["/whole"]).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![(200, "hello /whole".to_owned())]);
}

#[tokio::test]
async fn bandwidth_slows_a_transfer_to_its_rate() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    // 100 KB/s: 50,000 bytes take at least ~0.5 s one way.
    api.toxic("p", r#"{"type":"bandwidth","attributes":{"rate":100}}"#)
        .await;
    let data = vec![7u8; 50_000];
    let t0 = Instant::now();
    assert_eq!(roundtrip(addr, &data).await.expect("echo"), data);
    assert!(
        t0.elapsed() >= Duration::from_millis(480),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn an_injected_toxic_heals_when_its_guard_drops() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", echo_server().await).await;
    let t = proxy::toxic::parse_new(br#"{"type":"timeout","attributes":{"timeout":0}}"#)
        .expect("valid");
    let guard = api.registry.inject("p", t).expect("injected");
    assert_eq!(api.registry.toxic_count(), 1);
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), c.read(&mut b))
            .await
            .is_err(),
        "held while injected"
    );
    drop(guard);
    assert_eq!(api.registry.toxic_count(), 0);
    assert_eq!(roundtrip(addr, b"ok").await.expect("healed"), b"ok");
}

#[tokio::test]
async fn http_error_keeps_pipelined_answers_in_request_order() {
    let api = Api::start(3).await;
    let addr = api.proxy("p", http_server().await).await;
    api.toxic(
        "p",
        r#"{"type":"http_error","toxicity":0.5,"attributes":{"status":502,"body":"x"}}"#,
    )
    .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    // 60 requests in one write (pipelined), some with bodies.
    let mut all = String::new();
    for i in 0..60 {
        if i % 3 == 0 {
            all.push_str(&format!(
                "POST /{i} HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
            ));
        } else {
            all.push_str(&format!("GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n"));
        }
    }
    c.write_all(all.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    while statuses.len() < 60 {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(common::PATIENCE, c.read(&mut chunk))
            .await
            .expect("answers keep coming")
            .expect("read");
        assert!(n > 0, "closed after {} answers", statuses.len());
        buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let len = common::content_length(&head).expect("content-length");
            if buf.len() < i + 4 + len {
                break;
            }
            let status: u16 = head[9..12].parse().expect("status");
            let body = String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string();
            let k = statuses.len();
            if status == 200 {
                assert_eq!(body, format!("hello /{k}"), "answer {k} out of order");
            } else {
                assert_eq!((status, body.as_str()), (502, "x"));
            }
            statuses.push(status);
            buf.drain(..i + 4 + len);
        }
    }
    let errors = statuses.iter().filter(|s| **s == 502).count();
    assert!(
        (10..=50).contains(&errors),
        "{errors} of 60 at toxicity 0.5"
    );
}

/// A runner that embeds the proxy and panics leaves no listener behind: unwinding drops
/// the registry and the runtime, and with them every socket.
#[test]
fn a_panicking_embedder_leaves_no_listener() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let api = Api::start(1).await;
            let addr = api.proxy("p", echo_server().await).await;
            api.toxic("p", r#"{"type":"blackhole"}"#).await;
            let _held = TcpStream::connect(addr).await.expect("connect");
            tx.send(addr).expect("send");
            panic!("the embedding runner fails");
        })
    });
    let addr = rx.recv().expect("the proxy was up");
    assert!(t.join().is_err(), "the thread panicked");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener outlived the panic"
    );
}

/// HTTP framing costs nothing until an HTTP toxic exists; added while a keep-alive
/// connection is open, it acts from that connection's next request.
#[tokio::test]
async fn http_error_added_to_an_open_keep_alive_connection_acts_on_its_next_request() {
    let api = Api::start(1).await;
    let addr = api.proxy("p", http_server().await).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        ask_once(&mut c, "/one").await,
        ("200".into(), "hello /one".into())
    );
    api.toxic(
        "p",
        r#"{"type":"http_error","attributes":{"status":503,"body":"later","count":1}}"#,
    )
    .await;
    assert_eq!(
        ask_once(&mut c, "/two").await,
        ("503".into(), "later".into())
    );
    assert_eq!(
        ask_once(&mut c, "/three").await,
        ("200".into(), "hello /three".into())
    );
}

/// Sends one GET and reads its answer whole (by Content-Length): (status, body).
async fn ask_once(c: &mut TcpStream, path: &str) -> (String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    c.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = common::content_length(head).expect("length");
            if body.len() >= len {
                return (head[9..12].to_owned(), body.to_owned());
            }
        }
    }
}
