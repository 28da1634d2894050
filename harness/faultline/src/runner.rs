//! Runs one scenario end to end: start the stack, wait for readiness, drive the load while
//! the fault timeline plays, stop everything, analyse, write the report.
//!
//! Every exit path heals faults and stops processes: the timeline owns its fault guards
//! (healed on drop), the [`Supervisor`] owns the processes (stopped on shutdown, killed on
//! drop), and a cancelled run (Ctrl-C) still goes through both before writing a report
//! marked as interrupted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use loadgen::Progress;
use report::{RunMetrics, SearchResult, TrialResult};
use scenario::{Fault, LoadMode, Scenario, ScenarioError, Variant};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::abort;
use crate::addrs::{AddrError, RunBlock};
use crate::analysis;
use crate::assemble::{assemble, ReplicaRecord, RunIdentity, StackResult};
use crate::binaries::{self, MissingBinary};
use crate::clients;
use crate::drain;
use crate::events::{round_us, EventLog, RunClock};
use crate::faults;
use crate::requests;
use crate::sampler::Sampler;
use crate::stack::{self, RunDirs};
use crate::supervisor::{Health, Supervisor};
use crate::timeline::Timeline;
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
    /// Arguments appended to a component's `args` for this run only, as (component,
    /// argument): `faultline compare --candidate-arg server=--fault-slowdown=0.1`. The
    /// report lists them (`run.extra_args`): such a run is not the scenario as written.
    pub extra_args: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            reports_dir: PathBuf::from("reports"),
            bin_dir: None,
            seed: None,
            progress: ProgressMode::Auto,
            stop_grace: Duration::from_secs(5),
            extra_args: Vec::new(),
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
    #[error(transparent)]
    Command(#[from] crate::binaries::MissingCommand),
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("{path}: {source}")]
    Netns {
        path: PathBuf,
        source: crate::netns::NetnsError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    ExtraArg(String),
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

/// Appends each (component, argument) of `extra` to that component's `args`.
fn add_extra_args(scenario: &mut Scenario, extra: &[(String, String)]) -> Result<(), RunError> {
    if extra.len() > scenario::bounds::MAX_ARGS {
        return Err(RunError::ExtraArg(format!(
            "{} extra arguments: expected at most {}",
            extra.len(),
            scenario::bounds::MAX_ARGS
        )));
    }
    for (component, arg) in extra {
        if arg.len() > scenario::bounds::MAX_ARG_BYTES {
            return Err(RunError::ExtraArg(format!(
                "extra argument for {component:?}: {} bytes, expected at most {}",
                arg.len(),
                scenario::bounds::MAX_ARG_BYTES
            )));
        }
        let names: Vec<String> = scenario.components.iter().map(|c| c.name.clone()).collect();
        let Some(c) = scenario
            .components
            .iter_mut()
            .find(|c| &c.name == component)
        else {
            return Err(RunError::ExtraArg(format!(
                "extra argument {arg:?}: no component {component:?}; expected one of: {}",
                names.join(", ")
            )));
        };
        c.args.push(arg.clone());
    }
    Ok(())
}

/// The commit this binary was built from (see `build.rs`), `-dirty` if the build had
/// uncommitted changes to tracked files.
pub const BUILD_COMMIT: &str = env!("FAULTLINE_BUILD_COMMIT");

fn run_id(started: SystemTime, seed: u64) -> String {
    let stamp = humantime::format_rfc3339_millis(started).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    format!("{}-s{seed}", compact.replace('.', ""))
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
    /// This run's loopback addresses (see [`crate::addrs`]).
    block: &'a RunBlock,
    /// The regions' network namespaces, with `[network] mode = "netns"`.
    nets: Option<&'a crate::netns::RegionNets>,
}

/// Starts the stack, runs the workload (load or search) and stops the stack again.
async fn stack_lifetime(ctx: &Ctx<'_>, v: &Variant) -> StackResult {
    let mut out = StackResult {
        variant: v.name.clone(),
        ..StackResult::default()
    };
    let variant = v.name.as_str();
    let dirs = RunDirs::new(&ctx.dir, variant, ctx.several_variants);
    let addrs = match stack::addresses(ctx.scenario, v, ctx.block) {
        Ok(a) => a,
        Err(e) => {
            out.failures.push(format!("cannot place the stack: {e}"));
            return out;
        }
    };
    // Components that `net.*` faults target are reached through a fault proxy each, and
    // every replica from other regions through its link's proxy.
    let netted = stack::netted(ctx.scenario);
    let reach = match stack::reach(ctx.scenario, v, &addrs, &netted, ctx.block) {
        Ok(r) => r,
        Err(e) => {
            out.failures
                .push(format!("cannot place the fault proxies: {e}"));
            return out;
        }
    };
    let mut specs = stack::specs(
        ctx.scenario,
        v,
        ctx.programs,
        &dirs,
        ctx.seed,
        &addrs,
        &reach.views,
    );
    if let Some(nets) = ctx.nets {
        for spec in &mut specs {
            spec.netns = nets.get(&spec.region).cloned();
        }
    }
    let net = if reach.proxies.is_empty() {
        None
    } else {
        match crate::faults::net::NetLayer::start(ctx.scenario, &reach.proxies, ctx.seed) {
            Ok(n) => {
                let name = |r: u8| crate::faults::net::region_name(ctx.scenario, r);
                let proxies: Vec<serde_json::Value> = reach
                    .proxies
                    .iter()
                    .map(|p| {
                        json!({
                            "replica": p.replica,
                            "proxy": p.listen.to_string(),
                            "upstream": p.upstream.to_string(),
                            "link": p.link.map(|(from, to)| json!({"from": name(from), "to": name(to)})),
                        })
                    })
                    .collect();
                ctx.events
                    .emit("net.start", json!({"variant": variant, "proxies": proxies}));
                Some(n)
            }
            Err(e) => {
                out.failures.push(e);
                return out;
            }
        }
    };
    ctx.events.emit(
        "stack.start",
        json!({"variant": variant, "replicas": specs.len()}),
    );
    let mut stack = Supervisor::start(specs, &ctx.events, ctx.opts.stop_grace);
    if let Some(n) = net {
        stack.set_net(n);
    }
    stack.set_regions(
        ctx.scenario
            .regions
            .iter()
            .map(|r| r.name.clone())
            .collect(),
    );
    let sampler = Sampler::start(stack.replicas().to_vec(), ctx.events.clock());
    match stack.wait_ready(ctx.cancel).await {
        Err(e) => out.failures.push(e.to_string()),
        Ok(()) => {
            ctx.events.emit("stack.ready", json!({"variant": variant}));
            if let Err(e) = drive(ctx, v, &stack, &reach.views, &mut out).await {
                out.failures.push(e);
            }
        }
    }
    out.samples = sampler.finish().await;
    out.net_traffic = stack.net().map(|n| n.traffic()).unwrap_or_default();
    ctx.events.emit("stack.stop", json!({"variant": variant}));
    out.replicas = stack
        .shutdown()
        .await
        .iter()
        .map(ReplicaRecord::of)
        .collect();
    if ctx.scenario.workload.mode == LoadMode::Training {
        let (result, broken) = training_result(ctx, v, &out);
        out.training = Some(result);
        out.failures.extend(broken);
    }
    out
}

/// Reads the trainer's events from every replica's log and analyses the job; the second
/// value names log lines that look like events but break the contract (a run with any fails).
fn training_result(
    ctx: &Ctx<'_>,
    v: &Variant,
    out: &StackResult,
) -> (report::TrainingResult, Vec<String>) {
    let clock = ctx.events.clock();
    let unix = |run_s: f64| {
        clock
            .start_wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            + run_s
    };
    let mut broken = Vec::new();
    let procs: Vec<ProcessEvents> = out
        .replicas
        .iter()
        .map(|r| {
            let text = std::fs::read_to_string(&r.log_path).unwrap_or_default();
            let (events, unreadable) = training::parse_log_reporting(&text);
            broken.extend(unreadable.into_iter().take(3).map(|why| {
                format!(
                    "{}: a line of {} is not a trainer event ({why}); trainer and harness disagree on wire::trainer",
                    r.name,
                    r.log_path.display()
                )
            }));
            ProcessEvents {
                name: r.name.clone(),
                events,
            }
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
        .filter(|r| &r.component == target)
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
    (result, broken)
}

/// Runs the workload against a ready stack. `views` is what each region reaches the
/// replicas at ([`stack::Reach::views`]): each client of `[[workload.clients]]` sends to
/// its region's.
async fn drive(
    ctx: &Ctx<'_>,
    v: &Variant,
    stack: &Supervisor,
    views: &BTreeMap<u8, BTreeMap<String, Vec<SocketAddr>>>,
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
    // Load goes where clients reach the replicas (through the fault proxy when there is one).
    let base = targets
        .first()
        .map(|r| format!("http://{}", r.spec().public))
        .ok_or_else(|| format!("workload.target {:?} has no replicas", w.target))?;
    let templates = requests::build(&w.requests, &base, ctx.seed)
        .await
        .map_err(|e| e.to_string())?;
    out.load_targets = targets.iter().map(|r| r.spec().name.clone()).collect();
    let uris = targets
        .iter()
        .map(|r| format!("http://{}", r.spec().public).parse::<http::Uri>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("target address: {e}"))?;
    let arrival = match w.arrival {
        scenario::Arrival::Constant => loadgen::Arrival::Constant,
        scenario::Arrival::Poisson => loadgen::Arrival::Poisson,
    };
    // One LoadSpec for every mode; open loop and the search add a schedule to it.
    let load = loadgen::LoadSpec {
        targets: uris,
        requests: templates,
        connections: w.connections as usize,
        warmup: w.warmup,
        duration: w.duration,
        timeout: w.timeout,
        seed: ctx.seed,
        window: loadgen::DEFAULT_WINDOW,
        fine_window: loadgen::DEFAULT_FINE_WINDOW,
    };
    let spec = loadgen::OpenLoopSpec {
        load,
        rate_per_s: w
            .rate_per_s
            .or(w.search.as_ref().map(|s| s.rate_per_s_min))
            .unwrap_or(1.0),
        arrival,
        // With clients, stages target their rates together: the same multipliers for each.
        rate_steps: faults::rate_steps_with(
            w.total_rate_per_s().unwrap_or(0.0),
            &w.stages,
            &faults_to_inject,
        ),
        max_connections: w.max_connections.map(|m| m as usize),
    };
    let clients = clients::plan(ctx.scenario, ctx.seed);
    let client_specs = clients
        .into_iter()
        .map(|c| {
            let reached = views
                .get(&c.region)
                .and_then(|v| v.get(&w.target))
                .ok_or_else(|| {
                    format!(
                        "client {}: region {} has no view of workload.target {:?}",
                        c.name, c.region_name, w.target
                    )
                })?;
            let targets = reached
                .iter()
                .map(|a| format!("http://{a}").parse::<http::Uri>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("target address: {e}"))?;
            let mut s = spec.clone();
            s.load.targets = targets;
            s.load.seed = c.seed;
            s.rate_per_s = c.rate_per_s;
            Ok((c, s))
        })
        .collect::<Result<Vec<_>, String>>()?;
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
            // The fault timeline plays again in every trial, on the trial's clock.
            let mut trial_no = 0u32;
            let mut trial_faults = Vec::new();
            let mut timeline_errors = Vec::new();
            // Trials are isolated: each after the first waits until one request of the mix
            // is answered at the latency it had before the search (the previous trial's
            // backlog drained, a killed replica back).
            let probe = drain::Probe::new(&spec.load)?;
            let baseline = probe.baseline(ctx.cancel).await;
            let result = loadgen::search_max_throughput_with(
                &spec,
                &criteria,
                ctx.cancel.clone(),
                async |trial: loadgen::OpenLoopSpec| {
                    trial_no += 1;
                    let drained_for = if trial_no > 1 {
                        let waited = probe.wait_drained(baseline, ctx.cancel).await;
                        if waited.timed_out {
                            timeline_errors.push(format!(
                                "trial {trial_no}: the target was not back at its pre-search latency after {} s; the trial ran anyway",
                                drain::DRAIN_MAX.as_secs()
                            ));
                        }
                        Some(waited.waited)
                    } else {
                        None
                    };
                    ctx.events.emit(
                        "search.trial",
                        json!({"variant": variant, "trial": trial_no, "rate_per_s": trial.rate_per_s,
                               "drained_s": drained_for.map(|d| round_us(d.as_secs_f64()))}),
                    );
                    let timeline = Timeline::start(faults_to_inject.clone(), stack, &ctx.events);
                    let report = loadgen::run_open_loop(&trial, ctx.cancel.clone(), None).await;
                    match timeline.finish().await {
                        Ok(events) => trial_faults.extend(events.into_iter().map(|mut f| {
                            f.detail = format!("trial {trial_no}: {}", f.detail);
                            f
                        })),
                        Err(e) => timeline_errors.push(e),
                    }
                    Ok(loadgen::TrialRun {
                        report: report?,
                        drained_for,
                    })
                },
            )
            .await
            .map_err(|e| format!("load generator: {e}"));
            out.faults = trial_faults;
            out.failures.extend(timeline_errors);
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
                not_found: report.not_found.clone(),
                trials: report
                    .trials
                    .iter()
                    .map(|t| TrialResult {
                        rate_per_s: t.rate_per_s,
                        purpose: t.purpose.name().to_owned(),
                        drain_s: t.drained_for.map(|d| round_us(d.as_secs_f64())),
                        achieved_rps: t.achieved_rps,
                        latency_ms: t.latency_at_percentile.as_secs_f64() * 1000.0,
                        error_ratio: t.error_ratio,
                        passed: t.passed,
                        accounting: analysis::accounting(&t.report.accounting),
                        connections_added: t.report.connections.added,
                    })
                    .collect(),
            });
        }
        LoadMode::Training => unreachable!("handled by drive_training above"),
        LoadMode::OpenLoop | LoadMode::ClosedLoop => {
            let started = if client_specs.is_empty() {
                json!({"mode": w.mode.name()})
            } else {
                let each: Vec<serde_json::Value> = client_specs
                    .iter()
                    .map(|(c, s)| {
                        json!({"name": c.name, "region": c.region_name, "rate_per_s": c.rate_per_s,
                               "seed": c.seed, "targets": s.load.targets.iter().map(ToString::to_string).collect::<Vec<_>>()})
                    })
                    .collect();
                json!({"mode": w.mode.name(), "clients": each})
            };
            out.load_t0_s = Some(ctx.events.emit("load.start", started));
            // The timeline starts when the load's t0 is known (from its first progress
            // report), and counts from it: fault times and the load's windows share one
            // clock, so a fault at 3 s never overlaps the window before 3 s.
            let mut started_rx = tx.subscribe();
            // SLOs with abort_on_fail watch the live counts and stop the load (not the
            // run) once they cannot pass.
            let load_cancel = ctx.cancel.child_token();
            let guards = abort::guards(&ctx.scenario.slo);
            let watcher = (!guards.is_empty()).then(|| {
                let planned = abort::planned_requests(
                    w.total_rate_per_s().unwrap_or(spec.rate_per_s),
                    &spec.rate_steps,
                    w.warmup.as_secs_f64(),
                    (w.warmup + w.duration).as_secs_f64(),
                );
                tokio::spawn(watch_abort(
                    tx.subscribe(),
                    guards,
                    w.warmup,
                    planned,
                    load_cancel.clone(),
                ))
            });
            let load = async {
                if !client_specs.is_empty() {
                    // Several clients: their open loops at once, one report of them all.
                    clients::run(client_specs, load_cancel.clone(), Some(tx)).await
                } else if w.mode == LoadMode::OpenLoop {
                    loadgen::run_open_loop(&spec, load_cancel.clone(), Some(tx))
                        .await
                        .map(|r| (r, Vec::new()))
                } else {
                    loadgen::run_closed_loop(&spec.load, load_cancel.clone(), Some(tx))
                        .await
                        .map(|r| (r, Vec::new()))
                }
            };
            tokio::pin!(load);
            let (timeline, result) = tokio::select! {
                t0 = load_t0(&mut started_rx) => {
                    let t0 = t0.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
                    (Timeline::start_at(faults_to_inject, stack, &ctx.events, t0), load.await)
                }
                // Ended before it started (it could not resolve or connect): no timeline to
                // play, but one to finish.
                r = &mut load => (Timeline::start(Vec::new(), stack, &ctx.events), r),
            };
            let result = result.map(|(merged, each)| {
                out.clients = each;
                merged
            });
            if let Some(w) = watcher {
                if let Ok(Some(why)) = w.await {
                    ctx.events.emit("load.aborted", json!({"reason": why}));
                    out.failures.push(why);
                }
            }
            out.faults = match timeline.finish().await {
                Ok(f) => f,
                Err(e) => {
                    out.failures.push(e);
                    Vec::new()
                }
            };
            let _ = shown.await;
            let report = result.map_err(|e| format!("load generator: {e}"))?;
            let mut ended = json!({"sent": report.accounting.sent, "ok": report.accounting.ok});
            if !out.clients.is_empty() {
                ended["clients"] = out
                    .clients
                    .iter()
                    .map(|c| {
                        json!({"name": c.name, "sent": c.report.accounting.sent, "ok": c.report.accounting.ok,
                               "t0_s": ctx.events.clock().wall_to_s(c.report.started_at)})
                    })
                    .collect();
            }
            ctx.events.emit("load.end", ended);
            out.load_t0_s = Some(ctx.events.clock().wall_to_s(report.started_at));
            out.load = Some(report);
        }
    }
    Ok(())
}

/// The load's t0 from its progress reports; `None` if it ended without one.
async fn load_t0(rx: &mut watch::Receiver<Progress>) -> Option<std::time::Instant> {
    loop {
        if let Some(t0) = rx.borrow_and_update().t0 {
            return Some(t0);
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

/// Watches the load's progress for SLOs that can no longer pass ([`abort`]); cancels the
/// load and returns why when one cannot. Ends when the load does (its sender drops).
async fn watch_abort(
    mut rx: watch::Receiver<Progress>,
    guards: Vec<abort::Guard>,
    warmup: Duration,
    planned: f64,
    cancel: CancellationToken,
) -> Option<String> {
    let mut start: Option<abort::AtMeasuredStart> = None;
    while rx.changed().await.is_ok() {
        let p = *rx.borrow_and_update();
        if p.elapsed < warmup {
            continue;
        }
        let at = *start.get_or_insert(abort::AtMeasuredStart {
            failed: p.failed,
            in_flight: p.in_flight,
        });
        if let Some(why) = guards
            .iter()
            .find_map(|g| abort::doomed(g, at, &p, planned))
        {
            cancel.cancel();
            return Some(why);
        }
    }
    None
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
    let mut scenario = scenario::load(path)?;
    add_extra_args(&mut scenario, &opts.extra_args)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".to_owned());
    let name = scenario.display_name(&stem);
    let seed = opts.seed.unwrap_or(scenario.seed);
    let mut programs = BTreeMap::new();
    for c in &mut scenario.components {
        if c.kind == scenario::ComponentKind::Command {
            // A user's program: found now (a path, or in PATH), so a typo fails before
            // anything starts, naming the component.
            let found = binaries::locate_command(&c.name, c.command.as_deref().unwrap_or(""))?;
            c.command = Some(found.display().to_string());
            continue;
        }
        programs.insert(
            binaries::binary_name(c.kind),
            binaries::locate(c.kind, opts.bin_dir.as_deref())?,
        );
    }
    let block = RunBlock::claim_for(scenario.network.mode)?;
    // Every region's namespace, for the whole run (all variants), before anything starts.
    let nets = match scenario.network.mode {
        scenario::NetworkMode::Loopback => None,
        scenario::NetworkMode::Netns => {
            let names: Vec<String> = (1..=scenario.regions.len().max(1))
                .map(|i| crate::faults::net::region_name(&scenario, u8::try_from(i).unwrap_or(0)))
                .collect();
            let nets = crate::netns::RegionNets::create(&block, &names).map_err(|source| {
                RunError::Netns {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            Some(nets)
        }
    };

    let started = SystemTime::now();
    let id = run_id(started, seed);
    let dir = opts.reports_dir.join(&name).join(&id);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    let clock = RunClock::start();
    let events_path = dir.join("events.jsonl");
    let events = EventLog::create(&events_path, clock).map_err(io_err(&events_path))?;
    let commit = BUILD_COMMIT.to_owned();
    events.emit(
        "run.start",
        json!({"scenario": name, "file": path.display().to_string(), "seed": seed, "git_commit": commit, "run_id": id}),
    );
    if let Some(nets) = &nets {
        let list: Vec<serde_json::Value> = nets
            .iter()
            .map(|n| json!({"region": n.region, "host_if": n.host_if}))
            .collect();
        events.emit("net.namespaces", json!({"namespaces": list}));
    }

    let variants: Vec<Variant> = if scenario.variants.is_empty() {
        vec![Variant::unvaried()]
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
        block: &block,
        nets: nets.as_ref(),
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
    let identity = RunIdentity {
        name: name.clone(),
        file: path.to_path_buf(),
        run_id: id.clone(),
        seed,
        commit,
        started,
        wall_s,
        host: RunIdentity::this_host(),
        extra_args: opts
            .extra_args
            .iter()
            .map(|(c, a)| format!("{c}={a}"))
            .collect(),
    };
    let mut metrics = assemble(&scenario, &identity, &results);
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
