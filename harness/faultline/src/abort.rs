//! Stopping an open-loop run early when an SLO can no longer pass (k6's `abortOnFail`).
//!
//! Only `availability` and `errors` (`ratio_max`, all errors) SLOs of the measured phase
//! with `abort_on_fail = true` take part, because the live progress counts say enough about
//! them to be *certain*: the run stops only when the failures already seen in the measured
//! phase exceed the share the SLO allows of the most requests the schedule could still
//! offer. Rule (docs/scenarios.md "Stopping early"):
//!
//! - failures in the measured phase, at least: failures seen since warm-up ended, minus
//!   the requests that were in flight then (they may have been warm-up requests);
//! - requests the measured phase offers, at most: the schedule's expected count (rate
//!   steps included) + 3 √count + 1 (Poisson arrivals vary by about √count);
//! - stop when the first exceeds `(1 − ratio_min)` (or `ratio_max`) × the second.

use loadgen::{Progress, RateStep};
use scenario::{Phase, Slo};

/// An SLO that may stop the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Its index in the scenario's `slo` list.
    pub index: usize,
    /// The share of measured requests that may fail.
    pub allowed_failed_share: f64,
    pub what: String,
}

/// The SLOs that asked to stop the run early.
pub fn guards(slos: &[Slo]) -> Vec<Guard> {
    slos.iter()
        .enumerate()
        .filter_map(|(index, slo)| match slo {
            Slo::Availability {
                phase: Phase::Measured,
                ratio_min,
                abort_on_fail: true,
            } => Some(Guard {
                index,
                allowed_failed_share: 1.0 - ratio_min,
                what: format!("availability (measured) ≥ {ratio_min}"),
            }),
            Slo::Errors {
                phase: Phase::Measured,
                error_kind: None,
                ratio_max: Some(max),
                abort_on_fail: true,
                ..
            } => Some(Guard {
                index,
                allowed_failed_share: *max,
                what: format!("error ratio (measured) ≤ {max}"),
            }),
            _ => None,
        })
        .collect()
}

/// Requests the schedule offers in `[from_s, to_s)` at `base` requests per second under
/// `steps` (each multiplies `base` from its `at` on).
pub fn planned_requests(base: f64, steps: &[RateStep], from_s: f64, to_s: f64) -> f64 {
    let mut edges: Vec<(f64, f64)> = vec![(0.0, 1.0)];
    edges.extend(steps.iter().map(|s| (s.at.as_secs_f64(), s.multiplier)));
    let mut total = 0.0;
    for (i, &(at, mult)) in edges.iter().enumerate() {
        let end = edges.get(i + 1).map_or(f64::INFINITY, |e| e.0);
        let (a, b) = (at.max(from_s), end.min(to_s));
        if b > a {
            total += base * mult * (b - a);
        }
    }
    total
}

/// The counts when the measured phase began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtMeasuredStart {
    pub failed: u64,
    pub in_flight: u64,
}

/// Whether `guard` can no longer pass, per the module rule; the reason if so.
pub fn doomed(
    guard: &Guard,
    start: AtMeasuredStart,
    now: &Progress,
    planned: f64,
) -> Option<String> {
    let failed = now.failed.saturating_sub(start.failed + start.in_flight);
    let most = planned + 3.0 * planned.sqrt() + 1.0;
    let allowed = guard.allowed_failed_share * most;
    (failed as f64 > allowed).then(|| {
        format!(
            "stopped early at {:.1} s (abort_on_fail): {} can no longer hold — {failed} measured requests already failed, more than {allowed:.0} of the at most {most:.0} the measured phase offers",
            now.elapsed.as_secs_f64(),
            guard.what
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn planned_requests_integrate_the_rate_steps_over_the_phase() {
        let steps = [
            RateStep {
                at: Duration::from_secs(2),
                multiplier: 3.0,
            },
            RateStep {
                at: Duration::from_secs(4),
                multiplier: 1.0,
            },
        ];
        // 100/s over [1, 6): 1 s at 100, 2 s at 300, 2 s at 100.
        assert!((planned_requests(100.0, &steps, 1.0, 6.0) - 900.0).abs() < 1e-9);
        assert!((planned_requests(100.0, &[], 0.0, 10.0) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn a_guard_stops_only_when_failure_is_certain() {
        let slo: Slo = serde_json::from_value(serde_json::json!(
            {"kind": "availability", "ratio_min": 0.9, "abort_on_fail": true}
        ))
        .expect("an SLO");
        let g = &guards(&[slo])[0];
        let start = AtMeasuredStart {
            failed: 5,
            in_flight: 3,
        };
        let now = |failed| Progress {
            elapsed: Duration::from_secs(3),
            sent: 500,
            ok: 400,
            failed,
            in_flight: 0,
            rate_per_s: 100.0,
            t0: None,
        };
        // 1000 planned: at most 1000 + 3 × 31.6 + 1 ≈ 1096; 10 % of that ≈ 110.
        assert_eq!(doomed(g, start, &now(110), 1000.0), None);
        let why = doomed(g, start, &now(130), 1000.0).expect("122 > 110: certain");
        assert!(
            why.contains("availability (measured) ≥ 0.9 can no longer hold"),
            "{why}"
        );
        assert!(
            why.contains("122 measured requests already failed"),
            "{why}"
        );
    }

    #[test]
    fn only_measured_availability_and_all_error_ratio_max_slos_guard() {
        let slos: Vec<Slo> = serde_json::from_value(serde_json::json!([
            {"kind": "availability", "ratio_min": 0.9},
            {"kind": "errors", "ratio_max": 0.05, "abort_on_fail": true},
            {"kind": "errors", "ratio_max": 0.05, "error_kind": "http_429", "abort_on_fail": true},
        ]))
        .expect("SLOs");
        let g = guards(&slos);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].index, g[0].allowed_failed_share), (1, 0.05));
    }
}
