//! Classifier MLP: `input_dim → hidden[0] → … → num_classes`, ReLU between layers.
//!
//! Variables are named `layers.{i}.weight` (`[out, in]`) and `layers.{i}.bias` (`[out]`).

use crate::{ModelError, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use std::path::Path;

/// Layer sizes of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Features per sample (`D` in the KServe shape `[k, D]`).
    pub input_dim: usize,
    /// Hidden layer widths, in order; may be empty (then the model is linear).
    pub hidden: Vec<usize>,
    /// Output logits per sample.
    pub num_classes: usize,
}

impl Default for MlpConfig {
    /// 256 → 3072 → 3072 → 10: about 10 M multiply-adds per sample and 39 MiB of f32 weights
    /// (more than a typical L3), so one sample is a memory-bound matvec (~2 ms on 2 cores) while
    /// a batch is a GEMM that reuses the weights: batching raises throughput ~7× (see
    /// `benches/scripts/server-batching.sh`).
    fn default() -> Self {
        Self {
            input_dim: 256,
            hidden: vec![3072, 3072],
            num_classes: 10,
        }
    }
}

impl MlpConfig {
    fn validate(&self) -> Result<()> {
        let bad = |field, value: usize| ModelError::Config {
            field,
            value: value.to_string(),
            expected: "a positive size",
        };
        if self.input_dim == 0 {
            return Err(bad("input_dim", 0));
        }
        if self.num_classes == 0 {
            return Err(bad("num_classes", 0));
        }
        if let Some(h) = self.hidden.iter().find(|h| **h == 0) {
            return Err(bad("hidden", *h));
        }
        Ok(())
    }
}

/// The classifier. Cheap to clone (tensors are reference-counted).
#[derive(Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    config: MlpConfig,
    params: crate::Params,
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlp").field("config", &self.config).finish()
    }
}

impl Mlp {
    /// Builds the layers through `vb` (creating variables in a trainer's `VarMap`, or reading
    /// them from a loaded one). `varmap` is kept for [`Mlp::save`]; pass the one behind `vb`.
    pub fn new(config: MlpConfig, vb: VarBuilder, varmap: VarMap) -> Result<Self> {
        Self::build(config, vb, crate::Params::Trainable(varmap))
    }

    fn build(config: MlpConfig, vb: VarBuilder, params: crate::Params) -> Result<Self> {
        config.validate()?;
        let mut dims = vec![config.input_dim];
        dims.extend(&config.hidden);
        dims.push(config.num_classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            config,
            params,
        })
    }

    /// A copy for serving: same weights as plain tensors (copied, so training `self` further
    /// does not change it), so [`Mlp::forward`] and [`Mlp::infer`] record no autograd graph.
    /// A frozen model has no [`Mlp::varmap`]; it still [`Mlp::save`]s.
    pub fn frozen(&self) -> Result<Self> {
        let (vb, params) = self.params.freeze()?;
        Self::build(self.config.clone(), vb, params)
    }

    /// A model whose weights are a pure function of `seed` (see [`crate::seeded_init`]).
    pub fn seeded(config: MlpConfig, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Self::new(config, vb, varmap.clone())?;
        crate::seeded_init(&varmap, seed)?;
        Ok(model)
    }

    /// Loads weights saved by [`Mlp::save`] (or any file with the same tensor names); the
    /// layer sizes are read from the tensor shapes.
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = crate::read_safetensors(path)?;
        let mut n_layers = 0;
        while tensors.contains_key(&format!("layers.{n_layers}.weight")) {
            n_layers += 1;
        }
        if n_layers == 0 {
            return Err(ModelError::Weights {
                path: path.to_path_buf(),
                message: "no `layers.0.weight` tensor: not an MLP checkpoint".into(),
            });
        }
        let mut outs = Vec::with_capacity(n_layers);
        let mut input_dim = 0;
        for i in 0..n_layers {
            let dims = crate::shape_of(&tensors, &format!("layers.{i}.weight"), 2, path)?;
            if i == 0 {
                input_dim = dims[1];
            }
            outs.push(dims[0]);
        }
        let num_classes = outs.pop().unwrap_or_default();
        let config = MlpConfig {
            input_dim,
            hidden: outs,
            num_classes,
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Self::new(config, vb, varmap.clone())?;
        crate::assign_all(&varmap, &tensors, path)?;
        Ok(model)
    }

    /// Writes all weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.params.save(path)
    }

    /// Layer sizes.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// The variables, for an optimiser; `None` for a [`Mlp::frozen`] model.
    pub fn varmap(&self) -> Option<&VarMap> {
        self.params.varmap()
    }

    /// The linear layers, input first (ReLU between them; none after the last).
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// `[batch, input_dim]` → logits `[batch, num_classes]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Row-major `rows` (`batch × input_dim` values) → row-major logits
    /// (`batch × num_classes`). Errors if `rows.len()` is not a multiple of `input_dim`.
    pub fn infer(&self, rows: &[f32]) -> Result<Vec<f32>> {
        let d = self.config.input_dim;
        if rows.is_empty() || rows.len() % d != 0 {
            return Err(ModelError::Input(format!(
                "{} values is not a positive multiple of input_dim {d}",
                rows.len()
            )));
        }
        let x = Tensor::from_slice(rows, (rows.len() / d, d), &Device::Cpu)?;
        Ok(self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> MlpConfig {
        MlpConfig {
            input_dim: 8,
            hidden: vec![16, 12],
            num_classes: 3,
        }
    }

    fn input(batch: usize, d: usize) -> Vec<f32> {
        (0..batch * d)
            .map(|i| ((i % 13) as f32 - 6.0) / 6.0)
            .collect()
    }

    #[test]
    fn forward_maps_batch_by_input_to_batch_by_classes() {
        let m = Mlp::seeded(small(), 0).expect("model");
        let x = Tensor::from_vec(input(5, 8), (5, 8), &Device::Cpu).expect("tensor");
        assert_eq!(m.forward(&x).expect("forward").dims(), &[5, 3]);
        assert_eq!(m.infer(&input(5, 8)).expect("infer").len(), 15);
    }

    #[test]
    fn same_seed_gives_same_outputs_and_other_seed_differs() {
        let a = Mlp::seeded(small(), 42).expect("a").infer(&input(2, 8));
        let b = Mlp::seeded(small(), 42).expect("b").infer(&input(2, 8));
        let c = Mlp::seeded(small(), 43).expect("c").infer(&input(2, 8));
        assert_eq!(a.as_ref().expect("a"), b.as_ref().expect("b"));
        assert_ne!(a.expect("a"), c.expect("c"));
    }

    #[test]
    fn save_then_load_gives_identical_outputs_and_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mlp.safetensors");
        let m = Mlp::seeded(small(), 9).expect("model");
        m.save(&path).expect("save");
        let loaded = Mlp::load(&path).expect("load");
        assert_eq!(loaded.config(), &small());
        assert_eq!(
            m.infer(&input(3, 8)).expect("a"),
            loaded.infer(&input(3, 8)).expect("b")
        );
    }

    #[test]
    fn batched_rows_equal_rows_run_alone() {
        let m = Mlp::seeded(small(), 1).expect("model");
        let x = input(4, 8);
        let batched = m.infer(&x).expect("batched");
        for (i, row) in x.chunks(8).enumerate() {
            let alone = m.infer(row).expect("alone");
            for (a, b) in alone.iter().zip(&batched[i * 3..i * 3 + 3]) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn frozen_model_gives_the_same_logits_without_recording_a_graph() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mlp.safetensors");
        let m = Mlp::seeded(small(), 6).expect("model");
        let frozen = m.frozen().expect("frozen");
        assert!(m.varmap().is_some() && frozen.varmap().is_none());
        let x = Tensor::from_vec(input(3, 8), (3, 8), &Device::Cpu).expect("tensor");
        assert!(m.forward(&x).expect("trainable").track_op());
        assert!(!frozen.forward(&x).expect("frozen").track_op());
        assert_eq!(
            m.infer(&input(3, 8)).expect("a"),
            frozen.infer(&input(3, 8)).expect("b")
        );
        frozen.save(&path).expect("save");
        assert_eq!(
            Mlp::load(&path)
                .expect("load")
                .infer(&input(3, 8))
                .expect("c"),
            frozen.infer(&input(3, 8)).expect("d")
        );
    }

    #[test]
    fn wrong_input_length_is_an_error_not_a_panic() {
        let m = Mlp::seeded(small(), 1).expect("model");
        assert!(matches!(m.infer(&[1.0; 7]), Err(ModelError::Input(_))));
        assert!(matches!(m.infer(&[]), Err(ModelError::Input(_))));
    }

    #[test]
    fn loading_a_file_that_is_not_an_mlp_names_the_missing_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"not safetensors").expect("write");
        assert!(matches!(Mlp::load(&path), Err(ModelError::Weights { .. })));
    }
}
