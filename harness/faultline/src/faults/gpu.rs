//! `gpu.*` faults: injected into trainer workers' simulated devices through their control
//! endpoint (`POST /faults`), healed with `DELETE /faults/{kind}` (see `stack/trainer`'s
//! crate docs and `docs/trainer.md`).
//!
//! The requests are made with a few lines of blocking HTTP/1.1 over `std::net` rather than
//! reqwest: healing must work from a guard's `Drop`, where an async client cannot be
//! awaited and `reqwest::blocking` panics inside a tokio runtime. The control endpoint is
//! ours, on loopback, and answers one request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use scenario::{Fault, FaultKind};
use serde_json::json;
use wire::trainer::FaultRequest;

use super::{Heal, HealGuard, Injection, Injector, Scope};

/// Connect, read and write limit of one control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// The `POST /faults` body of a `gpu.*` fault (`None` for other kinds).
pub fn fault_request(fault: &Fault) -> Option<FaultRequest> {
    Some(match fault.kind {
        FaultKind::GpuLost => FaultRequest::Lost,
        FaultKind::GpuEcc => FaultRequest::Ecc {
            mode: fault.mode.unwrap_or_default(),
            steps: fault.steps.unwrap_or(1),
        },
        FaultKind::GpuThrottle => FaultRequest::Throttle {
            factor: fault.factor.unwrap_or(1.0),
        },
        FaultKind::GpuOom => FaultRequest::Oom {
            limit_bytes: fault.limit_bytes.unwrap_or(0),
            backoff: fault.backoff.unwrap_or(false),
        },
        FaultKind::ProcessKill
        | FaultKind::ProcessPause
        | FaultKind::LoadSpike
        | FaultKind::NetLatency
        | FaultKind::NetBandwidth
        | FaultKind::NetBlackhole
        | FaultKind::NetReset
        | FaultKind::NetRefuse
        | FaultKind::NetHttpError
        | FaultKind::RegionPartition
        | FaultKind::RegionBlackhole
        | FaultKind::RegionLatency
        | FaultKind::RegionFlap
        | FaultKind::RegionDown => return None,
    })
}

/// One request to a worker's control endpoint; returns the HTTP status.
fn control_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<u16, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, CONTROL_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Heals a `gpu.*` fault on every worker it was injected into (best effort: a worker that
/// is gone has no fault left to heal).
struct GpuHeal {
    kind: FaultKind,
    addrs: Vec<SocketAddr>,
}

impl Heal for GpuHeal {
    fn heal(&mut self) -> String {
        let path = format!("/faults/{}", self.kind.name());
        let answers: Vec<String> = std::mem::take(&mut self.addrs)
            .into_iter()
            .map(|addr| match control_request(addr, "DELETE", &path, None) {
                Ok(status) => format!("{addr}: HTTP {status}"),
                Err(e) => format!("{addr}: {e} (worker gone?)"),
            })
            .collect();
        format!("DELETE {path} → {}", answers.join("; "))
    }
}

/// Injects `gpu.lost`, `gpu.ecc`, `gpu.throttle` and `gpu.oom` through each target's
/// control endpoint; the guard deletes the fault again.
pub struct GpuInjector;

impl Injector for GpuInjector {
    fn inject(&self, fault: &Fault, scope: &Scope<'_>) -> Injection {
        let targets = scope.targets;
        let Some(request) = fault_request(fault) else {
            return Injection {
                detail: format!("{} is not a gpu fault", fault.kind.name()),
                ..Injection::default()
            };
        };
        let body = json!(request);
        let text = serde_json::to_string(&request).unwrap_or_default();
        let results: Vec<String> = targets
            .iter()
            .map(
                |t| match control_request(t.addr, "POST", "/faults", Some(&text)) {
                    Ok(s) if (200..300).contains(&s) => format!("{}: injected", t.addr),
                    Ok(s) => format!("{}: HTTP {s}", t.addr),
                    Err(e) => format!("{}: {e}", t.addr),
                },
            )
            .collect();
        let mut fields = serde_json::Map::new();
        fields.insert("body".into(), body.clone());
        fields.insert("results".into(), json!(results));
        Injection {
            detail: format!("{body} → {}", results.join("; ")),
            fields,
            guard: Some(HealGuard::new(GpuHeal {
                kind: fault.kind,
                addrs: targets.iter().map(|t| t.addr).collect(),
            })),
            replicas: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::tests::fault;
    use crate::faults::Target;

    #[test]
    fn gpu_fault_requests_follow_the_scenario_with_the_documented_defaults() {
        let mut f = fault(FaultKind::GpuEcc, 1, None, None);
        f.mode = Some(scenario::EccMode::Bitflip);
        assert_eq!(
            fault_request(&f),
            Some(FaultRequest::Ecc {
                mode: scenario::EccMode::Bitflip,
                steps: 1
            })
        );
        let mut f = fault(FaultKind::GpuOom, 1, Some(2), None);
        f.limit_bytes = Some(1 << 20);
        assert_eq!(
            json!(fault_request(&f)),
            json!({"kind": "gpu.oom", "limit_bytes": 1048576, "backoff": false})
        );
        assert_eq!(
            fault_request(&fault(FaultKind::GpuLost, 1, None, None)),
            Some(FaultRequest::Lost)
        );
        assert_eq!(
            fault_request(&fault(FaultKind::ProcessKill, 1, None, None)),
            None
        );
    }

    /// A one-connection-at-a-time HTTP server that records request heads and bodies.
    fn recorder(answers: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..answers {
                let (mut s, _) = l.accept().expect("accept");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let n = s.read(&mut chunk).expect("read");
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            seen.push(format!("{} {body}", head.lines().next().unwrap_or("")));
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .expect("answer");
            }
            seen
        });
        (addr, h)
    }

    #[test]
    fn injection_posts_the_body_and_a_dropped_guard_deletes_the_fault() {
        let (addr, server) = recorder(2);
        let target = Target {
            name: "worker/0".into(),
            addr,
            pid: None,
            proxies: Vec::new(),
        };
        let mut f = fault(FaultKind::GpuThrottle, 1, Some(2), None);
        f.factor = Some(3.0);
        let inj = GpuInjector.inject(&f, &Scope::of(&[target]));
        assert_eq!(inj.fields["results"], json!([format!("{addr}: injected")]));
        drop(inj.guard);
        let seen = server.join().expect("server thread");
        assert_eq!(
            seen,
            [
                r#"POST /faults HTTP/1.1 {"kind":"gpu.throttle","factor":3.0}"#.to_owned(),
                "DELETE /faults/gpu.throttle HTTP/1.1 ".to_owned(),
            ]
        );
    }

    #[test]
    fn a_worker_that_is_gone_is_reported_not_fatal() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port nobody listens on after this");
        let mut heal = GpuHeal {
            kind: FaultKind::GpuLost,
            addrs: vec![addr],
        };
        assert!(heal.heal().contains("worker gone?"));
    }
}
