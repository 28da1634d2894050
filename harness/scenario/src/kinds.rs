//! What the runner and the validator know about each component kind, in one table.
//!
//! Adding a component kind is a variant of [`ComponentKind`] plus one [`KindSpec`] entry in
//! [`KINDS`]: its binary, the arguments the runner puts before the component's own, how its
//! readiness is probed, how a seed reaches it, which fault domains apply to it and what
//! workload it can be the target of. The runner (`harness/faultline`) and the validator read
//! only this table; neither matches on the kind.

use crate::model::{ComponentKind, FaultKind};

/// Where a fault kind acts, and so which component kinds it can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDomain {
    /// OS signals to the target's processes (`process.*`).
    Process,
    /// The simulated device inside a trainer worker, through its `POST /faults` (`gpu.*`).
    Gpu,
    /// The target's network link, through the fault proxy the runner puts in front of
    /// each of its replicas (`net.*`).
    Net,
    /// The load generator's offered rate (`load.*`); no component target.
    Load,
    /// The links between regions (`region.*`); no component target, `regions` instead.
    Region,
}

impl FaultDomain {
    /// What a fault of the domain does, for messages ("gpu.lost is injected into …").
    pub fn acts_on(self) -> &'static str {
        match self {
            FaultDomain::Process => "signals the target's processes",
            FaultDomain::Gpu => "is injected into trainer workers",
            FaultDomain::Net => "acts on the target's link (a fault proxy in front of it)",
            FaultDomain::Load => "changes the offered rate",
            FaultDomain::Region => "acts on the links between regions",
        }
    }
}

impl FaultKind {
    /// The domain the fault acts in.
    pub fn domain(self) -> FaultDomain {
        match self {
            FaultKind::ProcessKill | FaultKind::ProcessPause => FaultDomain::Process,
            FaultKind::LoadSpike => FaultDomain::Load,
            FaultKind::GpuLost | FaultKind::GpuEcc | FaultKind::GpuThrottle | FaultKind::GpuOom => {
                FaultDomain::Gpu
            }
            FaultKind::NetLatency
            | FaultKind::NetBandwidth
            | FaultKind::NetBlackhole
            | FaultKind::NetReset
            | FaultKind::NetRefuse
            | FaultKind::NetHttpError => FaultDomain::Net,
            FaultKind::RegionPartition
            | FaultKind::RegionBlackhole
            | FaultKind::RegionLatency
            | FaultKind::RegionFlap
            | FaultKind::RegionDown => FaultDomain::Region,
        }
    }
}

/// How the runner decides a replica is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET http://ADDR{readiness.path}` answers 2xx.
    Http,
    /// A TCP connection to ADDR is accepted (services that do not speak HTTP);
    /// `readiness.path` is not used.
    Tcp,
}

/// What workload a component of the kind can be the target of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answers HTTP requests: open-loop, closed-loop and max-throughput loads.
    Serve,
    /// Trains: `mode = "training"` runs on its replicas.
    Train,
    /// Neither (a coordinator); never a workload target.
    Coordinate,
}

/// One component kind, as the runner starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    pub kind: ComponentKind,
    /// As written in scenario files (`kind = "server"`).
    pub name: &'static str,
    /// The stack binary (found by the runner's binary search, see `faultline::binaries`).
    pub binary: &'static str,
    /// Arguments before the component's own `args`; the runner replaces `{addr}` (this
    /// replica's address), `{replica}`, `{replicas}` and `{run_dir}` as in `args`.
    pub base_args: &'static [&'static str],
    pub probe: ProbeKind,
    /// The flag that carries the run's seed (`--seed S` is appended unless the component's
    /// own arguments set it, as `--seed S` or `--seed=S`); `None`: the kind takes no seed.
    pub seed_flag: Option<&'static str>,
    /// Fault domains whose faults may target the kind ([`FaultDomain::Load`] never targets
    /// a component).
    pub fault_domains: &'static [FaultDomain],
    pub role: Role,
    /// Exit codes a fault explains on the replica it targets (besides the SIGKILL of
    /// `process.kill`, which every kind shares): the first such exit after the fault is
    /// charged to it; any other exit the runner did not ask for fails the run.
    pub fault_exits: &'static [(FaultKind, i32)],
    /// The exit code that means "the workload is finished" (a training job's end), not a
    /// failure; `None`: the kind never exits on its own in a healthy run.
    pub done_code: Option<i32>,
}

impl KindSpec {
    /// Whether `args` already set the seed flag (`--seed 5` or `--seed=5`).
    pub fn sets_seed(&self, args: &[String]) -> bool {
        self.seed_flag.is_some_and(|flag| {
            args.iter().any(|a| {
                a == flag
                    || a.strip_prefix(flag)
                        .is_some_and(|rest| rest.starts_with('='))
            })
        })
    }

    /// Whether faults of `domain` may target a component of this kind.
    pub fn takes(&self, domain: FaultDomain) -> bool {
        self.fault_domains.contains(&domain)
    }
}

/// Every component kind. One entry per [`ComponentKind`] variant (a unit test checks).
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: ComponentKind::Command,
        name: "command",
        // The program is the component's own `command`, not a stack binary.
        binary: "",
        base_args: &[],
        probe: ProbeKind::Tcp,
        seed_flag: None,
        fault_domains: &[FaultDomain::Process, FaultDomain::Net],
        role: Role::Serve,
        fault_exits: &[],
        done_code: None,
    },
    KindSpec {
        kind: ComponentKind::Server,
        name: "server",
        binary: "server",
        base_args: &["--listen", "{addr}"],
        probe: ProbeKind::Http,
        seed_flag: Some("--seed"),
        fault_domains: &[FaultDomain::Process, FaultDomain::Net],
        role: Role::Serve,
        fault_exits: &[],
        done_code: None,
    },
    KindSpec {
        kind: ComponentKind::TrainerRendezvous,
        name: "trainer-rendezvous",
        binary: "trainer",
        base_args: &["rendezvous", "--listen", "{addr}"],
        probe: ProbeKind::Tcp,
        seed_flag: None,
        fault_domains: &[FaultDomain::Process],
        role: Role::Coordinate,
        fault_exits: &[],
        // `--exit-when-done`: the job finished.
        done_code: Some(0),
    },
    KindSpec {
        kind: ComponentKind::TrainerWorker,
        name: "trainer-worker",
        binary: "trainer",
        base_args: &[
            "worker",
            "--control",
            "{addr}",
            "--rank",
            "{replica}",
            "--world-size",
            "{replicas}",
            "--run-dir",
            "{run_dir}",
        ],
        probe: ProbeKind::Http,
        seed_flag: Some("--seed"),
        fault_domains: &[FaultDomain::Process, FaultDomain::Gpu],
        role: Role::Train,
        // stack/trainer/src/exit.rs: 3 device lost, 4 out of memory without back-off, 5
        // evicted by the rendezvous (a paused worker misses its heartbeats).
        fault_exits: &[
            (FaultKind::GpuLost, 3),
            (FaultKind::GpuOom, 4),
            (FaultKind::ProcessPause, 5),
        ],
        done_code: Some(0),
    },
];

impl ComponentKind {
    /// This kind's entry in [`KINDS`].
    pub fn spec(self) -> &'static KindSpec {
        KINDS
            .iter()
            .find(|k| k.kind == self)
            .expect("every ComponentKind has a KINDS entry (tested)")
    }

    /// The name used in scenario files and reports.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

/// Names of the kinds for which `pred` holds, joined with " or ".
pub fn kind_names(pred: impl Fn(&KindSpec) -> bool) -> String {
    let names: Vec<&str> = KINDS.iter().filter(|k| pred(k)).map(|k| k.name).collect();
    names.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_entry_named_as_in_scenario_files() {
        for k in KINDS {
            assert_eq!(
                KINDS.iter().filter(|o| o.kind == k.kind).count(),
                1,
                "{}",
                k.name
            );
            let serde_name = serde_json::to_value(k.kind).expect("serializable");
            assert_eq!(serde_name, serde_json::json!(k.name));
            let parsed: ComponentKind =
                serde_json::from_value(serde_json::json!(k.name)).expect("parses");
            assert_eq!(parsed, k.kind);
        }
        let schema = serde_json::to_value(schemars::schema_for!(ComponentKind)).expect("schema");
        let variants = schema.to_string().matches("\"enum\"").count()
            + schema.to_string().matches("\"const\"").count();
        assert_eq!(variants, KINDS.len(), "one schema variant per table entry");
    }

    #[test]
    fn seed_is_seen_in_both_spellings_and_not_in_look_alikes() {
        let spec = ComponentKind::Server.spec();
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(spec.sets_seed(&args(&["--seed", "5"])));
        assert!(spec.sets_seed(&args(&["--seed=5"])));
        assert!(!spec.sets_seed(&args(&["--seeds", "5"])));
        assert!(!spec.sets_seed(&args(&["--lm-seed=5"])));
        assert!(!ComponentKind::TrainerRendezvous
            .spec()
            .sets_seed(&args(&["--seed=5"])));
    }

    #[test]
    fn gpu_faults_target_only_kinds_that_train() {
        for k in KINDS {
            assert_eq!(
                k.takes(FaultDomain::Gpu),
                k.role == Role::Train,
                "{}",
                k.name
            );
            assert!(k.takes(FaultDomain::Process));
            assert!(!k.takes(FaultDomain::Load));
        }
        assert_eq!(FaultKind::GpuEcc.domain(), FaultDomain::Gpu);
        assert_eq!(kind_names(|k| k.takes(FaultDomain::Gpu)), "trainer-worker");
    }
}
