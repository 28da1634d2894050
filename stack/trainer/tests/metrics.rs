//! `GET /metrics` on real workers of a real job: the families exist, they move with
//! training, follow a fault and a lost worker, and the format follows `Accept`.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// One scrape in the classic text format.
struct Scrape {
    text: String,
}

impl Scrape {
    fn get(addr: &str) -> Self {
        let (code, head, text) = http_with(addr, "GET", "/metrics", &[], "");
        assert_eq!(code, 200, "{head}\n{text}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "the default is text 0.0.4: {head}"
        );
        Self { text }
    }

    /// Names declared by `# TYPE` lines.
    fn families(&self) -> BTreeSet<&str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    /// Sum of the samples named `name` whose labels contain `labels` (e.g. `kind="gpu.ecc"`;
    /// empty: every sample of that name). `None` when there is no such sample.
    fn value(&self, name: &str, labels: &str) -> Option<f64> {
        let mut found = None;
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let (n, l) = series.split_once('{').unwrap_or((series, ""));
            if n == name && l.contains(labels) {
                let v: f64 = value.parse().expect("sample value is a number");
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    fn must(&self, name: &str, labels: &str) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in\n{}", self.text))
    }
}

/// Scrapes `addr` until `pred` holds (patience: `secs`).
fn scrape_until(addr: &str, secs: u64, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = String::new();
    let found = poll_until(Duration::from_secs(secs), || {
        let s = Scrape::get(addr);
        let done = pred(&s);
        last = s.text;
        done
    });
    assert!(found, "timed out waiting for {what}; last scrape:\n{last}");
    Scrape { text: last }
}

/// Every family a worker exports, in the classic format's names.
const FAMILIES: [&str; 30] = [
    "faultline_trainer_step_seconds",
    "faultline_trainer_step_phase_seconds",
    "faultline_trainer_samples_total",
    "faultline_trainer_loss",
    "faultline_trainer_allreduce_seconds",
    "faultline_trainer_allreduce_bytes_total",
    "faultline_trainer_checkpoint_write_seconds",
    "faultline_trainer_checkpoint_snapshot_seconds",
    "faultline_trainer_checkpoint_bytes_total",
    "faultline_trainer_restore_seconds",
    "faultline_trainer_steps_total",
    "faultline_trainer_steps_skipped_total",
    "faultline_trainer_restores_total",
    "faultline_trainer_lost_steps_total",
    "faultline_trainer_checkpoints_written_total",
    "faultline_trainer_checkpoints_failed_total",
    "faultline_trainer_gpu_ecc_injected_total",
    "faultline_trainer_gpu_ecc_detected_total",
    "faultline_trainer_gpu_ecc_silent_total",
    "faultline_trainer_gpu_oom_total",
    "faultline_trainer_gpu_throttle_seconds_total",
    "faultline_trainer_step",
    "faultline_trainer_target_steps",
    "faultline_trainer_epoch",
    "faultline_trainer_world_size",
    "faultline_trainer_rank",
    "faultline_trainer_ready",
    "faultline_trainer_last_checkpoint_step",
    "faultline_trainer_threads",
    "faultline_trainer_gpu_throttle_factor",
];

/// A two-worker job training until stopped, checkpointing every 10 steps; returns the job
/// and the control addresses of ranks 0 and 1 once rank 0 has trained 20 steps.
fn two_worker_job(dir: &std::path::Path) -> (Proc, String, String) {
    let job = launch(2, 1, &small_mlp(dir, 1_000_000, 10));
    let control = |rank: u64| {
        let start = job.wait_for(30, "start", |v| is(v, "start") && v["rank"] == rank);
        start["control"].as_str().expect("control addr").to_string()
    };
    let (rank0, rank1) = (control(0), control(1));
    job.wait_for(60, "step 20", |v| {
        is(v, "step") && v["rank"] == 0 && v["step"].as_u64().is_some_and(|s| s >= 20)
    });
    (job, rank0, rank1)
}

/// Stops the job the way an operator would (SIGINT to `launch`).
fn stop(mut job: Proc) {
    kill(u64::from(job.child.id()), nix::sys::signal::Signal::SIGINT);
    assert_eq!(job.wait_exit(30), trainer::exit::INTERRUPTED);
}

#[test]
fn metrics_move_with_training_and_follow_a_gpu_fault_and_a_lost_worker() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (job, rank0, rank1) = two_worker_job(dir.path());

    let first = Scrape::get(&rank0);
    let families = first.families();
    for family in FAMILIES {
        assert!(families.contains(family), "missing family {family}");
    }
    assert_eq!(first.must("faultline_trainer_world_size", ""), 2.0);
    assert_eq!(first.must("faultline_trainer_epoch", ""), 1.0);
    assert_eq!(first.must("faultline_trainer_rank", ""), 0.0);
    assert_eq!(first.must("faultline_trainer_ready", ""), 1.0);
    let steps = first.must("faultline_trainer_steps_total", "");
    assert!(steps >= 20.0, "steps_total {steps}");
    assert!(first.must("faultline_trainer_step_seconds_count", "") >= 20.0);
    assert!(first.must("faultline_trainer_step_seconds_sum", "") > 0.0);
    for phase in ["data", "compute", "wait", "comm", "update"] {
        let label = format!("phase=\"{phase}\"");
        assert!(first.must("faultline_trainer_step_phase_seconds_count", &label) >= 20.0);
    }
    assert!(first.must("faultline_trainer_samples_total", "") >= 20.0 * 16.0);
    // Two ranks on one host: shared memory, or the TCP ring where /dev/shm is unusable.
    assert!(first.must("faultline_trainer_allreduce_bytes_total", "") > 0.0);
    assert!(first.must("faultline_trainer_allreduce_seconds_count", "") >= 20.0);

    // Training moves the counters; rank 0 writes checkpoints.
    let later = scrape_until(&rank0, 60, "steps and a checkpoint", |s| {
        s.must("faultline_trainer_steps_total", "") > steps
            && s.must("faultline_trainer_checkpoints_written_total", "") >= 1.0
    });
    assert!(later.must("faultline_trainer_checkpoint_write_seconds_count", "") >= 1.0);
    assert!(later.must("faultline_trainer_checkpoint_bytes_total", "") > 0.0);
    assert!(later.must("faultline_trainer_last_checkpoint_step", "") >= 10.0);

    // OpenMetrics when asked for, as Prometheus asks.
    let (code, head, om) = http_with(
        &rank0,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        "",
    );
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE faultline_trainer_steps counter\n"));

    // A GPU fault shows while it is active, per kind.
    let throttle = "kind=\"gpu.throttle\"";
    assert_eq!(
        Scrape::get(&rank1).must("faultline_trainer_gpu_faults_active", throttle),
        0.0
    );
    let (code, body) = http(
        &rank1,
        "POST",
        "/faults",
        r#"{"kind":"gpu.throttle","factor":2}"#,
    );
    assert_eq!(code, 200, "{body}");
    let faulted = Scrape::get(&rank1);
    assert_eq!(
        faulted.must("faultline_trainer_gpu_faults_active", throttle),
        1.0
    );
    assert_eq!(
        faulted.must("faultline_trainer_gpu_faults_active", "kind=\"gpu.ecc\""),
        0.0
    );
    assert_eq!(
        faulted.must("faultline_trainer_gpu_throttle_factor", ""),
        2.0
    );
    scrape_until(&rank1, 30, "throttle sleep counted", |s| {
        s.must("faultline_trainer_gpu_throttle_seconds_total", "") > 0.0
    });
    assert_eq!(http(&rank1, "DELETE", "/faults/gpu.throttle", "").0, 200);
    assert_eq!(
        Scrape::get(&rank1).must("faultline_trainer_gpu_faults_active", throttle),
        0.0
    );

    // Losing rank 1: rank 0 re-forms alone in a new epoch and restores.
    let pid = u64::from(status(&rank1).progress.pid);
    kill(pid, nix::sys::signal::Signal::SIGKILL);
    let reformed = scrape_until(&rank0, 60, "epoch 2 with world 1", |s| {
        s.must("faultline_trainer_epoch", "") >= 2.0
            && s.must("faultline_trainer_world_size", "") == 1.0
            && s.must("faultline_trainer_restores_total", "") >= 1.0
    });
    assert!(reformed.must("faultline_trainer_restore_seconds_count", "") >= 1.0);
    assert!(reformed
        .value("faultline_trainer_lost_steps_total", "")
        .is_some());
    stop(job);
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus); run with `cargo test -p trainer --test metrics -- --ignored`"]
fn a_scrape_passes_promtool_check_metrics_without_warnings() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (job, rank0, _) = two_worker_job(dir.path());
    let scrape = scrape_until(&rank0, 60, "a checkpoint", |s| {
        s.must("faultline_trainer_checkpoints_written_total", "") >= 1.0
    });
    stop(job);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (apt-get install prometheus)");
    // Written from a thread while `wait_with_output` reads stdout and stderr: neither side
    // can block on a full pipe whatever promtool prints.
    let mut stdin = promtool.stdin.take().expect("piped stdin");
    let writer =
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, scrape.text.as_bytes()));
    let out = promtool.wait_with_output().expect("promtool output");
    writer
        .join()
        .expect("stdin writer")
        .expect("write to promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
