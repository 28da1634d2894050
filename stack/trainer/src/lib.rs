//! Data-parallel trainer of the reference stack: candle on the CPU, an all-reduce over
//! shared memory (ranks on one host) or a TCP ring, asynchronous checksummed checkpoints, elastic recovery through a rendezvous with
//! heartbeats, and a simulated GPU fault layer driven over HTTP.
//!
//! # Processes and command line
//!
//! ```text
//! trainer rendezvous --listen 127.0.0.1:29500 --max-workers N [--min-workers M]
//!                    [--replace-timeout-s 2] [--heartbeat-timeout-s 1] [--exit-when-done]
//! trainer worker --run-dir DIR [--rank R] [--world-size N] [--rendezvous HOST:PORT]
//!                [--control 127.0.0.1:PORT] [--model mlp|lm|torchscript] [--torchscript PATH]
//!                [--comm auto|tcp|shm|nccl] [--cuda-device D] [--steps 100] [--batch 64]
//!                [--checkpoint-every 20] [--keep 3] [--seed 0] [--threads T] …
//! trainer launch --nproc N [--min-workers M] [--control-base-port P] -- <worker flags>
//! ```
//!
//! Seconds flags are checked when parsed (exit 2 naming the flag and the range):
//! `--startup-timeout-s` and `--replace-timeout-s` take 0..=3600, `--heartbeat-timeout-s`
//! takes (0, 3600]. `launch` sets `TRAINER_PARENT_PID` (its pid) on the rendezvous and
//! each worker; a `trainer` started with it is SIGKILLed when that parent dies
//! (`PR_SET_PDEATHSIG`) and exits 1 at once if it has died already, so a SIGKILLed
//! launcher leaves nothing running ([`launch::die_with_launcher`]). The rendezvous's JSON
//! lines are at most 64 KiB each way ([`rendezvous::MAX_LINE_BYTES`]); a peer that sends a
//! longer one is dropped with an error logged.
//!
//! Worker flags fall back to torchrun's environment: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT` (the rendezvous is `MASTER_ADDR:MASTER_PORT` unless `--rendezvous` or
//! `TRAINER_RENDEZVOUS` is given), and ours: `TRAINER_CONTROL`, `TRAINER_RUN_DIR`,
//! `TRAINER_THREADS`, `TRAINER_CPUS`, `TRAINER_DATA_ADDR`, `TRAINER_SHM_DIR`. `RANK` is a
//! preference: the rendezvous assigns ranks per membership epoch in `RANK` order. `launch`
//! gives each of its N workers `RAYON_NUM_THREADS = TRAINER_THREADS = max(1, cores / N)`
//! and, when the workers fit the machine, pins worker r to its own cores (`TRAINER_CPUS`;
//! `--no-pin` to disable): unpinned lock-step workers on a 2-core machine lost ~15 % to
//! waiting for each other. Threads and cores are printed in the `launch` event and each
//! worker's `start` event, and threads in `/status`. Every worker of a job must share the
//! run directory (checkpoints are written by rank 0 and read by all).
//!
//! # Backends (`--comm`, `--model torchscript`)
//!
//! * `--comm auto` (default; env `TRAINER_COMM`): after each ring formation the ranks try
//!   to map one shared-memory segment ([`shm_comm`]: created by rank 0 in `/dev/shm`, or
//!   in `TRAINER_SHM_DIR` when set, and unlinked once every rank has mapped it); when all
//!   can (one host, one `/dev/shm`), gradients go through it, otherwise every rank falls
//!   back to the TCP ring. Each worker
//!   prints a `comm` event per epoch with the `transport` (`shm`, `tcp`, `none` for a world
//!   of one) and the `fallback` reason. Aborts reach a rank waiting in shared memory through
//!   the ring's abort flag (polled every 20 ms) and the dead peer's pid.
//! * `--comm tcp`: the TCP ring even on one host (like `NCCL_SHM_DISABLE=1`).
//! * `--comm shm`: shared memory or nothing: a worker that cannot map the segment exits 1
//!   with "--comm shm: …; use --comm tcp (or auto) when ranks do not share a host".
//! * `--comm nccl`: needs a build with `--features cuda`; without it the worker exits 2
//!   before starting, printing "--comm nccl needs a trainer built with `--features cuda`
//!   (cargo build -p trainer --features cuda)". With it, after each ring formation every rank
//!   bootstraps an `NcclComm` over the TCP ring on CUDA device `--cuda-device`
//!   (env `TRAINER_CUDA_DEVICE`; default: its rank in the epoch, i.e. one GPU per rank on one
//!   host) and uses it for the gradient all-reduce only; the restore agreement, the final
//!   barrier and aborts stay on the TCP ring. Training itself is still candle on the CPU
//!   (gradients are copied to the device and back). When CUDA or NCCL cannot be loaded the
//!   worker prints an `exit` event with code 1 and a reason starting
//!   "--comm nccl on CUDA device D: CUDA/NCCL unavailable: …" (cudarc's loader panic is caught;
//!   the default panic hook still prints it on stderr). A peer lost during the bootstrap is a
//!   `peer_lost` fault and a re-rendezvous, as on the TCP path. Limitation: an NCCL collective
//!   in flight is not aborted by the rendezvous, so a peer lost mid-all-reduce waits for NCCL.
//! * `--model torchscript --torchscript PATH`: needs a build with `--features tch` (and
//!   libtorch); without it the worker exits 2 printing "--model torchscript needs a trainer
//!   built with `--features tch` and libtorch (…)". With it, training is single-process
//!   only: `--world-size` above 1 exits 2 ("… trains single-process only (world size 1) …").
//!   The model maps `[batch, --mlp-input]` floats to `[batch, --mlp-classes]` logits; it is
//!   trained with Adam (`--lr`) on Gaussian inputs labelled by a fixed random linear teacher,
//!   on the CPU (CUDA device 0 when `--cuda-device` is given), with no rendezvous, control
//!   endpoint or checkpoints, printing `start`, `step` (`loss`, `samples`, `step_s`),
//!   `publish` (`run_dir/final/model.pt`) and `exit`.
//!
//! # Control endpoint (per worker, see [`control`])
//!
//! `GET /healthz`, `GET /readyz` (200 once in a formed ring), `GET /status` (JSON: `rank`,
//! `world`, `step`, `epoch`, `last_checkpoint_step`, `threads`, counters `steps_total`,
//! `steps_skipped_total`, `restores_total`, `lost_steps_total`, `checkpoints_written_total`,
//! `checkpoints_failed_total`, `ecc_injected_total`, `ecc_detected_total`,
//! `ecc_silent_total`, `oom_total`, `throttle_s_total`, `faults_active`), `POST /faults` with `{"kind":"gpu.lost"}`,
//! `{"kind":"gpu.ecc","mode":"nan"|"inf"|"bitflip","steps":1}`,
//! `{"kind":"gpu.throttle","factor":3.0}` or
//! `{"kind":"gpu.oom","limit_bytes":N,"backoff":true}` (bounds, answered 400 naming the
//! field when broken: `steps` 1..=100000000, `factor` finite in 1..=1000, `limit_bytes` ≥ 1;
//! see [`device::check`]), `DELETE /faults`,
//! `DELETE /faults/{kind}`, `GET /metrics` (Prometheus: `faultline_trainer_*` names, text
//! 0.0.4 unless `Accept` prefers OpenMetrics; see [`metrics`] and `docs/trainer.md`).
//! The bodies are `wire::trainer`'s types, shared with the harness: `Status` (`/status`),
//! `FaultRequest` (`POST /faults`), `ActiveFaults` (the answer to `POST`/`DELETE /faults`).
//!
//! # Events (JSON lines on stdout; every line has `event` and `t_unix_s`)
//!
//! Every line is a `wire::trainer::EventLine` (one `Event` variant per row below), the type
//! the harness parses, so the two cannot drift apart; [`events::emit`] writes one.
//!
//! | event | fields |
//! |---|---|
//! | `start` | `rank` (hint), `pid`, `control`, `data_addr`, `threads`, `model`, `params`, `seed`, `steps`, `batch_per_worker` |
//! | `rendezvous` | worker: `rank`, `world`, `epoch`, `detected_unix_s` (coordinator's detection of the failure that ended the last epoch), `rendezvous_s` (interruption noticed → new ring formed). Coordinator: `epoch`, `world`, `pids` |
//! | `restore` | `rank`, `epoch`, `step` (restored), `from_step`, `lost_steps`, `source` (checkpoint path or `"seed"`), `fell_back`, `skipped` (`step`, `path`, `reason` of each damaged checkpoint passed over), `restore_s` |
//! | `step` | `rank`, `step`, `epoch`, `world`, `loss` (mean over ranks), `samples` (all ranks), `compute_s`, `comm_s` (gradient all-reduce not overlapped), `wait_s` (waiting for the slowest rank), `data_s`, `update_s`, `throttle_s`, `step_s`, `skipped`, `ecc`, `micro_batches` |
//! | `recovered` | first completed step after an interruption: `rank`, `epoch`, `world`, `step`, `detected_unix_s`, `since_interrupt_s`, `since_detect_s` |
//! | `comm` | per epoch: `rank`, `epoch`, `world`, `transport` (`shm`, `tcp`, `nccl`, `none`), `fallback` (why `auto` chose `tcp`, else null) |
//! | `checkpoint` | rank 0, when a write completes: `step`, `path`, `bytes`, `write_s` (wall time of the write), `cpu_s` (the writer thread's CPU time), `snapshot_s` (the training thread's copy of the state), `pruned`; or `error` |
//! | `fault` | worker: `kind` `peer_lost` / `ring_connect` (with `error`), `gpu.*` with `action` `injected`/`healed`/`detected`. Coordinator: `kind` `worker_lost`, `worker`, `rank`, `reason` (`connection closed` / `heartbeat timeout`), `detected_unix_s` |
//! | `publish` | rank 0 at the end: `path` of the final weights, `server_model` (`NAME=KIND:PATH` for `server --model`) |
//! | `exit` | `rank`, `code` (see [`exit`]), `reason`, `step` |
//! | `launch`, `rendezvous_join`, `job_done`, `shutdown` | launcher and coordinator bookkeeping |
//!
//! Recovery splits for the harness: fault instant (harness) → coordinator `fault`
//! (`detected_unix_s`: detection) → worker `rendezvous` (re-rendezvous) → `restore`
//! (`restore_s`) → `recovered` (catch-up ends at the first full step); lost work is
//! `restore.lost_steps`.
//!
//! # Exit codes
//!
//! See [`exit`]: 0 done, 1 error (including "CUDA/NCCL unavailable" under `--comm nccl`),
//! 2 usage (including a backend this build lacks: `--comm nccl` without `cuda`,
//! `--model torchscript` without `tch` or with world size > 1), 3 `gpu.lost`, 4 `gpu.oom`
//! without back-off, 5 rendezvous lost / evicted / job shut down, 130 launch interrupted.
//!
//! # Modules
//!
//! * [`ring`] — the ring all-reduce schedule (pure); [`comm`] — `Communicator`, `TcpRing`;
//!   [`shm_comm`] — `ShmComm`, the same-host shared-memory all-reduce (its unsafe code is
//!   in the `shm` crate).
//! * [`rendezvous`] — coordinator state machine (pure), its TCP server, the worker client.
//! * [`workload`] — models from `models`, synthetic teacher data and the bundled text.
//! * [`optim`] — AdamW on flat vectors; [`train`] — one step and the bucket pipeline.
//! * [`checkpoint`] — atomic checkpoints with CRC-32C checksums (manifest format 2; format-1
//!   SHA-256 manifests still restore), an async writer at nice 19 on any core, verified
//!   restore;
//!   [`failpoint`] — named crash points.
//! * [`device`] — the simulated GPU and its fault hooks; [`control`] — the HTTP endpoint;
//!   [`metrics`] — its one Prometheus registry (`Accept` negotiation and
//!   OpenMetrics → text 0.0.4 are the `promtext` crate's, shared with the server).
//! * [`worker`] — the worker process loop; [`launch`] — the local launcher.
//!
//! * [`nccl`] (feature `cuda`) — `NcclComm`, the NCCL communicator (cudarc, dynamic loading).
//! * [`tch_backend`] (feature `tch`; `tch-doc-only` to type-check without libtorch) —
//!   `TorchScriptTrainer`, data-parallel training of a user's TorchScript model.
//!
//! Not here: GPU compute for candle models (the `cuda` feature adds only the NCCL
//! communicator, selected with `--comm nccl`; the worker still computes with candle on the
//! CPU), distributed TorchScript training (single-process only), multi-host shared storage
//! (the run directory must be shared), harness scenarios.

pub mod calibrate;
pub mod checkpoint;
pub mod comm;
pub mod control;
pub mod device;
pub mod events;
pub mod exit;
pub mod failpoint;
pub mod launch;
pub mod metrics;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod optim;
pub mod rendezvous;
pub mod ring;
pub mod shm_comm;
#[cfg(feature = "tch")]
pub mod tch_backend;
pub mod train;
pub mod worker;
pub mod workload;
