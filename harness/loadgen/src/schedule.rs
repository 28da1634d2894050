//! The open-loop schedule: when each request is meant to be sent, and which one it is.
//!
//! Sans-IO: a pure iterator over intended send offsets (since t0). Rate steps are handled
//! by time rescaling: with `Λ(t) = ∫₀ᵗ rate(s) ds`, request *i* is sent when `Λ(t)` reaches
//! `xᵢ`, where `xᵢ = i` for constant arrivals and `xᵢ` is a unit-rate Poisson process
//! (cumulative sums of Exp(1) gaps) for Poisson arrivals. With one rate this is exactly
//! `t0 + i/rate`, and the Poisson case is an inhomogeneous Poisson process with the stepped
//! rate.

use std::time::Duration;

use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::Exp1;

use crate::spec::{Arrival, RateStep};

/// Piecewise-constant offered rate and its inverse cumulative count.
#[derive(Debug, Clone)]
pub struct RateCurve {
    /// (segment start in s, rate in 1/s, cumulative expected count at segment start)
    segments: Vec<(f64, f64, f64)>,
}

impl RateCurve {
    /// `base_rate_per_s` scaled by the multiplier of the step in force (1 before the first).
    pub fn new(base_rate_per_s: f64, steps: &[RateStep]) -> Self {
        let mut segments = vec![(0.0, base_rate_per_s, 0.0)];
        for s in steps {
            let at = s.at.as_secs_f64();
            let rate = base_rate_per_s * s.multiplier;
            let &(start, prev_rate, count) = segments.last().expect("never empty");
            if at <= start {
                // A step at the same instant (or at 0) replaces the segment's rate.
                let last = segments.last_mut().expect("never empty");
                last.1 = rate;
            } else {
                segments.push((at, rate, count + (at - start) * prev_rate));
            }
        }
        RateCurve { segments }
    }

    /// The offered rate at `t`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        let i = self.segments.partition_point(|s| s.0 <= t);
        self.segments[i.saturating_sub(1)].1
    }

    /// The time at which the expected cumulative count reaches `x`, or `None` if it never
    /// does (the rate drops to 0 for good).
    pub fn time_of_count(&self, x: f64) -> Option<f64> {
        // The last segment whose start count is <= x contains x (a later zero-rate
        // segment has the same start count, so it wins and means "never").
        let i = self.segments.partition_point(|s| s.2 <= x);
        let &(start, rate, count) = self.segments.get(i.checked_sub(1)?)?;
        (rate > 0.0).then(|| start + (x - count) / rate)
    }
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// 0-based sequence number.
    pub seq: u64,
    /// Intended send time since t0.
    pub intended: Duration,
    /// Index into the request mix.
    pub template: usize,
    /// Index into the targets (round-robin).
    pub target: usize,
}

/// The seeded weighted choice of request template.
#[derive(Debug, Clone)]
pub struct Mix {
    rng: StdRng,
    index: Option<WeightedIndex<f64>>,
}

impl Mix {
    /// Weights must be finite and > 0 (checked by spec validation); invalid weights fall
    /// back to always choosing template 0.
    pub fn new(weights: &[f64], seed: u64) -> Self {
        let index = if weights.len() > 1 {
            WeightedIndex::new(weights.iter().copied()).ok()
        } else {
            None
        };
        Mix {
            rng: StdRng::seed_from_u64(seed ^ 0x6d69_785f_6d69_785f),
            index,
        }
    }

    /// The next template index.
    pub fn choose(&mut self) -> usize {
        match &self.index {
            Some(ix) => ix.sample(&mut self.rng),
            None => 0,
        }
    }
}

/// Iterator over the requests intended in `[0, end)`.
#[derive(Debug, Clone)]
pub struct Schedule {
    curve: RateCurve,
    arrival: Arrival,
    rng: StdRng,
    mix: Mix,
    targets: usize,
    end_s: f64,
    seq: u64,
    x: f64,
}

impl Schedule {
    pub fn new(
        curve: RateCurve,
        arrival: Arrival,
        end: Duration,
        weights: &[f64],
        targets: usize,
        seed: u64,
    ) -> Self {
        Schedule {
            curve,
            arrival,
            rng: StdRng::seed_from_u64(seed),
            mix: Mix::new(weights, seed),
            targets: targets.max(1),
            end_s: end.as_secs_f64(),
            seq: 0,
            x: 0.0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Scheduled;

    fn next(&mut self) -> Option<Scheduled> {
        let t = self.curve.time_of_count(self.x)?;
        if t >= self.end_s {
            return None;
        }
        let seq = self.seq;
        let item = Scheduled {
            seq,
            intended: Duration::from_secs_f64(t.max(0.0)),
            template: self.mix.choose(),
            target: (seq % self.targets as u64) as usize,
        };
        self.seq += 1;
        self.x = match self.arrival {
            Arrival::Constant => self.seq as f64,
            Arrival::Poisson => {
                let gap: f64 = Exp1.sample(&mut self.rng);
                self.x + gap
            }
        };
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(
        rate: f64,
        arrival: Arrival,
        steps: &[RateStep],
        end_s: f64,
        seed: u64,
    ) -> Vec<Scheduled> {
        Schedule::new(
            RateCurve::new(rate, steps),
            arrival,
            Duration::from_secs_f64(end_s),
            &[1.0],
            1,
            seed,
        )
        .collect()
    }

    #[test]
    fn constant_schedule_is_i_over_rate() {
        let s = schedule(1000.0, Arrival::Constant, &[], 1.0, 0);
        assert_eq!(s.len(), 1000);
        for (i, r) in s.iter().enumerate() {
            let want = i as f64 / 1000.0;
            assert!((r.intended.as_secs_f64() - want).abs() < 1e-9, "{i}");
        }
    }

    #[test]
    fn rate_steps_change_spacing_piecewise() {
        let steps = [
            RateStep {
                at: Duration::from_secs(1),
                multiplier: 3.0,
            },
            RateStep {
                at: Duration::from_secs(2),
                multiplier: 1.0,
            },
        ];
        let s = schedule(100.0, Arrival::Constant, &steps, 3.0, 0);
        let count_in = |a: f64, b: f64| {
            s.iter()
                .filter(|r| (a..b).contains(&r.intended.as_secs_f64()))
                .count()
        };
        assert_eq!(count_in(0.0, 1.0), 100);
        assert_eq!(count_in(1.0, 2.0), 300);
        assert_eq!(count_in(2.0, 3.0), 100);
    }

    #[test]
    fn zero_multiplier_pauses_and_resumes() {
        let steps = [
            RateStep {
                at: Duration::from_secs(1),
                multiplier: 0.0,
            },
            RateStep {
                at: Duration::from_secs(2),
                multiplier: 1.0,
            },
        ];
        let s = schedule(10.0, Arrival::Constant, &steps, 3.0, 0);
        assert_eq!(s.len(), 20);
        assert!(s
            .iter()
            .all(|r| !(1.0..2.0).contains(&r.intended.as_secs_f64())));
        let stop = [RateStep {
            at: Duration::from_secs(1),
            multiplier: 0.0,
        }];
        assert_eq!(schedule(10.0, Arrival::Constant, &stop, 3.0, 0).len(), 10);
    }

    #[test]
    fn poisson_is_seeded_and_has_the_right_mean() {
        let a = schedule(2000.0, Arrival::Poisson, &[], 5.0, 7);
        let b = schedule(2000.0, Arrival::Poisson, &[], 5.0, 7);
        let c = schedule(2000.0, Arrival::Poisson, &[], 5.0, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 10 000 expected; sd = 100.
        assert!((9_500..10_500).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].intended <= w[1].intended));
    }

    #[test]
    fn mix_follows_weights_and_targets_round_robin() {
        let s: Vec<_> = Schedule::new(
            RateCurve::new(1000.0, &[]),
            Arrival::Constant,
            Duration::from_secs(10),
            &[1.0, 3.0],
            3,
            1,
        )
        .collect();
        let heavy = s.iter().filter(|r| r.template == 1).count() as f64 / s.len() as f64;
        assert!((0.72..0.78).contains(&heavy), "{heavy}");
        assert_eq!(s[4].target, 1);
    }

    #[test]
    fn rate_at_reads_the_step_in_force() {
        let c = RateCurve::new(
            10.0,
            &[RateStep {
                at: Duration::from_secs(2),
                multiplier: 5.0,
            }],
        );
        assert_eq!(c.rate_at(Duration::from_secs(1)), 10.0);
        assert_eq!(c.rate_at(Duration::from_secs(2)), 50.0);
    }
}
