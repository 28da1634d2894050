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
//! Not here: serving, batching policy, tokenisation beyond bytes, GPU support.

pub mod lm;
pub mod mlp;
pub mod sampling;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

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

/// Saves a varmap as safetensors, mapping the error to [`ModelError::Weights`].
pub(crate) fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    varmap.save(path).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    })
}
