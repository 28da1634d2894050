//! Closed loop and max-throughput search against real loopback servers.

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use loadgen::{
    run_closed_loop, search_max_throughput, LoadSpec, OpenLoopSpec, RequestTemplate,
    SearchCriteria, TrialPurpose,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_keeps_every_connection_busy_and_balances() {
    let server = ok_server().await;
    let mut s = LoadSpec::new(vec![server.uri()], vec![RequestTemplate::get("/")]);
    s.connections = 2;
    s.warmup = ms(200);
    s.duration = ms(800);
    let r = run_closed_loop(&s, CancellationToken::new(), None)
        .await
        .expect("runs");
    assert!(r.balanced(), "{:?}", r.accounting);
    assert!(r.accounting.ok > 100, "{:?}", r.accounting);
    assert_eq!(r.accounting.ok, r.accounting.sent);
    assert!(r.measured.counts.sent > 0 && r.warmup.counts.sent > 0);
    // No schedule, so nothing to lag behind: intended send = actual send.
    assert_eq!(r.measured.stats.send_lag.max(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_a_refused_port_balances() {
    let mut s = LoadSpec::new(vec![refused_uri().await], vec![RequestTemplate::get("/")]);
    s.connections = 1;
    s.duration = ms(200);
    let r = run_closed_loop(&s, CancellationToken::new(), None)
        .await
        .expect("runs");
    assert!(r.balanced());
    assert!(r.accounting.sent > 0);
    assert_eq!(r.accounting.sent, r.accounting.failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_the_knee_of_a_concurrency_limited_server() {
    // Two requests at a time, 10 ms each: capacity about 200/s, queueing above it.
    let permits = Arc::new(tokio::sync::Semaphore::new(2));
    let server = serve(move |_req| {
        let permits = permits.clone();
        async move {
            let _p = permits.acquire().await.expect("never closed");
            tokio::time::sleep(ms(10)).await;
            full(StatusCode::OK, "ok")
        }
    })
    .await;
    let mut base = OpenLoopSpec::new(vec![server.uri()], vec![RequestTemplate::get("/")], 1.0);
    base.load.connections = 16;
    base.load.timeout = ms(500);
    let criteria = SearchCriteria {
        percentile: 99.0,
        latency_max: ms(100),
        error_ratio_max: 0.01,
        rate_min: 40.0,
        rate_max: 800.0,
        steps: 3,
        trial_warmup: ms(200),
        trial_duration: ms(1_000),
    };
    let r = search_max_throughput(&base, &criteria, CancellationToken::new())
        .await
        .expect("runs");
    let purposes: Vec<TrialPurpose> = r.trials.iter().map(|t| t.purpose).collect();
    assert_eq!(
        purposes[..5],
        [
            TrialPurpose::Bracket,
            TrialPurpose::Bracket,
            TrialPurpose::Bisect,
            TrialPurpose::Bisect,
            TrialPurpose::Bisect
        ],
        "steps = 3 bisection trials after the bracket"
    );
    assert!(r.trials[0].passed, "40/s is far below the knee");
    assert!(!r.trials[1].passed, "800/s is far above it");
    let best = r.best_rate_per_s.expect("a passing rate above the floor");
    assert!((40.0..=260.0).contains(&best), "best {best}");
    let repeats: Vec<&loadgen::Trial> = r
        .trials
        .iter()
        .filter(|t| t.purpose == TrialPurpose::Confirm && t.rate_per_s == best)
        .collect();
    assert_eq!(repeats.len(), 2, "the best rate held twice more");
    assert!(repeats.iter().all(|t| t.passed));
    for t in &r.trials {
        assert!(t.report.balanced());
    }
}
