//! Training-job analysis: turns the trainer's JSON-line events (typed by
//! `wire::trainer::EventLine`, shared with the trainer; `stack/trainer`'s crate docs say when
//! each is written) and the harness's fault instants into throughput, step-time breakdown,
//! loss curve, step accounting and recovery splits. Pure: no I/O, no clocks.
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
use wire::trainer::{Checkpoint, Event, EventLine, FaultEvent, Rendezvous, Step};

/// Tolerance between the harness's and the trainer's wall clocks when matching events to
/// a fault instant.
pub const CLOCK_SLACK_S: f64 = 0.02;

/// Events of one process, in order.
#[derive(Debug, Clone)]
pub struct ProcessEvents {
    /// `component/replica`.
    pub name: String,
    pub events: Vec<EventLine>,
}

/// A fault the harness injected, at a unix time.
#[derive(Debug, Clone)]
pub struct InjectedFault {
    pub id: String,
    pub kind: String,
    pub at_unix_s: f64,
    pub healed_unix_s: Option<f64>,
}

/// Parses the trainer's event lines out of a process log; other lines are skipped (see
/// [`parse_log_reporting`] for the `{…}` lines that are not events).
pub fn parse_log(text: &str) -> Vec<EventLine> {
    parse_log_reporting(text).0
}

/// Parses the trainer's event lines out of a process log, and returns each line that looks
/// like one (it starts with `{`) but is not a [`wire::trainer::EventLine`], with serde's
/// reason: a trainer and harness that disagree on the contract, whose figures would go
/// missing.
pub fn parse_log_reporting(text: &str) -> (Vec<EventLine>, Vec<String>) {
    let mut events = Vec::new();
    let mut unreadable = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        match serde_json::from_str::<EventLine>(line) {
            Ok(e) => events.push(e),
            Err(e) => unreadable.push(format!("{e}: {line}")),
        }
    }
    (events, unreadable)
}

/// An event payload and the instant its line was written.
#[derive(Debug)]
pub struct Timed<'a, T> {
    pub t_unix_s: f64,
    pub event: &'a T,
}

impl<T> Clone for Timed<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Timed<'_, T> {}

/// Every event of every process that `pick` selects, with its time.
fn each<'a, T: 'a>(
    procs: &'a [ProcessEvents],
    pick: impl Fn(&'a Event) -> Option<&'a T> + 'a,
) -> impl Iterator<Item = Timed<'a, T>> + 'a {
    procs
        .iter()
        .flat_map(|p| p.events.iter())
        .filter_map(move |l| {
            pick(&l.event).map(|event| Timed {
                t_unix_s: l.t_unix_s,
                event,
            })
        })
}

/// The earliest of `events` written at or after `t`.
fn first_after<'a, T>(events: impl Iterator<Item = Timed<'a, T>>, t: f64) -> Option<Timed<'a, T>> {
    events
        .filter(|e| e.t_unix_s >= t)
        .min_by(|a, b| a.t_unix_s.total_cmp(&b.t_unix_s))
}

fn steps(procs: &[ProcessEvents]) -> impl Iterator<Item = Timed<'_, Step>> {
    each(procs, |e| match e {
        Event::Step(s) => Some(s),
        _ => None,
    })
}

/// Rank-0 step events sorted by time.
fn rank0_steps(procs: &[ProcessEvents]) -> Vec<Timed<'_, Step>> {
    let mut steps: Vec<_> = steps(procs).filter(|s| s.event.rank == 0).collect();
    steps.sort_by(|a, b| a.t_unix_s.total_cmp(&b.t_unix_s));
    steps
}

/// Samples per second in steady state (see module rules); None with too few steps.
pub fn steady_throughput(steps: &[Timed<'_, Step>], warmup_steps: u32) -> Option<f64> {
    let mut samples = 0.0;
    let mut seconds = 0.0;
    let mut in_epoch = 0u32;
    let mut prev: Option<Timed<'_, Step>> = None;
    for s in steps {
        let same_epoch = prev.is_some_and(|p| p.event.epoch == s.event.epoch);
        in_epoch = if same_epoch { in_epoch + 1 } else { 0 };
        if let (true, Some(p)) = (same_epoch && in_epoch > warmup_steps, prev) {
            samples += s.event.samples as f64;
            seconds += s.t_unix_s - p.t_unix_s;
        }
        prev = Some(*s);
    }
    (seconds > 0.0).then(|| samples / seconds)
}

fn breakdown(steps: &[Timed<'_, Step>], warmup_steps: u32) -> StepBreakdown {
    let mut epoch_pos: BTreeMap<u64, u32> = BTreeMap::new();
    let steady: Vec<&Step> = steps
        .iter()
        .filter(|s| {
            let pos = epoch_pos.entry(s.event.epoch).or_insert(0);
            *pos += 1;
            *pos > warmup_steps
        })
        .map(|s| s.event)
        .collect();
    let mean = |x: &dyn Fn(&Step) -> Option<f64>| {
        let xs: Vec<f64> = steady.iter().filter_map(|s| x(s)).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    StepBreakdown {
        steps: steady.len() as u64,
        step_s: mean(&|s| Some(s.step_s)),
        compute_s: mean(&|s| s.detail.as_ref().map(|d| d.compute_s)),
        comm_s: mean(&|s| s.detail.as_ref().map(|d| d.comm_s)),
        wait_s: mean(&|s| s.detail.as_ref().map(|d| d.wait_s)),
        data_s: mean(&|s| s.detail.as_ref().map(|d| d.data_s)),
        update_s: mean(&|s| s.detail.as_ref().map(|d| d.update_s)),
        throttle_s: mean(&|s| s.detail.as_ref().map(|d| d.throttle_s)),
    }
}

/// Recovery splits of one interrupting fault.
pub fn recovery(procs: &[ProcessEvents], fault: &InjectedFault) -> TrainingRecovery {
    let at = fault.at_unix_s;
    let detected = each(procs, |e| match e {
        Event::Fault(FaultEvent::WorkerLost {
            detected_unix_s, ..
        }) => Some(detected_unix_s),
        _ => None,
    })
    .map(|d| *d.event)
    // Allow for the two processes' wall clocks disagreeing by a few milliseconds.
    .filter(|&d| d >= at - CLOCK_SLACK_S)
    .min_by(f64::total_cmp);
    // A worker's view of the new ring (the coordinator's own event has no rank).
    let ring = each(procs, |e| match e {
        Event::Rendezvous(r @ Rendezvous::Worker { .. }) => Some(r),
        _ => None,
    })
    .map(|r| r.t_unix_s)
    .filter(|&t| t >= at)
    .min_by(f64::total_cmp);
    let restore = first_after(
        each(procs, |e| match e {
            Event::Restore(r) => Some(r),
            _ => None,
        }),
        at,
    );
    let restore_done = restore.map(|r| r.t_unix_s);
    let recovered = first_after(
        each(procs, |e| match e {
            Event::Recovered(r) => Some(r),
            _ => None,
        }),
        at,
    );
    let recovered_t = recovered.map(|r| r.t_unix_s);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (a - b).max(0.0));
    TrainingRecovery {
        fault_id: fault.id.clone(),
        kind: fault.kind.clone(),
        detection_s: diff(detected, Some(at)),
        rendezvous_s: diff(ring, detected.or(Some(at))),
        restore_s: restore.map(|r| r.event.restore_s),
        catch_up_s: diff(recovered_t, restore_done),
        total_s: diff(recovered_t, Some(at)),
        lost_steps: restore.map(|r| r.event.lost_steps),
        restored_step: restore.map(|r| r.event.step),
        world_after: recovered.map(|r| r.event.world as u64),
    }
}

/// Rank 0's step time while a throttle was on, against an equally long span before it.
pub fn straggler(steps: &[Timed<'_, Step>], fault: &InjectedFault) -> StragglerEffect {
    let (at, until) = (
        fault.at_unix_s,
        fault.healed_unix_s.unwrap_or(f64::INFINITY),
    );
    let span = if until.is_finite() { until - at } else { 1.0 };
    let mean_in = |from: f64, to: f64, x: &dyn Fn(&Step) -> Option<f64>| {
        let xs: Vec<f64> = steps
            .iter()
            .filter(|s| s.t_unix_s >= from && s.t_unix_s < to)
            .filter_map(|s| x(s.event))
            .collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let step_s = |s: &Step| Some(s.step_s);
    let before = mean_in(at - span, at, &step_s);
    let during = mean_in(at, until, &step_s);
    StragglerEffect {
        fault_id: fault.id.clone(),
        step_s_before: before,
        step_s_during: during,
        slowdown: before
            .zip(during)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, d)| d / b),
        wait_s_during: mean_in(at, until, &|s| s.detail.as_ref().map(|d| d.wait_s)),
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
    let distinct: BTreeSet<u64> = steps.iter().map(|s| s.event.step).collect();
    let completed = distinct.len() as u64;
    let last = distinct.iter().next_back().copied();
    let contiguous = last.is_none_or(|l| completed == l + 1);
    let starts = || {
        each(procs, |e| match e {
            Event::Start(s) => Some(s),
            _ => None,
        })
    };
    let target_steps = starts().map(|s| s.event.steps).max();
    let finished = each(procs, |e| match e {
        Event::JobDone(d) => Some(d),
        _ => None,
    })
    .next()
    .map(|d| d.event.step);
    let losses: Vec<f64> = steps.iter().filter_map(|s| s.event.loss).collect();
    let k = (losses.len() / 10).clamp(1, 5);
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let loss_first = mean(&losses[..k.min(losses.len())]);
    let loss_last = mean(&losses[losses.len().saturating_sub(k)..]);
    // Corrupted steps, from every rank's step events: caught (skipped) or silent.
    let corrupted: Vec<&Step> = self::steps(procs)
        .map(|s| s.event)
        .filter(|s| s.detail.as_ref().is_some_and(|d| d.ecc.is_some()))
        .collect();
    let skipped = |s: &Step| s.detail.as_ref().is_some_and(|d| d.skipped);
    let caught = corrupted.iter().filter(|s| skipped(s)).count() as u64;
    let exits = each(procs, |e| match e {
        Event::Exit(x) => Some(x),
        _ => None,
    })
    .map(|x| {
        let x = x.event;
        format!(
            "rank {} code {} ({}) at step {}",
            x.rank.map_or("?".into(), |r| r.to_string()),
            x.code,
            x.reason,
            x.step.map_or("?".into(), |s| s.to_string()),
        )
    })
    .collect();
    let checkpoints: Vec<&Checkpoint> = each(procs, |e| match e {
        Event::Checkpoint(c) => Some(c),
        _ => None,
    })
    .map(|c| c.event)
    .collect();
    TrainingResult {
        variant: variant.to_owned(),
        workers,
        threads_per_worker: starts()
            .filter_map(|s| s.event.threads)
            .max()
            .map(|t| t as u32),
        gradient_transport: {
            let mut seen: Vec<&str> = each(procs, |e| match e {
                Event::Comm(c) => Some(c),
                _ => None,
            })
            .map(|c| c.event.transport.as_str())
            .collect();
            seen.sort_unstable();
            seen.dedup();
            (!seen.is_empty()).then(|| seen.join(", "))
        },
        target_steps,
        finished_step: finished,
        steps_completed: completed,
        steps_recomputed: (steps.len() as u64).saturating_sub(completed),
        steps_skipped: steps.iter().filter(|s| skipped(s.event)).count() as u64,
        steps_accounted: contiguous && finished.is_none_or(|f| last.is_some_and(|l| l + 1 >= f)),
        checkpoints_written: checkpoints
            .iter()
            .filter(|c| matches!(c, Checkpoint::Written { .. }))
            .count() as u64,
        checkpoint_errors: checkpoints
            .iter()
            .filter(|c| matches!(c, Checkpoint::Failed { .. }))
            .count() as u64,
        restores: each(procs, |e| match e {
            Event::Restore(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.event.rank == 0)
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
        published: each(procs, |e| match e {
            Event::Publish(p) => p.server_model.as_ref(),
            _ => None,
        })
        .next()
        .map(|m| m.event.clone()),
        exits,
        recoveries: faults
            .iter()
            .filter(|fl| interrupts(&fl.kind))
            .map(|fl| recovery(procs, fl))
            .collect(),
        loss_curve: steps
            .iter()
            .filter_map(|s| Some((s.event.step as f64, s.event.loss?)))
            .collect(),
        throughput_curve: steps
            .iter()
            .map(|s| (s.t_unix_s, s.event.samples as f64 / s.event.step_s))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use wire::trainer::EccMode;

    /// A test line: `fields` plus `t_unix_s`, read as the trainer's contract.
    fn line(t: f64, mut fields: Value) -> EventLine {
        fields["t_unix_s"] = json!(t);
        serde_json::from_value(fields.clone()).unwrap_or_else(|e| panic!("{e}: {fields}"))
    }

    fn step(rank: u64, step: u64, epoch: u64, t: f64) -> EventLine {
        line(
            t,
            json!({"event":"step","rank":rank,"step":step,"epoch":epoch,"samples":100,
               "step_s":0.1,"compute_s":0.06,"comm_s":0.03,"wait_s":0.01,"data_s":0.0,
               "update_s":0.0,"throttle_s":0.0,"skipped":false,"ecc":null,"micro_batches":1,
               "loss":2.0 - step as f64 * 0.01,"world":2}),
        )
    }

    /// Two workers; rank 0 is killed at t = 10.5 after step 9; the survivor restores step
    /// 5 (lost 4 steps) and finishes 0..20.
    fn killed_run() -> Vec<ProcessEvents> {
        let mut a: Vec<EventLine> = (0..10).map(|s| step(0, s, 1, s as f64 + 1.0)).collect();
        a.insert(
            0,
            line(
                0.5,
                json!({"event":"start","rank":0,"pid":1,"model":{"kind":"mlp"},"seed":0,
                       "steps":20,"batch_per_worker":50,"threads":1}),
            ),
        );
        a.insert(
            1,
            line(
                0.6,
                json!({"event":"comm","rank":0,"epoch":1,"world":2,"transport":"shm","fallback":null}),
            ),
        );
        let mut b = vec![
            line(
                11.5,
                json!({"event":"rendezvous","rank":0,"world":1,"epoch":2,"detected_unix_s":11.0,"rendezvous_s":1.0}),
            ),
            line(
                11.6,
                json!({"event":"comm","rank":0,"epoch":2,"world":1,"transport":"none","fallback":null}),
            ),
            line(
                11.8,
                json!({"event":"restore","rank":0,"epoch":2,"step":5,"from_step":9,"lost_steps":4,
                       "source":"/run/checkpoints/step-00000005","fell_back":false,"skipped":[],
                       "restore_s":0.25}),
            ),
            line(
                12.0,
                json!({"event":"recovered","rank":0,"epoch":2,"world":1,"step":5,
                       "detected_unix_s":11.0,"since_interrupt_s":1.5,"since_detect_s":1.0}),
            ),
        ];
        b.extend((5..20).map(|s| step(0, s, 2, 12.0 + (s - 5) as f64)));
        b.push(line(
            27.0,
            json!({"event":"exit","rank":0,"code":0,"reason":"done","step":20}),
        ));
        let r = vec![
            line(
                11.0,
                json!({"event":"fault","kind":"worker_lost","worker":0,"rank":0,"epoch":1,
                       "reason":"connection closed","detected_unix_s":11.0}),
            ),
            line(
                11.4,
                json!({"event":"rendezvous","epoch":2,"world":1,"pids":[2],"detected_unix_s":11.0}),
            ),
            line(27.0, json!({"event":"job_done","epoch":2,"step":20})),
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

    /// The step payload of a line, to edit in a test.
    fn step_mut(l: &mut EventLine) -> Option<&mut Step> {
        match &mut l.event {
            Event::Step(s) => Some(s),
            _ => None,
        }
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
        assert_eq!(t.target_steps, Some(20));
        assert_eq!(t.exits, vec!["rank 0 code 0 (done) at step 20".to_string()]);
        let compute_s = t
            .breakdown
            .compute_s
            .expect("the workers' breakdown is read");
        assert!((compute_s - 0.06).abs() < 1e-9, "{compute_s}");
    }

    #[test]
    fn a_gap_in_the_steps_is_not_accounted() {
        let mut procs = killed_run();
        procs[1]
            .events
            .retain(|l| !matches!(&l.event, Event::Step(s) if s.step == 12));
        assert!(!analyze("default", 2, &procs, &[], 2).steps_accounted);
    }

    #[test]
    fn a_throttle_shows_as_slower_rank0_steps_and_silent_ecc_is_counted() {
        let mut procs = killed_run();
        // Steps at t = 5..10 take 0.3 s instead of 0.1 s; step 3 is corrupted silently and
        // step 4 caught.
        for l in &mut procs[0].events {
            let t = l.t_unix_s;
            let Some(s) = step_mut(l) else { continue };
            if (5.0..10.0).contains(&t) {
                s.step_s = 0.3;
            }
            let d = s.detail.as_mut().expect("a worker's step");
            match s.step {
                3 => d.ecc = Some(EccMode::Bitflip),
                4 => (d.ecc, d.skipped) = (Some(EccMode::Nan), true),
                _ => {}
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
        assert_eq!(t.steps_skipped, 1);
    }

    #[test]
    fn steady_throughput_skips_each_epochs_warmup_and_the_gap_between_epochs() {
        let procs = killed_run();
        let steps = rank0_steps(&procs);
        // 1 step/s, 100 samples per step, in both epochs; the 2 s outage is not counted.
        let thr = steady_throughput(&steps, 2).expect("enough steps");
        assert!((thr - 100.0).abs() < 1e-9, "{thr}");
    }

    #[test]
    fn a_log_yields_its_event_lines_and_names_the_ones_that_break_the_contract() {
        let log = "2025-08-07T10:00:00Z  INFO trainer: starting\n\
            {\"event\":\"job_done\",\"epoch\":1,\"step\":8,\"t_unix_s\":3.5}\n\
            {\"event\":\"step\",\"rank\":0,\"t_unix_s\":4.0}\n";
        let (events, unreadable) = parse_log_reporting(log);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0].event, Event::JobDone(ref d) if d.step == 8));
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        assert!(unreadable[0].contains("missing field"), "{unreadable:?}");
        assert_eq!(parse_log(log), events);
    }
}
