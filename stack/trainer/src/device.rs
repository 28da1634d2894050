//! The simulated accelerator: the device layer every training step goes through, with the
//! GPU fault hooks of `faults.md` that the harness drives at run time (`POST /faults`).
//!
//! * `gpu.lost` (Xid 79): every later device operation fails with [`DeviceError::Lost`]; the
//!   worker exits with [`crate::exit::GPU_LOST`].
//! * `gpu.ecc` (Xid 48/94/95): the next `steps` (1 ..= 100 000 000) gradient tensors are
//!   corrupted before the all-reduce: `nan`/`inf` values (the finite check catches them and
//!   every rank skips the step) or `bitflip` (one mantissa bit of one value: still finite, so
//!   it escapes the check and is counted as silent corruption).
//! * `gpu.throttle`: the worker's compute is slowed by `factor` (1 ..= 1000; it sleeps
//!   `factor − 1` times its compute time after each step's compute): a straggler.
//! * `gpu.oom`: a step whose estimated allocation exceeds `limit_bytes` (≥ 1) fails with
//!   [`DeviceError::Oom`]; with `backoff: true` the worker splits the batch into micro-batches
//!   until it fits, otherwise it exits with [`crate::exit::GPU_OOM`].
//!
//! On CPU the "device" is candle's CPU backend; on a real GPU the same hooks sit next to real
//! telemetry. Faults are pure state here; the training loop asks this layer for verdicts.
//! The request and kind types ([`FaultRequest`], [`GpuFaultKind`], [`EccMode`]) are
//! `wire::trainer`'s, shared with the harness; [`check`] holds the parameter bounds (a body
//! outside them is answered 400), and the throttle arithmetic ([`throttle_sleep`]) is total,
//! so no parameter that reaches the device can panic the training thread.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use wire::trainer::{EccMode, FaultRequest, GpuFaultKind};

/// Largest `gpu.throttle` `factor`: a step's compute takes at most 1000 times as long.
pub const MAX_THROTTLE_FACTOR: f64 = 1000.0;

/// Largest `gpu.ecc` `steps`: 100 million consecutive corrupted steps (a day at 1000 steps
/// per second; the scenario format's bound on a step count).
pub const MAX_ECC_STEPS: u32 = 100_000_000;

/// Checks a [`FaultRequest`]'s parameter ranges (serde has checked its shape); the message
/// names the field, the value and the accepted range. The ranges:
///
/// * `gpu.throttle` `factor`: finite, 1 ≤ factor ≤ [`MAX_THROTTLE_FACTOR`];
/// * `gpu.ecc` `steps`: 1 ≤ steps ≤ [`MAX_ECC_STEPS`];
/// * `gpu.oom` `limit_bytes`: at least 1 (0 would refuse every step, even one sample).
pub fn check(request: &FaultRequest) -> Result<(), String> {
    match *request {
        FaultRequest::Throttle { factor }
            if !(factor.is_finite() && (1.0..=MAX_THROTTLE_FACTOR).contains(&factor)) =>
        {
            Err(format!(
                "gpu.throttle factor = {factor:?}: expected a finite number in 1..={MAX_THROTTLE_FACTOR}"
            ))
        }
        FaultRequest::Ecc { steps, .. } if !(1..=MAX_ECC_STEPS).contains(&steps) => Err(format!(
            "gpu.ecc steps = {steps}: expected a whole number in 1..={MAX_ECC_STEPS}"
        )),
        FaultRequest::Oom { limit_bytes: 0, .. } => {
            Err("gpu.oom limit_bytes = 0: expected at least 1 byte".into())
        }
        _ => Ok(()),
    }
}

/// The sleep that makes a compute phase of `compute` take `factor` times as long:
/// `compute × (factor − 1)`. Total for every input: a factor that is not above 1 (NaN
/// included) adds nothing, one above [`MAX_THROTTLE_FACTOR`] counts as that bound, and a
/// product beyond [`Duration::MAX`] saturates there.
pub fn throttle_sleep(compute: Duration, factor: f64) -> Duration {
    if factor.is_nan() || factor <= 1.0 {
        return Duration::ZERO;
    }
    let factor = factor.min(MAX_THROTTLE_FACTOR);
    Duration::try_from_secs_f64(compute.as_secs_f64() * (factor - 1.0)).unwrap_or(Duration::MAX)
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

    /// Sleeps so that a compute phase of `compute` takes the active factor times as long
    /// ([`throttle_sleep`]). Returns the added time.
    pub fn throttle(&self, compute: Duration) -> Duration {
        let extra = throttle_sleep(compute, self.throttle_factor());
        if extra.is_zero() {
            return extra;
        }
        std::thread::sleep(extra);
        let us = u64::try_from(extra.as_micros()).unwrap_or(u64::MAX);
        self.counters
            .throttle_us_total
            .fetch_add(us, Ordering::Relaxed);
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
        assert!(check(&FaultRequest::Throttle { factor: 1000.0 }).is_ok());
    }

    #[test]
    fn absurd_fault_parameters_are_refused_with_the_accepted_range() {
        for factor in [1e300, 1000.5, f64::INFINITY, f64::NAN] {
            let e = check(&FaultRequest::Throttle { factor }).expect_err("above the bound");
            assert!(
                e.contains("gpu.throttle factor") && e.contains("1..=1000"),
                "{e}"
            );
        }
        let e = check(&FaultRequest::Ecc {
            mode: EccMode::Nan,
            steps: u32::MAX,
        })
        .expect_err("above the bound");
        assert!(
            e.contains("gpu.ecc steps = 4294967295") && e.contains("1..=100000000"),
            "{e}"
        );
        assert!(check(&FaultRequest::Ecc {
            mode: EccMode::Nan,
            steps: MAX_ECC_STEPS,
        })
        .is_ok());
        let e = check(&FaultRequest::Oom {
            limit_bytes: 0,
            backoff: true,
        })
        .expect_err("no bytes");
        assert!(e.contains("gpu.oom limit_bytes = 0"), "{e}");
        assert!(check(&FaultRequest::Oom {
            limit_bytes: u64::MAX,
            backoff: false,
        })
        .is_ok());
    }

    #[test]
    fn the_throttle_sleep_is_total_for_any_factor_and_compute_time() {
        let second = Duration::from_secs(1);
        assert_eq!(throttle_sleep(second, 3.0), Duration::from_secs(2));
        for factor in [f64::NAN, f64::NEG_INFINITY, -1.0, 0.5, 1.0] {
            assert_eq!(throttle_sleep(second, factor), Duration::ZERO, "{factor}");
        }
        // An unchecked factor counts as the bound (it reached the device without `check`).
        for factor in [1e300, f64::INFINITY] {
            assert_eq!(throttle_sleep(second, factor), Duration::from_secs(999));
        }
        assert_eq!(throttle_sleep(Duration::MAX, 2.0), Duration::MAX);
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
