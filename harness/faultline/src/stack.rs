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
    /// This replica's region, and every component's (for `{NAME.regions}`).
    region: &'a str,
    regions: &'a BTreeMap<String, String>,
    addrs: &'a BTreeMap<String, Vec<SocketAddr>>,
    run_dir: &'a Path,
    replica: u32,
    replicas: u32,
    seed: u64,
}

impl Bindings<'_> {
    /// Replaces the `{…}` placeholders (validated by the scenario crate, see
    /// `scenario::validate::PLACEHOLDERS`) in one pass, so a value is never read as a
    /// placeholder itself; `{{` and `}}` are a literal `{` and `}` (for a program's own
    /// braces, e.g. an nginx configuration passed on the command line). An unclosed `{`
    /// is left as it is.
    fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let closed = tail.strip_prefix('{').and_then(|after| {
                after
                    .find(['{', '}'])
                    .filter(|&e| after[e..].starts_with('}'))
            });
            if let Some(end) = closed {
                if let Some(value) = self.value(&tail[1..1 + end]) {
                    out.push_str(&value);
                    rest = &tail[end + 2..];
                    continue;
                }
            }
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
        out.push_str(rest);
        out
    }

    /// The value of one placeholder (without its braces); `None` for an unknown one.
    fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            "addr" => self.own.to_string(),
            "host" => self.own.ip().to_string(),
            "port" => self.own.port().to_string(),
            "run_dir" => self.run_dir.display().to_string(),
            "replicas" => self.replicas.to_string(),
            "replica" => self.replica.to_string(),
            "seed" => self.seed.to_string(),
            "region" => self.region.to_owned(),
            _ => {
                let (component, what) = name.rsplit_once('.')?;
                let list = self.addrs.get(component)?;
                let all = || list.iter().map(ToString::to_string);
                match what {
                    "addr" => list.first()?.to_string(),
                    "addrs" => all().collect::<Vec<_>>().join(","),
                    "regions" => {
                        let region = self
                            .regions
                            .get(component)
                            .map_or("default", String::as_str);
                        all()
                            .map(|a| format!("{region}={a}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                    _ => return None,
                }
            }
        })
    }
}

/// The replica count of `c` in `variant`.
pub fn replicas_of(c: &Component, variant: &Variant) -> u32 {
    *variant.replicas.get(&c.name).unwrap_or(&c.replicas)
}

/// A region's index in the address model: 1-based in `[[regions]]` order; a component
/// without a region (or a scenario without regions) is in the first.
pub fn region_index(scenario: &Scenario, name: Option<&str>) -> u8 {
    name.and_then(|n| scenario.regions.iter().position(|r| r.name == n))
        .and_then(|i| u8::try_from(i + 1).ok())
        .unwrap_or(DEFAULT_REGION)
}

/// Where each replica sits: (region, index among that region's replicas), per component,
/// in component order.
fn placement(scenario: &Scenario, variant: &Variant) -> BTreeMap<String, Vec<(u8, u32)>> {
    let mut next: BTreeMap<u8, u32> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for c in &scenario.components {
        let region = region_index(scenario, c.region.as_deref());
        let list = (0..replicas_of(c, variant))
            .map(|_| {
                let n = next.entry(region).or_insert(0);
                let at = (region, *n);
                *n += 1;
                at
            })
            .collect();
        out.insert(c.name.clone(), list);
    }
    out
}

/// Every replica's address: one loopback IP each from `block`, in its region's segment,
/// in component order, the same for the whole run (restarts included).
pub fn addresses(
    scenario: &Scenario,
    variant: &Variant,
    block: &RunBlock,
) -> Result<BTreeMap<String, Vec<SocketAddr>>, AddrError> {
    placement(scenario, variant)
        .into_iter()
        .map(|(name, at)| {
            let list = at
                .into_iter()
                .map(|(region, i)| block.replica(region, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name, list))
        })
        .collect()
}

/// A fault proxy the run puts in front of a replica: for `net.*` faults (`link: None`,
/// same-region traffic) or on the link from another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProxy {
    /// `component/i`.
    pub replica: String,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// `(from, to)` region indices for a link proxy.
    pub link: Option<(u8, u8)>,
}

/// What each component's replicas are reached at, as seen from every region, and the
/// proxies that takes.
#[derive(Debug)]
pub struct Reach {
    /// region index → component → addresses (replica order).
    pub views: BTreeMap<u8, BTreeMap<String, Vec<SocketAddr>>>,
    pub proxies: Vec<PlannedProxy>,
}

/// Same region: the replica itself, or its `net.*` proxy when a `net.*` fault targets its
/// component; another region: its link proxy for that region (the proxied IP, port
/// `PORT + from`), so all traffic between regions crosses the link.
pub fn reach(
    scenario: &Scenario,
    variant: &Variant,
    addrs: &BTreeMap<String, Vec<SocketAddr>>,
    netted: &std::collections::BTreeSet<String>,
    block: &RunBlock,
) -> Result<Reach, AddrError> {
    let regions: Vec<u8> = if scenario.regions.is_empty() {
        vec![DEFAULT_REGION]
    } else {
        (1..=scenario.regions.len())
            .filter_map(|i| u8::try_from(i).ok())
            .collect()
    };
    let at = placement(scenario, variant);
    let mut views: BTreeMap<u8, BTreeMap<String, Vec<SocketAddr>>> = BTreeMap::new();
    let mut proxies = Vec::new();
    for c in &scenario.components {
        let own = addrs.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        let places = at.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        for (i, (&addr, &(region, idx))) in own.iter().zip(places).enumerate() {
            let replica = format!("{}/{i}", c.name);
            for &from in &regions {
                let seen = if from != region {
                    let listen = block.linked(region, idx, from)?;
                    proxies.push(PlannedProxy {
                        replica: replica.clone(),
                        listen,
                        upstream: addr,
                        link: Some((from, region)),
                    });
                    listen
                } else if netted.contains(&c.name) {
                    let listen = block.proxied(region, idx)?;
                    proxies.push(PlannedProxy {
                        replica: replica.clone(),
                        listen,
                        upstream: addr,
                        link: None,
                    });
                    listen
                } else {
                    addr
                };
                views
                    .entry(from)
                    .or_default()
                    .entry(c.name.clone())
                    .or_default()
                    .push(seen);
            }
        }
    }
    Ok(Reach { views, proxies })
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
    views: &BTreeMap<u8, BTreeMap<String, Vec<SocketAddr>>>,
) -> Vec<ReplicaSpec> {
    let load_region = region_index(scenario, scenario.workload.region.as_deref());
    let regions: BTreeMap<String, String> = scenario
        .components
        .iter()
        .map(|c| {
            let r = region_index(scenario, c.region.as_deref());
            (c.name.clone(), crate::faults::net::region_name(scenario, r))
        })
        .collect();
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
        // A replica listens on its own address; `{other.addr}` placeholders name where
        // its own region reaches the others (through a link or fault proxy where there is
        // one); the load generator reaches it as seen from the workload's region.
        let empty = BTreeMap::new();
        let own_view = views
            .get(&region_index(scenario, c.region.as_deref()))
            .unwrap_or(&empty);
        let load_view = views
            .get(&load_region)
            .and_then(|v| v.get(&c.name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, &addr) in own_addrs.iter().enumerate() {
            let reached_at = load_view.get(i).copied().unwrap_or(addr);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let b = Bindings {
                own: addr,
                region: regions.get(&c.name).map_or("default", String::as_str),
                regions: &regions,
                addrs: own_view,
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
                region: crate::faults::net::region_name(
                    scenario,
                    region_index(scenario, c.region.as_deref()),
                ),
                restart: c.restart.clone(),
                probe: Probe::for_kind(c.kind, &c.readiness),
                readiness: c.readiness.clone(),
                log_path: dirs.logs.join(format!("{}{}-{i}.log", dirs.prefix, c.name)),
                netns: None,
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
    fn across_regions_replicas_are_reached_through_their_link_proxy() {
        let s = scenario::parse(
            "description = \"x\"\n[[regions]]\nname = \"us\"\n[[regions]]\nname = \"eu\"\n[[components]]\nname = \"server\"\nkind = \"server\"\nregion = \"eu\"\nreplicas = 2\n[[components]]\nname = \"client\"\nkind = \"command\"\ncommand = \"true\"\nargs = [\"{server.addrs}\", \"{server.regions}\", \"{region}\"]\n[workload]\ntarget = \"server\"\nregion = \"us\"\nrate_per_s = 1\nduration = \"1s\"\nrequests = [{ kind = \"infer\", model = \"mlp\" }]\n",
            "r.toml",
        )
        .expect("scenario");
        let v = default_variant();
        let block = RunBlock::claim().expect("a block");
        let addrs = addresses(&s, &v, &block).expect("addresses");
        // server in eu (region 2, segment 2), client in us (region 1).
        assert_eq!(addrs["server"][0], block.replica(2, 0).expect("addr"));
        assert_eq!(addrs["client"][0], block.replica(1, 0).expect("addr"));
        let r = reach(&s, &v, &addrs, &Default::default(), &block).expect("reach");
        let from_us = r.views[&1]["server"].clone();
        assert_eq!(from_us[1], block.linked(2, 1, 1).expect("link addr"));
        assert_eq!(r.views[&2]["server"], addrs["server"], "inside eu: direct");
        // One link proxy per replica per other region: server/0 and /1 from us, client/0 from eu.
        assert_eq!(r.proxies.len(), 3);
        assert!(r.proxies.iter().any(|p| p.replica == "server/1"
            && p.link == Some((1, 2))
            && p.upstream == addrs["server"][1]));
        let views = r.views;
        let specs = specs(
            &s,
            &v,
            &BTreeMap::new(),
            &RunDirs::new(Path::new("/tmp/x"), "default", false),
            5,
            &addrs,
            &views,
        );
        let client = specs
            .iter()
            .find(|x| x.component == "client")
            .expect("client");
        let expected = from_us
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert!(client.args.contains(&expected), "{:?}", client.args);
        let placed = from_us
            .iter()
            .map(|a| format!("eu={a}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(client.args.contains(&placed), "{:?}", client.args);
        assert!(client.args.contains(&"us".to_owned()), "{:?}", client.args);
        // The load generator (in us) reaches server/0 across the link too.
        let server0 = specs
            .iter()
            .find(|x| x.name == "server/0")
            .expect("server/0");
        assert_eq!(server0.public, from_us[0]);
    }

    #[test]
    fn placeholders_are_replaced_in_one_pass_and_doubled_braces_are_literal() {
        let own: SocketAddr = "127.3.1.2:7100".parse().expect("addr");
        let web: SocketAddr = "127.3.1.3:7100".parse().expect("addr");
        let addrs = BTreeMap::from([("web".to_owned(), vec![own, web])]);
        let regions = BTreeMap::from([("web".to_owned(), "eu".to_owned())]);
        let b = Bindings {
            own,
            region: "eu",
            regions: &regions,
            addrs: &addrs,
            // A value that looks like a placeholder stays as it is.
            run_dir: Path::new("/runs/{port}"),
            replica: 1,
            replicas: 2,
            seed: 7,
        };
        assert_eq!(
            b.substitute("listen {host}:{port}; {run_dir} {replica}/{replicas} {seed} {region}"),
            "listen 127.3.1.2:7100; /runs/{port} 1/2 7 eu"
        );
        assert_eq!(
            b.substitute("{web.addr} {web.addrs} {web.regions}"),
            "127.3.1.2:7100 127.3.1.2:7100,127.3.1.3:7100 eu=127.3.1.2:7100,eu=127.3.1.3:7100"
        );
        assert_eq!(
            b.substitute("events {{}} http {{ server {{ listen {addr}; }} }}"),
            "events {} http { server { listen 127.3.1.2:7100; } }"
        );
        assert_eq!(
            b.substitute("{{port}} {unclosed a}b} {"),
            "{port} {unclosed a}b} {"
        );
    }

    #[test]
    fn specs_follow_the_kind_table_with_stable_own_addresses() {
        let s = scenario::parse(TRAINING, "t.toml").expect("valid");
        let block = RunBlock::claim().expect("a block");
        let v = default_variant();
        let addrs = addresses(&s, &v, &block).expect("addresses");
        let dirs = RunDirs::new(Path::new("/r"), "default", false);
        let programs = BTreeMap::from([("trainer", PathBuf::from("/bin/trainer"))]);
        let views = BTreeMap::from([(DEFAULT_REGION, addrs.clone())]);
        let specs = specs(&s, &v, &programs, &dirs, 5, &addrs, &views);
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
        let views = BTreeMap::from([(DEFAULT_REGION, addrs.clone())]);
        let specs = specs(&s, &v, &BTreeMap::new(), &dirs, 5, &addrs, &views);
        assert_eq!(specs.len(), 5);
        let last = &specs[4];
        assert!(last.args.windows(2).any(|w| w == ["--seed", "5"]));
        assert_eq!(last.args.last().map(String::as_str), Some("--x=3"));
        assert!(last.args.contains(&"/r/train-four".to_owned()));
        assert_eq!(last.log_path, PathBuf::from("/r/logs/four-worker-3.log"));
    }
}
