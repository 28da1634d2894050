//! One worker process: joins the rendezvous, forms the ring of each membership epoch, agrees
//! with its peers on the checkpoint to restore, trains, checkpoints (rank 0, in the
//! background), and recovers when the coordinator ends the epoch. See the crate docs for the
//! events it prints and its exit codes.

use crate::checkpoint::{self, AsyncWriter};
use crate::comm::{Communicator, TcpRing};
use crate::control::{self, Shared};
use crate::device::DeviceError;
use crate::events::{emit, unix_s};
use crate::exit;
use crate::failpoint::Failpoints;
use crate::optim::AdamWConfig;
use crate::rendezvous::{parse_peers, Client, FromWorker, Notice, ToWorker};
use crate::shm_comm::ShmComm;
use crate::train::{StepConfig, StepError, Trainer};
use crate::workload::{ModelSpec, Workload};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wire::trainer::{
    Checkpoint, Comm, Exit, FaultEvent, Publish, Recovered, Rendezvous, Restore, SkippedCheckpoint,
    Start, Step, StepDetail, Transport,
};

/// Everything a worker needs; built by the CLI from flags and environment variables.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Preferred rank (`RANK`); the coordinator orders ranks by it.
    pub rank_hint: Option<usize>,
    /// Expected world size (`WORLD_SIZE`); informational, the coordinator decides.
    pub world_size: usize,
    /// Coordinator address, `HOST:PORT`.
    pub rendezvous: String,
    /// Control endpoint address (`127.0.0.1:0` picks a free port; printed in `start`).
    pub control: String,
    /// Ring listener address (port 0: any).
    pub data_addr: String,
    pub run_dir: PathBuf,
    pub spec: ModelSpec,
    /// Text for the LM (`None`: the bundled text).
    pub text: Option<PathBuf>,
    pub steps: u64,
    pub batch_per_worker: usize,
    pub bucket_values: usize,
    pub seed: u64,
    pub optimizer: AdamWConfig,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep: usize,
    pub heartbeat_interval: Duration,
    /// Compute threads of this worker (candle reads `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// Cores the process is pinned to (empty: not pinned); informational here, the CLI
    /// applies it.
    pub cpus: Vec<usize>,
    /// Communicator of the gradient all-reduce (`--comm`); control, restore agreement and
    /// aborts always go over the TCP ring.
    pub comm: CommBackend,
}

/// The gradient all-reduce backend (`trainer worker --comm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommBackend {
    /// Shared memory when every rank of the epoch can map one segment (same host, same
    /// `/dev/shm`), else the TCP ring; decided per epoch and reported in the `comm` event.
    #[default]
    Auto,
    /// The TCP ring ([`TcpRing`]) even on one host (like `NCCL_SHM_DISABLE=1`).
    Tcp,
    /// The shared-memory segment ([`ShmComm`]); a worker that cannot map it exits.
    Shm,
    /// NCCL on a CUDA device (`nccl::NcclComm`, feature `cuda`), bootstrapped over the
    /// TCP ring of each membership epoch.
    Nccl {
        /// CUDA device ordinal; `None`: the worker's rank in the epoch (one GPU per rank on
        /// a single host).
        device: Option<usize>,
    },
}

/// The error for `--comm nccl` in a build without the `cuda` feature.
pub const NCCL_FEATURE_MISSING: &str = "--comm nccl needs a trainer built with `--features cuda` (cargo build -p trainer --features cuda)";

/// The error for `--model torchscript` in a build without the `tch` feature.
pub const TCH_FEATURE_MISSING: &str = "--model torchscript needs a trainer built with `--features tch` and libtorch (LIBTORCH=/path/to/libtorch cargo build -p trainer --features tch)";

/// The error for `--model torchscript` with a world size above one.
pub const TORCHSCRIPT_SINGLE_PROCESS: &str = "--model torchscript trains single-process only (world size 1): the distributed loop (rendezvous, ring, checkpoints) is not wired for TorchScript yet; use --world-size 1";

impl CommBackend {
    /// Why this backend cannot run in this build (`None` when it can).
    pub fn unsupported_reason(self) -> Option<&'static str> {
        match self {
            CommBackend::Auto | CommBackend::Tcp | CommBackend::Shm => None,
            CommBackend::Nccl { .. } if !cfg!(feature = "cuda") => Some(NCCL_FEATURE_MISSING),
            CommBackend::Nccl { .. } => None,
        }
    }
}

impl WorkerConfig {
    /// Where checkpoints go.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    /// Where the final weights are published.
    pub fn final_weights(&self) -> PathBuf {
        self.run_dir.join("final").join("model.safetensors")
    }
}

/// What ended an epoch.
enum EpochEnd {
    Done,
    Interrupted,
}

/// Runs the worker to completion; returns the process exit code.
pub fn run(cfg: WorkerConfig) -> i32 {
    match run_inner(&cfg) {
        Ok(code) => code,
        Err(e) => {
            emit(Exit {
                rank: cfg.rank_hint,
                code: exit::ERROR,
                reason: format!("{e:#}"),
                step: None,
            });
            exit::ERROR
        }
    }
}

fn run_inner(cfg: &WorkerConfig) -> anyhow::Result<i32> {
    use anyhow::Context;
    if let Some(reason) = cfg.comm.unsupported_reason() {
        anyhow::bail!("{reason}");
    }
    let text = match &cfg.text {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --text {}", p.display()))?)
        }
        None => None,
    };
    let workload = Workload::new(cfg.spec.clone(), cfg.seed, text).context("building the model")?;
    let shared = Shared::default();
    let mut trainer = Trainer::new(
        workload,
        cfg.optimizer,
        StepConfig {
            batch_per_worker: cfg.batch_per_worker,
            bucket_values: cfg.bucket_values,
            seed: cfg.seed,
        },
        shared.device.clone(),
    )?;
    // Dropped on every return: answers requests in flight, then stops.
    let control = control::start(&cfg.control, shared.clone())
        .with_context(|| format!("binding the control endpoint {}", cfg.control))?;
    let control_addr = control.addr;
    let listener = std::net::TcpListener::bind(&cfg.data_addr)
        .with_context(|| format!("binding the ring listener {}", cfg.data_addr))?;
    let data_addr = listener.local_addr()?;
    shared.update(|s| {
        s.pid = std::process::id();
        s.threads = cfg.threads;
        s.total_steps = cfg.steps;
        s.world = cfg.world_size;
        s.rank = cfg.rank_hint;
    });
    emit(Start {
        rank: cfg.rank_hint,
        pid: std::process::id(),
        control: Some(control_addr.to_string()),
        data_addr: Some(data_addr.to_string()),
        threads: Some(cfg.threads),
        cpus: Some(cfg.cpus.clone()),
        model: serde_json::to_value(&cfg.spec).context("describing the model")?,
        params: Some(trainer.params.len()),
        path: None,
        device: None,
        seed: cfg.seed,
        steps: cfg.steps,
        batch_per_worker: cfg.batch_per_worker,
    });

    let client = Client::connect(
        &cfg.rendezvous,
        FromWorker::Join {
            rank_hint: cfg.rank_hint,
            data_addr: data_addr.to_string(),
            control_addr: Some(control_addr.to_string()),
            pid: std::process::id(),
        },
        cfg.heartbeat_interval,
        Duration::from_secs(30),
    )
    .context("joining the rendezvous")?;

    let writer_shared = shared.clone();
    let writer = AsyncWriter::start(
        cfg.checkpoint_dir(),
        cfg.keep,
        Failpoints::from_env(&checkpoint::FAILPOINTS),
        move |r| match r {
            Ok(rep) => {
                writer_shared.update(|s| {
                    s.last_checkpoint_step = Some(rep.step);
                    s.checkpoints_written_total += 1;
                });
                writer_shared
                    .metrics
                    .observe_checkpoint(rep.write_s, rep.snapshot_s, rep.bytes);
                emit(Checkpoint::Written {
                    step: rep.step,
                    path: rep.path.display().to_string(),
                    bytes: rep.bytes,
                    write_s: rep.write_s,
                    cpu_s: rep.cpu_s,
                    snapshot_s: rep.snapshot_s,
                    pruned: rep.pruned.len(),
                });
            }
            Err(e) => {
                writer_shared.update(|s| s.checkpoints_failed_total += 1);
                emit(Checkpoint::Failed {
                    error: e.to_string(),
                });
            }
        },
    );

    // Time the last interruption was noticed here, and when the coordinator detected it.
    let mut interrupted_at: Option<(Instant, f64)> = None;
    let mut detected_unix_s: Option<f64> = None;
    loop {
        let membership = match client.next() {
            Notice::Message(ToWorker::Membership {
                epoch,
                rank,
                world,
                peers,
                detected_unix_s: d,
            }) => (epoch, rank, world, peers, d),
            Notice::Message(ToWorker::Abort {
                detected_unix_s: d, ..
            }) => {
                detected_unix_s = Some(d);
                interrupted_at.get_or_insert((Instant::now(), unix_s()));
                continue;
            }
            Notice::Message(ToWorker::Shutdown { reason }) | Notice::Lost(reason) => {
                emit(Exit {
                    rank: shared.progress().rank,
                    code: exit::RENDEZVOUS,
                    reason,
                    step: None,
                });
                return Ok(exit::RENDEZVOUS);
            }
        };
        let (epoch, rank, world, peers, d) = membership;
        if d.is_some() {
            detected_unix_s = d;
        }
        let peers = match parse_peers(&peers) {
            Ok(p) => p,
            Err(e) => anyhow::bail!("bad membership from the rendezvous: {e}"),
        };
        let formed_at = Instant::now();
        let mut ring =
            match TcpRing::connect(&listener, rank, &peers, epoch, Duration::from_secs(10)) {
                Ok(r) => r,
                Err(e) => {
                    emit(FaultEvent::RingConnect {
                        rank,
                        epoch,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
        if !client.install_ring(epoch, ring.abort_handle()) {
            continue;
        }
        shared.update(|s| {
            s.rank = Some(rank);
            s.world = world;
            s.epoch = epoch;
            s.ready = true;
        });
        emit(Rendezvous::Worker {
            rank,
            world,
            epoch,
            detected_unix_s,
            rendezvous_s: interrupted_at.map(|(t, _)| formed_at.duration_since(t).as_secs_f64()),
        });

        // Agree on the checkpoint to restore: rank 0 picks the newest good one, after its own
        // pending writes land, and broadcasts its step.
        writer.flush();
        let restore_started = Instant::now();
        let step_before = trainer.step;
        let mut code = [0.0f32; 5];
        if rank == 0 {
            let (found, _) =
                checkpoint::restore_latest(&cfg.checkpoint_dir(), trainer.workload.params(), None);
            if let Some(r) = found {
                code = encode_step(Some(r.manifest.step));
            }
        }
        if let Err(e) = ring.broadcast(&mut code, 0) {
            emit(FaultEvent::PeerLost {
                rank,
                epoch,
                step: None,
                error: e.to_string(),
            });
            interrupted_at.get_or_insert((Instant::now(), unix_s()));
            continue;
        }
        let agreed = decode_step(&code);
        let needs_restore = agreed.is_some() || interrupted_at.is_some() || trainer.step > 0;
        if needs_restore {
            let (found, skipped) = match agreed {
                Some(step) => checkpoint::restore_latest(
                    &cfg.checkpoint_dir(),
                    trainer.workload.params(),
                    Some(step),
                ),
                None => (None, Vec::new()),
            };
            let skipped: Vec<SkippedCheckpoint> = skipped
                .into_iter()
                .map(|s| SkippedCheckpoint {
                    step: s.step,
                    path: s.path.display().to_string(),
                    reason: s.reason,
                })
                .collect();
            let source = match found {
                Some(r) => {
                    let path = r.path.display().to_string();
                    trainer.restore(r)?;
                    path
                }
                None => {
                    trainer.reset()?;
                    "seed".to_owned()
                }
            };
            let lost = step_before.saturating_sub(trainer.step);
            let restore_s = restore_started.elapsed().as_secs_f64();
            shared.metrics.observe_restore(restore_s);
            shared.update(|s| {
                s.restores_total += 1;
                s.lost_steps_total += lost;
                s.step = trainer.step;
            });
            emit(Restore {
                rank,
                epoch,
                step: trainer.step,
                from_step: step_before,
                lost_steps: lost,
                source,
                fell_back: !skipped.is_empty(),
                skipped,
                restore_s,
            });
        }

        // The gradient communicator of this epoch: `None` is the TCP ring itself.
        let key = format!("{}-e{epoch}", peers[0]);
        let (mut grads, transport) = match grad_comm(cfg.comm, &mut ring, &key) {
            Ok((g, transport, fallback)) => {
                emit(Comm {
                    rank,
                    epoch,
                    world,
                    transport,
                    fallback,
                });
                (
                    g,
                    (transport != Transport::Solo).then_some(transport.as_str()),
                )
            }
            Err(GradCommError::Unavailable(reason)) => {
                emit(Exit {
                    rank: Some(rank),
                    code: exit::ERROR,
                    reason,
                    step: Some(trainer.step),
                });
                return Ok(exit::ERROR);
            }
            Err(GradCommError::PeerLost(error)) => {
                emit(FaultEvent::PeerLost {
                    rank,
                    epoch,
                    step: None,
                    error,
                });
                interrupted_at.get_or_insert((Instant::now(), unix_s()));
                continue;
            }
        };

        match train_epoch(
            cfg,
            &mut trainer,
            &mut ring,
            grads.as_deref_mut().map(|g| g as &mut dyn Communicator),
            &client,
            &writer,
            &shared,
            epoch,
            transport,
            &mut interrupted_at,
            detected_unix_s,
        )? {
            Ok(EpochEnd::Done) => {
                if rank == 0 {
                    if cfg.checkpoint_every > 0 && trainer.step % cfg.checkpoint_every != 0 {
                        writer.submit(trainer.snapshot(world, writer.buffers()));
                    }
                    writer.flush();
                    publish(cfg, &trainer, rank)?;
                }
                let _ = client.send(&FromWorker::Done { step: trainer.step });
                emit(Exit {
                    rank: Some(rank),
                    code: exit::DONE,
                    reason: "done".into(),
                    step: Some(trainer.step),
                });
                return Ok(exit::DONE);
            }
            Ok(EpochEnd::Interrupted) => {
                shared.update(|s| s.ready = false);
                interrupted_at.get_or_insert((Instant::now(), unix_s()));
            }
            Err(code) => return Ok(code),
        }
    }
}

/// Trains until the last step or an interruption. `Err(code)` means exit with `code`.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    cfg: &WorkerConfig,
    trainer: &mut Trainer,
    ring: &mut TcpRing,
    mut grads: Option<&mut dyn Communicator>,
    client: &Client,
    writer: &AsyncWriter,
    shared: &Shared,
    epoch: u64,
    transport: Option<&'static str>,
    interrupted_at: &mut Option<(Instant, f64)>,
    detected_unix_s: Option<f64>,
) -> anyhow::Result<Result<EpochEnd, i32>> {
    let (rank, world) = (ring.rank(), ring.world());
    while trainer.step < cfg.steps {
        if client.epoch_aborted() {
            return Ok(Ok(EpochEnd::Interrupted));
        }
        let started = Instant::now();
        let result = match grads.as_deref_mut() {
            Some(g) => trainer.step(g),
            None => trainer.step(ring),
        };
        match result {
            Ok(st) => {
                let step = trainer.step - 1;
                let step_s = started.elapsed().as_secs_f64();
                client.step.store(trainer.step, Ordering::Relaxed);
                shared.update(|s| {
                    s.step = trainer.step;
                    s.steps_total += 1;
                    s.steps_skipped_total += u64::from(st.skipped);
                    s.last_step_s = step_s;
                    s.last_compute_s = st.compute_s;
                });
                shared
                    .metrics
                    .observe_step(&st, step_s, cfg.batch_per_worker as u64, transport);
                emit(Step {
                    rank,
                    step,
                    epoch,
                    world,
                    loss: finite(st.loss),
                    samples: st.samples,
                    step_s,
                    detail: Some(StepDetail {
                        compute_s: st.compute_s,
                        comm_s: st.comm_s,
                        wait_s: st.wait_s,
                        data_s: st.data_s,
                        update_s: st.update_s,
                        throttle_s: st.throttle_s,
                        skipped: st.skipped,
                        ecc: st.ecc,
                        micro_batches: st.micro_batches,
                    }),
                });
                if st.skipped {
                    emit(FaultEvent::EccDetected {
                        rank,
                        step,
                        epoch,
                        local: st.ecc.is_some(),
                    });
                }
                if let Some((t, _)) = interrupted_at.take() {
                    emit(Recovered {
                        rank,
                        epoch,
                        world,
                        step,
                        detected_unix_s,
                        since_interrupt_s: t.elapsed().as_secs_f64(),
                        since_detect_s: detected_unix_s.map(|d| unix_s() - d),
                    });
                }
                if rank == 0 && cfg.checkpoint_every > 0 && trainer.step % cfg.checkpoint_every == 0
                {
                    let wait_s = writer.submit(trainer.snapshot(world, writer.buffers()));
                    if wait_s > 0.001 {
                        tracing::info!(wait_s, "checkpoint queue was full; training waited");
                    }
                }
            }
            Err(StepError::Comm(e)) => {
                emit(FaultEvent::PeerLost {
                    rank,
                    epoch,
                    step: Some(trainer.step),
                    error: e.to_string(),
                });
                return Ok(Ok(EpochEnd::Interrupted));
            }
            Err(StepError::PipelineStopped) => return Ok(Ok(EpochEnd::Interrupted)),
            Err(StepError::Device(e)) => {
                let code = match e {
                    DeviceError::Lost => exit::GPU_LOST,
                    DeviceError::Oom { .. } => exit::GPU_OOM,
                };
                emit(Exit {
                    rank: Some(rank),
                    code,
                    reason: e.to_string(),
                    step: Some(trainer.step),
                });
                return Ok(Err(code));
            }
            Err(StepError::Workload(e)) => return Err(e.into()),
        }
    }
    // Everyone finished the last step: make sure no peer is still in it before leaving.
    if ring.barrier().is_err() {
        return Ok(Ok(EpochEnd::Interrupted));
    }
    Ok(Ok(EpochEnd::Done))
}

/// Single-process training of a user's TorchScript model (`--model torchscript`, feature
/// `tch`): see [`run_torchscript`].
#[derive(Debug, Clone)]
pub struct TorchScriptConfig {
    /// The model, saved with `torch.jit.save`: a classifier from `[batch, input_dim]` floats
    /// to `[batch, classes]` logits.
    pub path: PathBuf,
    /// The trained model is saved to `final/model.pt` here.
    pub run_dir: PathBuf,
    /// Must be 1 (see [`TORCHSCRIPT_SINGLE_PROCESS`]).
    pub world_size: usize,
    pub input_dim: usize,
    pub classes: usize,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    /// Train on CUDA device 0 (libtorch must see one).
    pub cuda: bool,
}

impl TorchScriptConfig {
    /// Why this configuration cannot run in this build (`None` when it can).
    pub fn unsupported_reason(&self) -> Option<&'static str> {
        if !cfg!(feature = "tch") {
            Some(TCH_FEATURE_MISSING)
        } else if self.world_size != 1 {
            Some(TORCHSCRIPT_SINGLE_PROCESS)
        } else {
            None
        }
    }
}

/// Trains a TorchScript model in one process (world size 1, no rendezvous, control endpoint
/// or checkpoints) on synthetic data (Gaussian inputs labelled by a fixed random linear
/// teacher), prints `start`, `step`, `publish` and `exit` events and returns the exit code.
pub fn run_torchscript(cfg: &TorchScriptConfig) -> i32 {
    let result = match cfg.unsupported_reason() {
        Some(reason) => Err(anyhow::anyhow!("{reason}")),
        None => torchscript_inner(cfg),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            emit(Exit {
                rank: Some(0),
                code: exit::ERROR,
                reason: format!("{e:#}"),
                step: None,
            });
            exit::ERROR
        }
    }
}

#[cfg(not(feature = "tch"))]
fn torchscript_inner(_cfg: &TorchScriptConfig) -> anyhow::Result<i32> {
    anyhow::bail!("{TCH_FEATURE_MISSING}")
}

#[cfg(feature = "tch")]
fn torchscript_inner(cfg: &TorchScriptConfig) -> anyhow::Result<i32> {
    use crate::comm::Solo;
    use crate::tch_backend::{device, TorchScriptTrainer};
    use anyhow::Context;
    use tch::{Kind, Tensor};
    tch::manual_seed(cfg.seed as i64);
    let dev = device(cfg.cuda)?;
    let mut trainer = TorchScriptTrainer::load(&cfg.path, cfg.lr, dev)?;
    emit(Start {
        rank: Some(0),
        pid: std::process::id(),
        control: None,
        data_addr: None,
        threads: None,
        cpus: None,
        model: "torchscript".into(),
        params: None,
        path: Some(cfg.path.display().to_string()),
        device: Some(format!("{dev:?}")),
        seed: cfg.seed,
        steps: cfg.steps,
        batch_per_worker: cfg.batch,
    });
    let (batch, input, classes) = (cfg.batch as i64, cfg.input_dim as i64, cfg.classes as i64);
    let teacher = Tensor::randn([input, classes], (Kind::Float, dev));
    let mut comm = Solo;
    for step in 0..cfg.steps {
        let started = Instant::now();
        let x = Tensor::randn([batch, input], (Kind::Float, dev));
        let y = x.matmul(&teacher).argmax(-1, false);
        let loss = trainer
            .step(&mut comm, &x, &y)
            .with_context(|| format!("step {step} of {}", cfg.path.display()))?;
        emit(Step {
            rank: 0,
            step,
            epoch: 0,
            world: 1,
            loss: Some(f64::from(loss)).filter(|l: &f64| l.is_finite()),
            samples: cfg.batch as u64,
            step_s: started.elapsed().as_secs_f64(),
            detail: None,
        });
    }
    let dir = cfg.run_dir.join("final");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("model.pt");
    trainer
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    emit(Publish {
        rank: 0,
        step: cfg.steps,
        path: path.display().to_string(),
        server_model: None,
    });
    emit(Exit {
        rank: Some(0),
        code: exit::DONE,
        reason: "done".into(),
        step: Some(cfg.steps),
    });
    Ok(exit::DONE)
}

/// Why the gradient communicator of an epoch could not be set up.
enum GradCommError {
    /// The backend cannot run here (no CUDA driver, NCCL or device): exit.
    Unavailable(String),
    /// The bootstrap over the TCP ring lost a peer: re-rendezvous.
    PeerLost(String),
}

/// The gradient communicator of an epoch (`None`: the TCP ring itself), the transport's
/// name, and why `auto` fell back to TCP.
type GradComm = (Option<Box<dyn Communicator>>, Transport, Option<String>);

/// Sets up the gradient communicator of an epoch over `ring`. Every rank calls it right
/// after the ring forms; `key` names the epoch's shared-memory segment.
fn grad_comm(
    backend: CommBackend,
    ring: &mut TcpRing,
    key: &str,
) -> Result<GradComm, GradCommError> {
    match backend {
        CommBackend::Tcp => Ok((None, Transport::Tcp, None)),
        CommBackend::Nccl { device } => {
            nccl_comm(device, ring).map(|c| (Some(c), Transport::Nccl, None))
        }
        CommBackend::Auto | CommBackend::Shm if ring.world() == 1 => {
            Ok((None, Transport::Solo, None))
        }
        CommBackend::Auto | CommBackend::Shm => match ShmComm::connect(ring, key) {
            Ok(Ok(c)) => Ok((Some(Box::new(c)), Transport::Shm, None)),
            Ok(Err(reason)) if backend == CommBackend::Auto => {
                Ok((None, Transport::Tcp, Some(reason)))
            }
            Ok(Err(reason)) => Err(GradCommError::Unavailable(format!(
                "--comm shm: {reason}; use --comm tcp (or auto) when ranks do not share a host"
            ))),
            Err(e) => Err(GradCommError::PeerLost(format!(
                "setting up shared memory over the TCP ring: {e}"
            ))),
        },
    }
}

/// The NCCL communicator of an epoch, bootstrapped over `ring`.
#[cfg(feature = "cuda")]
fn nccl_comm(
    device: Option<usize>,
    ring: &mut TcpRing,
) -> Result<Box<dyn Communicator>, GradCommError> {
    use crate::nccl::{CudaError, NcclComm};
    let ordinal = device.unwrap_or(ring.rank());
    match NcclComm::new(ring, ordinal) {
        Ok(c) => Ok(Box::new(c)),
        Err(e @ CudaError::Unavailable(_)) => Err(GradCommError::Unavailable(format!(
            "--comm nccl on CUDA device {ordinal}: {e}"
        ))),
        Err(CudaError::Bootstrap(e)) => Err(GradCommError::PeerLost(format!(
            "bootstrapping NCCL over the TCP ring: {e}"
        ))),
    }
}

/// Without the `cuda` feature there is no NCCL (`run_inner` rejects `Nccl` first).
#[cfg(not(feature = "cuda"))]
fn nccl_comm(
    _device: Option<usize>,
    _ring: &mut TcpRing,
) -> Result<Box<dyn Communicator>, GradCommError> {
    Err(GradCommError::Unavailable(NCCL_FEATURE_MISSING.to_string()))
}

/// Writes the final weights atomically where the inference server can load them.
fn publish(cfg: &WorkerConfig, trainer: &Trainer, rank: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = cfg.final_weights();
    let dir = path.parent().unwrap_or(&cfg.run_dir).to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
    trainer
        .workload
        .save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
    emit(Publish {
        rank,
        step: trainer.step,
        path: path.display().to_string(),
        server_model: Some(format!(
            "trained={}:{}",
            cfg.spec.server_kind(),
            path.display()
        )),
    });
    Ok(())
}

/// The loss as the `step` event carries it: `None` when it is not finite.
fn finite(loss: f32) -> Option<f64> {
    Some(f64::from(loss)).filter(|l| l.is_finite())
}

/// A step number (or none) as five f32 values that survive a broadcast exactly.
fn encode_step(step: Option<u64>) -> [f32; 5] {
    match step {
        None => [0.0; 5],
        Some(s) => [
            1.0,
            (s & 0xFFFF) as f32,
            ((s >> 16) & 0xFFFF) as f32,
            ((s >> 32) & 0xFFFF) as f32,
            (s >> 48) as f32,
        ],
    }
}

fn decode_step(code: &[f32; 5]) -> Option<u64> {
    (code[0] == 1.0).then(|| {
        code[1] as u64 | (code[2] as u64) << 16 | (code[3] as u64) << 32 | (code[4] as u64) << 48
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_numbers_survive_the_f32_encoding() {
        for s in [None, Some(0), Some(1), Some(65_537), Some(u64::MAX)] {
            assert_eq!(decode_step(&encode_step(s)), s);
        }
    }
}
