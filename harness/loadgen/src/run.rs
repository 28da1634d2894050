//! The async shells: open-loop and closed-loop drivers.
//!
//! Open loop: a dedicated scheduler thread walks the [`Schedule`] and releases each
//! request at its intended instant (OS sleep until ~150 µs before, then a yielding spin,
//! so the schedule is held tighter than tokio's 1 ms timer). Released requests go to a
//! per-target FIFO that the target's connection workers pull from when free, so a
//! request waits for a free connection (send lag grows, honestly) but never for an
//! earlier response. A worker that takes a request which has already waited longer than
//! the timeout since its intended send, or takes it after cancellation, counts it as
//! `dropped_by_generator` instead of sending it (README: "When the generator drops a
//! request"). Workers record outcomes into sharded [`Recorder`]s that are merged at the
//! end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use std::collections::VecDeque;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{prepare, resolve, Conn, Prepared};
use crate::counts::Completion;
use crate::record::{LoadReport, Outcome, Recorder};
use crate::schedule::{Mix, RateCurve, Schedule, Scheduled};
use crate::spec::{LoadError, LoadSpec, OpenLoopSpec};

/// A live view of a run, published about every 200 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Since t0.
    pub elapsed: Duration,
    /// Requests released by the schedule (open loop) or started (closed loop).
    pub sent: u64,
    pub ok: u64,
    /// errors + timeouts + drops so far.
    pub failed: u64,
    /// Released but not yet finished (queued for a connection or on the wire).
    pub in_flight: u64,
    /// Requests released per second over the last progress interval.
    pub rate_per_s: f64,
}

const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Spin (yielding) instead of sleeping when the next send is closer than this.
const SPIN_THRESHOLD: Duration = Duration::from_micros(150);
/// Longest OS sleep in the scheduler, so cancellation is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// Per-shard live counters, on their own cache line so threads never share one.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    counters: Vec<Counters>,
    shards: Vec<Mutex<Recorder>>,
}

impl Shared {
    fn new(rec: Recorder) -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        Shared {
            counters: (0..n).map(|_| Counters::default()).collect(),
            shards: (0..n).map(|_| Mutex::new(rec.clone())).collect(),
        }
    }

    fn sent(&self, shard: usize) {
        self.counters[shard % self.counters.len()]
            .sent
            .fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, shard: usize, o: &Outcome) {
        let c = &self.counters[shard % self.counters.len()];
        if o.result == Completion::Ok {
            c.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(o);
    }

    /// (sent, ok, failed) so far.
    fn totals(&self) -> (u64, u64, u64) {
        self.counters.iter().fold((0, 0, 0), |(s, o, f), c| {
            (
                s + c.sent.load(Ordering::Relaxed),
                o + c.ok.load(Ordering::Relaxed),
                f + c.failed.load(Ordering::Relaxed),
            )
        })
    }

    fn into_recorder(self) -> Recorder {
        let mut shards = self
            .shards
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner));
        let mut rec = shards.next().expect("at least one shard");
        for r in shards {
            rec.merge(r);
        }
        rec
    }
}

/// Publishes [`Progress`] until `done` is cancelled.
fn spawn_progress(
    tasks: &mut JoinSet<()>,
    tx: Option<watch::Sender<Progress>>,
    shared: Arc<Shared>,
    t0: Instant,
    done: CancellationToken,
) {
    let Some(tx) = tx else { return };
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        let mut last_sent = 0;
        let mut last_at = Instant::now();
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = done.cancelled() => true,
            };
            let now = Instant::now();
            let (sent, ok, failed) = shared.totals();
            let secs = now.duration_since(last_at).as_secs_f64();
            let _ = tx.send(Progress {
                elapsed: now.saturating_duration_since(t0),
                sent,
                ok,
                failed,
                in_flight: sent.saturating_sub(ok + failed),
                rate_per_s: if secs > 0.0 {
                    (sent - last_sent) as f64 / secs
                } else {
                    0.0
                },
            });
            last_sent = sent;
            last_at = now;
            if stop {
                break;
            }
        }
    });
}

async fn open_connections(
    targets: &[Arc<crate::conn::Target>],
    per_target: usize,
    timeout: Duration,
) -> Vec<(usize, Conn)> {
    let mut conns: Vec<(usize, Conn)> = targets
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| (0..per_target).map(move |_| (ti, Conn::new(t.clone()))))
        .collect();
    futures_util::future::join_all(conns.iter_mut().map(|(_, c)| c.warm(timeout))).await;
    conns
}

/// The wall-clock time corresponding to `t0`.
fn wall_clock_of(t0: Instant) -> SystemTime {
    let now = Instant::now();
    let wall = SystemTime::now();
    if t0 >= now {
        wall + (t0 - now)
    } else {
        wall - (now - t0)
    }
}

async fn join_all(tasks: &mut JoinSet<()>) -> Result<(), LoadError> {
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| LoadError::Internal(format!("worker task: {e}")))?;
    }
    Ok(())
}

/// What both loops need before the first request: resolved targets, request bytes
/// serialised once per target, the end of the run, and the shared recorder.
struct Setup {
    targets: Vec<Arc<crate::conn::Target>>,
    prepared: Arc<Vec<Vec<Prepared>>>,
    end: Duration,
    shared: Arc<Shared>,
}

impl Setup {
    async fn new(load: &LoadSpec) -> Result<Self, LoadError> {
        let resolved = resolve(&load.targets).await?;
        let prepared = Arc::new(prepare(&load.targets, &load.requests)?);
        let end = load.warmup + load.duration;
        let shared = Arc::new(Shared::new(Recorder::new(
            load.window,
            load.fine_window,
            load.warmup,
            end,
            load.timeout,
        )));
        Ok(Setup {
            targets: resolved,
            prepared,
            end,
            shared,
        })
    }
}

/// Runs an open-loop load: requests are released on a fixed schedule regardless of
/// responses, and latency is measured from the intended send time.
///
/// Returns when the schedule is exhausted (or `cancel` fires) and every released request
/// has finished (at most `timeout` later). Cancellation stops the schedule; queued
/// requests are counted as dropped, in-flight ones finish or time out. Fails only before
/// the load starts (invalid spec, unresolvable target).
pub async fn run_open_loop(
    spec: &OpenLoopSpec,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<LoadReport, LoadError> {
    spec.validate()?;
    let load = &spec.load;
    let Setup {
        targets,
        prepared,
        end,
        shared,
    } = Setup::new(load).await?;
    let conns = open_connections(&targets, load.connections, load.timeout).await;

    let queues: Arc<[JobQueue]> = targets.iter().map(|_| JobQueue::default()).collect();

    // A short lead so every worker is parked on its queue before the first send.
    let t0 = Instant::now() + Duration::from_millis(2);
    let started_at = wall_clock_of(t0);
    let mut workers = JoinSet::new();
    for (i, (ti, mut conn)) in conns.into_iter().enumerate() {
        let queues = queues.clone();
        let prepared = prepared.clone();
        let shared = shared.clone();
        let cancel = cancel.clone();
        let timeout = load.timeout;
        workers.spawn(async move {
            loop {
                let Some(job) = queues[ti].pop().await else {
                    break;
                };
                let waited = Instant::now().saturating_duration_since(t0 + job.intended);
                let outcome = if cancel.is_cancelled() || waited > timeout {
                    Outcome {
                        intended: job.intended,
                        actual: None,
                        done: t0.elapsed(),
                        result: Completion::Dropped,
                        stream: None,
                        bytes_read: 0,
                    }
                } else {
                    let req = &prepared[job.target][job.template];
                    conn.execute(req, t0, Some(job.intended), timeout).await
                };
                shared.record(i, &outcome);
            }
        });
    }

    let mut aux = JoinSet::new();
    let done = CancellationToken::new();
    spawn_progress(&mut aux, progress, shared.clone(), t0, done.clone());

    let schedule = Schedule::new(
        RateCurve::new(spec.rate_per_s, &spec.rate_steps),
        spec.arrival,
        end,
        &load.requests.iter().map(|r| r.weight).collect::<Vec<_>>(),
        targets.len(),
        load.seed,
    );
    let sched_shared = shared.clone();
    let sched_cancel = cancel.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        let _close = CloseOnDrop(&queues);
        release(schedule, t0, end, &queues, &sched_shared, &sched_cancel)
    })
    .await
    .map_err(|e| LoadError::Internal(format!("scheduler thread: {e}")))?;
    join_all(&mut workers).await?;
    done.cancel();
    join_all(&mut aux).await?;

    let shared = Arc::try_unwrap(shared)
        .map_err(|_| LoadError::Internal("recorder still shared after all tasks ended".into()))?;
    Ok(shared
        .into_recorder()
        .finish(started_at, load.seed, stopped))
}

/// Releases scheduled requests at their intended instants; returns the offset at which
/// it stopped (`end`, or the cancellation time). Blocking: runs on its own thread.
fn release(
    schedule: Schedule,
    t0: Instant,
    end: Duration,
    queues: &[JobQueue],
    shared: &Shared,
    cancel: &CancellationToken,
) -> Duration {
    for job in schedule {
        let due = t0 + job.intended;
        loop {
            if cancel.is_cancelled() {
                return t0.elapsed().min(end);
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            let wait = due - now;
            if wait > SPIN_THRESHOLD {
                std::thread::sleep((wait - SPIN_THRESHOLD / 2).min(MAX_SLEEP));
            } else {
                std::thread::yield_now();
            }
        }
        shared.sent(0);
        queues[job.target].push(job);
    }
    end
}

/// A FIFO of released requests shared by one target's connection workers. Each push
/// wakes exactly one idle worker (a semaphore permit per queued job).
struct JobQueue {
    jobs: Mutex<VecDeque<Scheduled>>,
    ready: Semaphore,
}

impl Default for JobQueue {
    fn default() -> Self {
        JobQueue {
            jobs: Mutex::new(VecDeque::new()),
            ready: Semaphore::new(0),
        }
    }
}

impl JobQueue {
    fn push(&self, job: Scheduled) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        self.ready.add_permits(1);
    }

    fn take(&self) -> Option<Scheduled> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// The next job; `None` once the queue is closed and empty.
    async fn pop(&self) -> Option<Scheduled> {
        loop {
            match self.ready.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    if let Some(job) = self.take() {
                        return Some(job);
                    }
                    // Taken by a worker draining after close; wait for close too.
                }
                Err(_closed) => return self.take(),
            }
        }
    }
}

/// Closes the queues when the scheduler ends, however it ends, so workers drain and exit.
struct CloseOnDrop<'a>(&'a [JobQueue]);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        for q in self.0 {
            q.ready.close();
        }
    }
}

/// Runs a closed-loop load: each connection sends its next request as soon as the
/// previous one finished, until `warmup + duration` (or `cancel`). In-flight requests
/// then finish or time out. Latency equals service time; send lag is 0.
///
/// Uses one event-loop thread per available core, like wrk's `-t`; see
/// [`run_closed_loop_on`] to choose.
pub async fn run_closed_loop(
    load: &LoadSpec,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<LoadReport, LoadError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_closed_loop_on(load, threads, cancel, progress).await
}

/// [`run_closed_loop`] on `threads` OS threads, each with its own single-threaded event
/// loop owning an equal share of the connections (no cross-thread wake-ups per request).
pub async fn run_closed_loop_on(
    load: &LoadSpec,
    threads: usize,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<LoadReport, LoadError> {
    load.validate()?;
    let Setup {
        targets,
        prepared,
        end,
        shared,
    } = Setup::new(load).await?;
    let weights: Arc<[f64]> = load.requests.iter().map(|r| r.weight).collect();
    let total = targets.len() * load.connections;
    let threads = threads.clamp(1, total);
    // Every thread opens its connections, then all start together at the same t0.
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let t0_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let (t0_tx, t0_rx) = tokio::sync::oneshot::channel::<Instant>();
    let mut t0_tx = Some(t0_tx);
    let mut handles = Vec::with_capacity(threads);
    for th in 0..threads {
        // Connection i (target i % targets) belongs to thread i % threads.
        let mine: Vec<(usize, usize)> = (0..total)
            .filter(|i| i % threads == th)
            .map(|i| (i, i % targets.len()))
            .collect();
        let ctx = ClosedCtx {
            targets: targets.clone(),
            prepared: prepared.clone(),
            shared: shared.clone(),
            weights: weights.clone(),
            cancel: cancel.clone(),
            barrier: barrier.clone(),
            t0: t0_cell.clone(),
            t0_tx: t0_tx.take(),
            shard: th,
            timeout: load.timeout,
            seed: load.seed,
            end,
        };
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{th}"))
            .spawn(move || closed_thread(ctx, mine))
            .map_err(|e| LoadError::Internal(format!("cannot start thread: {e}")))?;
        handles.push(handle);
    }
    let t0 = t0_rx
        .await
        .map_err(|_| LoadError::Internal("load threads ended before starting".into()))?;
    let started_at = wall_clock_of(t0);
    let mut aux = JoinSet::new();
    let done = CancellationToken::new();
    spawn_progress(&mut aux, progress, shared.clone(), t0, done.clone());
    let stopped = tokio::task::spawn_blocking(move || {
        let mut stopped = Duration::ZERO;
        for h in handles {
            match h.join() {
                Ok(Ok(at)) => stopped = stopped.max(at),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(LoadError::Internal("load thread panicked".into())),
            }
        }
        Ok(stopped)
    })
    .await
    .map_err(|e| LoadError::Internal(format!("joining load threads: {e}")))??;
    done.cancel();
    join_all(&mut aux).await?;
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| LoadError::Internal("recorder still shared after all tasks ended".into()))?;
    Ok(shared
        .into_recorder()
        .finish(started_at, load.seed, stopped))
}

struct ClosedCtx {
    targets: Vec<Arc<crate::conn::Target>>,
    prepared: Arc<Vec<Vec<Prepared>>>,
    shared: Arc<Shared>,
    weights: Arc<[f64]>,
    cancel: CancellationToken,
    barrier: Arc<std::sync::Barrier>,
    t0: Arc<std::sync::OnceLock<Instant>>,
    t0_tx: Option<tokio::sync::oneshot::Sender<Instant>>,
    /// Recorder shard of this thread (uncontended).
    shard: usize,
    timeout: Duration,
    seed: u64,
    end: Duration,
}

/// One closed-loop event-loop thread; returns when its workers stopped.
fn closed_thread(ctx: ClosedCtx, mine: Vec<(usize, usize)>) -> Result<Duration, LoadError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            // Keep the other threads from waiting for this one forever.
            ctx.barrier.wait();
            return Err(LoadError::Internal(format!("cannot build runtime: {e}")));
        }
    };
    rt.block_on(async move {
        let mut conns = Vec::with_capacity(mine.len());
        for (i, ti) in mine {
            conns.push((i, ti, Conn::new(ctx.targets[ti].clone())));
        }
        futures_util::future::join_all(conns.iter_mut().map(|(_, _, c)| c.warm(ctx.timeout))).await;
        ctx.barrier.wait();
        let t0 = *ctx.t0.get_or_init(Instant::now);
        if let Some(tx) = ctx.t0_tx {
            let _ = tx.send(t0);
        }
        let mut workers = JoinSet::new();
        for (i, ti, mut conn) in conns {
            let prepared = ctx.prepared.clone();
            let shared = ctx.shared.clone();
            let cancel = ctx.cancel.clone();
            let (timeout, end, shard) = (ctx.timeout, ctx.end, ctx.shard);
            let mut mix = Mix::new(&ctx.weights, ctx.seed.wrapping_add(i as u64));
            workers.spawn(async move {
                loop {
                    let now = t0.elapsed();
                    if now >= end || cancel.is_cancelled() {
                        break now.min(end);
                    }
                    shared.sent(shard);
                    let req = &prepared[ti][mix.choose()];
                    let outcome = conn.execute(req, t0, None, timeout).await;
                    shared.record(shard, &outcome);
                }
            });
        }
        let mut stopped = Duration::ZERO;
        while let Some(r) = workers.join_next().await {
            let at = r.map_err(|e| LoadError::Internal(format!("worker task: {e}")))?;
            stopped = stopped.max(at);
        }
        Ok(stopped)
    })
}
