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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proxy::{Kind, ProxySpec, Registry, Stream, Toxic, ToxicGuard};
use scenario::{Fault, FaultKind};

use super::{Heal, HealGuard, Injection, Injector, Target};

/// The proxies in front of the replicas `net.*` faults target.
#[derive(Debug)]
pub struct NetLayer {
    registry: Arc<Registry>,
    /// Proxy name by replica name (`server/0` → `server.0`).
    by_replica: BTreeMap<String, String>,
}

impl NetLayer {
    /// Starts one proxy per `(replica name, public address, own address)`. Must be called
    /// inside the runtime. Fails when a proxied address cannot be bound.
    pub fn start(
        replicas: &[(String, SocketAddr, SocketAddr)],
        seed: u64,
    ) -> Result<Arc<NetLayer>, String> {
        let registry = Registry::new(seed);
        let mut by_replica = BTreeMap::new();
        for (replica, public, own) in replicas {
            let name = replica.replace('/', ".");
            registry
                .create(ProxySpec {
                    name: name.clone(),
                    listen: public.to_string(),
                    upstream: own.to_string(),
                    enabled: true,
                    seed: None,
                })
                .map_err(|e| format!("cannot start the fault proxy in front of {replica}: {e}"))?;
            by_replica.insert(replica.clone(), name);
        }
        Ok(Arc::new(NetLayer {
            registry,
            by_replica,
        }))
    }

    /// The proxy in front of `replica`, if it has one.
    pub fn proxy_of(&self, replica: &str) -> Option<&str> {
        self.by_replica.get(replica).map(String::as_str)
    }

    /// Toxics on all proxies now (0 once every fault has healed).
    pub fn toxic_count(&self) -> usize {
        self.registry.toxic_count()
    }
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
        FaultKind::NetLatency => both(Kind::Latency {
            latency_ms: half_ms(fault.latency),
            jitter_ms: half_ms(fault.jitter),
        }),
        FaultKind::NetBandwidth => both(Kind::Bandwidth {
            rate_kbps: fault.rate_kbps.unwrap_or(1),
        }),
        FaultKind::NetBlackhole => both(Kind::Blackhole),
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
    fn inject(&self, fault: &Fault, targets: &[Target]) -> Injection {
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
            let Some(p) = &t.proxy else {
                done.push(format!("{}: no fault proxy in front of it", t.name));
                continue;
            };
            if fault.kind == FaultKind::NetRefuse {
                match p
                    .layer
                    .registry
                    .update(&p.name, &serde_json::json!({"enabled": false}))
                {
                    Ok(_) => {
                        heal.refused.push(p.clone());
                        done.push(format!("{}: refusing connections", t.name));
                    }
                    Err(e) => done.push(format!("{}: cannot disable its proxy: {e}", t.name)),
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
            done.push(format!("{}: {added} toxics", t.name));
        }
        Injection {
            detail: format!("{} on {}", fault.kind.name(), done.join(", ")),
            fields: serde_json::Map::new(),
            guard: Some(HealGuard::new(heal)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tests::fault;
    use std::io::{Read, Write};

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
        let layer =
            NetLayer::start(&[("server/0".into(), public, upstream)], 1).expect("net layer");
        let target = Target {
            name: "server/0".into(),
            addr: upstream,
            pid: None,
            proxy: Some(ProxyRef {
                layer: layer.clone(),
                name: layer.proxy_of("server/0").expect("a proxy").to_owned(),
            }),
        };
        assert!(roundtrip(public).expect("through the proxy") < Duration::from_millis(200));

        let mut slow = fault(FaultKind::NetLatency, 1, Some(2), None);
        slow.latency = Some(Duration::from_millis(300));
        let inj = NetInjector.inject(&slow, std::slice::from_ref(&target));
        assert_eq!(layer.toxic_count(), 2, "{}", inj.detail);
        assert!(roundtrip(public).expect("slow") >= Duration::from_millis(300));
        drop(inj.guard);
        assert_eq!(layer.toxic_count(), 0, "healed on drop");

        let refuse = fault(FaultKind::NetRefuse, 1, Some(2), None);
        let inj = NetInjector.inject(&refuse, std::slice::from_ref(&target));
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
