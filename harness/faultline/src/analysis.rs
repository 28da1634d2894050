//! Turns a load report and the fault record into the report's figures. Pure functions:
//! no clocks, no I/O, so every rule here is unit-tested on hand-made windows.
//!
//! Rules (see `docs/metrics.md`):
//! - windows are keyed by *intended* send time, so a stall shows where it was caused;
//! - recovery time follows metrics.md's failover rule on 100 ms windows: fault instant →
//!   start of the first window after which every window of the next 1 s has ≥ 99 % success;
//! - windows are `[t, t + width)`; a window belongs to a span `[a, b)` when they overlap by
//!   at least [`OVERLAP_MIN_S`] (or the span lies inside the window), so the few
//!   milliseconds a heal takes to land do not pull the next whole window in;
//! - `faulted`: measured windows overlapping a fault while it acts, `[at − reach, until)`
//!   (the heal), or `[at − reach, recovered)` by the success rule for an instant fault such
//!   as a kill. `reach` is the pre-fault p99 corrected latency: requests sent that long
//!   before the fault were still in flight when it struck, and fail or slow down because of
//!   it, though windows key them by their send time;
//!   `recovering`: measured windows after that until the fault has recovered by success
//!   rate and by latency, whichever is later (not faulted); `steady`: the rest;
//! - latency recovery: the first window, from the one holding the heal (or the fault
//!   instant) on, from which p99 corrected latency stays within
//!   [`LATENCY_RECOVERED_FACTOR`] × the pre-fault p99 for [`LATENCY_RECOVERED_WINDOWS`]
//!   windows; reported as fault instant → the later of that window's start and the heal.

use std::time::Duration;

use loadgen::{Counts, FineWindow, LatencyStats, LoadReport, WindowStats};
use report::{Accounting, Percentiles, PhaseSummary, WindowMetrics};

/// Success ratio a 100 ms window needs to count as recovered.
pub const RECOVERED_SUCCESS_MIN: f64 = 0.99;
/// How long success must hold to call a fault recovered.
pub const RECOVERED_HOLD_S: f64 = 1.0;
/// Latency has recovered when p99 is back within this factor of the pre-fault p99 ...
pub const LATENCY_RECOVERED_FACTOR: f64 = 2.0;
/// ... for this many consecutive windows.
pub const LATENCY_RECOVERED_WINDOWS: usize = 2;
/// The pre-fault p99 counts as at least this (ms), so microsecond noise does not keep a
/// fast service "unrecovered".
pub const LATENCY_BASELINE_FLOOR_MS: f64 = 1.0;
/// Least overlap of a window with a phase's span for the window to belong to it, seconds.
pub const OVERLAP_MIN_S: f64 = 0.05;

/// One injected fault on the scenario clock, with its recoveries (seconds after `start_s`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultTimes {
    pub start_s: f64,
    /// How long before `start_s` a request may have been sent and still be in flight when
    /// the fault struck (the pre-fault p99 corrected latency; 0 without one), seconds.
    pub reach_s: f64,
    pub heal_s: Option<f64>,
    /// By success rate ([`recovery_s`]); None: not recovered.
    pub recovery_s: Option<f64>,
    /// By latency ([`latency_recovery_s`]); None: not recovered or no baseline.
    pub latency_recovery_s: Option<f64>,
}

impl FaultTimes {
    /// `[start − reach, end)` while the fault acts on requests: from the earliest send
    /// still in flight when it struck to its heal, or for an instant fault to its success
    /// recovery (the end of the measured phase if it never recovered).
    pub fn faulted(&self, measured_end_s: f64) -> (f64, f64) {
        let end = self
            .heal_s
            .unwrap_or_else(|| self.recovery_s.map_or(measured_end_s, |r| self.start_s + r));
        (self.start_s - self.reach_s.max(0.0), end.max(self.start_s))
    }

    /// `[end of faulted, recovered)`: recovered by success and by latency; a recovery that
    /// never came runs to the end of the measured phase.
    pub fn recovering(&self, measured_end_s: f64) -> (f64, f64) {
        let (_, from) = self.faulted(measured_end_s);
        let by = |r: Option<f64>| r.map_or(measured_end_s, |r| self.start_s + r);
        let to = by(self.recovery_s).max(by(self.latency_recovery_s));
        (from, to.max(from))
    }
}

/// One phase's raw data, mergeable from windows.
#[derive(Debug, Clone)]
pub struct PhaseData {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Seconds the phase covers: its windows' widths added up. Less than `end_s -
    /// start_s` for a phase with a gap (`steady` before and after a fault); rates are
    /// per covered second.
    pub covered_s: f64,
    pub counts: Counts,
    pub completed: u64,
    pub stats: LatencyStats,
}

impl PhaseData {
    fn empty(name: &str, start_s: f64, end_s: f64) -> Self {
        PhaseData {
            name: name.to_owned(),
            start_s,
            end_s,
            covered_s: 0.0,
            counts: Counts::default(),
            completed: 0,
            stats: LatencyStats::default(),
        }
    }

    /// Phase data from the given windows (span = first start to last end).
    pub fn from_windows(name: &str, windows: &[&WindowStats]) -> Self {
        let start_s = windows.first().map_or(0.0, |w| w.start.as_secs_f64());
        let end_s = windows
            .last()
            .map_or(0.0, |w| (w.start + w.width).as_secs_f64());
        let mut data = PhaseData::empty(name, start_s, end_s);
        for w in windows {
            data.covered_s += w.width.as_secs_f64();
            data.counts.merge(&w.counts);
            data.completed += w.completed;
            data.stats.merge(&w.stats);
        }
        data
    }

    pub fn span_s(&self) -> f64 {
        (self.end_s - self.start_s).max(0.0)
    }

    /// ok / sent, None when nothing was sent.
    pub fn availability(&self) -> Option<f64> {
        (self.counts.sent > 0).then(|| self.counts.ok as f64 / self.counts.sent as f64)
    }

    /// Completions per covered second (not per second from the phase's first window to
    /// its last: `steady` around a fault would count the fault's seconds too).
    pub fn throughput_rps(&self) -> f64 {
        if self.covered_s > 0.0 {
            self.completed as f64 / self.covered_s
        } else {
            0.0
        }
    }

    pub fn summary(&self) -> PhaseSummary {
        let span = self.covered_s;
        PhaseSummary {
            phase: self.name.clone(),
            start_s: self.start_s,
            end_s: self.end_s,
            counts: accounting(&self.counts),
            availability: self.availability(),
            throughput_rps: self.throughput_rps(),
            latency: Percentiles::from_histogram(&self.stats.latency),
            latency_all: Percentiles::from_histogram(&self.stats.latency_all),
            service: Percentiles::from_histogram(&self.stats.service),
            send_lag: Percentiles::from_histogram(&self.stats.send_lag),
            ttft: Percentiles::from_histogram(&self.stats.ttft),
            itl: Percentiles::from_histogram(&self.stats.itl),
            tpot: Percentiles::from_histogram(&self.stats.tpot),
            output_tokens_per_s: if span > 0.0 {
                self.stats.output_tokens as f64 / span
            } else {
                0.0
            },
        }
    }
}

/// The report's accounting view of the generator's counts.
pub fn accounting(c: &Counts) -> Accounting {
    Accounting {
        sent: c.sent,
        ok: c.ok,
        errors: c.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        timeouts: c.timeouts,
        dropped_by_generator: c.dropped_by_generator,
        balanced: c.balanced(),
    }
}

/// One window's figures; `goodput_bound_us` is the tightest corrected-latency SLO bound.
pub fn window_metrics(w: &WindowStats, goodput_bound_us: Option<u64>) -> WindowMetrics {
    let width = w.width.as_secs_f64().max(f64::EPSILON);
    WindowMetrics {
        start_s: w.start.as_secs_f64(),
        phase: None,
        width_s: w.width.as_secs_f64(),
        counts: accounting(&w.counts),
        throughput_rps: w.completed as f64 / width,
        goodput_rps: goodput_bound_us.map(|b| w.stats.latency.count_between(0, b) as f64 / width),
        latency: Percentiles::from_histogram(&w.stats.latency),
        service: Percentiles::from_histogram(&w.stats.service),
        send_lag: Percentiles::from_histogram(&w.stats.send_lag),
        ttft: Percentiles::from_histogram(&w.stats.ttft),
        itl: Percentiles::from_histogram(&w.stats.itl),
        output_tokens: w.stats.output_tokens,
    }
}

/// Recovery time after a fault at `fault_s` (scenario seconds), per the module rule.
/// None when success never held for [`RECOVERED_HOLD_S`] before the load stopped at
/// `end_s`: windows from then on (a run cut short by Ctrl-C or a failure) hold no
/// requests because none was sent, not because the target recovered, so they never
/// count as successful.
pub fn recovery_s(fine: &[FineWindow], width: Duration, fault_s: f64, end_s: f64) -> Option<f64> {
    let width_s = width.as_secs_f64();
    if width_s <= 0.0 {
        return None;
    }
    let hold = (RECOVERED_HOLD_S / width_s).round().max(1.0) as usize;
    let ok = |w: &FineWindow| w.sent == 0 || w.ok as f64 / w.sent as f64 >= RECOVERED_SUCCESS_MIN;
    let covered = fine
        .iter()
        .take_while(|w| w.start.as_secs_f64() < end_s - 1e-9)
        .count();
    let first = fine
        .iter()
        .position(|w| w.start.as_secs_f64() + width_s > fault_s)?;
    (first..covered)
        .find(|&i| i + hold <= covered && fine[i..i + hold].iter().all(ok))
        .map(|i| (fine[i].start.as_secs_f64() - fault_s).max(0.0))
}

/// Requests intended in `[from_s, to_s)` that did not succeed.
pub fn failed_between(fine: &[FineWindow], width: Duration, from_s: f64, to_s: f64) -> u64 {
    let width_s = width.as_secs_f64();
    fine.iter()
        .filter(|w| {
            let s = w.start.as_secs_f64();
            s + width_s > from_s && s < to_s
        })
        .map(|w| w.failed)
        .sum()
}

/// p99 corrected latency (ms) of the measured windows that end by `fault_s`; None when no
/// request completed there.
pub fn baseline_p99_ms(report: &LoadReport, fault_s: f64) -> Option<f64> {
    let m_start = report.measured.start.as_secs_f64();
    let mut merged = LatencyStats::default();
    for w in &report.windows {
        let s = w.start.as_secs_f64();
        if s >= m_start - 1e-9 && s + w.width.as_secs_f64() <= fault_s + 1e-9 {
            merged.merge(&w.stats);
        }
    }
    (!merged.latency.is_empty()).then(|| merged.latency.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Latency recovery of a fault at `fault_s` healed at `heal_s` (None: an instant fault),
/// seconds after `fault_s`, per the module rule; None when it never held before the
/// measured phase ended.
pub fn latency_recovery_s(
    report: &LoadReport,
    fault_s: f64,
    heal_s: Option<f64>,
    baseline_ms: f64,
) -> Option<f64> {
    let from = heal_s.unwrap_or(fault_s).max(fault_s);
    let m_end = report.measured.end.as_secs_f64();
    let bound_us = LATENCY_RECOVERED_FACTOR * baseline_ms.max(LATENCY_BASELINE_FLOOR_MS) * 1000.0;
    let windows: Vec<&WindowStats> = report
        .windows
        .iter()
        .filter(|w| {
            let s = w.start.as_secs_f64();
            s < m_end - 1e-9 && s + w.width.as_secs_f64() > from + 1e-9
        })
        .collect();
    let ok = |w: &WindowStats| {
        w.stats.latency.is_empty() || w.stats.latency.value_at_quantile(0.99) as f64 <= bound_us
    };
    let hold = LATENCY_RECOVERED_WINDOWS;
    (0..windows.len())
        .find(|&i| i + hold <= windows.len() && windows[i..i + hold].iter().all(|w| ok(w)))
        .map(|i| (windows[i].start.as_secs_f64().max(from) - fault_s).max(0.0))
}

/// The phase of the window `[s, e)` given the faults (see the module rules): `warmup`,
/// `steady`, `faulted`, `recovering`, or `after` for trailing windows past the measured phase.
pub fn window_phase(report: &LoadReport, s: f64, e: f64, faults: &[FaultTimes]) -> &'static str {
    let m_start = report.measured.start.as_secs_f64();
    let m_end = report.measured.end.as_secs_f64();
    if s < m_start - 1e-9 {
        return "warmup";
    }
    if s >= m_end - 1e-9 {
        return "after";
    }
    let overlaps = |(a, b): (f64, f64)| {
        if b - a <= 1e-9 {
            // An instant with nothing in flight: the window holding it.
            return s < a - 1e-9 && e > a + 1e-9;
        }
        let overlap = e.min(b) - s.max(a);
        overlap > 1e-9 && overlap >= OVERLAP_MIN_S.min(b - a) - 1e-9
    };
    if faults.iter().any(|f| overlaps(f.faulted(m_end))) {
        "faulted"
    } else if faults.iter().any(|f| overlaps(f.recovering(m_end))) {
        "recovering"
    } else {
        "steady"
    }
}

/// Phase data for `warmup`, `measured` (exact, from the generator), `steady`, `faulted`
/// and `recovering` (from the measured windows).
pub fn phases(report: &LoadReport, faults: &[FaultTimes]) -> Vec<PhaseData> {
    let exact = |name: &str, p: &loadgen::PhaseStats| PhaseData {
        name: name.to_owned(),
        start_s: p.start.as_secs_f64(),
        end_s: p.end.as_secs_f64(),
        covered_s: p.end.saturating_sub(p.start).as_secs_f64(),
        counts: p.counts.clone(),
        completed: p.completed,
        stats: p.stats.clone(),
    };
    let mut by_phase: [(&str, Vec<&WindowStats>); 3] = [
        ("steady", Vec::new()),
        ("faulted", Vec::new()),
        ("recovering", Vec::new()),
    ];
    for w in &report.windows {
        let s = w.start.as_secs_f64();
        let phase = window_phase(report, s, s + w.width.as_secs_f64(), faults);
        if let Some((_, list)) = by_phase.iter_mut().find(|(name, _)| *name == phase) {
            list.push(w);
        }
    }
    let mut out = vec![
        exact("warmup", &report.warmup),
        exact("measured", &report.measured),
    ];
    out.extend(
        by_phase
            .iter()
            .map(|(name, list)| PhaseData::from_windows(name, list)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine(pattern: &[(u64, u64)]) -> Vec<FineWindow> {
        pattern
            .iter()
            .enumerate()
            .map(|(i, &(sent, ok))| FineWindow {
                start: Duration::from_millis(100 * i as u64),
                sent,
                ok,
                failed: sent - ok,
            })
            .collect()
    }

    #[test]
    fn recovery_is_the_start_of_the_first_window_followed_by_a_second_of_success() {
        // 0.0-0.4 ok; fault at 0.45; failures until 1.0; a blip at 1.2; ok from 1.3 on.
        let mut p = vec![(10, 10); 5];
        p.extend(vec![(10, 0); 5]);
        p.extend([(10, 10), (10, 10), (10, 9)]);
        p.extend(vec![(10, 10); 12]);
        let w = fine(&p);
        let r = recovery_s(&w, Duration::from_millis(100), 0.45, f64::INFINITY).expect("recovers");
        assert!((r - (1.3 - 0.45)).abs() < 1e-9, "recovery {r}");
        assert_eq!(
            failed_between(&w, Duration::from_millis(100), 0.45, 0.45 + r),
            51
        );
    }

    #[test]
    fn no_recovery_when_success_never_holds_long_enough() {
        let mut p = vec![(10, 0); 5];
        p.extend(vec![(10, 10); 9]);
        assert_eq!(
            recovery_s(&fine(&p), Duration::from_millis(100), 0.0, f64::INFINITY),
            None
        );
    }

    #[test]
    fn a_fault_that_hurts_nothing_recovers_at_once() {
        let w = fine(&[(10, 10); 20]);
        assert_eq!(
            recovery_s(&w, Duration::from_millis(100), 0.5, f64::INFINITY),
            Some(0.0)
        );
    }

    #[test]
    fn windows_after_the_load_stopped_are_no_recovery() {
        // Failing from the fault at 0.0 until the load was interrupted at 0.5 s; the
        // windows after hold nothing because nothing was sent.
        let mut p = vec![(10, 0); 5];
        p.extend(vec![(0, 0); 25]);
        let w = fine(&p);
        assert_eq!(recovery_s(&w, Duration::from_millis(100), 0.0, 0.5), None);
        // The same windows from a load that ran on (a gap in a low-rate schedule) recover.
        assert_eq!(
            recovery_s(&w, Duration::from_millis(100), 0.0, 3.0),
            Some(0.5)
        );
    }

    #[test]
    fn empty_windows_do_not_block_recovery() {
        let mut p = vec![(10, 0); 3];
        p.extend(vec![(0, 0); 10]);
        let r = recovery_s(&fine(&p), Duration::from_millis(100), 0.0, f64::INFINITY);
        assert_eq!(r, Some(0.3));
    }

    /// 15 windows of 1 s, measured from 1 s; `p99_ms[i]` is every latency in window i.
    fn report(p99_ms: &[f64]) -> LoadReport {
        let s = Duration::from_secs;
        let windows: Vec<WindowStats> = p99_ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                let mut stats = LatencyStats::default();
                for _ in 0..10 {
                    stats
                        .latency
                        .record((ms * 1000.0) as u64)
                        .expect("in range");
                }
                WindowStats {
                    start: s(i as u64),
                    width: s(1),
                    counts: Counts {
                        sent: 10,
                        ok: 10,
                        ..Counts::default()
                    },
                    completed: 10,
                    stats,
                }
            })
            .collect();
        let phase = |start, end| loadgen::PhaseStats {
            start: s(start),
            end: s(end),
            counts: Counts::default(),
            completed: 0,
            stats: LatencyStats::default(),
        };
        LoadReport {
            started_at: std::time::SystemTime::UNIX_EPOCH,
            seed: 1,
            windows,
            fine: Vec::new(),
            warmup: phase(0, 1),
            measured: phase(1, p99_ms.len() as u64),
            accounting: Counts::default(),
            targets: Vec::new(),
            connections: loadgen::ConnectionUse::default(),
        }
    }

    #[test]
    fn a_pause_marks_its_own_windows_faulted_and_its_slow_aftermath_recovering() {
        // Paused 5–9 s: 2 s latencies while paused, a backlog in 9 and 10, normal from 11.
        let mut ms = vec![2.0; 15];
        for w in &mut ms[5..9] {
            *w = 2000.0;
        }
        ms[9] = 500.0;
        ms[10] = 10.0;
        let r = report(&ms);
        let baseline = baseline_p99_ms(&r, 5.0).expect("windows before the fault");
        assert!((baseline - 2.0).abs() < 0.02, "{baseline}");
        let lat = latency_recovery_s(&r, 5.0, Some(9.0), baseline);
        assert_eq!(
            lat,
            Some(6.0),
            "window 11 is the first of two within 2 × 2 ms"
        );
        let pause = FaultTimes {
            start_s: 5.0,
            reach_s: 0.0,
            heal_s: Some(9.0),
            recovery_s: Some(0.0),
            latency_recovery_s: lat,
        };
        let phases: Vec<&str> = (0..15)
            .map(|i| window_phase(&r, i as f64, i as f64 + 1.0, &[pause]))
            .collect();
        let mut expected = vec!["warmup"];
        expected.extend(["steady"; 4]);
        expected.extend(["faulted"; 4]);
        expected.extend(["recovering"; 2]);
        expected.extend(["steady"; 4]);
        assert_eq!(phases, expected);
        let data = phases_of(&r, &[pause]);
        assert_eq!(data["faulted"], (5.0, 9.0));
        assert_eq!(data["recovering"], (9.0, 11.0));
    }

    #[test]
    fn a_phase_with_a_gap_counts_its_rate_over_the_seconds_it_covers() {
        // 10 completions in every 1 s window; windows 5-8 are the fault's, so steady is
        // 1-4 and 11-14 (recovering 9-10 by latency): 8 windows, not the 14 s from its
        // first window to its last.
        let mut ms = vec![2.0; 15];
        for w in &mut ms[5..9] {
            *w = 2000.0;
        }
        let r = report(&ms);
        let pause = FaultTimes {
            start_s: 5.0,
            reach_s: 0.0,
            heal_s: Some(9.0),
            recovery_s: Some(4.0),
            latency_recovery_s: Some(6.0),
        };
        let all = phases(&r, &[pause]);
        let steady = all.iter().find(|p| p.name == "steady").expect("steady");
        assert_eq!(
            (steady.start_s, steady.end_s, steady.covered_s),
            (1.0, 15.0, 8.0)
        );
        assert_eq!(steady.throughput_rps(), 10.0);
        assert_eq!(steady.summary().throughput_rps, 10.0);
        let faulted = all.iter().find(|p| p.name == "faulted").expect("faulted");
        assert_eq!(faulted.throughput_rps(), 10.0);
    }

    #[test]
    fn requests_in_flight_when_a_fault_struck_are_its_own_and_a_late_heal_is_not() {
        let r = report(&[2.0; 10]);
        // Struck at 5 s with 80 ms in flight (the pre-fault p99), healed at 7.003 s.
        let cut = FaultTimes {
            start_s: 5.0,
            reach_s: 0.08,
            heal_s: Some(7.003),
            recovery_s: Some(2.1),
            latency_recovery_s: Some(2.1),
        };
        assert_eq!(window_phase(&r, 4.0, 5.0, &[cut]), "faulted");
        assert_eq!(window_phase(&r, 6.0, 7.0, &[cut]), "faulted");
        // 3 ms of the heal in the next window do not make it faulted (it is recovering).
        assert_eq!(window_phase(&r, 7.0, 8.0, &[cut]), "recovering");
        // A fast service (14 ms in flight) keeps the window before the fault steady.
        let fast = FaultTimes {
            reach_s: 0.014,
            ..cut
        };
        assert_eq!(window_phase(&r, 4.0, 5.0, &[fast]), "steady");
        // A short fault inside one window still marks it.
        let blip = FaultTimes {
            start_s: 5.4,
            reach_s: 0.0,
            heal_s: Some(5.42),
            recovery_s: Some(0.0),
            latency_recovery_s: Some(0.0),
        };
        assert_eq!(window_phase(&r, 5.0, 6.0, &[blip]), "faulted");
        assert_eq!(window_phase(&r, 4.0, 5.0, &[blip]), "steady");
    }

    fn phases_of(
        r: &LoadReport,
        faults: &[FaultTimes],
    ) -> std::collections::BTreeMap<String, (f64, f64)> {
        phases(r, faults)
            .into_iter()
            .map(|p| (p.name, (p.start_s, p.end_s)))
            .collect()
    }

    #[test]
    fn an_instant_fault_acts_until_success_recovers_and_a_never_recovered_one_to_the_end() {
        let r = report(&[2.0; 10]);
        let kill = FaultTimes {
            start_s: 3.0,
            reach_s: 0.0,
            heal_s: None,
            recovery_s: Some(1.4),
            latency_recovery_s: Some(0.0),
        };
        assert_eq!(kill.faulted(10.0), (3.0, 4.4));
        assert_eq!(kill.recovering(10.0), (4.4, 4.4));
        assert_eq!(window_phase(&r, 4.0, 5.0, &[kill]), "faulted");
        assert_eq!(window_phase(&r, 5.0, 6.0, &[kill]), "steady");
        let lost = FaultTimes {
            recovery_s: None,
            ..kill
        };
        assert_eq!(lost.faulted(10.0), (3.0, 10.0));
        assert_eq!(window_phase(&r, 9.0, 10.0, &[lost]), "faulted");
        assert_eq!(window_phase(&r, 10.0, 11.0, &[lost]), "after");
        // No request before the fault: no baseline, so no latency recovery to state.
        assert_eq!(baseline_p99_ms(&r, 1.0), None);
    }
}
