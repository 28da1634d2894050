//! Behaviour of the real `server` binary over real sockets.

mod common;

use common::{client, eventually, infer_body, metric, metrics_text, sse_data, ServerProcess};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

/// Builds the request now (so the future borrows nothing) and sends it when awaited.
fn post(
    server: &ServerProcess,
    path: &str,
    body: &Value,
) -> impl std::future::Future<Output = reqwest::Response> {
    let request = client().post(server.url(path)).json(body);
    async move { request.send().await.expect("request sent") }
}

#[tokio::test]
async fn fresh_server_is_healthy_ready_and_lists_both_default_models() {
    let s = ServerProcess::start(&[], &[]);
    let c = client();
    for path in ["/healthz", "/readyz"] {
        let r = c.get(s.url(path)).send().await.expect("sent");
        assert_eq!(r.status(), 200, "{path}");
    }
    let list: Value = c
        .get(s.url("/v1/models"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["mlp", "tiny-lm"]);
    let meta: Value = c
        .get(s.url("/v2/models/mlp"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 256]));
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
}

#[tokio::test]
async fn infer_returns_logits_shaped_like_the_input_on_both_routes() {
    let s = ServerProcess::start(&["--model", "clf=mlp"], &[]);
    let r: Value = post(&s, "/v2/models/clf/infer", &infer_body(3, 256))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["model_name"], "clf");
    assert_eq!(r["outputs"][0]["shape"], json!([3, 10]));
    assert_eq!(r["outputs"][0]["data"].as_array().expect("data").len(), 30);
    let one = json!({"inputs":[{"name":"input","shape":[256],"datatype":"FP32","data":vec![0.5f32; 256]}]});
    let r: Value = post(&s, "/v1/models/clf/infer", &one)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["outputs"][0]["shape"], json!([10]));
}

#[tokio::test]
async fn concurrent_requests_are_merged_into_batches_larger_than_one() {
    let s = ServerProcess::start(
        &[
            "--model",
            "mlp=mlp",
            "--max-batch-size",
            "32",
            "--max-queue-delay-ms",
            "50",
        ],
        &[("SERVER_FAULT_STEP_DELAY_MS", "20")],
    );
    let n = 64;
    let responses = futures_util::future::join_all(
        (0..n).map(|_| post(&s, "/v2/models/mlp/infer", &infer_body(1, 256))),
    )
    .await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let m = metrics_text(&s).await;
    let sum = metric(&m, "faultline_batch_size_sum{model=\"mlp\"}").expect("sum");
    let count = metric(&m, "faultline_batch_size_count{model=\"mlp\"}").expect("count");
    assert_eq!(sum, n as f64, "every sample is computed exactly once");
    assert!(
        count < n as f64,
        "{count} batches for {n} requests: no batching happened"
    );
    assert!(
        metric(&m, "faultline_batch_size_bucket{le=\"32.0\",model=\"mlp\"}") == Some(count),
        "a batch exceeded --max-batch-size"
    );
}

#[tokio::test]
async fn lone_request_is_dispatched_after_max_queue_delay_without_a_full_batch() {
    let s = ServerProcess::start(
        &[
            "--model",
            "mlp=mlp",
            "--max-batch-size",
            "32",
            "--max-queue-delay-ms",
            "30",
        ],
        &[],
    );
    let r = post(&s, "/v2/models/mlp/infer", &infer_body(1, 256)).await;
    assert_eq!(r.status(), 200);
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(&m, "faultline_batch_size_count{model=\"mlp\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "faultline_batch_size_sum{model=\"mlp\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "faultline_request_queue_time_seconds_count{model=\"mlp\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn shed_requests_get_429_with_retry_after() {
    let s = ServerProcess::start(
        &[
            "--model",
            "mlp=mlp",
            "--max-batch-size",
            "1",
            "--max-queue",
            "2",
        ],
        &[("SERVER_FAULT_STEP_DELAY_MS", "200")],
    );
    let responses = futures_util::future::join_all(
        (0..20).map(|_| post(&s, "/v2/models/mlp/infer", &infer_body(1, 256))),
    )
    .await;
    let mut shed = 0;
    for r in responses {
        match r.status().as_u16() {
            200 => {}
            429 => {
                shed += 1;
                assert!(
                    r.headers().get("retry-after").is_some(),
                    "429 without Retry-After"
                );
                // `/v2`: KServe's `{"error": "message"}`, naming the limit.
                let body: Value = r.json().await.expect("error json");
                let msg = body["error"].as_str().expect("KServe error string");
                assert!(
                    msg.contains("--max-queue") && msg.contains("retry later"),
                    "{msg}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(shed > 0, "a burst of 20 past --max-queue 2 shed nothing");
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(
            &m,
            "faultline_requests_shed_total{model=\"mlp\",reason=\"queue_full\"}"
        ),
        Some(shed as f64)
    );
}

#[tokio::test]
async fn completion_stream_is_sse_chunks_of_text_ending_in_usage_and_done() {
    let s = ServerProcess::start(&[], &[]);
    let r = post(
        &s,
        "/v1/completions",
        &json!({"model":"tiny-lm","prompt":"hello","max_tokens":8,"stream":true,
                "stream_options":{"include_usage":true}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    // One chunk per token, except that bytes of one UTF-8 character travel together: at
    // most 8 text chunks, then the usage chunk, then [DONE].
    let n = data.len() - 2;
    assert!((1..=8).contains(&n), "{data:?}");
    let usage: Value = serde_json::from_str(&data[n]).expect("usage json");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 8);
    for (i, d) in data[..n].iter().enumerate() {
        let chunk: Value = serde_json::from_str(d).expect("chunk json");
        assert_eq!(chunk["object"], "text_completion");
        let finish = &chunk["choices"][0]["finish_reason"];
        if i == n - 1 {
            assert_eq!(finish, "length")
        } else {
            assert!(finish.is_null());
            assert!(!chunk["choices"][0]["text"]
                .as_str()
                .expect("text")
                .is_empty());
        }
    }
}

#[tokio::test]
async fn non_stream_completion_reports_usage_and_is_reproducible() {
    let s = ServerProcess::start(&[], &[]);
    let req = json!({"model":"tiny-lm","prompt":"abc","max_tokens":12});
    let a: Value = post(&s, "/v1/completions", &req)
        .await
        .json()
        .await
        .expect("json");
    let b: Value = post(&s, "/v1/completions", &req)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        a["choices"][0]["text"], b["choices"][0]["text"],
        "greedy decoding is deterministic"
    );
    assert_eq!(
        a["choices"][0]["text"]
            .as_str()
            .expect("text")
            .chars()
            .count(),
        12
    );
    assert_eq!(
        a["usage"],
        json!({"prompt_tokens":3,"completion_tokens":12,"total_tokens":15})
    );
    let sampled =
        json!({"model":"tiny-lm","prompt":"abc","max_tokens":12,"temperature":1.0,"seed":7});
    let x: Value = post(&s, "/v1/completions", &sampled)
        .await
        .json()
        .await
        .expect("json");
    let y: Value = post(&s, "/v1/completions", &sampled)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        x["choices"][0]["text"], y["choices"][0]["text"],
        "same seed, same sample"
    );
}

#[tokio::test]
async fn lm_decodes_several_sequences_per_step_but_never_more_than_lm_max_running() {
    let s = ServerProcess::start(
        &["--model", "lm=lm", "--lm-max-running", "2"],
        &[("SERVER_FAULT_STEP_DELAY_MS", "5")],
    );
    let responses = futures_util::future::join_all((0..6).map(|i| {
        post(
            &s,
            "/v1/completions",
            &json!({"model":"lm","prompt":format!("p{i}"),"max_tokens":20}),
        )
    }))
    .await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let m = metrics_text(&s).await;
    let sum = metric(&m, "faultline_batch_size_sum{model=\"lm\"}").expect("sum");
    let count = metric(&m, "faultline_batch_size_count{model=\"lm\"}").expect("count");
    assert!(sum > count, "no decode step ran more than one sequence");
    assert_eq!(
        metric(&m, "faultline_batch_size_bucket{le=\"2.0\",model=\"lm\"}"),
        Some(count),
        "a step exceeded --lm-max-running 2"
    );
    assert_eq!(
        metric(&m, "faultline_generation_tokens_total{model=\"lm\"}"),
        Some(120.0)
    );
}

/// Every malformed request off `/v2` gets a 4xx whose OpenAI-shaped error JSON names the problem.
#[tokio::test]
async fn bad_inputs_get_4xx_naming_the_problem() {
    let s = ServerProcess::start(
        &["--max-body-bytes", "65536", "--max-tokens-limit", "64"],
        &[],
    );
    let c = client();
    let fp32 = |shape: Value, n: usize| json!({"inputs":[{"name":"input","shape":shape,"datatype":"FP32","data":vec![0.0f32; n]}]});
    // (what, path, body, expected status, expected `param`, text the message must contain)
    type Case = (
        &'static str,
        &'static str,
        reqwest::Body,
        u16,
        Option<&'static str>,
        &'static str,
    );
    // `/v2` rows (KServe's `{"error": "..."}` shape) are in tests/kserve.rs; the classifier's
    // `/v1` infer route keeps this shape.
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("v1 infer wrong width", "/v1/models/mlp/infer", fp32(json!([1, 255]), 255).to_string().into(), 400, Some("inputs[0].shape"), "256"),
        ("unknown model completion", "/v1/completions", json!({"model":"nope","prompt":"a"}).to_string().into(), 404, None, "nope"),
        ("classifier on completions", "/v1/completions", json!({"model":"mlp","prompt":"a"}).to_string().into(), 400, Some("model"), "/infer"),
        ("missing prompt", "/v1/completions", json!({"model":"tiny-lm"}).to_string().into(), 400, Some("prompt"), "missing field"),
        ("empty prompt", "/v1/completions", json!({"model":"tiny-lm","prompt":""}).to_string().into(), 400, Some("prompt"), "non-empty"),
        ("zero max_tokens", "/v1/completions", json!({"model":"tiny-lm","prompt":"a","max_tokens":0}).to_string().into(), 400, Some("max_tokens"), "1..=64"),
        ("max_tokens over limit", "/v1/completions", json!({"model":"tiny-lm","prompt":"a","max_tokens":65}).to_string().into(), 400, Some("max_tokens"), "1..=64"),
        ("negative temperature", "/v1/completions", json!({"model":"tiny-lm","prompt":"a","temperature":-1.0}).to_string().into(), 400, Some("temperature"), "0..=2"),
        ("unknown route", "/v3/nothing", "{}".into(), 404, None, "/v3/nothing"),
    ];
    for (what, path, body, status, param, needle) in cases {
        let r = c
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), status, "{what}");
        if status == 413 {
            assert_eq!(
                r.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{what}: a 413 with an unread body closes the connection and says so"
            );
        }
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: error body is not JSON: {e}"));
        let err = &v["error"];
        assert_eq!(err["code"], status, "{what}: {v}");
        assert_eq!(err["param"].as_str(), param, "{what}: {v}");
        let msg = err["message"].as_str().expect("message");
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} lacks {needle:?}"
        );
        assert!(err["type"].is_string(), "{what}");
    }
    // The server survived all of it.
    assert_eq!(
        c.get(s.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_drains_an_open_stream_refuses_new_requests_and_exits_zero() {
    let mut s = ServerProcess::start(&[], &[("SERVER_FAULT_STEP_DELAY_MS", "20")]);
    let r = post(
        &s,
        "/v1/completions",
        &json!({"model":"tiny-lm","prompt":"a","max_tokens":100,"stream":true,
                "stream_options":{"include_usage":true}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut text = String::new();
    // Wait until the stream is demonstrably in flight.
    while !text.contains("\n\n") {
        let chunk = body.next().await.expect("a first event").expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    s.sigterm();
    // A new request is refused: 503 with Retry-After while draining, or no connection at all.
    let late = eventually(PATIENCE, "a request after SIGTERM is refused", || {
        let url = s.url("/v2/models/mlp/infer");
        async move {
            match client().post(url).json(&infer_body(1, 256)).send().await {
                Ok(r) if r.status() == 503 => Some(Some(r.headers().get("retry-after").is_some())),
                Ok(_) => None,
                Err(_) => Some(None),
            }
        }
    })
    .await;
    assert_ne!(late, Some(false), "503 without Retry-After");
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("stream bytes")));
    }
    let data = sse_data(&text);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream cut by the drain"
    );
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
    assert_eq!(
        usage["usage"]["completion_tokens"], 100,
        "all 100 tokens, then usage and [DONE]"
    );
    let status = s.wait_exit(PATIENCE).await;
    assert_eq!(status.code(), Some(0));
}

/// The SIGTERM handler is in place before `listening on` is printed: a supervisor that
/// stops the server the moment it is announced gets a drain and exit 0, never the default
/// action (death by signal). Installing it on the first poll instead left a window that a
/// loaded machine hit (the KServe drain test saw the server vanish mid-test).
#[tokio::test]
async fn sigterm_right_after_the_address_is_announced_drains_and_exits_zero() {
    for _ in 0..5 {
        let mut s = ServerProcess::start(&[], &[]);
        s.sigterm();
        let status = s.wait_exit(PATIENCE).await;
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

#[tokio::test]
async fn readyz_fails_while_draining() {
    let mut s = ServerProcess::start(&[], &[("SERVER_FAULT_STEP_DELAY_MS", "20")]);
    let r = post(
        &s,
        "/v1/completions",
        &json!({"model":"tiny-lm","prompt":"a","max_tokens":200,"stream":true}),
    )
    .await;
    let mut body = r.bytes_stream();
    body.next().await.expect("first event").expect("bytes");
    s.sigterm();
    // SIGTERM is handled asynchronously: wait for readyz to turn 503 (a server that never
    // does fails after PATIENCE), then check why.
    let ready = eventually(PATIENCE, "readyz turns 503 while draining", || {
        let url = s.url("/readyz");
        async move {
            let r = client().get(url).send().await.ok()?;
            let status = r.status().as_u16();
            (status == 503).then_some(())?;
            Some((status, r.json::<Value>().await.ok()?))
        }
    })
    .await;
    assert_eq!(ready.0, 503);
    assert_eq!(ready.1["status"], "draining");
    drop(body);
    assert_eq!(s.wait_exit(PATIENCE).await.code(), Some(0));
}

/// vLLM's `/health` says OK while its engine is dead; ours must not.
#[tokio::test]
async fn healthz_fails_when_the_engine_is_wedged() {
    let s = ServerProcess::start(
        &["--model", "mlp=mlp"],
        &[
            ("SERVER_FAULT_STALL_ENGINE_AFTER", "1"),
            ("SERVER_ENGINE_STALL_THRESHOLD_S", "0.5"),
        ],
    );
    let c = client();
    assert_eq!(
        post(&s, "/v2/models/mlp/infer", &infer_body(1, 256))
            .await
            .status(),
        200
    );
    assert_eq!(
        c.get(s.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    // The second batch wedges the engine; this request never completes.
    let stuck = tokio::spawn({
        let url = s.url("/v2/models/mlp/infer");
        async move { client().post(url).json(&infer_body(1, 256)).send().await }
    });
    let reason = eventually(PATIENCE, "healthz reports the wedged engine", || {
        let url = s.url("/healthz");
        async move {
            let r = client().get(url).send().await.ok()?;
            (r.status() == 503).then_some(())?;
            r.json::<Value>().await.ok()
        }
    })
    .await;
    let reasons = reason["reasons"].to_string();
    assert!(
        reasons.contains("`mlp`") && reasons.contains("no progress"),
        "{reasons}"
    );
    assert_eq!(
        c.get(s.url("/readyz")).send().await.expect("sent").status(),
        503
    );
    let r = post(&s, "/v2/models/mlp/infer", &infer_body(1, 256)).await;
    assert_eq!(
        r.status(),
        503,
        "requests to a wedged engine are refused, not queued"
    );
    assert!(r.headers().get("retry-after").is_some());
    stuck.abort();
}

#[tokio::test]
async fn healthz_fails_and_waiting_requests_get_503_when_the_engine_thread_exits() {
    let s = ServerProcess::start(
        &["--model", "lm=lm"],
        &[("SERVER_FAULT_EXIT_ENGINE_AFTER", "3")],
    );
    let r = post(
        &s,
        "/v1/completions",
        &json!({"model":"lm","prompt":"a","max_tokens":10}),
    )
    .await;
    assert_eq!(r.status(), 503, "the engine died mid-generation");
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("engine stopped"),
        "{v}"
    );
    let reason = eventually(PATIENCE, "healthz reports the dead engine", || {
        let url = s.url("/healthz");
        async move {
            let r = client().get(url).send().await.ok()?;
            (r.status() == 503).then_some(())?;
            r.json::<Value>().await.ok()
        }
    })
    .await;
    assert!(
        reason["reasons"].to_string().contains("thread exited"),
        "{reason}"
    );
}

#[tokio::test]
async fn metrics_expose_the_documented_names() {
    let s = ServerProcess::start(&[], &[]);
    assert_eq!(
        post(&s, "/v2/models/mlp/infer", &infer_body(2, 256))
            .await
            .status(),
        200
    );
    let r = post(
        &s,
        "/v1/completions",
        &json!({"model":"tiny-lm","prompt":"hi","max_tokens":3}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = metrics_text(&s).await;
    for name in [
        "faultline_requests_total{model=\"mlp\",status=\"200\"}",
        "faultline_requests_total{model=\"tiny-lm\",status=\"200\"}",
        "faultline_e2e_request_latency_seconds_count{model=\"mlp\"}",
        "faultline_e2e_request_latency_seconds_count{model=\"tiny-lm\"}",
        "faultline_request_queue_time_seconds_count{model=\"mlp\"}",
        "faultline_batch_size_count{model=\"mlp\"}",
        "faultline_batch_execution_seconds_count{model=\"mlp\"}",
        "faultline_num_requests_waiting{model=\"mlp\"}",
        "faultline_num_requests_running{model=\"tiny-lm\"}",
        "faultline_time_to_first_token_seconds_count{model=\"tiny-lm\"}",
        "faultline_inter_token_latency_seconds_count{model=\"tiny-lm\"}",
        "faultline_generation_tokens_total{model=\"tiny-lm\"}",
        "faultline_prompt_tokens_total{model=\"tiny-lm\"}",
    ] {
        assert!(metric(&m, name).is_some(), "missing {name} in\n{m}");
    }
    assert_eq!(
        metric(&m, "faultline_generation_tokens_total{model=\"tiny-lm\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "faultline_inter_token_latency_seconds_count{model=\"tiny-lm\"}"
        ),
        Some(2.0)
    );
    assert!(m.contains("# TYPE faultline_requests_shed_total counter"));
    assert!(m.contains("faultline_model_info{model=\"tiny-lm\",version=\"1\"} 1"));
}
