//! libtorch backend (cargo feature `tch`): data-parallel training of a TorchScript model the
//! user brings (`torch.jit.script(model).save(path)` in Python), through tch's
//! `TrainableCModule`, with gradients summed over any [`Communicator`] (the TCP ring, or NCCL
//! with `cuda`).
//!
//! Building with `tch` links libtorch (set `LIBTORCH` or `LIBTORCH_USE_PYTORCH=1`, as tch
//! documents). `tch-doc-only` type-checks this module without libtorch (torch-sys's doc-only
//! build) but cannot link a binary. At run time a model that cannot be loaded, or a CUDA
//! device libtorch cannot see, is a [`TchBackendError`] that says so.
//!
//! `trainer worker --model torchscript --torchscript PATH` uses it single-process (world size
//! 1); the distributed loop (rendezvous, ring, checkpoints) drives candle models only.

use crate::comm::{CommError, Communicator};
use std::path::Path;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Errors of the libtorch backend.
#[derive(Debug, thiserror::Error)]
pub enum TchBackendError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(
        "cannot load TorchScript model {path}: {source}; expected a file saved with torch.jit.save"
    )]
    Load {
        path: std::path::PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("CUDA requested but libtorch sees no CUDA device; run on the CPU or install a CUDA build of libtorch")]
    NoCuda,
}

/// The device to train on: CUDA device 0 when `cuda` (an error if libtorch sees none), else
/// the CPU.
pub fn device(cuda: bool) -> Result<Device, TchBackendError> {
    match cuda {
        true if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        true => Err(TchBackendError::NoCuda),
        false => Ok(Device::Cpu),
    }
}

/// A TorchScript classifier trained with Adam.
pub struct TorchScriptTrainer {
    module: tch::TrainableCModule,
    vs: nn::VarStore,
    opt: nn::Optimizer,
}

impl std::fmt::Debug for TorchScriptTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchScriptTrainer").finish_non_exhaustive()
    }
}

impl TorchScriptTrainer {
    /// Loads the model's parameters as trainable variables on `device`.
    pub fn load(path: &Path, lr: f64, device: Device) -> Result<Self, TchBackendError> {
        let vs = nn::VarStore::new(device);
        let mut module = tch::TrainableCModule::load(path, vs.root()).map_err(|source| {
            TchBackendError::Load {
                path: path.to_path_buf(),
                source,
            }
        })?;
        module.set_train();
        let opt = nn::Adam::default().build(&vs, lr)?;
        Ok(Self { module, vs, opt })
    }

    /// One data-parallel step on this rank's batch: logits of `x`, cross-entropy against the
    /// class indices `y`, backward, gradients summed over `comm` in one flat buffer and
    /// averaged, Adam. Returns this rank's loss.
    pub fn step(
        &mut self,
        comm: &mut dyn Communicator,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<f32, TchBackendError> {
        self.opt.zero_grad();
        let logits = self.module.forward_ts(&[x])?;
        let loss = logits.cross_entropy_for_logits(y);
        loss.backward();
        let vars = self.vs.trainable_variables();
        let mut flat: Vec<f32> = Vec::new();
        let mut sizes = Vec::with_capacity(vars.len());
        for v in &vars {
            let g = v.grad();
            let host: Vec<f32> =
                Vec::try_from(&g.flatten(0, -1).to_kind(Kind::Float).to_device(Device::Cpu))?;
            sizes.push(host.len());
            flat.extend(host);
        }
        comm.all_reduce_sum(&mut flat)?;
        let scale = 1.0 / comm.world() as f64;
        let mut offset = 0;
        for (v, n) in vars.iter().zip(sizes) {
            let mut g = v.grad();
            let summed = Tensor::from_slice(&flat[offset..offset + n])
                .to_kind(g.kind())
                .to_device(g.device())
                .reshape(g.size())
                * scale;
            tch::no_grad(|| g.copy_(&summed));
            offset += n;
        }
        self.opt.step();
        Ok(loss.double_value(&[]) as f32)
    }

    /// Saves the trained module as TorchScript.
    pub fn save(&self, path: &Path) -> Result<(), TchBackendError> {
        Ok(self.module.save(path)?)
    }
}
