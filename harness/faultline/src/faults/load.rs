//! `load.*` faults act on the load generator, not on a component: the offered rate is
//! planned up front ([`rate_steps`]) and the injector only records the fault.

use std::time::Duration;

use scenario::{Fault, FaultKind};
use serde_json::json;

use super::{Injection, Injector, Target};

/// Records a `load.spike` (the load generator applies it from [`rate_steps`]).
pub struct LoadInjector;

impl Injector for LoadInjector {
    fn inject(&self, fault: &Fault, _targets: &[Target]) -> Injection {
        let mut fields = serde_json::Map::new();
        fields.insert("multiplier".into(), json!(fault.multiplier));
        Injection {
            detail: format!("rate × {}", fault.multiplier.unwrap_or(1.0)),
            fields,
            guard: None,
        }
    }
}

/// The offered-rate multiplier over time from every `load.spike` (overlapping spikes
/// multiply), as steps for the load generator.
pub fn rate_steps(faults: &[Fault]) -> Vec<loadgen::RateStep> {
    let spikes: Vec<&Fault> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::LoadSpike)
        .collect();
    let mut edges: Vec<Duration> = spikes
        .iter()
        .flat_map(|f| [Some(f.at), f.until])
        .flatten()
        .collect();
    edges.sort();
    edges.dedup();
    edges
        .into_iter()
        .map(|at| loadgen::RateStep {
            at,
            multiplier: spikes
                .iter()
                .filter(|f| f.at <= at && f.until.is_none_or(|u| at < u))
                .map(|f| f.multiplier.unwrap_or(1.0))
                .product(),
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
}
