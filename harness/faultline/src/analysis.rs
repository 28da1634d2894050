//! Turns a load report and the fault record into the report's figures. Pure functions:
//! no clocks, no I/O, so every rule here is unit-tested on hand-made windows.
//!
//! Rules (see `docs/metrics.md`):
//! - windows are keyed by *intended* send time, so a stall shows where it was caused;
//! - recovery time follows metrics.md's failover rule on 100 ms windows: fault instant →
//!   start of the first window after which every window of the next 1 s has ≥ 99 % success;
//! - a fault's affected span runs from injection to the later of its heal and its recovery,
//!   plus one window to settle; `faulted` = measured windows overlapping any affected span,
//!   `steady` = the other measured windows.

use std::time::Duration;

use loadgen::{Counts, FineWindow, LatencyStats, LoadReport, WindowStats};
use report::{Accounting, Percentiles, PhaseSummary, WindowMetrics};

/// Success ratio a 100 ms window needs to count as recovered.
pub const RECOVERED_SUCCESS_MIN: f64 = 0.99;
/// How long success must hold to call a fault recovered.
pub const RECOVERED_HOLD_S: f64 = 1.0;

/// One phase's raw data, mergeable from windows.
#[derive(Debug, Clone)]
pub struct PhaseData {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
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

    pub fn throughput_rps(&self) -> f64 {
        let span = self.span_s();
        if span > 0.0 {
            self.completed as f64 / span
        } else {
            0.0
        }
    }

    pub fn summary(&self) -> PhaseSummary {
        let span = self.span_s();
        PhaseSummary {
            phase: self.name.clone(),
            start_s: self.start_s,
            end_s: self.end_s,
            counts: accounting(&self.counts),
            availability: self.availability(),
            throughput_rps: self.throughput_rps(),
            latency: Percentiles::from_histogram(&self.stats.latency),
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
/// None when success never held for [`RECOVERED_HOLD_S`] before the data ends.
pub fn recovery_s(fine: &[FineWindow], width: Duration, fault_s: f64) -> Option<f64> {
    let width_s = width.as_secs_f64();
    if width_s <= 0.0 {
        return None;
    }
    let hold = (RECOVERED_HOLD_S / width_s).round().max(1.0) as usize;
    let ok = |w: &FineWindow| w.sent == 0 || w.ok as f64 / w.sent as f64 >= RECOVERED_SUCCESS_MIN;
    let first = fine
        .iter()
        .position(|w| w.start.as_secs_f64() + width_s > fault_s)?;
    (first..fine.len())
        .find(|&i| i + hold <= fine.len() && fine[i..i + hold].iter().all(ok))
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

/// Splits the measured windows into `steady` and `faulted` given affected spans.
pub fn split_measured<'a>(
    report: &'a LoadReport,
    affected: &[(f64, f64)],
) -> (Vec<&'a WindowStats>, Vec<&'a WindowStats>) {
    let m_start = report.measured.start.as_secs_f64();
    let m_end = report.measured.end.as_secs_f64();
    let mut steady = Vec::new();
    let mut faulted = Vec::new();
    for w in &report.windows {
        let s = w.start.as_secs_f64();
        let e = s + w.width.as_secs_f64();
        if s < m_start - 1e-9 || s >= m_end - 1e-9 {
            continue;
        }
        if affected.iter().any(|&(a, b)| s < b && e > a) {
            faulted.push(w);
        } else {
            steady.push(w);
        }
    }
    (steady, faulted)
}

/// Phase data for `warmup`, `measured` (exact, from the generator), `steady`, `faulted`.
pub fn phases(report: &LoadReport, affected: &[(f64, f64)]) -> Vec<PhaseData> {
    let exact = |name: &str, p: &loadgen::PhaseStats| PhaseData {
        name: name.to_owned(),
        start_s: p.start.as_secs_f64(),
        end_s: p.end.as_secs_f64(),
        counts: p.counts.clone(),
        completed: p.completed,
        stats: p.stats.clone(),
    };
    let (steady, faulted) = split_measured(report, affected);
    vec![
        exact("warmup", &report.warmup),
        exact("measured", &report.measured),
        PhaseData::from_windows("steady", &steady),
        PhaseData::from_windows("faulted", &faulted),
    ]
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
        let r = recovery_s(&w, Duration::from_millis(100), 0.45).expect("recovers");
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
        assert_eq!(recovery_s(&fine(&p), Duration::from_millis(100), 0.0), None);
    }

    #[test]
    fn a_fault_that_hurts_nothing_recovers_at_once() {
        let w = fine(&[(10, 10); 20]);
        assert_eq!(recovery_s(&w, Duration::from_millis(100), 0.5), Some(0.0));
    }

    #[test]
    fn empty_windows_do_not_block_recovery() {
        let mut p = vec![(10, 0); 3];
        p.extend(vec![(0, 0); 10]);
        let r = recovery_s(&fine(&p), Duration::from_millis(100), 0.0);
        assert_eq!(r, Some(0.3));
    }
}
