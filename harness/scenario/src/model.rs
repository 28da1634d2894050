//! The scenario file format: typed, unknown fields rejected, units in the field names.
//!
//! Scenario time `t = 0` is the first intended request of the workload (warm-up begins);
//! the measured phase is `[warmup, warmup + duration)`. Fault `at`/`until` use the same clock.
//! Defaults live in the `default_*` functions below and nowhere else.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used for the report folder (at most 128 bytes); defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// One or two sentences shown at the top of the report (at most 4096 bytes).
    #[serde(default)]
    pub description: String,
    /// Quick scenarios run as test cases in `cargo test` (keep them under ~30 s).
    #[serde(default)]
    pub quick: bool,
    /// Seed of every random choice in the run (arrivals, request mix, model sampling).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The processes of the stack under test (at most 254).
    pub components: Vec<Component>,
    /// The load driven against one component.
    pub workload: Workload,
    /// Faults injected on the scenario clock (at most 1000).
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Assertions checked after the run (at most 1000); any failure makes the exit code
    /// non-zero.
    #[serde(default)]
    pub slo: Vec<Slo>,
    /// Re-runs of the scenario with changed component arguments or replica counts, compared
    /// side by side (any mode; at most 64).
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Emulated regions (at most 64). Without any, every component is in one region.
    /// Traffic between regions goes through the fault proxy on their link.
    #[serde(default)]
    pub regions: Vec<Region>,
    /// The links between regions (at most one per pair). A pair of regions without a
    /// `[[links]]` entry is joined by a link that adds nothing (but can still be faulted).
    #[serde(default)]
    pub links: Vec<Link>,
    /// How regions are kept apart (`[network]`; default: `mode = "loopback"`).
    #[serde(default)]
    pub network: Network,
}

/// How the run builds its regions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `"loopback"` (default: no privileges; traffic that does not use placeholders
    /// bypasses the links) or `"netns"` (each region in a network namespace of its own,
    /// so the links are the only way between regions; needs root and iproute2's `ip`;
    /// at most 16 regions and 15 replicas per region).
    #[serde(default)]
    pub mode: NetworkMode,
}

/// See [`Network::mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Every region a block of loopback addresses in the machine's one network namespace.
    #[default]
    Loopback,
    /// Every region a network namespace of its own, joined to the runner by a veth pair.
    Netns,
}

impl NetworkMode {
    /// The name scenario files and reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Loopback => "loopback",
            NetworkMode::Netns => "netns",
        }
    }
}

/// An emulated region: a block of loopback addresses of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Unique name, `[a-z0-9-]+`, at most 128 bytes.
    pub name: String,
}

/// A link between two regions: what every connection from one to the other crosses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two regions it joins (order does not matter).
    pub between: [String; 2],
    /// Round-trip time the link adds (half each way; default 0, at most 1 hour).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub rtt: Option<Duration>,
    /// ± jitter around `rtt` (half each way; default 0).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Duration>,
    /// The link's rate each way in KB/s (1 KB = 1000 bytes; default: unlimited).
    #[serde(default)]
    pub rate_kbps: Option<u64>,
}

/// A stack component started as real OS processes on loopback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique name (at most 128 bytes), used by `workload.target`, fault `target`s and SLOs.
    pub name: String,
    /// Which stack binary to run.
    pub kind: ComponentKind,
    /// Number of identical processes (`name/0`, `name/1`, ...), each on a loopback address
    /// of its own; at most 254 in all components together.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Extra command-line arguments passed to every replica. Placeholders are replaced:
    /// `{addr}`, `{host}` and `{port}` by this replica's own address, IP and port,
    /// `{NAME.addr}` by the address of component NAME's replica 0, `{NAME.addrs}` by all
    /// of its replicas' addresses joined with ',', `{NAME.regions}` by the same as
    /// `REGION=ADDR` pairs (which backend is where), `{region}` by this replica's region,
    /// `{run_dir}` by the run folder,
    /// `{replica}` by this replica's index, `{replicas}` by this component's replica
    /// count, `{seed}` by the run's seed. At most 1000 arguments of at most 64 KiB each;
    /// with `env` and a variant's `args`, at most 1 MiB in all.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables; values take the same placeholders as `args`. At most
    /// 1000, names of at most 128 bytes, values of at most 64 KiB.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What happens when a replica exits or is killed.
    #[serde(default)]
    pub restart: Restart,
    /// How the runner decides a replica is ready.
    #[serde(default)]
    pub readiness: Readiness,
    /// The region its replicas run in (a `[[regions]]` name); default: the first region.
    #[serde(default)]
    pub region: Option<String>,
    /// `kind = "command"` only (required there): the program to run, a path (relative to
    /// the directory faultline runs in) or a name looked up in `PATH`; at most 4096 bytes.
    /// It gets no arguments but `args`: pass it its address with `{addr}`, `{host}`,
    /// `{port}`, or read `FAULTLINE_ADDR`, `FAULTLINE_HOST`, `FAULTLINE_PORT`.
    #[serde(default)]
    pub command: Option<String>,
}

/// The stack binaries the runner knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// `stack/server`: the inference server (`server --listen ADDR ...`).
    Server,
    /// `stack/trainer`'s coordinator (`trainer rendezvous --listen ADDR ...`): membership,
    /// heartbeats, elastic re-forming of the ring. Readiness is a TCP connect.
    TrainerRendezvous,
    /// `stack/trainer`'s worker (`trainer worker --control ADDR --rank I --world-size N
    /// --run-dir DIR --seed S ...`); each replica is one data-parallel rank. Pass the
    /// coordinator with `args = ["--rendezvous", "{rendezvous.addr}"]`.
    TrainerWorker,
    /// Any program (`command`, with `args` and `env`): a user's own service, proxy or
    /// database. Readiness is a TCP connect unless `readiness.probe = "http"`.
    Command,
}

/// What the runner does when a replica exits on its own or is killed by a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// `never`, `on-failure` (exit code ≠ 0 or a signal, faults included) or `always`.
    #[serde(default = "default_restart_policy")]
    pub policy: RestartPolicy,
    /// Restarts allowed per replica over the whole run (at most 1000).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Wait between an exit and the restart (a duration such as "100ms", at most "1h").
    #[serde(default = "default_restart_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave a dead replica dead.
    Never,
    /// Restart after a non-zero exit or a signal (what `process.kill` causes).
    OnFailure,
    /// Restart after any exit.
    Always,
}

/// How readiness is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// `GET http://ADDR{path}` answers 2xx.
    Http,
    /// A TCP connection to ADDR is accepted.
    Tcp,
}

/// How the runner decides a replica is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// `"http"` (GET `path` answers 2xx) or `"tcp"` (a connection is accepted); default:
    /// the kind's (`tcp` for `command`, `trainer-rendezvous`; `http` for the others).
    #[serde(default)]
    pub probe: Option<ProbeMode>,
    /// HTTP path polled until it answers 2xx (at most 8 KiB).
    #[serde(default = "default_readiness_path")]
    pub path: String,
    /// Give up (and fail the run) after this long (a duration such as "30s", at most "1h").
    #[serde(default = "default_readiness_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// The load driven against one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Component that receives the load (all its replicas, round-robin).
    pub target: String,
    /// The region the load generator sends from (a `[[regions]]` name; default: the first
    /// region): replicas in other regions are reached across their link. Not with
    /// `clients`, where each client names its own.
    #[serde(default)]
    pub region: Option<String>,
    /// Open loop only: the load as several clients, each an open loop of its own sending
    /// from its region at its rate (at most 16; instead of `rate_per_s` and `region`).
    /// Every other workload field is shared; `connections` is per client; `stages` and
    /// `load.spike` multiply every client's rate alike. The report adds per-client figures.
    #[serde(default)]
    pub clients: Vec<LoadClient>,
    /// `open-loop`, `closed-loop` or `max-throughput`.
    #[serde(default = "default_mode")]
    pub mode: LoadMode,
    /// Base offered rate in requests per second, at most 1000000 (open loop; required there
    /// unless `clients` gives each client its own, rejected with closed loop); `load.spike`
    /// multiplies it.
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// Inter-arrival times of the open-loop schedule.
    #[serde(default = "default_arrival")]
    pub arrival: Arrival,
    /// Warm-up before the measured phase (a duration such as "2s", at most "24h"); scenario
    /// time starts at the first warm-up request.
    #[serde(default = "default_warmup", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub warmup: Duration,
    /// Length of the measured phase (a duration such as "20s", at most "24h"); required
    /// except with `mode = "max-throughput"`, whose trials last `search.trial` (0 there).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    /// Per-request timeout (a duration, at most "1h"); a request past it counts as a timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// HTTP/1.1 connections per target replica (1 to 10000, and at most 10000 over all the
    /// target's replicas); with `clients`, each client's own (at most 10000 over all
    /// clients too).
    #[serde(default = "default_connections")]
    #[schemars(range(min = 1, max = 10000))]
    pub connections: u32,
    /// Open loop and `max-throughput`: when a request comes due and every connection to
    /// its target replica is busy, the load generator opens another, up to this many per target replica (k6's
    /// `maxVUs`); at least `connections`, at most 10000 (over all replicas and clients too).
    /// Unset: the pool stays at `connections` and such a request waits for a free one.
    #[serde(default)]
    #[schemars(range(min = 1, max = 10000))]
    pub max_connections: Option<u32>,
    /// Weighted request mix (HTTP modes, at most 1000 entries; empty with
    /// `mode = "training"`).
    #[serde(default)]
    pub requests: Vec<RequestSpec>,
    /// Required with `mode = "max-throughput"`.
    #[serde(default)]
    pub search: Option<Search>,
    /// Settings of `mode = "training"`.
    #[serde(default)]
    pub training: Option<TrainingLoad>,
    /// Open loop only: the offered rate ramps linearly from `rate_per_s` to each stage's
    /// `target` over its `duration`, one stage after another from t = 0 (k6's
    /// ramping-arrival-rate); after the last stage the rate holds its target. At most 100
    /// stages, together no longer than `warmup + duration`. With `clients`, a `target` is
    /// the rate of all clients together and every client's rate is scaled alike.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// One load client of `[[workload.clients]]`: an open loop of its own, sending from its
/// region at its rate, with its own seed (derived from the scenario's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadClient {
    /// Its name in the report (`[a-z0-9-]+`, at most 128 bytes, unique among the clients);
    /// default: its region.
    #[serde(default)]
    pub name: Option<String>,
    /// The region it sends from (a `[[regions]]` name): the target's replicas in other
    /// regions are reached across their link, as from a component there.
    pub region: String,
    /// Its offered rate in requests per second (> 0, at most 1000000, and at most 1000000
    /// for all clients together); `stages` and `load.spike` multiply it.
    pub rate_per_s: f64,
}

impl LoadClient {
    /// Its name: `name`, else its region.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.region)
    }
}

impl Workload {
    /// The offered base rate of the whole load: `rate_per_s`, or with `clients` the sum
    /// of theirs; `None` when neither is given (closed loop, training, search).
    pub fn total_rate_per_s(&self) -> Option<f64> {
        if self.clients.is_empty() {
            self.rate_per_s
        } else {
            Some(self.clients.iter().map(|c| c.rate_per_s).sum())
        }
    }
}

/// One ramp of the open-loop rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// How long the ramp takes (a duration such as "10s", > 0).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub duration: Duration,
    /// The rate reached at the end of the stage, requests per second (0 to 1000000).
    pub target: f64,
}

/// How a training job is measured (`mode = "training"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingLoad {
    /// Steps excluded from throughput as warm-up, at the start and after each recovery (at
    /// most 100000000).
    #[serde(default = "default_warmup_steps")]
    pub warmup_steps: u32,
}

impl Default for TrainingLoad {
    fn default() -> Self {
        TrainingLoad {
            warmup_steps: default_warmup_steps(),
        }
    }
}

fn default_warmup_steps() -> u32 {
    3
}

/// How `gpu.ecc` corrupts a tensor (`nan`, `inf`, `bitflip`): the trainer's own type, so a
/// scenario can only name a mode the trainer's `POST /faults` accepts.
pub use wire::trainer::EccMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// Requests at their intended times regardless of responses (coordinated-omission corrected).
    OpenLoop,
    /// Each connection sends its next request when the previous one finishes.
    ClosedLoop,
    /// Bisection over open-loop rates for the highest rate meeting `search`'s bounds.
    MaxThroughput,
    /// A training job (trainer components): no HTTP load; the run lasts until every
    /// replica of `target` has exited, or `warmup + duration` has passed.
    Training,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Evenly spaced: request i at i / rate.
    Constant,
    /// Exponential inter-arrival times with mean 1 / rate (seeded).
    Poisson,
}

/// One entry of the request mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RequestSpec {
    /// KServe v2 inference on a classifier; the body is built from the model's metadata.
    Infer {
        /// Model name as the server loads it (e.g. "mlp"; at most 128 bytes).
        model: String,
        /// Relative share of the mix (> 0, at most 1000000).
        #[serde(default = "default_weight")]
        weight: f64,
    },
    /// OpenAI-compatible `/v1/completions`.
    Completion {
        /// Model name as the server loads it (e.g. "tiny-lm"; at most 128 bytes).
        model: String,
        /// The prompt text (at most 1 MiB).
        prompt: String,
        /// Tokens to generate (1 to 1000000).
        #[serde(default = "default_max_tokens")]
        max_tokens: u32,
        /// Server-sent events; gives TTFT, ITL and TPOT.
        #[serde(default)]
        stream: bool,
        /// Relative share of the mix (> 0, at most 1000000).
        #[serde(default = "default_weight")]
        weight: f64,
    },
    /// Any HTTP request.
    Http {
        /// GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
        #[serde(default = "default_method")]
        method: String,
        /// Starts with '/' (at most 8 KiB).
        path: String,
        /// The request body (at most 1 MiB).
        #[serde(default)]
        body: String,
        /// Extra request headers, name → value (at most 100; values at most 8 KiB). `host`
        /// and `content-length` are set by the load generator and may not be given;
        /// `content-type` defaults to `application/json` when there is a body.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Relative share of the mix (> 0, at most 1000000).
        #[serde(default = "default_weight")]
        weight: f64,
    },
}

/// Bounds of the max-throughput search (MLPerf LoadGen Server style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Latency percentile bounded, in (0, 100).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Bound on that percentile of corrected latency, milliseconds (at most 3600000).
    pub latency_ms_max: f64,
    /// Bound on (sent − ok) / sent, in [0, 1].
    #[serde(default = "default_error_ratio_max")]
    pub error_ratio_max: f64,
    /// Lower end of the searched rates, requests per second (at most 1000000).
    pub rate_per_s_min: f64,
    /// Upper end of the searched rates, requests per second (> rate_per_s_min, at most
    /// 1000000).
    pub rate_per_s_max: f64,
    /// Bisection steps after the bracket (at most 100; the whole search, these and up to 8
    /// more trials of `workload.warmup + trial`, at most "24h").
    #[serde(default = "default_search_steps")]
    pub steps: u32,
    /// Measured length of one trial, a duration of at most "24h" (its warm-up is
    /// `workload.warmup`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub trial: Duration,
}

/// A fault on the scenario clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Name used by `recovery` SLOs and the report (at most 128 bytes); defaults to
    /// `<kind>-<index>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Scenario time of injection (a duration such as "5s"), before the end of the run.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub at: Duration,
    /// `process.kill`, `process.pause` or `load.spike`.
    pub kind: FaultKind,
    /// `component` (every replica) or `component/replica`; not used by `load.spike`.
    #[serde(default)]
    pub target: Option<String>,
    /// Scenario time the fault is healed (required for `process.pause` and `load.spike`).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub until: Option<Duration>,
    /// Rate multiplier of `load.spike` (> 0, at most 1000, and the spiked rate at most
    /// 1000000 per second); rejected for other kinds.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// `gpu.ecc`: how the tensor is corrupted (default nan).
    #[serde(default)]
    pub mode: Option<EccMode>,
    /// `gpu.ecc`: how many consecutive steps are corrupted (1 to 100000000; default 1).
    #[serde(default)]
    pub steps: Option<u32>,
    /// `gpu.throttle`: slow-down factor of the worker's compute (1 to 1000; 3.0 = forward and
    /// backward take 3× as long; communication, data loading and the update are not slowed).
    #[serde(default)]
    pub factor: Option<f64>,
    /// `gpu.oom`: allocations above this many bytes fail (1 to 2^40, 1 TiB).
    #[serde(default)]
    pub limit_bytes: Option<u64>,
    /// `gpu.oom`: halve the batch and retry instead of failing (default false).
    #[serde(default)]
    pub backoff: Option<bool>,
    /// `region.*`: the regions the fault acts on (names from `[[regions]]`).
    /// `region.partition` cuts every link between these and the other regions.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// `region.flap`: one down-and-up cycle ("1s": down for half of it, up for the
    /// other half; 10 ms to 1 hour).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub period: Option<Duration>,
    /// `net.latency`, `region.latency`: round-trip time added ("200ms"; half each
    /// way, at most 1 hour).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub latency: Option<Duration>,
    /// `net.latency`: ± jitter around `latency` (same units; default 0).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Duration>,
    /// `net.bandwidth`: the link's rate each way, KB/s (1 KB = 1000 bytes; 1 to 100000000).
    #[serde(default)]
    pub rate_kbps: Option<u64>,
    /// `net.http_error`: the HTTP status answered instead of the target (200 to 599;
    /// default 503).
    #[serde(default)]
    pub status: Option<u16>,
    /// `net.http_error`: the share of requests answered with `status` (0 < ratio <= 1;
    /// default 1).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Training only: hold the injection, at `at` or later, until the job has completed this
    /// many steps (at most 100000000; the largest `step` any trainer worker's `/status`
    /// reports). The timeline waits, so every later action — this fault's heal included —
    /// shifts by the wait; a fault lands mid-run however fast the machine trains.
    #[serde(default)]
    pub after_step: Option<u64>,
}

/// Fault kinds, named as in `shared/reference/faults.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FaultKind {
    /// SIGKILL the target processes; the restart policy decides what happens next.
    #[serde(rename = "process.kill")]
    ProcessKill,
    /// SIGSTOP the target processes at `at`, SIGCONT at `until`.
    #[serde(rename = "process.pause")]
    ProcessPause,
    /// Multiply the offered rate by `multiplier` between `at` and `until`.
    #[serde(rename = "load.spike")]
    LoadSpike,
    /// Xid 79: the worker's device fails every op; the worker exits with code 3.
    #[serde(rename = "gpu.lost")]
    GpuLost,
    /// Xid 48/94/95: corrupt a gradient tensor (`mode`, `steps`); finite checks detect
    /// NaN/Inf and skip the step; finite bit flips are counted as silent corruption.
    #[serde(rename = "gpu.ecc")]
    GpuEcc,
    /// Thermal/power throttling: the worker slows by `factor` until `until` (a straggler).
    #[serde(rename = "gpu.throttle")]
    GpuThrottle,
    /// Allocations above `limit_bytes` fail until `until`; `backoff` halves the batch.
    #[serde(rename = "gpu.oom")]
    GpuOom,
    /// The target's link gains `latency` of round-trip time (± `jitter`) until `until`
    /// (or the end of the run): the fault proxy in front of it delays each direction by half.
    #[serde(rename = "net.latency")]
    NetLatency,
    /// The target's link carries at most `rate_kbps` KB/s each way.
    #[serde(rename = "net.bandwidth")]
    NetBandwidth,
    /// Connections to the target are accepted and read, never answered, never closed:
    /// only client timeouts reveal it.
    #[serde(rename = "net.blackhole")]
    NetBlackhole,
    /// Every connection to the target is reset (TCP RST), open ones at once.
    #[serde(rename = "net.reset")]
    NetReset,
    /// New connections to the target are refused; open ones are closed.
    #[serde(rename = "net.refuse")]
    NetRefuse,
    /// A `ratio` of HTTP requests to the target is answered `status` by the proxy and never
    /// reaches it.
    #[serde(rename = "net.http_error")]
    NetHttpError,
    /// Every link between `regions` and the other regions is cut, both ways: connections
    /// across it hang (nothing answered, nothing closed) until the heal.
    #[serde(rename = "region.partition")]
    RegionPartition,
    /// The `regions`' processes live but are unreachable from every other region:
    /// connections into them hang; traffic inside a region is untouched.
    #[serde(rename = "region.blackhole")]
    RegionBlackhole,
    /// Every link of `regions` gains `latency` of round-trip time (± `jitter`).
    #[serde(rename = "region.latency")]
    RegionLatency,
    /// Power loss: every process of `regions` is killed (SIGKILL) and none restarts
    /// until `until` (then all do, outside `max_restarts`); without `until` they stay
    /// down to the end of the run.
    #[serde(rename = "region.down")]
    RegionDown,
    /// The links between `regions` and the others go down and up again every `period`
    /// (down for the first half, as a partition), from `at` until `until`.
    #[serde(rename = "region.flap")]
    RegionFlap,
}

/// Which slice of the run an SLO is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Warmup,
    /// The whole measured phase.
    Measured,
    /// Measured windows touched by no fault and no recovery.
    Steady,
    /// Measured windows overlapping a fault while it acts: `[at, until)`, or for an instant
    /// fault (a kill) `[at, recovered)` by the success rule.
    Faulted,
    /// Measured windows after a fault has healed but before it has recovered (by success
    /// rate and by latency, whichever is later), and not faulted.
    Recovering,
}

/// Which recovery a `recovery` SLO reads (docs/metrics.md "Recovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMeasure {
    /// Success rate back at ≥ 99 % for 1 s (failover time).
    #[default]
    Success,
    /// p99 corrected latency back within 2 × its pre-fault value for 2 windows.
    Latency,
}

impl RecoveryMeasure {
    pub fn name(self) -> &'static str {
        match self {
            RecoveryMeasure::Success => "success",
            RecoveryMeasure::Latency => "latency",
        }
    }
}

/// Which latency an SLO reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyMeasure {
    /// Intended send → last byte (coordinated-omission corrected).
    Corrected,
    /// Actual send → last byte.
    Service,
    /// Actual − intended send.
    SendLag,
    /// Time to first token (streams).
    Ttft,
    /// Inter-token latency (streams).
    Itl,
    /// Time per output token (streams).
    Tpot,
    /// Intended send → end of every request, failed ones until they were given up (a
    /// timeout at least its timeout, a generator drop its wait): never better than what
    /// clients saw.
    All,
}

/// An assertion on the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Slo {
    /// A latency percentile within bounds of at most 3600000 ms (`latency_ms_min` proves a
    /// stall is visible).
    Latency {
        #[serde(default = "default_phase")]
        phase: Phase,
        #[serde(default = "default_measure")]
        measure: LatencyMeasure,
        percentile: f64,
        #[serde(default)]
        latency_ms_max: Option<f64>,
        #[serde(default)]
        latency_ms_min: Option<f64>,
    },
    /// ok / sent at least this.
    Availability {
        #[serde(default = "default_phase")]
        phase: Phase,
        ratio_min: f64,
        /// Open loop, measured phase: stop the load as soon as this SLO can no longer pass
        /// (k6's `abortOnFail`; docs/scenarios.md "Stopping early").
        #[serde(default)]
        abort_on_fail: bool,
    },
    /// (sent − ok) / sent at most this; `error_kind` restricts to one kind (e.g. "http_429";
    /// at most 128 bytes).
    Errors {
        #[serde(default = "default_phase")]
        phase: Phase,
        #[serde(default)]
        error_kind: Option<String>,
        #[serde(default)]
        ratio_max: Option<f64>,
        #[serde(default)]
        ratio_min: Option<f64>,
        /// Open loop, measured phase, all errors, `ratio_max`: stop the load as soon as the
        /// bound can no longer hold (k6's `abortOnFail`).
        #[serde(default)]
        abort_on_fail: bool,
    },
    /// Completed requests per second at least this (at most 1000000).
    Throughput {
        #[serde(default = "default_phase")]
        phase: Phase,
        rps_min: f64,
    },
    /// Fault instant → recovered within this many seconds (at most 86400), by success rate
    /// (metrics.md "failover time") or by latency (p99 back near its pre-fault value).
    Recovery {
        fault: String,
        recovery_s_max: f64,
        #[serde(default)]
        measure: RecoveryMeasure,
    },
    /// `sent = ok + errors + timeouts + dropped` in every window and overall.
    Accounting {},
    /// max-throughput mode: the best rate of a variant (or of the run) at least this (at most
    /// 1000000).
    MaxThroughput {
        #[serde(default)]
        variant: Option<String>,
        rps_min: f64,
    },
    /// max-throughput mode: best(numerator) / best(denominator) at least this (at most
    /// 1000000).
    ThroughputRatio {
        numerator: String,
        denominator: String,
        ratio_min: f64,
    },
    /// training: steps computed again after restores (fault step − checkpoint step), for
    /// one fault or in total, at most this (itself at most 100000000).
    LostSteps {
        #[serde(default)]
        fault: Option<String>,
        steps_max: u64,
    },
    /// training with variants: E(N) = throughput(N) / (N × throughput(1)) of the variant
    /// whose target has `workers` (2 to 254) replicas, at least this (needs a 1-worker
    /// variant).
    ScalingEfficiency { workers: u32, efficiency_min: f64 },
    /// training: mean loss of the last steps / mean loss of the first steps, at most this
    /// (0.5 = the loss halved; at most 1000000).
    Loss { final_ratio_max: f64 },
}

/// A re-run of the scenario with extra arguments for some components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Component name → arguments appended to that component's `args` (at most 1000 per
    /// component).
    #[serde(default)]
    pub args: BTreeMap<String, Vec<String>>,
    /// Component name → replica count replacing that component's `replicas` (1 to 254).
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
    /// false: run this variant without the fault timeline (an uninterrupted baseline).
    #[serde(default = "default_inject_faults")]
    pub inject_faults: bool,
}

impl Variant {
    /// The one run of a scenario without `[[variants]]`: named "default", nothing changed.
    pub fn unvaried() -> Variant {
        Variant {
            name: "default".to_owned(),
            args: BTreeMap::new(),
            replicas: BTreeMap::new(),
            inject_faults: true,
        }
    }
}

fn default_inject_faults() -> bool {
    true
}

fn default_seed() -> u64 {
    1
}
fn default_replicas() -> u32 {
    1
}
fn default_restart_policy() -> RestartPolicy {
    RestartPolicy::OnFailure
}
fn default_max_restarts() -> u32 {
    3
}
fn default_restart_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_readiness_path() -> String {
    "/readyz".to_owned()
}
fn default_readiness_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_mode() -> LoadMode {
    LoadMode::OpenLoop
}
fn default_arrival() -> Arrival {
    Arrival::Poisson
}
fn default_warmup() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_connections() -> u32 {
    32
}
fn default_weight() -> f64 {
    1.0
}
fn default_max_tokens() -> u32 {
    16
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_percentile() -> f64 {
    99.0
}
fn default_error_ratio_max() -> f64 {
    0.01
}
fn default_search_steps() -> u32 {
    6
}
fn default_phase() -> Phase {
    Phase::Measured
}
fn default_measure() -> LatencyMeasure {
    LatencyMeasure::Corrected
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: default_restart_policy(),
            max_restarts: default_max_restarts(),
            backoff: default_restart_backoff(),
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            probe: None,
            path: default_readiness_path(),
            timeout: default_readiness_timeout(),
        }
    }
}

impl Fault {
    /// The fault's id, defaulted from its kind and position in the file.
    pub fn id_or_default(&self, index: usize) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{}-{index}", self.kind.name()))
    }
}

impl FaultKind {
    /// The name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ProcessKill => "process.kill",
            FaultKind::ProcessPause => "process.pause",
            FaultKind::LoadSpike => "load.spike",
            FaultKind::GpuLost => "gpu.lost",
            FaultKind::GpuEcc => "gpu.ecc",
            FaultKind::GpuThrottle => "gpu.throttle",
            FaultKind::GpuOom => "gpu.oom",
            FaultKind::NetLatency => "net.latency",
            FaultKind::NetBandwidth => "net.bandwidth",
            FaultKind::NetBlackhole => "net.blackhole",
            FaultKind::NetReset => "net.reset",
            FaultKind::NetRefuse => "net.refuse",
            FaultKind::NetHttpError => "net.http_error",
            FaultKind::RegionPartition => "region.partition",
            FaultKind::RegionBlackhole => "region.blackhole",
            FaultKind::RegionLatency => "region.latency",
            FaultKind::RegionFlap => "region.flap",
            FaultKind::RegionDown => "region.down",
        }
    }

    /// Faults injected through a trainer worker's control endpoint.
    pub fn is_gpu(self) -> bool {
        matches!(
            self,
            FaultKind::GpuLost | FaultKind::GpuEcc | FaultKind::GpuThrottle | FaultKind::GpuOom
        )
    }
}

impl Scenario {
    /// The name for reports: `name`, else the given file stem.
    pub fn display_name(&self, file_stem: &str) -> String {
        self.name.clone().unwrap_or_else(|| file_stem.to_owned())
    }

    /// Component by name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }
}

impl Scenario {
    /// End of the scenario clock: `warmup + duration`, or `warmup + search.trial` in
    /// max-throughput mode, where every trial runs on its own clock. Faults must fall before it.
    pub fn horizon(&self) -> Duration {
        let w = &self.workload;
        match (&w.mode, &w.search) {
            (LoadMode::MaxThroughput, Some(search)) => w.warmup.saturating_add(search.trial),
            _ => w.warmup.saturating_add(w.duration),
        }
    }
}

impl Arrival {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
        }
    }
}

impl LoadMode {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::OpenLoop => "open-loop",
            LoadMode::ClosedLoop => "closed-loop",
            LoadMode::MaxThroughput => "max-throughput",
            LoadMode::Training => "training",
        }
    }
}

impl Phase {
    /// The name used in scenario files and in `metrics.json` summaries.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Measured => "measured",
            Phase::Steady => "steady",
            Phase::Faulted => "faulted",
            Phase::Recovering => "recovering",
        }
    }
}

impl LatencyMeasure {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            LatencyMeasure::Corrected => "corrected",
            LatencyMeasure::Service => "service",
            LatencyMeasure::SendLag => "send-lag",
            LatencyMeasure::Ttft => "ttft",
            LatencyMeasure::Itl => "itl",
            LatencyMeasure::Tpot => "tpot",
            LatencyMeasure::All => "all",
        }
    }
}

impl Slo {
    /// The `kind` used in scenario files.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Slo::Latency { .. } => "latency",
            Slo::Availability { .. } => "availability",
            Slo::Errors { .. } => "errors",
            Slo::Throughput { .. } => "throughput",
            Slo::Recovery { .. } => "recovery",
            Slo::Accounting {} => "accounting",
            Slo::MaxThroughput { .. } => "max-throughput",
            Slo::ThroughputRatio { .. } => "throughput-ratio",
            Slo::LostSteps { .. } => "lost-steps",
            Slo::ScalingEfficiency { .. } => "scaling-efficiency",
            Slo::Loss { .. } => "loss",
        }
    }

    /// The phase the SLO is evaluated on, for the kinds that have one.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Slo::Latency { phase, .. }
            | Slo::Availability { phase, .. }
            | Slo::Errors { phase, .. }
            | Slo::Throughput { phase, .. } => Some(*phase),
            _ => None,
        }
    }
}
