//! The server under real clients' load and abuse: memory stays flat under concurrent
//! completions, connections are capped and timed out, requests have deadlines, and a
//! client that leaves frees its batch slot. Real `server` processes on loopback.

mod common;

use common::{client, eventually, metric, metrics_text, sse_data, ServerProcess};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set size of `pid`, bytes (`VmRSS` in `/proc/PID/status`).
fn rss_bytes(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// Reads until the peer closes (EOF or reset); returns what arrived. Fails the test after
/// `patience`.
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(patience, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server did not close the connection within {patience:?}"));
    out
}

/// `clients` concurrent closed-loop clients, half streaming, send `per_client` completions
/// each; every one must succeed with all its tokens.
async fn completion_clients(s: &ServerProcess, clients: usize, per_client: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..clients {
        let url = s.url("/v1/completions");
        tasks.spawn(async move {
            let c = client();
            for i in 0..per_client {
                let stream = k % 2 == 0;
                let body = json!({
                    "model": "tiny-lm",
                    "prompt": format!("c{k} r{i}: once"),
                    "max_tokens": 24,
                    "temperature": 0.8,
                    "stream": stream,
                });
                let r = c.post(&url).json(&body).send().await.expect("sent");
                assert_eq!(r.status(), 200, "client {k} request {i}");
                let text = r.text().await.expect("body");
                if stream {
                    let events = sse_data(&text);
                    // Bytes of one UTF-8 character travel in one chunk: at most 24 chunks.
                    assert!(
                        (2..=25).contains(&events.len()),
                        "24 tokens and [DONE]: {text}"
                    );
                    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                } else {
                    let v: Value = serde_json::from_str(&text).expect("json");
                    assert_eq!(v["usage"]["completion_tokens"], 24, "{v}");
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client task");
    }
}

/// The crash users hit: eight concurrent completion clients grew the server to 4 GB and
/// aborted it. 2,400 completions (half streamed) from 12 clients must leave RSS within
/// 50 MB of where it stood after a warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_completions_keep_server_memory_flat() {
    let s = ServerProcess::start(&["--model", "tiny-lm=lm"], &[]);
    completion_clients(&s, 12, 20).await;
    let warm = rss_bytes(s.pid());
    completion_clients(&s, 12, 200).await;
    let after = rss_bytes(s.pid());
    let growth = after.saturating_sub(warm);
    assert!(
        growth <= 50 << 20,
        "RSS grew by {} MB over 2,400 completions ({} MB → {} MB)",
        growth >> 20,
        warm >> 20,
        after >> 20
    );
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(
            &m,
            "faultline_requests_total{model=\"tiny-lm\",status=\"200\"}"
        ),
        Some(2640.0)
    );
    assert_eq!(
        client()
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
}

/// Slowloris: half-sent request heads are closed after the header read timeout, and do not
/// hold the drain.
#[tokio::test]
async fn half_sent_request_heads_are_closed_after_the_header_read_timeout() {
    let s = ServerProcess::start(&["--header-read-timeout-s", "1"], &[]);
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        c.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
            .await
            .expect("write");
        conns.push(c);
    }
    for c in &mut conns {
        let got = read_until_closed(c, Duration::from_secs(30)).await;
        assert!(got.is_empty(), "no answer to a half-sent head: {got:?}");
    }
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(
            &m,
            "faultline_connections_closed_total{reason=\"header_timeout\"}"
        ),
        Some(50.0)
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_keep_alive_timeout() {
    let s = ServerProcess::start(&["--keep-alive-timeout-s", "1"], &[]);
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    for _ in 0..3 {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "kept alive between requests"
        );
    }
    let got = read_until_closed(&mut c, Duration::from_secs(30)).await;
    assert!(got.is_empty());
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(
            &m,
            "faultline_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_naming_the_flag() {
    let s = ServerProcess::start(&["--max-connections", "4"], &[]);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut extra = TcpStream::connect(s.addr).await.expect("connect");
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let reply = read_until_closed(&mut extra, Duration::from_secs(30)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 1"),
        "{reply}"
    );
    assert!(reply.contains("--max-connections"), "{reply}");
    // Freeing one connection makes room again.
    drop(held.pop());
    let c = client();
    let url = s.url("/healthz");
    eventually(
        Duration::from_secs(30),
        "a connection is accepted again",
        || {
            let c = c.clone();
            let url = url.clone();
            async move {
                let r = c.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        },
    )
    .await;
    // Over the pooled connection: a new one could be refused (4 are open).
    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert!(
        metric(&m, "faultline_connections_rejected_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_head_larger_than_max_header_bytes_gets_431() {
    let s = ServerProcess::start(&["--max-header-bytes", "8192"], &[]);
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    let big = "a".repeat(20_000);
    c.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let reply = read_until_closed(&mut c, Duration::from_secs(30)).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// A half-sent request used to hold a SIGTERM drain for the whole drain timeout.
#[tokio::test]
async fn sigterm_drain_does_not_wait_for_half_sent_requests_or_idle_connections() {
    let mut s = ServerProcess::start(&["--drain-timeout-s", "600"], &[]);
    let mut conns = Vec::new();
    for i in 0..20 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        if i % 2 == 0 {
            c.write_all(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        conns.push(c);
    }
    // Every connection is accepted before the signal.
    eventually(Duration::from_secs(30), "20 connections open", || {
        let s = &s;
        async move {
            let m = metrics_text(s).await;
            (metric(&m, "faultline_connections_open")? >= 21.0).then_some(())
        }
    })
    .await;
    s.sigterm();
    // Far less than the 600 s drain timeout: nothing is in flight.
    let status = s.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    for c in &mut conns {
        read_until_closed(c, Duration::from_secs(5)).await;
    }
}

/// A request stuck behind a wedged engine gets a 504 in the route's error shape when its
/// deadline passes, on every model route; a stream ends with an error event.
#[tokio::test]
async fn requests_behind_a_wedged_engine_get_504_at_their_deadline() {
    let s = ServerProcess::start(
        &[
            "--request-timeout-s",
            "1",
            "--fault-stall-engine-after",
            "0",
            // Keep the health check quiet so requests are admitted and wait.
            "--engine-stall-threshold-s",
            "600",
        ],
        &[],
    );
    let c = client();
    let infer = c
        .post(s.url("/v2/models/mlp/infer"))
        .json(&common::infer_body(1, 256))
        .send()
        .await
        .expect("sent");
    assert_eq!(infer.status(), 504);
    // `/v2` routes answer in KServe's shape: `{"error": "message"}`.
    let v: Value = infer.json().await.expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|m| m.contains("--request-timeout-s")),
        "{v}"
    );
    let completion = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tiny-lm", "prompt": "hi", "max_tokens": 4}))
        .send()
        .await
        .expect("sent");
    assert_eq!(completion.status(), 504);
    let stream = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tiny-lm", "prompt": "hi", "max_tokens": 4, "stream": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        stream.status(),
        200,
        "a stream's head is sent once admitted"
    );
    let events = sse_data(&stream.text().await.expect("body"));
    assert_eq!(events.len(), 2, "{events:?}");
    let err: Value = serde_json::from_str(&events[0]).expect("error event");
    assert_eq!(err["error"]["code"], 504, "{err}");
    assert_eq!(events[1], "[DONE]");
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(&m, "faultline_requests_total{model=\"mlp\",status=\"504\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "faultline_requests_total{model=\"tiny-lm\",status=\"504\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "faultline_streams_ended_early_total{model=\"tiny-lm\",reason=\"deadline\"}"
        ),
        Some(1.0)
    );
}

/// A client that disconnects mid-stream, or while waiting for a non-streamed answer, frees
/// its batch slot: generation for it stops and the next request runs.
#[tokio::test]
async fn a_client_that_disconnects_frees_its_batch_slot() {
    let s = ServerProcess::start(
        &[
            "--lm-max-running",
            "1",
            "--max-tokens-limit",
            "4096",
            // 4,096 tokens at ≥ 10 ms a step: minutes, unless generation stops.
            "--fault-step-delay-ms",
            "10",
        ],
        &[],
    );
    for stream in [true, false] {
        let mut conn = TcpStream::connect(s.addr).await.expect("connect");
        let body = json!({"model": "tiny-lm", "prompt": "x", "max_tokens": 4096, "stream": stream})
            .to_string();
        conn.write_all(
            format!(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        if stream {
            // Wait for the first token event, then leave.
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("data: {") {
                let n = conn.read(&mut buf).await.expect("read");
                assert!(n > 0, "stream ended early");
                got.extend_from_slice(&buf[..n]);
            }
        } else {
            eventually(Duration::from_secs(30), "the sequence is running", || {
                let s = &s;
                async move {
                    let m = metrics_text(s).await;
                    (metric(&m, "faultline_num_requests_running{model=\"tiny-lm\"}")? == 1.0)
                        .then_some(())
                }
            })
            .await;
        }
        drop(conn);
        eventually(Duration::from_secs(30), "the slot is freed", || {
            let s = &s;
            async move {
                let m = metrics_text(s).await;
                (metric(&m, "faultline_num_requests_running{model=\"tiny-lm\"}")? == 0.0)
                    .then_some(())
            }
        })
        .await;
    }
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(
            &m,
            "faultline_requests_aborted_total{model=\"tiny-lm\",reason=\"client_gone\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "faultline_streams_ended_early_total{model=\"tiny-lm\",reason=\"client_gone\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "faultline_requests_total{model=\"tiny-lm\",status=\"499\"}"
        ),
        Some(1.0),
        "the non-streamed request is counted as client-closed:\n{m}"
    );
    let generated =
        metric(&m, "faultline_generation_tokens_total{model=\"tiny-lm\"}").expect("tokens counted");
    assert!(generated < 4096.0, "generation stopped: {generated} tokens");
    // The single slot serves the next request.
    let r = client()
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tiny-lm", "prompt": "y", "max_tokens": 3}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
}

#[test]
fn help_lists_every_limit_with_its_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .expect("run server --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--max-connections <MAX_CONNECTIONS>",
        "[default: 1024]",
        "--max-header-bytes",
        "[default: 32768]",
        "--header-read-timeout-s",
        "--keep-alive-timeout-s",
        "--request-timeout-s",
        "--max-body-bytes",
        "--max-prompt-bytes",
        "--max-tokens-limit",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

/// Under overload a model sheds by queueing time, not only by queue length: once a batch
/// time has been measured, a request that would wait past `--max-queue-wait-ms` gets 429 at
/// once, long before `--max-queue` requests wait.
#[tokio::test]
async fn requests_that_would_wait_past_the_budget_are_shed_at_once() {
    let s = ServerProcess::start(
        &[
            "--max-batch-size",
            "1",
            "--max-queue-wait-ms",
            "50",
            // Each batch takes 2 s: once one has finished, a queued request would wait
            // far past the budget.
            "--fault-step-delay-ms",
            "2000",
            "--engine-stall-threshold-s",
            "600",
        ],
        &[],
    );
    let c = client();
    let send = |c: reqwest::Client| {
        let url = s.url("/v2/models/mlp/infer");
        tokio::spawn(async move {
            c.post(url)
                .json(&common::infer_body(1, 256))
                .send()
                .await
                .expect("sent")
        })
    };
    let _computing = send(c.clone());
    let _waiting = send(c.clone());
    eventually(Duration::from_secs(30), "one request waits", || {
        let s = &s;
        async move {
            let m = metrics_text(s).await;
            (metric(&m, "faultline_num_requests_waiting{model=\"mlp\"}")? >= 1.0).then_some(())
        }
    })
    .await;
    let shed = eventually(Duration::from_secs(30), "a request is shed", || {
        let reply = send(c.clone());
        async move {
            let r = tokio::time::timeout(Duration::from_millis(200), reply)
                .await
                .ok()?
                .expect("task");
            (r.status() == 429).then_some(r)
        }
    })
    .await;
    assert_eq!(
        shed.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // `/v2` routes answer in KServe's shape: `{"error": "message"}`.
    let v: Value = shed.json().await.expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|m| m.contains("--max-queue-wait-ms")),
        "{v}"
    );
    let m = metrics_text(&s).await;
    assert!(
        metric(
            &m,
            "faultline_requests_shed_total{model=\"mlp\",reason=\"queue_wait\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}
