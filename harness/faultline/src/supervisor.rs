//! Runs stack components as real OS processes and owns them until they are stopped.
//!
//! Each replica has one task that spawns it, probes its readiness, records every exit and
//! restarts it by policy. Ownership guarantees no orphan on any exit path:
//! - graceful: [`Supervisor::shutdown`] resumes, SIGTERMs and then SIGKILLs every replica;
//! - panic or an aborted runner: the tasks are dropped with their `Child` (`kill_on_drop`);
//! - the runner itself killed: children carry `PR_SET_PDEATHSIG = SIGKILL` (see [`spawn`]).
//!
//! Invariant that `PR_SET_PDEATHSIG` relies on: children are spawned from runtime worker
//! threads (never `spawn_blocking`), which live as long as the runner.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use scenario::{ComponentKind, ProbeKind, Readiness, Restart, RestartPolicy};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use crate::faults::signal;

/// Everything needed to start one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// `component/replica`, e.g. `server/0`.
    pub name: String,
    pub component: String,
    pub kind: ComponentKind,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Where the process listens.
    pub addr: SocketAddr,
    /// Where clients and peers reach it: `addr`, or the fault proxy's address in front of
    /// it when the scenario has `net.*` faults on its component.
    pub public: SocketAddr,
    /// The name of its region (`[[regions]]`; "default" without regions).
    pub region: String,
    pub restart: Restart,
    pub readiness: Readiness,
    /// How readiness is probed.
    pub probe: Probe,
    /// Combined stdout/stderr, appended across restarts.
    pub log_path: PathBuf,
    /// The region's network namespace, with `[network] mode = "netns"`.
    pub netns: Option<crate::netns::RegionNet>,
}

/// How a replica's readiness is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET http://ADDR{path}` answers 2xx.
    Http(String),
    /// A TCP connection to ADDR is accepted (for non-HTTP services).
    Tcp,
}

impl Probe {
    /// The probe a component kind needs (its `probe` in `scenario::KINDS`).
    pub fn for_kind(kind: ComponentKind, readiness: &Readiness) -> Probe {
        let probe = match readiness.probe {
            Some(scenario::ProbeMode::Http) => ProbeKind::Http,
            Some(scenario::ProbeMode::Tcp) => ProbeKind::Tcp,
            None => kind.spec().probe,
        };
        match probe {
            ProbeKind::Tcp => Probe::Tcp,
            ProbeKind::Http => Probe::Http(readiness.path.clone()),
        }
    }
}

/// One start of a replica, on the run clock (seconds since the runner started).
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    pub pid: u32,
    pub started_s: f64,
    pub ready_s: Option<f64>,
    pub ended_s: Option<f64>,
    /// For people: "exit 3", "signal 9 (SIGKILL)", "stopped by runner: …".
    pub how: Option<String>,
    /// For verdicts: how it ended (None while it runs).
    pub end: Option<End>,
}

/// How a process life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It exited on its own with this code.
    Code(i32),
    /// A signal ended it (not one the runner sent to stop it).
    Signal(i32),
    /// The runner stopped it (end of the run, Ctrl-C).
    Runner,
    /// Waiting for it failed.
    Unknown,
}

impl End {
    fn of(status: &std::io::Result<ExitStatus>) -> End {
        match status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => End::Code(code),
                (None, Some(sig)) => End::Signal(sig),
                (None, None) => End::Unknown,
            },
            Err(_) => End::Unknown,
        }
    }
}

/// Where a replica stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Starting,
    Ready,
    /// Exited and not restarted (policy or restart budget).
    Down(String),
    /// Could not be started or never became ready.
    Failed(String),
}

#[derive(Debug)]
struct Shared {
    spec: ReplicaSpec,
    lives: Mutex<Vec<Life>>,
    health: watch::Sender<Health>,
    /// Powered off by `region.down`: an exit is not restarted until power returns.
    power_off: watch::Sender<bool>,
    /// Restarts at power-on, which `max_restarts` does not count.
    power_restarts: std::sync::atomic::AtomicU32,
}

/// A cheap handle to one replica's record.
#[derive(Debug, Clone)]
pub struct Replica(Arc<Shared>);

impl Replica {
    pub fn spec(&self) -> &ReplicaSpec {
        &self.0.spec
    }

    /// Every start so far.
    pub fn lives(&self) -> Vec<Life> {
        self.0.lives.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The pid of the running process, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.lives()
            .last()
            .filter(|l| l.ended_s.is_none())
            .map(|l| l.pid)
    }

    pub fn health(&self) -> Health {
        self.0.health.borrow().clone()
    }

    /// Restarts made so far.
    /// Restarts charged to the restart policy (power-on restarts after `region.down`
    /// are not).
    pub fn restarts(&self) -> u32 {
        u32::try_from(self.lives().len().saturating_sub(1))
            .unwrap_or(u32::MAX)
            .saturating_sub(
                self.0
                    .power_restarts
                    .load(std::sync::atomic::Ordering::SeqCst),
            )
    }

    /// Holds the replica down (a power loss): once its process exits, it is not restarted
    /// until [`Replica::power_on`].
    pub fn power_off(&self) {
        self.0.power_off.send_replace(true);
    }

    /// Lets a powered-off replica start again (at once, outside `max_restarts`).
    pub fn power_on(&self) {
        self.0.power_off.send_replace(false);
    }

    fn update_life(&self, f: impl FnOnce(&mut Life)) {
        if let Ok(mut lives) = self.0.lives.lock() {
            if let Some(last) = lives.last_mut() {
                f(last);
            }
        }
    }
}

/// Owns every replica's task; see the module docs for the no-orphan guarantees.
#[derive(Debug)]
pub struct Supervisor {
    replicas: Vec<Replica>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    /// The fault proxies in front of replicas (`net.*` faults, links between regions);
    /// closed with the stack.
    net: Option<std::sync::Arc<crate::faults::net::NetLayer>>,
    /// The scenario's region names, in `[[regions]]` order (for `region.*` faults).
    regions: Vec<String>,
}

/// Why the stack did not come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{name} did not become ready: {reason} (see its log {log})")]
    NotReady {
        name: String,
        reason: String,
        log: String,
    },
    #[error("interrupted while waiting for the stack to become ready")]
    Interrupted,
}

impl Supervisor {
    /// Starts every replica at once; they become ready in the background.
    pub fn start(specs: Vec<ReplicaSpec>, events: &EventLog, grace: Duration) -> Self {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .unwrap_or_default();
        let replicas: Vec<Replica> = specs
            .into_iter()
            .map(|spec| {
                let (health, _) = watch::channel(Health::Starting);
                Replica(Arc::new(Shared {
                    spec,
                    lives: Mutex::new(Vec::new()),
                    health,
                    power_off: watch::channel(false).0,
                    power_restarts: std::sync::atomic::AtomicU32::new(0),
                }))
            })
            .collect();
        for replica in &replicas {
            tasks.spawn(supervise(
                replica.clone(),
                events.clone(),
                stop.clone(),
                client.clone(),
                grace,
            ));
        }
        Supervisor {
            replicas,
            tasks,
            stop,
            net: None,
            regions: Vec::new(),
        }
    }

    /// Hands the stack the fault proxies in front of its replicas: `net.*` faults act on
    /// them, and they close when the stack is shut down or dropped.
    pub fn set_net(&mut self, net: std::sync::Arc<crate::faults::net::NetLayer>) {
        self.net = Some(net);
    }

    /// Names the scenario's regions (`[[regions]]` order), for `region.*` faults.
    pub fn set_regions(&mut self, regions: Vec<String>) {
        self.regions = regions;
    }

    pub fn region_names(&self) -> &[String] {
        &self.regions
    }

    /// The fault proxies in front of replicas, if the scenario has `net.*` faults.
    pub fn net(&self) -> Option<&std::sync::Arc<crate::faults::net::NetLayer>> {
        self.net.as_ref()
    }

    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// Replicas named by a target (`component`, all of them, or `component/i`), by the
    /// one matching rule, [`crate::faults::names`].
    pub fn targets(&self, target: &str) -> Vec<Replica> {
        self.replicas
            .iter()
            .filter(|r| crate::faults::names(target, &r.spec().component, &r.spec().name))
            .cloned()
            .collect()
    }

    /// Waits until every replica is ready, or one fails, or `cancel` fires.
    pub async fn wait_ready(&self, cancel: &CancellationToken) -> Result<(), StartError> {
        for replica in &self.replicas {
            let mut rx = replica.0.health.subscribe();
            loop {
                let health = rx.borrow_and_update().clone();
                match health {
                    Health::Ready => break,
                    Health::Starting => {}
                    Health::Down(reason) | Health::Failed(reason) => {
                        return Err(StartError::NotReady {
                            name: replica.spec().name.clone(),
                            reason,
                            log: replica.spec().log_path.display().to_string(),
                        })
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err(StartError::Interrupted);
                    },
                    () = cancel.cancelled() => return Err(StartError::Interrupted),
                }
            }
        }
        Ok(())
    }

    /// Stops every replica (SIGCONT, SIGTERM, then SIGKILL after the grace period) and
    /// waits for all of them to be reaped.
    pub async fn shutdown(mut self) -> Vec<Replica> {
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a replica supervisor task failed");
            }
        }
        std::mem::take(&mut self.replicas)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Aborting the tasks drops their `Child`ren, which SIGKILLs them.
        self.stop.cancel();
        self.tasks.abort_all();
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        (None, None) => "unknown".to_owned(),
    }
}

/// Spawns the replica's process with its log attached and a parent-death signal.
pub fn spawn(spec: &ReplicaSpec) -> std::io::Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(&spec.log_path)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        // Own process group: a terminal's Ctrl-C reaches the runner only, which then stops
        // the stack in order (drain first) instead of every process dying at once.
        .process_group(0);
    crate::pdeathsig::set_on(&mut cmd);
    if let Some(ns) = &spec.netns {
        crate::netns::enter_on(&mut cmd, ns.fd());
    }
    cmd.spawn()
}

async fn probe_ready(client: &reqwest::Client, spec: &ReplicaSpec) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + spec.readiness.timeout;
    loop {
        let last = match &spec.probe {
            Probe::Http(path) => {
                let url = format!("http://{}{path}", spec.addr);
                match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => return Ok(()),
                    Ok(resp) => format!("{url} answered {}", resp.status()),
                    Err(e) => format!("{url}: {e}"),
                }
            }
            Probe::Tcp => match tokio::net::TcpStream::connect(spec.addr).await {
                Ok(_) => return Ok(()),
                Err(e) => format!("tcp connect {}: {e}", spec.addr),
            },
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not ready after {}: {last}",
                humantime::format_duration(spec.readiness.timeout)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn should_restart(policy: RestartPolicy, status: ExitStatus) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !status.success(),
        RestartPolicy::Always => true,
    }
}

async fn supervise(
    replica: Replica,
    events: EventLog,
    stop: CancellationToken,
    client: reqwest::Client,
    grace: Duration,
) {
    let spec = replica.spec().clone();
    loop {
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(e) => {
                let reason = format!("cannot start {}: {e}", spec.program.display());
                events.emit(
                    "process.spawn_failed",
                    json!({"name": spec.name, "error": reason}),
                );
                replica.0.health.send_replace(Health::Failed(reason));
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        let started_s = events.emit(
            "process.start",
            json!({"name": spec.name, "pid": pid, "addr": spec.addr.to_string(),
                   "program": spec.program.display().to_string(), "args": spec.args}),
        );
        if let Ok(mut lives) = replica.0.lives.lock() {
            lives.push(Life {
                pid,
                started_s,
                ready_s: None,
                ended_s: None,
                how: None,
                end: None,
            });
        }
        replica.0.health.send_replace(Health::Starting);

        let probe = probe_ready(&client, &spec);
        tokio::pin!(probe);
        let mut probing = true;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                result = &mut probe, if probing => {
                    probing = false;
                    match result {
                        Ok(()) => {
                            let t = events.emit("process.ready", json!({"name": spec.name, "pid": pid}));
                            replica.update_life(|l| l.ready_s = Some(t));
                            replica.0.health.send_replace(Health::Ready);
                        }
                        Err(reason) => {
                            events.emit("process.not_ready", json!({"name": spec.name, "pid": pid, "reason": reason}));
                            replica.0.health.send_replace(Health::Failed(reason));
                        }
                    }
                }
                () = stop.cancelled() => {
                    let how = stop_gracefully(&mut child, pid, grace).await;
                    let t = events.emit("process.stop", json!({"name": spec.name, "pid": pid, "how": how}));
                    replica.update_life(|l| {
                        l.ended_s = Some(t);
                        l.how = Some(how);
                        l.end = Some(End::Runner);
                    });
                    return;
                }
            }
        };
        let how = match &status {
            Ok(s) => describe(*s),
            Err(e) => format!("wait failed: {e}"),
        };
        let t = events.emit(
            "process.exit",
            json!({"name": spec.name, "pid": pid, "how": how}),
        );
        replica.update_life(|l| {
            l.ended_s = Some(t);
            l.how = Some(how.clone());
            l.end = Some(End::of(&status));
        });
        if *replica.0.power_off.borrow() {
            // region.down: the replica stays down until power returns, then starts again
            // whatever its restart policy, and it is not counted against max_restarts.
            replica
                .0
                .health
                .send_replace(Health::Down("powered off (region.down)".into()));
            let mut power = replica.0.power_off.subscribe();
            tokio::select! {
                r = power.wait_for(|off| !*off) => {
                    if r.is_err() {
                        return;
                    }
                }
                () = stop.cancelled() => return,
            }
            replica
                .0
                .power_restarts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            replica.0.health.send_replace(Health::Starting);
            events.emit("process.power_on", json!({"name": spec.name}));
            continue;
        }
        let restart = status.is_ok_and(|s| should_restart(spec.restart.policy, s))
            && replica.restarts() < spec.restart.max_restarts;
        if !restart {
            replica
                .0
                .health
                .send_replace(Health::Down(format!("exited ({how}), not restarted")));
            stop.cancelled().await;
            return;
        }
        replica.0.health.send_replace(Health::Starting);
        events.emit(
            "process.restart_scheduled",
            json!({"name": spec.name, "backoff_ms": spec.restart.backoff.as_millis() as u64,
                   "restarts_so_far": replica.restarts()}),
        );
        tokio::select! {
            () = tokio::time::sleep(spec.restart.backoff) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// SIGCONT (it may be paused), SIGTERM, wait up to `grace`, then SIGKILL.
async fn stop_gracefully(child: &mut Child, pid: u32, grace: Duration) -> String {
    let _ = signal(pid, Signal::SIGCONT);
    let _ = signal(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => format!("stopped by runner: SIGTERM, then {}", describe(status)),
        Ok(Err(e)) => format!("stopped by runner: wait failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            format!(
                "stopped by runner: SIGKILL after {} grace",
                humantime::format_duration(grace)
            )
        }
    }
}
