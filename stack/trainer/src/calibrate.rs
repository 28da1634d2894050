//! Compute calibration (`trainer bench-compute`): the machine's candle matmul rate and the
//! rate a GEMM-heavy MLP training step achieves, measured in the same process, so a report
//! can say how close training compute gets to the hardware (as measured through candle).

use crate::comm::Solo;
use crate::device::SimDevice;
use crate::optim::AdamWConfig;
use crate::train::{StepConfig, Trainer};
use crate::workload::{ModelSpec, Workload, WorkloadError};
use candle_core::{Device, Tensor};
use std::sync::Arc;
use std::time::Instant;

/// Result of [`run`], printed as the `compute_bench` event. Rates in GFLOP/s (10⁹
/// floating-point operations per second). `step_flops` counts 2 · batch · in · out per
/// linear layer for the forward pass, the same for its weight gradient, and the same for its
/// input gradient except in the first layer (nothing needs the gradient of the data):
/// 6 · batch · Σ(in·out) minus 2 · batch · in₀ · out₀. Bias and activation work is not
/// counted.
pub type ComputeReport = wire::trainer::ComputeBench;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times an MLP `width → width → width → 10` training step with `batch` rows `steps` times
/// (after 3 warm-up steps) and blocks of 7 matmuls of `[batch, width] × [width, width]`
/// before the steps, after every 5 and at the end. The step time is the median step; the
/// matmul rate is the best block median — the machine's rate when it was least disturbed,
/// so other load that comes and goes during a run lowers the ratio rather than raising it.
pub fn run(width: usize, batch: usize, steps: usize) -> Result<ComputeReport, WorkloadError> {
    let steps = steps.max(1);
    let (m, k, n) = (batch, width, width);
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
    a.matmul(&b)?;
    let mut best_block_s = f64::INFINITY;
    let mut time_matmuls = || -> Result<(), WorkloadError> {
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            let c = a.matmul(&b)?;
            c.sum_all()?.to_scalar::<f32>()?; // force completion
            times.push(t.elapsed().as_secs_f64());
        }
        best_block_s = best_block_s.min(median(times));
        Ok(())
    };
    time_matmuls()?;

    let spec = ModelSpec::Mlp {
        config: models::mlp::MlpConfig {
            input_dim: width,
            hidden: vec![width, width],
            num_classes: 10,
        },
        teacher_hidden: 16,
    };
    let dims = [width, width, width, 10];
    let macs: usize = dims.windows(2).map(|w| w[0] * w[1]).sum();
    let step_flops = (6 * batch * macs - 2 * batch * dims[0] * dims[1]) as f64;
    let mut t = Trainer::new(
        Workload::new(spec, 0, None)?,
        AdamWConfig::default(),
        StepConfig {
            batch_per_worker: batch,
            bucket_values: 1 << 20,
            seed: 0,
        },
        Arc::new(SimDevice::default()),
    )?;
    let warmup = 3;
    let mut compute = Vec::new();
    for i in 0..warmup + steps {
        let st = t.step(&mut Solo).map_err(|e| match e {
            crate::train::StepError::Workload(w) => w,
            other => WorkloadError::Candle(candle_core::Error::Msg(other.to_string())),
        })?;
        if i >= warmup {
            compute.push(st.compute_s);
            if compute.len() % 5 == 0 || i + 1 == warmup + steps {
                time_matmuls()?;
            }
        }
    }
    let matmul_gflops = 2.0 * (m * k * n) as f64 / best_block_s / 1e9;
    let step_compute_s = median(compute);
    let step_gflops = step_flops / step_compute_s / 1e9;
    Ok(ComputeReport {
        threads: candle_core::utils::get_num_threads(),
        matmul_shape: (m, k, n),
        matmul_gflops,
        step_flops,
        step_compute_s,
        step_gflops,
        ratio: step_gflops / matmul_gflops,
        warmup_steps: warmup,
        measured_steps: steps,
    })
}
