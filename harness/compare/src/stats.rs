//! The small statistics a verdict rests on, hand-written (see `Cargo.toml` for why): a
//! seeded RNG, medians and quantiles, the Mann-Whitney U test, and a (moving-block)
//! bootstrap of the relative change of medians.
//!
//! Not here: deciding a verdict (that is `compare.rs`), or change points
//! (`changepoint.rs`).

use serde::{Deserialize, Serialize};

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, fixed output for a seed
/// forever, good enough for resampling indices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller), for synthetic series in tests and examples.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A seed for one figure: the comparison's seed mixed with the figure's name (FNV-1a), so
/// a figure's numbers do not depend on which other figures were compared.
pub fn figure_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^ seed.rotate_left(17)
}

/// Median of finite values; `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, 0.5)
}

/// Quantile `q` in [0, 1] of sorted values, linear between order statistics (R's type 7);
/// `None` when empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Standard normal CDF, Φ(z) = erfc(−z/√2)/2.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function, Chebyshev fit with fractional error below 1.2e-7
/// everywhere (Numerical Recipes, 2nd ed., `erfcc`).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// How a Mann-Whitney p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UMethod {
    /// The exact permutation distribution of U (no ties, m + n ≤ [`EXACT_U_MAX_N`]).
    Exact,
    /// Normal approximation with tie correction and a 0.5 continuity correction.
    Normal,
}

/// The largest m + n for which the exact distribution of U is used (and only without
/// ties); beyond it the normal approximation is within a few thousandths.
pub const EXACT_U_MAX_N: usize = 40;

/// A two-sided Mann-Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of `a`: pairs (aᵢ, bⱼ) with aᵢ > bⱼ, ties counting ½. Ranges 0..=m·n.
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    pub method: UMethod,
}

/// Two-sided Mann-Whitney U (Wilcoxon rank-sum) test; `None` when a side is empty.
///
/// Exact when there are no ties and m + n ≤ [`EXACT_U_MAX_N`]: p = min(1, 2·min(P(U ≤ u),
/// P(U ≥ u))) from the permutation distribution. Otherwise the normal approximation:
/// mean mn/2, variance mn/12·((N+1) − Σ(t³−t)/(N(N−1))) over tie groups of size t, and
/// z = (|U − mn/2| − ½)/σ.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (m, n) = (a.len(), b.len());
    if m == 0 || n == 0 {
        return None;
    }
    let mut u = 0.0;
    for x in a {
        for y in b {
            if x > y {
                u += 1.0;
            } else if x == y {
                u += 0.5;
            }
        }
    }
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = all[i..].iter().take_while(|&&v| v == all[i]).count();
        let t = j as f64;
        tie_term += t * t * t - t;
        i += j;
    }
    let (mf, nf) = (m as f64, n as f64);
    let big_n = mf + nf;
    if tie_term == 0.0 && m + n <= EXACT_U_MAX_N {
        let counts = u_distribution(m, n);
        let total: f64 = counts.iter().sum();
        // U is an integer without ties.
        let k = u as usize;
        let below: f64 = counts[..=k].iter().sum::<f64>() / total;
        let above: f64 = counts[k..].iter().sum::<f64>() / total;
        return Some(MannWhitney {
            u,
            p_value: (2.0 * below.min(above)).min(1.0),
            method: UMethod::Exact,
        });
    }
    let var = mf * nf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
    let p_value = if var <= 0.0 {
        1.0 // every value equal
    } else {
        let z = ((u - mf * nf / 2.0).abs() - 0.5).max(0.0) / var.sqrt();
        (2.0 * (1.0 - normal_cdf(z))).min(1.0)
    };
    Some(MannWhitney {
        u,
        p_value,
        method: UMethod::Normal,
    })
}

/// Number of arrangements of m a's and n b's with U = u, for u in 0..=m·n, by the
/// recurrence f(m, n, u) = f(m−1, n, u−n) + f(m, n−1, u) (the largest value is an a or a
/// b). Counts as f64: C(40, 20) ≈ 1.4e11 is exact in a double.
fn u_distribution(m: usize, n: usize) -> Vec<f64> {
    // prev[j] = distribution for (i-1, j); cur[j] for (i, j).
    let mut prev: Vec<Vec<f64>> = (0..=n).map(|_| vec![1.0]).collect();
    for i in 1..=m {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
        cur.push(vec![1.0]);
        for j in 1..=n {
            let mut f = vec![0.0; i * j + 1];
            for (u, c) in prev[j].iter().enumerate() {
                f[u + j] += c; // an a is the largest: it beats all j b's
            }
            for (u, c) in cur[j - 1].iter().enumerate() {
                f[u] += c; // a b is the largest
            }
            cur.push(f);
        }
        prev = cur;
    }
    prev.swap_remove(n)
}

/// The moving-block length used for a series of `n` autocorrelated windows:
/// ⌈n^(1/3)⌉ (the order that minimises the error of block-bootstrap variance and CI
/// estimates; Hall, Horowitz & Jing 1995). 1 for n ≤ 1.
pub fn block_length(n: usize) -> usize {
    let mut l = 1;
    while l * l * l < n {
        l += 1;
    }
    l
}

/// A bootstrap's answer for the relative change of medians, candidate against baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapResult {
    /// Percentile interval (α/2, 1 − α/2) of the resampled relative change.
    pub ci: (f64, f64),
    /// Two-sided bootstrap p-value for "no change": 2·min(#(δ* ≤ 0)+1, #(δ* ≥ 0)+1)/(B+1),
    /// capped at 1 (below α exactly when the percentile interval excludes 0, up to the
    /// +1 terms).
    pub p_value: f64,
}

/// Bootstrap of δ = (median(c) − median(b)) / |median(b)|, the scale being the observed
/// baseline median (so every resample is defined).
///
/// Each side is a list of groups (one per run); each group is resampled by moving blocks
/// of `block(len)` consecutive values that never cross a group boundary, drawn uniformly
/// among all blocks of the side, concatenated up to the side's total length. With
/// `block = |_| 1` this is the ordinary (iid) bootstrap. `None` when a side is empty or
/// the baseline median is 0.
pub fn bootstrap_relative_change(
    baseline: &[Vec<f64>],
    candidate: &[Vec<f64>],
    block: &dyn Fn(usize) -> usize,
    resamples: u32,
    alpha: f64,
    rng: &mut Rng,
) -> Option<BootstrapResult> {
    let b_all: Vec<f64> = baseline.iter().flatten().copied().collect();
    let c_all: Vec<f64> = candidate.iter().flatten().copied().collect();
    let scale = median(&b_all)?.abs();
    if scale == 0.0 || c_all.is_empty() {
        return None;
    }
    let b_blocks = blocks(baseline, block);
    let c_blocks = blocks(candidate, block);
    let mut deltas = Vec::with_capacity(resamples as usize);
    let mut buf = Vec::new();
    for _ in 0..resamples {
        let mb = resample_median(&b_blocks, b_all.len(), rng, &mut buf);
        let mc = resample_median(&c_blocks, c_all.len(), rng, &mut buf);
        deltas.push((mc - mb) / scale);
    }
    deltas.sort_by(f64::total_cmp);
    let lo = quantile_sorted(&deltas, alpha / 2.0)?;
    let hi = quantile_sorted(&deltas, 1.0 - alpha / 2.0)?;
    let le = deltas.iter().filter(|&&d| d <= 0.0).count() as f64;
    let ge = deltas.iter().filter(|&&d| d >= 0.0).count() as f64;
    let b = f64::from(resamples);
    let p_value = (2.0 * (le + 1.0).min(ge + 1.0) / (b + 1.0)).min(1.0);
    Some(BootstrapResult {
        ci: (lo, hi),
        p_value,
    })
}

/// Every block (a slice of one group) of a side.
fn blocks<'a>(groups: &'a [Vec<f64>], block: &dyn Fn(usize) -> usize) -> Vec<&'a [f64]> {
    let mut out = Vec::new();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        let l = block(g.len()).clamp(1, g.len());
        out.extend(g.windows(l));
    }
    out
}

fn resample_median(blocks: &[&[f64]], len: usize, rng: &mut Rng, buf: &mut Vec<f64>) -> f64 {
    buf.clear();
    while buf.len() < len {
        buf.extend_from_slice(blocks[rng.below(blocks.len())]);
    }
    buf.truncate(len);
    buf.sort_by(f64::total_cmp);
    quantile_sorted(buf, 0.5).expect("a resample has the side's length, at least 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn median_and_quantiles_follow_type_7() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), Some(2.0));
        assert_eq!(quantile_sorted(&[10.0, 20.0], 0.1), Some(11.0));
    }

    #[test]
    fn normal_cdf_matches_tables() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(1.959_964), 0.975, 1e-6));
        assert!(close(normal_cdf(-1.0), 0.158_655_25, 1e-6));
        assert!(close(normal_cdf(3.0), 0.998_650_1, 1e-6));
    }

    #[test]
    fn exact_u_of_separated_samples_is_the_smallest_attainable_p() {
        // 3 vs 3: one arrangement of C(6,3) = 20 gives U = 0; two-sided p = 2/20.
        let r = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).expect("non-empty");
        assert_eq!(r.u, 0.0);
        assert_eq!(r.method, UMethod::Exact);
        assert!(close(r.p_value, 0.1, 1e-12));
        // 4 vs 4: 2/70.
        let r = mann_whitney_u(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0, 4.0]).expect("non-empty");
        assert_eq!(r.u, 16.0);
        assert!(close(r.p_value, 2.0 / 70.0, 1e-12));
    }

    #[test]
    fn exact_u_counts_match_a_hand_enumeration() {
        // m = 2, n = 2: arrangements of aabb: U = 0,1,2,2,3,4 → counts 1,1,2,1,1.
        assert_eq!(u_distribution(2, 2), vec![1.0, 1.0, 2.0, 1.0, 1.0]);
        // a = {1, 4}, b = {2, 3}: U = 2 (4 beats both); P(U ≤ 2) = 4/6, P(U ≥ 2) = 4/6.
        let r = mann_whitney_u(&[1.0, 4.0], &[2.0, 3.0]).expect("non-empty");
        assert_eq!(r.u, 2.0);
        assert!(close(r.p_value, 1.0, 1e-12));
        // a = {3, 4}, b = {1, 2, 5}: U = 4; counts for (2, 3): 1 1 2 2 2 1 1 (sum 10);
        // P(U ≥ 4) = 4/10, P(U ≤ 4) = 8/10 → p = 0.8.
        assert_eq!(
            u_distribution(2, 3),
            vec![1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0]
        );
        let r = mann_whitney_u(&[3.0, 4.0], &[1.0, 2.0, 5.0]).expect("non-empty");
        assert_eq!(r.u, 4.0);
        assert!(close(r.p_value, 0.8, 1e-12));
    }

    #[test]
    fn normal_u_with_ties_uses_the_tie_correction() {
        // a = 1 2 2 3, b = 2 3 4 5: U = 0 + ½ + ½ + (1 + ½) = 2.5; mean 8.
        // Tie groups: 2 (t = 3), 3 (t = 2): Σ(t³ − t) = 24 + 6 = 30.
        // var = 16/12 · (9 − 30/56) = 11.285714; z = (5.5 − 0.5)/3.359422 = 1.488351;
        // p = 2(1 − Φ(1.488351)) = 0.136660.
        let r = mann_whitney_u(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 4.0, 5.0]).expect("non-empty");
        assert_eq!(r.u, 2.5);
        assert_eq!(r.method, UMethod::Normal);
        assert!(close(r.p_value, 0.136_66, 2e-4), "{}", r.p_value);
    }

    #[test]
    fn all_equal_values_give_p_one() {
        let r = mann_whitney_u(&[1.0; 3], &[1.0; 4]).expect("non-empty");
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn block_length_is_the_ceiling_of_the_cube_root() {
        let got: Vec<usize> = [0, 1, 2, 8, 9, 27, 28, 64, 65]
            .iter()
            .map(|&n| block_length(n))
            .collect();
        assert_eq!(got, vec![1, 1, 2, 2, 3, 3, 4, 4, 5]);
    }

    #[test]
    fn bootstrap_of_constant_sides_is_the_exact_change() {
        let mut rng = Rng::new(1);
        let r = bootstrap_relative_change(
            &[vec![2.0; 5]],
            &[vec![3.0; 5]],
            &|_| 1,
            200,
            0.05,
            &mut rng,
        )
        .expect("defined");
        assert_eq!(r.ci, (0.5, 0.5));
        assert!(close(r.p_value, 2.0 / 201.0, 1e-12));
    }

    #[test]
    fn a_block_as_long_as_the_run_resamples_the_run_itself() {
        // One block per group: every resample is the original series, so the interval
        // collapses onto the observed change (median 5.5 → 15.5: +181.8 %).
        let b: Vec<f64> = (1..=10).map(f64::from).collect();
        let c: Vec<f64> = (11..=20).map(f64::from).collect();
        let mut rng = Rng::new(7);
        let r =
            bootstrap_relative_change(&[b], &[c], &|n| n, 100, 0.05, &mut rng).expect("defined");
        assert!(close(r.ci.0, 10.0 / 5.5, 1e-12) && close(r.ci.1, 10.0 / 5.5, 1e-12));
    }

    #[test]
    fn bootstrap_is_undefined_for_a_zero_baseline_median() {
        let mut rng = Rng::new(1);
        assert!(bootstrap_relative_change(
            &[vec![0.0; 3]],
            &[vec![1.0]],
            &|_| 1,
            10,
            0.05,
            &mut rng
        )
        .is_none());
    }

    #[test]
    fn the_rng_is_fixed_for_a_seed() {
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(3);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }

    proptest::proptest! {
        #[test]
        fn u_of_a_plus_u_of_b_is_m_times_n(
            a in proptest::collection::vec(-100i32..100, 1..12),
            b in proptest::collection::vec(-100i32..100, 1..12),
        ) {
            let a: Vec<f64> = a.into_iter().map(f64::from).collect();
            let b: Vec<f64> = b.into_iter().map(f64::from).collect();
            let ab = mann_whitney_u(&a, &b).expect("non-empty");
            let ba = mann_whitney_u(&b, &a).expect("non-empty");
            proptest::prop_assert_eq!(ab.u + ba.u, (a.len() * b.len()) as f64);
            proptest::prop_assert!((ab.p_value - ba.p_value).abs() < 1e-9);
            proptest::prop_assert!(ab.p_value > 0.0 && ab.p_value <= 1.0);
        }

        #[test]
        fn the_exact_u_distribution_sums_to_the_binomial(m in 1usize..9, n in 1usize..9) {
            let total: f64 = u_distribution(m, n).iter().sum();
            let mut binom = 1.0;
            for k in 0..m {
                binom = binom * (m + n - k) as f64 / (k + 1) as f64;
            }
            proptest::prop_assert!((total - binom.round()).abs() < 1e-6);
        }
    }
}
