//! Token choice from logits: greedy at temperature 0, seeded sampling otherwise.

use rand::Rng;

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
    fn sampling_never_picks_a_zero_probability_token() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let logits = [0.0, f32::MIN / 2.0, 0.0];
        for _ in 0..1000 {
            assert_ne!(sample_token(&logits, 1.0, &mut rng), 1);
        }
    }
}
