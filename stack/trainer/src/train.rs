//! One data-parallel training step, and the state it advances ([`Trainer`]).
//!
//! A step: forward and backward on this rank's batch (candle; the device layer may throttle
//! it or refuse it for memory), a tiny all-reduce of `[loss, non-finite flag]` that also
//! measures how long this rank waited for the slowest one, then the gradients in buckets
//! through the communicator, then AdamW on the averaged gradient.
//!
//! **What overlaps.** candle's `backward` returns every gradient at once, so nothing can
//! overlap the backward pass itself. The bucket pipeline overlaps the ring all-reduce of
//! bucket *i* (on a communication thread) with the extraction of bucket *i + 1* from the
//! gradient store, its `gpu.ecc` hook and its finite check (on the training thread). The
//! optimiser runs after the last bucket returns, because a non-finite gradient on any rank
//! (flagged in each bucket's extra last value) skips the whole step on every rank.

use crate::comm::{CommError, Communicator};
use crate::device::{DeviceError, EccMode, SimDevice};
use crate::optim::{AdamW, AdamWConfig};
use crate::workload::{mix_seed, Workload, WorkloadError};
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Step settings that do not change during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// Samples per worker per step (weak scaling: fixed as workers come and go).
    pub batch_per_worker: usize,
    /// Gradient values per all-reduce bucket.
    pub bucket_values: usize,
    pub seed: u64,
}

/// What one step measured. Durations in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// Mean loss over all ranks.
    pub loss: f32,
    /// Samples processed over all ranks.
    pub samples: u64,
    /// Batch generation.
    pub data_s: f64,
    /// Forward + backward (including throttle sleep).
    pub compute_s: f64,
    /// Throttle sleep included in `compute_s`.
    pub throttle_s: f64,
    /// Waiting for the slowest rank (the `[loss, flag]` all-reduce).
    pub wait_s: f64,
    /// Gradient all-reduce time not overlapped with other work.
    pub comm_s: f64,
    /// Gradient bytes handed to the communicator (f32 values plus one flag per bucket).
    pub comm_bytes: u64,
    /// Optimiser and parameter write-back.
    pub update_s: f64,
    /// The step was skipped because some rank's gradient was not finite.
    pub skipped: bool,
    /// This rank's gradient was corrupted by `gpu.ecc` this step.
    pub ecc: Option<EccMode>,
    /// Micro-batches the batch was split into (> 1 after `gpu.oom` back-off).
    pub micro_batches: usize,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("the communication thread stopped before every gradient bucket was reduced")]
    PipelineStopped,
}

impl From<candle_core::Error> for StepError {
    fn from(e: candle_core::Error) -> Self {
        StepError::Workload(WorkloadError::Candle(e))
    }
}

/// Model, optimiser and position of one worker.
#[derive(Debug)]
pub struct Trainer {
    pub workload: Workload,
    pub opt: AdamW,
    /// Flat parameters (the master copy; written back into the model after each update).
    pub params: Vec<f32>,
    /// Steps completed.
    pub step: u64,
    pub samples_seen: u64,
    pub config: StepConfig,
    pub device: Arc<SimDevice>,
    /// Micro-batch rows (the batch, or less after OOM back-off).
    micro_rows: usize,
}

enum Grads<'a> {
    Store(&'a crate::workload::Gradients),
    Flat(&'a [f32]),
}

impl Trainer {
    pub fn new(
        workload: Workload,
        opt: AdamWConfig,
        config: StepConfig,
        device: Arc<SimDevice>,
    ) -> Result<Self, WorkloadError> {
        let params = workload.read_params()?;
        Ok(Self {
            opt: AdamW::new(opt, params.len()),
            params,
            workload,
            step: 0,
            samples_seen: 0,
            micro_rows: config.batch_per_worker,
            config,
            device,
        })
    }

    /// Resets to the seeded initial state (no checkpoint to restore).
    pub fn reset(&mut self) -> Result<(), WorkloadError> {
        let fresh = Workload::new(self.workload.spec().clone(), self.config.seed, None)?;
        self.params = fresh.read_params()?;
        self.workload.write_params(&self.params)?;
        self.opt = AdamW::new(self.opt.config, self.params.len());
        self.step = 0;
        self.samples_seen = 0;
        Ok(())
    }

    /// Loads a verified checkpoint.
    pub fn restore(&mut self, r: crate::checkpoint::Restored) -> Result<(), WorkloadError> {
        self.params = r.params;
        self.opt.m = r.m;
        self.opt.v = r.v;
        self.opt.t = r.manifest.optimizer_t;
        self.step = r.manifest.step;
        self.samples_seen = r.manifest.data.samples_seen;
        self.workload.write_params(&self.params)
    }

    /// The state to checkpoint now, copied into `buffers` (those earlier writes handed back,
    /// [`crate::checkpoint::AsyncWriter::buffers`]); records how long that took in
    /// `snapshot_s`.
    pub fn snapshot(
        &self,
        world: usize,
        buffers: &crate::checkpoint::SnapshotBuffers,
    ) -> crate::checkpoint::Snapshot {
        let started = std::time::Instant::now();
        let mut s = crate::checkpoint::Snapshot {
            step: self.step,
            world,
            seed: self.config.seed,
            spec: self.workload.spec().clone(),
            layout: self
                .workload
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect(),
            params: buffers.copy(&self.params),
            m: buffers.copy(&self.opt.m),
            v: buffers.copy(&self.opt.v),
            optimizer: self.opt.config,
            optimizer_t: self.opt.t,
            samples_seen: self.samples_seen,
            snapshot_s: 0.0,
        };
        s.snapshot_s = started.elapsed().as_secs_f64();
        s
    }

    /// Runs step `self.step` over `comm` and advances it.
    pub fn step(&mut self, comm: &mut dyn Communicator) -> Result<StepStats, StepError> {
        let (rank, world) = (comm.rank(), comm.world());
        let rows = self.config.batch_per_worker;
        let mut stats = StepStats::default();
        self.device.check_alive()?;

        // Memory check, with back-off into micro-batches when the fault allows it.
        self.micro_rows = self.micro_rows.clamp(1, rows);
        loop {
            match self
                .device
                .check_alloc(self.workload.step_bytes(self.micro_rows))
            {
                Ok(()) => break,
                Err(DeviceError::Oom { backoff: true, .. }) if self.micro_rows > 1 => {
                    self.micro_rows = self.micro_rows.div_ceil(2);
                    tracing::warn!(
                        micro_rows = self.micro_rows,
                        "gpu.oom: backing off to smaller micro-batches"
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }

        let t0 = Instant::now();
        let batch = self.workload.batch(self.step, rank, rows)?;
        stats.data_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let micro: Vec<(usize, usize)> = (0..rows)
            .step_by(self.micro_rows)
            .map(|s| (s, self.micro_rows.min(rows - s)))
            .collect();
        stats.micro_batches = micro.len();
        let mut local_loss = 0.0f32;
        let mut store = None;
        let mut accumulated = Vec::new();
        for (i, &(start, n)) in micro.iter().enumerate() {
            self.device.check_alive()?;
            let part = if micro.len() == 1 {
                batch.clone()
            } else {
                crate::workload::Batch {
                    x: batch.x.narrow(0, start, n)?,
                    y: match self.workload.spec() {
                        crate::workload::ModelSpec::Mlp { .. } => batch.y.narrow(0, start, n)?,
                        crate::workload::ModelSpec::Lm { seq_len, .. } => {
                            batch.y.narrow(0, start * seq_len, n * seq_len)?
                        }
                    },
                    rows: n,
                }
            };
            let (loss, grads) = self.workload.loss_and_grads(&part)?;
            let w = n as f32 / rows as f32;
            local_loss += loss.to_scalar::<f32>()? * w;
            if micro.len() == 1 {
                store = Some(grads);
            } else {
                if i == 0 {
                    accumulated = vec![0.0; self.params.len()];
                }
                self.workload.flatten_grads(
                    &grads,
                    0..self.params.len(),
                    &mut accumulated,
                    w,
                    true,
                )?;
            }
        }
        let compute = t1.elapsed();
        stats.throttle_s = self.device.throttle(compute).as_secs_f64();
        stats.compute_s = t1.elapsed().as_secs_f64();
        self.device.check_alive()?;

        // Wait for the slowest rank; agree on the mean loss.
        let t2 = Instant::now();
        let mut head = [local_loss, 0.0];
        comm.all_reduce_sum(&mut head)?;
        stats.wait_s = t2.elapsed().as_secs_f64();
        stats.loss = head[0] / world as f32;

        let grads = match &store {
            Some(s) => Grads::Store(s),
            None => Grads::Flat(&accumulated),
        };
        let t3 = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix_seed(
            self.config.seed ^ 0xECC,
            self.step,
            rank as u64,
        ));
        let (reduced, flagged, ecc) = self.all_reduce_buckets(comm, &grads, &mut rng)?;
        stats.comm_s = t3.elapsed().as_secs_f64();
        stats.comm_bytes = reduced
            .iter()
            .map(|(_, b)| std::mem::size_of_val(b.as_slice()) as u64)
            .sum();
        stats.ecc = ecc;
        if ecc.is_some() && flagged > 0.0 {
            self.device
                .counters
                .ecc_detected_total
                .fetch_add(1, Ordering::Relaxed);
        }

        let t4 = Instant::now();
        if flagged > 0.0 {
            stats.skipped = true;
        } else {
            let scale = 1.0 / world as f32;
            self.opt.begin();
            for (offset, bucket) in reduced {
                let len = bucket.len() - 1;
                self.opt.apply(
                    offset,
                    &mut self.params[offset..offset + len],
                    &bucket[..len],
                    scale,
                );
            }
            self.workload.write_params(&self.params)?;
        }
        stats.update_s = t4.elapsed().as_secs_f64();
        stats.samples = (rows * world) as u64;
        self.samples_seen += stats.samples;
        self.step += 1;
        Ok(stats)
    }

    /// The bucket pipeline: returns the summed buckets (each with its flag as last value),
    /// the sum of all flags, and the ECC corruption applied here, if any.
    #[allow(clippy::type_complexity)]
    fn all_reduce_buckets(
        &self,
        comm: &mut dyn Communicator,
        grads: &Grads<'_>,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(Vec<(usize, Vec<f32>)>, f32, Option<EccMode>), StepError> {
        let n = self.params.len();
        let size = self.config.bucket_values.max(1);
        let starts: Vec<usize> = (0..n.max(1)).step_by(size).collect();
        let ecc_bucket = rand::Rng::gen_range(rng, 0..starts.len());
        let mut ecc = None;
        let (to_comm, comm_in) = mpsc::channel::<(usize, Vec<f32>)>();
        let (comm_out, from_comm) = mpsc::channel::<Result<(usize, Vec<f32>), CommError>>();
        std::thread::scope(|s| -> Result<_, StepError> {
            s.spawn(move || {
                for (offset, mut buf) in comm_in {
                    let r = comm.all_reduce_sum(&mut buf).map(|()| (offset, buf));
                    let failed = r.is_err();
                    let _ = comm_out.send(r);
                    if failed {
                        break;
                    }
                }
            });
            for (i, &start) in starts.iter().enumerate() {
                let end = (start + size).min(n);
                let mut buf = vec![0.0f32; end - start + 1];
                let body = end - start;
                match grads {
                    Grads::Store(g) => {
                        self.workload
                            .flatten_grads(g, start..end, &mut buf[..body], 1.0, false)?
                    }
                    Grads::Flat(f) => buf[..body].copy_from_slice(&f[start..end]),
                }
                if i == ecc_bucket {
                    ecc = self.device.corrupt(&mut buf[..body], rng);
                }
                if buf[..body].iter().any(|v| !v.is_finite()) {
                    buf[..body].fill(0.0);
                    buf[body] = 1.0;
                }
                if to_comm.send((start, buf)).is_err() {
                    break; // the communication thread stopped on an error; collect it below
                }
            }
            drop(to_comm);
            let mut out = Vec::with_capacity(starts.len());
            let mut flags = 0.0;
            for r in from_comm {
                let (offset, buf) = r?;
                flags += buf.last().copied().unwrap_or(0.0);
                out.push((offset, buf));
            }
            if out.len() != starts.len() {
                return Err(StepError::PipelineStopped);
            }
            Ok((out, flags, ecc))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::{loopback_ring, Solo};
    use crate::workload::ModelSpec;
    use models::mlp::MlpConfig;

    pub(crate) fn small_spec() -> ModelSpec {
        ModelSpec::Mlp {
            config: MlpConfig {
                input_dim: 16,
                hidden: vec![32],
                num_classes: 4,
            },
            teacher_hidden: 16,
        }
    }

    pub(crate) fn trainer(spec: ModelSpec, bucket_values: usize) -> Trainer {
        Trainer::new(
            Workload::new(spec, 11, None).expect("workload"),
            AdamWConfig {
                lr: 1e-2,
                ..AdamWConfig::default()
            },
            StepConfig {
                batch_per_worker: 32,
                bucket_values,
                seed: 11,
            },
            Arc::new(SimDevice::default()),
        )
        .expect("trainer")
    }

    fn mean(v: &[f32]) -> f32 {
        v.iter().sum::<f32>() / v.len() as f32
    }

    #[test]
    fn mlp_loss_falls_by_at_least_half_in_150_steps() {
        let mut t = trainer(small_spec(), 100);
        let losses: Vec<f32> = (0..150)
            .map(|_| t.step(&mut Solo).expect("step").loss)
            .collect();
        let (first, last) = (mean(&losses[..10]), mean(&losses[140..]));
        eprintln!("teacher MLP loss {first:.3} -> {last:.3}");
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }

    #[test]
    fn byte_lm_loss_on_the_bundled_text_falls_below_3_nats_from_ln_256() {
        let spec = ModelSpec::Lm {
            config: models::lm::LmConfig {
                embed_dim: 16,
                hidden_dim: 64,
            },
            seq_len: 16,
        };
        let mut t = trainer(spec, 1 << 20);
        let losses: Vec<f32> = (0..60)
            .map(|_| t.step(&mut Solo).expect("step").loss)
            .collect();
        let (first, last) = (mean(&losses[..3]), mean(&losses[55..]));
        eprintln!("byte LM loss {first:.3} -> {last:.3}");
        assert!(first > 5.0, "starts near ln 256 = 5.55: {first}");
        assert!(last < 3.0, "loss {first} -> {last}");
    }

    #[test]
    fn two_ranks_stay_bitwise_identical_and_a_nan_on_one_skips_the_step_everywhere() {
        let rings = loopback_ring(2, 1).expect("ring");
        let results: Vec<(Vec<u32>, Vec<bool>)> = std::thread::scope(|s| {
            let hs: Vec<_> = rings
                .into_iter()
                .map(|mut ring| {
                    s.spawn(move || {
                        let mut t = trainer(small_spec(), 97);
                        let mut skipped = Vec::new();
                        for step in 0..6 {
                            if step == 3 && ring.rank() == 1 {
                                t.device.inject(&crate::device::FaultRequest::Ecc {
                                    mode: EccMode::Nan,
                                    steps: 1,
                                });
                            }
                            skipped.push(t.step(&mut ring).expect("step").skipped);
                        }
                        (t.params.iter().map(|v| v.to_bits()).collect(), skipped)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        });
        assert_eq!(results[0].0, results[1].0, "replicas diverged");
        for (_, skipped) in &results {
            assert_eq!(skipped, &[false, false, false, true, false, false]);
        }
    }

    #[test]
    fn oom_back_off_splits_the_batch_and_oom_without_it_is_a_clear_error() {
        let mut t = trainer(small_spec(), 1000);
        let full = t.workload.step_bytes(32);
        t.device.inject(&crate::device::FaultRequest::Oom {
            limit_bytes: full - 1,
            backoff: true,
        });
        let s = t.step(&mut Solo).expect("backs off");
        assert!(s.micro_batches >= 2);
        t.device.inject(&crate::device::FaultRequest::Oom {
            limit_bytes: 1,
            backoff: false,
        });
        assert!(matches!(
            t.step(&mut Solo),
            Err(StepError::Device(DeviceError::Oom { .. }))
        ));
    }
}
