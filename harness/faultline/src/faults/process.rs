//! `process.*` faults: signals to the target's processes. A kill needs no healing (the
//! restart policy decides what follows); a pause is healed by SIGCONT.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scenario::{Fault, FaultKind};
use serde_json::json;

use super::{Heal, HealGuard, Injection, Injector, Scope};

/// Sends `sig` to `pid`; a process that is already gone is not an error. Pid 0 (which
/// `kill(2)` reads as "my whole process group") and pids beyond `i32` are refused with
/// `EINVAL`: only a real child's pid may reach `kill`.
pub fn signal(pid: u32, sig: Signal) -> Result<(), nix::Error> {
    let Some(raw) = i32::try_from(pid).ok().filter(|p| *p > 0) else {
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

impl Heal for PauseGuard {
    fn heal(&mut self) -> String {
        let pids = std::mem::take(&mut self.pids);
        let failed: Vec<String> = pids
            .iter()
            .filter_map(|&p| {
                signal(p, Signal::SIGCONT)
                    .err()
                    .map(|e| format!("{p}: {e}"))
            })
            .collect();
        if failed.is_empty() {
            format!("SIGCONT pids {pids:?}")
        } else {
            format!("SIGCONT pids {pids:?}; failed: {failed:?}")
        }
    }
}

/// Injects `process.kill` (SIGKILL) and `process.pause` (SIGSTOP until healed).
pub struct ProcessInjector;

impl Injector for ProcessInjector {
    fn inject(&self, fault: &Fault, scope: &Scope<'_>) -> Injection {
        let targets = scope.targets;
        let pids: Vec<u32> = targets.iter().filter_map(|t| t.pid).collect();
        let mut fields = serde_json::Map::new();
        fields.insert("pids".into(), json!(pids));
        match fault.kind {
            FaultKind::ProcessPause => match PauseGuard::pause(pids.clone()) {
                Ok(g) => Injection {
                    detail: format!("SIGSTOP pids {pids:?}"),
                    fields,
                    guard: Some(HealGuard::new(g)),
                    replicas: Vec::new(),
                },
                Err(e) => Injection {
                    detail: format!("SIGSTOP failed: {e}"),
                    fields,
                    guard: None,
                    replicas: Vec::new(),
                },
            },
            _ => {
                let errors: Vec<String> = pids
                    .iter()
                    .filter_map(|&p| signal(p, Signal::SIGKILL).err())
                    .map(|e| e.to_string())
                    .collect();
                let mut detail = format!("SIGKILL pids {pids:?}");
                if !errors.is_empty() {
                    detail.push_str(&format!("; errors: {errors:?}"));
                }
                Injection {
                    detail,
                    fields,
                    guard: None,
                    replicas: Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::faults::Target;

    fn state(pid: u32) -> Option<char> {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
            .flatten()
    }

    #[test]
    fn pid_zero_and_pids_beyond_i32_never_reach_kill() {
        assert_eq!(signal(0, Signal::SIGKILL), Err(nix::Error::EINVAL));
        assert_eq!(signal(u32::MAX, Signal::SIGKILL), Err(nix::Error::EINVAL));
    }

    #[test]
    fn pause_guard_resumes_a_stopped_process_on_drop() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep(1) exists on every supported host");
        let pid = child.id();
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

    #[test]
    fn the_injector_pauses_then_its_guard_resumes_and_a_kill_needs_no_guard() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep(1) exists");
        let pid = child.id();
        let target = Target {
            name: "x/0".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            pid: Some(pid),
            proxies: Vec::new(),
        };
        let pause = super::super::tests::fault(FaultKind::ProcessPause, 1, Some(2), None);
        let inj = ProcessInjector.inject(&pause, &Scope::of(std::slice::from_ref(&target)));
        assert_eq!(inj.fields["pids"], json!([pid]));
        assert!(crate::wait::poll_until(Duration::from_secs(5), || state(
            pid
        )
            == Some('T')));
        let guard = inj.guard.expect("a pause is healed");
        assert_eq!(guard.heal(), format!("SIGCONT pids [{pid}]"));
        assert!(crate::wait::poll_until(Duration::from_secs(5), || state(
            pid
        )
            != Some('T')));
        let kill = super::super::tests::fault(FaultKind::ProcessKill, 1, None, None);
        let inj = ProcessInjector.inject(&kill, &Scope::of(&[target]));
        assert!(inj.guard.is_none());
        assert_eq!(inj.detail, format!("SIGKILL pids [{pid}]"));
        let status = child.wait().expect("reaped");
        assert!(!status.success());
    }
}
