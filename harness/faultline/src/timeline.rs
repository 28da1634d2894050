//! The fault timeline playing beside the workload: sleeps until each planned [`Action`],
//! injects through the fault's [`Injector`] and heals through its guard.
//!
//! The task owns every guard. [`Timeline::finish`] heals what is still injected and returns
//! what happened; dropping a [`Timeline`] (an early return, a panic, the runner's task
//! aborted) aborts the task, which drops its guards, which heal. A fault without an
//! `until` that left a guard (gpu.ecc, gpu.lost) stays injected until the run ends.
//!
//! [`Action`]: crate::faults::Action
//! [`Injector`]: crate::faults::Injector

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use scenario::{Fault, FaultKind, Role};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::events::{round_us, EventLog};
use crate::faults::{self, HealGuard, Step};
use crate::supervisor::{Replica, Supervisor};

/// A fault as it happened, on the run clock.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultEvent {
    pub id: String,
    pub kind: FaultKind,
    pub target: Option<String>,
    pub injected_s: Option<f64>,
    pub healed_s: Option<f64>,
    pub detail: String,
    /// `until - at`: how long the scenario meant it to last (None: until the run ends).
    pub planned_s: Option<f64>,
    /// The run ended before the fault's `until`: it lasted less than planned.
    pub cut_short: bool,
    /// Replicas a fault without a `target` acted on (`region.down`).
    pub replicas: Vec<String>,
}

/// The fault timeline of one stack lifetime, from `t0` (scenario t = 0).
pub struct Timeline {
    pub t0: tokio::time::Instant,
    cancel: CancellationToken,
    task: AbortOnDropHandle<Vec<FaultEvent>>,
}

impl Timeline {
    /// Starts playing `faults` against the stack's replicas from now.
    pub fn start(faults: Vec<Fault>, stack: &Supervisor, events: &EventLog) -> Self {
        Self::start_at(faults, stack, events, tokio::time::Instant::now())
    }

    /// Starts playing `faults` with scenario t = 0 at `t0` (the load's t0, so a fault at
    /// 3 s lands at the load's 3 s; a fault whose time has passed is injected at once).
    pub fn start_at(
        faults: Vec<Fault>,
        stack: &Supervisor,
        events: &EventLog,
        t0: tokio::time::Instant,
    ) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(play(
            faults,
            stack.replicas().to_vec(),
            stack.net().cloned(),
            stack.region_names().to_vec(),
            t0,
            events.clone(),
            cancel.clone(),
        ));
        Timeline {
            t0,
            cancel,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Stops the timeline (healing what is still injected) and returns what happened.
    pub async fn finish(self) -> Result<Vec<FaultEvent>, String> {
        self.cancel.cancel();
        self.task
            .await
            .map_err(|e| format!("fault timeline task failed: {e}"))
    }
}

/// Runs a blocking fault operation (an injection or a heal) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("fault operation failed: {e}"))
}

/// Plays the timeline until done or cancelled; heals whatever is still injected before
/// returning (and, through the guards' `Drop`, if the task is aborted).
async fn play(
    faults: Vec<Fault>,
    replicas: Vec<Replica>,
    net: Option<std::sync::Arc<faults::net::NetLayer>>,
    regions: Vec<String>,
    t0: tokio::time::Instant,
    events: EventLog,
    cancel: CancellationToken,
) -> Vec<FaultEvent> {
    let mut records: Vec<FaultEvent> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| FaultEvent {
            id: f.id_or_default(i),
            kind: f.kind,
            target: f.target.clone(),
            injected_s: None,
            healed_s: None,
            detail: String::new(),
            planned_s: f.until.map(|u| u.saturating_sub(f.at).as_secs_f64()),
            cut_short: false,
            replicas: Vec::new(),
        })
        .collect();
    let mut guards: BTreeMap<usize, HealGuard> = BTreeMap::new();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    // Time the timeline has waited for training steps (`after_step`): later actions shift.
    let mut shift = Duration::ZERO;
    for action in faults::plan(&faults) {
        tokio::select! {
            () = tokio::time::sleep_until(t0 + action.at + shift) => {}
            () = cancel.cancelled() => break,
        }
        let fault = &faults[action.fault];
        if let (Some(step), Step::Inject) = (fault.after_step, action.step) {
            let waiting = tokio::time::Instant::now();
            tokio::select! {
                () = wait_for_step(&client, &replicas, step) => {}
                () = cancel.cancelled() => break,
            }
            shift += waiting.elapsed();
        }
        let rec = &mut records[action.fault];
        match action.step {
            Step::Inject => {
                // The fault instant is taken before injecting: the stack may react (and log
                // its detection) before the harness has written its own event.
                let instant = events.clock().now_s();
                let targets = faults::targets(&replicas, fault.target.as_deref(), net.as_ref());
                let injector = faults::injector(fault.kind.domain());
                let f = fault.clone();
                let (all, layer, names) = (replicas.clone(), net.clone(), regions.clone());
                let injection = match blocking(move || {
                    injector.inject(
                        &f,
                        &faults::Scope {
                            targets: &targets,
                            replicas: &all,
                            net: layer.as_ref(),
                            regions: &names,
                        },
                    )
                })
                .await
                {
                    Ok(i) => i,
                    Err(e) => {
                        rec.detail = e;
                        continue;
                    }
                };
                rec.detail = injection.detail;
                rec.replicas = injection.replicas;
                rec.injected_s = Some(instant);
                let mut event = json!({
                    "id": rec.id,
                    "instant_run_s": round_us(instant),
                    "kind": fault.kind.name(),
                    "target": fault.target,
                });
                if let Some(obj) = event.as_object_mut() {
                    obj.extend(injection.fields);
                }
                events.emit("fault.inject", event);
                if let Some(g) = injection.guard {
                    guards.insert(action.fault, g);
                }
            }
            Step::Heal => heal(&mut guards, action.fault, rec, &events, None).await,
        }
    }
    // Faults without an `until` that left a guard stay injected until the run ends.
    if !guards.is_empty() {
        cancel.cancelled().await;
    }
    // What is still injected now is healed because the run ended; a fault whose `until`
    // had not come yet was cut short.
    for (index, rec) in records.iter_mut().enumerate() {
        // Guards left, and faults with an `until` not reached (a load spike has no guard).
        let open = guards.contains_key(&index)
            || (rec.planned_s.is_some() && rec.injected_s.is_some() && rec.healed_s.is_none());
        if !open {
            continue;
        }
        if let (Some(planned), Some(injected)) = (rec.planned_s, rec.injected_s) {
            // Heals run on a blocking thread: allow them 100 ms of slack.
            let lasted = events.clock().now_s() - injected;
            rec.cut_short = lasted + 0.1 < planned;
        }
        heal(&mut guards, index, rec, &events, Some("run ended")).await;
    }
    records
}

/// Heals fault `index` (if it left a guard) and records the heal.
async fn heal(
    guards: &mut BTreeMap<usize, HealGuard>,
    index: usize,
    rec: &mut FaultEvent,
    events: &EventLog,
    reason: Option<&str>,
) {
    let healed = match guards.remove(&index) {
        Some(g) => blocking(move || g.heal()).await.unwrap_or_else(|e| e),
        None => String::new(),
    };
    if rec.healed_s.is_some() {
        return;
    }
    let mut event = json!({"id": rec.id, "kind": rec.kind.name()});
    if let Some(obj) = event.as_object_mut() {
        if !healed.is_empty() {
            obj.insert("healed".into(), json!(healed));
        }
        if let Some(r) = reason {
            obj.insert("reason".into(), json!(r));
        }
    }
    rec.healed_s = Some(events.emit("fault.heal", event));
}

/// Returns once some training replica's `GET /status` ([`wire::trainer::Status`]) reports
/// `step >= step` (polled every 20 ms; replicas not up yet or gone are skipped).
async fn wait_for_step(client: &reqwest::Client, replicas: &[Replica], step: u64) {
    let addrs: Vec<SocketAddr> = replicas
        .iter()
        .filter(|r| r.spec().kind.spec().role == Role::Train)
        .map(|r| r.spec().addr)
        .collect();
    loop {
        for addr in &addrs {
            let status = client
                .get(format!("http://{addr}/status"))
                .timeout(Duration::from_millis(250))
                .send()
                .await;
            if let Ok(r) = status {
                let body = r.json::<wire::trainer::Status>().await;
                if body.is_ok_and(|s| s.progress.step >= step) {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
