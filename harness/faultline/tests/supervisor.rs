//! The process supervisor with the real `server` binary: restart policies, and no orphan
//! when the runner panics.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use faultline::events::{EventLog, RunClock};
use faultline::supervisor::{Health, ReplicaSpec, Supervisor};
use nix::sys::signal::Signal;
use scenario::{ComponentKind, Readiness, Restart, RestartPolicy};
use tokio_util::sync::CancellationToken;

fn spec(dir: &std::path::Path, policy: RestartPolicy) -> ReplicaSpec {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    ReplicaSpec {
        name: "server/0".into(),
        component: "server".into(),
        kind: ComponentKind::Server,
        program: common::bin_dir().join("server"),
        args: vec!["--listen".into(), addr.to_string()],
        env: BTreeMap::new(),
        addr,
        public: addr,
        region: "default".into(),
        restart: Restart {
            policy,
            max_restarts: 2,
            backoff: Duration::from_millis(50),
        },
        readiness: Readiness::default(),
        probe: faultline::supervisor::Probe::Http("/readyz".into()),
        log_path: dir.join("server-0.log"),
        netns: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_killed_replica_is_restarted_on_failure_until_the_budget_runs_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events =
        EventLog::create(&dir.path().join("events.jsonl"), RunClock::start()).expect("log");
    runtime().block_on(async {
        let sup = Supervisor::start(
            vec![spec(dir.path(), RestartPolicy::OnFailure)],
            &events,
            Duration::from_secs(5),
        );
        let cancel = CancellationToken::new();
        for round in 0..3 {
            sup.wait_ready(&cancel).await.expect("ready");
            let r = &sup.replicas()[0];
            assert_eq!(r.restarts(), round);
            let pid = r.pid().expect("running");
            faultline::faults::signal(pid, Signal::SIGKILL).expect("kill");
            assert!(
                common::eventually_async(Duration::from_secs(5), || r.pid() != Some(pid)).await,
                "the supervisor saw the kill"
            );
        }
        // Budget of 2 restarts spent: the third kill leaves it down.
        let r = sup.replicas()[0].clone();
        let down = || matches!(r.health(), Health::Down(_));
        assert!(
            common::eventually_async(Duration::from_secs(5), down).await,
            "{:?}",
            r.health()
        );
        assert_eq!(r.lives().len(), 3);
        assert!(r
            .lives()
            .iter()
            .all(|l| l.how.as_deref().is_some_and(|h| h.contains("SIGKILL"))));
        sup.shutdown().await;
    });
}

#[test]
fn a_clean_exit_is_not_restarted_on_failure_and_shutdown_drains_with_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events =
        EventLog::create(&dir.path().join("events.jsonl"), RunClock::start()).expect("log");
    runtime().block_on(async {
        let sup = Supervisor::start(
            vec![spec(dir.path(), RestartPolicy::OnFailure)],
            &events,
            Duration::from_secs(5),
        );
        sup.wait_ready(&CancellationToken::new())
            .await
            .expect("ready");
        let r = sup.replicas()[0].clone();
        let pid = r.pid().expect("running");
        // SIGTERM: the server drains and exits 0, which on-failure does not restart.
        faultline::faults::signal(pid, Signal::SIGTERM).expect("term");
        let down = || matches!(r.health(), Health::Down(_));
        assert!(
            common::eventually_async(Duration::from_secs(15), down).await,
            "{:?}",
            r.health()
        );
        assert_eq!(r.lives().len(), 1);
        assert_eq!(r.lives()[0].how.as_deref(), Some("exit 0"));
        sup.shutdown().await;
        assert!(!common::alive(pid));
    });
}

#[test]
fn a_panicking_runner_leaves_no_process_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events =
        EventLog::create(&dir.path().join("events.jsonl"), RunClock::start()).expect("log");
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = pid.clone();
    let spec = spec(dir.path(), RestartPolicy::Always);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime().block_on(async {
            let sup = Supervisor::start(vec![spec], &events, Duration::from_secs(5));
            sup.wait_ready(&CancellationToken::new())
                .await
                .expect("ready");
            seen.store(
                sup.replicas()[0].pid().expect("running"),
                std::sync::atomic::Ordering::SeqCst,
            );
            // Pause it too: a panic must not leave a stopped process either.
            let _guard = faultline::faults::PauseGuard::pause(vec![sup.replicas()[0]
                .pid()
                .expect("running")])
            .expect("pause");
            panic!("the runner fails mid-run");
        })
    }));
    assert!(result.is_err());
    let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(pid, 0);
    assert!(
        common::eventually(Duration::from_secs(5), || !common::alive(pid)),
        "pid {pid} outlived the panic"
    );
}

/// The state letter of a process (`T` when stopped).
fn state(pid: u32) -> Option<char> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
        .flatten()
}

#[test]
fn a_dropped_timeline_heals_the_faults_it_injected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events =
        EventLog::create(&dir.path().join("events.jsonl"), RunClock::start()).expect("log");
    runtime().block_on(async {
        let sup = Supervisor::start(
            vec![spec(dir.path(), RestartPolicy::Never)],
            &events,
            Duration::from_secs(5),
        );
        sup.wait_ready(&CancellationToken::new())
            .await
            .expect("ready");
        let pid = sup.replicas()[0].pid().expect("running");
        let pause = scenario::Fault {
            id: None,
            at: Duration::ZERO,
            kind: scenario::FaultKind::ProcessPause,
            target: Some("server".into()),
            until: Some(Duration::from_secs(3600)),
            multiplier: None,
            mode: None,
            steps: None,
            factor: None,
            limit_bytes: None,
            backoff: None,
            after_step: None,
            regions: None,
            period: None,
            latency: None,
            jitter: None,
            rate_kbps: None,
            status: None,
            ratio: None,
        };
        let timeline = faultline::timeline::Timeline::start(vec![pause], &sup, &events);
        assert!(
            common::eventually_async(Duration::from_secs(5), || state(pid) == Some('T')).await,
            "the timeline paused the server"
        );
        // An early return, a panic or an aborted runner task: the timeline is dropped
        // without `finish`, long before the fault's `until`.
        drop(timeline);
        assert!(
            common::eventually_async(Duration::from_secs(5), || state(pid) != Some('T')).await,
            "dropping the timeline resumed the server"
        );
        sup.shutdown().await;
    });
}
