//! `/metrics` of the real `server` binary as Prometheus tooling reads it: the format each
//! `Accept` header gets, the classic text format's structure, and `--metrics-names vllm`.
//! (`.ci/clients/prometheus_check.sh` adds `promtool` and a real Prometheus scrape.)

mod common;

use common::{client, metric, ServerProcess};
use serde_json::json;
use std::collections::{HashMap, HashSet};

const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What Prometheus 2.x sends by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `GET /metrics` with these `Accept` header lines: (Content-Type, Vary, body).
async fn scrape(s: &ServerProcess, accept: &[&str]) -> (String, String, String) {
    let mut request = client().get(s.url("/metrics"));
    for a in accept {
        request = request.header("accept", *a);
    }
    let r = request.send().await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
            .unwrap_or_default()
    };
    let (content_type, vary) = (header("content-type"), header("vary"));
    (content_type, vary, r.text().await.expect("body"))
}

/// One completion and one classifier request, so counters and histograms have samples.
async fn some_traffic(s: &ServerProcess) {
    let c = client();
    let r = c
        .post(s.url("/v1/completions"))
        .json(&json!({"model": "tiny-lm", "prompt": "hi", "max_tokens": 3}))
        .send()
        .await
        .expect("completion sent");
    assert_eq!(r.status(), 200);
    let r = c
        .post(s.url("/v2/models/mlp/infer"))
        .json(&common::infer_body(2, 256))
        .send()
        .await
        .expect("infer sent");
    assert_eq!(r.status(), 200);
}

/// What is wrong with `text` as the classic text format 0.0.4 (empty when nothing is):
/// every sample belongs to a family declared by a `# TYPE` line before it, with `# HELP`;
/// a family is declared once; counters are declared and sampled under their `_total`
/// name; no OpenMetrics-only lines (`# EOF`, `# UNIT`) or `_created` samples.
fn classic_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut helps: HashSet<&str> = HashSet::new();
    let mut sampled: HashSet<&str> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                problems.push(format!("{line}: not a 0.0.4 type"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                problems.push(format!(
                    "{line}: a counter's TYPE must name its _total sample"
                ));
            }
            if types.insert(name, kind).is_some() || sampled.contains(name) {
                problems.push(format!(
                    "{line}: family declared twice or after its samples"
                ));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helps.insert(rest.split_once(' ').map_or(rest, |(n, _)| n));
            continue;
        }
        if line.starts_with('#') {
            problems.push(format!("{line}: OpenMetrics-only line"));
            continue;
        }
        let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
        let value = line.rsplit(' ').next().unwrap_or("");
        if value.parse::<f64>().is_err() {
            problems.push(format!("{line}: value `{value}` is not a number"));
        }
        let family = if types.contains_key(name) {
            Some(name)
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|f| matches!(types.get(f), Some(&"histogram" | &"summary")))
        };
        match family {
            Some(f) => {
                sampled.insert(f);
            }
            None => problems.push(format!("{line}: no # TYPE declares `{name}` before it")),
        }
        if name.ends_with("_created") {
            problems.push(format!("{line}: _created samples are OpenMetrics-only"));
        }
    }
    for name in types.keys() {
        if !helps.contains(name) {
            problems.push(format!("{name}: no # HELP"));
        }
    }
    problems
}

#[tokio::test]
async fn metrics_are_classic_text_unless_accept_prefers_openmetrics() {
    let s = ServerProcess::start(&[], &[]);
    let cases: &[(&[&str], &str)] = &[
        (&[], CLASSIC),
        (&["*/*"], CLASSIC),
        (&["text/plain;version=0.0.4;q=1,*/*;q=0.1"], CLASSIC),
        (&["application/json"], CLASSIC),
        (&[PROMETHEUS_ACCEPT], OPENMETRICS),
        (&["application/openmetrics-text"], OPENMETRICS),
        // q-values decide, whatever the order; q=0 refuses.
        (
            &["text/plain;q=0.9, application/openmetrics-text;q=0.5"],
            CLASSIC,
        ),
        (
            &["application/openmetrics-text;q=0.5, text/plain;q=0.9"],
            CLASSIC,
        ),
        (
            &["text/plain;q=0.4, application/openmetrics-text;q=0.6"],
            OPENMETRICS,
        ),
        (&["application/openmetrics-text;q=0"], CLASSIC),
        (&["application/openmetrics-text;version=2.0.0"], CLASSIC),
        // Several Accept lines are one list.
        (
            &["text/plain;q=0.1", "application/openmetrics-text;q=0.9"],
            OPENMETRICS,
        ),
    ];
    for (accept, want) in cases {
        let (content_type, vary, body) = scrape(&s, accept).await;
        assert_eq!(content_type, *want, "Accept: {accept:?}");
        assert_eq!(vary, "accept", "Accept: {accept:?}");
        assert_eq!(
            body.ends_with("# EOF\n"),
            *want == OPENMETRICS,
            "Accept: {accept:?}\n{body}"
        );
    }
}

#[tokio::test]
async fn classic_text_is_structurally_valid_and_openmetrics_keeps_its_own_rules() {
    let s = ServerProcess::start(&[], &[]);
    some_traffic(&s).await;
    let (_, _, text) = scrape(&s, &[]).await;
    let problems = classic_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    for line in [
        "# TYPE faultline_requests_total counter",
        "# TYPE faultline_requests_shed_total counter",
        "# TYPE faultline_time_to_first_token_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            "faultline_generation_tokens_total{model=\"tiny-lm\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "faultline_requests_total{model=\"mlp\",status=\"200\"}"
        ),
        Some(1.0)
    );

    let (_, _, om) = scrape(&s, &[PROMETHEUS_ACCEPT]).await;
    for line in [
        "# TYPE faultline_requests counter",
        "# UNIT faultline_time_to_first_token_seconds seconds",
        "# EOF",
    ] {
        assert!(om.lines().any(|l| l == line), "missing {line} in\n{om}");
    }
    // The checker is not vacuous: OpenMetrics breaks the classic rules.
    assert!(!classic_problems(&om).is_empty());
    // The same samples in both formats.
    let samples = |t: &str| -> Vec<String> {
        let mut v: Vec<_> = t
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("faultline_connections_open"))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(samples(&text), samples(&om));
}

#[tokio::test]
async fn vllm_names_give_vllm_dashboards_their_series() {
    let s = ServerProcess::start(&["--metrics-names", "vllm"], &[]);
    some_traffic(&s).await;
    let (content_type, _, text) = scrape(&s, &[]).await;
    assert_eq!(content_type, CLASSIC);
    let problems = classic_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    let lm = "model_name=\"tiny-lm\",engine=\"0\"";
    for (series, want) in [
        (format!("vllm:generation_tokens_total{{{lm}}}"), Some(3.0)),
        (format!("vllm:prompt_tokens_total{{{lm}}}"), Some(2.0)),
        (format!("vllm:num_requests_running{{{lm}}}"), Some(0.0)),
        (format!("vllm:num_requests_waiting{{{lm}}}"), Some(0.0)),
        (
            format!("vllm:time_to_first_token_seconds_count{{{lm}}}"),
            Some(1.0),
        ),
        (
            format!("vllm:inter_token_latency_seconds_count{{{lm}}}"),
            Some(2.0),
        ),
        (
            format!("vllm:time_per_output_token_seconds_count{{{lm}}}"),
            Some(2.0),
        ),
        (
            format!("vllm:e2e_request_latency_seconds_count{{{lm}}}"),
            Some(1.0),
        ),
        (
            format!("vllm:request_queue_time_seconds_count{{{lm}}}"),
            Some(1.0),
        ),
        // vLLM's buckets, so its dashboards' `le` values exist.
        (
            format!("vllm:time_to_first_token_seconds_bucket{{le=\"2560.0\",{lm}}}"),
            Some(1.0),
        ),
        (
            format!("vllm:e2e_request_latency_seconds_bucket{{le=\"7680.0\",{lm}}}"),
            Some(1.0),
        ),
        // Families vLLM has not keep faultline's names.
        (
            "faultline_requests_total{model=\"tiny-lm\",status=\"200\"}".to_string(),
            Some(1.0),
        ),
        (
            "faultline_num_requests_running{model=\"tiny-lm\"}".to_string(),
            None,
        ),
    ] {
        assert_eq!(metric(&text, &series), want, "{series} in\n{text}");
    }
    assert!(text.contains("# TYPE vllm:prompt_tokens_total counter\n"));
    let (_, _, om) = scrape(&s, &[PROMETHEUS_ACCEPT]).await;
    assert!(om.contains("# TYPE vllm:prompt_tokens counter\n"), "{om}");
    assert!(om.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_names_come_from_the_environment_too() {
    let s = ServerProcess::start(&[], &[("SERVER_METRICS_NAMES", "vllm")]);
    let (_, _, text) = scrape(&s, &[]).await;
    assert!(
        text.contains("vllm:num_requests_running{model_name=\"mlp\",engine=\"0\"} 0"),
        "{text}"
    );
}

#[test]
fn an_unknown_metrics_names_value_exits_2_naming_the_choices() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--listen", "127.0.0.1:0", "--metrics-names", "triton"])
        .output()
        .expect("run the server binary");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics-names")
            && stderr.contains("faultline")
            && stderr.contains("vllm"),
        "{stderr}"
    );
}
