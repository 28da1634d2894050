//! Histogram windowing: request outcomes in, per-window and per-phase statistics out.
//!
//! Sans-IO. Every outcome is filed under its *intended* send time (window, fine window and
//! phase), so a window's `sent` always equals its `ok + errors + timeouts + dropped`.
//! Only `completed` and `responses` (throughput) are filed under the completion time.
//!
//! Two corrected-latency histograms: `latency` holds successes only (what SLO bounds and
//! goodput compare against), `latency_all` every request, a failed one at the moment it
//! was given up, so its percentiles are never better than what clients saw (see
//! [`LatencyStats::latency_all`]).
//! Recorders from several shards merge exactly (histogram addition), so the hot path never
//! shares one.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::counts::{Completion, Counts};

/// Significant digits of every histogram (metrics.md).
pub const SIGFIG: u8 = 3;

/// A new empty, auto-resizing microsecond histogram with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    let mut h =
        Histogram::new(SIGFIG).expect("3 significant digits is a valid histogram precision");
    h.auto(true);
    h
}

fn as_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Latency distributions of a window or phase (all microseconds, 3 significant digits,
/// mergeable with [`Histogram::add`]) and its per-response totals.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    /// Coordinated-omission corrected: intended send → last byte, successful requests.
    /// Under overload it leaves out exactly the requests that fared worst (timeouts,
    /// drops): read it beside [`LatencyStats::latency_all`] and the accounting.
    pub latency: Histogram<u64>,
    /// Coordinated-omission corrected, *every* request of the span (`len() == counts.sent`):
    /// intended send → the moment the request ended or was given up. A success counts
    /// until its last byte; an error until it was known (a refused connect or a fast 503
    /// is short: that is what its client saw); a timeout until the timeout fired, and
    /// never less than the request timeout; a generator drop until it was dropped, that
    /// is the time it waited for a connection. Its percentiles are therefore never better
    /// than what clients experienced.
    pub latency_all: Histogram<u64>,
    /// Actual send → last byte, successful requests (uncorrected service time).
    pub service: Histogram<u64>,
    /// Actual − intended send, every request that was sent (vLLM's client queue time).
    pub send_lag: Histogram<u64>,
    /// Intended send → first content event (streaming, successful requests).
    pub ttft: Histogram<u64>,
    /// Gaps between consecutive content events of one response.
    pub itl: Histogram<u64>,
    /// `(e2e − TTFT) / (output_tokens − 1)` per response with at least 2 tokens.
    pub tpot: Histogram<u64>,
    /// Output tokens of successful streaming responses (usage if reported, else events).
    pub output_tokens: u64,
    /// Whole responses of any status (2xx or not, wrk's "requests") *completed* in the
    /// span: filed by completion time like [`WindowStats::completed`], which counts the
    /// 2xx ones; in a phase, only those also intended in it.
    pub responses: u64,
    /// Bytes read from the socket for the span's requests (heads, bodies and framing of
    /// every response, failed ones and the part of a timed-out one too), filed by intended
    /// send time.
    pub bytes_read: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            latency: new_histogram(),
            latency_all: new_histogram(),
            service: new_histogram(),
            send_lag: new_histogram(),
            ttft: new_histogram(),
            itl: new_histogram(),
            tpot: new_histogram(),
            output_tokens: 0,
            responses: 0,
            bytes_read: 0,
        }
    }
}

impl LatencyStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &LatencyStats) {
        add(&mut self.latency, &other.latency);
        add(&mut self.latency_all, &other.latency_all);
        add(&mut self.service, &other.service);
        add(&mut self.send_lag, &other.send_lag);
        add(&mut self.ttft, &other.ttft);
        add(&mut self.itl, &other.itl);
        add(&mut self.tpot, &other.tpot);
        self.output_tokens += other.output_tokens;
        self.responses += other.responses;
        self.bytes_read += other.bytes_read;
    }
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if !from.is_empty() {
        into.add(from)
            .expect("auto-resizing histograms of equal precision always add");
    }
}

/// Statistics of requests whose intended send time falls in `[start, start + width)`.
#[derive(Debug, Clone)]
pub struct WindowStats {
    /// Offset from [`LoadReport::started_at`].
    pub start: Duration,
    pub width: Duration,
    pub counts: Counts,
    /// Successful requests whose *completion* time falls in this window (throughput).
    pub completed: u64,
    pub stats: LatencyStats,
}

/// Request counts by intended send time over a narrow window (failover analysis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FineWindow {
    /// JSON: `start_s`, seconds (as the 1 s windows' `start_s`).
    #[serde(rename = "start_s", with = "secs_f64")]
    pub start: Duration,
    pub sent: u64,
    pub ok: u64,
    /// errors + timeouts + generator drops.
    pub failed: u64,
}

/// A [`Duration`] as seconds in JSON (`serde(with)`).
mod secs_f64 {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(D::Error::custom)
    }
}

/// Statistics of a phase (warm-up or measured), by intended send time.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    pub start: Duration,
    pub end: Duration,
    pub counts: Counts,
    /// Successful requests completed within `[start, end)`.
    pub completed: u64,
    pub stats: LatencyStats,
}

impl PhaseStats {
    /// `n` per second of the phase; 0 for an empty phase.
    fn per_s(&self, n: u64) -> f64 {
        let secs = (self.end.saturating_sub(self.start)).as_secs_f64();
        if secs > 0.0 {
            n as f64 / secs
        } else {
            0.0
        }
    }

    /// Successful (2xx) completions per second within the phase: wrk's count of 2xx
    /// responses, what `faultline load` prints as "Successes/sec".
    pub fn throughput_per_s(&self) -> f64 {
        self.per_s(self.completed)
    }

    /// Responses of any status completed per second within the phase: wrk's
    /// "Requests/sec".
    pub fn requests_per_s(&self) -> f64 {
        self.per_s(self.stats.responses)
    }

    /// Bytes read per second of the phase: wrk's "Transfer/sec".
    pub fn bytes_read_per_s(&self) -> f64 {
        self.per_s(self.stats.bytes_read)
    }

    /// Output tokens per second of the phase.
    pub fn output_tokens_per_s(&self) -> f64 {
        self.per_s(self.stats.output_tokens)
    }
}

/// Everything a run measured. All offsets are from `started_at` (t = 0, the first
/// intended send).
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub started_at: SystemTime,
    /// The seed every random choice came from.
    pub seed: u64,
    /// Windows of `spec.window` by intended send time, covering warm-up and measured
    /// phase (plus trailing windows that only hold completions).
    pub windows: Vec<WindowStats>,
    /// Windows of `spec.fine_window` by intended send time.
    pub fine: Vec<FineWindow>,
    pub warmup: PhaseStats,
    pub measured: PhaseStats,
    /// The whole run.
    pub accounting: Counts,
    /// The whole run (warm-up included) per target, in the order of the spec's targets:
    /// which target took the failures. Their counts add up to `accounting`.
    pub targets: Vec<TargetStats>,
    /// How many connections the run opened, and how many it could have.
    pub connections: ConnectionUse,
}

/// The connections a run held, over all its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionUse {
    /// Opened before t = 0: `connections` per target.
    pub initial: u64,
    /// Opened during an open-loop run because a request came due while every connection
    /// to its target was busy ([`crate::OpenLoopSpec::max_connections`]); 0 in a closed
    /// loop and when the pool may not grow.
    pub added: u64,
    /// The most the run could hold: `max_connections` per target (`initial` when the pool
    /// may not grow).
    pub limit: u64,
}

impl ConnectionUse {
    fn merge(&mut self, other: &ConnectionUse) {
        self.initial += other.initial;
        self.added += other.added;
        self.limit += other.limit;
    }
}

/// One target's requests over the whole run, by intended send time: what says which
/// target took the failures, and no more (each request is filed here too, on the hot path).
#[derive(Debug, Clone)]
pub struct TargetStats {
    pub counts: Counts,
    /// As [`LatencyStats::latency`]: successful requests, corrected.
    pub latency: Histogram<u64>,
    /// As [`LatencyStats::latency_all`]: every request, a failure until it was given up.
    pub latency_all: Histogram<u64>,
}

/// The accumulator behind [`TargetStats`].
#[derive(Debug, Clone, Default)]
struct TargetAcc {
    counts: Counts,
    latency: Option<Histogram<u64>>,
    latency_all: Option<Histogram<u64>>,
}

impl TargetAcc {
    fn record(&mut self, o: &Outcome, timeout: Duration) {
        self.counts.record(&o.result);
        rec(&mut self.latency_all, as_us(given_up_after(o, timeout)));
        if o.result == Completion::Ok {
            rec(&mut self.latency, as_us(o.done.saturating_sub(o.intended)));
        }
    }

    fn merge(&mut self, other: TargetAcc) {
        self.counts.merge(&other.counts);
        merge_opt(&mut self.latency, other.latency);
        merge_opt(&mut self.latency_all, other.latency_all);
    }

    fn finish(self) -> TargetStats {
        let h = |o: Option<Histogram<u64>>| o.unwrap_or_else(new_histogram);
        TargetStats {
            counts: self.counts,
            latency: h(self.latency),
            latency_all: h(self.latency_all),
        }
    }
}

impl LoadReport {
    /// Whether the accounting balances everywhere: overall, per phase, per window and
    /// per fine window. A run for which this is false is a failed run.
    pub fn balanced(&self) -> bool {
        let mut by_target = Counts::default();
        for t in &self.targets {
            by_target.merge(&t.counts);
        }
        self.accounting.balanced()
            && (self.targets.is_empty() || by_target == self.accounting)
            && self.targets.iter().all(|t| t.counts.balanced())
            && self.warmup.counts.balanced()
            && self.measured.counts.balanced()
            && self.windows.iter().all(|w| w.counts.balanced())
            && self.fine.iter().all(|f| f.sent == f.ok + f.failed)
    }
}

impl LoadReport {
    /// Adds `other`, a load run beside this one (another client of the same workload),
    /// into `self`: counts, histograms and totals of every window, fine window, phase and
    /// target add up, so every request of both is counted once and the accounting of the
    /// sum balances when both do. `started_at` becomes the earlier of the two; the
    /// phases span both.
    ///
    /// Windows and targets merge by index: each report's offsets are from its own t = 0,
    /// so a request of a load that started `d` later is filed `d` early on the earlier
    /// one's clock. Loads started together (within a small part of a fine window) merge
    /// as if they were one. Both reports must use the same window widths and phases (one
    /// [`crate::LoadSpec`] apart from rate, seed and targets); targets at the same index
    /// are taken to be the same replica reached from another place.
    pub fn merge(&mut self, other: LoadReport) {
        debug_assert!(
            self.windows.first().map(|w| w.width) == other.windows.first().map(|w| w.width)
                || self.windows.is_empty()
                || other.windows.is_empty(),
            "merged reports have the same window width"
        );
        self.started_at = self.started_at.min(other.started_at);
        for (i, w) in other.windows.into_iter().enumerate() {
            match self.windows.get_mut(i) {
                Some(mine) => {
                    mine.counts.merge(&w.counts);
                    mine.completed += w.completed;
                    mine.stats.merge(&w.stats);
                }
                None => self.windows.push(w),
            }
        }
        for (i, f) in other.fine.iter().enumerate() {
            match self.fine.get_mut(i) {
                Some(mine) => add_fine(mine, f),
                None => self.fine.push(*f),
            }
        }
        merge_phase(&mut self.warmup, &other.warmup);
        merge_phase(&mut self.measured, &other.measured);
        self.accounting.merge(&other.accounting);
        self.connections.merge(&other.connections);
        for (i, t) in other.targets.into_iter().enumerate() {
            match self.targets.get_mut(i) {
                Some(mine) => {
                    mine.counts.merge(&t.counts);
                    add(&mut mine.latency, &t.latency);
                    add(&mut mine.latency_all, &t.latency_all);
                }
                None => self.targets.push(t),
            }
        }
    }
}

fn merge_phase(into: &mut PhaseStats, from: &PhaseStats) {
    into.start = into.start.min(from.start);
    into.end = into.end.max(from.end);
    into.counts.merge(&from.counts);
    into.completed += from.completed;
    into.stats.merge(&from.stats);
}

/// Streaming timings of one response, as offsets on the caller's clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamTimes {
    /// Arrival of the first content event.
    pub first_token: Option<Duration>,
    /// Gaps between consecutive content events, microseconds.
    pub itl_us: Vec<u64>,
    /// Output tokens: `usage.completion_tokens` if reported, else content events.
    pub tokens: u64,
}

/// How one request went (offsets from t0).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub intended: Duration,
    /// When the generator started sending; `None` if it never did (dropped).
    pub actual: Option<Duration>,
    /// Last byte, error or timeout.
    pub done: Duration,
    pub result: Completion,
    pub stream: Option<StreamTimes>,
    /// Bytes read from the socket for this request (0 if it was never sent).
    pub bytes_read: u64,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    counts: Counts,
    completed: u64,
    latency: Option<Histogram<u64>>,
    latency_all: Option<Histogram<u64>>,
    service: Option<Histogram<u64>>,
    send_lag: Option<Histogram<u64>>,
    ttft: Option<Histogram<u64>>,
    itl: Option<Histogram<u64>>,
    tpot: Option<Histogram<u64>>,
    output_tokens: u64,
    responses: u64,
    bytes_read: u64,
}

fn rec(h: &mut Option<Histogram<u64>>, v: u64) {
    let h = h.get_or_insert_with(new_histogram);
    // Auto-resizing: `record` grows the range; it can only fail beyond what any range
    // holds, where clamping is the best left to do.
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

fn merge_opt(into: &mut Option<Histogram<u64>>, from: Option<Histogram<u64>>) {
    match (into.as_mut(), from) {
        (_, None) => {}
        (None, Some(f)) => *into = Some(f),
        (Some(i), Some(f)) => add(i, &f),
    }
}

/// What a request counts in [`LatencyStats::latency_all`]: intended send → when it ended
/// or was given up, and for a timeout never less than `timeout` (the connection's timer
/// fires at or after it; the floor makes the rule hold whatever the timer did).
fn given_up_after(o: &Outcome, timeout: Duration) -> Duration {
    let e2e = o.done.saturating_sub(o.intended);
    match o.result {
        Completion::Timeout => e2e.max(timeout),
        Completion::Ok | Completion::Error(_) | Completion::Dropped => e2e,
    }
}

impl Acc {
    fn record(&mut self, o: &Outcome, timeout: Duration) {
        self.counts.record(&o.result);
        self.bytes_read += o.bytes_read;
        rec(&mut self.latency_all, as_us(given_up_after(o, timeout)));
        if let Some(actual) = o.actual {
            rec(&mut self.send_lag, as_us(actual.saturating_sub(o.intended)));
        }
        if o.result != Completion::Ok {
            return;
        }
        let e2e = o.done.saturating_sub(o.intended);
        rec(&mut self.latency, as_us(e2e));
        if let Some(actual) = o.actual {
            rec(&mut self.service, as_us(o.done.saturating_sub(actual)));
        }
        if let Some(s) = &o.stream {
            self.output_tokens += s.tokens;
            if let Some(first) = s.first_token {
                let ttft = first.saturating_sub(o.intended);
                rec(&mut self.ttft, as_us(ttft));
                if s.tokens > 1 {
                    let tpot =
                        e2e.saturating_sub(ttft) / u32::try_from(s.tokens - 1).unwrap_or(u32::MAX);
                    rec(&mut self.tpot, as_us(tpot));
                }
            }
            for &gap in &s.itl_us {
                rec(&mut self.itl, gap);
            }
        }
    }

    fn merge(&mut self, other: Acc) {
        self.counts.merge(&other.counts);
        self.completed += other.completed;
        merge_opt(&mut self.latency, other.latency);
        merge_opt(&mut self.latency_all, other.latency_all);
        merge_opt(&mut self.service, other.service);
        merge_opt(&mut self.send_lag, other.send_lag);
        merge_opt(&mut self.ttft, other.ttft);
        merge_opt(&mut self.itl, other.itl);
        merge_opt(&mut self.tpot, other.tpot);
        self.output_tokens += other.output_tokens;
        self.responses += other.responses;
        self.bytes_read += other.bytes_read;
    }

    fn into_parts(self) -> (Counts, u64, LatencyStats) {
        let h = |o: Option<Histogram<u64>>| o.unwrap_or_else(new_histogram);
        let stats = LatencyStats {
            latency: h(self.latency),
            latency_all: h(self.latency_all),
            service: h(self.service),
            send_lag: h(self.send_lag),
            ttft: h(self.ttft),
            itl: h(self.itl),
            tpot: h(self.tpot),
            output_tokens: self.output_tokens,
            responses: self.responses,
            bytes_read: self.bytes_read,
        };
        (self.counts, self.completed, stats)
    }
}

/// Files outcomes into windows and phases. One per shard; merged at the end.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    window: Duration,
    fine_window: Duration,
    warmup: Duration,
    end: Duration,
    /// The request timeout: the floor of a timed-out request in `latency_all`.
    timeout: Duration,
    windows: Vec<Acc>,
    fine: Vec<FineWindow>,
    phases: [Acc; 2],
    /// The whole run per target (index into the spec's targets).
    targets: Vec<TargetAcc>,
}

fn index(t: Duration, width: Duration) -> usize {
    usize::try_from(t.as_nanos() / width.as_nanos().max(1)).unwrap_or(usize::MAX)
}

impl Recorder {
    /// Warm-up is `[0, warmup)`, the measured phase `[warmup, end)`; `timeout` is the
    /// request timeout (a timed-out request counts at least this in `latency_all`).
    pub fn new(
        window: Duration,
        fine_window: Duration,
        warmup: Duration,
        end: Duration,
        timeout: Duration,
    ) -> Self {
        Recorder {
            window,
            fine_window,
            warmup,
            end,
            timeout,
            windows: Vec::new(),
            fine: Vec::new(),
            phases: Default::default(),
            targets: Vec::new(),
        }
    }

    /// Reports `n` targets even if some get no request.
    pub fn with_targets(mut self, n: usize) -> Self {
        self.targets.resize_with(n, TargetAcc::default);
        self
    }

    /// [`Recorder::record_at`] target 0.
    #[cfg(test)]
    pub fn record(&mut self, o: &Outcome) {
        self.record_at(0, o);
    }

    fn window_mut(&mut self, i: usize) -> &mut Acc {
        if self.windows.len() <= i {
            self.windows.resize_with(i + 1, Acc::default);
        }
        &mut self.windows[i]
    }

    /// Files the outcome of a request sent to target `target`.
    pub fn record_at(&mut self, target: usize, o: &Outcome) {
        let ok = o.result == Completion::Ok;
        let response = o.result.is_response();
        let timeout = self.timeout;
        if self.targets.len() <= target {
            self.targets.resize_with(target + 1, TargetAcc::default);
        }
        self.targets[target].record(o, timeout);
        self.window_mut(index(o.intended, self.window))
            .record(o, timeout);
        if response {
            let done = self.window_mut(index(o.done, self.window));
            done.responses += 1;
            done.completed += u64::from(ok);
        }
        let fi = index(o.intended, self.fine_window);
        if self.fine.len() <= fi {
            let width = self.fine_window;
            let len = self.fine.len();
            self.fine.extend((len..=fi).map(|i| FineWindow {
                start: width * u32::try_from(i).unwrap_or(u32::MAX),
                ..FineWindow::default()
            }));
        }
        let f = &mut self.fine[fi];
        f.sent += 1;
        if ok {
            f.ok += 1;
        } else {
            f.failed += 1;
        }
        let p = usize::from(o.intended >= self.warmup);
        self.phases[p].record(o, timeout);
        if response {
            let (start, end) = self.phase_bounds(p);
            if (start..end).contains(&o.done) {
                self.phases[p].responses += 1;
                self.phases[p].completed += u64::from(ok);
            }
        }
    }

    fn phase_bounds(&self, p: usize) -> (Duration, Duration) {
        if p == 0 {
            (Duration::ZERO, self.warmup)
        } else {
            (self.warmup, self.end)
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        for (i, w) in other.windows.into_iter().enumerate() {
            self.window_mut(i).merge(w);
        }
        if self.fine.len() < other.fine.len() {
            let len = self.fine.len();
            self.fine.extend_from_slice(&other.fine[len..]);
            for (mine, theirs) in self.fine.iter_mut().zip(&other.fine).take(len) {
                add_fine(mine, theirs);
            }
        } else {
            for (mine, theirs) in self.fine.iter_mut().zip(&other.fine) {
                add_fine(mine, theirs);
            }
        }
        let [w, m] = other.phases;
        self.phases[0].merge(w);
        self.phases[1].merge(m);
        if self.targets.len() < other.targets.len() {
            self.targets
                .resize_with(other.targets.len(), TargetAcc::default);
        }
        for (mine, theirs) in self.targets.iter_mut().zip(other.targets) {
            mine.merge(theirs);
        }
    }

    /// Builds the report; `measured_end` may be earlier than the nominal end (cancelled).
    pub fn finish(
        mut self,
        started_at: SystemTime,
        seed: u64,
        measured_end: Duration,
    ) -> LoadReport {
        let total_windows = index(
            self.end.saturating_sub(Duration::from_nanos(1)),
            self.window,
        ) + 1;
        if self.windows.len() < total_windows {
            self.windows.resize_with(total_windows, Acc::default);
        }
        let total_fine = index(
            self.end.saturating_sub(Duration::from_nanos(1)),
            self.fine_window,
        ) + 1;
        let fine_width = self.fine_window;
        let len = self.fine.len();
        self.fine.extend((len..total_fine).map(|i| FineWindow {
            start: fine_width * u32::try_from(i).unwrap_or(u32::MAX),
            ..FineWindow::default()
        }));
        let width = self.window;
        let windows = self
            .windows
            .into_iter()
            .enumerate()
            .map(|(i, acc)| {
                let (counts, completed, stats) = acc.into_parts();
                WindowStats {
                    start: width * u32::try_from(i).unwrap_or(u32::MAX),
                    width,
                    counts,
                    completed,
                    stats,
                }
            })
            .collect();
        let [w, m] = self.phases;
        let mut accounting = w.counts.clone();
        accounting.merge(&m.counts);
        let phase = |acc: Acc, start: Duration, end: Duration| {
            let (counts, completed, stats) = acc.into_parts();
            PhaseStats {
                start,
                end,
                counts,
                completed,
                stats,
            }
        };
        let warmup_end = self.warmup.min(measured_end);
        let targets = self.targets.into_iter().map(TargetAcc::finish).collect();
        LoadReport {
            started_at,
            seed,
            windows,
            fine: self.fine,
            warmup: phase(w, Duration::ZERO, warmup_end),
            measured: phase(m, self.warmup, measured_end.max(self.warmup)),
            accounting,
            targets,
            connections: ConnectionUse::default(),
        }
    }
}

fn add_fine(into: &mut FineWindow, from: &FineWindow) {
    into.sent += from.sent;
    into.ok += from.ok;
    into.failed += from.failed;
}

/// Mean, standard deviation and percentiles of one histogram, microseconds.
///
/// Every figure is `None` (JSON `null`, "n/a" in the text) when `count` is 0: an empty
/// histogram has no latency, and 0 would read as an instant response. The default is
/// that of an empty histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSummary {
    pub count: u64,
    pub mean_us: Option<f64>,
    /// Population standard deviation (HdrHistogram's `stdev`).
    #[serde(default)]
    pub stdev_us: Option<f64>,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl HistogramSummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let any = !h.is_empty();
        let at = |q: f64| any.then(|| h.value_at_quantile(q));
        HistogramSummary {
            count: h.len(),
            mean_us: any.then(|| h.mean()),
            stdev_us: any.then(|| h.stdev()),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p95_us: at(0.95),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: any.then(|| h.max()),
        }
    }
}

/// Serialisable digest of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub start_s: f64,
    pub end_s: f64,
    pub counts: Counts,
    /// 2xx responses completed in the phase.
    pub completed: u64,
    /// `completed` per second (kept beside its clearer name `successes_per_s`).
    pub throughput_per_s: f64,
    /// Responses of any status completed in the phase ([`LatencyStats::responses`]).
    #[serde(default)]
    pub responses: u64,
    /// `responses` per second: wrk's "Requests/sec".
    #[serde(default)]
    pub requests_per_s: f64,
    /// `completed` per second: 2xx responses only ("Successes/sec").
    #[serde(default)]
    pub successes_per_s: f64,
    /// Bytes read for the phase's requests ([`LatencyStats::bytes_read`]).
    #[serde(default)]
    pub bytes_read: u64,
    /// `bytes_read` per second of the phase: wrk's "Transfer/sec".
    #[serde(default)]
    pub bytes_read_per_s: f64,
    /// Successful requests only ([`LatencyStats::latency`]).
    pub latency: HistogramSummary,
    /// Every request, failures until given up ([`LatencyStats::latency_all`]).
    #[serde(default)]
    pub latency_all: HistogramSummary,
    /// `counts.dropped_by_generator / counts.sent`; `None` when nothing was sent.
    #[serde(default)]
    pub drop_share: Option<f64>,
    pub service: HistogramSummary,
    pub send_lag: HistogramSummary,
    pub ttft: HistogramSummary,
    pub itl: HistogramSummary,
    pub tpot: HistogramSummary,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
}

impl PhaseSummary {
    pub fn of(p: &PhaseStats) -> Self {
        PhaseSummary {
            start_s: p.start.as_secs_f64(),
            end_s: p.end.as_secs_f64(),
            counts: p.counts.clone(),
            completed: p.completed,
            throughput_per_s: p.throughput_per_s(),
            responses: p.stats.responses,
            requests_per_s: p.requests_per_s(),
            successes_per_s: p.throughput_per_s(),
            bytes_read: p.stats.bytes_read,
            bytes_read_per_s: p.bytes_read_per_s(),
            latency: HistogramSummary::of(&p.stats.latency),
            latency_all: HistogramSummary::of(&p.stats.latency_all),
            drop_share: p.counts.drop_share(),
            service: HistogramSummary::of(&p.stats.service),
            send_lag: HistogramSummary::of(&p.stats.send_lag),
            ttft: HistogramSummary::of(&p.stats.ttft),
            itl: HistogramSummary::of(&p.stats.itl),
            tpot: HistogramSummary::of(&p.stats.tpot),
            output_tokens: p.stats.output_tokens,
            output_tokens_per_s: p.output_tokens_per_s(),
        }
    }
}

/// Serialisable digest of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSummary {
    pub start_s: f64,
    pub counts: Counts,
    /// 2xx responses completed in the window.
    pub completed: u64,
    /// Responses of any status completed in the window.
    #[serde(default)]
    pub responses: u64,
    /// Bytes read for the window's requests (by intended send time).
    #[serde(default)]
    pub bytes_read: u64,
    pub latency: HistogramSummary,
    /// Every request of the window, failures until given up.
    #[serde(default)]
    pub latency_all: HistogramSummary,
    pub service: HistogramSummary,
    pub send_lag: HistogramSummary,
}

/// Serialisable digest of a [`LoadReport`] (what `--json` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Seconds since the Unix epoch of t = 0.
    pub started_at_unix_s: f64,
    pub seed: u64,
    pub balanced: bool,
    pub accounting: Counts,
    pub warmup: PhaseSummary,
    pub measured: PhaseSummary,
    pub windows: Vec<WindowSummary>,
    pub fine: Vec<FineWindow>,
    /// The whole run per target, in the order given ([`LoadReport::targets`]).
    #[serde(default)]
    pub targets: Vec<TargetSummary>,
    /// [`LoadReport::connections`].
    #[serde(default)]
    pub connections: ConnectionUse,
}

/// Serialisable digest of one target's requests over the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// The target's URL, where the caller knows it (`faultline load --json` fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub counts: Counts,
    /// Successful requests only.
    pub latency: HistogramSummary,
    /// Every request, failures until given up.
    pub latency_all: HistogramSummary,
}

impl TargetSummary {
    pub fn of(t: &TargetStats) -> Self {
        TargetSummary {
            url: None,
            counts: t.counts.clone(),
            latency: HistogramSummary::of(&t.latency),
            latency_all: HistogramSummary::of(&t.latency_all),
        }
    }
}

impl LoadReport {
    /// Percentile digest, ready for JSON.
    pub fn summary(&self) -> ReportSummary {
        ReportSummary {
            started_at_unix_s: self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            seed: self.seed,
            balanced: self.balanced(),
            accounting: self.accounting.clone(),
            warmup: PhaseSummary::of(&self.warmup),
            measured: PhaseSummary::of(&self.measured),
            windows: self
                .windows
                .iter()
                .map(|w| WindowSummary {
                    start_s: w.start.as_secs_f64(),
                    counts: w.counts.clone(),
                    completed: w.completed,
                    responses: w.stats.responses,
                    bytes_read: w.stats.bytes_read,
                    latency: HistogramSummary::of(&w.stats.latency),
                    latency_all: HistogramSummary::of(&w.stats.latency_all),
                    service: HistogramSummary::of(&w.stats.service),
                    send_lag: HistogramSummary::of(&w.stats.send_lag),
                })
                .collect(),
            fine: self.fine.clone(),
            targets: self.targets.iter().map(TargetSummary::of).collect(),
            connections: self.connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::ErrorKind;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn outcome_strategy(end_ms: u64) -> impl Strategy<Value = Outcome> {
        (
            0..end_ms,
            0u64..5,
            0u64..3_000,
            0u8..6,
            0u64..5,
            0u64..10_000,
        )
            .prop_map(|(intended, lag, service, kind, tokens, bytes_read)| {
                let intended = ms(intended);
                let actual = intended + ms(lag);
                let result = match kind {
                    0 | 1 => Completion::Ok,
                    2 => Completion::Error(ErrorKind::HttpStatus(500)),
                    3 => Completion::Error(ErrorKind::ConnectRefused),
                    4 => Completion::Timeout,
                    _ => Completion::Dropped,
                };
                let stream = (tokens > 0).then(|| StreamTimes {
                    first_token: Some(actual + ms(1)),
                    itl_us: vec![100; tokens as usize - 1],
                    tokens,
                });
                Outcome {
                    intended,
                    actual: (result != Completion::Dropped).then_some(actual),
                    done: actual + ms(service),
                    result,
                    stream,
                    bytes_read: if result == Completion::Dropped {
                        0
                    } else {
                        bytes_read
                    },
                }
            })
    }

    fn merged(windows: &[WindowStats], range: std::ops::Range<Duration>) -> (Counts, LatencyStats) {
        let mut counts = Counts::default();
        let mut stats = LatencyStats::default();
        for w in windows.iter().filter(|w| range.contains(&w.start)) {
            counts.merge(&w.counts);
            stats.merge(&w.stats);
        }
        (counts, stats)
    }

    proptest! {
        /// Windows aligned with the phase boundary merge into exactly the phase, across
        /// any sharding of the outcomes, and every count balances.
        #[test]
        fn window_histograms_merge_to_the_phase_and_accounting_balances(
            outcomes in proptest::collection::vec(outcome_strategy(6_000), 0..300),
            warmup_windows in 0u32..3,
            shards in 1usize..4,
        ) {
            let window = ms(1_000);
            let warmup = window * warmup_windows;
            let end = ms(6_000);
            let mut recs: Vec<_> = (0..shards).map(|_| Recorder::new(window, ms(100), warmup, end, ms(2_000))).collect();
            for (i, o) in outcomes.iter().enumerate() {
                recs[i % shards].record(o);
            }
            let mut rec = recs.pop().expect("at least one shard");
            for r in recs { rec.merge(r); }
            let report = rec.finish(SystemTime::UNIX_EPOCH, 0, end);

            prop_assert!(report.balanced());
            prop_assert_eq!(report.accounting.sent, outcomes.len() as u64);
            let (mc, ms_) = merged(&report.windows, warmup..end);
            prop_assert_eq!(&mc, &report.measured.counts);
            prop_assert!(ms_.latency == report.measured.stats.latency);
            prop_assert!(ms_.latency_all == report.measured.stats.latency_all);
            prop_assert!(ms_.service == report.measured.stats.service);
            prop_assert!(ms_.send_lag == report.measured.stats.send_lag);
            prop_assert!(ms_.ttft == report.measured.stats.ttft);
            prop_assert!(ms_.itl == report.measured.stats.itl);
            prop_assert!(ms_.tpot == report.measured.stats.tpot);
            prop_assert_eq!(ms_.output_tokens, report.measured.stats.output_tokens);
            prop_assert_eq!(ms_.bytes_read, report.measured.stats.bytes_read);
            let all_bytes: u64 = outcomes.iter().map(|o| o.bytes_read).sum();
            prop_assert_eq!(
                report.windows.iter().map(|w| w.stats.bytes_read).sum::<u64>(),
                all_bytes
            );
            prop_assert_eq!(
                report.warmup.stats.bytes_read + report.measured.stats.bytes_read,
                all_bytes
            );
            let (wc, _) = merged(&report.windows, Duration::ZERO..warmup);
            prop_assert_eq!(&wc, &report.warmup.counts);
            let fine_sent: u64 = report.fine.iter().map(|f| f.sent).sum();
            prop_assert_eq!(fine_sent, outcomes.len() as u64);
            let ok = outcomes.iter().filter(|o| o.result == Completion::Ok).count() as u64;
            prop_assert_eq!(report.windows.iter().map(|w| w.completed).sum::<u64>(), ok);
            let responses = outcomes.iter().filter(|o| o.result.is_response()).count() as u64;
            prop_assert_eq!(
                report.windows.iter().map(|w| w.stats.responses).sum::<u64>(),
                responses
            );
            for phase in [&report.warmup, &report.measured] {
                prop_assert!(phase.completed <= phase.stats.responses);
                prop_assert!(phase.stats.responses <= phase.counts.sent);
                // Every request, and only successes in `latency`.
                prop_assert_eq!(phase.stats.latency_all.len(), phase.counts.sent);
                prop_assert_eq!(phase.stats.latency.len(), phase.counts.ok);
                // No success-only percentile hides a slower failure: the slowest request
                // is in `latency_all` however it ended.
                if !phase.stats.latency.is_empty() {
                    prop_assert!(phase.stats.latency_all.max() >= phase.stats.latency.max());
                }
            }
            for w in &report.windows {
                prop_assert_eq!(w.stats.latency_all.len(), w.counts.sent);
            }
        }
    }

    proptest! {
        /// Two loads recorded apart (two clients) and merged give the report of one load
        /// that recorded every request: nothing lost, nothing counted twice.
        #[test]
        fn merged_reports_equal_one_report_of_every_request(
            outcomes in proptest::collection::vec((outcome_strategy(4_000), 0usize..2, 0usize..3), 0..200),
            longer in 0u64..2_000,
        ) {
            let new = |end: Duration| Recorder::new(ms(1_000), ms(100), ms(1_000), end, ms(2_000)).with_targets(3);
            let (end_a, end_b) = (ms(4_000), ms(4_000 + longer));
            let (mut a, mut b, mut one) = (new(end_a), new(end_b), new(end_b));
            for (o, client, target) in &outcomes {
                if *client == 0 { a.record_at(*target, o) } else { b.record_at(*target, o) }
                one.record_at(*target, o);
            }
            let t0 = SystemTime::UNIX_EPOCH + ms(5_000);
            let mut merged = a.finish(t0 + ms(3), 7, end_a);
            merged.merge(b.finish(t0, 8, end_b));
            let one = one.finish(t0, 7, end_b);

            prop_assert!(merged.balanced());
            prop_assert_eq!(merged.started_at, t0, "the earlier start");
            prop_assert_eq!(merged.seed, 7, "the first report's seed");
            prop_assert_eq!(&merged.accounting, &one.accounting);
            prop_assert_eq!(merged.accounting.sent, outcomes.len() as u64);
            prop_assert_eq!(&merged.fine, &one.fine);
            prop_assert_eq!(merged.windows.len(), one.windows.len());
            for (m, o) in merged.windows.iter().zip(&one.windows) {
                prop_assert_eq!((m.start, m.width, &m.counts, m.completed), (o.start, o.width, &o.counts, o.completed));
                prop_assert!(m.stats.latency == o.stats.latency && m.stats.latency_all == o.stats.latency_all);
                prop_assert_eq!((m.stats.responses, m.stats.bytes_read), (o.stats.responses, o.stats.bytes_read));
            }
            for (m, o) in [(&merged.warmup, &one.warmup), (&merged.measured, &one.measured)] {
                prop_assert_eq!((m.start, m.end, &m.counts), (o.start, o.end, &o.counts));
                prop_assert!(m.stats.latency == o.stats.latency && m.stats.service == o.stats.service);
                prop_assert!(m.stats.latency_all == o.stats.latency_all && m.stats.ttft == o.stats.ttft);
                prop_assert!(m.stats.itl == o.stats.itl && m.stats.tpot == o.stats.tpot);
                prop_assert_eq!(m.stats.output_tokens, o.stats.output_tokens);
            }
            // Completions are counted in a phase only inside its end: the same end on both.
            prop_assert_eq!(merged.warmup.completed, one.warmup.completed);
            prop_assert_eq!(merged.targets.len(), 3);
            for (m, o) in merged.targets.iter().zip(&one.targets) {
                prop_assert_eq!(&m.counts, &o.counts);
                prop_assert!(m.latency == o.latency && m.latency_all == o.latency_all);
            }
        }
    }

    #[test]
    fn corrected_latency_counts_from_intended_and_service_from_actual() {
        let mut r = Recorder::new(ms(1_000), ms(100), Duration::ZERO, ms(1_000), ms(5_000));
        r.record(&Outcome {
            intended: ms(100),
            actual: Some(ms(400)),
            done: ms(410),
            result: Completion::Ok,
            stream: Some(StreamTimes {
                first_token: Some(ms(402)),
                itl_us: vec![4_000, 4_000],
                tokens: 3,
            }),
            bytes_read: 120,
        });
        let rep = r.finish(SystemTime::UNIX_EPOCH, 0, ms(1_000));
        let s = &rep.measured.stats;
        let near = |h: &Histogram<u64>, us: u64| h.equivalent(h.max(), us);
        assert!(near(&s.latency, 310_000));
        assert!(near(&s.service, 10_000));
        assert!(near(&s.send_lag, 300_000));
        assert!(near(&s.ttft, 302_000));
        // (310 ms − 302 ms) / 2
        assert!(near(&s.tpot, 4_000));
        assert_eq!(s.itl.len(), 2);
        assert_eq!(rep.windows.len(), 1);
        assert_eq!(rep.fine.len(), 10, "fine windows cover the whole run");
    }

    fn at(intended_ms: u64, done_ms: u64, result: Completion, bytes_read: u64) -> Outcome {
        Outcome {
            intended: ms(intended_ms),
            actual: Some(ms(intended_ms)),
            done: ms(done_ms),
            result,
            stream: None,
            bytes_read,
        }
    }

    #[test]
    fn a_phase_counts_responses_of_any_status_beside_successes_and_the_bytes_read() {
        let mut r = Recorder::new(ms(1_000), ms(100), Duration::ZERO, ms(2_000), ms(500));
        r.record(&at(100, 110, Completion::Ok, 100));
        r.record(&at(
            200,
            210,
            Completion::Error(ErrorKind::HttpStatus(503)),
            80,
        ));
        r.record(&at(
            300,
            310,
            Completion::Error(ErrorKind::ConnectionReset),
            5,
        ));
        r.record(&at(400, 900, Completion::Timeout, 7));
        let rep = r.finish(SystemTime::UNIX_EPOCH, 0, ms(2_000));
        let m = &rep.measured;
        assert_eq!(m.completed, 1, "2xx only");
        assert_eq!(
            m.stats.responses, 2,
            "the 503 is a response too; the reset is not"
        );
        assert_eq!(
            m.stats.bytes_read, 192,
            "every byte read, failed requests' too"
        );
        assert!((m.throughput_per_s() - 0.5).abs() < 1e-9);
        assert!((m.requests_per_s() - 1.0).abs() < 1e-9);
        assert!((m.bytes_read_per_s() - 96.0).abs() < 1e-9);
        let s = PhaseSummary::of(m);
        assert_eq!((s.responses, s.bytes_read), (2, 192));
        assert_eq!(s.successes_per_s, s.throughput_per_s);
        assert!(rep.balanced());
    }

    #[test]
    fn timeouts_and_drops_count_in_latency_all_until_given_up_and_successes_alone_in_latency() {
        let timeout = ms(500);
        let mut r = Recorder::new(ms(1_000), ms(100), Duration::ZERO, ms(1_000), timeout);
        for i in 0..95 {
            r.record(&at(i, i + 10, Completion::Ok, 10));
        }
        // A fast 503: its client waited 2 ms, and so does `latency_all`.
        r.record(&at(
            100,
            102,
            Completion::Error(ErrorKind::HttpStatus(503)),
            10,
        ));
        // Sent 50 ms late, timed out 550 ms after its intended send.
        r.record(&Outcome {
            actual: Some(ms(150)),
            ..at(100, 650, Completion::Timeout, 0)
        });
        // A timer that fired early still counts the whole timeout.
        r.record(&at(300, 790, Completion::Timeout, 0));
        // Waited 700 ms for a connection, then dropped unsent.
        let dropped = Outcome {
            actual: None,
            ..at(200, 900, Completion::Dropped, 0)
        };
        r.record(&dropped);
        // Still queued when the run was cancelled, 30 ms after its intended send.
        r.record(&Outcome {
            actual: None,
            ..at(400, 430, Completion::Dropped, 0)
        });
        let rep = r.finish(SystemTime::UNIX_EPOCH, 0, ms(1_000));
        assert!(rep.balanced());
        let m = &rep.measured;
        assert_eq!(m.counts.sent, 100);
        assert_eq!(
            (
                m.counts.ok,
                m.counts.timeouts,
                m.counts.dropped_by_generator
            ),
            (95, 2, 2)
        );
        let near = |h: &Histogram<u64>, got: u64, us: u64| h.equivalent(got, us);
        let (ok, all) = (&m.stats.latency, &m.stats.latency_all);
        assert_eq!(ok.len(), 95, "successes only");
        assert!(near(ok, ok.value_at_quantile(0.99), 10_000));
        assert_eq!(all.len(), 100, "every request sent");
        assert!(
            near(all, all.value_at_quantile(0.98), 500_000),
            "the early timer"
        );
        assert!(
            near(all, all.value_at_quantile(0.99), 550_000),
            "the late send"
        );
        assert!(
            near(all, all.max(), 700_000),
            "the drop, at the time it waited"
        );
        assert_eq!(
            all.count_between(0, 2_000),
            1,
            "the 503 as its client saw it"
        );
        assert_eq!(
            all.count_between(29_000, 31_000),
            1,
            "the drop at cancellation"
        );
        let s = PhaseSummary::of(m);
        assert_eq!(s.drop_share, Some(0.02));
        assert_eq!(s.latency_all.count, 100);
        assert!(s.latency_all.p99_us > s.latency.p99_us);
        assert_eq!(rep.summary().windows[0].latency_all.count, 100);
    }

    #[test]
    fn an_empty_histogram_has_no_figures_and_a_full_one_its_mean_and_stdev() {
        let empty = HistogramSummary::of(&new_histogram());
        assert_eq!(empty.count, 0);
        assert_eq!(
            (
                empty.mean_us,
                empty.stdev_us,
                empty.p50_us,
                empty.p99_us,
                empty.max_us
            ),
            (None, None, None, None, None)
        );
        let json = serde_json::to_value(empty).expect("serialises");
        assert!(json["p99_us"].is_null() && json["mean_us"].is_null());
        let mut h = new_histogram();
        // Below 2048 every value is exact at 3 significant digits.
        h.record(500).expect("in range");
        h.record(1_500).expect("in range");
        let full = HistogramSummary::of(&h);
        assert_eq!(full.mean_us, Some(1_000.0));
        assert_eq!(full.stdev_us, Some(500.0));
        assert_eq!(full.max_us, Some(1_500));
    }
}
