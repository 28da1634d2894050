//! Fault injection that heals itself.
//!
//! Every injected fault returns a `#[must_use]` guard whose `Drop` undoes it (turmoil's
//! `RuleGuard`), so a panic, an early return or Ctrl-C never leaves a process stopped.
//! Planning the timeline is pure ([`plan`], [`rate_steps`]); the runner's async shell only
//! sleeps until each [`Action`] and applies it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scenario::{Fault, FaultKind};

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: Signal) -> Result<(), nix::Error> {
    let Ok(raw) = i32::try_from(pid) else {
        return Err(nix::Error::EINVAL);
    };
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A set of processes stopped with SIGSTOP; dropping the guard sends SIGCONT.
#[must_use = "dropping the guard resumes the processes at once"]
#[derive(Debug)]
pub struct PauseGuard {
    pids: Vec<u32>,
}

impl PauseGuard {
    /// Stops every pid. On a partial failure the ones already stopped are resumed.
    pub fn pause(pids: Vec<u32>) -> Result<Self, nix::Error> {
        let mut guard = PauseGuard { pids: Vec::new() };
        for pid in pids {
            signal(pid, Signal::SIGSTOP)?;
            guard.pids.push(pid);
        }
        Ok(guard)
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if let Err(e) = signal(pid, Signal::SIGCONT) {
                tracing::warn!(pid, error = %e, "could not resume a paused process");
            }
        }
    }
}

/// What the timeline does at an instant of the scenario clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Inject,
    Heal,
}

/// One timeline action: `fault` is an index into the scenario's `faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub at: Duration,
    pub fault: usize,
    pub step: Step,
}

/// The timeline of injections and heals, in time order (heals before injections at the
/// same instant, so back-to-back faults do not overlap).
pub fn plan(faults: &[Fault]) -> Vec<Action> {
    let mut actions = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        actions.push(Action {
            at: f.at,
            fault: i,
            step: Step::Inject,
        });
        if let Some(until) = f.until {
            actions.push(Action {
                at: until,
                fault: i,
                step: Step::Heal,
            });
        }
    }
    actions.sort_by_key(|a| (a.at, a.step == Step::Inject, a.fault));
    actions
}

/// The JSON body that injects a `gpu.*` fault through a trainer worker's control endpoint
/// (`POST /faults`; see `stack/trainer`'s crate docs).
pub fn gpu_fault_body(fault: &Fault) -> serde_json::Value {
    let mut body = serde_json::json!({ "kind": fault.kind.name() });
    let obj = body.as_object_mut().expect("built as an object above");
    match fault.kind {
        FaultKind::GpuEcc => {
            let mode = match fault.mode.unwrap_or(scenario::EccMode::Nan) {
                scenario::EccMode::Nan => "nan",
                scenario::EccMode::Inf => "inf",
                scenario::EccMode::Bitflip => "bitflip",
            };
            obj.insert("mode".into(), mode.into());
            obj.insert("steps".into(), fault.steps.unwrap_or(1).into());
        }
        FaultKind::GpuThrottle => {
            obj.insert("factor".into(), fault.factor.unwrap_or(1.0).into());
        }
        FaultKind::GpuOom => {
            obj.insert("limit_bytes".into(), fault.limit_bytes.unwrap_or(0).into());
            obj.insert("backoff".into(), fault.backoff.unwrap_or(false).into());
        }
        _ => {}
    }
    body
}

/// The offered-rate multiplier over time from every `load.spike` (overlapping spikes
/// multiply), as steps for the load generator.
pub fn rate_steps(faults: &[Fault]) -> Vec<loadgen::RateStep> {
    let spikes: Vec<&Fault> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::LoadSpike)
        .collect();
    let mut edges: Vec<Duration> = spikes
        .iter()
        .flat_map(|f| [Some(f.at), f.until])
        .flatten()
        .collect();
    edges.sort();
    edges.dedup();
    edges
        .into_iter()
        .map(|at| loadgen::RateStep {
            at,
            multiplier: spikes
                .iter()
                .filter(|f| f.at <= at && f.until.is_none_or(|u| at < u))
                .map(|f| f.multiplier.unwrap_or(1.0))
                .product(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, at: u64, until: Option<u64>, multiplier: Option<f64>) -> Fault {
        Fault {
            id: None,
            at: Duration::from_secs(at),
            kind,
            target: Some("server".into()),
            until: until.map(Duration::from_secs),
            multiplier,
            mode: None,
            steps: None,
            factor: None,
            limit_bytes: None,
            backoff: None,
            after_step: None,
        }
    }

    #[test]
    fn gpu_fault_bodies_match_the_trainer_control_api() {
        let mut f = fault(FaultKind::GpuEcc, 1, None, None);
        f.mode = Some(scenario::EccMode::Bitflip);
        assert_eq!(
            gpu_fault_body(&f),
            serde_json::json!({"kind": "gpu.ecc", "mode": "bitflip", "steps": 1})
        );
        let mut f = fault(FaultKind::GpuOom, 1, Some(2), None);
        f.limit_bytes = Some(1 << 20);
        assert_eq!(
            gpu_fault_body(&f),
            serde_json::json!({"kind": "gpu.oom", "limit_bytes": 1048576, "backoff": false})
        );
        assert_eq!(
            gpu_fault_body(&fault(FaultKind::GpuLost, 1, None, None)),
            serde_json::json!({"kind": "gpu.lost"})
        );
    }

    #[test]
    fn plan_orders_heals_before_injections_at_the_same_instant() {
        let faults = [
            fault(FaultKind::ProcessPause, 2, Some(4), None),
            fault(FaultKind::ProcessPause, 4, Some(5), None),
            fault(FaultKind::ProcessKill, 1, None, None),
        ];
        let steps: Vec<(u64, usize, Step)> = plan(&faults)
            .iter()
            .map(|a| (a.at.as_secs(), a.fault, a.step))
            .collect();
        assert_eq!(
            steps,
            vec![
                (1, 2, Step::Inject),
                (2, 0, Step::Inject),
                (4, 0, Step::Heal),
                (4, 1, Step::Inject),
                (5, 1, Step::Heal),
            ]
        );
    }

    #[test]
    fn overlapping_spikes_multiply_and_end_back_at_one() {
        let faults = [
            fault(FaultKind::LoadSpike, 2, Some(6), Some(3.0)),
            fault(FaultKind::LoadSpike, 4, Some(8), Some(2.0)),
            fault(FaultKind::ProcessKill, 5, None, None),
        ];
        let steps: Vec<(u64, f64)> = rate_steps(&faults)
            .iter()
            .map(|s| (s.at.as_secs(), s.multiplier))
            .collect();
        assert_eq!(steps, vec![(2, 3.0), (4, 6.0), (6, 2.0), (8, 1.0)]);
    }

    #[test]
    fn pause_guard_resumes_a_stopped_process_on_drop() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep(1) exists on every supported host");
        let pid = child.id();
        let state = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
                .flatten()
        };
        {
            let _guard = PauseGuard::pause(vec![pid]).expect("pause own child");
            assert!(
                crate::wait::poll_until(Duration::from_secs(5), || state(pid) == Some('T')),
                "paused process is stopped"
            );
        }
        assert!(
            crate::wait::poll_until(Duration::from_secs(5), || state(pid) != Some('T')),
            "guard drop resumed the process"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
