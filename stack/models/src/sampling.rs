//! Token choice from logits: greedy at temperature 0, seeded sampling otherwise, optionally
//! restricted to the nucleus (`top_p`); and the log-probabilities the OpenAI API reports.

use rand::Rng;

/// How to choose a token from logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// `<= 0` = greedy; else draw from `softmax(logits / temperature)`.
    pub temperature: f32,
    /// Nucleus: draw only among the most likely tokens whose probabilities sum to at least
    /// `top_p` (`(0, 1]`; `1` = all tokens).
    pub top_p: f32,
}

impl Sampling {
    /// Greedy decoding.
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
    };
}

/// Picks a token id from `logits` under `s`. With `top_p >= 1` this is exactly
/// [`sample_token`]; below 1 the draw is among the smallest set of most likely tokens whose
/// probabilities sum to at least `top_p` (ties broken by the lower id), renormalised.
pub fn sample<R: Rng + ?Sized>(logits: &[f32], s: &Sampling, rng: &mut R) -> u32 {
    if s.top_p >= 1.0 || s.top_p.is_nan() {
        return sample_token(logits, s.temperature, rng);
    }
    if s.temperature.is_nan() || s.temperature <= 0.0 || logits.iter().any(|l| !l.is_finite()) {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut weighted: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, (((l - max) / s.temperature) as f64).exp()))
        .collect();
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    if !total.is_finite() || total <= 0.0 {
        return argmax(logits);
    }
    weighted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let want = f64::from(s.top_p.max(0.0)) * total;
    let mut kept = 0.0;
    let mut n = 0;
    for (_, w) in &weighted {
        kept += w;
        n += 1;
        if kept >= want {
            break;
        }
    }
    let nucleus = &weighted[..n.max(1)];
    let total: f64 = nucleus.iter().map(|(_, w)| w).sum();
    let mut target = rng.gen::<f64>() * total;
    for (id, w) in nucleus {
        if target < *w {
            return *id;
        }
        target -= w;
    }
    nucleus.last().map_or(0, |(id, _)| *id)
}

/// `log(softmax(logits))` in f64 for accuracy, returned as f32. Non-finite logits give
/// non-finite results; an empty input gives an empty output.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .map(|&l| (f64::from(l) - f64::from(max)).exp())
        .sum();
    let log_z = f64::from(max) + sum.ln();
    logits
        .iter()
        .map(|&l| (f64::from(l) - log_z) as f32)
        .collect()
}

/// The `k` largest entries of `logprobs` as `(id, logprob)`, largest first, lower id first on
/// ties. `k` larger than the vocabulary gives the whole vocabulary.
pub fn top_k(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logprobs
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Picks a token id from `logits`.
///
/// `temperature <= 0` (or non-finite logits) → greedy: the index of the largest logit, the
/// lowest index on ties. Otherwise draws from `softmax(logits / temperature)` using `rng`, so
/// the same RNG state gives the same token.
///
/// Panics never; an empty `logits` gives 0.
pub fn sample_token<R: Rng + ?Sized>(logits: &[f32], temperature: f32, rng: &mut R) -> u32 {
    if temperature.is_nan() || temperature <= 0.0 || logits.iter().any(|l| !l.is_finite()) {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !total.is_finite() || total <= 0.0 {
        return argmax(logits);
    }
    let mut target = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i as u32;
        }
        target -= w;
    }
    // Rounding left a sliver past the last weight: take the last non-zero one.
    weights
        .iter()
        .rposition(|w| *w > 0.0)
        .map_or(0, |i| i as u32)
}

/// Index of the largest value, the lowest on ties; 0 when empty.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn temperature_zero_is_greedy_with_lowest_index_on_ties() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(sample_token(&[0.1, 3.0, 3.0, -1.0], 0.0, &mut rng), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..256).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample_token(&logits, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_one_draws_exactly_like_plain_sampling() {
        let logits: Vec<f32> = (0..256).map(|i| ((i * 13) % 7) as f32 * 0.5).collect();
        let s = Sampling {
            temperature: 0.8,
            top_p: 1.0,
        };
        let mut a = rand::rngs::StdRng::seed_from_u64(5);
        let mut b = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            assert_eq!(
                sample(&logits, &s, &mut a),
                sample_token(&logits, 0.8, &mut b)
            );
        }
    }

    #[test]
    fn top_p_draws_only_from_the_nucleus() {
        // Probabilities ∝ 8, 4, 2, 1, 1 (sum 16): top_p 0.7 keeps {0, 1} (12/16 = 0.75).
        let logits = [8f32.ln(), 4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.7,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut seen = [0u32; 5];
        for _ in 0..2000 {
            seen[sample(&logits, &s, &mut rng) as usize] += 1;
        }
        assert_eq!(&seen[2..], &[0, 0, 0], "outside the nucleus: {seen:?}");
        assert!(seen[0] > seen[1] && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let logits = [0.1, 2.0, 1.9];
        let s = Sampling {
            temperature: 1.0,
            top_p: 1e-6,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(sample(&logits, &s, &mut rng), 1);
        }
    }

    #[test]
    fn log_softmax_exponentiates_to_one_and_top_k_orders_by_probability() {
        let logits = [1.0f32, 3.0, 3.0, -2.0];
        let lp = log_softmax(&logits);
        let total: f64 = lp.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!(lp.iter().all(|l| *l <= 0.0));
        let top = top_k(&lp, 3);
        assert_eq!(
            top.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        assert_eq!(top_k(&lp, 99).len(), 4);
        assert!(top_k(&lp, 0).is_empty());
    }

    #[test]
    fn sampling_never_picks_a_zero_probability_token() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let logits = [0.0, f32::MIN / 2.0, 0.0];
        for _ in 0..1000 {
            assert_ne!(sample_token(&logits, 1.0, &mut rng), 1);
        }
    }
}
