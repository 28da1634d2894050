//! The async shells: open-loop and closed-loop drivers.
//!
//! Open loop: OS threads (half the cores by default; wrk2's `-t`), each with a
//! single-threaded event loop that owns an equal share of the connections and releases its
//! own share of the [`Schedule`]. No request crosses a thread (the old single scheduler
//! thread's cross-thread hand-off capped the open loop near 30k req/s here). On a thread,
//! a request is released when it comes due by whichever runs first: the release task,
//! which sleeps on a `timerfd` (tokio's timer rounds to milliseconds) until 150 µs before
//! the due instant and then spins yielding (a wake-up from sleep takes tens of µs here),
//! or a connection worker that has just finished a response and checks the clock. The
//! releaser writes the request at once on an idle connection to its target and hands
//! that connection's worker the response to read ([`Dispatch`]); with no idle
//! connection the request joins its target's backlog, which workers take from when free,
//! and while the pool is under `max_connections` another connection is opened for it (at
//! most [`MAX_CONNECTING`] connects under way per thread).
//! So a request waits for a free connection (send lag grows, honestly) but neither for an
//! earlier response nor for a task switch. A worker that takes a request from the backlog
//! after it has waited longer than the timeout since its intended send, or after
//! cancellation, counts it as `dropped_by_generator` instead of sending it (README: "When
//! the generator drops a request"). Workers record outcomes into per-thread [`Recorder`]
//! shards that are merged at the end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::conn::{prepare, resolve, Conn, Handover, Prepared};
use crate::counts::Completion;
use crate::record::{ConnectionUse, LoadReport, Outcome, Recorder};
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
    /// The run's t = 0, the intended send time of its first request (known from the
    /// first report on, which comes just before it): what a fault timeline starts from, so
    /// faults and the load's windows share one clock.
    pub t0: Option<Instant>,
}

const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Most connects a load thread has under way for connections it adds to its pool.
const MAX_CONNECTING: usize = 16;
/// How long before a request's due instant its load thread stops sleeping and spins.
const SPIN_BEFORE_DUE: Duration = Duration::from_micros(150);

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
    /// Connections opened during the run because every one to a target was busy.
    added: AtomicU64,
}

impl Shared {
    fn new(rec: Recorder) -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        Shared {
            counters: (0..n).map(|_| Counters::default()).collect(),
            shards: (0..n).map(|_| Mutex::new(rec.clone())).collect(),
            added: AtomicU64::new(0),
        }
    }

    fn sent(&self, shard: usize) {
        self.counters[shard % self.counters.len()]
            .sent
            .fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, shard: usize, target: usize, o: &Outcome) {
        let c = &self.counters[shard % self.counters.len()];
        if o.result == Completion::Ok {
            c.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_at(target, o);
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
                t0: Some(t0),
            });
            last_sent = sent;
            last_at = now;
            if stop {
                break;
            }
        }
    });
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
        let shared = Arc::new(Shared::new(
            Recorder::new(
                load.window,
                load.fine_window,
                load.warmup,
                end,
                load.timeout,
            )
            .with_targets(load.targets.len()),
        ));
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
///
/// Uses [`default_open_loop_threads`] event-loop threads; see [`run_open_loop_on`] to
/// choose.
pub async fn run_open_loop(
    spec: &OpenLoopSpec,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<LoadReport, LoadError> {
    run_open_loop_on(spec, default_open_loop_threads(), cancel, progress).await
}

/// Open-loop load threads by default: half the available cores, at least one. A load
/// thread spins for the last 150 us before each due instant, so at high rates each keeps
/// a core busy; on a machine shared with the target (the faultline runner's case, and
/// every benchmark here) a thread per core takes the cores the target needs and the
/// schedule slips (measured: 2 threads on 2 cores beside nginx missed at 15k req/s where
/// 1 thread held 83k; docs/BENCHMARKS.md).
pub fn default_open_loop_threads() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

/// [`run_open_loop`] on `threads` OS threads (at most one per connection). Each thread
/// has its own single-threaded event loop, owns an equal share of the connections and
/// releases its own share of the schedule with its own timer: every thread walks the same
/// seeded schedule and keeps the requests whose target it holds connections for (a
/// target's requests take turns among the threads holding its connections), so the
/// schedule is identical whatever the thread count and no request crosses a thread.
pub async fn run_open_loop_on(
    spec: &OpenLoopSpec,
    threads: usize,
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
    let total = targets.len() * load.connections;
    let limit = targets.len().saturating_mul(spec.connection_limit());
    let threads = threads.clamp(1, total);
    let owners = Arc::new(Owners::new(targets.len(), total, threads));
    let schedule = Schedule::new(
        RateCurve::new(spec.rate_per_s, &spec.rate_steps),
        spec.arrival,
        end,
        &load.requests.iter().map(|r| r.weight).collect::<Vec<_>>(),
        targets.len(),
        load.seed,
    );
    // A short lead so every worker is parked on its queue before the first send.
    let (starts, t0_rx) = StartLine::new(threads, Duration::from_millis(2));
    let mut handles = Vec::with_capacity(threads);
    for (th, start) in starts.into_iter().enumerate() {
        let mine = connections_of(th, threads, total, targets.len());
        let spare = (0..targets.len())
            .map(|t| owners.spare(th, t, spec.connection_limit() - load.connections))
            .collect();
        let ctx = OpenCtx {
            targets: targets.clone(),
            prepared: prepared.clone(),
            shared: shared.clone(),
            schedule: schedule.clone(),
            owners: owners.clone(),
            cancel: cancel.clone(),
            start,
            thread: th,
            timeout: load.timeout,
            end,
            spare,
        };
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-open-{th}"))
            .spawn(move || open_thread(ctx, mine))
            .map_err(|e| LoadError::Internal(format!("cannot start thread: {e}")))?;
        handles.push(handle);
    }
    finish_threads(handles, t0_rx, shared, progress, load.seed, (total, limit)).await
}

/// How the load threads start together: each opens its connections, waits for the
/// others, and all take the same t0 (set by the first one through, `lead` ahead).
struct StartLine {
    barrier: Arc<std::sync::Barrier>,
    /// Set by a thread that could not open its connections: then none starts.
    failed: Arc<std::sync::atomic::AtomicBool>,
    t0: Arc<std::sync::OnceLock<Instant>>,
    lead: Duration,
    /// Thread 0's line tells the caller t0.
    report: Option<tokio::sync::oneshot::Sender<Instant>>,
}

impl StartLine {
    /// One line per thread, and where t0 arrives.
    fn new(
        threads: usize,
        lead: Duration,
    ) -> (Vec<StartLine>, tokio::sync::oneshot::Receiver<Instant>) {
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t0 = Arc::new(std::sync::OnceLock::new());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let lines = (0..threads)
            .map(|_| StartLine {
                barrier: barrier.clone(),
                failed: failed.clone(),
                t0: t0.clone(),
                lead,
                report: tx.take(),
            })
            .collect();
        (lines, rx)
    }

    /// Waits for every thread; the common t0, or `None` when a thread could not start
    /// (then no thread starts).
    fn go(self) -> Option<Instant> {
        self.barrier.wait();
        if self.failed.load(Ordering::SeqCst) {
            return None;
        }
        let lead = self.lead;
        let t0 = *self.t0.get_or_init(|| Instant::now() + lead);
        if let Some(tx) = self.report {
            let _ = tx.send(t0);
        }
        Some(t0)
    }

    /// For a thread that failed before starting: no thread starts, and none waits for it
    /// forever.
    fn abandon(self) {
        self.failed.store(true, Ordering::SeqCst);
        self.barrier.wait();
    }
}

/// The connections of thread `th` of `threads`: `(i, target)` for every connection
/// `i < total` with `i % threads == th`, connection `i` going to target `i % targets`.
fn connections_of(th: usize, threads: usize, total: usize, targets: usize) -> Vec<(usize, usize)> {
    (0..total)
        .filter(|i| i % threads == th)
        .map(|i| (i, i % targets))
        .collect()
}

/// Opens a load thread's connections, then waits at the start line with the others:
/// t0; `None` when another thread could not start (then none does); the error when this
/// one could not open its connections for want of the generator's own resources.
async fn open_and_start<'a>(
    conns: impl Iterator<Item = &'a mut Conn>,
    timeout: Duration,
    start: StartLine,
) -> Result<Option<Instant>, LoadError> {
    let warmed = futures_util::future::join_all(conns.map(|c| c.warm(timeout))).await;
    if let Some(e) = out_of_resources(&warmed) {
        start.abandon();
        return Err(e);
    }
    Ok(start.go())
}

/// The error that stops a load before it starts when the generator could not open all
/// its connections for want of its own resources (file descriptors, local ports); a
/// target that refuses them is not such an error (the requests will fail visibly).
fn out_of_resources(warmed: &[Result<(), crate::counts::ErrorKind>]) -> Option<LoadError> {
    let short = warmed
        .iter()
        .filter(|r| matches!(r, Err(crate::counts::ErrorKind::GeneratorResources)))
        .count();
    (short > 0).then(|| {
        LoadError::Resources(format!(
            "{short} of a load thread's {} connections could not be opened: the generator ran out of file descriptors or local ports (raise the open-file limit, ulimit -n, or lower the connections)",
            warmed.len()
        ))
    })
}

/// Waits for the threads' t0, publishes progress until they end, joins them and builds
/// the report.
async fn finish_threads(
    handles: Vec<std::thread::JoinHandle<Result<Duration, LoadError>>>,
    t0_rx: tokio::sync::oneshot::Receiver<Instant>,
    shared: Arc<Shared>,
    progress: Option<watch::Sender<Progress>>,
    seed: u64,
    pool: (usize, usize),
) -> Result<LoadReport, LoadError> {
    let Ok(t0) = t0_rx.await else {
        // No thread started: the first error says why.
        return Err(join_threads(handles)
            .await
            .err()
            .unwrap_or_else(|| LoadError::Internal("load threads ended before starting".into())));
    };
    let mut aux = JoinSet::new();
    let done = CancellationToken::new();
    spawn_progress(&mut aux, progress, shared.clone(), t0, done.clone());
    let stopped = join_threads(handles).await?;
    done.cancel();
    join_all(&mut aux).await?;
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| LoadError::Internal("recorder still shared after all tasks ended".into()))?;
    let added = shared.added.load(Ordering::Relaxed);
    let mut report = shared
        .into_recorder()
        .finish(wall_clock_of(t0), seed, stopped);
    report.connections = ConnectionUse {
        initial: pool.0 as u64,
        added,
        limit: pool.1 as u64,
    };
    Ok(report)
}

/// Joins the load threads; the latest stop offset, or the first error.
async fn join_threads(
    handles: Vec<std::thread::JoinHandle<Result<Duration, LoadError>>>,
) -> Result<Duration, LoadError> {
    tokio::task::spawn_blocking(move || {
        let mut stopped = Duration::ZERO;
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(at)) => stopped = stopped.max(at),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(LoadError::Internal("load thread panicked".into()));
                }
            }
        }
        first_err.map_or(Ok(stopped), Err)
    })
    .await
    .map_err(|e| LoadError::Internal(format!("joining load threads: {e}")))?
}

/// Which threads hold connections to each target, and so share its requests.
struct Owners {
    /// `by_target[t]`: the threads holding a connection to target `t`, ascending.
    by_target: Vec<Vec<usize>>,
    targets: usize,
}

impl Owners {
    /// Connection `i` of `total` goes to target `i % targets` and thread `i % threads`.
    fn new(targets: usize, total: usize, threads: usize) -> Self {
        let mut by_target = vec![Vec::new(); targets];
        for i in 0..total {
            let owners: &mut Vec<usize> = &mut by_target[i % targets];
            if !owners.contains(&(i % threads)) {
                owners.push(i % threads);
            }
        }
        for o in &mut by_target {
            o.sort_unstable();
        }
        Owners { by_target, targets }
    }

    /// The thread that releases `job`: its target's requests take turns among the
    /// threads holding that target's connections.
    fn of(&self, job: &Scheduled) -> usize {
        let owners = &self.by_target[job.target];
        let turn = job.seq / self.targets as u64;
        owners[(turn % owners.len() as u64) as usize]
    }

    /// How many of target `t`'s `extra` connections (those the pool may add beyond its
    /// initial ones) thread `th` may open: shared evenly among the threads that hold the
    /// target's connections (the first ones take the remainder), 0 for the others.
    fn spare(&self, th: usize, t: usize, extra: usize) -> usize {
        let owners = &self.by_target[t];
        match owners.iter().position(|&o| o == th) {
            Some(k) => extra / owners.len() + usize::from(k < extra % owners.len()),
            None => 0,
        }
    }
}

struct OpenCtx {
    targets: Vec<Arc<crate::conn::Target>>,
    prepared: Arc<Vec<Vec<Prepared>>>,
    shared: Arc<Shared>,
    schedule: Schedule,
    owners: Arc<Owners>,
    cancel: CancellationToken,
    start: StartLine,
    /// This thread's index, also its recorder shard (uncontended).
    thread: usize,
    timeout: Duration,
    end: Duration,
    /// Per target: connections this thread may add ([`Owners::spare`]).
    spare: Vec<usize>,
}

/// One open-loop event-loop thread: its connections' workers and the release of its
/// share of the schedule. Returns the offset at which its release stopped (`end`, or
/// when it saw the cancellation).
fn open_thread(ctx: OpenCtx, mine: Vec<(usize, usize)>) -> Result<Duration, LoadError> {
    // The kernel may defer a timer's expiry by the thread's timer slack (50 us by
    // default) to batch wake-ups; a schedule held to microseconds wants none.
    let _ = nix::sys::prctl::set_timerslack(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Internal(format!("cannot build runtime: {e}")));
    let timer = rt.and_then(|rt| {
        let timer = rt.block_on(async { Timer::new() });
        timer.map(|t| (rt, t))
    });
    let (rt, mut timer) = match timer {
        Ok(ok) => ok,
        Err(e) => {
            ctx.start.abandon();
            return Err(e);
        }
    };
    // Local tasks: the dispatcher is shared by this thread's tasks without locks.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut conns = Vec::with_capacity(mine.len());
        for (_, ti) in mine {
            conns.push((ti, Conn::new(ctx.targets[ti].clone())));
        }
        let opened = conns.iter_mut().map(|(_, c)| c);
        let Some(t0) = open_and_start(opened, ctx.timeout, ctx.start).await? else {
            return Ok(Duration::ZERO);
        };
        let owners = ctx.owners.clone();
        let me = ctx.thread;
        let jobs = ctx.schedule.clone().filter(move |job| owners.of(job) == me);
        let dispatch = Dispatch::new(
            Box::new(jobs),
            conns,
            Pool {
                targets: ctx.targets.clone(),
                spare: ctx.spare.into_iter().map(Cell::new).collect(),
                connecting: Cell::new(0),
            },
            ctx.prepared.clone(),
            ctx.shared.clone(),
            me,
            t0,
            (ctx.cancel.clone(), ctx.timeout),
        );
        for w in 0..dispatch.slots.borrow().len() {
            dispatch.start_worker(w, false);
        }
        let stopped = {
            let _close = CloseOnDrop(&dispatch);
            release(&dispatch, t0, ctx.end, &ctx.cancel, &mut timer).await?
        };
        // Closed: no worker is added any more (only a release adds one).
        let mut workers = std::mem::take(&mut *dispatch.workers.borrow_mut());
        while let Some(r) = workers.join_next().await {
            r.map_err(|e| LoadError::Internal(format!("worker task: {e}")))?;
        }
        Ok(stopped)
    })
}

/// Releases this thread's scheduled requests at their intended instants; returns the
/// offset at which it stopped (`end`, or the cancellation time). Workers also release
/// what has come due each time they finish a response (see [`Dispatch::release_due`]),
/// so this timer matters when the thread is otherwise idle.
async fn release(
    dispatch: &Dispatch,
    t0: Instant,
    end: Duration,
    cancel: &CancellationToken,
    timer: &mut Timer,
) -> Result<Duration, LoadError> {
    let mut behind = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Ok(t0.elapsed().min(end));
        }
        let Some(next) = dispatch.next_due() else {
            return Ok(end);
        };
        let due = t0 + next;
        if Instant::now() < due {
            behind = 0;
            // Sleep on the timer until shortly before the due instant, then spin: a
            // wake-up from sleep takes tens of microseconds here (more in a VM), a
            // yielding spin lets this thread's workers and its IO run meanwhile (and
            // they may release the request themselves).
            if let Some(wake) = due.checked_sub(SPIN_BEFORE_DUE) {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(t0.elapsed().min(end)),
                    r = timer.sleep_until(wake) => r?,
                }
            }
            while Instant::now() < due {
                if cancel.is_cancelled() {
                    return Ok(t0.elapsed().min(end));
                }
                tokio::task::yield_now().await;
            }
        } else {
            // Behind schedule: release what is due, but let the workers run now and then.
            behind += 1;
            if behind % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        dispatch.release_due(Instant::now());
    }
}

/// The load threads' microsecond timer (the `timerfd` crate: tokio's wheel rounds to
/// whole milliseconds), with errors as [`LoadError`]s.
struct Timer(timerfd::Timer);

impl Timer {
    /// Needs a tokio runtime with IO enabled.
    fn new() -> Result<Self, LoadError> {
        timerfd::Timer::new()
            .map(Timer)
            .map_err(|e| LoadError::Internal(format!("cannot create a timerfd: {e}")))
    }

    /// Sleeps until `due` (returns at once when it has passed).
    async fn sleep_until(&mut self, due: Instant) -> Result<(), LoadError> {
        self.0
            .sleep_until(due)
            .await
            .map_err(|e| LoadError::Internal(format!("timerfd: {e}")))
    }
}

/// One load thread's share of the schedule and its connections, shared by the thread's
/// tasks (all on one thread: `Rc`, `RefCell`, no locks).
///
/// A request comes due and is released by whichever runs first: the release task's
/// timer, or a worker that has just finished a response (it checks the clock then). If
/// one of its target's connections is idle, the releaser writes the request on it at
/// once ([`Conn::try_send`]: the send instant is the due instant plus the time to get
/// there) and wakes that connection's worker to read the response. If none is idle the
/// request joins the target's backlog, which workers take from as they come free, and
/// while the pool may still grow ([`OpenLoopSpec::max_connections`]) the releaser adds a
/// connection whose worker connects and then takes from it ([`Dispatch::grow`]). So a
/// request never waits for a task switch or for a batch of other tasks' responses to be
/// processed before it is sent, only for a free connection (send lag grows, honestly).
struct Dispatch {
    /// The rest of this thread's schedule; `None` once closed (ended or cancelled).
    jobs: RefCell<Option<std::iter::Peekable<Box<dyn Iterator<Item = Scheduled>>>>>,
    /// Connection `w` is worker `w`'s; grows while the run goes on, never shrinks.
    slots: RefCell<Vec<Rc<Slot>>>,
    /// Per target: idle workers (LIFO: the warmest connection first).
    idle: Vec<RefCell<Vec<usize>>>,
    /// Per target: released requests waiting for a free connection.
    backlog: Vec<RefCell<VecDeque<Scheduled>>>,
    pool: Pool,
    /// The workers' tasks, those added during the run too.
    workers: RefCell<JoinSet<()>>,
    prepared: Arc<Vec<Vec<Prepared>>>,
    shared: Arc<Shared>,
    shard: usize,
    t0: Instant,
    cancel: CancellationToken,
    timeout: Duration,
    /// Itself, for the workers it starts.
    me: Weak<Dispatch>,
}

/// What a load thread needs to add connections: the targets, and per target how many
/// more it may open ([`Owners::spare`]; counted down as it opens them).
struct Pool {
    targets: Vec<Arc<crate::conn::Target>>,
    spare: Vec<Cell<usize>>,
    /// Connects under way for added connections (at most [`MAX_CONNECTING`]).
    connecting: Cell<usize>,
}

/// One connection and its worker's mailbox.
struct Slot {
    target: usize,
    /// The connection; taken out by the worker while it executes a request.
    conn: RefCell<Option<Conn>>,
    /// A request handed to this (idle) worker, and how far its send got.
    assigned: Cell<Option<(Scheduled, Handover)>>,
    wake: Notify,
}

impl Slot {
    /// An idle connection's slot, nothing assigned.
    fn new(target: usize, conn: Conn) -> Rc<Self> {
        Rc::new(Slot {
            target,
            conn: RefCell::new(Some(conn)),
            assigned: Cell::new(None),
            wake: Notify::new(),
        })
    }
}

impl Dispatch {
    #[allow(clippy::too_many_arguments)] // one constructor, called once per thread
    fn new(
        jobs: Box<dyn Iterator<Item = Scheduled>>,
        conns: Vec<(usize, Conn)>,
        pool: Pool,
        prepared: Arc<Vec<Vec<Prepared>>>,
        shared: Arc<Shared>,
        shard: usize,
        t0: Instant,
        (cancel, timeout): (CancellationToken, Duration),
    ) -> Rc<Self> {
        let targets = pool.targets.len();
        Rc::new_cyclic(|me| Dispatch {
            jobs: RefCell::new(Some(jobs.peekable())),
            slots: RefCell::new(
                conns
                    .into_iter()
                    .map(|(target, conn)| Slot::new(target, conn))
                    .collect(),
            ),
            idle: (0..targets).map(|_| RefCell::new(Vec::new())).collect(),
            backlog: (0..targets)
                .map(|_| RefCell::new(VecDeque::new()))
                .collect(),
            pool,
            workers: RefCell::new(JoinSet::new()),
            prepared,
            shared,
            shard,
            t0,
            cancel,
            timeout,
            me: me.clone(),
        })
    }

    /// Starts worker `w` on this thread (needs the thread's `LocalSet`); `added`: its
    /// connection is new ([`Dispatch::grow`]) and must connect first.
    fn start_worker(&self, w: usize, added: bool) {
        let Some(me) = self.me.upgrade() else { return };
        self.workers.borrow_mut().spawn_local(async move {
            let slot = me.slots.borrow()[w].clone();
            if !added || me.open_added(&slot).await {
                me.work(w).await;
            }
        });
    }

    /// The intended offset of the next request not yet released; `None` when closed or
    /// the schedule is done.
    fn next_due(&self) -> Option<Duration> {
        self.jobs.borrow_mut().as_mut()?.peek().map(|j| j.intended)
    }

    /// Releases every request due by `now` (none once closed).
    fn release_due(&self, now: Instant) {
        loop {
            let job = {
                let mut jobs = self.jobs.borrow_mut();
                let Some(jobs) = jobs.as_mut() else { return };
                match jobs.peek() {
                    Some(j) if self.t0 + j.intended <= now => jobs.next(),
                    _ => return,
                }
            };
            let Some(job) = job else { return };
            self.shared.sent(self.shard);
            let free = self.idle[job.target].borrow_mut().pop();
            match free {
                Some(w) => {
                    let slots = self.slots.borrow();
                    let slot = &slots[w];
                    let req = &self.prepared[job.target][job.template];
                    // An idle worker's connection is in its slot.
                    let handover = match slot.conn.borrow_mut().as_mut() {
                        Some(conn) => conn.try_send(req),
                        None => Handover::NotSent,
                    };
                    slot.assigned.set(Some((job, handover)));
                    slot.wake.notify_one();
                }
                None => {
                    let target = job.target;
                    self.backlog[target].borrow_mut().push_back(job);
                    self.grow(target);
                }
            }
        }
    }

    /// Opens one more connection to target `t` for its backlog, if the pool may still
    /// grow there and fewer than [`MAX_CONNECTING`] of this thread's connects are under
    /// way. Its worker connects, then takes from the backlog like any other: requests
    /// keep their order, and a connection that comes free meanwhile serves the backlog
    /// first. Bounding the connects under way keeps the growth to what the backlog needs:
    /// each connect costs the thread time, and opening one per waiting request at a stall
    /// would make the stall longer and open still more.
    fn grow(&self, t: usize) {
        let spare = &self.pool.spare[t];
        let connecting = &self.pool.connecting;
        if spare.get() == 0 || connecting.get() >= MAX_CONNECTING || self.closed() {
            return;
        }
        spare.set(spare.get() - 1);
        connecting.set(connecting.get() + 1);
        let conn = Conn::new(self.pool.targets[t].clone());
        let w = {
            let mut slots = self.slots.borrow_mut();
            slots.push(Slot::new(t, conn));
            slots.len() - 1
        };
        self.start_worker(w, true);
    }

    /// A new connection of [`Dispatch::grow`]: connects, and joins the pool unless the
    /// generator ran out of descriptors or ports (then the target's pool stops growing:
    /// each further connect would fail the same way). Returns whether it joined.
    async fn open_added(&self, slot: &Slot) -> bool {
        let mut conn = slot
            .conn
            .take()
            .expect("a new worker's connection is in its slot");
        let opened = conn.warm(self.timeout).await;
        *slot.conn.borrow_mut() = Some(conn);
        let connecting = &self.pool.connecting;
        connecting.set(connecting.get().saturating_sub(1));
        if opened == Err(crate::counts::ErrorKind::GeneratorResources) {
            self.pool.spare[slot.target].set(0);
            return false;
        }
        // Counted once it is in the pool: a connect that failed for want of descriptors
        // added nothing.
        self.shared.added.fetch_add(1, Ordering::Relaxed);
        // More waiting than this connection takes: the backlog still needs another.
        if self.backlog[slot.target].borrow().len() > 1 {
            self.grow(slot.target);
        }
        true
    }

    /// Stops releasing and wakes every idle worker so it can drain its backlog and end.
    fn close(&self) {
        *self.jobs.borrow_mut() = None;
        for idle in &self.idle {
            for w in idle.borrow_mut().drain(..) {
                self.slots.borrow()[w].wake.notify_one();
            }
        }
    }

    fn closed(&self) -> bool {
        self.jobs.borrow().is_none()
    }

    /// Worker `w`: executes what it is handed or takes from its target's backlog,
    /// releasing what has come due after each response, until the dispatcher is closed
    /// and the backlog empty. A request taken from the backlog after cancellation, or
    /// after waiting longer than the timeout since its intended send, is counted as
    /// `dropped_by_generator` instead of sent (README: "When the generator drops a
    /// request").
    async fn work(&self, w: usize) {
        let slot = self.slots.borrow()[w].clone();
        let (t0, cancel, timeout) = (self.t0, &self.cancel, self.timeout);
        loop {
            let next = slot.assigned.take().or_else(|| {
                let job = self.backlog[slot.target].borrow_mut().pop_front();
                job.map(|j| (j, Handover::NotSent))
            });
            let Some((job, handover)) = next else {
                if self.closed() {
                    return;
                }
                // Open connections first (the top is taken first): one whose connect
                // failed would otherwise take every request and fail it at once.
                let open = slot.conn.borrow().as_ref().is_some_and(Conn::is_open);
                {
                    let mut idle = self.idle[slot.target].borrow_mut();
                    if open {
                        idle.push(w);
                    } else {
                        idle.insert(0, w);
                    }
                }
                slot.wake.notified().await;
                continue;
            };
            let waited = Instant::now().saturating_duration_since(t0 + job.intended);
            let unsent = handover == Handover::NotSent;
            let outcome = if unsent && (cancel.is_cancelled() || waited > timeout) {
                Outcome {
                    intended: job.intended,
                    actual: None,
                    done: t0.elapsed(),
                    result: Completion::Dropped,
                    stream: None,
                    bytes_read: 0,
                }
            } else {
                let req = &self.prepared[job.target][job.template];
                let mut conn = slot
                    .conn
                    .take()
                    .expect("only this worker takes its connection");
                let outcome = conn
                    .execute_sent(req, t0, Some(job.intended), handover, timeout)
                    .await;
                *slot.conn.borrow_mut() = Some(conn);
                outcome
            };
            self.shared.record(self.shard, slot.target, &outcome);
            self.release_due(Instant::now());
        }
    }
}

/// Closes the dispatcher when the release ends, however it ends, so workers drain and exit.
struct CloseOnDrop<'a>(&'a Dispatch);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
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
    let (starts, t0_rx) = StartLine::new(threads, Duration::ZERO);
    let mut handles = Vec::with_capacity(threads);
    for (th, start) in starts.into_iter().enumerate() {
        let mine = connections_of(th, threads, total, targets.len());
        let ctx = ClosedCtx {
            targets: targets.clone(),
            prepared: prepared.clone(),
            shared: shared.clone(),
            weights: weights.clone(),
            cancel: cancel.clone(),
            start,
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
    finish_threads(handles, t0_rx, shared, progress, load.seed, (total, total)).await
}

struct ClosedCtx {
    targets: Vec<Arc<crate::conn::Target>>,
    prepared: Arc<Vec<Vec<Prepared>>>,
    shared: Arc<Shared>,
    weights: Arc<[f64]>,
    cancel: CancellationToken,
    start: StartLine,
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
            ctx.start.abandon();
            return Err(LoadError::Internal(format!("cannot build runtime: {e}")));
        }
    };
    rt.block_on(async move {
        let mut conns = Vec::with_capacity(mine.len());
        for (i, ti) in mine {
            conns.push((i, ti, Conn::new(ctx.targets[ti].clone())));
        }
        let opened = conns.iter_mut().map(|(_, _, c)| c);
        let Some(t0) = open_and_start(opened, ctx.timeout, ctx.start).await? else {
            return Ok(Duration::ZERO);
        };
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
                    shared.record(shard, ti, &outcome);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, targets: usize) -> Scheduled {
        Scheduled {
            seq,
            intended: Duration::ZERO,
            template: 0,
            target: (seq % targets as u64) as usize,
        }
    }

    #[test]
    fn each_request_goes_to_exactly_one_thread_holding_its_target() {
        for targets in 1..=5 {
            for per_target in 1..=4 {
                let total = targets * per_target;
                for threads in 1..=total {
                    let owners = Owners::new(targets, total, threads);
                    let mut per_thread = vec![0usize; threads];
                    for seq in 0..(targets * 60) as u64 {
                        let j = job(seq, targets);
                        let th = owners.of(&j);
                        // The thread holds a connection to the request's target.
                        assert!(
                            (0..total).any(|i| i % targets == j.target && i % threads == th),
                            "targets {targets} x {per_target}, threads {threads}, seq {seq}"
                        );
                        per_thread[th] += 1;
                    }
                    // A target's requests take turns among its threads: a thread's share
                    // follows its connections, so none idles while holding connections.
                    for (th, n) in per_thread.iter().enumerate() {
                        let holds = (0..total).any(|i| i % threads == th);
                        assert_eq!(*n > 0, holds, "thread {th} of {threads}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_targets_extra_connections_go_to_the_threads_holding_it_and_add_up() {
        for targets in 1..5 {
            for conns in 1..5 {
                let total = targets * conns;
                for threads in 1..=total {
                    let owners = Owners::new(targets, total, threads);
                    for extra in [0, 1, 3, 7] {
                        for t in 0..targets {
                            let shares: Vec<usize> =
                                (0..threads).map(|th| owners.spare(th, t, extra)).collect();
                            assert_eq!(shares.iter().sum::<usize>(), extra, "{shares:?}");
                            for (th, n) in shares.iter().enumerate() {
                                if *n > 0 {
                                    assert!(owners.by_target[t].contains(&th));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
