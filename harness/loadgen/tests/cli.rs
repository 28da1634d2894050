//! `faultline load` end to end against a real loopback server: the human summary and the
//! JSON report say what was measured.

mod common;

use clap::Parser;
use common::*;
use loadgen::cli::{execute, LoadArgs};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_summary_shows_corrected_service_lag_and_accounting() {
    let server = ok_server().await;
    let url = format!("{}hello", server.uri());
    let out = execute(
        &args(&[&url, "--rate", "100", "--duration", "500ms", "-c", "2"]),
        CancellationToken::new(),
    )
    .await
    .expect("runs");
    for needle in [
        "open loop, 100/s constant",
        "corrected",
        "service",
        "send lag",
        "Requests: sent 50, ok 50, errors 0, timeouts 0, dropped by generator 0 (balanced)",
        "Requests/sec:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_of_a_closed_loop_run_is_balanced() {
    let server = ok_server().await;
    let url = server.uri().to_string();
    let out = execute(
        &args(&[
            &url,
            "--closed-loop",
            "--duration",
            "300ms",
            "-c",
            "2",
            "--json",
        ]),
        CancellationToken::new(),
    )
    .await
    .expect("runs");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["balanced"], true);
    assert!(v["measured"]["counts"]["ok"].as_u64().expect("ok count") > 0);
    assert!(v["measured"]["latency"]["p99_us"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_listed_by_kind() {
    let url = format!("{}", refused_uri().await);
    let out = execute(
        &args(&[&url, "--rate", "50", "--duration", "200ms"]),
        CancellationToken::new(),
    )
    .await
    .expect("runs");
    assert!(out.contains("Errors: connect_refused 10"), "{out}");
}
