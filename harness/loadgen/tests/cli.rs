//! `faultline load` end to end against a real loopback server: the human summary and the
//! JSON report say what was measured, and the verdict gives the exit status.

mod common;

use clap::Parser;
use common::*;
use http::StatusCode;
use loadgen::cli::{execute, LoadArgs, Output, Verdict};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn args(list: &[&str]) -> LoadArgs {
    Cli::try_parse_from(std::iter::once("load").chain(list.iter().copied()))
        .expect("valid flags")
        .load
}

async fn load(list: &[&str]) -> Output {
    execute(&args(list), CancellationToken::new())
        .await
        .expect("runs")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_summary_shows_corrected_service_lag_and_accounting() {
    let server = ok_server().await;
    let url = format!("{}hello", server.uri());
    let out = load(&[&url, "--rate", "100", "--duration", "500ms", "-c", "2"]).await;
    assert_eq!(out.verdict, Verdict::Ran);
    assert_eq!(out.verdict.exit_code(), 0);
    let out = out.text;
    for needle in [
        "open loop, 100/s constant",
        "mean",
        "stdev",
        "corrected",
        "service",
        "send lag",
        "Requests: sent 50, ok 50, errors 0, timeouts 0, dropped by generator 0 (balanced)",
        "Requests/sec:",
        "Successes/sec:",
        "Transfer/sec:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("n/a"), "every request succeeded:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_of_a_closed_loop_run_is_balanced_and_labelled_uncorrected() {
    let server = ok_server().await;
    let url = server.uri().to_string();
    let closed = &[&url, "--closed-loop", "--duration", "300ms", "-c", "2"];
    let out = load(&[closed.as_slice(), &["--json"]].concat()).await;
    assert_eq!(out.verdict, Verdict::Ran);
    let v = json(&out);
    assert_eq!(v["balanced"], true);
    assert_eq!(v["mode"], "closed-loop");
    assert_eq!(v["latency_corrected"], false);
    assert_eq!(v["verdict"], "ran");
    let m = &v["measured"];
    let ok = m["counts"]["ok"].as_u64().expect("ok count");
    assert!(ok > 0);
    assert!(m["latency"]["p99_us"].as_u64().is_some());
    assert_eq!(
        m["latency"], m["service"],
        "no schedule: corrected = service"
    );
    assert!(m["service"]["mean_us"].as_f64().is_some());
    assert!(m["service"]["stdev_us"].as_f64().is_some());
    // Every response is the server's "ok", headers and all.
    let bytes = m["bytes_read"].as_u64().expect("bytes_read");
    assert!(
        bytes >= ok * "HTTP/1.1 200 OK\r\n\r\nok".len() as u64,
        "{m}"
    );
    assert!(m["bytes_read_per_s"].as_f64().expect("per s") > 0.0);
    assert_eq!(m["successes_per_s"], m["throughput_per_s"]);

    let text = load(closed).await.text;
    assert!(text.contains("corrected = service"), "{text}");
    let rows: Vec<&str> = text.lines().map(str::trim_start).collect();
    assert!(rows.iter().any(|l| l.starts_with("service")), "{text}");
    assert!(!rows.iter().any(|l| l.starts_with("corrected")), "{text}");
    assert!(!rows.iter().any(|l| l.starts_with("send lag")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_where_nothing_listens_lists_the_errors_and_exits_non_zero() {
    let url = format!("{}", refused_uri().await);
    let run = &[&url, "--rate", "50", "--duration", "200ms"];
    let out = load(run).await;
    assert_eq!(out.verdict, Verdict::NoRequestSucceeded);
    assert_eq!(out.verdict.exit_code(), 1);
    let text = &out.text;
    assert!(text.contains("Errors: connect_refused 10"), "{text}");
    assert!(text.contains("No request succeeded"), "{text}");
    // Nothing succeeded, so there is no latency; the send lag of the refused requests is
    // a real figure and may well be 0 us.
    for name in ["corrected", "service"] {
        let row = text.lines().find(|l| l.trim_start().starts_with(name));
        let row = row.unwrap_or_else(|| panic!("no {name} row:\n{text}"));
        assert_eq!(row.matches("n/a").count(), 8, "{row}");
        assert!(
            !row.contains("0us"),
            "an empty histogram is not 0 us: {row}"
        );
    }
    assert!(text.contains("Successes/sec:       0.00"), "{text}");

    let out = load(&[run.as_slice(), &["--json"]].concat()).await;
    assert_eq!(out.verdict, Verdict::NoRequestSucceeded);
    let v = json(&out);
    assert_eq!(v["verdict"], "no-request-succeeded");
    assert_eq!(v["mode"], "open-loop");
    assert_eq!(v["latency_corrected"], true);
    let latency = &v["measured"]["latency"];
    assert_eq!(latency["count"], 0);
    assert!(
        latency["p99_us"].is_null() && latency["mean_us"].is_null(),
        "{latency}"
    );
    assert_eq!(v["measured"]["bytes_read"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_count_in_requests_per_second_but_not_in_successes() {
    let server = serve(|_req| async { full(StatusCode::SERVICE_UNAVAILABLE, "busy") }).await;
    let url = server.uri().to_string();
    let out = load(&[&url, "--rate", "20", "--duration", "1s", "--json"]).await;
    assert_eq!(
        out.verdict,
        Verdict::NoRequestSucceeded,
        "a 503 is no success"
    );
    let v = json(&out);
    // Fine windows start in seconds, like the 1 s windows; each target names its URL.
    assert_eq!(
        v["fine"][1]["start_s"].as_f64(),
        Some(0.1),
        "{}",
        v["fine"][1]
    );
    assert_eq!(v["targets"][0]["url"].as_str(), Some(url.as_str()));
    let m = &v["measured"];
    assert_eq!(m["counts"]["errors"]["http_503"], 20);
    assert!(m["responses"].as_u64().expect("responses") > 0, "{m}");
    assert!(
        m["requests_per_s"].as_f64().expect("requests/s") > 0.0,
        "{m}"
    );
    assert_eq!(m["successes_per_s"], 0.0);
    assert_eq!(m["completed"], 0);
    assert!(m["bytes_read"].as_u64().expect("bytes") >= 20 * "HTTP/1.1 503".len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_target_shows_drops_and_latency_over_all_requests_at_least_the_timeout() {
    // Nothing is ever answered: 2 connections each hold a request for the 300 ms timeout,
    // so most of the 100 requests wait longer than that for a connection and are dropped.
    let server = silent().await;
    let url = server.uri().to_string();
    let run = &[
        &url,
        "--rate",
        "100",
        "--duration",
        "1s",
        "-c",
        "2",
        "--timeout",
        "300ms",
    ];
    let out = load(&[run.as_slice(), &["--json"]].concat()).await;
    let v = json(&out);
    assert_eq!(v["balanced"], true);
    let m = &v["measured"];
    let c = &m["counts"];
    let sent = c["sent"].as_u64().expect("sent");
    let dropped = c["dropped_by_generator"].as_u64().expect("dropped");
    assert_eq!(sent, 100);
    assert_eq!(
        sent,
        c["timeouts"].as_u64().expect("timeouts") + dropped,
        "{c}"
    );
    assert!(dropped > 1, "{c}");
    assert_eq!(m["drop_share"].as_f64(), Some(dropped as f64 / sent as f64));
    assert_eq!(m["latency"]["count"], 0, "no success");
    // Every request counts in `latency_all`: a timeout at least 300 ms, a drop its wait
    // for a connection, which was longer than the timeout.
    let all = &m["latency_all"];
    assert_eq!(all["count"].as_u64(), Some(sent), "{all}");
    assert!(all["p50_us"].as_u64().expect("p50") >= 300_000, "{all}");
    // The drops, and the sends that waited (for a connection) far past the schedule.
    let warnings = v["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let warning = warnings[0].as_str().expect("text");
    assert!(
        warning.starts_with("WARNING: ") && warning.contains("dropped by the generator"),
        "{warning}"
    );
    let late = warnings[1].as_str().expect("text");
    assert!(late.contains("did not hold its schedule"), "{late}");

    let text = load(run).await.text;
    let rows: Vec<&str> = text.lines().map(str::trim_start).collect();
    let all = rows.iter().find(|l| l.starts_with("all")).expect("all row");
    assert!(all.ends_with(" 100"), "{text}");
    assert!(rows.iter().any(|l| l.starts_with("Dropped by generator: ")));
    assert!(rows.iter().any(|l| l.starts_with("WARNING: ")), "{text}");
}
