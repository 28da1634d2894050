//! `load.*` faults act on the load generator, not on a component: the offered rate is
//! planned up front ([`rate_steps`]) and the injector only records the fault.

use std::time::Duration;

use scenario::{Fault, FaultKind, Stage};
use serde_json::json;

use super::{Injection, Injector, Scope};

/// Records a `load.spike` (the load generator applies it from [`rate_steps`]).
pub struct LoadInjector;

impl Injector for LoadInjector {
    fn inject(&self, fault: &Fault, _scope: &Scope<'_>) -> Injection {
        let mut fields = serde_json::Map::new();
        fields.insert("multiplier".into(), json!(fault.multiplier));
        Injection {
            detail: format!("rate × {}", fault.multiplier.unwrap_or(1.0)),
            fields,
            guard: None,
            replicas: Vec::new(),
        }
    }
}

/// Width of the constant pieces a linear stage ramp is cut into.
pub const RAMP_STEP: Duration = Duration::from_millis(100);

/// The offered-rate multiplier over time from every `load.spike` (overlapping spikes
/// multiply), as steps for the load generator.
pub fn rate_steps(faults: &[Fault]) -> Vec<loadgen::RateStep> {
    rate_steps_with(1.0, &[], faults)
}

/// The open-loop rate at `t` under `stages` starting from `base` (piecewise linear; the
/// last target holds after the last stage).
pub fn stage_rate(base: f64, stages: &[Stage], t: Duration) -> f64 {
    let mut start = Duration::ZERO;
    let mut from = base;
    for st in stages {
        let end = start + st.duration;
        if t < end {
            let f = (t - start).as_secs_f64() / st.duration.as_secs_f64();
            return from + (st.target - from) * f;
        }
        start = end;
        from = st.target;
    }
    from
}

/// The multiplier of `base` over time from the `stages` (linear ramps cut into
/// [`RAMP_STEP`] pieces, each at the ramp's value in its middle) and every `load.spike`
/// (multiplied in), as steps for the load generator.
pub fn rate_steps_with(base: f64, stages: &[Stage], faults: &[Fault]) -> Vec<loadgen::RateStep> {
    let spikes: Vec<&Fault> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::LoadSpike)
        .collect();
    let mut edges: Vec<Duration> = spikes
        .iter()
        .flat_map(|f| [Some(f.at), f.until])
        .flatten()
        .collect();
    let staged: Duration = stages.iter().map(|s| s.duration).sum();
    let mut g = Duration::ZERO;
    let mut boundary = Duration::ZERO;
    for st in stages {
        while g < boundary + st.duration {
            edges.push(g);
            g = (g + RAMP_STEP).min(boundary + st.duration);
        }
        boundary += st.duration;
    }
    if !stages.is_empty() {
        edges.push(staged);
    }
    edges.sort();
    edges.dedup();
    let spike_at = |at: Duration| -> f64 {
        spikes
            .iter()
            .filter(|f| f.at <= at && f.until.is_none_or(|u| at < u))
            .map(|f| f.multiplier.unwrap_or(1.0))
            .product()
    };
    (0..edges.len())
        .map(|i| {
            let at = edges[i];
            let mid = match edges.get(i + 1) {
                Some(&next) if at < staged => at + (next - at) / 2,
                _ => at,
            };
            let stage = if base > 0.0 {
                stage_rate(base, stages, mid) / base
            } else {
                1.0
            };
            loadgen::RateStep {
                at,
                multiplier: stage * spike_at(at),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tests::fault;

    #[test]
    fn overlapping_spikes_multiply_and_end_back_at_one() {
        let faults = [
            fault(FaultKind::LoadSpike, 2, Some(6), Some(3.0)),
            fault(FaultKind::LoadSpike, 4, Some(8), Some(2.0)),
            fault(FaultKind::ProcessKill, 5, None, None),
        ];
        let steps: Vec<(u64, f64)> = rate_steps(&faults)
            .iter()
            .map(|s| (s.at.as_secs(), s.multiplier))
            .collect();
        assert_eq!(steps, vec![(2, 3.0), (4, 6.0), (6, 2.0), (8, 1.0)]);
    }

    fn stage(ms: u64, target: f64) -> Stage {
        Stage {
            duration: Duration::from_millis(ms),
            target,
        }
    }

    #[test]
    fn stages_ramp_in_100_ms_pieces_hold_their_last_target_and_multiply_with_spikes() {
        let stages = [stage(2000, 30.0), stage(1000, 30.0)];
        let mut spike = fault(FaultKind::LoadSpike, 1, None, Some(2.0));
        spike.until = Some(Duration::from_millis(1500));
        let steps = rate_steps_with(10.0, &stages, &[spike]);
        let at = |ms: u64| {
            steps
                .iter()
                .rev()
                .find(|s| s.at <= Duration::from_millis(ms))
                .map(|s| s.multiplier)
                .expect("a step")
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            close(at(0), 1.05),
            "10 → 30 over 2 s: 10.5/s in the first piece"
        );
        assert!(close(at(1000), 2.05 * 2.0), "20.5/s, doubled by the spike");
        assert!(close(at(1499), 2.45 * 2.0));
        assert!(close(at(1500), 2.55), "spike over");
        assert!(close(at(2500), 3.0), "a flat stage");
        assert!(close(at(60_000), 3.0), "the last target holds");
        assert_eq!(
            steps.windows(2).filter(|w| w[0].at >= w[1].at).count(),
            0,
            "sorted"
        );
        assert!(close(
            stage_rate(10.0, &stages, Duration::from_secs(1)),
            20.0
        ));
    }
}
