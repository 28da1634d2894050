//! Candle (CPU) model definitions for the reference stack.
//!
//! * [`mlp::Mlp`]: a classifier MLP (`input_dim → hidden… → num_classes`, ReLU), served by
//!   the inference server's KServe endpoint behind the dynamic batcher.
//! * [`lm::ByteLm`]: a byte-level (vocab 256) GRU language model whose decode step takes a
//!   batch of independent sequences, each with its own hidden state, so a continuous batcher
//!   can add and remove sequences between steps.
//! * [`sampling`]: greedy (temperature 0) and seeded temperature sampling.
//!
//! Every model is built on a [`candle_nn::VarBuilder`], so a trainer can create it over its
//! own [`candle_nn::VarMap`] and optimise `varmap.all_vars()`. Weights come from a
//! safetensors file ([`mlp::Mlp::load`], [`lm::ByteLm::load`]; the architecture is inferred
//! from tensor shapes) or from a seed ([`seeded_init`]), which is deterministic across runs.
//!
//! Trainable weights are candle `Var`s, and every operation on a `Var` records an autograd
//! graph. A server calls `frozen()` ([`mlp::Mlp::frozen`], [`lm::ByteLm::frozen`]) once after
//! loading: the frozen copy's weights are plain tensors, so inference records nothing. (A
//! graph chained across continuous-batching decode steps once grew the server to 4 GB and
//! overflowed the stack when dropped.)
//!
//! Not here: serving, batching policy, tokenisation beyond bytes, GPU support.

pub mod lm;
pub mod mlp;
pub mod sampling;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use candle_core;
pub use candle_nn;

/// Everything that can go wrong building, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, bad index…).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The weights file could not be read or is not a usable safetensors file.
    #[error("cannot load weights from {path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// A configuration value is out of range.
    #[error("invalid model configuration: {field} = {value}: expected {expected}")]
    Config {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// An input does not match the model.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Overwrites every variable of `varmap` with values drawn from a seeded RNG, so the same
/// seed always gives the same weights (candle's CPU RNG cannot be seeded).
///
/// Variables are visited in name order. Tensors of rank ≥ 2 get `U(-1/√fan_in, 1/√fan_in)`
/// (fan_in = product of all but the first dimension, as PyTorch's default for `Linear`);
/// rank-1 tensors (biases) get zeros.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            (0..n).map(|_| rng.gen_range(-bound..bound)).collect()
        } else {
            vec![0.0; n]
        };
        let t = Tensor::from_vec(values, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Reads every tensor of a safetensors file into memory (no mmap), on the CPU.
pub(crate) fn read_safetensors(path: &Path) -> Result<std::collections::HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Copies `tensors` into the same-named variables of `varmap`; every variable must be present
/// with the same shape.
pub(crate) fn assign_all(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, var) in data.iter() {
        let t = tensors.get(name).ok_or_else(|| ModelError::Weights {
            path: path.to_path_buf(),
            message: format!("tensor `{name}` is missing"),
        })?;
        if t.dims() != var.dims() {
            return Err(ModelError::Weights {
                path: path.to_path_buf(),
                message: format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                ),
            });
        }
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

/// Shape of a named tensor in a loaded file, or a `Weights` error naming it.
pub(crate) fn shape_of<'a>(
    tensors: &'a std::collections::HashMap<String, Tensor>,
    name: &str,
    rank: usize,
    path: &Path,
) -> Result<&'a [usize]> {
    let t = tensors.get(name).ok_or_else(|| ModelError::Weights {
        path: path.to_path_buf(),
        message: format!("tensor `{name}` is missing"),
    })?;
    if t.dims().len() != rank {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            message: format!(
                "tensor `{name}` has rank {}, expected {rank}",
                t.dims().len()
            ),
        });
    }
    Ok(t.dims())
}

/// Where a model's weights live.
#[derive(Clone)]
pub(crate) enum Params {
    /// Candle `Var`s in a trainer's (or a loader's) `VarMap`: forward passes record an
    /// autograd graph.
    Trainable(VarMap),
    /// Plain tensors by variable name: forward passes record nothing.
    Frozen(Arc<HashMap<String, Tensor>>),
}

impl Params {
    /// Deep copies of every weight as plain tensors, and a `VarBuilder` over them that
    /// rebuilds the same layers. A frozen set is returned as it is.
    pub(crate) fn freeze(&self) -> Result<(VarBuilder<'static>, Params)> {
        let tensors = match self {
            Params::Frozen(t) => t.clone(),
            Params::Trainable(varmap) => {
                let data = varmap
                    .data()
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut out = HashMap::with_capacity(data.len());
                for (name, var) in data.iter() {
                    // detach() drops the Var-ness; copy() gives storage the trainer can't touch.
                    out.insert(name.clone(), var.as_tensor().detach().copy()?);
                }
                Arc::new(out)
            }
        };
        let vb = VarBuilder::from_tensors((*tensors).clone(), DType::F32, &Device::Cpu);
        Ok((vb, Params::Frozen(tensors)))
    }

    /// The trainable variables, if these are trainable.
    pub(crate) fn varmap(&self) -> Option<&VarMap> {
        match self {
            Params::Trainable(v) => Some(v),
            Params::Frozen(_) => None,
        }
    }

    /// Saves every weight as safetensors, mapping the error to [`ModelError::Weights`].
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let result = match self {
            Params::Trainable(varmap) => varmap.save(path),
            Params::Frozen(t) => candle_core::safetensors::save(t, path),
        };
        result.map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        })
    }
}
