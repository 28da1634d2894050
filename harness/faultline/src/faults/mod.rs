//! Fault injection that heals itself.
//!
//! A fault kind belongs to a domain ([`scenario::FaultDomain`]); each domain has one
//! [`Injector`], and an injection returns an [`Injection`] whose `#[must_use]`
//! [`HealGuard`] undoes the fault when healed or dropped (turmoil's `RuleGuard`), so a
//! panic, an early return, an aborted timeline or Ctrl-C never leaves a process stopped or
//! a device broken. Planning the timeline is pure ([`plan`], [`load::rate_steps`]); the
//! [`crate::timeline`] task sleeps until each [`Action`] and applies it.
//!
//! Adding a fault kind: a `FaultKind` variant (scenario crate, with its domain in
//! `scenario::kinds`) and its arm in the domain's injector here; a new domain is a new
//! module with an [`Injector`] and one arm in [`injector`].

pub mod gpu;
pub mod load;
pub mod net;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use scenario::{Fault, FaultDomain};

use crate::supervisor::Replica;

pub use load::{rate_steps, rate_steps_with};
pub use process::{signal, PauseGuard};

/// Undoes one injected fault. Runs on a blocking thread (or in `Drop`), so it may block
/// briefly (a signal, a loopback HTTP request with a short timeout).
pub trait Heal: Send {
    /// Heals; returns what was done, for the run's events.
    fn heal(&mut self) -> String;
}

/// Heals its fault once: by [`HealGuard::heal`], or when dropped (a panic, an aborted
/// timeline task).
#[must_use = "dropping the guard heals the fault at once"]
pub struct HealGuard(Option<Box<dyn Heal>>);

impl HealGuard {
    pub fn new(heal: impl Heal + 'static) -> Self {
        HealGuard(Some(Box::new(heal)))
    }

    /// Heals now and returns what was done.
    pub fn heal(mut self) -> String {
        self.0.take().map(|mut h| h.heal()).unwrap_or_default()
    }
}

impl Drop for HealGuard {
    fn drop(&mut self) {
        if let Some(mut h) = self.0.take() {
            let what = h.heal();
            tracing::info!(%what, "fault healed by its guard");
        }
    }
}

impl std::fmt::Debug for HealGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HealGuard(armed)"
        } else {
            "HealGuard(healed)"
        })
    }
}

/// What one injection did.
#[derive(Debug, Default)]
pub struct Injection {
    /// For the report: what was done and how each target answered.
    pub detail: String,
    /// Extra fields of the `fault.inject` event (pids, request bodies, answers).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Heals the fault; `None` when there is nothing to undo (a kill, a rate step).
    pub guard: Option<HealGuard>,
    /// Replicas a fault without a `target` acted on (`region.down`), by name, so the
    /// exits it caused are charged to it.
    pub replicas: Vec<String>,
}

/// What an injection acts on.
pub struct Scope<'a> {
    /// The replicas the fault's `target` names ([`targets`]); empty without a target.
    pub targets: &'a [Target],
    /// Every replica of the stack (`region.*` faults pick theirs by region).
    pub replicas: &'a [Replica],
    /// The fault proxies in front of replicas and on links, if the run has any.
    pub net: Option<&'a std::sync::Arc<net::NetLayer>>,
    /// The scenario's region names, in `[[regions]]` order.
    pub regions: &'a [String],
}

impl<'a> Scope<'a> {
    /// A scope of just `targets` (no other replicas, no network).
    pub fn of(targets: &'a [Target]) -> Self {
        Scope {
            targets,
            replicas: &[],
            net: None,
            regions: &[],
        }
    }
}

/// Injects the faults of one domain. Runs on a blocking thread.
pub trait Injector: Sync {
    /// Injects `fault` into what `scope` holds.
    fn inject(&self, fault: &Fault, scope: &Scope<'_>) -> Injection;
}

/// The injector of a domain.
pub fn injector(domain: FaultDomain) -> &'static dyn Injector {
    match domain {
        FaultDomain::Process => &process::ProcessInjector,
        FaultDomain::Gpu => &gpu::GpuInjector,
        FaultDomain::Load => &load::LoadInjector,
        FaultDomain::Net => &net::NetInjector,
        FaultDomain::Region => &net::RegionInjector,
    }
}

/// Whether a fault `target` ("component" or "component/replica") names the replica
/// `replica` (`component/index`) of `component`.
pub fn names(target: &str, component: &str, replica: &str) -> bool {
    component == target || replica == target
}

/// One replica a fault is aimed at, as it is at the injection instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `component/replica`.
    pub name: String,
    pub addr: SocketAddr,
    /// The running process, if one is running.
    pub pid: Option<u32>,
    /// The fault proxies in front of it: its `net.*` proxy when the scenario has `net.*`
    /// faults on it, and its link proxies from other regions.
    pub proxies: Vec<net::ProxyRef>,
}

/// The replicas a fault `target` names, now; none without a target.
pub fn targets(
    replicas: &[Replica],
    target: Option<&str>,
    net: Option<&std::sync::Arc<net::NetLayer>>,
) -> Vec<Target> {
    let Some(t) = target else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter(|r| names(t, &r.spec().component, &r.spec().name))
        .map(|r| Target {
            name: r.spec().name.clone(),
            addr: r.spec().addr,
            pid: r.pid(),
            proxies: net
                .map(|layer| {
                    layer
                        .proxies_of(&r.spec().name)
                        .map(|name| net::ProxyRef {
                            name: name.to_owned(),
                            layer: layer.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use scenario::FaultKind;

    pub(crate) fn fault(
        kind: FaultKind,
        at: u64,
        until: Option<u64>,
        multiplier: Option<f64>,
    ) -> Fault {
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
            regions: None,
            period: None,
            latency: None,
            jitter: None,
            rate_kbps: None,
            status: None,
            ratio: None,
        }
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

    struct Count(std::sync::Arc<std::sync::atomic::AtomicU32>);
    impl Heal for Count {
        fn heal(&mut self) -> String {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "counted".into()
        }
    }

    #[test]
    fn a_guard_heals_exactly_once_whether_healed_or_dropped() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let g = HealGuard::new(Count(n.clone()));
        assert_eq!(g.heal(), "counted");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        {
            let _g = HealGuard::new(Count(n.clone()));
        }
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
