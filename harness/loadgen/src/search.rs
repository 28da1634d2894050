//! Max throughput at SLO: a bisection over offered rates (as MLPerf LoadGen's Server
//! scenario searches its target QPS).
//!
//! [`Bisection`] and [`evaluate`] are pure; [`search_max_throughput`] runs one open-loop
//! trial per step. A trial passes when the measured latency at the percentile is within
//! the bound, the error ratio is within its bound and completions kept up: at least
//! [`ACHIEVED_MIN_RATIO`] × the requests the schedule offered in the phase, less those
//! legitimately in flight at its end (rate × latency bound).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::record::LoadReport;
use crate::run::run_open_loop;
use crate::spec::{LoadError, OpenLoopSpec, SpecProblem};

/// A trial fails when it completes fewer than this fraction of the offered rate.
pub const ACHIEVED_MIN_RATIO: f64 = 0.98;

/// What a rate must meet to pass.
#[derive(Debug, Clone)]
pub struct SearchCriteria {
    /// Latency percentile in percent, e.g. `99.0`.
    pub percentile: f64,
    /// Bound on the corrected latency at `percentile`.
    pub latency_max: Duration,
    /// Bound on failed / sent over the measured phase (0..=1).
    pub error_ratio_max: f64,
    /// Lowest and highest rate tried, requests per second.
    pub rate_min: f64,
    pub rate_max: f64,
    /// Most trials to run (each end counts as one).
    pub steps: u32,
    pub trial_warmup: Duration,
    pub trial_duration: Duration,
}

impl SearchCriteria {
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        let mut push = |field: &str, value: String, expected| {
            problems.push(SpecProblem {
                field: field.to_owned(),
                value,
                expected,
            })
        };
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            push(
                "percentile",
                self.percentile.to_string(),
                "a percent in (0, 100]",
            );
        }
        if !(self.error_ratio_max >= 0.0 && self.error_ratio_max <= 1.0) {
            push(
                "error_ratio_max",
                self.error_ratio_max.to_string(),
                "a ratio in [0, 1]",
            );
        }
        if !(self.rate_min.is_finite() && self.rate_min > 0.0) {
            push("rate_min", self.rate_min.to_string(), "a finite number > 0");
        }
        if !(self.rate_max.is_finite() && self.rate_max >= self.rate_min) {
            push(
                "rate_max",
                self.rate_max.to_string(),
                "a finite number >= rate_min",
            );
        }
        if self.steps == 0 {
            push("steps", "0".into(), "at least 1");
        }
        if self.trial_duration.is_zero() {
            push("trial_duration", "0s".into(), "a duration > 0");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::InvalidSpec(problems))
        }
    }
}

/// One offered rate and its verdict.
#[derive(Debug, Clone)]
pub struct Trial {
    pub rate_per_s: f64,
    /// Successful completions per second in the measured phase.
    pub achieved_rps: f64,
    /// Corrected latency at the criteria's percentile, measured phase.
    pub latency_at_percentile: Duration,
    /// failed / sent, measured phase.
    pub error_ratio: f64,
    pub passed: bool,
    pub report: LoadReport,
}

#[derive(Debug, Clone)]
pub struct SearchReport {
    /// In the order run.
    pub trials: Vec<Trial>,
    /// Highest passing rate; `None` if even `rate_min` failed.
    pub best_rate_per_s: Option<f64>,
}

/// The verdict on one trial's report.
pub fn evaluate(criteria: &SearchCriteria, rate_per_s: f64, report: LoadReport) -> Trial {
    let m = &report.measured;
    let achieved_rps = m.throughput_per_s();
    let latency_at_percentile = Duration::from_micros(
        m.stats
            .latency
            .value_at_quantile(criteria.percentile / 100.0),
    );
    let error_ratio = if m.counts.sent == 0 {
        1.0
    } else {
        m.counts.failed() as f64 / m.counts.sent as f64
    };
    // "Kept up" compares completions with what the schedule really offered in the phase
    // (a short Poisson trial offers ± several % of the nominal rate by chance alone),
    // allowing the requests legitimately in flight at the phase end: at most
    // rate × latency bound of them (Little's law) if the latency bound holds.
    let offered = m.counts.sent as f64;
    let in_flight_allowance = rate_per_s * criteria.latency_max.as_secs_f64();
    let kept_up = m.completed as f64 + in_flight_allowance >= ACHIEVED_MIN_RATIO * offered;
    let passed = m.counts.sent > 0
        && latency_at_percentile <= criteria.latency_max
        && error_ratio <= criteria.error_ratio_max
        && kept_up;
    Trial {
        rate_per_s,
        achieved_rps,
        latency_at_percentile,
        error_ratio,
        passed,
        report,
    }
}

/// Bisection state: try `min`, then `max`, then the midpoint of the highest pass and the
/// lowest failure, for at most `steps` trials.
#[derive(Debug, Clone)]
pub struct Bisection {
    min: f64,
    max: f64,
    steps: u32,
    tried: u32,
    pass: Option<f64>,
    fail: Option<f64>,
}

impl Bisection {
    pub fn new(min: f64, max: f64, steps: u32) -> Self {
        Bisection {
            min,
            max,
            steps,
            tried: 0,
            pass: None,
            fail: None,
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.tried >= self.steps {
            return None;
        }
        match (self.pass, self.fail) {
            (None, None) => Some(self.min),
            (None, Some(_)) => None,
            (Some(p), None) if p < self.max => Some(self.max),
            (Some(_), None) => None,
            (Some(p), Some(f)) => Some((p + f) / 2.0),
        }
    }

    pub fn record(&mut self, rate: f64, passed: bool) {
        self.tried += 1;
        if passed {
            self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
    }

    /// Highest passing rate so far.
    pub fn best(&self) -> Option<f64> {
        self.pass
    }
}

/// Finds the highest open-loop rate meeting `criteria`, one trial per bisection step.
/// `base` supplies targets, mix, arrival, connections, timeout, seed and rate steps (load
/// spikes, on each trial's clock); its rate, warm-up and duration are replaced per trial.
/// Cancellation ends the search after the current trial (which is itself cut short).
pub async fn search_max_throughput(
    base: &OpenLoopSpec,
    criteria: &SearchCriteria,
    cancel: CancellationToken,
) -> Result<SearchReport, LoadError> {
    let trial_cancel = cancel.clone();
    search_max_throughput_with(base, criteria, cancel, async |spec: OpenLoopSpec| {
        run_open_loop(&spec, trial_cancel.clone(), None).await
    })
    .await
}

/// [`search_max_throughput`] with the caller running each trial's spec: a harness plays
/// its fault timeline around the load of every trial this way.
pub async fn search_max_throughput_with(
    base: &OpenLoopSpec,
    criteria: &SearchCriteria,
    cancel: CancellationToken,
    mut run_trial: impl AsyncFnMut(OpenLoopSpec) -> Result<LoadReport, LoadError>,
) -> Result<SearchReport, LoadError> {
    criteria.validate()?;
    let mut bisect = Bisection::new(criteria.rate_min, criteria.rate_max, criteria.steps);
    let mut trials = Vec::new();
    while let Some(rate) = bisect.next_rate() {
        if cancel.is_cancelled() {
            break;
        }
        let mut spec = base.clone();
        spec.rate_per_s = rate;
        spec.load.warmup = criteria.trial_warmup;
        spec.load.duration = criteria.trial_duration;
        let report = run_trial(spec).await?;
        let trial = evaluate(criteria, rate, report);
        tracing::info!(
            rate_per_s = rate,
            achieved_rps = trial.achieved_rps,
            latency_us = trial.latency_at_percentile.as_micros() as u64,
            error_ratio = trial.error_ratio,
            passed = trial.passed,
            "search trial"
        );
        bisect.record(rate, trial.passed);
        trials.push(trial);
    }
    Ok(SearchReport {
        trials,
        best_rate_per_s: bisect.best(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(knee: f64, min: f64, max: f64, steps: u32) -> (Vec<f64>, Option<f64>) {
        let mut b = Bisection::new(min, max, steps);
        let mut tried = Vec::new();
        while let Some(r) = b.next_rate() {
            tried.push(r);
            b.record(r, r <= knee);
        }
        (tried, b.best())
    }

    #[test]
    fn bisection_converges_below_the_knee() {
        let (tried, best) = run(730.0, 100.0, 1000.0, 10);
        assert_eq!(tried[..3], [100.0, 1000.0, 550.0]);
        let best = best.expect("100 passes");
        assert!(best <= 730.0 && best > 720.0, "{best}");
        assert_eq!(tried.len(), 10);
    }

    #[test]
    fn bisection_stops_when_min_fails_or_max_passes() {
        assert_eq!(run(50.0, 100.0, 1000.0, 10), (vec![100.0], None));
        assert_eq!(
            run(5000.0, 100.0, 1000.0, 10),
            (vec![100.0, 1000.0], Some(1000.0))
        );
    }
}
