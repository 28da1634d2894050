//! Training-job analysis: turns the trainer's JSON-line events (see `stack/trainer`'s crate
//! docs for the contract) and the harness's fault instants into throughput, step-time
//! breakdown, loss curve, step accounting and recovery splits. Pure: no I/O, no clocks.
//!
//! Rules:
//! - the job's view is rank 0's (`step` events with `rank == 0`; ranks are re-assigned
//!   after a re-rendezvous, so this follows whichever process is rank 0 at the time);
//! - steady-state throughput = samples / wall time between consecutive rank-0 steps of
//!   the same membership epoch, excluding each epoch's first `warmup_steps` steps;
//! - steps are accounted when every step number from 0 to the last has completed at
//!   least once; recomputed steps = completions beyond the first of each number;
//! - recovery of an interrupting fault (process.kill, gpu.lost): fault instant →
//!   coordinator detection → new ring formed → restore done → first full step
//!   (`recovered`); metrics.md "Recovery time".

use std::collections::{BTreeMap, BTreeSet};

use report::{StepBreakdown, StragglerEffect, TrainingRecovery, TrainingResult};
use serde_json::Value;

/// Tolerance between the harness's and the trainer's wall clocks when matching events to
/// a fault instant.
pub const CLOCK_SLACK_S: f64 = 0.02;

/// Events of one process, in order.
#[derive(Debug, Clone)]
pub struct ProcessEvents {
    /// `component/replica`.
    pub name: String,
    pub events: Vec<Value>,
}

/// A fault the harness injected, at a unix time.
#[derive(Debug, Clone)]
pub struct InjectedFault {
    pub id: String,
    pub kind: String,
    pub at_unix_s: f64,
    pub healed_unix_s: Option<f64>,
}

/// Parses the JSON-line events out of a process log (other lines are skipped).
pub fn parse_log(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn kind(v: &Value) -> &str {
    v.get("event").and_then(Value::as_str).unwrap_or_default()
}

fn all<'a>(procs: &'a [ProcessEvents], event: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    procs
        .iter()
        .flat_map(|p| p.events.iter())
        .filter(move |v| kind(v) == event)
}

fn first_after<'a>(procs: &'a [ProcessEvents], event: &str, t: f64) -> Option<&'a Value> {
    procs
        .iter()
        .flat_map(|p| p.events.iter())
        .filter(|v| kind(v) == event && f(v, "t_unix_s").is_some_and(|x| x >= t))
        .min_by(|a, b| {
            f(a, "t_unix_s")
                .unwrap_or(0.0)
                .total_cmp(&f(b, "t_unix_s").unwrap_or(0.0))
        })
}

/// Rank-0 step events sorted by time.
fn rank0_steps(procs: &[ProcessEvents]) -> Vec<&Value> {
    let mut steps: Vec<&Value> = all(procs, "step")
        .filter(|v| u(v, "rank") == Some(0))
        .collect();
    steps.sort_by(|a, b| {
        f(a, "t_unix_s")
            .unwrap_or(0.0)
            .total_cmp(&f(b, "t_unix_s").unwrap_or(0.0))
    });
    steps
}

/// Samples per second in steady state (see module rules); None with too few steps.
pub fn steady_throughput(steps: &[&Value], warmup_steps: u32) -> Option<f64> {
    let mut samples = 0.0;
    let mut seconds = 0.0;
    let mut in_epoch = 0u32;
    let mut prev: Option<&Value> = None;
    for s in steps {
        let same_epoch = prev.is_some_and(|p| u(p, "epoch") == u(s, "epoch"));
        in_epoch = if same_epoch { in_epoch + 1 } else { 0 };
        if let (true, Some(p)) = (same_epoch && in_epoch > warmup_steps, prev) {
            if let (Some(t1), Some(t0), Some(n)) =
                (f(s, "t_unix_s"), f(p, "t_unix_s"), f(s, "samples"))
            {
                samples += n;
                seconds += t1 - t0;
            }
        }
        prev = Some(s);
    }
    (seconds > 0.0).then(|| samples / seconds)
}

fn breakdown(steps: &[&Value], warmup_steps: u32) -> StepBreakdown {
    let mut epoch_pos: BTreeMap<u64, u32> = BTreeMap::new();
    let steady: Vec<&&Value> = steps
        .iter()
        .filter(|s| {
            let pos = epoch_pos.entry(u(s, "epoch").unwrap_or(0)).or_insert(0);
            *pos += 1;
            *pos > warmup_steps
        })
        .collect();
    let mean = |key: &str| {
        let xs: Vec<f64> = steady.iter().filter_map(|s| f(s, key)).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    StepBreakdown {
        steps: steady.len() as u64,
        step_s: mean("step_s"),
        compute_s: mean("compute_s"),
        comm_s: mean("comm_s"),
        wait_s: mean("wait_s"),
        data_s: mean("data_s"),
        update_s: mean("update_s"),
        throttle_s: mean("throttle_s"),
    }
}

/// Recovery splits of one interrupting fault.
pub fn recovery(procs: &[ProcessEvents], fault: &InjectedFault) -> TrainingRecovery {
    let at = fault.at_unix_s;
    let detected = all(procs, "fault")
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("worker_lost"))
        .filter_map(|v| f(v, "detected_unix_s").or_else(|| f(v, "t_unix_s")))
        // Allow for the two processes' wall clocks disagreeing by a few milliseconds.
        .filter(|&d| d >= at - CLOCK_SLACK_S)
        .min_by(f64::total_cmp);
    // A worker's view of the new ring (the coordinator's own event has no rank).
    let ring = all(procs, "rendezvous")
        .filter(|v| v.get("rank").is_some())
        .filter_map(|v| f(v, "t_unix_s"))
        .filter(|&t| t >= at)
        .min_by(f64::total_cmp);
    let restore = first_after(procs, "restore", at);
    let restore_done = restore.and_then(|v| f(v, "t_unix_s"));
    let recovered = first_after(procs, "recovered", at);
    let recovered_t = recovered.and_then(|v| f(v, "t_unix_s"));
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (a - b).max(0.0));
    TrainingRecovery {
        fault_id: fault.id.clone(),
        kind: fault.kind.clone(),
        detection_s: diff(detected, Some(at)),
        rendezvous_s: diff(ring, detected.or(Some(at))),
        restore_s: restore.and_then(|v| f(v, "restore_s")),
        catch_up_s: diff(recovered_t, restore_done),
        total_s: diff(recovered_t, Some(at)),
        lost_steps: restore.and_then(|v| u(v, "lost_steps")),
        restored_step: restore.and_then(|v| u(v, "step")),
        world_after: recovered.and_then(|v| u(v, "world")),
    }
}

/// Rank 0's step time while a throttle was on, against an equally long span before it.
pub fn straggler(steps: &[&Value], fault: &InjectedFault) -> StragglerEffect {
    let (at, until) = (
        fault.at_unix_s,
        fault.healed_unix_s.unwrap_or(f64::INFINITY),
    );
    let span = if until.is_finite() { until - at } else { 1.0 };
    let mean_in = |from: f64, to: f64, key: &str| {
        let xs: Vec<f64> = steps
            .iter()
            .filter(|s| f(s, "t_unix_s").is_some_and(|t| t >= from && t < to))
            .filter_map(|s| f(s, key))
            .collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let before = mean_in(at - span, at, "step_s");
    let during = mean_in(at, until, "step_s");
    StragglerEffect {
        fault_id: fault.id.clone(),
        step_s_before: before,
        step_s_during: during,
        slowdown: before
            .zip(during)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, d)| d / b),
        wait_s_during: mean_in(at, until, "wait_s"),
    }
}

/// Whether a fault kind interrupts the ring (and so has a recovery).
pub fn interrupts(kind: &str) -> bool {
    matches!(kind, "process.kill" | "gpu.lost" | "process.pause")
}

/// The whole analysis of one training job (one variant).
pub fn analyze(
    variant: &str,
    workers: u32,
    procs: &[ProcessEvents],
    faults: &[InjectedFault],
    warmup_steps: u32,
) -> TrainingResult {
    let steps = rank0_steps(procs);
    let distinct: BTreeSet<u64> = steps.iter().filter_map(|s| u(s, "step")).collect();
    let completed = distinct.len() as u64;
    let last = distinct.iter().next_back().copied();
    let contiguous = last.is_none_or(|l| completed == l + 1);
    let target_steps = all(procs, "start").filter_map(|v| u(v, "steps")).max();
    let finished = all(procs, "job_done").next().and_then(|v| u(v, "step"));
    let losses: Vec<f64> = steps.iter().filter_map(|s| f(s, "loss")).collect();
    let k = (losses.len() / 10).clamp(1, 5);
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let loss_first = mean(&losses[..k.min(losses.len())]);
    let loss_last = mean(&losses[losses.len().saturating_sub(k)..]);
    // Corrupted steps, from every rank's step events: caught (skipped) or silent.
    let corrupted: Vec<&Value> = all(procs, "step")
        .filter(|v| v.get("ecc").is_some_and(|e| !e.is_null()))
        .collect();
    let caught = corrupted
        .iter()
        .filter(|v| v.get("skipped").and_then(Value::as_bool) == Some(true))
        .count() as u64;
    let exits = all(procs, "exit")
        .map(|v| {
            format!(
                "rank {} code {} ({}) at step {}",
                u(v, "rank").map_or("?".into(), |r| r.to_string()),
                u(v, "code").map_or("?".into(), |c| c.to_string()),
                v.get("reason").and_then(Value::as_str).unwrap_or("?"),
                u(v, "step").map_or("?".into(), |s| s.to_string()),
            )
        })
        .collect();
    TrainingResult {
        variant: variant.to_owned(),
        workers,
        threads_per_worker: all(procs, "start")
            .filter_map(|v| u(v, "threads"))
            .max()
            .map(|t| t as u32),
        gradient_transport: {
            let mut seen: Vec<&str> = all(procs, "comm")
                .filter_map(|v| v.get("transport").and_then(Value::as_str))
                .collect();
            seen.sort_unstable();
            seen.dedup();
            (!seen.is_empty()).then(|| seen.join(", "))
        },
        target_steps,
        finished_step: finished,
        steps_completed: completed,
        steps_recomputed: (steps.len() as u64).saturating_sub(completed),
        steps_skipped: steps
            .iter()
            .filter(|s| s.get("skipped").and_then(Value::as_bool) == Some(true))
            .count() as u64,
        steps_accounted: contiguous && finished.is_none_or(|f| last.is_some_and(|l| l + 1 >= f)),
        checkpoints_written: all(procs, "checkpoint")
            .filter(|v| v.get("error").is_none())
            .count() as u64,
        checkpoint_errors: all(procs, "checkpoint")
            .filter(|v| v.get("error").is_some())
            .count() as u64,
        restores: all(procs, "restore")
            .filter(|v| u(v, "rank") == Some(0))
            .count() as u64,
        warmup_steps,
        throughput_samples_per_s: steady_throughput(&steps, warmup_steps),
        breakdown: breakdown(&steps, warmup_steps),
        loss_first,
        loss_last,
        ecc_injected: corrupted.len() as u64,
        ecc_detected: caught,
        ecc_silent: corrupted.len() as u64 - caught,
        stragglers: faults
            .iter()
            .filter(|fl| fl.kind == "gpu.throttle")
            .map(|fl| straggler(&steps, fl))
            .collect(),
        published: all(procs, "publish").find_map(|v| {
            v.get("server_model")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
        exits,
        recoveries: faults
            .iter()
            .filter(|fl| interrupts(&fl.kind))
            .map(|fl| recovery(procs, fl))
            .collect(),
        loss_curve: steps
            .iter()
            .filter_map(|s| Some((u(s, "step")? as f64, f(s, "loss")?)))
            .collect(),
        throughput_curve: steps
            .iter()
            .filter_map(|s| Some((f(s, "t_unix_s")?, f(s, "samples")? / f(s, "step_s")?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(rank: u64, step: u64, epoch: u64, t: f64) -> Value {
        json!({"event":"step","rank":rank,"step":step,"epoch":epoch,"t_unix_s":t,
               "samples":100.0,"step_s":0.1,"compute_s":0.06,"comm_s":0.03,"wait_s":0.01,
               "data_s":0.0,"update_s":0.0,"throttle_s":0.0,"loss":2.0 - step as f64 * 0.01,"world":2})
    }

    /// Two workers; rank 0 is killed at t = 10.5 after step 9; the survivor restores step
    /// 5 (lost 4 steps) and finishes 0..20.
    fn killed_run() -> Vec<ProcessEvents> {
        let mut a: Vec<Value> = (0..10).map(|s| step(0, s, 1, s as f64 + 1.0)).collect();
        a.insert(
            0,
            json!({"event":"start","steps":20,"threads":1,"t_unix_s":0.5}),
        );
        a.insert(
            1,
            json!({"event":"comm","rank":0,"epoch":1,"world":2,"transport":"shm","t_unix_s":0.6}),
        );
        let mut b = vec![
            json!({"event":"rendezvous","rank":0,"world":1,"epoch":2,"t_unix_s":11.5}),
            json!({"event":"comm","rank":0,"epoch":2,"world":1,"transport":"none","t_unix_s":11.6}),
            json!({"event":"restore","rank":0,"step":5,"lost_steps":4,"restore_s":0.25,"t_unix_s":11.8}),
            json!({"event":"recovered","rank":0,"world":1,"step":5,"t_unix_s":12.0}),
        ];
        b.extend((5..20).map(|s| step(0, s, 2, 12.0 + (s - 5) as f64)));
        b.push(json!({"event":"exit","rank":0,"code":0,"reason":"done","step":20,"t_unix_s":27.0}));
        let r = vec![
            json!({"event":"fault","kind":"worker_lost","detected_unix_s":11.0,"t_unix_s":11.0}),
            json!({"event":"rendezvous","epoch":2,"world":1,"pids":[2],"t_unix_s":11.4}),
            json!({"event":"job_done","step":20,"t_unix_s":27.0}),
        ];
        vec![
            ProcessEvents {
                name: "worker/0".into(),
                events: a,
            },
            ProcessEvents {
                name: "worker/1".into(),
                events: b,
            },
            ProcessEvents {
                name: "rendezvous/0".into(),
                events: r,
            },
        ]
    }

    #[test]
    fn recovery_splits_add_up_from_fault_to_first_full_step() {
        let procs = killed_run();
        let fault = InjectedFault {
            id: "kill".into(),
            kind: "process.kill".into(),
            at_unix_s: 10.5,
            healed_unix_s: None,
        };
        let r = recovery(&procs, &fault);
        assert_eq!(r.detection_s, Some(0.5));
        assert_eq!(r.rendezvous_s, Some(0.5));
        assert_eq!(r.restore_s, Some(0.25));
        assert!((r.catch_up_s.expect("catch-up") - 0.2).abs() < 1e-9);
        assert_eq!(r.total_s, Some(1.5));
        assert_eq!(r.lost_steps, Some(4));
        assert_eq!(r.world_after, Some(1));
    }

    #[test]
    fn steps_are_accounted_with_recomputed_ones_counted() {
        let procs = killed_run();
        let t = analyze("default", 2, &procs, &[], 2);
        assert_eq!(t.steps_completed, 20);
        assert_eq!(t.steps_recomputed, 5, "steps 5..9 ran twice");
        assert!(t.steps_accounted);
        assert_eq!(t.finished_step, Some(20));
        assert!(t.loss_last < t.loss_first);
        assert_eq!(t.threads_per_worker, Some(1));
        assert_eq!(t.gradient_transport.as_deref(), Some("none, shm"));
    }

    #[test]
    fn a_gap_in_the_steps_is_not_accounted() {
        let mut procs = killed_run();
        procs[1]
            .events
            .retain(|v| u(v, "step") != Some(12) || kind(v) != "step");
        assert!(!analyze("default", 2, &procs, &[], 2).steps_accounted);
    }

    #[test]
    fn a_throttle_shows_as_slower_rank0_steps_and_silent_ecc_is_counted() {
        let mut procs = killed_run();
        // Steps at t = 5..10 take 0.3 s instead of 0.1 s; step 3 is corrupted silently and
        // step 4 caught.
        for v in &mut procs[0].events {
            let t = f(v, "t_unix_s").unwrap_or(0.0);
            if kind(v) == "step" && (5.0..10.0).contains(&t) {
                v["step_s"] = json!(0.3);
            }
            if u(v, "step") == Some(3) {
                v["ecc"] = json!("bitflip");
            }
            if u(v, "step") == Some(4) {
                v["ecc"] = json!("nan");
                v["skipped"] = json!(true);
            }
        }
        let throttle = InjectedFault {
            id: "slow".into(),
            kind: "gpu.throttle".into(),
            at_unix_s: 5.0,
            healed_unix_s: Some(10.0),
        };
        let t = analyze("default", 2, &procs, &[throttle], 2);
        let s = &t.stragglers[0];
        assert!((s.slowdown.expect("slowdown") - 3.0).abs() < 1e-9, "{s:?}");
        assert_eq!((t.ecc_injected, t.ecc_detected, t.ecc_silent), (2, 1, 1));
    }

    #[test]
    fn steady_throughput_skips_each_epochs_warmup_and_the_gap_between_epochs() {
        let procs = killed_run();
        let steps = rank0_steps(&procs);
        // 1 step/s, 100 samples per step, in both epochs; the 2 s outage is not counted.
        let thr = steady_throughput(&steps, 2).expect("enough steps");
        assert!((thr - 100.0).abs() < 1e-9, "{thr}");
    }
}
