//! Runs one scenario end to end: start the stack, wait for readiness, drive the load while
//! the fault timeline plays, stop everything, analyse, write the report.
//!
//! Every exit path heals faults and stops processes: the timeline owns its fault guards
//! (healed on drop), the [`Supervisor`] owns the processes (stopped on shutdown, killed on
//! drop), and a cancelled run (Ctrl-C) still goes through both before writing a report
//! marked as interrupted.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use loadgen::{LoadReport, Progress};
use nix::sys::signal::Signal;
use report::{
    FaultSpan, HostInfo, ProcessLife, ProcessRecord, Recovery, RunInfo, RunMetrics, SearchResult,
    Span, TrialResult, WorkloadInfo,
};
use scenario::{
    ComponentKind, Fault, FaultKind, LatencyMeasure, LoadMode, Scenario, ScenarioError, Slo,
    Variant,
};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::analysis::{self, PhaseData};
use crate::binaries::{self, MissingBinary};
use crate::events::{round_us, EventLog, RunClock};
use crate::faults::{self, PauseGuard, Step};
use crate::requests;
use crate::slo::{self, Evidence};
use crate::supervisor::{Health, Probe, Replica, ReplicaSpec, Supervisor};
use crate::training::{self, InjectedFault, ProcessEvents};

/// How progress is shown while a run is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live status line on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines (one per second).
    Plain,
    Quiet,
}

/// Settings of one run that are not in the scenario file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Reports go to `<reports_dir>/<scenario>/<run-id>/`.
    pub reports_dir: PathBuf,
    /// Folder holding the stack binaries (see [`binaries`]).
    pub bin_dir: Option<PathBuf>,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    pub progress: ProgressMode,
    /// SIGTERM → SIGKILL grace when stopping the stack.
    pub stop_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            reports_dir: PathBuf::from("reports"),
            bin_dir: None,
            seed: None,
            progress: ProgressMode::Auto,
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// A finished run: its metrics (written to `dir`) and whether Ctrl-C cut it short.
#[derive(Debug)]
pub struct RunOutcome {
    pub metrics: RunMetrics,
    pub dir: PathBuf,
    pub interrupted: bool,
}

/// The run could not start (bad scenario, missing binary) or its report not be written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Binary(#[from] MissingBinary),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the report into {dir}: {source}")]
    Report {
        dir: PathBuf,
        source: report::ReportError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fault as it happened, on the run clock.
#[derive(Debug, Clone)]
struct FaultEvent {
    id: String,
    kind: FaultKind,
    target: Option<String>,
    injected_s: Option<f64>,
    healed_s: Option<f64>,
    detail: String,
}

/// Reserves a free loopback port (the OS picks it; the replica binds it again at once).
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn run_id(started: SystemTime, seed: u64) -> String {
    let stamp = humantime::format_rfc3339_millis(started).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    format!("{}-s{seed}", compact.replace('.', ""))
}

/// The arguments the runner gives each kind before the component's own `args`.
fn kind_args(
    kind: ComponentKind,
    addr: SocketAddr,
    replica: u32,
    replicas: u32,
    run_dir: &Path,
    seed: u64,
    user: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = match kind {
        ComponentKind::Server => vec!["--listen".to_owned(), addr.to_string()],
        ComponentKind::TrainerRendezvous => {
            vec![
                "rendezvous".to_owned(),
                "--listen".to_owned(),
                addr.to_string(),
            ]
        }
        ComponentKind::TrainerWorker => vec![
            "worker".to_owned(),
            "--control".to_owned(),
            addr.to_string(),
            "--rank".to_owned(),
            replica.to_string(),
            "--world-size".to_owned(),
            replicas.to_string(),
            "--run-dir".to_owned(),
            run_dir.display().to_string(),
        ],
    };
    let seeded = matches!(kind, ComponentKind::Server | ComponentKind::TrainerWorker);
    if seeded && !user.iter().any(|a| a == "--seed") {
        args.extend(["--seed".to_owned(), seed.to_string()]);
    }
    args
}

/// Replaces the `{…}` placeholders of `Component::args` (validated by the scenario crate).
fn substitute(
    arg: &str,
    addrs: &BTreeMap<String, Vec<SocketAddr>>,
    run_dir: &Path,
    replica: u32,
    replicas: u32,
    seed: u64,
) -> String {
    let mut out = arg
        .replace("{run_dir}", &run_dir.display().to_string())
        .replace("{replicas}", &replicas.to_string())
        .replace("{replica}", &replica.to_string())
        .replace("{seed}", &seed.to_string());
    for (name, list) in addrs {
        let all: Vec<String> = list.iter().map(ToString::to_string).collect();
        out = out.replace(&format!("{{{name}.addrs}}"), &all.join(","));
        if let Some(first) = list.first() {
            out = out.replace(&format!("{{{name}.addr}}"), &first.to_string());
        }
    }
    out
}

/// Replica specs for every component, with fresh ports, the variant's replica counts
/// and extra args, and placeholders replaced.
fn stack_specs(
    scenario: &Scenario,
    variant: &Variant,
    programs: &BTreeMap<&'static str, PathBuf>,
    dirs: &RunDirs,
    seed: u64,
) -> std::io::Result<Vec<ReplicaSpec>> {
    let replicas_of =
        |c: &scenario::Component| *variant.replicas.get(&c.name).unwrap_or(&c.replicas);
    let mut addrs: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for c in &scenario.components {
        let list = (0..replicas_of(c))
            .map(|_| free_port())
            .collect::<std::io::Result<_>>()?;
        addrs.insert(c.name.clone(), list);
    }
    let mut specs = Vec::new();
    for c in &scenario.components {
        let program = programs
            .get(binaries::binary_name(c.kind))
            .cloned()
            .unwrap_or_default();
        let replicas = replicas_of(c);
        for (i, &addr) in addrs[&c.name].iter().enumerate() {
            let i = i as u32;
            let mut user: Vec<String> = c.args.clone();
            user.extend(variant.args.get(&c.name).cloned().unwrap_or_default());
            let user: Vec<String> = user
                .iter()
                .map(|a| substitute(a, &addrs, &dirs.train, i, replicas, seed))
                .collect();
            let mut args = kind_args(c.kind, addr, i, replicas, &dirs.train, seed, &user);
            args.extend(user);
            let mut env = BTreeMap::from([("RUST_LOG".to_owned(), "info".to_owned())]);
            env.extend(c.env.clone());
            specs.push(ReplicaSpec {
                name: format!("{}/{i}", c.name),
                component: c.name.clone(),
                kind: c.kind,
                program: program.clone(),
                args,
                env,
                addr,
                restart: c.restart.clone(),
                probe: Probe::for_kind(c.kind, &c.readiness),
                readiness: c.readiness.clone(),
                log_path: dirs.logs.join(format!("{}{}-{i}.log", dirs.prefix, c.name)),
            });
        }
    }
    Ok(specs)
}

/// Where one stack lifetime writes: logs, and the trainer's shared run folder.
struct RunDirs {
    logs: PathBuf,
    train: PathBuf,
    /// Log file prefix (`<variant>-` when there are several variants).
    prefix: String,
}

fn pids_of(replicas: &[Replica], target: &str) -> Vec<u32> {
    replicas
        .iter()
        .filter(|r| r.spec().component == target || r.spec().name == target)
        .filter_map(Replica::pid)
        .collect()
}

/// Plays the fault timeline from `t0` until done or cancelled; heals whatever is still
/// injected before returning (and on drop, if the task is aborted).
async fn run_timeline(
    faults: Vec<Fault>,
    replicas: Vec<Replica>,
    t0: tokio::time::Instant,
    events: EventLog,
    cancel: CancellationToken,
) -> Vec<FaultEvent> {
    let mut records: Vec<FaultEvent> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| FaultEvent {
            id: f.id_or_default(i),
            kind: f.kind,
            target: f.target.clone(),
            injected_s: None,
            healed_s: None,
            detail: String::new(),
        })
        .collect();
    let mut guards: HashMap<usize, PauseGuard> = HashMap::new();
    // gpu.* faults live inside the worker processes; these are the ones still injected.
    let mut gpu_active: HashMap<usize, Vec<SocketAddr>> = HashMap::new();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    // Time the timeline has waited for training steps (`after_step`): later actions shift.
    let mut shift = Duration::ZERO;
    for action in faults::plan(&faults) {
        tokio::select! {
            () = tokio::time::sleep_until(t0 + action.at + shift) => {}
            () = cancel.cancelled() => break,
        }
        let fault = &faults[action.fault];
        if let (Some(step), Step::Inject) = (fault.after_step, action.step) {
            let waiting = tokio::time::Instant::now();
            tokio::select! {
                () = wait_for_step(&client, &replicas, step) => {}
                () = cancel.cancelled() => break,
            }
            shift += waiting.elapsed();
        }
        let rec = &mut records[action.fault];
        let target = fault.target.as_deref().unwrap_or_default();
        // The fault instant is taken before injecting: the stack may react (and log its
        // detection) before the harness has written its own event.
        let instant = events.clock().now_s();
        match (fault.kind, action.step) {
            (FaultKind::ProcessKill, Step::Inject) => {
                let pids = pids_of(&replicas, target);
                let errors: Vec<String> = pids
                    .iter()
                    .filter_map(|&p| faults::signal(p, Signal::SIGKILL).err())
                    .map(|e| e.to_string())
                    .collect();
                rec.detail = format!("SIGKILL pids {pids:?}");
                if !errors.is_empty() {
                    rec.detail.push_str(&format!("; errors: {errors:?}"));
                }
                rec.injected_s = Some(instant);
                events.emit(
                    "fault.inject",
                    json!({"id": rec.id, "instant_run_s": round_us(instant), "kind": fault.kind.name(), "target": target, "pids": pids}),
                );
            }
            (FaultKind::ProcessPause, Step::Inject) => {
                let pids = pids_of(&replicas, target);
                match PauseGuard::pause(pids.clone()) {
                    Ok(g) => {
                        rec.detail = format!("SIGSTOP pids {pids:?}");
                        guards.insert(action.fault, g);
                    }
                    Err(e) => rec.detail = format!("SIGSTOP failed: {e}"),
                }
                rec.injected_s = Some(instant);
                events.emit(
                    "fault.inject",
                    json!({"id": rec.id, "instant_run_s": round_us(instant), "kind": fault.kind.name(), "target": target, "pids": pids}),
                );
            }
            (FaultKind::LoadSpike, Step::Inject) => {
                rec.detail = format!("rate × {}", fault.multiplier.unwrap_or(1.0));
                rec.injected_s = Some(instant);
                events.emit(
                    "fault.inject",
                    json!({"id": rec.id, "instant_run_s": round_us(instant), "kind": fault.kind.name(), "multiplier": fault.multiplier}),
                );
            }
            (
                kind @ (FaultKind::GpuLost
                | FaultKind::GpuEcc
                | FaultKind::GpuThrottle
                | FaultKind::GpuOom),
                Step::Inject,
            ) => {
                let targets: Vec<SocketAddr> = replicas
                    .iter()
                    .filter(|r| r.spec().component == target || r.spec().name == target)
                    .map(|r| r.spec().addr)
                    .collect();
                let body = faults::gpu_fault_body(fault);
                let mut results = Vec::new();
                for addr in &targets {
                    let url = format!("http://{addr}/faults");
                    results.push(match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => format!("{addr}: injected"),
                        Ok(r) => format!("{addr}: HTTP {}", r.status()),
                        Err(e) => format!("{addr}: {e}"),
                    });
                }
                rec.detail = format!("{body} → {}", results.join("; "));
                gpu_active.insert(action.fault, targets);
                rec.injected_s = Some(instant);
                events.emit(
                    "fault.inject",
                    json!({"id": rec.id, "instant_run_s": round_us(instant), "kind": kind.name(), "target": target, "body": body, "results": results}),
                );
            }
            (_, Step::Heal) => {
                // Dropping the guard (if any) heals the fault.
                drop(guards.remove(&action.fault));
                if let Some(addrs) = gpu_active.remove(&action.fault) {
                    heal_gpu(&client, &addrs, fault.kind).await;
                }
                rec.healed_s = Some(events.emit(
                    "fault.heal",
                    json!({"id": rec.id, "kind": fault.kind.name()}),
                ));
            }
        }
    }
    // Faults without an `until` (gpu.ecc, gpu.lost) stay injected until the run ends.
    if !gpu_active.is_empty() {
        cancel.cancelled().await;
    }
    for (index, addrs) in gpu_active.drain() {
        let rec = &mut records[index];
        heal_gpu(&client, &addrs, rec.kind).await;
        if rec.healed_s.is_none() {
            rec.healed_s = Some(events.emit(
                "fault.heal",
                json!({"id": rec.id, "kind": rec.kind.name(), "reason": "run ended"}),
            ));
        }
    }
    for (index, guard) in guards.drain() {
        drop(guard);
        let rec = &mut records[index];
        rec.healed_s = Some(events.emit(
            "fault.heal",
            json!({"id": rec.id, "kind": rec.kind.name(), "reason": "run ended"}),
        ));
    }
    records
}

/// Returns once some trainer worker's `GET /status` reports `step >= step` (polled every
/// 20 ms; workers not up yet or gone are skipped).
async fn wait_for_step(client: &reqwest::Client, replicas: &[Replica], step: u64) {
    let addrs: Vec<SocketAddr> = replicas
        .iter()
        .filter(|r| r.spec().kind == ComponentKind::TrainerWorker)
        .map(|r| r.spec().addr)
        .collect();
    loop {
        for addr in &addrs {
            let status = client
                .get(format!("http://{addr}/status"))
                .timeout(Duration::from_millis(250))
                .send()
                .await;
            if let Ok(r) = status {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["step"].as_u64().is_some_and(|s| s >= step) {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fault timeline playing beside the workload, from `t0` (scenario t = 0).
struct Timeline {
    t0: tokio::time::Instant,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Vec<FaultEvent>>,
}

impl Timeline {
    fn start(faults: Vec<Fault>, stack: &Supervisor, events: &EventLog) -> Self {
        let t0 = tokio::time::Instant::now();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_timeline(
            faults,
            stack.replicas().to_vec(),
            t0,
            events.clone(),
            cancel.clone(),
        ));
        Timeline { t0, cancel, task }
    }

    /// Stops the timeline (healing what is still injected) and returns what happened.
    async fn finish(self) -> Result<Vec<FaultEvent>, String> {
        self.cancel.cancel();
        self.task
            .await
            .map_err(|e| format!("fault timeline task failed: {e}"))
    }
}

/// `DELETE /faults/{kind}` on each worker (best effort: a worker that is gone has no
/// fault left to heal).
async fn heal_gpu(client: &reqwest::Client, addrs: &[SocketAddr], kind: FaultKind) {
    for addr in addrs {
        let url = format!("http://{addr}/faults/{}", kind.name());
        if let Err(e) = client.delete(&url).send().await {
            tracing::debug!(%url, error = %e, "heal request failed (worker gone?)");
        }
    }
}

fn progress_task(
    mut rx: watch::Receiver<Progress>,
    mode: ProgressMode,
    label: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let live = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = live.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let mut last_line = Instant::now();
        while rx.changed().await.is_ok() {
            let p = *rx.borrow_and_update();
            let line = format!(
                "{label} t={:.1}s sent={} ok={} failed={} in_flight={} rate={:.0}/s",
                p.elapsed.as_secs_f64(),
                p.sent,
                p.ok,
                p.failed,
                p.in_flight,
                p.rate_per_s
            );
            match (&bar, mode) {
                (Some(b), _) => b.set_message(line),
                (None, ProgressMode::Quiet) => {}
                (None, _) => {
                    if last_line.elapsed() >= Duration::from_secs(1) {
                        eprintln!("{line}");
                        last_line = Instant::now();
                    }
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    })
}

/// What one stack lifetime produced.
#[derive(Default)]
struct StackResult {
    load: Option<LoadReport>,
    /// Scenario t = 0 of this lifetime, on the run clock.
    load_t0_s: Option<f64>,
    faults: Vec<FaultEvent>,
    search: Option<SearchResult>,
    training: Option<report::TrainingResult>,
    replicas: Vec<Replica>,
    failures: Vec<String>,
}

struct Ctx<'a> {
    scenario: &'a Scenario,
    name: &'a str,
    seed: u64,
    programs: &'a BTreeMap<&'static str, PathBuf>,
    dir: PathBuf,
    several_variants: bool,
    events: EventLog,
    opts: &'a RunOptions,
    cancel: &'a CancellationToken,
}

/// Starts the stack, runs the workload (load or search) and stops the stack again.
async fn stack_lifetime(ctx: &Ctx<'_>, v: &Variant) -> StackResult {
    let mut out = StackResult::default();
    let variant = v.name.as_str();
    let dirs = RunDirs {
        logs: ctx.dir.join("logs"),
        train: if ctx.several_variants {
            ctx.dir.join(format!("train-{variant}"))
        } else {
            ctx.dir.join("train")
        },
        prefix: if ctx.several_variants {
            format!("{variant}-")
        } else {
            String::new()
        },
    };
    let specs = match stack_specs(ctx.scenario, v, ctx.programs, &dirs, ctx.seed) {
        Ok(s) => s,
        Err(e) => {
            out.failures
                .push(format!("cannot reserve loopback ports: {e}"));
            return out;
        }
    };
    ctx.events.emit(
        "stack.start",
        json!({"variant": variant, "replicas": specs.len()}),
    );
    let stack = Supervisor::start(specs, &ctx.events, ctx.opts.stop_grace);
    match stack.wait_ready(ctx.cancel).await {
        Err(e) => out.failures.push(e.to_string()),
        Ok(()) => {
            ctx.events.emit("stack.ready", json!({"variant": variant}));
            if let Err(e) = drive(ctx, v, &stack, &mut out).await {
                out.failures.push(e);
            }
        }
    }
    ctx.events.emit("stack.stop", json!({"variant": variant}));
    out.replicas = stack.shutdown().await;
    if ctx.scenario.workload.mode == LoadMode::Training {
        out.training = Some(training_result(ctx, v, &out));
    }
    out
}

/// Reads the trainer's events from every replica's log and analyses the job.
fn training_result(ctx: &Ctx<'_>, v: &Variant, out: &StackResult) -> report::TrainingResult {
    let clock = ctx.events.clock();
    let unix = |run_s: f64| {
        clock
            .start_wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            + run_s
    };
    let procs: Vec<ProcessEvents> = out
        .replicas
        .iter()
        .map(|r| ProcessEvents {
            name: r.spec().name.clone(),
            events: std::fs::read_to_string(&r.spec().log_path)
                .map(|t| training::parse_log(&t))
                .unwrap_or_default(),
        })
        .collect();
    let faults: Vec<InjectedFault> = out
        .faults
        .iter()
        .filter_map(|f| {
            Some(InjectedFault {
                id: f.id.clone(),
                kind: f.kind.name().to_owned(),
                at_unix_s: unix(f.injected_s?),
                healed_unix_s: f.healed_s.map(unix),
            })
        })
        .collect();
    let target = &ctx.scenario.workload.target;
    let workers = out
        .replicas
        .iter()
        .filter(|r| &r.spec().component == target)
        .count() as u32;
    let warmup_steps = ctx
        .scenario
        .workload
        .training
        .as_ref()
        .map_or(scenario::TrainingLoad::default().warmup_steps, |t| {
            t.warmup_steps
        });
    let mut result = training::analyze(&v.name, workers, &procs, &faults, warmup_steps);
    let t0 = unix(out.load_t0_s.unwrap_or(0.0));
    for p in &mut result.throughput_curve {
        p.0 = round_us(p.0 - t0);
    }
    result
}

/// Runs the workload against a ready stack.
async fn drive(
    ctx: &Ctx<'_>,
    v: &Variant,
    stack: &Supervisor,
    out: &mut StackResult,
) -> Result<(), String> {
    let w = &ctx.scenario.workload;
    let variant = v.name.as_str();
    let faults_to_inject = if v.inject_faults {
        ctx.scenario.faults.clone()
    } else {
        Vec::new()
    };
    if w.mode == LoadMode::Training {
        return drive_training(ctx, v, stack, faults_to_inject, out).await;
    }
    let targets = stack.targets(&w.target);
    let base = targets
        .first()
        .map(|r| format!("http://{}", r.spec().addr))
        .ok_or_else(|| format!("workload.target {:?} has no replicas", w.target))?;
    let templates = requests::build(&w.requests, &base, ctx.seed)
        .await
        .map_err(|e| e.to_string())?;
    let uris = targets
        .iter()
        .map(|r| format!("http://{}", r.spec().addr).parse::<http::Uri>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("target address: {e}"))?;
    let arrival = match w.arrival {
        scenario::Arrival::Constant => loadgen::Arrival::Constant,
        scenario::Arrival::Poisson => loadgen::Arrival::Poisson,
    };
    let spec = loadgen::OpenLoopSpec {
        targets: uris.clone(),
        requests: templates.clone(),
        rate_per_s: w
            .rate_per_s
            .or(w.search.as_ref().map(|s| s.rate_per_s_min))
            .unwrap_or(1.0),
        arrival,
        warmup: w.warmup,
        duration: w.duration,
        rate_steps: faults::rate_steps(&faults_to_inject),
        connections: w.connections as usize,
        timeout: w.timeout,
        seed: ctx.seed,
        window: loadgen::DEFAULT_WINDOW,
        fine_window: loadgen::DEFAULT_FINE_WINDOW,
    };
    let (tx, rx) = watch::channel(Progress::default());
    let shown = progress_task(rx, ctx.opts.progress, format!("[{}]", ctx.name));
    match w.mode {
        LoadMode::MaxThroughput => {
            let s = w
                .search
                .as_ref()
                .ok_or("workload.search is required with mode = \"max-throughput\"")?;
            let criteria = loadgen::SearchCriteria {
                percentile: s.percentile,
                latency_max: Duration::from_secs_f64(s.latency_ms_max / 1000.0),
                error_ratio_max: s.error_ratio_max,
                rate_min: s.rate_per_s_min,
                rate_max: s.rate_per_s_max,
                steps: s.steps,
                trial_warmup: w.warmup,
                trial_duration: s.trial,
            };
            ctx.events.emit("search.start", json!({"variant": variant}));
            let result = loadgen::search_max_throughput(&spec, &criteria, ctx.cancel.clone())
                .await
                .map_err(|e| format!("load generator: {e}"));
            drop(tx);
            let _ = shown.await;
            let report = result?;
            ctx.events.emit(
                "search.end",
                json!({"variant": variant, "best_rate_per_s": report.best_rate_per_s}),
            );
            out.search = Some(SearchResult {
                variant: variant.to_owned(),
                percentile: s.percentile,
                latency_ms_max: s.latency_ms_max,
                error_ratio_max: s.error_ratio_max,
                best_rate_per_s: report.best_rate_per_s,
                trials: report
                    .trials
                    .iter()
                    .map(|t| TrialResult {
                        rate_per_s: t.rate_per_s,
                        achieved_rps: t.achieved_rps,
                        latency_ms: t.latency_at_percentile.as_secs_f64() * 1000.0,
                        error_ratio: t.error_ratio,
                        passed: t.passed,
                        accounting: analysis::accounting(&t.report.accounting),
                    })
                    .collect(),
            });
        }
        LoadMode::Training => unreachable!("handled by drive_training above"),
        LoadMode::OpenLoop | LoadMode::ClosedLoop => {
            out.load_t0_s = Some(
                ctx.events
                    .emit("load.start", json!({"mode": format!("{:?}", w.mode)})),
            );
            let timeline = Timeline::start(faults_to_inject, stack, &ctx.events);
            let result = if w.mode == LoadMode::OpenLoop {
                loadgen::run_open_loop(&spec, ctx.cancel.clone(), Some(tx)).await
            } else {
                let closed = loadgen::ClosedLoopSpec {
                    targets: uris,
                    requests: templates,
                    connections: spec.connections,
                    warmup: spec.warmup,
                    duration: spec.duration,
                    timeout: spec.timeout,
                    seed: spec.seed,
                    window: spec.window,
                    fine_window: spec.fine_window,
                };
                loadgen::run_closed_loop(&closed, ctx.cancel.clone(), Some(tx)).await
            };
            out.faults = match timeline.finish().await {
                Ok(f) => f,
                Err(e) => {
                    out.failures.push(e);
                    Vec::new()
                }
            };
            let _ = shown.await;
            let report = result.map_err(|e| format!("load generator: {e}"))?;
            ctx.events.emit(
                "load.end",
                json!({"sent": report.accounting.sent, "ok": report.accounting.ok}),
            );
            out.load_t0_s = Some(ctx.events.clock().wall_to_s(report.started_at));
            out.load = Some(report);
        }
    }
    Ok(())
}

/// A training job: play the fault timeline while the job runs; done when every replica of
/// the target has exited (or `warmup + duration` has passed, or Ctrl-C).
async fn drive_training(
    ctx: &Ctx<'_>,
    v: &Variant,
    stack: &Supervisor,
    faults_to_inject: Vec<Fault>,
    out: &mut StackResult,
) -> Result<(), String> {
    let w = &ctx.scenario.workload;
    out.load_t0_s = Some(
        ctx.events
            .emit("training.start", json!({"variant": v.name})),
    );
    let timeline = Timeline::start(faults_to_inject, stack, &ctx.events);
    let deadline = timeline.t0 + w.warmup + w.duration;
    let workers = stack.targets(&w.target);
    let finished = loop {
        let all_down = workers
            .iter()
            .all(|r| matches!(r.health(), Health::Down(_) | Health::Failed(_)));
        if all_down {
            break true;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = tokio::time::sleep_until(deadline) => break false,
            () = ctx.cancel.cancelled() => break false,
        }
    };
    out.faults = timeline.finish().await?;
    ctx.events.emit(
        "training.end",
        json!({"variant": v.name, "workers_exited": finished}),
    );
    if !finished && !ctx.cancel.is_cancelled() {
        return Err(format!(
            "training job of variant {} still running after warmup + duration = {}; stopped it",
            v.name,
            humantime::format_duration(w.warmup + w.duration)
        ));
    }
    Ok(())
}

/// Runs the scenario file at `path`.
pub async fn run_file(
    path: &Path,
    opts: &RunOptions,
    cancel: CancellationToken,
) -> Result<RunOutcome, RunError> {
    let scenario = scenario::load(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".to_owned());
    let name = scenario.display_name(&stem);
    let seed = opts.seed.unwrap_or(scenario.seed);
    let mut programs = BTreeMap::new();
    for c in &scenario.components {
        programs.insert(
            binaries::binary_name(c.kind),
            binaries::locate(c.kind, opts.bin_dir.as_deref())?,
        );
    }

    let started = SystemTime::now();
    let id = run_id(started, seed);
    let dir = opts.reports_dir.join(&name).join(&id);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    let clock = RunClock::start();
    let events_path = dir.join("events.jsonl");
    let events = EventLog::create(&events_path, clock).map_err(io_err(&events_path))?;
    let commit = git_commit();
    events.emit(
        "run.start",
        json!({"scenario": name, "file": path.display().to_string(), "seed": seed, "git_commit": commit, "run_id": id}),
    );

    let variants: Vec<Variant> = if scenario.variants.is_empty() {
        vec![Variant {
            name: "default".to_owned(),
            args: BTreeMap::new(),
            replicas: BTreeMap::new(),
            inject_faults: true,
        }]
    } else {
        scenario.variants.clone()
    };
    let ctx = Ctx {
        scenario: &scenario,
        name: &name,
        seed,
        programs: &programs,
        dir: dir.clone(),
        several_variants: variants.len() > 1,
        events: events.clone(),
        opts,
        cancel: &cancel,
    };
    let mut results = Vec::new();
    for v in &variants {
        if cancel.is_cancelled() {
            break;
        }
        results.push(stack_lifetime(&ctx, v).await);
    }
    let interrupted = cancel.is_cancelled();
    if interrupted {
        events.emit("run.interrupted", json!({}));
    }
    let wall_s = clock.now_s();
    let mut metrics = assemble(
        &scenario, &name, path, &id, seed, &commit, started, wall_s, &results,
    );
    if interrupted {
        metrics
            .failures
            .push("interrupted (Ctrl-C) before the workload finished".to_owned());
    }
    events.emit(
        "run.end",
        json!({"pass": metrics.passed(), "wall_s": round_us(wall_s)}),
    );
    events.close().map_err(io_err(&events_path))?;
    report::write_run(&dir, &metrics).map_err(|source| RunError::Report {
        dir: dir.clone(),
        source,
    })?;
    link_latest(&dir);
    Ok(RunOutcome {
        metrics,
        dir,
        interrupted,
    })
}

/// `reports/<scenario>/latest` → this run (best effort; a report is complete without it).
fn link_latest(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let link = parent.join("latest");
    let _ = std::fs::remove_file(&link);
    let _ = std::os::unix::fs::symlink(name, &link);
}

/// Fills the training results, their faults and recoveries, charts and figures; returns
/// whether every job's steps are accounted.
fn training_section(
    metrics: &mut RunMetrics,
    results: &[StackResult],
    to_scn: &dyn Fn(f64) -> f64,
) -> bool {
    let mut accounted = true;
    for r in results {
        let Some(t) = &r.training else { continue };
        accounted &= t.steps_accounted;
        for f in &r.faults {
            let Some(inj) = f.injected_s else { continue };
            let start_s = to_scn(inj);
            let rec = t.recoveries.iter().find(|x| x.fault_id == f.id);
            let end = f
                .healed_s
                .map(to_scn)
                .or_else(|| rec.and_then(|x| x.total_s).map(|d| start_s + d));
            metrics.faults.push(FaultSpan {
                id: f.id.clone(),
                kind: f.kind.name().to_owned(),
                target: f.target.clone(),
                start_s,
                end_s: end.map(round_us),
                detail: f.detail.clone(),
            });
            if let Some(x) = rec {
                metrics.recoveries.push(Recovery {
                    fault_id: f.id.clone(),
                    kind: f.kind.name().to_owned(),
                    start_s,
                    recovery_s: x.total_s.map(round_us),
                    failed_requests: 0,
                    restarts: r.replicas.iter().map(Replica::restarts).sum(),
                });
            }
        }
        metrics.training.push(t.clone());
    }
    let jobs = &metrics.training;
    let series = |f: &dyn Fn(&report::TrainingResult) -> Vec<(f64, f64)>| -> Vec<report::Series> {
        jobs.iter()
            .map(|j| report::Series {
                name: if jobs.len() > 1 {
                    format!("{} ({} workers)", j.variant, j.workers)
                } else {
                    format!("{} workers", j.workers)
                },
                points: f(j),
            })
            .collect()
    };
    metrics.charts.push(report::Chart {
        id: "training-throughput".into(),
        title: "Training throughput per step (samples/s, all ranks)".into(),
        x_label: "scenario time (s)".into(),
        y_label: "samples per second".into(),
        time_axis: true,
        series: series(&|j| j.throughput_curve.clone()),
    });
    metrics.charts.push(report::Chart {
        id: "loss".into(),
        title: "Training loss (rank 0)".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        time_axis: false,
        series: series(&|j| j.loss_curve.clone()),
    });
    // Scaling: E(N) = thr(N) / (N × thr(1)), metrics.md, all from this run.
    let base = jobs
        .iter()
        .find(|j| j.workers == 1)
        .and_then(|j| j.throughput_samples_per_s);
    let mut measured: Vec<(f64, f64)> = jobs
        .iter()
        .filter_map(|j| Some((f64::from(j.workers), j.throughput_samples_per_s?)))
        .collect();
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    measured.dedup_by(|a, b| a.0 == b.0);
    if let (Some(base), true) = (base, measured.len() > 1) {
        metrics.charts.push(report::Chart {
            id: "scaling".into(),
            title: "Weak scaling: steady-state throughput vs workers".into(),
            x_label: "workers".into(),
            y_label: "samples per second".into(),
            time_axis: false,
            series: vec![
                report::Series {
                    name: "measured".into(),
                    points: measured.clone(),
                },
                report::Series {
                    name: "ideal (N × one worker)".into(),
                    points: measured.iter().map(|&(n, _)| (n, n * base)).collect(),
                },
            ],
        });
        for &(n, thr) in measured.iter().filter(|p| p.0 > 1.0) {
            metrics.figures.push(report::Figure {
                name: format!("scaling_efficiency_n{n}"),
                value: thr / (n * base),
                unit: "ratio".into(),
                definition:
                    "metrics.md Training: E(N) = throughput(N) / (N × throughput(1)), same run"
                        .into(),
            });
        }
    }
    // Recovery timeline of each interrupting fault: its parts laid end to end on the
    // seconds since the fault (detection, re-rendezvous, restore, catch-up).
    for j in jobs {
        for x in &j.recoveries {
            let mut at = 0.0;
            let series = ["detection", "re-rendezvous", "restore", "catch-up"]
                .iter()
                .zip([x.detection_s, x.rendezvous_s, x.restore_s, x.catch_up_s])
                .map(|(name, d)| {
                    let d = d.unwrap_or(0.0);
                    let points = vec![(at, 1.0), (at + d, 1.0)];
                    at += d;
                    report::Series {
                        name: format!("{name} {}", d_text(d)),
                        points,
                    }
                })
                .collect();
            metrics.charts.push(report::Chart {
                id: format!("recovery-{}-{}", j.variant, x.fault_id),
                title: format!(
                    "Recovery timeline after {} ({}, variant {}): total {}",
                    x.fault_id,
                    x.kind,
                    j.variant,
                    x.total_s.map_or_else(|| "not recovered".to_owned(), d_text)
                ),
                x_label: "seconds since the fault".into(),
                y_label: "".into(),
                time_axis: false,
                series,
            });
        }
    }
    for j in jobs {
        for x in &j.stragglers {
            if let Some(slowdown) = x.slowdown {
                metrics.figures.push(report::Figure {
                    name: format!("{}_{}_straggler_slowdown", j.variant, x.fault_id),
                    value: slowdown,
                    unit: "ratio".into(),
                    definition: "rank-0 step time while throttled / over an equal span before (lock-step training waits for the straggler)".into(),
                });
            }
        }
        for x in &j.recoveries {
            for (what, v) in [
                ("detection_s", x.detection_s),
                ("rendezvous_s", x.rendezvous_s),
                ("restore_s", x.restore_s),
                ("catch_up_s", x.catch_up_s),
                ("recovery_s", x.total_s),
            ] {
                if let Some(v) = v {
                    metrics.figures.push(report::Figure {
                        name: format!("{}_{}_{what}", j.variant, x.fault_id),
                        value: v,
                        unit: "s".into(),
                        definition: "metrics.md Training: recovery time split into detection, re-rendezvous, restore, catch-up".into(),
                    });
                }
            }
        }
    }
    accounted
}

fn d_text(seconds: f64) -> String {
    format!("{seconds:.3} s")
}

/// The tightest corrected-latency bound of the SLOs, for goodput.
fn goodput_bound_us(slos: &[Slo]) -> Option<u64> {
    slos.iter()
        .filter_map(|s| match s {
            Slo::Latency {
                measure: LatencyMeasure::Corrected,
                latency_ms_max: Some(max),
                ..
            } => Some((max * 1000.0) as u64),
            _ => None,
        })
        .min()
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    scenario: &Scenario,
    name: &str,
    path: &Path,
    run_id: &str,
    seed: u64,
    commit: &str,
    started: SystemTime,
    wall_s: f64,
    results: &[StackResult],
) -> RunMetrics {
    let w = &scenario.workload;
    let mut failures: Vec<String> = results.iter().flat_map(|r| r.failures.clone()).collect();
    let searches: Vec<SearchResult> = results.iter().filter_map(|r| r.search.clone()).collect();
    // Scenario clock: t = 0 at the first intended request of the (single) load run.
    // With variants, the clock of the first lifetime that injected faults.
    let t0 = results
        .iter()
        .find(|r| !r.faults.is_empty())
        .and_then(|r| r.load_t0_s)
        .or_else(|| results.iter().find_map(|r| r.load_t0_s))
        .unwrap_or(0.0);
    let to_scn = |s: f64| round_us(s - t0);

    let mut processes = Vec::new();
    for r in results {
        for rep in &r.replicas {
            let spec = rep.spec();
            processes.push(ProcessRecord {
                name: spec.name.clone(),
                kind: binaries::binary_name(spec.kind).to_owned(),
                address: spec.addr.to_string(),
                lives: rep
                    .lives()
                    .into_iter()
                    .map(|l| ProcessLife {
                        pid: l.pid,
                        started_s: to_scn(l.started_s),
                        ready_s: l.ready_s.map(to_scn),
                        ended_s: l.ended_s.map(to_scn),
                        how: l.how,
                    })
                    .collect(),
                log: format!(
                    "logs/{}",
                    spec.log_path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            });
        }
    }

    let mut metrics = RunMetrics {
        schema_version: report::SCHEMA_VERSION,
        run: RunInfo {
            scenario: name.to_owned(),
            description: scenario.description.clone(),
            scenario_file: path.display().to_string(),
            run_id: run_id.to_owned(),
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            wall_s: round_us(wall_s),
            seed,
            git_commit: commit.to_owned(),
            faultline_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: HostInfo {
                os: std::env::consts::OS.to_owned(),
                arch: std::env::consts::ARCH.to_owned(),
                cpus: std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
            },
            workload: WorkloadInfo {
                mode: format!("{:?}", w.mode),
                arrival: format!("{:?}", w.arrival),
                rate_per_s: w.rate_per_s,
                connections: w.connections,
                warmup_s: w.warmup.as_secs_f64(),
                duration_s: w.duration.as_secs_f64(),
                timeout_s: w.timeout.as_secs_f64(),
                target: w.target.clone(),
            },
        },
        phases: Vec::new(),
        faults: Vec::new(),
        windows: Vec::new(),
        summaries: Vec::new(),
        distribution: Vec::new(),
        recoveries: Vec::new(),
        accounting: report::Accounting::default(),
        processes,
        searches,
        figures: Vec::new(),
        charts: Vec::new(),
        training: Vec::new(),
        slos: Vec::new(),
        failures: Vec::new(),
    };

    let mut phases: Vec<PhaseData> = Vec::new();
    let mut balanced = true;
    let mut unbalanced_windows = Vec::new();
    if let Some(r) = results.iter().find(|r| r.load.is_some()) {
        let load = r.load.as_ref().expect("filtered on load.is_some()");
        let fine_width = load
            .fine
            .get(1)
            .zip(load.fine.first())
            .map(|(b, a)| b.start - a.start)
            .unwrap_or(loadgen::DEFAULT_FINE_WINDOW);
        let window_s = load.windows.first().map_or(1.0, |w| w.width.as_secs_f64());
        let measured_end = load.measured.end.as_secs_f64();
        let mut affected = Vec::new();
        for f in &r.faults {
            let Some(inj) = f.injected_s else { continue };
            let start_s = to_scn(inj);
            let healed = f.healed_s.map(to_scn);
            let recovery = analysis::recovery_s(&load.fine, fine_width, start_s);
            let end = healed
                .unwrap_or(start_s)
                .max(recovery.map_or(measured_end, |rec| start_s + rec));
            affected.push((start_s, end + window_s));
            let restarts = r
                .replicas
                .iter()
                .filter(|rep| {
                    f.target
                        .as_deref()
                        .is_some_and(|t| rep.spec().component == t || rep.spec().name == t)
                })
                .flat_map(|rep| rep.lives())
                .filter(|l| to_scn(l.started_s) >= start_s && to_scn(l.started_s) <= end)
                .count() as u32;
            metrics.recoveries.push(Recovery {
                fault_id: f.id.clone(),
                kind: f.kind.name().to_owned(),
                start_s,
                recovery_s: recovery.map(round_us),
                failed_requests: analysis::failed_between(
                    &load.fine,
                    fine_width,
                    start_s,
                    recovery.map_or(f64::INFINITY, |rec| start_s + rec),
                ),
                restarts,
            });
            metrics.faults.push(FaultSpan {
                id: f.id.clone(),
                kind: f.kind.name().to_owned(),
                target: f.target.clone(),
                start_s,
                end_s: Some(round_us(end)),
                detail: f.detail.clone(),
            });
        }
        phases = analysis::phases(load, &affected);
        metrics.phases = vec![
            Span {
                name: "warmup".into(),
                start_s: load.warmup.start.as_secs_f64(),
                end_s: load.warmup.end.as_secs_f64(),
            },
            Span {
                name: "measured".into(),
                start_s: load.measured.start.as_secs_f64(),
                end_s: measured_end,
            },
        ];
        let bound = goodput_bound_us(&scenario.slo);
        metrics.windows = load
            .windows
            .iter()
            .map(|w| analysis::window_metrics(w, bound))
            .collect();
        for w in &load.windows {
            if !w.counts.balanced() {
                balanced = false;
                unbalanced_windows.push(w.start.as_secs_f64());
            }
        }
        balanced &= load.accounting.balanced();
        metrics.summaries = phases.iter().map(PhaseData::summary).collect();
        metrics.distribution = report::distribution_from_histograms(
            &load.measured.stats.latency,
            &load.measured.stats.service,
        );
        metrics.accounting = analysis::accounting(&load.accounting);
    } else if !metrics.searches.is_empty() {
        let mut total = report::Accounting {
            balanced: true,
            ..report::Accounting::default()
        };
        for t in metrics.searches.iter().flat_map(|s| s.trials.iter()) {
            let a = &t.accounting;
            total.sent += a.sent;
            total.ok += a.ok;
            total.timeouts += a.timeouts;
            total.dropped_by_generator += a.dropped_by_generator;
            total.balanced &= a.balanced;
            for (kind, n) in &a.errors {
                *total.errors.entry(kind.clone()).or_insert(0) += n;
            }
        }
        balanced = total.balanced;
        metrics.accounting = total;
    } else if w.mode == LoadMode::Training {
        balanced = training_section(&mut metrics, results, &to_scn);
    } else if failures.is_empty() {
        failures.push("the workload produced no measurements".to_owned());
    }
    if !balanced && w.mode == LoadMode::Training {
        failures.push(
            "step accounting does not balance: a step number between 0 and the last completed step never completed, or the job stopped before its last step".to_owned(),
        );
    } else if !balanced {
        failures.push(format!(
            "request accounting does not balance (sent ≠ ok + errors + timeouts + dropped) in windows starting at {unbalanced_windows:?} s"
        ));
    }
    let evidence = Evidence {
        phases: &phases,
        recoveries: &metrics.recoveries,
        searches: &metrics.searches,
        training: &metrics.training,
        accounting_balanced: balanced,
        unbalanced_windows,
    };
    metrics.slos = slo::evaluate(&scenario.slo, &evidence);
    metrics.failures = failures;
    metrics
}
