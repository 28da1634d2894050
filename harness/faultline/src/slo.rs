//! SLO evaluation: a pure function of the scenario's assertions and the measured data.
//! A figure that cannot be measured (no requests in the phase, no recovery) fails with
//! "n/a" and a reason; it never passes by default.

use hdrhistogram::Histogram;
use report::{Recovery, SearchResult, SloVerdict};
use scenario::{LatencyMeasure, Phase, RecoveryMeasure, Slo};

use crate::analysis::PhaseData;

/// Everything an SLO can read.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub phases: &'a [PhaseData],
    pub recoveries: &'a [Recovery],
    pub searches: &'a [SearchResult],
    pub training: &'a [report::TrainingResult],
    /// Overall and every window balanced.
    pub accounting_balanced: bool,
    /// Windows whose accounting did not balance (start seconds), for the message.
    pub unbalanced_windows: Vec<f64>,
}

pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Warmup => "warmup",
        Phase::Measured => "measured",
        Phase::Steady => "steady",
        Phase::Faulted => "faulted",
        Phase::Recovering => "recovering",
    }
}

fn measure_name(m: LatencyMeasure) -> &'static str {
    match m {
        LatencyMeasure::Corrected => "corrected latency",
        LatencyMeasure::Service => "service time",
        LatencyMeasure::SendLag => "send lag",
        LatencyMeasure::Ttft => "TTFT",
        LatencyMeasure::Itl => "ITL",
        LatencyMeasure::Tpot => "TPOT",
        LatencyMeasure::All => "latency of all requests",
    }
}

fn histogram(data: &PhaseData, m: LatencyMeasure) -> &Histogram<u64> {
    let s = &data.stats;
    match m {
        LatencyMeasure::Corrected => &s.latency,
        LatencyMeasure::Service => &s.service,
        LatencyMeasure::SendLag => &s.send_lag,
        LatencyMeasure::Ttft => &s.ttft,
        LatencyMeasure::Itl => &s.itl,
        LatencyMeasure::Tpot => &s.tpot,
        LatencyMeasure::All => &s.latency_all,
    }
}

fn bounds(min: Option<f64>, max: Option<f64>, unit: &str) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("{lo}{unit} ≤ x ≤ {hi}{unit}"),
        (Some(lo), None) => format!("≥ {lo}{unit}"),
        (None, Some(hi)) => format!("≤ {hi}{unit}"),
        (None, None) => "no bound".to_owned(),
    }
}

fn within(x: f64, min: Option<f64>, max: Option<f64>) -> bool {
    min.is_none_or(|lo| x >= lo) && max.is_none_or(|hi| x <= hi)
}

fn verdict(
    index: usize,
    description: String,
    phase: Option<Phase>,
    expected: String,
    observed: Result<String, String>,
    pass: bool,
) -> SloVerdict {
    let (observed, pass) = match observed {
        Ok(o) => (o, pass),
        Err(why) => (format!("n/a ({why})"), false),
    };
    SloVerdict {
        description,
        index,
        phase: phase.map(|p| phase_name(p).to_owned()),
        expected,
        observed,
        pass,
    }
}

fn find_phase<'a>(ev: &'a Evidence<'_>, p: Phase) -> Result<&'a PhaseData, String> {
    ev.phases
        .iter()
        .find(|d| d.name == phase_name(p))
        .ok_or_else(|| format!("phase {} was not measured", phase_name(p)))
}

fn best_rate(ev: &Evidence<'_>, variant: Option<&str>) -> Result<f64, String> {
    let search = match variant {
        Some(v) => ev.searches.iter().find(|s| s.variant == v),
        None => ev.searches.first(),
    }
    .ok_or_else(|| format!("no search for variant {}", variant.unwrap_or("(default)")))?;
    search.best_rate_per_s.ok_or_else(|| {
        format!(
            "variant {}: {}",
            search.variant,
            search
                .not_found
                .as_deref()
                .unwrap_or("no rate met the bounds")
        )
    })
}

/// Evaluates every SLO, in file order.
pub fn evaluate(slos: &[Slo], ev: &Evidence<'_>) -> Vec<SloVerdict> {
    slos.iter()
        .enumerate()
        .map(|(i, slo)| evaluate_one(i, slo, ev))
        .collect()
}

fn evaluate_one(i: usize, slo: &Slo, ev: &Evidence<'_>) -> SloVerdict {
    match slo {
        Slo::Latency {
            phase,
            measure,
            percentile,
            latency_ms_max,
            latency_ms_min,
        } => {
            let desc = format!(
                "p{percentile} {} ({})",
                measure_name(*measure),
                phase_name(*phase)
            );
            let value = find_phase(ev, *phase).and_then(|d| {
                let h = histogram(d, *measure);
                if h.is_empty() {
                    Err("no requests recorded".to_owned())
                } else {
                    Ok(h.value_at_quantile(percentile / 100.0) as f64 / 1000.0)
                }
            });
            let pass = value
                .as_ref()
                .is_ok_and(|&v| within(v, *latency_ms_min, *latency_ms_max));
            verdict(
                i,
                desc,
                Some(*phase),
                bounds(*latency_ms_min, *latency_ms_max, " ms"),
                value.map(|v| format!("{v:.2} ms")),
                pass,
            )
        }
        Slo::Availability {
            phase, ratio_min, ..
        } => {
            let value = find_phase(ev, *phase)
                .and_then(|d| d.availability().ok_or_else(|| "nothing sent".to_owned()));
            let pass = value.as_ref().is_ok_and(|&v| v >= *ratio_min);
            verdict(
                i,
                format!("availability ({})", phase_name(*phase)),
                Some(*phase),
                format!("≥ {ratio_min}"),
                value.map(|v| format!("{v:.5}")),
                pass,
            )
        }
        Slo::Errors {
            phase,
            error_kind,
            ratio_max,
            ratio_min,
            ..
        } => {
            let what = error_kind.as_deref().unwrap_or("all errors");
            let value = find_phase(ev, *phase).and_then(|d| {
                let c = &d.counts;
                if c.sent == 0 {
                    return Err("nothing sent".to_owned());
                }
                let n = match error_kind.as_deref() {
                    None => c.failed(),
                    Some("timeout") => c.timeouts,
                    Some("dropped_by_generator") => c.dropped_by_generator,
                    Some(kind) => c
                        .errors
                        .iter()
                        .filter(|(k, _)| k.to_string() == kind)
                        .map(|(_, v)| *v)
                        .sum(),
                };
                Ok((n, n as f64 / c.sent as f64))
            });
            let pass = value
                .as_ref()
                .is_ok_and(|&(_, r)| within(r, *ratio_min, *ratio_max));
            verdict(
                i,
                format!("error ratio, {what} ({})", phase_name(*phase)),
                Some(*phase),
                bounds(*ratio_min, *ratio_max, ""),
                value.map(|(n, r)| format!("{r:.5} ({n} requests)")),
                pass,
            )
        }
        Slo::Throughput { phase, rps_min } => {
            let value = find_phase(ev, *phase).map(PhaseData::throughput_rps);
            let pass = value.as_ref().is_ok_and(|&v| v >= *rps_min);
            verdict(
                i,
                format!("throughput ({})", phase_name(*phase)),
                Some(*phase),
                format!("≥ {rps_min} req/s"),
                value.map(|v| format!("{v:.1} req/s")),
                pass,
            )
        }
        Slo::Recovery {
            fault,
            recovery_s_max,
            measure,
        } => {
            let value = ev
                .recoveries
                .iter()
                .find(|r| &r.fault_id == fault)
                .ok_or_else(|| format!("fault {fault} was not injected"))
                .and_then(|r| {
                    match measure {
                        RecoveryMeasure::Success => r.recovery_s,
                        RecoveryMeasure::Latency => r.latency_recovery_s,
                    }
                    .ok_or_else(|| match (measure, r.latency_baseline_ms) {
                        (RecoveryMeasure::Latency, None) => {
                            "no pre-fault latency to compare with (no completed request before the fault)".to_owned()
                        }
                        _ => "did not recover before the run ended".to_owned(),
                    })
                });
            let pass = value.as_ref().is_ok_and(|&v| v <= *recovery_s_max);
            let what = match measure {
                RecoveryMeasure::Success => "recovery time",
                RecoveryMeasure::Latency => "latency recovery time",
            };
            verdict(
                i,
                format!("{what} after {fault}"),
                None,
                format!("≤ {recovery_s_max} s"),
                value.map(|v| format!("{v:.2} s")),
                pass,
            )
        }
        Slo::Accounting {} => {
            let observed = if ev.accounting_balanced && !ev.training.is_empty() {
                "every job's steps accounted".to_owned()
            } else if ev.accounting_balanced {
                "balanced in every window and overall".to_owned()
            } else {
                format!(
                    "unbalanced (windows starting at {:?} s)",
                    ev.unbalanced_windows
                )
            };
            let what = if ev.training.is_empty() {
                "accounting: sent = ok + errors + timeouts + dropped"
            } else {
                "accounting: every step completed, redone and skipped steps counted"
            };
            verdict(
                i,
                what.to_owned(),
                None,
                "balanced".to_owned(),
                Ok(observed),
                ev.accounting_balanced,
            )
        }
        Slo::MaxThroughput { variant, rps_min } => {
            let value = best_rate(ev, variant.as_deref());
            let pass = value.as_ref().is_ok_and(|&v| v >= *rps_min);
            verdict(
                i,
                format!(
                    "max throughput at SLO, {}",
                    variant.as_deref().unwrap_or("default")
                ),
                None,
                format!("≥ {rps_min} req/s"),
                value.map(|v| format!("{v:.1} req/s")),
                pass,
            )
        }
        Slo::LostSteps { fault, steps_max } => {
            let recs: Vec<&report::TrainingRecovery> = ev
                .training
                .iter()
                .flat_map(|t| t.recoveries.iter())
                .filter(|r| fault.as_ref().is_none_or(|f| &r.fault_id == f))
                .collect();
            let value = if recs.is_empty() {
                Err(match fault {
                    Some(f) => format!("fault {f} did not interrupt training"),
                    None => "no fault interrupted training".to_owned(),
                })
            } else {
                recs.iter()
                    .map(|r| {
                        r.lost_steps
                            .ok_or_else(|| format!("no restore after {}", r.fault_id))
                    })
                    .sum::<Result<u64, String>>()
            };
            let pass = value.as_ref().is_ok_and(|&v| v <= *steps_max);
            verdict(
                i,
                format!(
                    "lost steps{}",
                    fault
                        .as_ref()
                        .map_or(String::new(), |f| format!(" after {f}"))
                ),
                None,
                format!("≤ {steps_max}"),
                value.map(|v| v.to_string()),
                pass,
            )
        }
        Slo::ScalingEfficiency {
            workers,
            efficiency_min,
        } => {
            let thr = |n: u32| {
                ev.training
                    .iter()
                    .find(|t| t.workers == n)
                    .ok_or_else(|| format!("no variant with {n} worker(s)"))
                    .and_then(|t| {
                        t.throughput_samples_per_s
                            .ok_or_else(|| format!("{n}-worker job has too few steps to measure"))
                    })
            };
            let value = thr(1).and_then(|one| Ok(thr(*workers)? / (f64::from(*workers) * one)));
            let pass = value.as_ref().is_ok_and(|&v| v >= *efficiency_min);
            verdict(
                i,
                format!("scaling efficiency E({workers})"),
                None,
                format!("≥ {efficiency_min}"),
                value.map(|v| format!("{v:.3}")),
                pass,
            )
        }
        Slo::Loss { final_ratio_max } => {
            let value = ev
                .training
                .iter()
                .map(|t| match (t.loss_first, t.loss_last) {
                    (Some(a), Some(b)) if a > 0.0 => Ok(b / a),
                    _ => Err(format!("variant {} logged no loss", t.variant)),
                })
                .reduce(|a, b| Ok(a?.max(b?)))
                .unwrap_or_else(|| Err("no training job ran".to_owned()));
            let pass = value.as_ref().is_ok_and(|&v| v <= *final_ratio_max);
            verdict(
                i,
                "final loss / initial loss (worst variant)".to_owned(),
                None,
                format!("≤ {final_ratio_max}"),
                value.map(|v| format!("{v:.3}")),
                pass,
            )
        }
        Slo::ThroughputRatio {
            numerator,
            denominator,
            ratio_min,
        } => {
            let value = best_rate(ev, Some(numerator)).and_then(|n| {
                let d = best_rate(ev, Some(denominator))?;
                if d > 0.0 {
                    Ok(n / d)
                } else {
                    Err(format!("{denominator} reached 0 req/s"))
                }
            });
            let pass = value.as_ref().is_ok_and(|&v| v >= *ratio_min);
            verdict(
                i,
                format!("max throughput ratio {numerator} / {denominator}"),
                None,
                format!("≥ {ratio_min}×"),
                value.map(|v| format!("{v:.2}×")),
                pass,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadgen::{Counts, LatencyStats};

    fn phase(name: &str, latencies_ms: &[u64], ok: u64, sent: u64) -> PhaseData {
        let mut stats = LatencyStats::default();
        for l in latencies_ms {
            stats.latency.record(l * 1000).expect("in range");
        }
        PhaseData {
            name: name.to_owned(),
            start_s: 0.0,
            end_s: 10.0,
            covered_s: 10.0,
            counts: Counts {
                sent,
                ok,
                timeouts: sent - ok,
                ..Counts::default()
            },
            completed: ok,
            stats,
        }
    }

    fn evidence(phases: &[PhaseData]) -> Evidence<'_> {
        Evidence {
            phases,
            recoveries: &[],
            searches: &[],
            training: &[],
            accounting_balanced: true,
            unbalanced_windows: vec![],
        }
    }

    #[test]
    fn latency_bounds_pass_and_fail_on_the_percentile() {
        let phases = [phase("measured", &[10; 99], 99, 99)];
        let mut lat: Vec<u64> = vec![10; 98];
        lat.extend([500, 500]);
        let slow = [phase("measured", &lat, 100, 100)];
        let slo = Slo::Latency {
            phase: Phase::Measured,
            measure: LatencyMeasure::Corrected,
            percentile: 99.0,
            latency_ms_max: Some(100.0),
            latency_ms_min: None,
        };
        assert!(evaluate(std::slice::from_ref(&slo), &evidence(&phases))[0].pass);
        let v = &evaluate(&[slo], &evidence(&slow))[0];
        assert!(!v.pass, "{v:?}");
        assert!(v.observed.starts_with("500"), "{}", v.observed);
    }

    #[test]
    fn an_unmeasurable_phase_fails_instead_of_passing() {
        let phases = [phase("faulted", &[], 0, 0)];
        let slo = Slo::Latency {
            phase: Phase::Faulted,
            measure: LatencyMeasure::Corrected,
            percentile: 99.0,
            latency_ms_max: Some(100.0),
            latency_ms_min: None,
        };
        let v = &evaluate(&[slo], &evidence(&phases))[0];
        assert!(!v.pass);
        assert!(v.observed.starts_with("n/a"), "{}", v.observed);
    }

    #[test]
    fn availability_and_error_ratios_read_the_counts() {
        let phases = [phase("measured", &[1; 90], 90, 100)];
        let ev = evidence(&phases);
        let slos = [
            Slo::Availability {
                phase: Phase::Measured,
                ratio_min: 0.85,
                abort_on_fail: false,
            },
            Slo::Availability {
                phase: Phase::Measured,
                ratio_min: 0.95,
                abort_on_fail: false,
            },
            Slo::Errors {
                phase: Phase::Measured,
                error_kind: Some("timeout".into()),
                ratio_max: Some(0.05),
                ratio_min: None,
                abort_on_fail: false,
            },
        ];
        let v = evaluate(&slos, &ev);
        assert_eq!(
            v.iter().map(|v| v.pass).collect::<Vec<_>>(),
            [true, false, false]
        );
    }

    #[test]
    fn recovery_slo_fails_when_the_fault_never_recovered() {
        let rec = [Recovery {
            fault_id: "crash".into(),
            kind: "process.kill".into(),
            variant: None,
            start_s: 3.0,
            recovery_s: None,
            latency_recovery_s: Some(2.0),
            latency_baseline_ms: Some(3.0),
            failed_requests: 10,
            restarts: 0,
        }];
        let ev = Evidence {
            recoveries: &rec,
            ..evidence(&[])
        };
        let slo = |measure| Slo::Recovery {
            fault: "crash".into(),
            recovery_s_max: 5.0,
            measure,
        };
        let v = evaluate(
            &[slo(RecoveryMeasure::Success), slo(RecoveryMeasure::Latency)],
            &ev,
        );
        assert!(!v[0].pass);
        assert_eq!(v[0].observed, "n/a (did not recover before the run ended)");
        assert!(v[1].pass, "{v:?}");
        assert_eq!(v[1].description, "latency recovery time after crash");
    }

    #[test]
    fn latency_over_all_requests_counts_timeouts_that_successes_hide() {
        // 90 fast successes and 10 timeouts given up at 2 s.
        let mut p = phase("measured", &[5; 90], 90, 100);
        for l in [5u64; 90].iter().chain([2000u64; 10].iter()) {
            p.stats.latency_all.record(l * 1000).expect("in range");
        }
        let phases = [p];
        let ev = evidence(&phases);
        let slo = |measure| Slo::Latency {
            phase: Phase::Measured,
            measure,
            percentile: 95.0,
            latency_ms_max: Some(100.0),
            latency_ms_min: None,
        };
        let v = evaluate(
            &[slo(LatencyMeasure::Corrected), slo(LatencyMeasure::All)],
            &ev,
        );
        assert!(v[0].pass, "successes alone look fine");
        assert!(!v[1].pass, "all requests do not: {v:?}");
        assert!(v[1].description.contains("latency of all requests"));
    }
}
