//! AdamW over flat f32 vectors (decoupled weight decay, Loshchilov & Hutter), with its state
//! (`m`, `v`, step count) public so checkpoints can save and restore it exactly. candle's own
//! optimisers keep their state private, which would make a bitwise resume impossible.

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Optimiser state for one flat parameter vector.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates applied so far (bias correction uses it).
    pub t: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, len: usize) -> Self {
        Self {
            config,
            t: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Applies one update with gradient `grads * scale` to all of `params`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], scale: f32) {
        assert_eq!(params.len(), self.m.len(), "parameter and state lengths");
        self.begin();
        self.apply(0, params, grads, scale);
    }

    /// Starts an update (advances the bias-correction step); then call [`AdamW::apply`] on
    /// each slice of the parameters.
    pub fn begin(&mut self) {
        self.t += 1;
    }

    /// Updates `params`, the slice of the flat parameters starting at `offset`, with
    /// `grads * scale`.
    pub fn apply(&mut self, offset: usize, params: &mut [f32], grads: &[f32], scale: f32) {
        assert_eq!(params.len(), grads.len(), "parameter and gradient lengths");
        let c = self.config;
        let t = self.t.max(1) as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let step = c.lr / bc1;
        let decay = 1.0 - c.lr * c.weight_decay;
        let end = offset + params.len();
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m[offset..end].iter_mut())
            .zip(self.v[offset..end].iter_mut())
        {
            let g = g * scale;
            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
            *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
            *p = *p * decay - step * *m / ((*v / bc2).sqrt() + c.eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_minimises_a_quadratic() {
        let mut p = vec![3.0f32, -2.0];
        let mut opt = AdamW::new(
            AdamWConfig {
                lr: 0.1,
                ..AdamWConfig::default()
            },
            2,
        );
        for _ in 0..300 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * x).collect();
            opt.step(&mut p, &g, 1.0);
        }
        assert!(p.iter().all(|x| x.abs() < 0.05), "{p:?}");
        assert_eq!(opt.t, 300);
    }
}
