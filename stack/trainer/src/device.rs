//! The simulated accelerator: the device layer every training step goes through, with the
//! GPU fault hooks of `faults.md` that the harness drives at run time (`POST /faults`).
//!
//! * `gpu.lost` (Xid 79): every later device operation fails with [`DeviceError::Lost`]; the
//!   worker exits with [`crate::exit::GPU_LOST`].
//! * `gpu.ecc` (Xid 48/94/95): the next `steps` gradient tensors are corrupted before the
//!   all-reduce: `nan`/`inf` values (the finite check catches them and every rank skips the
//!   step) or `bitflip` (one mantissa bit of one value: still finite, so it escapes the check
//!   and is counted as silent corruption).
//! * `gpu.throttle`: the worker's compute is slowed by `factor` (it sleeps `factor − 1` times
//!   its compute time after each step's compute): a straggler.
//! * `gpu.oom`: a step whose estimated allocation exceeds `limit_bytes` fails with
//!   [`DeviceError::Oom`]; with `backoff: true` the worker splits the batch into micro-batches
//!   until it fits, otherwise it exits with [`crate::exit::GPU_OOM`].
//!
//! On CPU the "device" is candle's CPU backend; on a real GPU the same hooks sit next to real
//! telemetry. Faults are pure state here; the training loop asks this layer for verdicts.
//! The request and kind types ([`FaultRequest`], [`GpuFaultKind`], [`EccMode`]) are
//! `wire::trainer`'s, shared with the harness.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use wire::trainer::{EccMode, FaultRequest, GpuFaultKind};

/// Checks a [`FaultRequest`]'s parameter ranges (serde has checked its shape); the message
/// names the field and what is expected.
pub fn check(request: &FaultRequest) -> Result<(), String> {
    match *request {
        FaultRequest::Throttle { factor } if !(factor.is_finite() && factor >= 1.0) => Err(
            format!("gpu.throttle factor = {factor}: expected a finite number ≥ 1"),
        ),
        FaultRequest::Ecc { steps: 0, .. } => Err("gpu.ecc steps = 0: expected at least 1".into()),
        _ => Ok(()),
    }
}

/// A device operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "gpu.lost: the device has fallen off the bus (simulated Xid 79); every operation fails"
    )]
    Lost,
    #[error("gpu.oom: a step needs {requested_bytes} bytes but the device limit is {limit_bytes} bytes; lower --batch or enable back-off")]
    Oom {
        requested_bytes: u64,
        limit_bytes: u64,
        backoff: bool,
    },
}

#[derive(Debug, Default)]
struct Active {
    lost: bool,
    ecc: Option<(EccMode, u32)>,
    throttle: Option<f64>,
    oom: Option<(u64, bool)>,
}

/// Counters a worker reports in `GET /status`.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    pub ecc_injected_total: AtomicU64,
    pub ecc_detected_total: AtomicU64,
    pub ecc_silent_total: AtomicU64,
    pub oom_total: AtomicU64,
    /// Microseconds of throttle sleep.
    pub throttle_us_total: AtomicU64,
}

/// The device and its active faults. Shared between the training loop and the control
/// endpoint.
#[derive(Debug, Default)]
pub struct SimDevice {
    active: Mutex<Active>,
    pub counters: DeviceCounters,
}

impl SimDevice {
    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Activates a fault (replacing an active one of the same kind).
    pub fn inject(&self, request: &FaultRequest) {
        let mut a = self.active();
        match *request {
            FaultRequest::Lost => a.lost = true,
            FaultRequest::Ecc { mode, steps } => a.ecc = Some((mode, steps)),
            FaultRequest::Throttle { factor } => a.throttle = Some(factor),
            FaultRequest::Oom {
                limit_bytes,
                backoff,
            } => a.oom = Some((limit_bytes, backoff)),
        }
    }

    /// Heals one kind, or every fault when `kind` is `None`.
    pub fn heal(&self, kind: Option<GpuFaultKind>) {
        let mut a = self.active();
        match kind {
            None => *a = Active::default(),
            Some(GpuFaultKind::Lost) => a.lost = false,
            Some(GpuFaultKind::Ecc) => a.ecc = None,
            Some(GpuFaultKind::Throttle) => a.throttle = None,
            Some(GpuFaultKind::Oom) => a.oom = None,
        }
    }

    /// The active faults, in [`GpuFaultKind::ALL`] order.
    pub fn active_kinds(&self) -> Vec<GpuFaultKind> {
        let a = self.active();
        GpuFaultKind::ALL
            .into_iter()
            .filter(|k| match k {
                GpuFaultKind::Lost => a.lost,
                GpuFaultKind::Ecc => a.ecc.is_some(),
                GpuFaultKind::Throttle => a.throttle.is_some(),
                GpuFaultKind::Oom => a.oom.is_some(),
            })
            .collect()
    }

    /// Every device operation starts here: fails once the device is lost.
    pub fn check_alive(&self) -> Result<(), DeviceError> {
        if self.active().lost {
            return Err(DeviceError::Lost);
        }
        Ok(())
    }

    /// Allocation check for a step needing `bytes`.
    pub fn check_alloc(&self, bytes: u64) -> Result<(), DeviceError> {
        self.check_alive()?;
        match self.active().oom {
            Some((limit, backoff)) if bytes > limit => {
                self.counters.oom_total.fetch_add(1, Ordering::Relaxed);
                Err(DeviceError::Oom {
                    requested_bytes: bytes,
                    limit_bytes: limit,
                    backoff,
                })
            }
            _ => Ok(()),
        }
    }

    /// The active slow-down factor (1 when not throttled).
    pub fn throttle_factor(&self) -> f64 {
        self.active().throttle.unwrap_or(1.0)
    }

    /// Sleeps so that a compute phase of `compute` takes `factor` times as long. Returns the
    /// added time.
    pub fn throttle(&self, compute: std::time::Duration) -> std::time::Duration {
        let f = self.throttle_factor();
        if f <= 1.0 {
            return std::time::Duration::ZERO;
        }
        let extra = compute.mul_f64(f - 1.0);
        std::thread::sleep(extra);
        self.counters
            .throttle_us_total
            .fetch_add(extra.as_micros() as u64, Ordering::Relaxed);
        extra
    }

    /// Corrupts one value of `grads` if a `gpu.ecc` fault is active (consuming one of its
    /// steps). Returns the mode used.
    pub fn corrupt<R: Rng>(&self, grads: &mut [f32], rng: &mut R) -> Option<EccMode> {
        if grads.is_empty() {
            return None;
        }
        let mode = {
            let mut a = self.active();
            let (mode, left) = a.ecc?;
            a.ecc = (left > 1).then_some((mode, left - 1));
            mode
        };
        let i = rng.gen_range(0..grads.len());
        match mode {
            EccMode::Nan => grads[i] = f32::NAN,
            EccMode::Inf => grads[i] = f32::INFINITY,
            EccMode::Bitflip => {
                let bit = rng.gen_range(0..23);
                grads[i] = f32::from_bits(grads[i].to_bits() ^ (1 << bit));
                self.counters
                    .ecc_silent_total
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters
            .ecc_injected_total
            .fetch_add(1, Ordering::Relaxed);
        Some(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fault_parameters_out_of_range_are_refused_naming_the_field() {
        let e = check(&FaultRequest::Throttle { factor: 0.5 }).expect_err("factor < 1");
        assert!(e.contains("gpu.throttle factor = 0.5"), "{e}");
        let e = check(&FaultRequest::Ecc {
            mode: EccMode::Nan,
            steps: 0,
        })
        .expect_err("no steps");
        assert!(e.contains("gpu.ecc steps = 0"), "{e}");
        assert!(check(&FaultRequest::Throttle { factor: 1.0 }).is_ok());
    }

    #[test]
    fn nan_corruption_is_detectable_and_bitflips_stay_finite_and_count_as_silent() {
        let dev = SimDevice::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut g = vec![0.5f32; 8];
        assert_eq!(dev.corrupt(&mut g, &mut rng), None);
        dev.inject(&FaultRequest::Ecc {
            mode: EccMode::Nan,
            steps: 1,
        });
        assert_eq!(dev.corrupt(&mut g, &mut rng), Some(EccMode::Nan));
        assert!(g.iter().any(|v| !v.is_finite()));
        assert_eq!(dev.corrupt(&mut g, &mut rng), None, "one step only");
        let mut g = vec![0.5f32; 8];
        dev.inject(&FaultRequest::Ecc {
            mode: EccMode::Bitflip,
            steps: 1,
        });
        dev.corrupt(&mut g, &mut rng);
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|v| *v != 0.5));
        assert_eq!(dev.counters.ecc_silent_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn lost_device_fails_every_op_until_healed_and_oom_names_the_limit() {
        let dev = SimDevice::default();
        dev.inject(&FaultRequest::Lost);
        assert_eq!(dev.check_alive(), Err(DeviceError::Lost));
        assert_eq!(dev.check_alloc(1), Err(DeviceError::Lost));
        dev.heal(Some(GpuFaultKind::Lost));
        dev.inject(&FaultRequest::Oom {
            limit_bytes: 100,
            backoff: false,
        });
        assert!(dev.check_alloc(50).is_ok());
        let e = dev.check_alloc(150).expect_err("over the limit");
        assert!(e.to_string().contains("150 bytes"), "{e}");
        dev.heal(None);
        assert!(dev.active_kinds().is_empty());
    }
}
