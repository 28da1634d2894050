//! Verdicts are promises: runs with real processes where something unplanned happens, or a
//! planned fault does not, must fail however loose their SLOs; faults play in every mode.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use faultline::runner::{self, ProgressMode, RunOptions, RunOutcome};
use tokio_util::sync::CancellationToken;

/// Runs the scenario text `toml` (written to a temporary file) with the workspace binaries.
fn run(name: &str, toml: &str, reports: &Path) -> RunOutcome {
    let file = reports.join(format!("{name}.toml"));
    std::fs::write(&file, toml).expect("write scenario");
    let opts = RunOptions {
        reports_dir: reports.to_path_buf(),
        bin_dir: Some(common::bin_dir()),
        progress: ProgressMode::Quiet,
        ..RunOptions::default()
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(runner::run_file(&file, &opts, CancellationToken::new()))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The run's `events.jsonl` entries of one kind.
fn events(outcome: &RunOutcome, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(outcome.dir.join("events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == kind)
        .collect()
}

const LOOSE_SERVING: &str = r#"
[[components]]
name = "server"
kind = "server"

[workload]
target = "server"
rate_per_s = 20
arrival = "constant"
warmup = "500ms"
duration = "4s"
timeout = "2s"
connections = 2

[[workload.requests]]
kind = "infer"
model = "mlp"

[[slo]]
kind = "availability"
phase = "measured"
ratio_min = 0.0
"#;

#[test]
fn a_server_that_aborts_mid_run_fails_the_run_despite_loose_slos() {
    let reports = tempfile::tempdir().expect("temp dir");
    let dir = reports.path().to_path_buf();
    // Abort the server 1 s into the measured phase (after the 500 ms warmup that follows
    // `load.start`), as a crash would: nothing on the timeline.
    let killer = std::thread::spawn(move || {
        let mut pid = None;
        let mut load_start = None;
        assert!(
            common::eventually(Duration::from_secs(60), || {
                let log = walk_events(&dir);
                let first = |kind: &str| log.iter().find(|e| e["event"] == kind).cloned();
                pid = first("process.ready").and_then(|e| e["pid"].as_u64());
                load_start = first("load.start")
                    .and_then(|e| e["wall"].as_str().map(humantime::parse_rfc3339))
                    .map(|wall| wall.expect("events.jsonl stamps RFC 3339 wall times"));
                pid.is_some() && load_start.is_some()
            }),
            "the server never became ready or the load never started"
        );
        let pid = u32::try_from(pid.unwrap_or(0)).expect("a pid");
        let measured = load_start.expect("waited for above") + Duration::from_millis(1500);
        // A wait for a moment on the scenario's clock (the measured phase), not for a state.
        assert!(
            common::eventually(Duration::from_secs(10), || SystemTime::now() >= measured),
            "the clock reached the measured phase"
        );
        faultline::faults::signal(pid, nix::sys::signal::Signal::SIGABRT).expect("abort");
    });
    let outcome = run("aborting-server", LOOSE_SERVING, reports.path());
    killer.join().expect("killer thread");
    let m = &outcome.metrics;
    assert!(m.slos.iter().all(|s| s.pass), "{:?}", m.slos);
    assert!(!m.passed(), "an unplanned exit must fail the run");
    assert!(
        m.failures.iter().any(|f| f.starts_with("server/0 (pid ")
            && f.contains("SIGABRT")
            && f.contains("no fault on the timeline explains")),
        "{:?}",
        m.failures
    );
    let causes: Vec<Option<&str>> = m.processes[0]
        .lives
        .iter()
        .map(|l| l.cause.as_deref())
        .collect();
    assert_eq!(
        causes,
        [Some("UNPLANNED"), Some("stopped by the runner")],
        "restarted once by on-failure, then stopped at the end"
    );
    let junit = std::fs::read_to_string(outcome.dir.join("junit.xml")).expect("junit.xml");
    assert!(junit.contains("SIGABRT"), "JUnit carries the failure");
}

/// Every `events.jsonl` under `dir`, concatenated.
fn walk_events(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "events.jsonl") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.extend(
                    text.lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
                );
            }
        }
    }
    out
}

#[test]
fn a_planned_kill_is_charged_to_its_fault_and_the_run_passes() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = format!(
        "{LOOSE_SERVING}\n[[faults]]\nid = \"kill\"\nat = \"2s\"\nkind = \"process.kill\"\ntarget = \"server\"\n"
    );
    let outcome = run("planned-kill", &scenario, reports.path());
    let m = &outcome.metrics;
    assert!(m.passed(), "{:?}", m.failures);
    let causes: Vec<Option<&str>> = m.processes[0]
        .lives
        .iter()
        .map(|l| l.cause.as_deref())
        .collect();
    assert_eq!(causes, [Some("fault kill"), Some("stopped by the runner")]);
    // The machine beside the run: CPU and memory per process, the host's load.
    let ids: Vec<&str> = m.charts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cpu", "memory", "host"]);
    let memory = &m.charts[1].series[0];
    assert_eq!(memory.name, "server/0");
    assert!(memory.points.iter().any(|p| p.1 > 1.0), "{memory:?}");
    assert!(m
        .figures
        .iter()
        .any(|f| f.name == "server_0_peak_rss_mib" && f.value > 1.0));
    assert!(outcome.dir.join("chart-host.svg").is_file() || outcome.dir.join("host.svg").is_file());
}

#[test]
fn faults_play_in_every_trial_of_a_max_throughput_search() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = r#"
[[components]]
name = "server"
kind = "server"

[workload]
target = "server"
mode = "max-throughput"
arrival = "constant"
warmup = "300ms"
timeout = "2s"
connections = 4

[[workload.requests]]
kind = "infer"
model = "mlp"

[workload.search]
percentile = 99
latency_ms_max = 5000
error_ratio_max = 1.0
rate_per_s_min = 10
rate_per_s_max = 40
steps = 2
trial = "1s"

[[faults]]
id = "stall"
at = "500ms"
until = "800ms"
kind = "process.pause"
target = "server"
"#;
    let outcome = run("search-with-faults", scenario, reports.path());
    let m = &outcome.metrics;
    let trials = m.searches[0].trials.len();
    // Two bracket trials, then repeats confirming the best rate.
    assert!(trials >= 2, "{:?}", m.searches);
    let injected = events(&outcome, "fault.inject");
    let healed = events(&outcome, "fault.heal");
    assert_eq!(injected.len(), trials, "one pause per trial: {injected:?}");
    assert_eq!(healed.len(), trials, "each healed: {healed:?}");
    assert!(m.failures.is_empty(), "{:?}", m.failures);
}

const SHORT_JOB: &str = r#"
[[components]]
name = "rendezvous"
kind = "trainer-rendezvous"
args = ["--max-workers", "1", "--exit-when-done"]

[[components]]
name = "worker"
kind = "trainer-worker"
args = ["--rendezvous", "{rendezvous.addr}", "--model", "mlp", "--mlp-hidden", "32,32", "--steps", "30", "--checkpoint-every", "0", "--threads", "1"]
restart = { policy = "never" }

[workload]
target = "worker"
mode = "training"
warmup = "0s"
duration = "1m"

[workload.training]
warmup_steps = 2
"#;

#[test]
fn faults_the_job_ended_before_or_during_fail_the_run() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = format!(
        "{SHORT_JOB}
[[faults]]
id = \"slow\"
at = \"0s\"
until = \"50s\"
kind = \"gpu.throttle\"
target = \"worker/0\"
factor = 1.5

[[faults]]
id = \"late\"
at = \"55s\"
kind = \"process.kill\"
target = \"worker/0\"
"
    );
    let outcome = run("short-job", &scenario, reports.path());
    let m = &outcome.metrics;
    assert!(!m.passed());
    assert!(
        m.failures
            .iter()
            .any(|f| f
                .starts_with("fault slow (gpu.throttle) was planned to last 50.000 s but lasted")),
        "{:?}",
        m.failures
    );
    assert!(
        m.failures
            .iter()
            .any(|f| f.starts_with("fault late (process.kill) was never injected")),
        "{:?}",
        m.failures
    );
    // The job itself finished as planned: the worker's exit 0 is not a failure (the
    // rendezvous is stopped by the runner once every worker is done, if it has not exited).
    assert_eq!(m.processes[1].name, "worker/0");
    assert_eq!(
        m.processes[1].lives[0].cause.as_deref(),
        Some("workload finished")
    );
    assert!(
        m.processes.iter().flat_map(|p| &p.lives).all(|l| matches!(
            l.cause.as_deref(),
            Some("workload finished" | "stopped by the runner")
        )),
        "{:?}",
        m.processes
    );
    assert_eq!(m.failures.len(), 2, "{:?}", m.failures);
}

#[test]
fn stages_ramp_the_offered_rate_as_k6_s_ramping_arrival_rate() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = r#"
[[components]]
name = "server"
kind = "server"

[workload]
target = "server"
rate_per_s = 10
arrival = "constant"
warmup = "0s"
duration = "2s"
connections = 4
stages = [{ duration = "1s", target = 50 }, { duration = "1s", target = 50 }]

[[workload.requests]]
kind = "infer"
model = "mlp"
"#;
    let outcome = run("stages", scenario, reports.path());
    let m = &outcome.metrics;
    assert!(m.passed(), "{:?}", m.failures);
    let sent: Vec<u64> = m.windows.iter().take(2).map(|w| w.counts.sent).collect();
    // 10 → 50/s over the first second is 30 requests; then 50/s holds.
    assert!(sent[0].abs_diff(30) <= 2, "{sent:?}");
    assert!(sent[1].abs_diff(50) <= 2, "{sent:?}");
}

#[test]
fn an_slo_with_abort_on_fail_stops_the_load_once_it_cannot_pass() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = r#"
[[components]]
name = "server"
kind = "server"
restart = { policy = "never" }

[workload]
target = "server"
rate_per_s = 50
arrival = "constant"
warmup = "500ms"
duration = "30s"
timeout = "1s"
connections = 2

[[workload.requests]]
kind = "infer"
model = "mlp"

[[faults]]
id = "kill"
at = "1s"
kind = "process.kill"
target = "server"

[[slo]]
kind = "availability"
ratio_min = 0.9
abort_on_fail = true
"#;
    let outcome = run("abort", scenario, reports.path());
    let m = &outcome.metrics;
    assert!(!m.passed());
    assert!(
        m.failures.iter().any(
            |f| f.contains("(abort_on_fail): availability (measured) ≥ 0.9 can no longer hold")
        ),
        "{:?}",
        m.failures
    );
    // 10 % of ~1500 planned requests may fail: about 4 s of a dead server, not 29.
    assert!(m.run.wall_s < 20.0, "stopped early: {} s", m.run.wall_s);
    assert!(!outcome.interrupted, "an abort is a verdict, not a Ctrl-C");
    assert!(m.accounting.balanced, "{:?}", m.accounting);
}

#[test]
fn open_loop_variants_run_one_load_each_and_every_slo_judges_each() {
    let reports = tempfile::tempdir().expect("temp dir");
    let scenario = r#"
[[components]]
name = "server"
kind = "server"

[workload]
target = "server"
rate_per_s = 20
arrival = "constant"
warmup = "300ms"
duration = "1s"
connections = 2

[[workload.requests]]
kind = "infer"
model = "mlp"

[[slo]]
kind = "availability"
ratio_min = 0.5

[[variants]]
name = "batched"
args = { server = ["--max-batch-size", "32"] }

[[variants]]
name = "unbatched"
args = { server = ["--max-batch-size", "1"] }
"#;
    let outcome = run("open-variants", scenario, reports.path());
    let m = &outcome.metrics;
    assert!(m.passed(), "{:?} {:?}", m.failures, m.slos);
    let slos: Vec<&str> = m.slos.iter().map(|s| s.description.as_str()).collect();
    assert_eq!(
        slos,
        [
            "availability (measured) [batched]",
            "availability (measured) [unbatched]"
        ]
    );
    let phases: Vec<&str> = m.summaries.iter().map(|s| s.phase.as_str()).collect();
    assert!(
        phases.contains(&"batched: measured") && phases.contains(&"unbatched: measured"),
        "{phases:?}"
    );
    assert!(m
        .charts
        .iter()
        .any(|c| c.id == "variants-latency" && c.series.len() == 2));
    // Two lifetimes, two servers, each stopped by the runner.
    assert_eq!(m.processes.len(), 2);
    assert_eq!(
        m.accounting.sent,
        m.summaries
            .iter()
            .filter(|s| s.phase.ends_with(": warmup") || s.phase.ends_with(": measured"))
            .map(|s| s.counts.sent)
            .sum::<u64>()
    );
}
