//! The worker's one Prometheus registry, served by `GET /metrics` on the control endpoint
//! (see [`crate::control`]; the format follows the scraper's `Accept`, [`promtext`]).
//!
//! Names are `faultline_trainer_*`: the reference server's namespace (`faultline_`) plus the
//! component, so one dashboard or recording rule can select the whole stack
//! (`{__name__=~"faultline_.*"}`) and no trainer name can collide with a server name, or
//! with another trainer's exporter that uses a bare `trainer_`. Units go last in base units
//! (`_seconds`, `_bytes`), counters end in `_total`, as on the server.
//!
//! Two kinds of source, one registry:
//! * instruments the training loop feeds as things happen: the step-time histograms, samples,
//!   loss, all-reduce time and bytes per transport, checkpoint and restore times
//!   ([`Metrics::observe_step`], [`Metrics::observe_checkpoint`], [`Metrics::observe_restore`]);
//! * a collector that reads the `/status` state and the simulated device at scrape time
//!   (step counters, restores, lost steps, epoch, world size, active GPU faults), so each of
//!   those figures is counted in one place and `/status` and `/metrics` cannot disagree.
//!
//! Not here: per-bucket all-reduce timings (a step's gradient all-reduce is one observation),
//! wire bytes (the bytes are the gradient payload handed to the communicator; a ring moves
//! about 2·(N−1)/N of it per rank each way), process metrics (CPU, memory).

use crate::device::{GpuFaultKind, SimDevice};
use crate::train::StepStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use promtext::Format;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wire::trainer::Progress;

/// `{phase}` of a step: `data`, `compute`, `wait`, `comm`, `update` (the `step` event's
/// `*_s` fields).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

/// `{transport}` of the gradient all-reduce: `shm`, `tcp` or `nccl`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

/// `{kind}` of a simulated GPU fault (`gpu.lost`, `gpu.ecc`, `gpu.throttle`, `gpu.oom`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 100 µs … ~52 s, the server's latency buckets: a tiny MLP step takes about a millisecond,
/// a checkpoint of a large model tens of seconds.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric a worker exports. Units: seconds, bytes, samples.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `faultline_trainer_step_seconds`: wall time of a completed step (the `step` event's
    /// `step_s`).
    pub step: Histogram,
    /// `faultline_trainer_step_phase_seconds{phase}`: the parts of a step; their sums add up
    /// to the step's but for microseconds of bookkeeping (`compute` includes throttle sleep).
    pub phase: HistogramFamily<PhaseLabels>,
    /// `faultline_trainer_samples_total`: samples this worker computed in completed steps
    /// (its share of the batch; skipped steps count, redone steps count again).
    pub samples: Counter,
    /// `faultline_trainer_loss`: mean loss over all ranks of the last completed step.
    pub loss: Gauge<f64, AtomicU64>,
    /// `faultline_trainer_allreduce_seconds{transport}`: a step's gradient all-reduce time not
    /// overlapped with other work (the `comm` phase, by transport).
    pub allreduce: HistogramFamily<TransportLabels>,
    /// `faultline_trainer_allreduce_bytes_total{transport}`: gradient bytes all-reduced
    /// (payload, f32 values plus one flag per bucket).
    pub allreduce_bytes: Family<TransportLabels, Counter>,
    /// `faultline_trainer_checkpoint_write_seconds`: wall time of a checkpoint write (rank 0).
    pub checkpoint_write: Histogram,
    /// `faultline_trainer_checkpoint_snapshot_seconds`: the training thread's copy of the state
    /// for a checkpoint (the only part of a write training waits for).
    pub checkpoint_snapshot: Histogram,
    /// `faultline_trainer_checkpoint_bytes_total`: bytes of checkpoints written.
    pub checkpoint_bytes: Counter,
    /// `faultline_trainer_restore_seconds`: agreeing on, verifying and loading a checkpoint
    /// (or the seed) after a re-formation.
    pub restore: Histogram,
}

impl Metrics {
    /// A registry holding the instruments and a collector over `status` and `device`.
    pub fn new(status: Arc<Mutex<Progress>>, device: Arc<SimDevice>) -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("faultline_trainer"),
            step: seconds_histogram(),
            phase: Family::new_with_constructor(seconds_histogram),
            samples: Counter::default(),
            loss: Gauge::default(),
            allreduce: Family::new_with_constructor(seconds_histogram),
            allreduce_bytes: Family::default(),
            checkpoint_write: seconds_histogram(),
            checkpoint_snapshot: seconds_histogram(),
            checkpoint_bytes: Counter::default(),
            restore: seconds_histogram(),
        };
        let registry = &mut m.registry;
        registry.register(
            "step_seconds",
            "Wall time of a completed training step, seconds",
            m.step.clone(),
        );
        registry.register(
            "step_phase_seconds",
            "Parts of a step (data, compute, wait for the slowest rank, gradient all-reduce, optimizer update), seconds",
            m.phase.clone(),
        );
        registry.register(
            "samples",
            "Samples this worker computed in completed steps",
            m.samples.clone(),
        );
        registry.register(
            "loss",
            "Mean loss over all ranks of the last completed step",
            m.loss.clone(),
        );
        registry.register(
            "allreduce_seconds",
            "Gradient all-reduce time of a step not overlapped with other work, by transport, seconds",
            m.allreduce.clone(),
        );
        registry.register(
            "allreduce_bytes",
            "Gradient bytes all-reduced (payload), by transport",
            m.allreduce_bytes.clone(),
        );
        registry.register(
            "checkpoint_write_seconds",
            "Wall time of a checkpoint write in the background writer, seconds",
            m.checkpoint_write.clone(),
        );
        registry.register(
            "checkpoint_snapshot_seconds",
            "Training-thread time copying the state for a checkpoint, seconds",
            m.checkpoint_snapshot.clone(),
        );
        registry.register(
            "checkpoint_bytes",
            "Bytes of checkpoints written",
            m.checkpoint_bytes.clone(),
        );
        registry.register(
            "restore_seconds",
            "Time to agree on, verify and load the state after a ring re-formed, seconds",
            m.restore.clone(),
        );
        registry.register_collector(Box::new(StatusCollector { status, device }));
        m
    }

    /// Records a completed step: its wall time `step_s`, its parts, this worker's `rows`, and
    /// the all-reduce over `transport` (`None`: a world of one, nothing reduced).
    pub fn observe_step(
        &self,
        st: &StepStats,
        step_s: f64,
        rows: u64,
        transport: Option<&'static str>,
    ) {
        self.step.observe(step_s);
        for (phase, s) in [
            ("data", st.data_s),
            ("compute", st.compute_s),
            ("wait", st.wait_s),
            ("comm", st.comm_s),
            ("update", st.update_s),
        ] {
            self.phase.get_or_create(&PhaseLabels { phase }).observe(s);
        }
        self.samples.inc_by(rows);
        self.loss.set(f64::from(st.loss));
        if let Some(transport) = transport {
            let labels = TransportLabels { transport };
            self.allreduce.get_or_create(&labels).observe(st.comm_s);
            self.allreduce_bytes
                .get_or_create(&labels)
                .inc_by(st.comm_bytes);
        }
    }

    /// Records a checkpoint write that completed.
    pub fn observe_checkpoint(&self, write_s: f64, snapshot_s: f64, bytes: u64) {
        self.checkpoint_write.observe(write_s);
        self.checkpoint_snapshot.observe(snapshot_s);
        self.checkpoint_bytes.inc_by(bytes);
    }

    /// Records a restore that took `restore_s`.
    pub fn observe_restore(&self, restore_s: f64) {
        self.restore.observe(restore_s);
    }

    /// Every metric, in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut om = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut om, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        match format {
            Format::OpenMetrics => om,
            Format::Text004 => promtext::to_text_004(&om),
        }
    }
}

/// Reads `/status` and the device on each scrape.
#[derive(Debug)]
struct StatusCollector {
    status: Arc<Mutex<Progress>>,
    device: Arc<SimDevice>,
}

fn counter<N>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StatusCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let c = &self.device.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, u64); 10] = [
            (
                "steps",
                "Training steps completed by this worker (redone steps count again).",
                s.steps_total,
            ),
            (
                "steps_skipped",
                "Steps skipped on every rank because a gradient was not finite.",
                s.steps_skipped_total,
            ),
            (
                "restores",
                "Restores after a ring re-formed (from a checkpoint or the seed).",
                s.restores_total,
            ),
            (
                "lost_steps",
                "Steps lost to restores (position before minus position restored).",
                s.lost_steps_total,
            ),
            (
                "checkpoints_written",
                "Checkpoints written (rank 0).",
                s.checkpoints_written_total,
            ),
            (
                "checkpoints_failed",
                "Checkpoint writes that failed (rank 0).",
                s.checkpoints_failed_total,
            ),
            (
                "gpu_ecc_injected",
                "Gradient values corrupted by gpu.ecc.",
                load(&c.ecc_injected_total),
            ),
            (
                "gpu_ecc_detected",
                "gpu.ecc corruptions caught by the finite check.",
                load(&c.ecc_detected_total),
            ),
            (
                "gpu_ecc_silent",
                "gpu.ecc bit flips that stayed finite (silent corruption).",
                load(&c.ecc_silent_total),
            ),
            (
                "gpu_oom",
                "Step allocations refused by gpu.oom.",
                load(&c.oom_total),
            ),
        ];
        for (name, help, v) in counters {
            counter(&mut e, name, help, v)?;
        }
        counter(
            &mut e,
            "gpu_throttle_seconds",
            "Sleep added to compute by gpu.throttle, seconds.",
            load(&c.throttle_us_total) as f64 / 1e6,
        )?;
        let opt = |v: Option<u64>| v.map_or(-1, |v| v as i64);
        let gauges: [(&str, &str, i64); 8] = [
            (
                "step",
                "Position of the job: steps completed, the next step to run.",
                s.step as i64,
            ),
            (
                "target_steps",
                "Steps the job runs to (--steps).",
                s.total_steps as i64,
            ),
            (
                "epoch",
                "Membership epoch of the ring this worker is in.",
                s.epoch as i64,
            ),
            ("world_size", "Workers in the current ring.", s.world as i64),
            (
                "rank",
                "This worker's rank in the current epoch (-1 before the first).",
                opt(s.rank.map(|r| r as u64)),
            ),
            (
                "ready",
                "1 while this worker is in a formed ring.",
                i64::from(s.ready),
            ),
            (
                "last_checkpoint_step",
                "Step of the newest checkpoint written (-1: none yet).",
                opt(s.last_checkpoint_step),
            ),
            (
                "threads",
                "Compute threads of this worker.",
                s.threads as i64,
            ),
        ];
        for (name, help, v) in gauges {
            gauge(&mut e, name, help, v)?;
        }
        gauge(
            &mut e,
            "gpu_throttle_factor",
            "Active gpu.throttle slow-down factor (1: none).",
            self.device.throttle_factor(),
        )?;
        let active = self.device.active_kinds();
        let mut faults = e.encode_descriptor(
            "gpu_faults_active",
            "Simulated GPU faults active now, by kind (1 active, 0 not).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for kind in GpuFaultKind::ALL {
            ConstGauge::new(i64::from(active.contains(&kind))).encode(faults.encode_family(
                &KindLabels {
                    kind: kind.as_str(),
                },
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::FaultRequest;

    fn metrics() -> (Metrics, Arc<Mutex<Progress>>, Arc<SimDevice>) {
        let status = Arc::new(Mutex::new(Progress::default()));
        let device = Arc::new(SimDevice::default());
        (Metrics::new(status.clone(), device.clone()), status, device)
    }

    #[test]
    fn status_counters_and_gauges_are_read_at_scrape_time_under_trainer_names() {
        let (m, status, device) = metrics();
        {
            let mut s = status.lock().expect("status");
            s.steps_total = 7;
            s.restores_total = 1;
            s.lost_steps_total = 3;
            s.epoch = 2;
            s.world = 3;
            s.rank = Some(1);
        }
        device.inject(&FaultRequest::Throttle { factor: 2.5 });
        let text = m.render(Format::Text004);
        for needle in [
            "# TYPE faultline_trainer_steps_total counter\n",
            "faultline_trainer_steps_total 7\n",
            "faultline_trainer_restores_total 1\n",
            "faultline_trainer_lost_steps_total 3\n",
            "faultline_trainer_epoch 2\n",
            "faultline_trainer_world_size 3\n",
            "faultline_trainer_rank 1\n",
            "faultline_trainer_last_checkpoint_step -1\n",
            "faultline_trainer_gpu_faults_active{kind=\"gpu.throttle\"} 1\n",
            "faultline_trainer_gpu_faults_active{kind=\"gpu.lost\"} 0\n",
            "faultline_trainer_gpu_throttle_factor 2.5\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(m.render(Format::OpenMetrics).ends_with("# EOF\n"));
    }

    #[test]
    fn a_step_feeds_the_histograms_samples_and_its_transport() {
        let (m, _, _) = metrics();
        let st = StepStats {
            loss: 0.5,
            compute_s: 0.002,
            comm_s: 0.001,
            comm_bytes: 4096,
            ..StepStats::default()
        };
        m.observe_step(&st, 0.004, 16, Some("shm"));
        m.observe_step(&st, 0.004, 16, None);
        m.observe_checkpoint(0.01, 0.001, 1000);
        let text = m.render(Format::Text004);
        for needle in [
            "faultline_trainer_step_seconds_count 2\n",
            "faultline_trainer_step_phase_seconds_count{phase=\"comm\"} 2\n",
            "faultline_trainer_samples_total 32\n",
            "faultline_trainer_loss 0.5\n",
            "faultline_trainer_allreduce_seconds_count{transport=\"shm\"} 1\n",
            "faultline_trainer_allreduce_bytes_total{transport=\"shm\"} 4096\n",
            "faultline_trainer_checkpoint_bytes_total 1000\n",
            "faultline_trainer_checkpoint_write_seconds_count 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
