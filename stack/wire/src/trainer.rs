//! The reference trainer's contract with the harness: its JSON-line events, its control
//! endpoint's bodies, and the `gpu.ecc` corruption mode the scenario format names.
//!
//! * [`EventLine`]: one line the trainer prints on stdout, `{"event": …, "t_unix_s": …, …}`;
//!   [`Event`] has a variant per `event` value, each with its fields (see `stack/trainer`'s
//!   crate docs for when each is printed).
//! * [`Status`]: the `GET /status` body, a worker's [`Progress`] and its [`DeviceStatus`].
//! * [`FaultRequest`]: the `POST /faults` body, `{"kind": "gpu.ecc", "mode": "nan", …}`;
//!   [`GpuFaultKind`] names a kind in `DELETE /faults/{kind}` and `faults_active`;
//!   [`ActiveFaults`] is the answer to both.
//! * [`EccMode`]: how `gpu.ecc` corrupts a gradient; the scenario format re-exports it.
//!
//! Optional fields: `None` is written as `null` where every emitter of the event writes the
//! key, and left out where only some do (a TorchScript `start` has no `control`); either
//! spelling reads back as `None`. Events are read leniently (unknown fields are ignored, so a
//! newer trainer's log still parses); [`FaultRequest`] rejects unknown fields, as the
//! trainer always has. Durations are seconds (`_s`), instants are Unix seconds (`_unix_s`),
//! sizes are bytes.
//!
//! Not here: the fault checks on parameter ranges (the trainer answers 400; the scenario
//! validation checks the same ranges before a run) or any I/O.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// How `gpu.ecc` corrupts a tensor.
//
// The doc comments here are the scenario schema's descriptions (`scenarios/schema.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EccMode {
    /// Write NaN into the tensor (detected by the finite check).
    #[default]
    Nan,
    /// Write +Inf into the tensor (detected by the finite check).
    Inf,
    /// Flip bits; a flip that stays finite escapes the check (silent data corruption).
    Bitflip,
}

// ---------------------------------------------------------------------------------------
// Control endpoint
// ---------------------------------------------------------------------------------------

/// A simulated GPU fault kind, spelled as on the wire (`"gpu.ecc"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GpuFaultKind {
    /// `gpu.lost`: the device fell off the bus (Xid 79).
    #[serde(rename = "gpu.lost")]
    Lost,
    /// `gpu.ecc`: corrupted gradients (Xid 48/94/95).
    #[serde(rename = "gpu.ecc")]
    Ecc,
    /// `gpu.throttle`: a slowed device (a straggler).
    #[serde(rename = "gpu.throttle")]
    Throttle,
    /// `gpu.oom`: a device memory limit.
    #[serde(rename = "gpu.oom")]
    Oom,
}

impl GpuFaultKind {
    /// Every kind, in the order the trainer lists them.
    pub const ALL: [GpuFaultKind; 4] = [
        GpuFaultKind::Lost,
        GpuFaultKind::Ecc,
        GpuFaultKind::Throttle,
        GpuFaultKind::Oom,
    ];

    /// The wire name, e.g. `"gpu.ecc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuFaultKind::Lost => "gpu.lost",
            GpuFaultKind::Ecc => "gpu.ecc",
            GpuFaultKind::Throttle => "gpu.throttle",
            GpuFaultKind::Oom => "gpu.oom",
        }
    }
}

impl fmt::Display for GpuFaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`GpuFaultKind`]; its message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFaultKind(pub String);

impl fmt::Display for UnknownFaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = GpuFaultKind::ALL.iter().map(|k| k.as_str()).collect();
        write!(
            f,
            "unknown fault kind {:?}; expected one of {names:?}",
            self.0
        )
    }
}

impl std::error::Error for UnknownFaultKind {}

impl FromStr for GpuFaultKind {
    type Err = UnknownFaultKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GpuFaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownFaultKind(s.to_owned()))
    }
}

fn one() -> u32 {
    1
}

/// The `POST /faults` body: a fault to inject on one worker (replacing an active fault of
/// the same kind). Unknown fields are rejected, except after `gpu.lost`, which has none
/// (serde checks the fields of a kind that has some).
///
/// ```
/// use wire::trainer::{EccMode, FaultRequest};
/// let body = FaultRequest::Ecc { mode: EccMode::Bitflip, steps: 2 };
/// assert_eq!(
///     serde_json::to_string(&body).expect("serializable"),
///     r#"{"kind":"gpu.ecc","mode":"bitflip","steps":2}"#
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum FaultRequest {
    /// `{"kind":"gpu.lost"}`: every later device operation fails; the worker exits 3.
    #[serde(rename = "gpu.lost")]
    Lost,
    /// `{"kind":"gpu.ecc","mode":"nan","steps":1}`.
    #[serde(rename = "gpu.ecc")]
    Ecc {
        /// Default `nan`.
        #[serde(default)]
        mode: EccMode,
        /// Consecutive steps whose gradients are corrupted (1 ..= 100 000 000; default 1).
        #[serde(default = "one")]
        steps: u32,
    },
    /// `{"kind":"gpu.throttle","factor":3.0}`.
    #[serde(rename = "gpu.throttle")]
    Throttle {
        /// Slow-down factor (finite, 1 ..= 1000): 2 means each step's compute takes twice as
        /// long.
        factor: f64,
    },
    /// `{"kind":"gpu.oom","limit_bytes":N,"backoff":true}`.
    #[serde(rename = "gpu.oom")]
    Oom {
        /// A step whose estimated allocation exceeds this many bytes fails (≥ 1).
        limit_bytes: u64,
        /// Split the batch into micro-batches until a step fits, instead of exiting 4
        /// (default false).
        #[serde(default)]
        backoff: bool,
    },
}

impl FaultRequest {
    /// The kind this request injects.
    pub fn kind(&self) -> GpuFaultKind {
        match self {
            FaultRequest::Lost => GpuFaultKind::Lost,
            FaultRequest::Ecc { .. } => GpuFaultKind::Ecc,
            FaultRequest::Throttle { .. } => GpuFaultKind::Throttle,
            FaultRequest::Oom { .. } => GpuFaultKind::Oom,
        }
    }
}

/// The answer to `POST /faults` and `DELETE /faults[/{kind}]`: the faults active after it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActiveFaults {
    pub active: Vec<GpuFaultKind>,
}

/// The `GET /status` body: one flat JSON object, the fields of [`Progress`] and
/// [`DeviceStatus`] side by side.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub progress: Progress,
    #[serde(flatten)]
    pub device: DeviceStatus,
}

/// What a worker's training loop publishes: position, membership and counters since the
/// process started. `/metrics` reads the same figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Rank in the current membership epoch (before the first: the `RANK` hint, if any).
    pub rank: Option<usize>,
    /// World size of the current epoch (before the first: `WORLD_SIZE`).
    pub world: usize,
    /// Next step to run (= steps completed in the job's numbering).
    pub step: u64,
    /// The job's length in steps (`--steps`).
    pub total_steps: u64,
    /// Membership epoch (0 before the first ring forms).
    pub epoch: u64,
    /// In a formed ring (what `/readyz` answers).
    pub ready: bool,
    pub last_checkpoint_step: Option<u64>,
    /// Compute threads of this worker.
    pub threads: usize,
    pub pid: u32,
    /// Steps this process completed, including skipped and recomputed ones.
    pub steps_total: u64,
    /// Steps skipped because some rank's gradient was not finite.
    pub steps_skipped_total: u64,
    pub restores_total: u64,
    /// Steps redone after restores (the work lost to faults).
    pub lost_steps_total: u64,
    pub checkpoints_written_total: u64,
    pub checkpoints_failed_total: u64,
    /// Wall time of the last step.
    pub last_step_s: f64,
    /// Forward + backward time of the last step.
    pub last_compute_s: f64,
}

/// The simulated device's faults and counters, as `/status` reports them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Active fault kinds, in [`GpuFaultKind::ALL`] order.
    pub faults_active: Vec<GpuFaultKind>,
    /// The active slow-down factor (1 when not throttled).
    pub throttle_factor: f64,
    /// Gradient values corrupted by `gpu.ecc`.
    pub ecc_injected_total: u64,
    /// Corruptions caught by the finite check.
    pub ecc_detected_total: u64,
    /// Corruptions that stayed finite (bit flips): silent.
    pub ecc_silent_total: u64,
    /// Steps that failed `gpu.oom`'s allocation check.
    pub oom_total: u64,
    /// Time slept for `gpu.throttle`.
    pub throttle_s_total: f64,
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// One line of the trainer's stdout: an [`Event`] and the wall-clock instant it was
/// written.
///
/// ```
/// use wire::trainer::{Event, EventLine};
/// let line: EventLine =
///     serde_json::from_str(r#"{"event":"job_done","epoch":2,"step":20,"t_unix_s":27.5}"#)
///         .expect("a job_done line");
/// assert!(matches!(line.event, Event::JobDone(ref d) if d.step == 20));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    /// Unix seconds when the line was written.
    pub t_unix_s: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// A trainer event, tagged by its `event` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `trainer launch` started its rendezvous and workers.
    Launch(Launch),
    /// A worker (or the TorchScript trainer) started.
    Start(Start),
    /// The coordinator accepted a worker's connection.
    RendezvousJoin(RendezvousJoin),
    /// A ring formed: the coordinator's view or one worker's.
    Rendezvous(Rendezvous),
    /// A worker restored (or reset) its state for a new epoch.
    Restore(Restore),
    /// A worker's gradient transport for an epoch.
    Comm(Comm),
    /// One completed (or skipped) step.
    Step(Step),
    /// The first completed step after an interruption.
    Recovered(Recovered),
    /// Rank 0's checkpoint writer finished a write, or failed one.
    Checkpoint(Checkpoint),
    /// A fault: injected, healed or detected on a worker, or a lost worker.
    Fault(FaultEvent),
    /// Rank 0 published the final weights.
    Publish(Publish),
    /// A process is exiting with `code`.
    Exit(Exit),
    /// Every member of the job reported done.
    JobDone(JobDone),
    /// The coordinator gave up (too few workers for too long).
    Shutdown(Shutdown),
    /// `trainer bench-compute`'s measurement.
    ComputeBench(ComputeBench),
}

macro_rules! event_from {
    ($($variant:ident),* $(,)?) => {
        $(impl From<$variant> for Event {
            fn from(e: $variant) -> Self {
                Event::$variant(e)
            }
        })*
    };
}

event_from!(
    Launch,
    Start,
    RendezvousJoin,
    Rendezvous,
    Restore,
    Comm,
    Step,
    Recovered,
    Checkpoint,
    Publish,
    Exit,
    JobDone,
    Shutdown,
    ComputeBench,
);

impl From<FaultEvent> for Event {
    fn from(e: FaultEvent) -> Self {
        Event::Fault(e)
    }
}

/// `launch`: the launcher's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub nproc: usize,
    pub threads_per_worker: usize,
    /// The rendezvous address, `HOST:PORT`.
    pub rendezvous: String,
    pub min_workers: usize,
    /// Workers are pinned to disjoint cores.
    pub pinned: bool,
}

/// `start`. A data-parallel worker writes `control`, `data_addr`, `threads`, `cpus` and
/// `params`; the TorchScript trainer writes `path` and `device` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The `RANK` hint (the rendezvous assigns the rank).
    pub rank: Option<usize>,
    pub pid: u32,
    /// The control endpoint's bound address, `HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// The ring listener's bound address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_addr: Option<String>,
    /// Compute threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Cores the process is pinned to (empty: not pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<usize>>,
    /// The model: the trainer's model spec (`{"kind":"mlp",…}`), or `"torchscript"`.
    pub model: serde_json::Value,
    /// Trainable parameter count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<usize>,
    /// TorchScript: the model file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// TorchScript: libtorch's device, e.g. `Cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub seed: u64,
    /// The job's length in steps.
    pub steps: u64,
    /// Samples per worker per step.
    pub batch_per_worker: usize,
}

/// `rendezvous_join`: the coordinator accepted a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RendezvousJoin {
    /// The coordinator's connection id.
    pub worker: u64,
    pub pid: u32,
    pub rank_hint: Option<usize>,
}

/// `rendezvous`: a ring formed, as one worker or the coordinator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rendezvous {
    /// A worker joined the ring of `epoch` as `rank`.
    Worker {
        rank: usize,
        world: usize,
        epoch: u64,
        /// The coordinator's detection of the failure that ended the last epoch.
        detected_unix_s: Option<f64>,
        /// From this worker noticing the interruption to the new ring (`None` at start).
        rendezvous_s: Option<f64>,
    },
    /// The coordinator formed the ring of `epoch`.
    Coordinator {
        epoch: u64,
        world: usize,
        /// Member pids in rank order.
        pids: Vec<u32>,
        detected_unix_s: Option<f64>,
    },
}

/// `restore`: the checkpoint (or the seed) a worker resumed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restore {
    pub rank: usize,
    pub epoch: u64,
    /// The step restored (the next to run).
    pub step: u64,
    /// The step the worker was at before.
    pub from_step: u64,
    /// `from_step - step`, at least 0: work to redo.
    pub lost_steps: u64,
    /// The checkpoint directory, or `"seed"` (fresh initialisation).
    pub source: String,
    /// Some newer checkpoint was damaged and passed over.
    pub fell_back: bool,
    /// The damaged checkpoints passed over.
    pub skipped: Vec<SkippedCheckpoint>,
    pub restore_s: f64,
}

/// A damaged checkpoint passed over by a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheckpoint {
    pub step: u64,
    pub path: String,
    pub reason: String,
}

/// How gradients travel in an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A shared-memory segment (ranks on one host).
    Shm,
    /// The TCP ring.
    Tcp,
    /// NCCL on CUDA devices.
    Nccl,
    /// `"none"`: a world of one, nothing to exchange.
    #[serde(rename = "none")]
    Solo,
}

impl Transport {
    /// The wire name, e.g. `"shm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::Tcp => "tcp",
            Transport::Nccl => "nccl",
            Transport::Solo => "none",
        }
    }
}

/// `comm`: a worker's gradient transport for an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comm {
    pub rank: usize,
    pub epoch: u64,
    pub world: usize,
    pub transport: Transport,
    /// Why `--comm auto` chose TCP over shared memory.
    pub fallback: Option<String>,
}

/// `step`: one step of one rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub rank: usize,
    /// The step's number (0-based).
    pub step: u64,
    pub epoch: u64,
    pub world: usize,
    /// Mean loss over the ranks; `None` (`null`) when it was not finite.
    pub loss: Option<f64>,
    /// Samples over all ranks.
    pub samples: u64,
    /// Wall time of the step.
    pub step_s: f64,
    /// The data-parallel worker's breakdown (the TorchScript trainer writes none).
    #[serde(flatten)]
    pub detail: Option<StepDetail>,
}

/// The phases of a data-parallel worker's step, and what faults did to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// Forward + backward, including `throttle_s`.
    pub compute_s: f64,
    /// Gradient all-reduce not overlapped with compute.
    pub comm_s: f64,
    /// Waiting for the slowest rank.
    pub wait_s: f64,
    pub data_s: f64,
    /// Optimiser and parameter write-back.
    pub update_s: f64,
    /// `gpu.throttle` sleep.
    pub throttle_s: f64,
    /// Every rank skipped the update: some gradient was not finite.
    pub skipped: bool,
    /// This rank's gradient was corrupted by `gpu.ecc` this step (`null`: it was not).
    pub ecc: Option<EccMode>,
    /// Micro-batches the batch was split into (> 1 after `gpu.oom` back-off).
    pub micro_batches: usize,
}

/// `recovered`: the first full step after an interruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovered {
    pub rank: usize,
    pub epoch: u64,
    pub world: usize,
    pub step: u64,
    /// The coordinator's detection of the failure, if it detected one.
    pub detected_unix_s: Option<f64>,
    /// From this worker noticing the interruption to this step.
    pub since_interrupt_s: f64,
    /// From the coordinator's detection to this step.
    pub since_detect_s: Option<f64>,
}

/// `checkpoint`: rank 0's writer finished a write, or failed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Checkpoint {
    Written {
        step: u64,
        /// The checkpoint directory.
        path: String,
        bytes: u64,
        /// Wall time of the write.
        write_s: f64,
        /// The writer thread's CPU time.
        cpu_s: f64,
        /// The training thread's copy of the state.
        snapshot_s: f64,
        /// Old checkpoints removed.
        pruned: usize,
    },
    Failed {
        error: String,
    },
}

/// What happened to a `gpu.*` fault on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FaultAction {
    Injected,
    Healed,
    Detected,
}

/// `fault`, in its six shapes (the wire's `kind` and `action` pick one).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultEvent {
    /// `POST /faults` took effect on the worker of `rank` (`kind` and parameters as posted,
    /// `action: "injected"`).
    Injected {
        request: FaultRequest,
        rank: Option<usize>,
    },
    /// `DELETE /faults/{kind}` (`Some`) or `DELETE /faults` (`None`: `kind: "all"`).
    Healed { kind: Option<GpuFaultKind> },
    /// A non-finite gradient was caught and every rank skipped `step` (`kind: "gpu.ecc"`,
    /// `action: "detected"`); `local`: this rank's gradient was the corrupted one.
    EccDetected {
        rank: usize,
        step: u64,
        epoch: u64,
        local: bool,
    },
    /// `peer_lost`: a collective with a peer failed; the worker waits for a new ring.
    PeerLost {
        rank: usize,
        epoch: u64,
        /// The step in progress, when the loss interrupted one.
        step: Option<u64>,
        error: String,
    },
    /// `ring_connect`: the ring of `epoch` could not be connected.
    RingConnect {
        rank: usize,
        epoch: u64,
        error: String,
    },
    /// `worker_lost` (coordinator): a member is gone.
    WorkerLost {
        /// The coordinator's connection id.
        worker: u64,
        /// Its rank in `epoch`, if it was a member.
        rank: Option<usize>,
        epoch: u64,
        /// `connection closed` or `heartbeat timeout`.
        reason: String,
        detected_unix_s: f64,
    },
}

/// The `fault` event as it is spelled: every field any shape uses.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FaultWire {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<FaultAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<EccMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker: Option<u64>,
    /// `Some(None)` writes `"rank": null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rank: Option<Option<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detected_unix_s: Option<f64>,
}

impl From<&FaultEvent> for FaultWire {
    fn from(e: &FaultEvent) -> Self {
        match *e {
            FaultEvent::Injected { request, rank } => {
                let mut w = FaultWire {
                    kind: request.kind().as_str().into(),
                    action: Some(FaultAction::Injected),
                    rank: Some(rank),
                    ..FaultWire::default()
                };
                match request {
                    FaultRequest::Lost => {}
                    FaultRequest::Ecc { mode, steps } => {
                        (w.mode, w.steps) = (Some(mode), Some(steps))
                    }
                    FaultRequest::Throttle { factor } => w.factor = Some(factor),
                    FaultRequest::Oom {
                        limit_bytes,
                        backoff,
                    } => (w.limit_bytes, w.backoff) = (Some(limit_bytes), Some(backoff)),
                }
                w
            }
            FaultEvent::Healed { kind } => FaultWire {
                kind: kind.map_or("all", GpuFaultKind::as_str).into(),
                action: Some(FaultAction::Healed),
                ..FaultWire::default()
            },
            FaultEvent::EccDetected {
                rank,
                step,
                epoch,
                local,
            } => FaultWire {
                kind: GpuFaultKind::Ecc.as_str().into(),
                action: Some(FaultAction::Detected),
                rank: Some(Some(rank)),
                step: Some(step),
                epoch: Some(epoch),
                local: Some(local),
                ..FaultWire::default()
            },
            FaultEvent::PeerLost {
                rank,
                epoch,
                step,
                ref error,
            } => FaultWire {
                kind: "peer_lost".into(),
                rank: Some(Some(rank)),
                epoch: Some(epoch),
                step,
                error: Some(error.clone()),
                ..FaultWire::default()
            },
            FaultEvent::RingConnect {
                rank,
                epoch,
                ref error,
            } => FaultWire {
                kind: "ring_connect".into(),
                rank: Some(Some(rank)),
                epoch: Some(epoch),
                error: Some(error.clone()),
                ..FaultWire::default()
            },
            FaultEvent::WorkerLost {
                worker,
                rank,
                epoch,
                ref reason,
                detected_unix_s,
            } => FaultWire {
                kind: "worker_lost".into(),
                worker: Some(worker),
                rank: Some(rank),
                epoch: Some(epoch),
                reason: Some(reason.clone()),
                detected_unix_s: Some(detected_unix_s),
                ..FaultWire::default()
            },
        }
    }
}

impl TryFrom<FaultWire> for FaultEvent {
    type Error = String;

    fn try_from(w: FaultWire) -> Result<Self, String> {
        let kind = w.kind.as_str();
        let need = |field: &'static str| {
            format!("a {kind:?} fault event without `{field}`; expected it with that kind")
        };
        let rank = || w.rank.flatten().ok_or_else(|| need("rank"));
        let epoch = || w.epoch.ok_or_else(|| need("epoch"));
        Ok(match (kind, w.action) {
            ("worker_lost", None) => FaultEvent::WorkerLost {
                worker: w.worker.ok_or_else(|| need("worker"))?,
                rank: w.rank.flatten(),
                epoch: epoch()?,
                reason: w.reason.clone().ok_or_else(|| need("reason"))?,
                detected_unix_s: w.detected_unix_s.ok_or_else(|| need("detected_unix_s"))?,
            },
            ("peer_lost", None) => FaultEvent::PeerLost {
                rank: rank()?,
                epoch: epoch()?,
                step: w.step,
                error: w.error.clone().ok_or_else(|| need("error"))?,
            },
            ("ring_connect", None) => FaultEvent::RingConnect {
                rank: rank()?,
                epoch: epoch()?,
                error: w.error.clone().ok_or_else(|| need("error"))?,
            },
            ("all", Some(FaultAction::Healed)) => FaultEvent::Healed { kind: None },
            (_, Some(FaultAction::Healed)) => FaultEvent::Healed {
                kind: Some(kind.parse().map_err(|e: UnknownFaultKind| e.to_string())?),
            },
            ("gpu.ecc", Some(FaultAction::Detected)) => FaultEvent::EccDetected {
                rank: rank()?,
                step: w.step.ok_or_else(|| need("step"))?,
                epoch: epoch()?,
                local: w.local.ok_or_else(|| need("local"))?,
            },
            (_, Some(FaultAction::Injected)) => {
                let request = match kind.parse().map_err(|e: UnknownFaultKind| e.to_string())? {
                    GpuFaultKind::Lost => FaultRequest::Lost,
                    GpuFaultKind::Ecc => FaultRequest::Ecc {
                        mode: w.mode.unwrap_or_default(),
                        steps: w.steps.unwrap_or_else(one),
                    },
                    GpuFaultKind::Throttle => FaultRequest::Throttle {
                        factor: w.factor.ok_or_else(|| need("factor"))?,
                    },
                    GpuFaultKind::Oom => FaultRequest::Oom {
                        limit_bytes: w.limit_bytes.ok_or_else(|| need("limit_bytes"))?,
                        backoff: w.backoff.unwrap_or(false),
                    },
                };
                FaultEvent::Injected {
                    request,
                    rank: w.rank.flatten(),
                }
            }
            (_, action) => {
                return Err(format!(
                    "unknown fault event kind {kind:?} with action {action:?}; expected \
                     worker_lost, peer_lost, ring_connect, or a gpu.* kind with action \
                     injected/healed (gpu.ecc also detected)"
                ))
            }
        })
    }
}

impl Serialize for FaultEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        FaultWire::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FaultEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        FaultWire::deserialize(deserializer)?
            .try_into()
            .map_err(D::Error::custom)
    }
}

/// `publish`: rank 0 wrote the final weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    pub rank: usize,
    pub step: u64,
    /// The weights file.
    pub path: String,
    /// `NAME=KIND:PATH` for `server --model` (the TorchScript trainer writes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_model: Option<String>,
}

/// `exit`: the process exits with `code` (see the trainer's `exit` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    /// The rank, or the `RANK` hint before the first ring; `None` when neither is known.
    pub rank: Option<usize>,
    pub code: i32,
    pub reason: String,
    /// The next step to run, when the worker got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// `job_done` (coordinator): every member reported done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDone {
    pub epoch: u64,
    /// The last member's final step (the job's length).
    pub step: u64,
}

/// `shutdown` (coordinator): the job cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    pub reason: String,
}

/// `compute_bench` (`trainer bench-compute`): the machine's candle matmul rate and the rate
/// an MLP training step achieves, in GFLOP/s (10⁹ floating-point operations per second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeBench {
    pub threads: usize,
    /// `(m, k, n)` of the timed `[m, k] × [k, n]` matmuls.
    pub matmul_shape: (usize, usize, usize),
    /// The best median of the matmul blocks timed around the steps.
    pub matmul_gflops: f64,
    /// FLOPs one step needs (forward, weight and input gradients of the linear layers).
    pub step_flops: f64,
    /// Median forward+backward time of the measured steps.
    pub step_compute_s: f64,
    pub step_gflops: f64,
    /// `step_gflops / matmul_gflops`.
    pub ratio: f64,
    pub warmup_steps: usize,
    pub measured_steps: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Parses `text` as `T`, writes it back, and checks the JSON is the same (as a value:
    /// key order aside, including `null` versus absent). Returns the parsed value.
    #[track_caller]
    fn round_trip<T: Serialize + DeserializeOwned>(text: &str) -> T {
        let typed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let back = serde_json::to_value(&typed).expect("serializable");
        let want: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(back, want, "{text}");
        typed
    }

    /// One line per shape the trainer writes, with keys sorted as it wrote them before these
    /// types (through `serde_json::Value`), so logs of that trainer still read; values as in
    /// a small two-worker job with a killed worker and every control-endpoint fault. The
    /// trainer's process tests check that every line of real runs parses too.
    const LINES: &[&str] = &[
        r#"{"event":"launch","min_workers":2,"nproc":2,"pinned":true,"rendezvous":"127.0.0.1:40311","t_unix_s":1754550000.123456,"threads_per_worker":1}"#,
        r#"{"batch_per_worker":16,"control":"127.0.0.1:40313","cpus":[0],"data_addr":"127.0.0.1:40315","event":"start","model":{"config":{"hidden":[64],"input_dim":32,"num_classes":4},"kind":"mlp","teacher_hidden":16},"params":2372,"pid":4242,"rank":0,"seed":5,"steps":8,"t_unix_s":1754550000.2,"threads":1}"#,
        r#"{"batch_per_worker":16,"control":"127.0.0.1:40317","cpus":[],"data_addr":"127.0.0.1:40319","event":"start","model":{"config":{"hidden":[64],"input_dim":32,"num_classes":4},"kind":"mlp","teacher_hidden":16},"params":2372,"pid":4243,"rank":null,"seed":5,"steps":8,"t_unix_s":1754550000.2,"threads":1}"#,
        r#"{"batch_per_worker":64,"device":"Cpu","event":"start","model":"torchscript","path":"/tmp/m.pt","pid":7,"rank":0,"seed":0,"steps":3,"t_unix_s":1754550000.2}"#,
        r#"{"event":"rendezvous_join","pid":4242,"rank_hint":0,"t_unix_s":1754550000.3,"worker":0}"#,
        r#"{"event":"rendezvous_join","pid":4243,"rank_hint":null,"t_unix_s":1754550000.3,"worker":1}"#,
        r#"{"detected_unix_s":null,"epoch":1,"event":"rendezvous","pids":[4242,4243],"t_unix_s":1754550000.4,"world":2}"#,
        r#"{"detected_unix_s":null,"epoch":1,"event":"rendezvous","rank":0,"rendezvous_s":null,"t_unix_s":1754550000.5,"world":2}"#,
        r#"{"detected_unix_s":1754550003.25,"epoch":2,"event":"rendezvous","rank":0,"rendezvous_s":0.5,"t_unix_s":1754550003.6,"world":1}"#,
        r#"{"epoch":2,"event":"restore","fell_back":true,"from_step":6,"lost_steps":2,"rank":0,"restore_s":0.012,"skipped":[{"path":"/run/checkpoints/step-00000006","reason":"model.safetensors: crc32c mismatch","step":6}],"source":"/run/checkpoints/step-00000004","step":4,"t_unix_s":1754550003.7}"#,
        r#"{"epoch":1,"event":"restore","fell_back":false,"from_step":0,"lost_steps":0,"rank":1,"restore_s":0.0001,"skipped":[],"source":"seed","step":0,"t_unix_s":1754550000.6}"#,
        r#"{"epoch":1,"event":"comm","fallback":null,"rank":0,"t_unix_s":1754550000.6,"transport":"shm","world":2}"#,
        r#"{"epoch":1,"event":"comm","fallback":"/dev/shm is not writable","rank":1,"t_unix_s":1754550000.6,"transport":"tcp","world":2}"#,
        r#"{"epoch":2,"event":"comm","fallback":null,"rank":0,"t_unix_s":1754550003.6,"transport":"none","world":1}"#,
        r#"{"comm_s":0.0021,"compute_s":0.0153,"data_s":0.0004,"ecc":null,"epoch":1,"event":"step","loss":1.3862943649291992,"micro_batches":1,"rank":0,"samples":32,"skipped":false,"step":0,"step_s":0.0204,"t_unix_s":1754550000.7,"throttle_s":0.0,"update_s":0.0011,"wait_s":0.0015,"world":2}"#,
        r#"{"comm_s":0.0021,"compute_s":0.0153,"data_s":0.0004,"ecc":"nan","epoch":1,"event":"step","loss":null,"micro_batches":2,"rank":1,"samples":32,"skipped":true,"step":1,"step_s":0.0204,"t_unix_s":1754550000.7,"throttle_s":0.03,"update_s":0.0,"wait_s":0.0015,"world":2}"#,
        r#"{"epoch":0,"event":"step","loss":2.25,"rank":0,"samples":64,"step":0,"step_s":0.5,"t_unix_s":1754550000.7,"world":1}"#,
        r#"{"detected_unix_s":1754550003.25,"epoch":2,"event":"recovered","rank":0,"since_detect_s":0.7,"since_interrupt_s":0.9,"step":4,"t_unix_s":1754550003.9,"world":1}"#,
        r#"{"detected_unix_s":null,"epoch":2,"event":"recovered","rank":0,"since_detect_s":null,"since_interrupt_s":0.9,"step":4,"t_unix_s":1754550003.9,"world":2}"#,
        r#"{"bytes":40210,"cpu_s":0.0009,"event":"checkpoint","path":"/run/checkpoints/step-00000004","pruned":0,"snapshot_s":0.0001,"step":4,"t_unix_s":1754550001.0,"write_s":0.003}"#,
        r#"{"error":"writing /run/checkpoints/.tmp-step-00000008: No space left on device (os error 28)","event":"checkpoint","t_unix_s":1754550001.0}"#,
        r#"{"action":"injected","event":"fault","kind":"gpu.ecc","mode":"bitflip","rank":0,"steps":2,"t_unix_s":1754550001.1}"#,
        r#"{"action":"injected","event":"fault","kind":"gpu.throttle","factor":3.0,"rank":null,"t_unix_s":1754550001.1}"#,
        r#"{"action":"injected","backoff":true,"event":"fault","kind":"gpu.oom","limit_bytes":1000000,"rank":1,"t_unix_s":1754550001.1}"#,
        r#"{"action":"injected","event":"fault","kind":"gpu.lost","rank":1,"t_unix_s":1754550001.1}"#,
        r#"{"action":"healed","event":"fault","kind":"gpu.throttle","t_unix_s":1754550001.2}"#,
        r#"{"action":"healed","event":"fault","kind":"all","t_unix_s":1754550001.2}"#,
        r#"{"action":"detected","epoch":1,"event":"fault","kind":"gpu.ecc","local":true,"rank":1,"step":1,"t_unix_s":1754550001.3}"#,
        r#"{"epoch":1,"error":"peer closed the connection","event":"fault","kind":"peer_lost","rank":0,"step":6,"t_unix_s":1754550003.3}"#,
        r#"{"epoch":1,"error":"setting up shared memory over the TCP ring: broken pipe","event":"fault","kind":"peer_lost","rank":0,"t_unix_s":1754550003.3}"#,
        r#"{"epoch":3,"error":"connecting to 127.0.0.1:40319: connection refused","event":"fault","kind":"ring_connect","rank":0,"t_unix_s":1754550003.3}"#,
        r#"{"detected_unix_s":1754550003.25,"epoch":1,"event":"fault","kind":"worker_lost","rank":1,"reason":"connection closed","t_unix_s":1754550003.25,"worker":1}"#,
        r#"{"detected_unix_s":1754550003.25,"epoch":1,"event":"fault","kind":"worker_lost","rank":null,"reason":"heartbeat timeout","t_unix_s":1754550003.25,"worker":5}"#,
        r#"{"event":"publish","path":"/run/final/model.safetensors","rank":0,"server_model":"trained=mlp:/run/final/model.safetensors","step":8,"t_unix_s":1754550005.0}"#,
        r#"{"event":"publish","path":"/run/final/model.pt","rank":0,"step":3,"t_unix_s":1754550005.0}"#,
        r#"{"code":0,"event":"exit","rank":0,"reason":"done","step":8,"t_unix_s":1754550005.1}"#,
        r#"{"code":1,"event":"exit","rank":null,"reason":"binding the control endpoint 127.0.0.1:1: Permission denied (os error 13)","t_unix_s":1754550005.1}"#,
        r#"{"epoch":2,"event":"job_done","step":8,"t_unix_s":1754550005.2}"#,
        r#"{"event":"shutdown","reason":"only 1 workers for 60 s; min_workers is 2","t_unix_s":1754550005.2}"#,
        r#"{"event":"compute_bench","matmul_gflops":117.5,"matmul_shape":[256,512,512],"measured_steps":20,"ratio":0.85,"step_compute_s":0.0123,"step_flops":1450000000.0,"step_gflops":99.9,"t_unix_s":1754550005.3,"threads":1,"warmup_steps":3}"#,
    ];

    #[test]
    fn every_event_shape_the_trainer_writes_reads_back_as_the_same_json() {
        for line in LINES {
            round_trip::<EventLine>(line);
        }
    }

    #[test]
    fn events_parse_into_the_variant_their_fields_describe() {
        let parse = |i: usize| round_trip::<EventLine>(LINES[i]).event;
        let Event::Start(s) = parse(3) else {
            panic!("start")
        };
        assert_eq!((s.threads, s.path.as_deref()), (None, Some("/tmp/m.pt")));
        assert!(matches!(
            parse(6),
            Event::Rendezvous(Rendezvous::Coordinator { .. })
        ));
        assert!(matches!(
            parse(8),
            Event::Rendezvous(Rendezvous::Worker {
                rank: 0,
                rendezvous_s: Some(_),
                ..
            })
        ));
        let Event::Step(s) = parse(15) else {
            panic!("step")
        };
        let d = s.detail.expect("a worker's step has its breakdown");
        assert_eq!((s.loss, d.skipped, d.ecc), (None, true, Some(EccMode::Nan)));
        let Event::Step(s) = parse(16) else {
            panic!("step")
        };
        assert_eq!((s.loss, s.detail), (Some(2.25), None), "TorchScript step");
        assert!(matches!(
            parse(20),
            Event::Checkpoint(Checkpoint::Failed { .. })
        ));
        assert_eq!(
            parse(21),
            Event::Fault(FaultEvent::Injected {
                request: FaultRequest::Ecc {
                    mode: EccMode::Bitflip,
                    steps: 2
                },
                rank: Some(0)
            })
        );
        assert_eq!(parse(26), Event::Fault(FaultEvent::Healed { kind: None }));
        assert!(matches!(
            parse(32),
            Event::Fault(FaultEvent::WorkerLost { rank: None, .. })
        ));
    }

    #[test]
    fn an_unknown_event_or_fault_shape_is_an_error_that_names_it() {
        let e = serde_json::from_str::<EventLine>(r#"{"event":"melt","t_unix_s":1.0}"#)
            .expect_err("unknown event");
        assert!(e.to_string().contains("melt"), "{e}");
        let e = serde_json::from_str::<EventLine>(
            r#"{"event":"fault","kind":"gpu.melt","action":"healed","t_unix_s":1.0}"#,
        )
        .expect_err("unknown kind");
        assert!(e.to_string().contains("gpu.melt"), "{e}");
        let e = serde_json::from_str::<EventLine>(
            r#"{"event":"fault","kind":"worker_lost","epoch":1,"t_unix_s":1.0}"#,
        )
        .expect_err("worker_lost without worker");
        assert!(e.to_string().contains("`worker`"), "{e}");
    }

    #[test]
    fn fault_requests_read_back_as_the_same_json_and_apply_the_defaults() {
        for text in [
            r#"{"kind":"gpu.lost"}"#,
            r#"{"kind":"gpu.ecc","mode":"inf","steps":3}"#,
            r#"{"kind":"gpu.throttle","factor":2.5}"#,
            r#"{"kind":"gpu.oom","limit_bytes":1048576,"backoff":false}"#,
        ] {
            let r = round_trip::<FaultRequest>(text);
            assert_eq!(serde_json::to_string(&r).expect("serializable"), text);
        }
        let r: FaultRequest = serde_json::from_str(r#"{"kind":"gpu.ecc"}"#).expect("defaults");
        assert_eq!(
            r,
            FaultRequest::Ecc {
                mode: EccMode::Nan,
                steps: 1
            }
        );
        let r: FaultRequest =
            serde_json::from_str(r#"{"kind":"gpu.oom","limit_bytes":5}"#).expect("defaults");
        assert_eq!(
            r,
            FaultRequest::Oom {
                limit_bytes: 5,
                backoff: false
            }
        );
        assert_eq!(r.kind(), GpuFaultKind::Oom);
    }

    #[test]
    fn fault_requests_reject_unknown_kinds_and_fields() {
        let e = serde_json::from_str::<FaultRequest>(r#"{"kind":"gpu.melt"}"#)
            .expect_err("unknown kind");
        assert!(e.to_string().contains("gpu.ecc"), "lists the kinds: {e}");
        assert!(
            serde_json::from_str::<FaultRequest>(r#"{"kind":"gpu.ecc","factor":2.0}"#).is_err()
        );
        assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"gpu.throttle"}"#).is_err());
    }

    #[test]
    fn ecc_modes_are_lowercase_words() {
        for (mode, text) in [
            (EccMode::Nan, r#""nan""#),
            (EccMode::Inf, r#""inf""#),
            (EccMode::Bitflip, r#""bitflip""#),
        ] {
            assert_eq!(round_trip::<EccMode>(text), mode);
        }
    }

    #[test]
    fn fault_kinds_parse_from_their_names_and_name_the_known_ones_otherwise() {
        for k in GpuFaultKind::ALL {
            assert_eq!(k.as_str().parse::<GpuFaultKind>(), Ok(k));
            assert_eq!(round_trip::<GpuFaultKind>(&format!("{:?}", k.as_str())), k);
        }
        let e = "gpu.nope".parse::<GpuFaultKind>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            r#"unknown fault kind "gpu.nope"; expected one of ["gpu.lost", "gpu.ecc", "gpu.throttle", "gpu.oom"]"#
        );
        let a = round_trip::<ActiveFaults>(r#"{"active":["gpu.ecc","gpu.oom"]}"#);
        assert_eq!(a.active, vec![GpuFaultKind::Ecc, GpuFaultKind::Oom]);
    }

    #[test]
    fn status_is_one_flat_object_that_reads_back_as_the_same_json() {
        let text = r#"{"rank":1,"world":2,"step":40,"total_steps":100,"epoch":1,"ready":true,
            "last_checkpoint_step":20,"threads":1,"pid":4243,"steps_total":40,
            "steps_skipped_total":1,"restores_total":1,"lost_steps_total":0,
            "checkpoints_written_total":0,"checkpoints_failed_total":0,"last_step_s":0.02,
            "last_compute_s":0.015,"faults_active":["gpu.throttle"],"throttle_factor":3.0,
            "ecc_injected_total":2,"ecc_detected_total":1,"ecc_silent_total":1,"oom_total":0,
            "throttle_s_total":0.25}"#;
        let s = round_trip::<Status>(text);
        assert_eq!((s.progress.rank, s.progress.step), (Some(1), 40));
        assert_eq!(s.device.faults_active, vec![GpuFaultKind::Throttle]);
        let before_rendezvous = r#"{"rank":null,"world":1,"step":0,"total_steps":8,"epoch":0,
            "ready":false,"last_checkpoint_step":null,"threads":2,"pid":1,"steps_total":0,
            "steps_skipped_total":0,"restores_total":0,"lost_steps_total":0,
            "checkpoints_written_total":0,"checkpoints_failed_total":0,"last_step_s":0.0,
            "last_compute_s":0.0,"faults_active":[],"throttle_factor":1.0,
            "ecc_injected_total":0,"ecc_detected_total":0,"ecc_silent_total":0,"oom_total":0,
            "throttle_s_total":0.0}"#;
        assert_eq!(round_trip::<Status>(before_rendezvous).progress.rank, None);
    }
}
