//! Model versions against the real `server` binary: the version each model reports, and a
//! repository load that swaps in a new version while streams are open, dropping none.

mod common;

use common::{client, sse_data, ServerProcess};
use models::lm::{ByteLm, LmConfig};
use models::mlp::{Mlp, MlpConfig};
use serde_json::{json, Value};
use std::path::Path;

fn save_lm(dir: &Path, version: &str, seed: u64) {
    let d = dir.join("tiny-lm").join(version);
    std::fs::create_dir_all(&d).expect("mkdir");
    ByteLm::seeded(LmConfig::default(), seed)
        .expect("model")
        .save(&d.join("model.safetensors"))
        .expect("save");
}

async fn versions(s: &ServerProcess) -> Vec<(String, String)> {
    let r: Value = client()
        .get(s.url("/v1/models"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    r["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_string(),
                m["version"].as_str().expect("version").to_string(),
            )
        })
        .collect()
}

async fn greedy_text(s: &ServerProcess) -> String {
    let r: Value = client()
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tiny-lm", "prompt": "Once upon", "max_tokens": 24}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    r["choices"][0]["text"].as_str().expect("text").to_string()
}

async fn load(s: &ServerProcess, name: &str, body: Option<Value>) -> (u16, String) {
    let mut req = client().post(s.url(&format!("/v2/repository/models/{name}/load")));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("POST load");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn versions_come_from_the_flag_or_default_to_one() {
    let s = ServerProcess::start(&["--model", "tiny-lm=lm@a1", "--model", "mlp=mlp"], &[]);
    let v = versions(&s).await;
    assert!(v.contains(&("tiny-lm".into(), "a1".into())), "{v:?}");
    assert!(v.contains(&("mlp".into(), "1".into())), "{v:?}");
}

#[tokio::test]
async fn a_load_swaps_in_the_latest_version_without_dropping_open_streams() {
    let repo = tempfile::tempdir().expect("tempdir");
    save_lm(repo.path(), "2", 99);
    save_lm(repo.path(), "10", 7);
    let dir = repo.path().to_str().expect("utf8 path");
    // Slow decode steps keep the streams open across the swap.
    let s = ServerProcess::start(
        &["--model", "tiny-lm=lm", "--model-repository", dir],
        &[("SERVER_FAULT_STEP_DELAY_MS", "5")],
    );
    let before = greedy_text(&s).await;
    let url = s.url("/v1/completions");
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .json(&json!({"model": "tiny-lm", "prompt": format!("stream {i}"),
                                  "max_tokens": 120, "stream": true,
                                  "stream_options": {"include_usage": true}}))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(r.status(), 200);
                sse_data(&r.text().await.expect("body"))
            })
        })
        .collect();
    // Wait until every stream is decoding, then load.
    common::eventually(
        std::time::Duration::from_secs(30),
        "6 sequences running",
        || {
            let s = &s;
            async move {
                let m = common::metrics_text(s).await;
                m.lines()
                    .filter(|l| l.contains("num_requests_running") && l.contains("tiny-lm"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .any(|v| v >= 6.0)
                    .then_some(())
            }
        },
    )
    .await;
    let (status, body) = load(&s, "tiny-lm", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(versions(&s)
        .await
        .contains(&("tiny-lm".into(), "10".into())));
    for t in streams {
        let data = t.await.expect("stream task");
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let usage: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage");
        assert_eq!(
            usage["usage"]["completion_tokens"], 120,
            "stream finished whole"
        );
        assert!(
            data.iter().all(|d| !d.contains("\"error\"")),
            "no error event"
        );
    }
    let after = greedy_text(&s).await;
    assert_ne!(before, after, "the new weights answer");
    // An explicit older version, then the index shows which one serves.
    let (status, body) = load(&s, "tiny-lm", Some(json!({"parameters": {"version": "2"}}))).await;
    assert_eq!(status, 200, "{body}");
    let index: Value = client()
        .post(s.url("/v2/repository/index"))
        .send()
        .await
        .expect("POST index")
        .json()
        .await
        .expect("JSON");
    let ready: Vec<&Value> = index
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["name"] == "tiny-lm" && r["state"] == "READY")
        .collect();
    assert_eq!(ready.len(), 1, "{index}");
    assert_eq!(ready[0]["version"], "2");
}

#[tokio::test]
async fn bad_loads_are_refused_in_kserve_shape_and_change_nothing() {
    let repo = tempfile::tempdir().expect("tempdir");
    let d = repo.path().join("mlp").join("5");
    std::fs::create_dir_all(&d).expect("mkdir");
    let narrow = MlpConfig {
        input_dim: 8,
        ..MlpConfig::default()
    };
    Mlp::seeded(narrow, 1)
        .expect("model")
        .save(&d.join("model.safetensors"))
        .expect("save");
    let dir = repo.path().to_str().expect("utf8 path");
    let s = ServerProcess::start(&["--model-repository", dir], &[]);
    for (name, body, says) in [
        ("mlp", None, "interface"),
        (
            "mlp",
            Some(json!({"parameters": {"version": "9"}})),
            "`9` is not in",
        ),
        ("tiny-lm", None, "no version of `tiny-lm`"),
        ("nope", None, "not loaded"),
    ] {
        let (status, text) = load(&s, name, body).await;
        assert_eq!(status, 400, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert!(
            v["error"].as_str().expect("KServe shape").contains(says),
            "{v}"
        );
    }
    assert!(versions(&s).await.contains(&("mlp".into(), "1".into())));
    let plain = ServerProcess::start(&[], &[]);
    let (status, text) = load(&plain, "mlp", None).await;
    assert_eq!(status, 400);
    assert!(text.contains("--model-repository"), "{text}");
}
