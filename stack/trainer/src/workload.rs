//! What is trained: the model (from the `models` crate), its data and its loss, and the
//! flat view of its parameters that the optimiser, the all-reduce and checkpoints use.
//!
//! Two workloads:
//! * [`ModelSpec::Mlp`]: a classifier MLP of any size learning a fixed random *teacher* MLP
//!   (labels = argmax of the teacher's logits on uniform random inputs). Learnable, and
//!   sized freely for scaling studies.
//! * [`ModelSpec::Lm`]: the byte-level GRU language model on a real text (by default the
//!   bundled King James excerpts, `data/kjv-excerpts.txt`, public domain).
//!
//! Batches are a pure function of `(seed, step, rank)` (counter-based RNG), so the data
//! position of a run is its step counter and a resumed run sees exactly the batches an
//! uninterrupted one would.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, TensorId, Var};
use models::lm::{ByteLm, LmConfig, VOCAB_SIZE};
use models::mlp::{Mlp, MlpConfig};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// The bundled public-domain training text (see `data/README.md`).
pub const BUNDLED_TEXT: &str = include_str!("../data/kjv-excerpts.txt");

/// Which model to train, and its sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Student MLP learning a random teacher MLP with one hidden layer of `teacher_hidden`.
    Mlp {
        config: MlpConfig,
        teacher_hidden: usize,
    },
    /// Byte-level GRU LM on a text, trained on windows of `seq_len` bytes.
    Lm { config: LmConfig, seq_len: usize },
}

impl ModelSpec {
    /// The kind as the inference server spells it (`server --model NAME=KIND:PATH`).
    pub fn server_kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Lm { .. } => "lm",
        }
    }
}

/// Errors building or running a workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("the training text has {len} bytes; at least seq_len + 1 = {need} are needed")]
    TextTooShort { len: usize, need: usize },
}

/// The gradients of one forward/backward pass, by parameter tensor.
pub enum Gradients {
    /// From candle's autograd (`loss.backward()`): the LM.
    Autograd(GradStore),
    /// From the MLP's hand-written backward pass ([`mlp_loss_and_grads`]).
    Manual(HashMap<TensorId, Tensor>),
}

impl Gradients {
    /// The gradient of `param`, if the loss depends on it.
    pub fn get(&self, param: &Tensor) -> Option<&Tensor> {
        match self {
            Gradients::Autograd(store) => store.get(param),
            Gradients::Manual(map) => map.get(&param.id()),
        }
    }
}

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Gradients::Autograd(_) => "Gradients::Autograd",
            Gradients::Manual(_) => "Gradients::Manual",
        })
    }
}

/// Mean cross-entropy of `mlp` on `(x, labels)` and its gradients, by a hand-written backward
/// pass: per layer `dW = gᵀ·a`, `db = Σ_rows g`, `g ← (g·W) ⊙ 1[a > 0]`, starting from
/// `g = (softmax(logits) − onehot(labels)) / batch`. It computes exactly the matmuls
/// training needs — candle's autograd also forms the input's gradient, accumulates every
/// gradient into a zeroed tensor and transposes each weight gradient back, single-threaded
/// element-wise passes that cost a 1024-wide step more than its matmuls on two threads —
/// and it is tested against autograd.
pub fn mlp_loss_and_grads(
    mlp: &Mlp,
    x: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Gradients), WorkloadError> {
    let layers = mlp.layers();
    let last = layers.len() - 1;
    // Inputs of each layer (x, then the ReLU outputs), kept for the backward pass.
    let mut inputs = Vec::with_capacity(layers.len());
    let mut h = x.detach();
    for (i, layer) in layers.iter().enumerate() {
        let mut z = h.matmul(&layer.weight().detach().t()?)?;
        if let Some(b) = layer.bias() {
            z = z.broadcast_add(&b.detach())?;
        }
        inputs.push(h);
        h = if i < last { z.relu()? } else { z };
    }
    let log_p = candle_nn::ops::log_softmax(&h, 1)?;
    let loss = candle_nn::loss::nll(&log_p, labels)?;
    let (rows, classes) = log_p.dims2()?;
    let onehot = candle_nn::encoding::one_hot(labels.clone(), classes, 1f32, 0f32)?;
    let mut g = ((log_p.exp()? - onehot)? / rows as f64)?;
    // Bias gradients as `1ᵀ·g`: a matmul runs on every thread where candle's column sum
    // over the batch (`g.sum(0)`) is a strided single-threaded pass, ~50× slower here.
    let ones = Tensor::ones((1, rows), DType::F32, x.device())?;
    let mut grads = HashMap::with_capacity(2 * layers.len());
    for (i, layer) in layers.iter().enumerate().rev() {
        let a = &inputs[i];
        grads.insert(layer.weight().id(), g.t()?.matmul(a)?);
        if let Some(b) = layer.bias() {
            grads.insert(b.id(), ones.matmul(&g)?.squeeze(0)?);
        }
        if i > 0 {
            let mask = a.gt(0f32)?.to_dtype(DType::F32)?;
            g = (g.matmul(&layer.weight().detach())? * mask)?;
        }
    }
    Ok((loss, Gradients::Manual(grads)))
}

/// One trainable variable and where it sits in the flat parameter vector.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub shape: Vec<usize>,
    /// Offset of its first value in the flat vector.
    pub offset: usize,
    pub len: usize,
}

enum Model {
    Mlp(Mlp),
    Lm(ByteLm),
}

/// A model with its data. Parameters are ordered by name, so the flat layout is the same in
/// every process.
pub struct Workload {
    spec: ModelSpec,
    model: Model,
    teacher: Option<Mlp>,
    text: Vec<u8>,
    params: Vec<Param>,
    num_values: usize,
    seed: u64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("spec", &self.spec)
            .field("num_values", &self.num_values)
            .finish()
    }
}

/// One batch of inputs and targets.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    /// Samples in the batch (rows for the MLP, windows for the LM).
    pub rows: usize,
}

/// Mixes seed, step and rank into one RNG seed (splitmix64 finaliser).
pub fn mix_seed(seed: u64, step: u64, rank: u64) -> u64 {
    let mut z =
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rank.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Workload {
    /// Builds the model with weights from `seed` (identical in every worker) and its data
    /// (`text` for the LM; `None` uses [`BUNDLED_TEXT`]).
    pub fn new(spec: ModelSpec, seed: u64, text: Option<Vec<u8>>) -> Result<Self, WorkloadError> {
        let (model, teacher, text) = match &spec {
            ModelSpec::Mlp {
                config,
                teacher_hidden,
            } => {
                let teacher_config = MlpConfig {
                    input_dim: config.input_dim,
                    hidden: vec![*teacher_hidden],
                    num_classes: config.num_classes,
                };
                let teacher = Mlp::seeded(teacher_config, mix_seed(seed, u64::MAX, 7))?;
                (
                    Model::Mlp(Mlp::seeded(config.clone(), seed)?),
                    Some(teacher),
                    Vec::new(),
                )
            }
            ModelSpec::Lm { config, seq_len } => {
                let text = text.unwrap_or_else(|| BUNDLED_TEXT.as_bytes().to_vec());
                if text.len() < seq_len + 1 {
                    return Err(WorkloadError::TextTooShort {
                        len: text.len(),
                        need: seq_len + 1,
                    });
                }
                (Model::Lm(ByteLm::seeded(*config, seed)?), None, text)
            }
        };
        let varmap = match &model {
            Model::Mlp(m) => m.varmap(),
            Model::Lm(m) => m.varmap(),
        }
        .expect("a seeded model is trainable")
        .clone();
        let data = varmap
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut offset = 0;
        let params = names
            .into_iter()
            .map(|name| {
                let var = data[name].clone();
                let shape = var.dims().to_vec();
                let len = shape.iter().product();
                let p = Param {
                    name: name.clone(),
                    var,
                    shape,
                    offset,
                    len,
                };
                offset += len;
                p
            })
            .collect();
        drop(data);
        Ok(Self {
            spec,
            model,
            teacher,
            text,
            params,
            num_values: offset,
            seed,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Trainable parameters in flat order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Number of f32 values in the flat parameter vector.
    pub fn num_values(&self) -> usize {
        self.num_values
    }

    /// The batch of `rows` samples that `rank` trains on at `step`.
    pub fn batch(&self, step: u64, rank: usize, rows: usize) -> Result<Batch, WorkloadError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix_seed(self.seed, step, rank as u64));
        match (&self.spec, &self.teacher) {
            (ModelSpec::Mlp { config, .. }, Some(teacher)) => {
                let d = config.input_dim;
                let values: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x = Tensor::from_vec(values, (rows, d), &Device::Cpu)?;
                let y = teacher.forward(&x)?.argmax(1)?;
                Ok(Batch { x, y, rows })
            }
            (ModelSpec::Lm { seq_len, .. }, _) => {
                let t = *seq_len;
                let mut input = Vec::with_capacity(rows * t);
                let mut target = Vec::with_capacity(rows * t);
                for _ in 0..rows {
                    let start = rng.gen_range(0..self.text.len() - t);
                    let w = &self.text[start..start + t + 1];
                    input.extend(w[..t].iter().map(|b| u32::from(*b)));
                    target.extend(w[1..].iter().map(|b| u32::from(*b)));
                }
                Ok(Batch {
                    x: Tensor::from_vec(input, (rows, t), &Device::Cpu)?,
                    y: Tensor::from_vec(target, rows * t, &Device::Cpu)?,
                    rows,
                })
            }
            (ModelSpec::Mlp { .. }, None) => unreachable!("an MLP workload always has a teacher"),
        }
    }

    /// Mean cross-entropy of the model on `batch` (a scalar) and the gradients of every
    /// parameter: hand-written for the MLP ([`mlp_loss_and_grads`]), autograd for the LM.
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(Tensor, Gradients), WorkloadError> {
        match &self.model {
            Model::Mlp(m) => mlp_loss_and_grads(m, &batch.x, &batch.y),
            Model::Lm(_) => {
                let loss = self.loss(batch)?;
                let grads = loss.backward()?;
                Ok((loss, Gradients::Autograd(grads)))
            }
        }
    }

    /// Mean cross-entropy of the model on `batch` (a scalar tensor, differentiable).
    pub fn loss(&self, batch: &Batch) -> Result<Tensor, WorkloadError> {
        let logits = match &self.model {
            Model::Mlp(m) => m.forward(&batch.x)?,
            Model::Lm(m) => m.forward_train(&batch.x)?.reshape(((), VOCAB_SIZE))?,
        };
        Ok(candle_nn::loss::cross_entropy(&logits, &batch.y)?)
    }

    /// Copies the gradient of every parameter from `grads` into `out` (flat layout; zeros for
    /// a parameter the loss does not depend on), scaled by `scale`, added when `accumulate`.
    pub fn flatten_grads(
        &self,
        grads: &Gradients,
        range: std::ops::Range<usize>,
        out: &mut [f32],
        scale: f32,
        accumulate: bool,
    ) -> Result<(), WorkloadError> {
        debug_assert_eq!(out.len(), range.len());
        for p in &self.params {
            let (lo, hi) = (p.offset.max(range.start), (p.offset + p.len).min(range.end));
            if lo >= hi {
                continue;
            }
            let dst = &mut out[lo - range.start..hi - range.start];
            match grads.get(p.var.as_tensor()) {
                Some(g) => {
                    let g = g.flatten_all()?.narrow(0, lo - p.offset, hi - lo)?;
                    let values = g.to_vec1::<f32>()?;
                    for (d, v) in dst.iter_mut().zip(values) {
                        if accumulate {
                            *d += v * scale;
                        } else {
                            *d = v * scale;
                        }
                    }
                }
                None if !accumulate => dst.fill(0.0),
                None => {}
            }
        }
        Ok(())
    }

    /// The current parameters, flat.
    pub fn read_params(&self) -> Result<Vec<f32>, WorkloadError> {
        let mut out = Vec::with_capacity(self.num_values);
        for p in &self.params {
            out.extend(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Overwrites the parameters from a flat vector.
    pub fn write_params(&self, flat: &[f32]) -> Result<(), WorkloadError> {
        for p in &self.params {
            let t = Tensor::from_slice(
                &flat[p.offset..p.offset + p.len],
                p.shape.as_slice(),
                &Device::Cpu,
            )?;
            p.var.set(&t)?;
        }
        Ok(())
    }

    /// Saves the model's weights as safetensors that `models` (and so the inference server)
    /// loads.
    pub fn save(&self, path: &Path) -> Result<(), WorkloadError> {
        match &self.model {
            Model::Mlp(m) => m.save(path)?,
            Model::Lm(m) => m.save(path)?,
        }
        Ok(())
    }

    /// Rough bytes a training step of `rows` samples allocates (activations and their
    /// gradients, plus parameters, gradients and optimiser state): what the simulated device
    /// checks against its memory limit.
    pub fn step_bytes(&self, rows: usize) -> u64 {
        let per_sample: usize = match &self.spec {
            ModelSpec::Mlp { config, .. } => {
                config.input_dim + config.hidden.iter().sum::<usize>() + config.num_classes
            }
            ModelSpec::Lm { config, seq_len } => {
                seq_len * (config.embed_dim + 4 * config.hidden_dim + VOCAB_SIZE)
            }
        };
        (2 * rows * per_sample * 4 + 4 * self.num_values * 4) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny_mlp() -> ModelSpec {
        ModelSpec::Mlp {
            config: MlpConfig {
                input_dim: 16,
                hidden: vec![32],
                num_classes: 4,
            },
            teacher_hidden: 16,
        }
    }

    /// The hand-written MLP backward pass gives candle autograd's loss and gradients, for
    /// deep, one-hidden-layer and linear models on fresh random weights and batches.
    #[test]
    fn mlp_hand_written_gradients_match_candle_autograd() {
        let seed = crate::comm::tests::test_seed();
        for hidden in [vec![24, 8], vec![32], vec![]] {
            let spec = ModelSpec::Mlp {
                config: MlpConfig {
                    input_dim: 12,
                    hidden: hidden.clone(),
                    num_classes: 5,
                },
                teacher_hidden: 16,
            };
            let w = Workload::new(spec, seed, None).expect("workload");
            let batch = w.batch(seed % 1000, 0, 9).expect("batch");
            let (loss, manual) = w.loss_and_grads(&batch).expect("manual");
            let reference = w.loss(&batch).expect("loss");
            let auto = Gradients::Autograd(reference.backward().expect("backward"));
            let (l1, l2) = (
                loss.to_scalar::<f32>().expect("loss"),
                reference.to_scalar::<f32>().expect("loss"),
            );
            assert!(
                (l1 - l2).abs() <= 1e-5 * l2.abs().max(1.0),
                "hidden {hidden:?}: loss {l1} vs {l2} (test seed {seed})"
            );
            let n = w.params().iter().map(|p| p.len).sum::<usize>();
            let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
            w.flatten_grads(&manual, 0..n, &mut a, 1.0, false)
                .expect("flat");
            w.flatten_grads(&auto, 0..n, &mut b, 1.0, false)
                .expect("flat");
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-4 * scale,
                    "hidden {hidden:?}, value {i}: {x} vs {y} (test seed {seed})"
                );
            }
            assert!(
                b.iter().any(|v| *v != 0.0),
                "the gradients are not all zero"
            );
        }
    }

    #[test]
    fn batches_depend_only_on_seed_step_and_rank() {
        let w = Workload::new(tiny_mlp(), 1, None).expect("workload");
        let a = w.batch(5, 1, 4).expect("a").x.to_vec2::<f32>().expect("a");
        let b = w.batch(5, 1, 4).expect("b").x.to_vec2::<f32>().expect("b");
        let c = w.batch(5, 0, 4).expect("c").x.to_vec2::<f32>().expect("c");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn flat_params_round_trip_and_follow_name_order() {
        let w = Workload::new(tiny_mlp(), 1, None).expect("workload");
        let names: Vec<_> = w.params().iter().map(|p| p.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let mut flat = w.read_params().expect("read");
        assert_eq!(flat.len(), w.num_values());
        flat[0] = 42.0;
        w.write_params(&flat).expect("write");
        assert_eq!(w.read_params().expect("read")[0], 42.0);
    }

    #[test]
    fn lm_batches_are_shifted_windows_of_the_text() {
        let spec = ModelSpec::Lm {
            config: LmConfig {
                embed_dim: 8,
                hidden_dim: 8,
            },
            seq_len: 6,
        };
        let w = Workload::new(spec, 3, Some(b"abcdefghijklmnop".to_vec())).expect("workload");
        let b = w.batch(0, 0, 2).expect("batch");
        let x = b.x.to_vec2::<u32>().expect("x");
        let y = b.y.to_vec1::<u32>().expect("y");
        assert_eq!(x[0][1], y[0]);
        assert_eq!(y.len(), 12);
        assert!(w.loss(&b).expect("loss").to_scalar::<f32>().expect("f32") > 0.0);
    }
}
