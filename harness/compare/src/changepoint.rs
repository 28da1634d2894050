//! Change points in one figure's history (its values in run order): E-divisive means
//! (Matteson & James 2014, "A nonparametric approach for multiple change point analysis
//! of multivariate data"), the method behind MongoDB's signal processing, Hunter and
//! Otava.
//!
//! The divergence between the values before and after a split τ of a segment, with
//! distance exponent 1, is
//!
//! ```text
//! Q(τ) = m·n/(m+n) · ( 2/(m·n) Σ|xᵢ−yⱼ| − 1/C(m,2) Σ|xᵢ−xₖ| − 1/C(n,2) Σ|yⱼ−yₗ| )
//! ```
//!
//! (x the m values before τ, y the n values from τ to the end of the segment). Bisection:
//! the best split over all current segments is tested by a permutation test (the values
//! of that segment shuffled, the largest Q recomputed; p = (#{Q* ≥ Q} + 1)/(R + 1)); when
//! p < significance it becomes a change point and the search goes on, otherwise it stops.
//! As Hunter does, a split's right part runs to the end of its segment (the paper also
//! maximises over that end, κ; this is the common simplification).
//!
//! Not here: deciding whether tonight is worse (that is `compare`); this finds where a
//! history shifted.

use serde::{Deserialize, Serialize};

use crate::stats::{mean, Rng};
use crate::CompareError;

/// The longest series analysed: the scan is O(n²) per permutation.
pub const MAX_SERIES: usize = 1000;
/// The most permutations per test.
pub const MAX_PERMUTATIONS: u32 = 10_000;

/// Settings of [`change_points`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChangePointOptions {
    /// A split is a change point when its permutation p-value is below this. Default 0.05.
    pub significance: f64,
    /// Permutations per test, 1..=[`MAX_PERMUTATIONS`]. Default 199.
    pub permutations: u32,
    /// Fewest values on each side of a change point (≥ 2). Default 3.
    pub min_size: usize,
    /// Seed of the permutations. Default 0.
    pub seed: u64,
}

impl Default for ChangePointOptions {
    fn default() -> Self {
        Self {
            significance: 0.05,
            permutations: 199,
            min_size: 3,
            seed: 0,
        }
    }
}

/// One change point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePoint {
    /// Index of the first value after the change.
    pub index: usize,
    /// Mean of the segment that ends at the change (between the previous change point, or
    /// the start, and this one).
    pub mean_before: f64,
    /// Mean of the segment that starts at the change.
    pub mean_after: f64,
    /// The divergence Q of the split when it was found.
    pub statistic: f64,
    /// Its permutation p-value.
    pub p_value: f64,
}

/// Change points of `values` (in order), with the mean of the segments around each.
///
/// # Errors
/// [`CompareError::Options`] when `values` is longer than [`MAX_SERIES`], holds a value
/// that is not finite, or the options are out of range.
pub fn change_points(
    values: &[f64],
    opts: &ChangePointOptions,
) -> Result<Vec<ChangePoint>, CompareError> {
    let mut problems = Vec::new();
    if values.len() > MAX_SERIES {
        problems.push(format!(
            "series of {} values is above the limit of {MAX_SERIES}",
            values.len()
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        problems.push(format!("value {i} is {}, not a finite number", values[i]));
    }
    if !(opts.significance > 0.0 && opts.significance < 1.0) {
        problems.push(format!(
            "significance {} is not in (0, 1)",
            opts.significance
        ));
    }
    if opts.permutations == 0 || opts.permutations > MAX_PERMUTATIONS {
        problems.push(format!(
            "permutations {} is not in 1..={MAX_PERMUTATIONS}",
            opts.permutations
        ));
    }
    if opts.min_size < 2 {
        problems.push(format!("min_size {} is below 2", opts.min_size));
    }
    if !problems.is_empty() {
        return Err(CompareError::Options(problems));
    }
    let n = values.len();
    let mut rng = Rng::new(opts.seed);
    // Segment boundaries, sorted: 0, change points…, n.
    let mut cuts = vec![0, n];
    let mut found: Vec<(usize, f64, f64)> = Vec::new();
    // Bounded: every round adds a cut at least min_size from the others.
    while found.len() < n {
        let best = cuts
            .windows(2)
            .filter_map(|w| {
                let seg = &values[w[0]..w[1]];
                best_split(seg, opts.min_size).map(|(tau, q)| (w[0] + tau, q, w[0], w[1]))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((at, q, start, end)) = best else {
            break;
        };
        let mut seg: Vec<f64> = values[start..end].to_vec();
        let mut as_large = 0u32;
        for _ in 0..opts.permutations {
            shuffle(&mut seg, &mut rng);
            if best_split(&seg, opts.min_size).is_some_and(|(_, qp)| qp >= q) {
                as_large += 1;
            }
        }
        let p = f64::from(as_large + 1) / f64::from(opts.permutations + 1);
        if p >= opts.significance {
            break;
        }
        found.push((at, q, p));
        cuts.push(at);
        cuts.sort_unstable();
    }
    found.sort_by_key(|c| c.0);
    Ok(found
        .iter()
        .map(|&(index, statistic, p_value)| {
            let before = cuts
                .iter()
                .rev()
                .find(|&&c| c < index)
                .copied()
                .unwrap_or(0);
            let after = cuts.iter().find(|&&c| c > index).copied().unwrap_or(n);
            ChangePoint {
                index,
                mean_before: mean(&values[before..index]).unwrap_or(f64::NAN),
                mean_after: mean(&values[index..after]).unwrap_or(f64::NAN),
                statistic,
                p_value,
            }
        })
        .collect())
}

/// The split τ (min_size ≤ τ ≤ len − min_size) of `seg` with the largest Q, and that Q;
/// `None` when the segment is too short to split. O(len²): within-part distance sums are
/// kept as running totals while τ moves right.
fn best_split(seg: &[f64], min_size: usize) -> Option<(usize, f64)> {
    let len = seg.len();
    if len < 2 * min_size {
        return None;
    }
    // row[i] = Σⱼ |seg[i] − seg[j]| over the whole segment.
    let d = |i: usize, j: usize| (seg[i] - seg[j]).abs();
    let total: f64 = (0..len)
        .map(|i| (i + 1..len).map(|j| d(i, j)).sum::<f64>())
        .sum();
    let mut left = 0.0; // Σ over pairs inside [0, τ)
    let mut right = total; // Σ over pairs inside [τ, len)
    let mut best: Option<(usize, f64)> = None;
    for tau in 1..len {
        // Move seg[tau-1] from the right part to the left one.
        let k = tau - 1;
        left += (0..k).map(|i| d(i, k)).sum::<f64>();
        right -= (tau..len).map(|j| d(k, j)).sum::<f64>();
        if tau < min_size || len - tau < min_size {
            continue;
        }
        let (m, n) = (tau as f64, (len - tau) as f64);
        let cross = total - left - right;
        let e =
            2.0 * cross / (m * n) - left / (m * (m - 1.0) / 2.0) - right / (n * (n - 1.0) / 2.0);
        let q = m * n / (m + n) * e;
        if best.is_none_or(|b| q > b.1) {
            best = Some((tau, q));
        }
    }
    best
}

/// Fisher-Yates.
fn shuffle(v: &mut [f64], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, n: usize, sd: f64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| 100.0 + sd * rng.normal()).collect()
    }

    #[test]
    fn q_of_a_hand_computed_split() {
        // seg = 0 0 1 1, τ = 2: cross = 4·1, within = 0 → E = 2·4/4 = 2, Q = 4/4·2 = 2.
        assert_eq!(best_split(&[0.0, 0.0, 1.0, 1.0], 2), Some((2, 2.0)));
        // seg = 0 1 0 1 with τ forced to 2: cross 2, within-left 1, within-right 1:
        // E = 2·2/4 − 1 − 1 = −1 → Q = −1.
        assert_eq!(best_split(&[0.0, 1.0, 0.0, 1.0], 2), Some((2, -1.0)));
        assert_eq!(best_split(&[0.0, 1.0, 2.0], 2), None);
    }

    #[test]
    fn a_known_step_is_found_where_it_is() {
        let mut v = noise(1, 40, 1.0);
        for x in &mut v[25..] {
            *x += 5.0;
        }
        let cps = change_points(&v, &ChangePointOptions::default()).expect("valid");
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!(cps[0].index, 25);
        assert!((cps[0].mean_after - cps[0].mean_before - 5.0).abs() < 1.0);
        assert!(cps[0].p_value < 0.05);
    }

    #[test]
    fn two_steps_are_both_found() {
        let mut v = noise(2, 60, 1.0);
        for x in &mut v[20..40] {
            *x += 6.0;
        }
        let cps = change_points(&v, &ChangePointOptions::default()).expect("valid");
        let at: Vec<usize> = cps.iter().map(|c| c.index).collect();
        assert_eq!(at, vec![20, 40]);
    }

    #[test]
    fn pure_noise_rarely_has_a_change_point() {
        // 100 seeded noise series of 30 runs: the first test alone is at 5 %; allow 10 %.
        let with_any = (0..100u64)
            .filter(|&seed| {
                let opts = ChangePointOptions {
                    seed,
                    ..ChangePointOptions::default()
                };
                !change_points(&noise(1000 + seed, 30, 1.0), &opts)
                    .expect("valid")
                    .is_empty()
            })
            .count();
        assert!(
            with_any <= 10,
            "{with_any} of 100 noise series had a change point"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_answer() {
        let v = noise(5, 30, 1.0);
        let opts = ChangePointOptions::default();
        assert_eq!(
            change_points(&v, &opts).expect("valid"),
            change_points(&v, &opts).expect("valid")
        );
    }

    #[test]
    fn bad_input_is_refused_with_every_problem() {
        let err = change_points(
            &[1.0, f64::NAN],
            &ChangePointOptions {
                permutations: 0,
                min_size: 1,
                ..ChangePointOptions::default()
            },
        )
        .expect_err("invalid");
        let CompareError::Options(problems) = err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn short_series_have_no_change_points() {
        let opts = ChangePointOptions::default();
        assert!(change_points(&[], &opts).expect("valid").is_empty());
        assert!(change_points(&[1.0, 9.0, 9.0], &opts)
            .expect("valid")
            .is_empty());
    }
}
