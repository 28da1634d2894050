//! Engine shells: one dedicated OS thread per model runs candle (which blocks) and drives a
//! sans-IO core ([`crate::batcher`] for the classifier, [`crate::scheduler`] for the LM).
//!
//! HTTP handlers [`MlpEngine::submit`] / [`LmEngine::submit`] under a short mutex (admission is
//! decided synchronously, so a full queue is answered at once) and await replies on tokio
//! channels. The thread waits on a condvar with the batcher's deadline as timeout. Each thread
//! owns an exit guard that marks its [`EngineHealth`] dead and drops every waiting request's
//! reply channel, so no request waits on a dead engine.
//!
//! Fault hooks ([`EngineFaults`]) wedge the loop, end the thread, or slow every step; they are
//! off unless the hidden `SERVER_FAULT_*` flags are set.

use crate::admission::Overload;
use crate::batcher::{BatcherConfig, Decision, DynamicBatcher, PushError};
use crate::config::EngineFaults;
use crate::health::EngineHealth;
use crate::metrics::Metrics;
use crate::scheduler::ContinuousScheduler;
use models::lm::{ByteLm, SeqState};
use models::mlp::Mlp;
use rand::SeedableRng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is overloaded: answer 429.
    #[error("overloaded: {0:?}")]
    Overloaded(Overload),
    /// The engine is dead, stalled or shutting down: answer 503.
    #[error("{0}")]
    Unavailable(String),
    /// The request's batch dimension exceeds `max_batch_size`.
    #[error("{samples} samples exceed max_batch_size {max}")]
    TooManySamples { samples: usize, max: usize },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Applies the fault hooks before step number `steps_done + 1`. Returns `false` when the
/// thread must exit.
fn before_step(faults: &EngineFaults, steps_done: u64, model: &str) -> bool {
    if faults.exit_after_steps == Some(steps_done) {
        tracing::warn!(model, steps_done, "fault hook: engine thread exits");
        return false;
    }
    if faults.stall_after_steps == Some(steps_done) {
        tracing::warn!(model, steps_done, "fault hook: engine wedged forever");
        loop {
            std::thread::park();
        }
    }
    if let Some(d) = faults.step_delay {
        std::thread::sleep(d);
    }
    true
}

/// Applies the slowdown hook after a step's compute took `compute`: the step then takes
/// `1 + slowdown` times as long, as on a proportionally slower accelerator. The extra time
/// is spun, not slept: a step is tens to hundreds of microseconds, and a sleep that short
/// overshoots by the timer slack and the wake-up (a "10 %" slowdown made by sleeping
/// measured +57-74 % end-to-end latency), while a slower device keeps the engine busy.
fn after_compute(faults: &EngineFaults, compute: Duration) {
    if let Some(f) = faults.slowdown {
        let until = Instant::now() + compute.mul_f64(f);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// Reply to one classifier request: row-major logits, or a compute error message.
pub type MlpReply = Result<Vec<f32>, String>;

struct MlpJob {
    rows: Vec<f32>,
    reply: oneshot::Sender<MlpReply>,
}

struct MlpShared {
    queue: Mutex<DynamicBatcher<MlpJob>>,
    wake: Condvar,
    health: Arc<EngineHealth>,
    shutdown: AtomicBool,
}

/// One running classifier engine thread (one version of the model). Cheap to clone.
#[derive(Clone)]
struct MlpWorker {
    shared: Arc<MlpShared>,
    input_dim: usize,
    num_classes: usize,
}

impl std::fmt::Debug for MlpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlpWorker")
            .field("input_dim", &self.input_dim)
            .finish()
    }
}

struct MlpExitGuard(Arc<MlpShared>);

impl Drop for MlpExitGuard {
    fn drop(&mut self) {
        self.0.health.mark_dead();
        // Dropping the reply senders wakes every waiting handler with an error.
        let orphans = lock(&self.0.queue).take_all();
        self.0.health.set_load(0, 0);
        drop(orphans);
    }
}

impl MlpWorker {
    /// Starts the engine thread for `model`.
    fn start(
        name: &str,
        model: Mlp,
        batcher: BatcherConfig,
        faults: EngineFaults,
        stall_threshold: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let shared = Arc::new(MlpShared {
            queue: Mutex::new(DynamicBatcher::new(batcher)),
            wake: Condvar::new(),
            health: Arc::new(EngineHealth::new(name, stall_threshold)),
            shutdown: AtomicBool::new(false),
        });
        let engine = Self {
            shared: shared.clone(),
            input_dim: model.config().input_dim,
            num_classes: model.config().num_classes,
        };
        let name = name.to_string();
        let handle = std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || mlp_loop(&shared, &model, &faults, &metrics, &name))?;
        Ok((engine, handle))
    }

    /// Features per sample.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Logits per sample.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn max_batch_size(&self) -> usize {
        lock(&self.shared.queue).config().max_batch_size
    }

    fn health(&self) -> Arc<EngineHealth> {
        self.shared.health.clone()
    }

    /// Whether a request would be refused now (shutting down, unhealthy, overloaded),
    /// without queueing one: the handler asks before parsing a body, so shedding under
    /// overload costs little CPU. [`MlpEngine::submit`] checks again.
    pub fn admission(&self) -> Result<(), SubmitError> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(SubmitError::Unavailable("engine is shutting down".into()));
        }
        if let Some(problem) = self.shared.health.problem() {
            return Err(SubmitError::Unavailable(problem));
        }
        match lock(&self.shared.queue).overload(1, Instant::now()) {
            Some(why) => Err(SubmitError::Overloaded(why)),
            None => Ok(()),
        }
    }

    /// Queues `samples` rows (`rows.len() == samples * input_dim`, checked by the caller).
    pub fn submit(
        &self,
        rows: Vec<f32>,
        samples: usize,
    ) -> Result<oneshot::Receiver<MlpReply>, SubmitError> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(SubmitError::Unavailable("engine is shutting down".into()));
        }
        if let Some(problem) = self.shared.health.problem() {
            return Err(SubmitError::Unavailable(problem));
        }
        let (reply, rx) = oneshot::channel();
        let mut q = lock(&self.shared.queue);
        let idle = q.is_empty() && self.shared.health.running() == 0;
        match q.push(MlpJob { rows, reply }, samples, Instant::now()) {
            Ok(()) => {
                if idle {
                    self.shared.health.beat();
                }
                self.shared
                    .health
                    .set_load(q.len(), self.shared.health.running());
                drop(q);
                self.shared.wake.notify_one();
                Ok(rx)
            }
            Err(PushError::Overloaded(_, why)) => Err(SubmitError::Overloaded(why)),
            Err(PushError::BadSize(_)) => Err(SubmitError::TooManySamples {
                samples,
                max: q.config().max_batch_size,
            }),
        }
    }

    /// Asks the thread to exit once its queue is empty.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }
}

fn mlp_loop(
    shared: &Arc<MlpShared>,
    model: &Mlp,
    faults: &EngineFaults,
    metrics: &Metrics,
    name: &str,
) {
    let _guard = MlpExitGuard(shared.clone());
    let labels = Metrics::model(name);
    let c = model.config().num_classes;
    let mut steps_done = 0u64;
    loop {
        let batch = {
            let mut q = lock(&shared.queue);
            let batch = loop {
                shared.health.beat();
                if shared.shutdown.load(Ordering::Acquire) && q.is_empty() {
                    return;
                }
                let now = Instant::now();
                match q.poll(now) {
                    Decision::Dispatch(batch) => break batch,
                    Decision::WaitUntil(deadline) => {
                        let wait = deadline.saturating_duration_since(now);
                        q = shared
                            .wake
                            .wait_timeout(q, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    Decision::Idle => {
                        q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                    }
                }
            };
            shared.health.set_load(q.len(), batch.len());
            batch
        };
        // Requests whose handler is gone (client disconnected, deadline passed) are dropped
        // here rather than computed.
        let before = batch.len();
        let batch: Vec<_> = batch
            .into_iter()
            .filter(|q| !q.item.reply.is_closed())
            .collect();
        metrics.requests_aborted(name, "client_gone", (before - batch.len()) as u64);
        if batch.is_empty() {
            shared.health.set_load(lock(&shared.queue).len(), 0);
            continue;
        }
        if !before_step(faults, steps_done, name) {
            return;
        }
        let dispatched = Instant::now();
        let samples: usize = batch.iter().map(|q| q.samples).sum();
        let mut rows = Vec::with_capacity(samples * model.config().input_dim);
        for q in &batch {
            metrics.queue_time.get_or_create(&labels).observe(
                dispatched
                    .saturating_duration_since(q.enqueued_at)
                    .as_secs_f64(),
            );
            rows.extend_from_slice(&q.item.rows);
        }
        let result = model.infer(&rows);
        after_compute(faults, dispatched.elapsed());
        metrics
            .batch_execution
            .get_or_create(&labels)
            .observe(dispatched.elapsed().as_secs_f64());
        metrics
            .batch_size
            .get_or_create(&labels)
            .observe(samples as f64);
        match result {
            Ok(out) => {
                let mut offset = 0;
                for q in batch {
                    let n = q.samples * c;
                    let reply = out
                        .get(offset..offset + n)
                        .map(<[f32]>::to_vec)
                        .ok_or_else(|| "model returned too few logits".to_string());
                    offset += n;
                    // A dropped receiver means the client went away: nothing to do.
                    let _ = q.item.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(model = name, error = %e, "batch failed");
                for q in batch {
                    let _ = q.item.reply.send(Err(e.to_string()));
                }
            }
        }
        steps_done += 1;
        let mut q = lock(&shared.queue);
        q.batch_done(samples, dispatched.elapsed());
        shared.health.set_load(q.len(), 0);
    }
}

/// One generated token, with its log-probabilities when the request asked for them.
#[derive(Debug, Clone, PartialEq)]
pub struct GenToken {
    /// The token: a byte value, 0..=255.
    pub id: u32,
    /// `Some` when [`LmJob::logprobs`] is set.
    pub logprob: Option<TokenLogprob>,
}

/// A token's log-probability under the model's raw distribution (`log_softmax(logits)`,
/// before temperature and `top_p`), and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// The `k` most likely tokens at this position, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// A model's serving slot: the engine thread of its current version. [`MlpEngine::replace`]
/// and [`LmEngine::replace`] swap in a new version's engine; the old one finishes every
/// request it holds (its queue and running work), then exits, so a reload drops nothing.
#[derive(Debug)]
struct Slot<W> {
    current: std::sync::RwLock<(W, String)>,
}

impl<W: Clone> Slot<W> {
    fn new(worker: W, version: String) -> Arc<Self> {
        Arc::new(Self {
            current: std::sync::RwLock::new((worker, version)),
        })
    }

    fn worker(&self) -> W {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    fn version(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    fn replace(&self, worker: W, version: String) -> W {
        let mut c = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *c, (worker, version)).0
    }
}

/// Handle to a served classifier: the engine of its current version. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MlpEngine {
    slot: Arc<Slot<MlpWorker>>,
}

impl MlpEngine {
    /// Starts the engine thread for version `version` of `model`.
    pub fn start(
        name: &str,
        version: &str,
        model: Mlp,
        batcher: BatcherConfig,
        faults: EngineFaults,
        stall_threshold: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (w, t) = MlpWorker::start(name, model, batcher, faults, stall_threshold, metrics)?;
        Ok((
            Self {
                slot: Slot::new(w, version.to_string()),
            },
            t,
        ))
    }

    /// Serves `next` (a freshly started engine) from now on; the previous version's engine
    /// finishes its queue and exits.
    pub fn replace(&self, next: MlpEngine) {
        let version = next.version();
        let old = self.slot.replace(next.slot.worker(), version);
        old.shutdown();
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.slot.version()
    }

    /// Features per sample.
    pub fn input_dim(&self) -> usize {
        self.slot.worker().input_dim()
    }

    /// Logits per sample.
    pub fn num_classes(&self) -> usize {
        self.slot.worker().num_classes()
    }

    pub fn max_batch_size(&self) -> usize {
        self.slot.worker().max_batch_size()
    }

    pub fn health(&self) -> Arc<EngineHealth> {
        self.slot.worker().health()
    }

    /// Whether a request would be refused now (shutting down, unhealthy, overloaded),
    /// without queueing one: the handler asks before parsing a body, so shedding under
    /// overload costs little CPU. [`MlpEngine::submit`] checks again.
    pub fn admission(&self) -> Result<(), SubmitError> {
        self.slot.worker().admission()
    }

    /// Queues `samples` rows (`rows.len() == samples * input_dim`, checked by the caller).
    pub fn submit(
        &self,
        rows: Vec<f32>,
        samples: usize,
    ) -> Result<oneshot::Receiver<MlpReply>, SubmitError> {
        self.slot.worker().submit(rows, samples)
    }

    /// Asks the current version's thread to exit once its queue is empty.
    pub fn shutdown(&self) {
        self.slot.worker().shutdown();
    }
}

/// Handle to a served language model: the engine of its current version. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LmEngine {
    slot: Arc<Slot<LmWorker>>,
}

impl LmEngine {
    /// Starts the engine thread for version `version` of `model`: at most `max_running`
    /// sequences decode together, at most `max_waiting` wait, and none is queued that would
    /// wait longer than `max_wait` for a slot.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &str,
        version: &str,
        model: ByteLm,
        max_running: usize,
        max_waiting: usize,
        max_wait: Option<Duration>,
        faults: EngineFaults,
        stall_threshold: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (w, t) = LmWorker::start(
            name,
            model,
            max_running,
            max_waiting,
            max_wait,
            faults,
            stall_threshold,
            metrics,
        )?;
        Ok((
            Self {
                slot: Slot::new(w, version.to_string()),
            },
            t,
        ))
    }

    /// Serves `next` from now on; the previous version's engine finishes the sequences it
    /// holds (waiting and running) and exits.
    pub fn replace(&self, next: LmEngine) {
        let version = next.version();
        let old = self.slot.replace(next.slot.worker(), version);
        old.shutdown();
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.slot.version()
    }

    pub fn health(&self) -> Arc<EngineHealth> {
        self.slot.worker().health()
    }

    /// Queues the sequences of one request (its choices) together: all or none.
    pub fn submit(&self, jobs: Vec<LmJob>) -> Result<(), SubmitError> {
        self.slot.worker().submit(jobs)
    }

    /// Asks the current version's thread to exit once nothing waits or runs.
    pub fn shutdown(&self) {
        self.slot.worker().shutdown();
    }
}

/// One completion sequence for the LM engine.
#[derive(Debug)]
pub struct LmJob {
    /// Non-empty prompt bytes.
    pub prompt: Vec<u8>,
    /// Tokens to generate (≥ 1); the channel closes after exactly this many unless a stop
    /// sequence ends it first or the engine fails.
    pub max_tokens: usize,
    pub sampling: models::sampling::Sampling,
    pub seed: u64,
    /// `Some(k)`: send each token's log-probability and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Generation ends after the byte that completes one of these ([`crate::text`]).
    pub stops: Vec<Vec<u8>>,
    /// Receives each generated token as it is sampled.
    pub tokens: mpsc::UnboundedSender<GenToken>,
    /// When the HTTP request arrived (for TTFT and end-to-end latency).
    pub arrived: Instant,
}

struct LmShared {
    sched: Mutex<ContinuousScheduler<LmJob>>,
    wake: Condvar,
    health: Arc<EngineHealth>,
    shutdown: AtomicBool,
}

/// One running LM engine thread (one version of the model). Cheap to clone.
#[derive(Clone)]
struct LmWorker {
    shared: Arc<LmShared>,
}

impl std::fmt::Debug for LmWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmWorker").finish_non_exhaustive()
    }
}

struct LmExitGuard(Arc<LmShared>);

impl Drop for LmExitGuard {
    fn drop(&mut self) {
        self.0.health.mark_dead();
        let orphans = lock(&self.0.sched).take_waiting();
        self.0.health.set_load(0, 0);
        drop(orphans);
    }
}

struct Running {
    job: LmJob,
    state: SeqState,
    /// Index of the prompt byte fed this step while prefilling.
    pos: usize,
    input: u32,
    generated: usize,
    /// The last generated bytes, as many as the longest stop sequence.
    tail: Vec<u8>,
    rng: rand::rngs::StdRng,
    last_token_at: Option<Instant>,
    done: bool,
}

impl LmWorker {
    /// Starts the engine thread for `model`: at most `max_running` sequences decode together,
    /// at most `max_waiting` wait, and none is queued while the oldest waiting has waited
    /// longer than `max_wait`.
    #[allow(clippy::too_many_arguments)]
    fn start(
        name: &str,
        model: ByteLm,
        max_running: usize,
        max_waiting: usize,
        max_wait: Option<Duration>,
        faults: EngineFaults,
        stall_threshold: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let shared = Arc::new(LmShared {
            sched: Mutex::new(ContinuousScheduler::new(max_running, max_waiting, max_wait)),
            wake: Condvar::new(),
            health: Arc::new(EngineHealth::new(name, stall_threshold)),
            shutdown: AtomicBool::new(false),
        });
        let engine = Self {
            shared: shared.clone(),
        };
        let name = name.to_string();
        let handle = std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || lm_loop(&shared, &model, &faults, &metrics, &name))?;
        Ok((engine, handle))
    }

    fn health(&self) -> Arc<EngineHealth> {
        self.shared.health.clone()
    }

    /// Queues the sequences of one request (its choices) together: all are admitted or
    /// none.
    pub fn submit(&self, jobs: Vec<LmJob>) -> Result<(), SubmitError> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(SubmitError::Unavailable("engine is shutting down".into()));
        }
        if let Some(problem) = self.shared.health.problem() {
            return Err(SubmitError::Unavailable(problem));
        }
        let mut s = lock(&self.shared.sched);
        let idle = s.waiting() == 0 && s.running() == 0;
        match s.push_all(jobs, Instant::now()) {
            Ok(()) => {
                if idle {
                    self.shared.health.beat();
                }
                self.shared.health.set_load(s.waiting(), s.running());
                drop(s);
                self.shared.wake.notify_one();
                Ok(())
            }
            Err((_, why)) => Err(SubmitError::Overloaded(why)),
        }
    }

    /// Asks the thread to exit once nothing waits or runs.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }
}

fn lm_loop(
    shared: &Arc<LmShared>,
    model: &ByteLm,
    faults: &EngineFaults,
    metrics: &Metrics,
    name: &str,
) {
    let _guard = LmExitGuard(shared.clone());
    let labels = Metrics::model(name);
    let mut running: Vec<Running> = Vec::new();
    let mut steps_done = 0u64;
    loop {
        let admitted = {
            let mut s = lock(&shared.sched);
            loop {
                shared.health.beat();
                let admitted = s.admit(Instant::now());
                if !admitted.is_empty() || !running.is_empty() {
                    shared.health.set_load(s.waiting(), s.running());
                    break admitted;
                }
                if shared.shutdown.load(Ordering::Acquire) {
                    return;
                }
                s = shared.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let mut failed_to_start = 0;
        let mut gone = 0u64;
        for a in admitted {
            if a.item.tokens.is_closed() {
                // Its handler gave up while it waited (client gone or deadline passed).
                failed_to_start += 1;
                gone += 1;
                continue;
            }
            metrics
                .queue_time
                .get_or_create(&labels)
                .observe(a.queued_for.as_secs_f64());
            metrics
                .prompt_tokens
                .get_or_create(&labels)
                .inc_by(a.item.prompt.len() as u64);
            match (model.initial_state(), a.item.prompt.first()) {
                (Ok(state), Some(&first)) => running.push(Running {
                    rng: rand::rngs::StdRng::seed_from_u64(a.item.seed),
                    input: u32::from(first),
                    job: a.item,
                    state,
                    pos: 0,
                    generated: 0,
                    tail: Vec::new(),
                    last_token_at: None,
                    done: false,
                }),
                _ => failed_to_start += 1,
            }
        }
        // A client that went away frees its slot now, not at its next token: while
        // prefilling a long prompt a sequence sends nothing for up to --max-prompt-bytes steps.
        let before = running.len();
        running.retain(|r| !r.job.tokens.is_closed());
        gone += (before - running.len()) as u64;
        failed_to_start += before - running.len();
        metrics.requests_aborted(name, "client_gone", gone);
        if failed_to_start > 0 {
            let mut s = lock(&shared.sched);
            s.finish(failed_to_start);
            shared.health.set_load(s.waiting(), s.running());
        }
        if running.is_empty() {
            continue;
        }
        if !before_step(faults, steps_done, name) {
            return;
        }
        let started = Instant::now();
        let tokens: Vec<u32> = running.iter().map(|r| r.input).collect();
        let mut states: Vec<&mut SeqState> = running.iter_mut().map(|r| &mut r.state).collect();
        let result = model.step(&tokens, &mut states);
        after_compute(faults, started.elapsed());
        let now = Instant::now();
        metrics
            .batch_execution
            .get_or_create(&labels)
            .observe(now.saturating_duration_since(started).as_secs_f64());
        metrics
            .batch_size
            .get_or_create(&labels)
            .observe(running.len() as f64);
        match result {
            Ok(logits) => {
                for (r, l) in running.iter_mut().zip(&logits) {
                    advance(r, l, now, metrics, &labels);
                }
            }
            Err(e) => {
                tracing::error!(model = name, error = %e, "decode step failed; dropping its sequences");
                running.iter_mut().for_each(|r| r.done = true);
            }
        }
        let before = running.len();
        running.retain(|r| !r.done);
        let mut s = lock(&shared.sched);
        s.finish(before - running.len());
        s.step_done(
            before,
            before - running.len(),
            now.saturating_duration_since(started),
        );
        shared.health.set_load(s.waiting(), s.running());
        drop(s);
        steps_done += 1;
    }
}

/// Moves one sequence forward after a step: next prompt byte while prefilling, else sample and
/// emit a token.
fn advance(
    r: &mut Running,
    logits: &[f32],
    now: Instant,
    metrics: &Metrics,
    labels: &crate::metrics::ModelLabels,
) {
    if r.pos + 1 < r.job.prompt.len() {
        r.pos += 1;
        r.input = u32::from(r.job.prompt[r.pos]);
        return;
    }
    let token = models::sampling::sample(logits, &r.job.sampling, &mut r.rng);
    let logprob = r.job.logprobs.map(|k| {
        let lp = models::sampling::log_softmax(logits);
        TokenLogprob {
            logprob: lp.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY),
            top: models::sampling::top_k(&lp, k),
        }
    });
    match r.last_token_at {
        None => metrics
            .ttft
            .get_or_create(labels)
            .observe(now.saturating_duration_since(r.job.arrived).as_secs_f64()),
        Some(prev) => metrics
            .itl
            .get_or_create(labels)
            .observe(now.saturating_duration_since(prev).as_secs_f64()),
    }
    r.last_token_at = Some(now);
    metrics.generation_tokens.get_or_create(labels).inc();
    r.generated += 1;
    r.input = token;
    let longest_stop = r.job.stops.iter().map(Vec::len).max().unwrap_or(0);
    if longest_stop > 0 {
        if r.tail.len() == longest_stop {
            r.tail.remove(0);
        }
        r.tail.push(u8::try_from(token).unwrap_or(u8::MAX));
    }
    let stopped = crate::text::ends_with_stop(&r.tail, &r.job.stops);
    let last = r.generated >= r.job.max_tokens || stopped;
    if last {
        // Recorded before the last token leaves, so a client that has its whole answer and then
        // scrapes /metrics always finds this request's latency observed.
        metrics.request_finished(
            &labels.model,
            if stopped {
                crate::metrics::FinishedReason::Stop
            } else {
                crate::metrics::FinishedReason::Length
            },
        );
        metrics
            .e2e_latency
            .get_or_create(labels)
            .observe(now.saturating_duration_since(r.job.arrived).as_secs_f64());
    }
    let sent = r.job.tokens.send(GenToken { id: token, logprob }).is_ok();
    if last {
        r.done = true;
    } else if !sent {
        // The client went away mid-generation: free the slot.
        r.done = true;
        metrics.requests_aborted(&labels.model, "client_gone", 1);
        metrics.request_finished(&labels.model, crate::metrics::FinishedReason::Abort);
    }
}
