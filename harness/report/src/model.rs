//! `metrics.json`: the versioned record of one run, and the input of every plot and page.
//!
//! Offsets (`*_s`) are seconds on the scenario clock (t = 0 is the first intended request).
//! Latencies are milliseconds. Bump [`SCHEMA_VERSION`] on any incompatible change.
//! Later stack parts (trainer, router, operator) add their figures as [`Chart`]s and
//! [`Figure`]s, so the renderer needs no change to show them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the `metrics.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub schema_version: u32,
    pub run: RunInfo,
    /// Warm-up, measured, and search trials, on the scenario clock.
    pub phases: Vec<Span>,
    /// Injected faults, as they actually happened.
    pub faults: Vec<FaultSpan>,
    /// Per-window load figures (1 s by default), keyed by intended send time.
    pub windows: Vec<WindowMetrics>,
    /// One summary per evaluated phase (`warmup`, `measured`, `steady`, `faulted`).
    pub summaries: Vec<PhaseSummary>,
    /// Latency percentile distribution of the measured phase (for the distribution plot).
    pub distribution: Vec<DistributionPoint>,
    /// Recovery time of each fault (metrics.md "failover time" rule on 100 ms windows).
    pub recoveries: Vec<Recovery>,
    /// Whole-run request accounting.
    pub accounting: Accounting,
    /// The load per replica of the workload's target, whole run (warm-up included), one
    /// row per replica and variant: which replica took the failures. Empty for training
    /// and max-throughput runs (a search's trials each carry their own accounting).
    #[serde(default)]
    pub replicas: Vec<ReplicaLoad>,
    /// Each load client, for a load given as `[[workload.clients]]` (several clients in
    /// several regions): its accounting and its own summaries per phase. Every other
    /// figure covers all clients together. Absent for a load from one place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientLoad>,
    /// Regions, their links and the fault proxies the run put on them; `None` when the
    /// run had neither regions nor `net.*` faults.
    #[serde(default)]
    pub network: Option<Network>,
    /// Every process the runner started, and how each one ended.
    pub processes: Vec<ProcessRecord>,
    /// Max-throughput search results, one per variant (empty for other modes).
    pub searches: Vec<SearchResult>,
    /// Extra named figures (unit in the name), e.g. `scaling_efficiency_n2`.
    pub figures: Vec<Figure>,
    /// Extra plots for later components (training curves, ...).
    pub charts: Vec<Chart>,
    /// Training jobs, one per variant (empty for serving scenarios).
    #[serde(default)]
    pub training: Vec<TrainingResult>,
    /// SLO verdicts; the run passes when every one passes.
    pub slos: Vec<SloVerdict>,
    /// Problems that made the run itself fail (readiness timeout, unbalanced accounting, ...).
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub scenario: String,
    pub description: String,
    pub scenario_file: String,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub wall_s: f64,
    pub seed: u64,
    /// The commit the faultline binary was built from (12 hex digits), with `-dirty` when
    /// the build had uncommitted changes to tracked files, or "unknown".
    pub git_commit: String,
    pub faultline_version: String,
    pub host: HostInfo,
    /// `component=argument` appended to the scenario's component arguments for this run
    /// (`faultline compare --candidate-arg`); empty for the scenario as written.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Load mode and offered rate as configured.
    pub workload: WorkloadInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub os: String,
    pub arch: String,
    pub cpus: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// As in scenario files: `open-loop`, `closed-loop`, `max-throughput`, `training`.
    pub mode: String,
    /// `poisson` or `constant`.
    pub arrival: String,
    /// The base offered rate; with `[[workload.clients]]`, theirs together.
    pub rate_per_s: Option<f64>,
    pub connections: u32,
    /// `workload.max_connections`: the most connections per target replica the open loop
    /// may grow to when every one is busy; `None` when the pool may not grow.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Connections the load generator added during the run because a request came due
    /// with every connection to its replica busy, over all the run's loads together (each
    /// variant's, each client's, each search trial's pools are their own; see
    /// `connections_added_by_variant`, `clients[].connections_added` and
    /// `searches[].trials[].connections_added`); `None` when the pool may not grow.
    #[serde(default)]
    pub connections_added: Option<u64>,
    /// `workload.stages`: the open-loop rate ramps from `rate_per_s` to each stage's
    /// target over its duration, one after another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageInfo>,
    /// With several variants: `connections_added` of each variant's load, in variant order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections_added_by_variant: Vec<VariantCount>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub timeout_s: f64,
    pub target: String,
}

/// One stage of a ramping open-loop rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageInfo {
    pub duration_s: f64,
    pub target_per_s: f64,
}

/// A count for one variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantCount {
    pub variant: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpan {
    pub id: String,
    pub kind: String,
    pub target: Option<String>,
    pub start_s: f64,
    /// When it was healed (`until`), or recovery end for instant faults; None if never.
    pub end_s: Option<f64>,
    /// Free-form parameters (multiplier, pids, ...).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Accounting {
    pub sent: u64,
    pub ok: u64,
    /// Error count by kind (`connect_refused`, `http_503`, ...).
    pub errors: BTreeMap<String, u64>,
    pub timeouts: u64,
    pub dropped_by_generator: u64,
    /// `sent == ok + Σ errors + timeouts + dropped_by_generator`.
    pub balanced: bool,
}

/// The emulated network of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Network {
    /// `"loopback"` (regions are address blocks on one loopback) or `"netns"` (each region
    /// a network namespace of its own).
    #[serde(default)]
    pub mode: String,
    /// Each region and the replicas in it (the region map).
    pub regions: Vec<RegionRow>,
    /// Each directed link between regions with traffic or a configuration, and what
    /// crossed it (summed over its proxies and over variants).
    pub links: Vec<LinkRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegionRow {
    pub name: String,
    /// `component/i` of every replica placed there.
    pub replicas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LinkRow {
    /// Traffic from this region ...
    pub from: String,
    /// ... to replicas in this one.
    pub to: String,
    /// Configured round-trip time, jitter (ms) and rate (KB/s; `None`: unlimited).
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    pub rate_kbps: Option<u64>,
    /// Fault proxies on the link (one per replica of `to`).
    pub proxies: u32,
    /// Connections that crossed it, and the bytes each way.
    pub connections: u64,
    pub bytes_from: u64,
    pub bytes_to: u64,
}

/// One client of a load given as `[[workload.clients]]`: an open loop of its own, sending
/// from its region at its rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientLoad {
    /// The variant whose load this was; `None` without variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Its name (`name`, else its region).
    pub name: String,
    /// The region it sent from.
    pub region: String,
    /// Its configured offered rate, requests per second (before stages and spikes).
    pub rate_per_s: f64,
    /// Its t = 0 (first intended request) after the run's t = 0, seconds: the clients
    /// start together, within milliseconds.
    pub start_offset_s: f64,
    /// Its whole run (warm-up included), counted like the run's; the clients' rows add up
    /// to the run's accounting.
    pub accounting: Accounting,
    /// Its own summary of each phase (`warmup`, `measured`, `steady`, `faulted`,
    /// `recovering`), as the run's `summaries`, on the scenario clock.
    pub summaries: Vec<PhaseSummary>,
    /// Connections its own pool added (`workload.max_connections` is per client).
    #[serde(default)]
    pub connections_added: u64,
}

/// One replica's share of a load (the generator's requests to that replica's address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLoad {
    /// The variant whose load this was; `None` without variants.
    #[serde(default)]
    pub variant: Option<String>,
    /// The replica (`component/i`), as in `processes[].name`.
    pub replica: String,
    /// Counted like the run's accounting; the rows of one load add up to it.
    pub accounting: Accounting,
    /// This replica's failed requests (errors + timeouts + drops) over all failed requests
    /// of the load; `None` when none failed.
    pub failure_share: Option<f64>,
    /// Corrected latency of its successful requests.
    pub latency: Percentiles,
    /// Corrected latency of all its requests, failures until given up.
    pub latency_all: Percentiles,
}

/// p50, p90, p95, p99, p99.9 and max in milliseconds; None when nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowMetrics {
    pub start_s: f64,
    pub width_s: f64,
    /// `warmup`, `steady`, `faulted`, `recovering`, or `after` (trailing windows that only
    /// hold completions); absent in reports written before phases were per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub counts: Accounting,
    /// Completions per second by completion time.
    pub throughput_rps: f64,
    /// Successful requests per second whose corrected latency met every latency SLO bound.
    pub goodput_rps: Option<f64>,
    pub latency: Percentiles,
    pub service: Percentiles,
    pub send_lag: Percentiles,
    pub ttft: Percentiles,
    pub itl: Percentiles,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: String,
    pub start_s: f64,
    pub end_s: f64,
    pub counts: Accounting,
    pub availability: Option<f64>,
    pub throughput_rps: f64,
    /// Corrected latency of successful requests.
    pub latency: Percentiles,
    /// Corrected latency of every request sent in the phase, a failed one until it was
    /// given up: a timeout at least the request timeout, a generator drop its wait for a
    /// connection (loadgen's `LatencyStats::latency_all`). Never better than what clients
    /// saw; `count` 0 in reports written before it existed.
    #[serde(default)]
    pub latency_all: Percentiles,
    pub service: Percentiles,
    pub send_lag: Percentiles,
    pub ttft: Percentiles,
    pub itl: Percentiles,
    pub tpot: Percentiles,
    pub output_tokens_per_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistributionPoint {
    pub percentile: f64,
    pub latency_ms: f64,
    pub service_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub fault_id: String,
    pub kind: String,
    /// The variant whose run this recovery is from, when several variants ran loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub start_s: f64,
    /// Fault instant → start of the first 100 ms window after which success ≥ 99 % for ≥ 1 s.
    pub recovery_s: Option<f64>,
    /// Fault instant → start of the first 1 s window, at or after the heal, from which p99
    /// corrected latency stays within 2 × `latency_baseline_ms` for 2 windows (metrics.md).
    #[serde(default)]
    pub latency_recovery_s: Option<f64>,
    /// p99 corrected latency of the measured windows before the fault (ms); None when no
    /// request completed there.
    #[serde(default)]
    pub latency_baseline_ms: Option<f64>,
    /// Requests intended between the fault and recovery that did not succeed.
    pub failed_requests: u64,
    /// Restarts the runner made of the fault's target during recovery.
    pub restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `component/replica`.
    pub name: String,
    pub kind: String,
    pub address: String,
    /// One entry per start (restarts included).
    pub lives: Vec<ProcessLife>,
    /// Path of its combined stdout/stderr log, relative to the run folder.
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessLife {
    pub pid: u32,
    pub started_s: f64,
    pub ready_s: Option<f64>,
    pub ended_s: Option<f64>,
    /// e.g. "exit 0", "signal 9 (SIGKILL)", "stopped by runner".
    pub how: Option<String>,
    /// Why it ended as the verdict sees it: "stopped by the runner", "workload finished",
    /// "fault ID", or "UNPLANNED" (which fails the run); absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub variant: String,
    pub percentile: f64,
    pub latency_ms_max: f64,
    pub error_ratio_max: f64,
    pub trials: Vec<TrialResult>,
    /// Highest rate above the floor whose every trial (repeats included) passed.
    pub best_rate_per_s: Option<f64>,
    /// Why there is no best rate (only the floor passed, nothing passed, interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub rate_per_s: f64,
    /// `bracket`, `bisect` or `confirm` (a repeat of a candidate best rate).
    #[serde(default)]
    pub purpose: String,
    /// How long the runner waited for the target to drain the previous trial's backlog.
    #[serde(default)]
    pub drain_s: Option<f64>,
    pub achieved_rps: f64,
    pub latency_ms: f64,
    pub error_ratio: f64,
    pub passed: bool,
    pub accounting: Accounting,
    /// Connections the trial's pool added (each trial starts with `connections`).
    #[serde(default)]
    pub connections_added: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// Which metrics.md definition it follows.
    pub definition: String,
}

/// A generic x/y chart rendered to SVG with the fault intervals shaded when `time_axis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// File stem of the SVG.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// X is scenario time: shade fault intervals and phases.
    pub time_axis: bool,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloVerdict {
    /// Human description, e.g. "p99 corrected latency (steady) ≤ 250 ms".
    pub description: String,
    /// Index in the scenario's `slo` list.
    pub index: usize,
    pub phase: Option<String>,
    /// Bound as text, e.g. "≤ 250 ms".
    pub expected: String,
    /// Observed value as text; "n/a" with `pass = false` when it could not be measured.
    pub observed: String,
    pub pass: bool,
}

impl RunMetrics {
    /// The run passed: no failures and every SLO passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.slos.iter().all(|s| s.pass)
    }
}

/// One training job's figures (metrics.md "Training").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingResult {
    pub variant: String,
    /// Worker processes started (the data-parallel width asked for).
    pub workers: u32,
    /// Compute threads per worker, so N workers share the machine fairly.
    pub threads_per_worker: Option<u32>,
    /// How gradients travelled between workers (the trainer's `comm` events): `shm`, `tcp`,
    /// `nccl` or `none` (one worker); several, comma-separated, when epochs differed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_transport: Option<String>,
    /// Steps the job was asked for.
    pub target_steps: Option<u64>,
    /// Step at which the rendezvous declared the job done; None if it never finished.
    pub finished_step: Option<u64>,
    /// Distinct step numbers completed (rank 0's view).
    pub steps_completed: u64,
    /// Step completions beyond the first of each number (work redone after restores).
    pub steps_recomputed: u64,
    /// Steps skipped because a finite check caught corrupted gradients.
    pub steps_skipped: u64,
    /// Every step number from 0 to the last completed at least once, up to the end.
    pub steps_accounted: bool,
    pub checkpoints_written: u64,
    pub checkpoint_errors: u64,
    /// Checkpoint restores (rank 0).
    pub restores: u64,
    /// Steps excluded from throughput at the start of each membership epoch.
    pub warmup_steps: u32,
    /// Steady-state samples per second (all ranks).
    pub throughput_samples_per_s: Option<f64>,
    pub breakdown: StepBreakdown,
    /// Mean loss of the first and the last few steps.
    pub loss_first: Option<f64>,
    pub loss_last: Option<f64>,
    /// Steps (any rank) whose gradients `gpu.ecc` corrupted.
    pub ecc_injected: u64,
    /// Of those, steps the finite check caught (the step was skipped on every rank).
    pub ecc_detected: u64,
    /// Of those, steps the check missed (finite bit flips): silent data corruption.
    #[serde(default)]
    pub ecc_silent: u64,
    /// Effect of each `gpu.throttle` on rank 0's step time.
    #[serde(default)]
    pub stragglers: Vec<StragglerEffect>,
    /// `NAME=KIND:PATH` of the published weights, for `server --model`.
    pub published: Option<String>,
    /// How each worker ended, from its `exit` event.
    pub exits: Vec<String>,
    pub recoveries: Vec<TrainingRecovery>,
    /// (step, loss), rank 0.
    pub loss_curve: Vec<(f64, f64)>,
    /// (scenario seconds, samples/s of that step).
    pub throughput_curve: Vec<(f64, f64)>,
}

/// Mean seconds per steady-state step, split as metrics.md's step-time breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct StepBreakdown {
    /// Steps averaged.
    pub steps: u64,
    pub step_s: Option<f64>,
    pub compute_s: Option<f64>,
    /// Gradient all-reduce not overlapped with compute.
    pub comm_s: Option<f64>,
    /// Waiting for the slowest rank (stragglers).
    pub wait_s: Option<f64>,
    /// Data loading (I/O).
    pub data_s: Option<f64>,
    pub update_s: Option<f64>,
    /// Time added by `gpu.throttle`.
    pub throttle_s: Option<f64>,
}

/// Recovery of a training job from an interrupting fault, split into its parts (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingRecovery {
    pub fault_id: String,
    pub kind: String,
    /// Fault instant → the rendezvous declared the worker lost.
    pub detection_s: Option<f64>,
    /// Detection → the new ring formed.
    pub rendezvous_s: Option<f64>,
    /// Checkpoint restore (verify + load).
    pub restore_s: Option<f64>,
    /// Restore done → first full step.
    pub catch_up_s: Option<f64>,
    /// Fault instant → first full step.
    pub total_s: Option<f64>,
    /// Steps computed again (fault step − checkpoint step).
    pub lost_steps: Option<u64>,
    pub restored_step: Option<u64>,
    /// Workers in the ring after recovery.
    pub world_after: Option<u64>,
}

/// A throttled worker's effect on the job's step time (lock-step training waits for it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StragglerEffect {
    pub fault_id: String,
    /// Mean rank-0 step time over an equally long span before the throttle.
    pub step_s_before: Option<f64>,
    /// Mean rank-0 step time while the throttle was on.
    pub step_s_during: Option<f64>,
    /// during / before.
    pub slowdown: Option<f64>,
    /// Mean time rank 0 waited for the slowest rank while the throttle was on.
    pub wait_s_during: Option<f64>,
}
