//! The `faultline` binary as a user runs it: real processes, real signals.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{capture, Captured};

fn faultline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.current_dir(common::repo_root());
    cmd
}

/// A scenario that runs long, with a SIGSTOP fault early, so a test can interrupt it
/// while a fault is injected.
const LONG_PAUSE: &str = r#"
description = "long run with an early pause, for interruption tests"
[[components]]
name = "server"
kind = "server"
[workload]
target = "server"
rate_per_s = 50
warmup = "500ms"
duration = "60s"
[[workload.requests]]
kind = "infer"
model = "mlp"
[[faults]]
id = "stall"
at = "1s"
until = "50s"
kind = "process.pause"
target = "server"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write scenario");
    p
}

fn events(reports: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for scenario in std::fs::read_dir(reports).into_iter().flatten().flatten() {
        for run in std::fs::read_dir(scenario.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(run.path().join("events.jsonl")) {
                out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
            }
        }
    }
    out
}

fn has_event(reports: &Path, kind: &str) -> bool {
    events(reports).iter().any(|e| e["event"] == kind)
}

fn started_pids(reports: &Path) -> Vec<u32> {
    events(reports)
        .iter()
        .filter(|e| e["event"] == "process.start")
        .filter_map(|e| e["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// A `faultline run` in the background, its stdout and stderr read to EOF on their own
/// threads (so it never blocks on a full pipe) and kept for failure messages; killed on
/// drop, so a failed assertion leaves no run behind.
struct Run {
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    /// What the run printed, for a failure message: waits for it to end first (killing it
    /// if it has not), as its pipes close only then.
    fn output(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let patience = Duration::from_secs(5);
        format!(
            "faultline stdout:\n{}\nfaultline stderr:\n{}",
            self.stdout.text(patience),
            self.stderr.text(patience)
        )
    }
}

/// `faultline run --quiet` of `scenario` with the test's binaries, reports in `reports`,
/// and `extra` flags before the scenario.
fn run_command(scenario: &Path, reports: &Path, extra: &[&str]) -> Command {
    let mut cmd = faultline();
    cmd.args(["run", "--quiet", "--reports"])
        .arg(reports)
        .arg("--bin-dir")
        .arg(common::bin_dir())
        .args(extra)
        .arg(scenario);
    cmd
}

fn start_run(scenario: &Path, reports: &Path) -> Run {
    let mut child = run_command(scenario, reports, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start faultline");
    let stdout = capture(child.stdout.take().expect("piped stdout"));
    let stderr = capture(child.stderr.take().expect("piped stderr"));
    Run {
        child,
        stdout,
        stderr,
    }
}

/// Writes `text` as `name` in `dir`, starts `faultline run` on it and waits (up to 60 s)
/// for the event `kind`, failing with `what` and the run's output if it does not come.
fn run_until(dir: &Path, name: &str, text: &str, kind: &str, what: &str) -> (PathBuf, Run) {
    let scenario = write(dir, name, text);
    let reports = dir.join("reports");
    let mut run = start_run(&scenario, &reports);
    assert!(
        common::eventually(Duration::from_secs(60), || has_event(&reports, kind)),
        "{what}\n{}",
        run.output()
    );
    (reports, run)
}

fn assert_all_gone(pids: &[u32], after: &str) {
    for &pid in pids {
        assert!(
            common::eventually(Duration::from_secs(5), || !common::alive(pid)),
            "pid {pid} outlived {after}"
        );
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal faultline");
}

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[components]]\nname = \"server\"\nkind = \"server\"\n\n[workload]\ntarget = \"sever\"\nrate_per_s = 10\nduration = \"5s\"\n[[workload.requests]]\nkind = \"infer\"\nmodel = \"mlp\"\n",
    );
    let out: Output = faultline().arg("validate").arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6:"), "{err}");
    assert!(err.contains("workload.target"), "{err}");
    assert!(
        err.contains("server"),
        "names the expected component: {err}"
    );
}

/// The nightly GPU job's scenarios (`scenarios/gpu/`, not run here: they need CUDA) are
/// valid scenario files.
#[test]
fn the_gpu_scenarios_are_valid() {
    let dir = common::repo_root().join("scenarios/gpu");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenarios/gpu")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario in {}", dir.display());
    let out: Output = faultline()
        .arg("validate")
        .args(&files)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_of_a_missing_scenario_is_a_usage_error() {
    let out = faultline()
        .args(["run", "no-such-scenario"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-scenario"));
}

#[test]
fn ctrl_c_heals_the_fault_stops_the_stack_and_still_writes_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (reports, mut run) = run_until(
        dir.path(),
        "long-pause.toml",
        LONG_PAUSE,
        "fault.inject",
        "the pause was injected",
    );
    signal(&run.child, Signal::SIGINT);
    let status = run.child.wait().expect("wait faultline");
    assert_eq!(
        status.code(),
        Some(130),
        "interrupted runs exit 130\n{}",
        run.output()
    );
    assert!(has_event(&reports, "fault.heal"), "the pause was healed");
    assert!(
        has_event(&reports, "process.stop"),
        "the server was stopped"
    );
    assert_all_gone(&started_pids(&reports), "Ctrl-C");
    let metrics = std::fs::read_dir(reports.join("long-pause"))
        .expect("scenario folder")
        .flatten()
        .map(|e| e.path().join("metrics.json"))
        .find(|p| p.is_file())
        .expect("metrics.json written");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(metrics).expect("read")).expect("json");
    assert!(
        m["failures"].to_string().contains("interrupted"),
        "the report says it was interrupted: {}\n{}",
        m["failures"],
        run.output()
    );
}

#[test]
fn a_killed_runner_leaves_no_orphan_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (reports, mut run) = run_until(
        dir.path(),
        "long-pause.toml",
        LONG_PAUSE,
        "process.ready",
        "the server came up",
    );
    let pids = started_pids(&reports);
    assert!(!pids.is_empty());
    signal(&run.child, Signal::SIGKILL);
    let _ = run.child.wait();
    assert_all_gone(&pids, "the SIGKILLed runner");
}

#[test]
fn a_killed_runner_leaves_no_namespace_link_or_process_behind() {
    if let Some(why) = common::netns_unavailable() {
        eprintln!("skipped: network namespaces need root and iproute2 ({why})");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{}\n[network]\nmode = \"netns\"\n[[regions]]\nname = \"us\"\n[[regions]]\nname = \"eu\"\n",
        LONG_PAUSE
            .replace(
                "kind = \"server\"\n",
                "kind = \"server\"\nregion = \"eu\"\n"
            )
            .replace(
                "target = \"server\"\nrate_per_s",
                "target = \"server\"\nregion = \"us\"\nrate_per_s"
            )
    );
    let (reports, mut run) = run_until(
        dir.path(),
        "netns-pause.toml",
        &text,
        "fault.inject",
        "the netns run got to its fault",
    );
    let links: Vec<String> = events(&reports)
        .iter()
        .filter(|e| e["event"] == "net.namespaces")
        .flat_map(|e| e["namespaces"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n["host_if"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(links.len(), 2, "one namespace per region\n{}", run.output());
    assert!(links.iter().all(|l| common::link_exists(l)));
    let pids = started_pids(&reports);
    signal(&run.child, Signal::SIGKILL);
    let _ = run.child.wait();
    assert_all_gone(&pids, "the SIGKILLed netns runner");
    for link in &links {
        assert!(
            common::eventually(Duration::from_secs(5), || !common::link_exists(link)),
            "{link} outlived the SIGKILLed runner"
        );
    }
}

#[test]
fn runs_n_repeats_the_scenario_over_seeds_and_reports_each_figure_s_spread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = write(
        dir.path(),
        "twice.toml",
        r#"
seed = 40
[[components]]
name = "server"
kind = "server"
[workload]
target = "server"
rate_per_s = 20
warmup = "200ms"
duration = "1s"
[[workload.requests]]
kind = "infer"
model = "mlp"
[[slo]]
kind = "availability"
ratio_min = 0.5
"#,
    );
    let reports = dir.path().join("reports");
    let out = run_command(&scenario, &reports, &["--runs", "2"])
        .output()
        .expect("faultline runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("PASS twice: 2 of 2 runs passed"),
        "{stdout}"
    );
    let file = stdout
        .lines()
        .find_map(|l| l.strip_prefix("series: "))
        .expect("the series file is named");
    let series: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("series.json")).expect("json");
    let seeds: Vec<u64> = series["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["seed"].as_u64())
        .collect();
    assert_eq!(seeds, [40, 41]);
    let availability = series["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .find(|f| f["figure"] == "measured availability")
        .expect("availability spread");
    assert_eq!(availability["n"], 2);
    // Bad counts are usage errors naming the flag.
    let bad = faultline()
        .args(["run", "--runs", "0"])
        .arg(&scenario)
        .output()
        .expect("faultline runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--runs"));
}

#[test]
fn a_paused_server_grows_the_load_generators_pool_to_max_connections_and_the_report_says_so() {
    // 100 requests/s over 2 connections while the server is stopped for 1.5 s: every
    // request due meanwhile finds both connections busy and opens another, until
    // max_connections; the kernel completes the connects of a stopped server.
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = write(
        dir.path(),
        "grow.toml",
        r#"
[[components]]
name = "server"
kind = "server"
[workload]
target = "server"
rate_per_s = 100
connections = 2
max_connections = 20
warmup = "200ms"
duration = "3s"
timeout = "5s"
[[workload.requests]]
kind = "infer"
model = "mlp"
[[faults]]
id = "stall"
at = "500ms"
until = "2s"
kind = "process.pause"
target = "server"
"#,
    );
    let reports = dir.path().join("reports");
    let out = run_command(&scenario, &reports, &[])
        .output()
        .expect("faultline runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = std::fs::read_dir(reports.join("grow"))
        .expect("scenario folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("metrics.json").is_file())
        .unwrap_or_else(|| panic!("metrics.json written\n{stdout}"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).expect("read"))
            .expect("json");
    let w = &m["run"]["workload"];
    assert_eq!(
        (w["connections"].as_u64(), w["max_connections"].as_u64()),
        (Some(2), Some(20))
    );
    assert_eq!(w["connections_added"].as_u64(), Some(18), "{w}\n{stdout}");
    assert!(
        stdout.contains(
            "connections: 2 per replica at the start, 18 added when all were busy (at most 20 per replica)"
        ),
        "{stdout}"
    );
    assert_eq!(m["accounting"]["dropped_by_generator"].as_u64(), Some(0));
    let html = std::fs::read_to_string(run.join("index.html")).expect("index.html");
    assert!(
        html.contains("growing to at most 20 when every one is busy (18 added)"),
        "the report's workload line names the pool"
    );
}

#[test]
fn faultline_load_says_what_ctrl_c_waits_for_and_a_second_ctrl_c_quits_at_once() {
    use std::io::{BufRead, BufReader};
    // A target that accepts and never answers: the requests in flight would hold the exit
    // for the whole timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let mut child = faultline()
        .args(["load", &url, "--rate", "50", "-c", "2", "--duration", "60s"])
        .args(["--timeout", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faultline load starts");
    // Its connections are open once the load has started, its Ctrl-C handler before that.
    let held: Vec<_> = (0..2)
        .map(|_| listener.accept().expect("the generator connects").0)
        .collect();
    signal(&child, Signal::SIGINT);
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("stderr");
    assert!(
        line.contains("interrupted") && line.contains("Ctrl-C again"),
        "{line}"
    );
    signal(&child, Signal::SIGINT);
    let out = child.wait_with_output().expect("faultline load ends");
    assert_eq!(out.status.code(), Some(130));
    assert!(out.stdout.is_empty(), "no report after the second Ctrl-C");
    drop(held);
}
