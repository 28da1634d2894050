//! Open-loop behaviour against real loopback servers: accounting under every failure,
//! coordinated-omission correction, schedules, streaming and cancellation.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use http::{StatusCode, Uri};
use loadgen::{
    run_open_loop, Arrival, ErrorKind, LoadReport, OpenLoopSpec, RateStep, RequestTemplate,
};
use tokio_util::sync::CancellationToken;

fn spec(target: Uri, rate: f64, duration: Duration) -> OpenLoopSpec {
    let mut s = OpenLoopSpec::new(vec![target], vec![RequestTemplate::get("/")], rate);
    s.load.duration = duration;
    s.load.connections = 4;
    s.load.timeout = Duration::from_secs(2);
    s
}

async fn run(spec: &OpenLoopSpec) -> LoadReport {
    let report = run_open_loop(spec, CancellationToken::new(), None)
        .await
        .expect("run starts");
    assert!(report.balanced(), "accounting: {:?}", report.accounting);
    report
}

fn quantile_ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_rate_sends_rate_times_duration_and_all_succeed() {
    let server = ok_server().await;
    let mut s = spec(server.uri(), 200.0, ms(2_000));
    s.load.warmup = ms(500);
    let r = run(&s).await;
    assert_eq!(r.accounting.sent, 500, "i/rate over [0, 2.5 s)");
    assert_eq!(r.accounting.ok, 500);
    assert_eq!(r.warmup.counts.sent, 100);
    assert_eq!(r.measured.counts.sent, 400);
    assert!(r.windows.len() >= 3);
    assert_eq!(r.windows[0].counts.sent, 200);
    assert_eq!(r.fine[0].sent, 20);
    assert_eq!(r.measured.stats.latency.len(), 400);
    assert_eq!(r.measured.stats.send_lag.len(), 400);
    // Behaviour, not timing: a 200/s schedule on loopback is held to well under 50 ms.
    assert!(quantile_ms(&r.measured.stats.send_lag, 0.5) < 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_schedule_is_seeded_and_near_the_rate() {
    let server = ok_server().await;
    let mut s = spec(server.uri(), 300.0, ms(2_000));
    s.arrival = Arrival::Poisson;
    s.load.seed = 42;
    let a = run(&s).await;
    let b = run(&s).await;
    assert_eq!(
        a.accounting.sent, b.accounting.sent,
        "same seed, same schedule"
    );
    let fine_a: Vec<u64> = a.fine.iter().map(|f| f.sent).collect();
    let fine_b: Vec<u64> = b.fine.iter().map(|f| f.sent).collect();
    assert_eq!(fine_a, fine_b);
    assert!(
        (480..=720).contains(&a.accounting.sent),
        "{}",
        a.accounting.sent
    );
    s.load.seed = 43;
    let c = run(&s).await;
    let fine_c: Vec<u64> = c.fine.iter().map(|f| f.sent).collect();
    assert_ne!(fine_a, fine_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_statuses_are_counted_by_code() {
    let server = serve(|req| async move {
        match req.uri().path() {
            "/500" => full(StatusCode::INTERNAL_SERVER_ERROR, "boom"),
            "/429" => full(StatusCode::TOO_MANY_REQUESTS, "slow down"),
            _ => full(StatusCode::OK, "ok"),
        }
    })
    .await;
    let mut s = spec(server.uri(), 300.0, ms(1_000));
    s.load.requests = ["/500", "/429", "/ok"]
        .into_iter()
        .map(RequestTemplate::get)
        .collect();
    let r = run(&s).await;
    let e = &r.accounting.errors;
    assert!(e[&ErrorKind::HttpStatus(500)] > 50, "{e:?}");
    assert!(e[&ErrorKind::HttpStatus(429)] > 50, "{e:?}");
    assert!(r.accounting.ok > 50);
    assert_eq!(r.accounting.sent, 300);
    // Errors are not latency samples.
    assert_eq!(r.measured.stats.latency.len(), r.accounting.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_counts_connect_refused() {
    let s = spec(refused_uri().await, 100.0, ms(500));
    let r = run(&s).await;
    assert_eq!(r.accounting.sent, 50);
    assert_eq!(r.accounting.errors[&ErrorKind::ConnectRefused], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_count_connection_reset() {
    let server = resetting().await;
    let s = spec(server.uri(), 100.0, ms(500));
    let r = run(&s).await;
    assert_eq!(r.accounting.sent, 50);
    assert_eq!(r.accounting.ok, 0);
    assert!(
        r.accounting
            .errors
            .get(&ErrorKind::ConnectionReset)
            .copied()
            .unwrap_or(0)
            >= 40,
        "{:?}",
        r.accounting.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_gives_timeouts_and_generator_drops() {
    let server = silent().await;
    let mut s = spec(server.uri(), 100.0, ms(1_000));
    s.load.connections = 2;
    s.load.timeout = ms(300);
    let r = run(&s).await;
    assert_eq!(r.accounting.sent, 100);
    assert_eq!(r.accounting.ok, 0);
    assert!(r.accounting.timeouts >= 2, "{:?}", r.accounting);
    assert!(
        r.accounting.dropped_by_generator >= 50,
        "{:?}",
        r.accounting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_run_is_accounted() {
    let served = Arc::new(AtomicU64::new(0));
    let kill = Arc::new(OnceLock::<CancellationToken>::new());
    let (s2, k2) = (served.clone(), kill.clone());
    let server = serve(move |_req| {
        let (served, kill) = (s2.clone(), k2.clone());
        async move {
            if served.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                if let Some(k) = kill.get() {
                    k.cancel();
                }
            }
            full(StatusCode::OK, "ok")
        }
    })
    .await;
    let _ = kill.set(server.kill.clone());
    let s = spec(server.uri(), 200.0, ms(1_500));
    let r = run(&s).await;
    assert_eq!(r.accounting.sent, 300);
    assert!(
        r.accounting.ok >= 90 && r.accounting.ok <= 100,
        "{:?}",
        r.accounting
    );
    assert!(r.accounting.failed() >= 150, "{:?}", r.accounting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_server_is_charged_in_corrected_latency_not_service_time() {
    // Every response due between 1.0 s and 2.0 s after the first request waits until
    // 2.0 s. With 2 connections, the requests scheduled meanwhile queue in the generator.
    let first = Arc::new(OnceLock::<Instant>::new());
    let f2 = first.clone();
    let server = serve(move |_req| {
        let first = f2.clone();
        async move {
            let t0 = *first.get_or_init(Instant::now);
            let since = t0.elapsed();
            if since >= ms(1_000) && since < ms(2_000) {
                tokio::time::sleep_until((t0 + ms(2_000)).into()).await;
            }
            full(StatusCode::OK, "ok")
        }
    })
    .await;
    let mut s = spec(server.uri(), 200.0, ms(3_000));
    s.load.connections = 2;
    s.load.timeout = ms(5_000);
    let r = run(&s).await;
    assert_eq!(r.accounting.ok, 600);
    let lat = &r.measured.stats.latency;
    let service = &r.measured.stats.service;
    assert!(
        quantile_ms(lat, 0.99) >= 800.0,
        "p99 {}",
        quantile_ms(lat, 0.99)
    );
    assert!(lat.max() as f64 / 1000.0 >= 900.0, "max {}", lat.max());
    assert!(
        quantile_ms(service, 0.5) < 100.0,
        "service p50 {}",
        quantile_ms(service, 0.5)
    );
    // The stall shows up as send lag in the window it happened in.
    assert!(quantile_ms(&r.windows[1].stats.send_lag, 0.9) >= 300.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_records_ttft_itl_and_tpot() {
    let server = serve(|_req| async {
        let mut r = http::Response::new(sse_body(5, ms(10)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        r
    })
    .await;
    let mut s = spec(server.uri(), 50.0, ms(1_000));
    s.load.requests[0].streaming = true;
    let r = run(&s).await;
    let ok = r.accounting.ok;
    assert_eq!(ok, 50);
    let st = &r.measured.stats;
    assert_eq!(st.ttft.len(), ok);
    assert_eq!(st.itl.len(), ok * 4);
    assert_eq!(st.tpot.len(), ok);
    assert_eq!(st.output_tokens, ok * 5);
    assert!(
        quantile_ms(&st.itl, 0.5) >= 5.0,
        "itl {}",
        quantile_ms(&st.itl, 0.5)
    );
    assert!(quantile_ms(&st.tpot, 0.5) >= 5.0);
    // TTFT is before the end of the response.
    assert!(st.ttft.value_at_quantile(0.5) < st.latency.value_at_quantile(0.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_steps_raise_the_send_rate_in_the_step_interval() {
    let server = ok_server().await;
    let mut s = spec(server.uri(), 100.0, ms(3_000));
    s.rate_steps = vec![
        RateStep {
            at: ms(1_000),
            multiplier: 4.0,
        },
        RateStep {
            at: ms(2_000),
            multiplier: 1.0,
        },
    ];
    let r = run(&s).await;
    let sent: Vec<u64> = r.windows.iter().map(|w| w.counts.sent).collect();
    assert_eq!(sent[..3], [100, 400, 100]);
    assert_eq!(r.windows[1].counts.ok, 400);
    // They really went out in that second: completions follow the schedule.
    assert!(r.windows[1].completed >= 350, "{}", r.windows[1].completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_the_schedule_and_keeps_accounting() {
    let server = ok_server().await;
    let s = spec(server.uri(), 200.0, ms(30_000));
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::watch::channel(loadgen::Progress::default());
    let c2 = cancel.clone();
    let watcher = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if rx.borrow().sent >= 50 {
                c2.cancel();
                break;
            }
        }
    });
    let r = run_open_loop(&s, cancel, Some(tx)).await.expect("runs");
    watcher.await.expect("watcher");
    assert!(r.balanced());
    assert!(
        r.accounting.sent >= 50 && r.accounting.sent < 2_000,
        "{:?}",
        r.accounting
    );
    assert!(r.measured.end < ms(30_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_share_the_schedule_round_robin_and_the_mix_follows_weights() {
    let counter = || {
        let n = Arc::new(AtomicU64::new(0));
        let paths = Arc::new(AtomicU64::new(0));
        (n, paths)
    };
    let (a_n, a_heavy) = counter();
    let (b_n, b_heavy) = counter();
    let server = |n: Arc<AtomicU64>, heavy: Arc<AtomicU64>| {
        serve(move |req| {
            let (n, heavy) = (n.clone(), heavy.clone());
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                if req.uri().path() == "/heavy" {
                    heavy.fetch_add(1, Ordering::SeqCst);
                }
                full(StatusCode::OK, "ok")
            }
        })
    };
    let a = server(a_n.clone(), a_heavy.clone()).await;
    let b = server(b_n.clone(), b_heavy.clone()).await;
    let mut s = spec(a.uri(), 400.0, ms(1_000));
    s.load.targets.push(b.uri());
    s.load.requests = vec![
        RequestTemplate::get("/light"),
        RequestTemplate {
            weight: 3.0,
            ..RequestTemplate::get("/heavy")
        },
    ];
    let r = run(&s).await;
    assert_eq!(r.accounting.ok, 400);
    assert_eq!(a_n.load(Ordering::SeqCst), 200);
    assert_eq!(b_n.load(Ordering::SeqCst), 200);
    let heavy = a_heavy.load(Ordering::SeqCst) + b_heavy.load(Ordering::SeqCst);
    assert!(
        (250..=350).contains(&heavy),
        "heavy {heavy} of 400 at weight 3:1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_thread_count_releases_the_same_schedule_and_accounts_for_every_request() {
    let (a_n, b_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counting = |n: Arc<AtomicU64>| {
        serve(move |_req| {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                full(StatusCode::OK, "ok")
            }
        })
    };
    let a = counting(a_n.clone()).await;
    let b = counting(b_n.clone()).await;
    let mut s = spec(a.uri(), 400.0, ms(1_000));
    s.load.targets.push(b.uri());
    s.load.connections = 3;
    // 1 thread; 3 (target 0's connections split 2:1 between threads); 6 (one connection
    // each); 50 (clamped to the 6 connections).
    let mut before = (0, 0);
    for threads in [1, 3, 6, 50] {
        let r = loadgen::run_open_loop_on(&s, threads, CancellationToken::new(), None)
            .await
            .expect("run starts");
        assert!(r.balanced(), "{threads} threads: {:?}", r.accounting);
        assert_eq!(r.accounting.sent, 400, "{threads} threads");
        assert_eq!(r.accounting.ok, 400, "{threads} threads");
        assert_eq!(r.measured.stats.send_lag.len(), 400, "{threads} threads");
        let now = (a_n.load(Ordering::SeqCst), b_n.load(Ordering::SeqCst));
        assert_eq!(
            (now.0 - before.0, now.1 - before.1),
            (200, 200),
            "{threads} threads: targets take turns"
        );
        before = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_target_counts_show_which_target_took_the_failures() {
    let good = ok_server().await;
    let bad = refused_uri().await;
    let mut s = spec(good.uri(), 200.0, ms(1_000));
    s.load.targets.push(bad);
    let r = run(&s).await;
    assert_eq!(r.targets.len(), 2);
    let (a, b) = (&r.targets[0].counts, &r.targets[1].counts);
    assert_eq!((a.sent, a.ok, a.failed()), (100, 100, 0));
    assert_eq!((b.sent, b.ok), (100, 0));
    assert_eq!(b.errors.get(&ErrorKind::ConnectRefused), Some(&100));
    assert_eq!(r.targets[0].latency.len(), 100);
    assert!(r.targets[1].latency.is_empty());
    assert_eq!(r.targets[1].latency_all.len(), 100);
    let summary = r.summary();
    assert_eq!(summary.targets[1].counts, *b);
    assert_eq!(summary.targets[1].latency.p99_us, None);
}

/// A server that holds every response until `open` is sent, counting the requests it
/// holds at once (each on a connection of its own: one request in flight per connection).
async fn gated_server(
    open: tokio::sync::watch::Receiver<bool>,
) -> (TestServer, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (held, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (h2, m2) = (held.clone(), most.clone());
    let server = serve(move |_req| {
        let (held, most, mut open) = (h2.clone(), m2.clone(), open.clone());
        async move {
            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let _ = open.wait_for(|o| *o).await;
            held.fetch_sub(1, Ordering::SeqCst);
            full(StatusCode::OK, "ok")
        }
    })
    .await;
    (server, held, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_due_with_every_connection_busy_gets_a_new_one_up_to_max_connections() {
    // 20 requests over 1 s against a server that answers none until all 20 are held:
    // with room to grow, each request due while the 2 initial connections are busy opens
    // its own, and none waits for another's response.
    let (open, rx) = tokio::sync::watch::channel(false);
    let (server, held, most) = gated_server(rx).await;
    let mut s = spec(server.uri(), 20.0, ms(1_000));
    s.load.connections = 2;
    s.load.timeout = ms(10_000);
    s.max_connections = Some(30);
    let release = tokio::spawn(async move {
        let deadline = Instant::now() + ms(8_000);
        while held.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
            tokio::time::sleep(ms(10)).await;
        }
        let _ = open.send(true);
    });
    let r = run(&s).await;
    release.await.expect("release task");
    assert_eq!(r.accounting.ok, 20, "{:?}", r.accounting);
    assert_eq!(most.load(Ordering::SeqCst), 20, "requests held at once");
    assert_eq!(
        (
            r.connections.initial,
            r.connections.added,
            r.connections.limit
        ),
        (2, 18, 30)
    );
    assert_eq!(r.summary().connections, r.connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_stops_growing_at_max_connections_and_the_rest_wait_for_a_free_one() {
    let (open, rx) = tokio::sync::watch::channel(false);
    let (server, _held, most) = gated_server(rx).await;
    let mut s = spec(server.uri(), 20.0, ms(1_000));
    s.load.connections = 2;
    s.load.timeout = ms(10_000);
    s.max_connections = Some(4);
    // Opened after the whole schedule has come due (1 s): 16 requests wait until then.
    let release = tokio::spawn(async move {
        tokio::time::sleep(ms(1_500)).await;
        let _ = open.send(true);
    });
    let r = run(&s).await;
    release.await.expect("release task");
    assert_eq!(r.accounting.ok, 20, "{:?}", r.accounting);
    assert_eq!(most.load(Ordering::SeqCst), 4, "requests held at once");
    assert_eq!((r.connections.added, r.connections.limit), (2, 4));
    // The last request was due at 0.95 s and could not be sent before the gate opened.
    assert!(
        r.measured.stats.send_lag.max() >= 400_000,
        "send lag max {} us",
        r.measured.stats.send_lag.max()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_on_every_load_thread_to_its_limit_per_target() {
    // Two targets, two load threads: each target's 3 extra connections are shared by the
    // threads holding its connections, and the limit holds per target.
    let (open, rx) = tokio::sync::watch::channel(false);
    let (a, _, most_a) = gated_server(rx.clone()).await;
    let (b, _, most_b) = gated_server(rx).await;
    let mut s = spec(a.uri(), 40.0, ms(1_000));
    s.load.targets.push(b.uri());
    s.load.connections = 2;
    s.load.timeout = ms(10_000);
    s.max_connections = Some(5);
    let release = tokio::spawn(async move {
        tokio::time::sleep(ms(1_500)).await;
        let _ = open.send(true);
    });
    let r = loadgen::run_open_loop_on(&s, 2, CancellationToken::new(), None)
        .await
        .expect("run starts");
    release.await.expect("release task");
    assert!(r.balanced());
    assert_eq!(r.accounting.ok, 40, "{:?}", r.accounting);
    assert_eq!(
        (most_a.load(Ordering::SeqCst), most_b.load(Ordering::SeqCst)),
        (5, 5)
    );
    assert_eq!(
        (
            r.connections.initial,
            r.connections.added,
            r.connections.limit
        ),
        (4, 6, 10)
    );
}

#[tokio::test]
async fn max_connections_below_connections_is_rejected_naming_the_field() {
    let mut s = spec(Uri::from_static("http://127.0.0.1:1"), 10.0, ms(100));
    s.max_connections = Some(2);
    let err = run_open_loop(&s, CancellationToken::new(), None)
        .await
        .expect_err("invalid");
    assert!(
        err.to_string()
            .contains("max_connections = 2: expected at least `connections`"),
        "{err}"
    );
}
