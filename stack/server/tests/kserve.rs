//! KServe v2 / Triton HTTP protocol of the real `server` binary: health, metadata,
//! versions, inference (JSON flat and nested, binary tensor data), error bodies and the
//! content-type rule.

mod common;

use common::{client, eventually, infer_body, ServerProcess};
use serde_json::{json, Value};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);
/// The default classifier's input width and classes.
const D: usize = 256;
const C: usize = 10;

async fn get(s: &ServerProcess, path: &str) -> reqwest::Response {
    client().get(s.url(path)).send().await.expect("GET sent")
}

/// POST with `Content-Type: application/json`.
async fn post_json(s: &ServerProcess, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("POST sent")
}

/// The `error` string of a KServe error body; fails if the body has any other shape.
async fn kserve_error(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("error body is JSON");
    let obj = v.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "KServe error body has only `error`: {v}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("`error` is a string: {v}"))
        .to_string()
}

/// Status and body of a health route.
async fn health(s: &ServerProcess, path: &str) -> (u16, String) {
    let r = get(s, path).await;
    (r.status().as_u16(), r.text().await.expect("body"))
}

fn fp32_body(shape: Value, data: Value) -> Value {
    json!({"inputs":[{"name":"input","shape":shape,"datatype":"FP32","data":data}]})
}

fn sample(i: usize) -> f32 {
    (i % 7) as f32 * 0.1
}

#[tokio::test]
async fn server_metadata_health_and_model_metadata_answer_as_kserve_v2_says() {
    let s = ServerProcess::start(&[], &[]);
    let meta: Value = get(&s, "/v2").await.json().await.expect("json");
    assert_eq!(meta["name"], "faultline-server");
    assert!(
        meta["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{meta}"
    );
    assert_eq!(meta["extensions"], json!(["binary_tensor_data"]));
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/mlp/ready",
        "/v2/models/tiny-lm/ready",
        "/v2/models/mlp/versions/1/ready",
    ] {
        assert_eq!(health(&s, path).await, (200, String::new()), "{path}");
    }
    let model: Value = get(&s, "/v2/models/mlp").await.json().await.expect("json");
    assert_eq!(model["name"], "mlp");
    assert_eq!(model["versions"], json!(["1"]));
    assert_eq!(
        model["inputs"],
        json!([{"name":"input","datatype":"FP32","shape":[-1, D]}])
    );
    assert_eq!(
        model["outputs"],
        json!([{"name":"logits","datatype":"FP32","shape":[-1, C]}])
    );
    let versioned: Value = get(&s, "/v2/models/mlp/versions/1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(versioned, model);
}

#[tokio::test]
async fn unknown_models_and_versions_get_404_naming_them() {
    let s = ServerProcess::start(&[], &[]);
    for (path, needle) in [
        ("/v2/models/nope", "model `nope` is not loaded"),
        ("/v2/models/nope/ready", "model `nope` is not loaded"),
        (
            "/v2/models/mlp/versions/2",
            "model `mlp` has no version `2`; its versions: 1",
        ),
        ("/v2/models/mlp/versions/2/ready", "no version `2`"),
    ] {
        let r = get(&s, path).await;
        assert_eq!(r.status(), 404, "{path}");
        let msg = kserve_error(r).await;
        assert!(msg.contains(needle), "{path}: {msg:?} lacks {needle:?}");
    }
    let r = post_json(&s, "/v2/models/mlp/versions/2/infer", &infer_body(1, D)).await;
    assert_eq!(r.status(), 404);
    assert!(kserve_error(r).await.contains("no version `2`"));
}

#[tokio::test]
async fn versioned_infer_answers_with_the_model_version() {
    let s = ServerProcess::start(&[], &[]);
    let mut body = infer_body(2, D);
    body["id"] = json!("req-7");
    let r: Value = post_json(&s, "/v2/models/mlp/versions/1/infer", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["model_name"], "mlp");
    assert_eq!(r["model_version"], "1");
    assert_eq!(r["id"], "req-7");
    assert_eq!(r["outputs"][0]["name"], "logits");
    assert_eq!(r["outputs"][0]["datatype"], "FP32");
    assert_eq!(r["outputs"][0]["shape"], json!([2, C]));
    assert_eq!(
        r["outputs"][0]["data"].as_array().expect("data").len(),
        2 * C
    );
}

#[tokio::test]
async fn nested_data_gives_the_same_logits_as_flat_data() {
    let s = ServerProcess::start(&[], &[]);
    let flat: Vec<f32> = (0..2 * D).map(sample).collect();
    let nested: Vec<Vec<f32>> = flat.chunks(D).map(<[f32]>::to_vec).collect();
    let a: Value = post_json(
        &s,
        "/v2/models/mlp/infer",
        &fp32_body(json!([2, D]), json!(flat)),
    )
    .await
    .json()
    .await
    .expect("json");
    let b: Value = post_json(
        &s,
        "/v2/models/mlp/infer",
        &fp32_body(json!([2, D]), json!(nested)),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(a["outputs"], b["outputs"]);
    assert_eq!(a["outputs"][0]["shape"], json!([2, C]));
}

/// Builds a binary tensor data request: the JSON header, then the values' bytes.
fn binary_request(json: &Value, values: &[f32]) -> (usize, Vec<u8>) {
    let mut body = serde_json::to_vec(json).expect("json");
    let header_len = body.len();
    body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    (header_len, body)
}

/// Splits a binary response into its JSON header and FP32 values.
async fn binary_response(r: reqwest::Response) -> (Value, Vec<f32>) {
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    let header_len: usize = r
        .headers()
        .get("inference-header-content-length")
        .expect("Inference-Header-Content-Length")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a length");
    let body = r.bytes().await.expect("body");
    let header: Value = serde_json::from_slice(&body[..header_len]).expect("JSON header");
    let values = body[header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (header, values)
}

#[tokio::test]
async fn binary_tensor_data_in_and_out_matches_the_json_answer() {
    let s = ServerProcess::start(&[], &[]);
    let values: Vec<f32> = (0..D).map(sample).collect();
    let json_answer: Value = post_json(
        &s,
        "/v2/models/mlp/infer",
        &fp32_body(json!([1, D]), json!(values)),
    )
    .await
    .json()
    .await
    .expect("json");
    let expected: Vec<f32> = json_answer["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    // What tritonclient's HTTP client sends by default: no Content-Type, binary input,
    // binary_data_output.
    let (header_len, body) = binary_request(
        &json!({"inputs":[{"name":"input","shape":[1, D],"datatype":"FP32",
            "parameters":{"binary_data_size": D * 4}}],
            "parameters":{"binary_data_output":true}}),
        &values,
    );
    let r = client()
        .post(s.url("/v2/models/mlp/infer"))
        .header("inference-header-content-length", header_len)
        .body(body)
        .send()
        .await
        .expect("sent");
    let (header, logits) = binary_response(r).await;
    assert_eq!(header["outputs"][0]["shape"], json!([1, C]));
    assert_eq!(
        header["outputs"][0]["parameters"]["binary_data_size"],
        json!(C * 4)
    );
    assert!(header["outputs"][0].get("data").is_none(), "{header}");
    assert_eq!(logits, expected);
    // Raw binary request: header length 0, the body is one sample.
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let r = client()
        .post(s.url("/v2/models/mlp/infer"))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", 0)
        .body(raw)
        .send()
        .await
        .expect("sent");
    let (_, logits) = binary_response(r).await;
    assert_eq!(logits, expected);
}

#[tokio::test]
async fn infer_content_type_rule_admits_tritonclient_and_refuses_forms() {
    let s = ServerProcess::start(&[], &[]);
    let body = serde_json::to_vec(&infer_body(1, D)).expect("json");
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let mut req = client()
            .post(s.url("/v2/models/mlp/infer"))
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move { req.send().await.expect("sent") }
    };
    for ok in [
        &[][..],
        &[("content-type", "application/json")],
        &[("content-type", "application/octet-stream")],
    ] {
        assert_eq!(send(ok).await.status(), 200, "{ok:?}");
    }
    for (bad, needle) in [
        (
            &[("content-type", "text/plain")][..],
            "Content-Type `text/plain`",
        ),
        (
            &[("content-type", "application/x-www-form-urlencoded")],
            "application/x-www-form-urlencoded",
        ),
        (
            &[("content-type", "multipart/form-data; boundary=x")],
            "multipart/form-data",
        ),
        (&[("origin", "http://elsewhere.example")], "Origin"),
        (&[("content-encoding", "gzip")], "Content-Encoding"),
    ] {
        let r = send(bad).await;
        assert_eq!(r.status(), 415, "{bad:?}");
        let msg = kserve_error(r).await;
        assert!(msg.contains(needle), "{bad:?}: {msg:?} lacks {needle:?}");
    }
}

/// Every malformed `/v2` request gets a 4xx whose `{"error": ...}` names the field.
#[tokio::test]
async fn bad_v2_requests_get_kserve_errors_naming_the_field() {
    let s = ServerProcess::start(&["--max-body-bytes", "65536"], &[]);
    let fp32 = |shape: Value, n: usize| fp32_body(shape, json!(vec![0.0f32; n]));
    let infer = "/v2/models/mlp/infer";
    // (what, path, body, expected status, text the message must contain)
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("bad json", infer, "{not json".into(), 400, "body: invalid JSON"),
        ("no inputs field", infer, r#"{"x":1}"#.into(), 400, "inputs: invalid JSON body: missing field `inputs`"),
        ("no inputs", infer, r#"{"inputs":[]}"#.into(), 400, "inputs: expected exactly 1 input tensor"),
        ("fp64", infer, json!({"inputs":[{"name":"input","shape":[D],"datatype":"FP64","data":vec![0;D]}]}).to_string(), 400, "inputs[0].datatype: expected \"FP32\""),
        ("wrong width", infer, fp32(json!([1, 255]), 255).to_string(), 400, "inputs[0].shape: expected [k, 256]"),
        ("batch over max", infer, fp32(json!([33, D]), 33 * D).to_string(), 400, "1 <= k <= 32"),
        ("data length", infer, fp32(json!([2, D]), D).to_string(), 400, "inputs[0].data: shape [2, 256] needs 512 values, got 256"),
        ("string data", infer, r#"{"inputs":[{"name":"i","shape":[256],"datatype":"FP32","data":["x"]}]}"#.into(), 400, "inputs[0].data[0]: expected a number (FP32) in tensor `i`, got a string"),
        ("nested wrong", infer, fp32_body(json!([2, D]), json!(vec![vec![0.0f32; 2]; D])).to_string(), 400, "inputs[0].data: is nested as [256, 2] but shape is [2, 256]"),
        ("ragged", infer, fp32_body(json!([2, D]), json!([vec![0.0f32; D], vec![0.0f32; D - 1]])).to_string(), 400, "inputs[0].data[1]: differs in length"),
        ("fp32 overflow", infer, fp32_body(json!([D]), json!((0..D).map(|i| if i == 3 { 1e39 } else { 0.0 }).collect::<Vec<f64>>())).to_string(), 400, "inputs[0].data[3]: 1e39 in tensor `input` overflows FP32"),
        ("unknown output", infer, json!({"inputs":[{"name":"input","shape":[D],"datatype":"FP32","data":vec![0;D]}],"outputs":[{"name":"probs"}]}).to_string(), 400, "outputs[0].name: the model has no output `probs`"),
        ("binary without header", infer, json!({"inputs":[{"name":"input","shape":[D],"datatype":"FP32","parameters":{"binary_data_size":D * 4}}]}).to_string(), 400, "Inference-Header-Content-Length"),
        ("unknown model", "/v2/models/nope/infer", fp32(json!([D]), D).to_string(), 404, "model `nope` is not loaded"),
        ("lm on infer route", "/v2/models/tiny-lm/infer", fp32(json!([D]), D).to_string(), 400, "model `tiny-lm` is a language model: use POST /v1/completions"),
        ("oversized body", infer, fp32(json!([32, D]), 40_000).to_string(), 413, "limit of 65536 bytes (--max-body-bytes)"),
        ("unknown route", "/v2/nothing/here", "{}".into(), 404, "no route for /v2/nothing/here"),
    ];
    let c = client();
    for (what, path, body, status, needle) in cases {
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
        let msg = kserve_error(r).await;
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }
    // A wrong method is a KServe 405 with Allow.
    let r = get(&s, infer).await;
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.headers().get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    assert!(kserve_error(r).await.contains("use POST"));
    let r = c
        .post(s.url("/v2/health/ready"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 405);
    assert!(kserve_error(r).await.contains("use GET"));
    // The server survived all of it.
    assert_eq!(health(&s, "/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn a_stalled_model_is_not_ready_while_the_other_stays_ready() {
    // Every engine wedges before its first batch, but only `a` is given one; a stalled
    // engine with work is reported after 0.2 s without progress.
    let s = ServerProcess::start(
        &["--model", "a=mlp,b=mlp"],
        &[
            ("SERVER_FAULT_STALL_ENGINE_AFTER", "0"),
            ("SERVER_ENGINE_STALL_THRESHOLD_S", "0.2"),
        ],
    );
    assert_eq!(health(&s, "/v2/models/a/ready").await.0, 200);
    let stuck = tokio::spawn(post_json_owned(
        s.url("/v2/models/a/infer"),
        infer_body(1, D),
    ));
    let why = eventually(PATIENCE, "model a turns not ready", || {
        let url = s.url("/v2/models/a/ready");
        async move {
            let r = client().get(url).send().await.expect("sent");
            (r.status() == 400).then_some(r)
        }
    })
    .await;
    let why = kserve_error(why).await;
    assert!(
        why.contains("model `a` is not ready") && why.contains("no progress"),
        "{why}"
    );
    assert_eq!(health(&s, "/v2/models/b/ready").await, (200, String::new()));
    assert_eq!(health(&s, "/v2/models/a/versions/1/ready").await.0, 400);
    for path in ["/v2/health/ready", "/v2/health/live"] {
        let r = get(&s, path).await;
        assert_eq!(r.status(), 400, "{path}");
        let msg = kserve_error(r).await;
        assert!(msg.contains("`a`") && !msg.contains("`b`"), "{path}: {msg}");
    }
    stuck.abort();
}

async fn post_json_owned(url: String, body: Value) -> Option<reqwest::StatusCode> {
    client()
        .post(url)
        .json(&body)
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// The body of `path` once it answers `status`. Connection errors are retried: a connection
/// accepted during a drain can be closed before hyper has read its request (the connection
/// task sees the drain already started and its clock idle).
async fn answer_once(s: &ServerProcess, path: &str, status: u16) -> String {
    eventually(PATIENCE, &format!("{path} answers {status}"), || {
        let url = s.url(path);
        async move {
            let r = client().get(url).send().await.ok()?;
            if r.status().as_u16() != status {
                return None;
            }
            r.text().await.ok()
        }
    })
    .await
}

#[tokio::test]
async fn a_draining_server_is_live_but_not_ready() {
    // A slow stream keeps the drain going while the routes are read.
    let s = ServerProcess::start(
        &["--drain-timeout-s", "60"],
        &[("SERVER_FAULT_STEP_DELAY_MS", "50")],
    );
    let stream = post_json(
        &s,
        "/v1/completions",
        &json!({"model":"tiny-lm","prompt":"a","max_tokens":512,"stream":true}),
    )
    .await;
    assert_eq!(stream.status(), 200);
    s.sigterm();
    let ready = answer_once(&s, "/v2/health/ready", 400).await;
    assert!(ready.contains("server is draining"), "{ready}");
    assert_eq!(answer_once(&s, "/v2/health/live", 200).await, "");
    let model = answer_once(&s, "/v2/models/mlp/ready", 400).await;
    assert!(model.contains("draining"), "{model}");
    drop(stream);
}
