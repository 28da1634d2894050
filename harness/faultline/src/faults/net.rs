//! `net.*` faults: a fault proxy (the `proxy` crate, embedded) in front of every replica
//! of a component that a `net.*` fault targets, and the injector that puts toxics on it.
//!
//! The runner starts a [`NetLayer`] before the stack: one proxy per such replica,
//! listening on the proxied address reserved for it (`addrs` module) and forwarding to the
//! replica's own address. Load and `{component.addr}` placeholders use the proxied
//! address ([`crate::supervisor::ReplicaSpec::public`]), so the faults act on every
//! client's and peer's traffic; readiness probes go straight to the replica. Traffic that
//! does not use those addresses bypasses the proxy.
//!
//! | fault | toxics on the target's proxies |
//! |---|---|
//! | `net.latency` | `latency` = half the round-trip time (± half the jitter) on each direction |
//! | `net.bandwidth` | `bandwidth` `rate_kbps` on each direction |
//! | `net.blackhole` | `blackhole` on each direction: nothing answered, nothing closed |
//! | `net.reset` | `reset_peer` with timeout 0: every connection reset, new ones at once |
//! | `net.refuse` | the proxy disabled: connections refused, open ones closed |
//! | `net.http_error` | `http_error` with `status`, toxicity `ratio` |
//!
//! Each injection returns a guard that removes its toxics (or re-enables the proxy);
//! dropping the layer closes every proxy, so nothing outlives the run.

use std::sync::Arc;
use std::time::Duration;

use proxy::{Kind, ProxySpec, Registry, Stream, Toxic, ToxicGuard};
use scenario::{Fault, FaultKind, Scenario};

use crate::stack::PlannedProxy;

use super::{Heal, HealGuard, Injection, Injector, Scope};

/// The proxies in front of replicas: for `net.*` faults, and on the links between regions.
#[derive(Debug)]
pub struct NetLayer {
    registry: Arc<Registry>,
    /// Every proxy: its name and plan.
    proxies: Vec<(String, PlannedProxy)>,
}

/// A region's name by its index (`[[regions]]` order, 1-based); "default" without regions.
pub fn region_name(scenario: &Scenario, index: u8) -> String {
    usize::from(index)
        .checked_sub(1)
        .and_then(|i| scenario.regions.get(i))
        .map_or_else(|| "default".to_owned(), |r| r.name.clone())
}

impl NetLayer {
    /// Starts every planned proxy (link proxies with their link's delay and rate, as
    /// toxics that stay for the whole run). Must be called inside the runtime. Fails when
    /// an address cannot be bound.
    pub fn start(
        scenario: &Scenario,
        plan: &[PlannedProxy],
        seed: u64,
    ) -> Result<Arc<NetLayer>, String> {
        let registry = Registry::new(seed);
        let mut proxies = Vec::new();
        for p in plan {
            let name = match p.link {
                None => p.replica.replace('/', "."),
                Some((from, _)) => format!(
                    "{}.from-{}",
                    p.replica.replace('/', "."),
                    region_name(scenario, from)
                ),
            };
            registry
                .create(ProxySpec {
                    name: name.clone(),
                    listen: p.listen.to_string(),
                    upstream: p.upstream.to_string(),
                    enabled: true,
                    seed: None,
                })
                .map_err(|e| format!("cannot start the fault proxy {name}: {e}"))?;
            if let Some((from, to)) = p.link {
                for t in link_toxics(scenario, from, to) {
                    registry
                        .add_toxic(&name, t)
                        .map_err(|e| format!("cannot set up the link of proxy {name}: {e}"))?;
                }
            }
            proxies.push((name, p.clone()));
        }
        Ok(Arc::new(NetLayer { registry, proxies }))
    }

    /// The proxies in front of `replica` (its `net.*` proxy and its link proxies).
    pub fn proxies_of<'a>(&'a self, replica: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.proxies
            .iter()
            .filter(move |(_, p)| p.replica == replica)
            .map(|(n, _)| n.as_str())
    }

    /// Link proxies: (name, from region, to region).
    fn links(&self) -> impl Iterator<Item = (&str, u8, u8)> + '_ {
        self.proxies
            .iter()
            .filter_map(|(n, p)| p.link.map(|(f, t)| (n.as_str(), f, t)))
    }

    /// What each proxy has carried so far, with its plan.
    pub fn traffic(&self) -> Vec<(PlannedProxy, proxy::ProxyStats)> {
        self.proxies
            .iter()
            .map(|(name, p)| (p.clone(), self.registry.stats(name).unwrap_or_default()))
            .collect()
    }

    /// Toxics on all proxies now, the links' own included.
    pub fn toxic_count(&self) -> usize {
        self.registry.toxic_count()
    }
}

/// The permanent toxics of the link from region `from` to `to`: its `[[links]]` entry's
/// delay (half the round trip each way) and rate; none for an unlisted pair.
fn link_toxics(scenario: &Scenario, from: u8, to: u8) -> Vec<Toxic> {
    let (a, b) = (region_name(scenario, from), region_name(scenario, to));
    let Some(link) = scenario.links.iter().find(|l| {
        (l.between[0] == a && l.between[1] == b) || (l.between[0] == b && l.between[1] == a)
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let half_ms = |d: Option<Duration>| d.map_or(0, |d| (d.as_millis() / 2) as u64);
    for stream in [Stream::Upstream, Stream::Downstream] {
        if link.rtt.is_some_and(|d| !d.is_zero()) {
            out.push(Toxic {
                name: format!("link-latency-{}", stream.as_str()),
                kind: Kind::Latency {
                    latency_ms: half_ms(link.rtt),
                    jitter_ms: half_ms(link.jitter),
                },
                stream,
                toxicity: 1.0,
            });
        }
        if let Some(rate_kbps) = link.rate_kbps {
            out.push(Toxic {
                name: format!("link-bandwidth-{}", stream.as_str()),
                kind: Kind::Bandwidth { rate_kbps },
                stream,
                toxicity: 1.0,
            });
        }
    }
    out
}

impl Drop for NetLayer {
    fn drop(&mut self) {
        self.registry.shutdown();
    }
}

/// A target's proxy: the layer and the proxy's name.
#[derive(Debug, Clone)]
pub struct ProxyRef {
    pub layer: Arc<NetLayer>,
    pub name: String,
}

impl PartialEq for ProxyRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer) && self.name == other.name
    }
}

impl Eq for ProxyRef {}

/// The toxics a fault puts on each proxy (both directions where the link is symmetric).
pub fn toxics_for(fault: &Fault, id: &str) -> Vec<Toxic> {
    let both = |kind: Kind| {
        [Stream::Upstream, Stream::Downstream]
            .into_iter()
            .map(|stream| Toxic {
                name: format!("{id}-{}", stream.as_str()),
                kind: kind.clone(),
                stream,
                toxicity: 1.0,
            })
            .collect::<Vec<_>>()
    };
    let half_ms = |d: Option<Duration>| d.map_or(0, |d| (d.as_millis() / 2) as u64);
    match fault.kind {
        FaultKind::NetLatency | FaultKind::RegionLatency => both(Kind::Latency {
            latency_ms: half_ms(fault.latency),
            jitter_ms: half_ms(fault.jitter),
        }),
        FaultKind::NetBandwidth => both(Kind::Bandwidth {
            rate_kbps: fault.rate_kbps.unwrap_or(1),
        }),
        FaultKind::NetBlackhole | FaultKind::RegionPartition | FaultKind::RegionBlackhole => {
            both(Kind::Blackhole)
        }
        FaultKind::NetReset => vec![Toxic {
            name: id.to_owned(),
            kind: Kind::ResetPeer { timeout_ms: 0 },
            stream: Stream::Downstream,
            toxicity: 1.0,
        }],
        FaultKind::NetHttpError => vec![Toxic {
            name: id.to_owned(),
            kind: Kind::HttpError {
                status: fault.status.unwrap_or(503),
                body: format!("faultline: {} ({id})\n", fault.kind.name()),
                count: 0,
            },
            stream: Stream::Downstream,
            toxicity: fault.ratio.unwrap_or(1.0) as f32,
        }],
        _ => Vec::new(),
    }
}

/// Injects `net.*` faults into the targets' proxies.
pub struct NetInjector;

struct NetHeal {
    toxics: Vec<ToxicGuard>,
    /// Proxies disabled by `net.refuse`, enabled again on heal.
    refused: Vec<ProxyRef>,
}

impl Heal for NetHeal {
    fn heal(&mut self) -> String {
        let removed = self.toxics.len();
        self.toxics.clear();
        let mut enabled = Vec::new();
        for p in self.refused.drain(..) {
            match p
                .layer
                .registry
                .update(&p.name, &serde_json::json!({"enabled": true}))
            {
                Ok(_) => enabled.push(p.name),
                Err(e) => enabled.push(format!("{} (not re-enabled: {e})", p.name)),
            }
        }
        let mut what = Vec::new();
        if removed > 0 {
            what.push(format!("removed {removed} toxics"));
        }
        if !enabled.is_empty() {
            what.push(format!("re-enabled {}", enabled.join(", ")));
        }
        what.join("; ")
    }
}

impl Injector for NetInjector {
    fn inject(&self, fault: &Fault, scope: &Scope<'_>) -> Injection {
        let targets = scope.targets;
        let id = fault
            .id
            .clone()
            .unwrap_or_else(|| fault.kind.name().replace('.', "_"));
        let mut heal = NetHeal {
            toxics: Vec::new(),
            refused: Vec::new(),
        };
        let mut done = Vec::new();
        for t in targets {
            if t.proxies.is_empty() {
                done.push(format!("{}: no fault proxy in front of it", t.name));
                continue;
            }
            for p in &t.proxies {
                if fault.kind == FaultKind::NetRefuse {
                    match p
                        .layer
                        .registry
                        .update(&p.name, &serde_json::json!({"enabled": false}))
                    {
                        Ok(_) => {
                            heal.refused.push(p.clone());
                            done.push(format!("{} ({}): refusing connections", t.name, p.name));
                        }
                        Err(e) => {
                            done.push(format!("{} ({}): cannot disable it: {e}", t.name, p.name))
                        }
                    }
                    continue;
                }
                let mut added = 0;
                for toxic in toxics_for(fault, &id) {
                    match p.layer.registry.inject(&p.name, toxic) {
                        Ok(g) => {
                            heal.toxics.push(g);
                            added += 1;
                        }
                        Err(e) => done.push(format!("{}: toxic refused: {e}", t.name)),
                    }
                }
                done.push(format!("{} ({}): {added} toxics", t.name, p.name));
            }
        }
        Injection {
            detail: format!("{} on {}", fault.kind.name(), done.join(", ")),
            fields: serde_json::Map::new(),
            guard: Some(HealGuard::new(heal)),
            replicas: Vec::new(),
        }
    }
}

/// Injects `region.*` faults into the link proxies between regions.
pub struct RegionInjector;

/// Whether the link `from` → `to` is one a region fault on `set` acts on.
fn link_hit(kind: FaultKind, set: &[u8], from: u8, to: u8) -> bool {
    let (f, t) = (set.contains(&from), set.contains(&to));
    match kind {
        // Cut between the set and the rest, both ways (a flap cuts the same links, on and
        // off).
        FaultKind::RegionPartition | FaultKind::RegionFlap => f != t,
        // Unreachable from outside: links into the set.
        FaultKind::RegionBlackhole => t && !f,
        // Every link of the set.
        FaultKind::RegionLatency => f || t,
        _ => false,
    }
}

impl Injector for RegionInjector {
    /// Injects `fault` into the link proxies (or, for `region.down`, the replicas) of its
    /// regions.
    fn inject(&self, fault: &Fault, scope: &Scope<'_>) -> Injection {
        let (scenario_regions, layer, replicas) = (scope.regions, scope.net, scope.replicas);
        if fault.kind == FaultKind::RegionDown {
            return region_down(fault, replicas);
        }
        let id = fault
            .id
            .clone()
            .unwrap_or_else(|| fault.kind.name().replace('.', "_"));
        let set: Vec<u8> = fault
            .regions
            .iter()
            .flatten()
            .filter_map(|r| scenario_regions.iter().position(|n| n == r))
            .filter_map(|i| u8::try_from(i + 1).ok())
            .collect();
        if fault.kind == FaultKind::RegionFlap {
            return flap(fault, &id, &set, layer);
        }
        let mut heal = NetHeal {
            toxics: Vec::new(),
            refused: Vec::new(),
        };
        let mut links = 0;
        if let Some(layer) = layer {
            for (name, from, to) in layer.links() {
                if !link_hit(fault.kind, &set, from, to) {
                    continue;
                }
                links += 1;
                for toxic in toxics_for(fault, &id) {
                    if let Ok(g) = layer.registry.inject(name, toxic) {
                        heal.toxics.push(g);
                    }
                }
            }
        }
        Injection {
            detail: format!(
                "{} on {} (regions {}): {links} link proxies",
                fault.kind.name(),
                id,
                fault.regions.as_deref().unwrap_or_default().join(", ")
            ),
            fields: serde_json::Map::new(),
            guard: Some(HealGuard::new(heal)),
            replicas: Vec::new(),
        }
    }
}

/// `region.down`: every replica of the regions is powered off (its supervisor will not
/// restart it) and killed; healing powers them on again (each starts at once, outside
/// `max_restarts`).
fn region_down(fault: &Fault, replicas: &[crate::supervisor::Replica]) -> Injection {
    let regions = fault.regions.as_deref().unwrap_or_default();
    let down: Vec<crate::supervisor::Replica> = replicas
        .iter()
        .filter(|r| regions.contains(&r.spec().region))
        .cloned()
        .collect();
    let mut killed = Vec::new();
    for r in &down {
        r.power_off();
        match r.pid() {
            Some(pid) => {
                let _ = super::signal(pid, nix::sys::signal::Signal::SIGKILL);
                killed.push(format!("{} (pid {pid})", r.spec().name));
            }
            None => killed.push(format!("{} (not running)", r.spec().name)),
        }
    }
    Injection {
        detail: format!(
            "region.down (regions {}): powered off and killed {}",
            regions.join(", "),
            if killed.is_empty() {
                "nothing".to_owned()
            } else {
                killed.join(", ")
            }
        ),
        fields: serde_json::Map::new(),
        replicas: down.iter().map(|r| r.spec().name.clone()).collect(),
        guard: Some(HealGuard::new(PowerOn(down))),
    }
}

struct PowerOn(Vec<crate::supervisor::Replica>);

impl Heal for PowerOn {
    fn heal(&mut self) -> String {
        for r in &self.0 {
            r.power_on();
        }
        format!("powered on {} replicas", self.0.len())
    }
}

/// `region.flap`: a thread cuts the chosen links (as a partition) for the first half of
/// every `period` and restores them for the second, until healed; healing stops it and
/// removes whatever cut is in place.
fn flap(fault: &Fault, id: &str, set: &[u8], layer: Option<&Arc<NetLayer>>) -> Injection {
    let period = fault.period.unwrap_or(Duration::from_secs(1));
    let half = period / 2;
    let links: Vec<String> = layer
        .map(|l| {
            l.links()
                .filter(|(_, from, to)| link_hit(FaultKind::RegionFlap, set, *from, *to))
                .map(|(n, _, _)| n.to_owned())
                .collect()
        })
        .unwrap_or_default();
    let count = links.len();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let cut = Toxic {
        name: format!("{id}-down"),
        kind: Kind::Blackhole,
        stream: Stream::Downstream,
        toxicity: 1.0,
    };
    let cut_up = Toxic {
        name: format!("{id}-down-up"),
        stream: Stream::Upstream,
        ..cut.clone()
    };
    let layer = layer.cloned();
    let worker = std::thread::Builder::new()
        .name("region-flap".into())
        .spawn(move || {
            let Some(layer) = layer else { return 0u32 };
            let mut cycles = 0u32;
            loop {
                let guards: Vec<ToxicGuard> = links
                    .iter()
                    .flat_map(|n| {
                        [cut.clone(), cut_up.clone()].map(|t| layer.registry.inject(n, t))
                    })
                    .filter_map(Result::ok)
                    .collect();
                cycles += 1;
                let healed = !matches!(
                    stopped.recv_timeout(half),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                drop(guards);
                if healed
                    || !matches!(
                        stopped.recv_timeout(period - half),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    )
                {
                    return cycles;
                }
            }
        });
    let detail = format!(
        "region.flap on {id} (regions {}): {count} link proxies, down {} / up {} per cycle",
        fault.regions.as_deref().unwrap_or_default().join(", "),
        humantime::format_duration(half),
        humantime::format_duration(period - half)
    );
    match worker {
        Ok(handle) => Injection {
            detail,
            fields: serde_json::Map::new(),
            guard: Some(HealGuard::new(FlapHeal {
                stop: Some(stop),
                handle: Some(handle),
            })),
            replicas: Vec::new(),
        },
        Err(e) => Injection {
            detail: format!("{detail}; cannot start the flapping thread: {e}"),
            fields: serde_json::Map::new(),
            guard: None,
            replicas: Vec::new(),
        },
    }
}

struct FlapHeal {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<u32>>,
}

impl Heal for FlapHeal {
    fn heal(&mut self) -> String {
        drop(self.stop.take());
        let cycles = self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0);
        format!("stopped flapping after {cycles} down cycles; links up")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tests::fault;
    use crate::faults::Target;
    use std::io::{Read, Write};

    use std::net::SocketAddr;

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    }

    /// An echo server on a thread; returns its address.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(addr: SocketAddr) -> std::io::Result<Duration> {
        let t0 = std::time::Instant::now();
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b)?;
        Ok(t0.elapsed())
    }

    #[test]
    fn region_faults_pick_their_links() {
        use FaultKind::{RegionBlackhole, RegionLatency, RegionPartition};
        // Regions 1, 2, 3; the fault names {2}.
        let set = [2];
        let hit = |k, f, t| link_hit(k, &set, f, t);
        assert!(hit(RegionPartition, 1, 2) && hit(RegionPartition, 2, 3));
        assert!(!hit(RegionPartition, 1, 3), "links not touching 2 are kept");
        assert!(
            hit(RegionBlackhole, 1, 2) && !hit(RegionBlackhole, 2, 1),
            "into 2 only"
        );
        assert!(hit(RegionLatency, 2, 1) && hit(RegionLatency, 3, 2) && !hit(RegionLatency, 1, 3));
    }

    #[test]
    fn latency_is_split_over_both_directions_and_http_error_takes_status_and_ratio() {
        let mut f = fault(FaultKind::NetLatency, 1, Some(2), None);
        f.latency = Some(Duration::from_millis(200));
        f.jitter = Some(Duration::from_millis(20));
        let t = toxics_for(&f, "slow");
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.kind
            == Kind::Latency {
                latency_ms: 100,
                jitter_ms: 10
            }));
        let mut f = fault(FaultKind::NetHttpError, 1, Some(2), None);
        f.status = Some(502);
        f.ratio = Some(0.25);
        let t = toxics_for(&f, "err");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].toxicity, 0.25);
        assert!(matches!(t[0].kind, Kind::HttpError { status: 502, .. }));
    }

    #[test]
    fn injected_net_faults_act_on_the_proxy_and_heal_on_drop() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let _in_runtime = rt.enter();
        let upstream = echo();
        let public = free_addr();
        let scenario = scenario::parse(
            "description = \"x\"\n[[components]]\nname = \"server\"\nkind = \"server\"\n[workload]\ntarget = \"server\"\nrate_per_s = 1\nduration = \"1s\"\nrequests = [{ kind = \"infer\", model = \"mlp\" }]\n",
            "t.toml",
        )
        .expect("scenario");
        let plan = [PlannedProxy {
            replica: "server/0".into(),
            listen: public,
            upstream,
            link: None,
        }];
        let layer = NetLayer::start(&scenario, &plan, 1).expect("net layer");
        let target = Target {
            name: "server/0".into(),
            addr: upstream,
            pid: None,
            proxies: layer
                .proxies_of("server/0")
                .map(|name| ProxyRef {
                    layer: layer.clone(),
                    name: name.to_owned(),
                })
                .collect(),
        };
        assert!(roundtrip(public).expect("through the proxy") < Duration::from_millis(200));

        let mut slow = fault(FaultKind::NetLatency, 1, Some(2), None);
        slow.latency = Some(Duration::from_millis(300));
        let inj = NetInjector.inject(&slow, &Scope::of(std::slice::from_ref(&target)));
        assert_eq!(layer.toxic_count(), 2, "{}", inj.detail);
        assert!(roundtrip(public).expect("slow") >= Duration::from_millis(300));
        drop(inj.guard);
        assert_eq!(layer.toxic_count(), 0, "healed on drop");

        let refuse = fault(FaultKind::NetRefuse, 1, Some(2), None);
        let inj = NetInjector.inject(&refuse, &Scope::of(std::slice::from_ref(&target)));
        assert!(roundtrip(public).is_err(), "refused: {}", inj.detail);
        let healed = inj.guard.expect("a guard").heal();
        assert!(healed.contains("re-enabled"), "{healed}");
        assert!(roundtrip(public).is_ok(), "accepting again");

        drop(target);
        drop(layer);
        assert!(
            std::net::TcpStream::connect_timeout(&public, Duration::from_secs(1)).is_err(),
            "the proxy closed with its layer"
        );
    }
}
