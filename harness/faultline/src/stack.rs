//! From a scenario (and one of its variants) to the replica specs the [`Supervisor`] starts:
//! program, arguments, environment, address, log file. Pure apart from the address block,
//! which the caller claims once per run ([`RunBlock`]).
//!
//! Per-kind knowledge comes from `scenario::KINDS` (binary, base arguments, probe, seed
//! flag); nothing here matches on the component kind.
//!
//! [`Supervisor`]: crate::supervisor::Supervisor

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use scenario::{Component, Scenario, Variant};

use crate::addrs::{AddrError, RunBlock};
use crate::supervisor::{Probe, ReplicaSpec};

/// The region every replica is placed in until scenarios declare regions.
pub const DEFAULT_REGION: u8 = 1;

/// Where one stack lifetime writes: logs, and the trainer's shared run folder.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub logs: PathBuf,
    pub train: PathBuf,
    /// Log file prefix (`<variant>-` when there are several variants).
    pub prefix: String,
}

impl RunDirs {
    /// The folders of `variant` inside the run folder `dir`.
    pub fn new(dir: &Path, variant: &str, several_variants: bool) -> RunDirs {
        RunDirs {
            logs: dir.join("logs"),
            train: if several_variants {
                dir.join(format!("train-{variant}"))
            } else {
                dir.join("train")
            },
            prefix: if several_variants {
                format!("{variant}-")
            } else {
                String::new()
            },
        }
    }
}

/// What the placeholders of one replica's arguments and environment stand for.
struct Bindings<'a> {
    own: SocketAddr,
    addrs: &'a BTreeMap<String, Vec<SocketAddr>>,
    run_dir: &'a Path,
    replica: u32,
    replicas: u32,
    seed: u64,
}

impl Bindings<'_> {
    /// Replaces the `{…}` placeholders (validated by the scenario crate, see
    /// `scenario::validate::PLACEHOLDERS`).
    fn substitute(&self, text: &str) -> String {
        let mut out = text
            .replace("{addr}", &self.own.to_string())
            .replace("{host}", &self.own.ip().to_string())
            .replace("{port}", &self.own.port().to_string())
            .replace("{run_dir}", &self.run_dir.display().to_string())
            .replace("{replicas}", &self.replicas.to_string())
            .replace("{replica}", &self.replica.to_string())
            .replace("{seed}", &self.seed.to_string());
        for (name, list) in self.addrs {
            let all: Vec<String> = list.iter().map(ToString::to_string).collect();
            out = out.replace(&format!("{{{name}.addrs}}"), &all.join(","));
            if let Some(first) = list.first() {
                out = out.replace(&format!("{{{name}.addr}}"), &first.to_string());
            }
        }
        out
    }
}

/// The replica count of `c` in `variant`.
pub fn replicas_of(c: &Component, variant: &Variant) -> u32 {
    *variant.replicas.get(&c.name).unwrap_or(&c.replicas)
}

/// Every replica's address: one loopback IP each from `block`, in component order, the
/// same for the whole run (restarts included).
pub fn addresses(
    scenario: &Scenario,
    variant: &Variant,
    block: &RunBlock,
) -> Result<BTreeMap<String, Vec<SocketAddr>>, AddrError> {
    let mut next = 0u32;
    let mut addrs = BTreeMap::new();
    for c in &scenario.components {
        let list = (0..replicas_of(c, variant))
            .map(|_| {
                let a = block.replica(DEFAULT_REGION, next);
                next += 1;
                a
            })
            .collect::<Result<_, _>>()?;
        addrs.insert(c.name.clone(), list);
    }
    Ok(addrs)
}

/// The components a `net.*` fault targets: each of their replicas gets a fault proxy in
/// front of it, and everyone else reaches it through that proxy.
pub fn netted(scenario: &Scenario) -> std::collections::BTreeSet<String> {
    scenario
        .faults
        .iter()
        .filter(|f| f.kind.domain() == scenario::FaultDomain::Net)
        .filter_map(|f| f.target.as_deref())
        .map(|t| t.split('/').next().unwrap_or(t).to_owned())
        .collect()
}

/// Where clients and peers reach each replica: its own address, or for a `netted`
/// component the proxied address reserved for it (`addrs` module), the same replica
/// index in the same region.
pub fn public_addresses(
    scenario: &Scenario,
    addrs: &BTreeMap<String, Vec<SocketAddr>>,
    netted: &std::collections::BTreeSet<String>,
    block: &RunBlock,
) -> Result<BTreeMap<String, Vec<SocketAddr>>, AddrError> {
    let mut next = 0u32;
    let mut public = BTreeMap::new();
    for c in &scenario.components {
        let own = addrs.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        let mut list = Vec::with_capacity(own.len());
        for &a in own {
            list.push(if netted.contains(&c.name) {
                block.proxied(DEFAULT_REGION, next)?
            } else {
                a
            });
            next += 1;
        }
        public.insert(c.name.clone(), list);
    }
    Ok(public)
}

/// Replica specs for every component: the kind's base arguments, then the component's and
/// the variant's own (placeholders replaced), the seed flag unless those set it, the
/// environment (placeholders replaced in values) and the log file.
pub fn specs(
    scenario: &Scenario,
    variant: &Variant,
    programs: &BTreeMap<&'static str, PathBuf>,
    dirs: &RunDirs,
    seed: u64,
    addrs: &BTreeMap<String, Vec<SocketAddr>>,
    public: &BTreeMap<String, Vec<SocketAddr>>,
) -> Vec<ReplicaSpec> {
    let mut specs = Vec::new();
    for c in &scenario.components {
        let kind = c.kind.spec();
        let program = match &c.command {
            // `kind = "command"`: the user's program (resolved by the runner).
            Some(cmd) => PathBuf::from(cmd),
            None => programs.get(kind.binary).cloned().unwrap_or_default(),
        };
        let replicas = replicas_of(c, variant);
        let own_addrs = addrs.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        let own_public = public.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        for (i, &addr) in own_addrs.iter().enumerate() {
            let reached_at = own_public.get(i).copied().unwrap_or(addr);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            // A replica listens on its own address; `{other.addr}` placeholders name the
            // addresses others reach it at (through a fault proxy when there is one).
            let b = Bindings {
                own: addr,
                addrs: public,
                run_dir: &dirs.train,
                replica: i,
                replicas,
                seed,
            };
            let mut user: Vec<String> = c.args.clone();
            user.extend(variant.args.get(&c.name).cloned().unwrap_or_default());
            let user: Vec<String> = user.iter().map(|a| b.substitute(a)).collect();
            let mut args: Vec<String> = kind.base_args.iter().map(|a| b.substitute(a)).collect();
            if let (Some(flag), false) = (kind.seed_flag, kind.sets_seed(&user)) {
                args.extend([flag.to_owned(), seed.to_string()]);
            }
            args.extend(user);
            // Every replica also learns its address from the environment (a user's
            // program may read it instead of taking a placeholder in `args`).
            let mut env = BTreeMap::from([
                ("RUST_LOG".to_owned(), "info".to_owned()),
                ("FAULTLINE_ADDR".to_owned(), addr.to_string()),
                ("FAULTLINE_HOST".to_owned(), addr.ip().to_string()),
                ("FAULTLINE_PORT".to_owned(), addr.port().to_string()),
            ]);
            env.extend(c.env.iter().map(|(k, v)| (k.clone(), b.substitute(v))));
            specs.push(ReplicaSpec {
                name: format!("{}/{i}", c.name),
                component: c.name.clone(),
                kind: c.kind,
                program: program.clone(),
                args,
                env,
                addr,
                public: reached_at,
                restart: c.restart.clone(),
                probe: Probe::for_kind(c.kind, &c.readiness),
                readiness: c.readiness.clone(),
                log_path: dirs.logs.join(format!("{}{}-{i}.log", dirs.prefix, c.name)),
            });
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAINING: &str = r#"
[[components]]
name = "rendezvous"
kind = "trainer-rendezvous"

[[components]]
name = "worker"
kind = "trainer-worker"
replicas = 2
args = ["--rendezvous", "{rendezvous.addr}", "--seed=9", "--peers", "{worker.addrs}"]
env = { OWN = "{host}:{port}" }

[workload]
target = "worker"
mode = "training"
duration = "10s"
"#;

    fn default_variant() -> Variant {
        Variant {
            name: "default".into(),
            args: BTreeMap::new(),
            replicas: BTreeMap::new(),
            inject_faults: true,
        }
    }

    #[test]
    fn specs_follow_the_kind_table_with_stable_own_addresses() {
        let s = scenario::parse(TRAINING, "t.toml").expect("valid");
        let block = RunBlock::claim().expect("a block");
        let v = default_variant();
        let addrs = addresses(&s, &v, &block).expect("addresses");
        let dirs = RunDirs::new(Path::new("/r"), "default", false);
        let programs = BTreeMap::from([("trainer", PathBuf::from("/bin/trainer"))]);
        let specs = specs(&s, &v, &programs, &dirs, 5, &addrs, &addrs);
        assert_eq!(specs.len(), 3);
        let rdv = &specs[0];
        assert_eq!(rdv.probe, Probe::Tcp);
        assert_eq!(
            rdv.args,
            ["rendezvous", "--listen", &rdv.addr.to_string()],
            "no seed flag for a kind without one"
        );
        let w1 = &specs[2];
        let peers = format!("{},{}", specs[1].addr, specs[2].addr);
        assert_eq!(
            w1.args,
            [
                "worker",
                "--control",
                &w1.addr.to_string(),
                "--rank",
                "1",
                "--world-size",
                "2",
                "--run-dir",
                "/r/train",
                "--rendezvous",
                &rdv.addr.to_string(),
                "--seed=9",
                "--peers",
                &peers,
            ],
            "--seed=9 given, so no second --seed"
        );
        assert_eq!(
            w1.env.get("OWN").map(String::as_str),
            Some(w1.addr.to_string().as_str())
        );
        assert_eq!(w1.program, PathBuf::from("/bin/trainer"));
        assert_eq!(w1.log_path, PathBuf::from("/r/logs/worker-1.log"));
        let mut ips: Vec<_> = specs.iter().map(|s| s.addr.ip()).collect();
        ips.dedup();
        assert_eq!(ips.len(), 3, "one IP per replica");
        // The same block gives the same addresses again: they do not depend on a free-port race.
        assert_eq!(addresses(&s, &v, &block).expect("again"), addrs);
    }

    #[test]
    fn a_variant_changes_counts_and_adds_args_and_the_seed_flag_is_added_when_absent() {
        let s = scenario::parse(&TRAINING.replace("\"--seed=9\", ", ""), "t.toml").expect("valid");
        let block = RunBlock::claim().expect("a block");
        let mut v = default_variant();
        v.name = "four".into();
        v.replicas.insert("worker".into(), 4);
        v.args.insert("worker".into(), vec!["--x={replica}".into()]);
        let addrs = addresses(&s, &v, &block).expect("addresses");
        let dirs = RunDirs::new(Path::new("/r"), "four", true);
        let specs = specs(&s, &v, &BTreeMap::new(), &dirs, 5, &addrs, &addrs);
        assert_eq!(specs.len(), 5);
        let last = &specs[4];
        assert!(last.args.windows(2).any(|w| w == ["--seed", "5"]));
        assert_eq!(last.args.last().map(String::as_str), Some("--x=3"));
        assert!(last.args.contains(&"/r/train-four".to_owned()));
        assert_eq!(last.log_path, PathBuf::from("/r/logs/four-worker-3.log"));
    }
}
