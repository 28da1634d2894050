//! The charts and figures of training jobs, derived from [`TrainingResult`]s: throughput
//! over scenario time, loss per step, weak scaling against the ideal (with `E(N)` figures),
//! one recovery timeline per interrupting fault, and straggler slowdowns.
//!
//! The runner fills `RunMetrics::training`; [`charts_and_figures`] turns it into generic
//! [`Chart`]s (rendered by [`crate::plots`]) and [`Figure`]s.

use crate::model::{Chart, Figure, Series, TrainingResult};

/// The charts and figures of `jobs` (one per variant), in report order.
pub fn charts_and_figures(jobs: &[TrainingResult]) -> (Vec<Chart>, Vec<Figure>) {
    let mut charts = Vec::new();
    let mut figures = Vec::new();
    let series = |f: &dyn Fn(&TrainingResult) -> Vec<(f64, f64)>| -> Vec<Series> {
        jobs.iter()
            .map(|j| Series {
                name: if jobs.len() > 1 {
                    format!("{} ({} workers)", j.variant, j.workers)
                } else {
                    format!("{} workers", j.workers)
                },
                points: f(j),
            })
            .collect()
    };
    charts.push(Chart {
        id: "training-throughput".into(),
        title: "Training throughput per step (samples/s, all ranks)".into(),
        x_label: "scenario time (s)".into(),
        y_label: "samples per second".into(),
        time_axis: true,
        series: series(&|j| j.throughput_curve.clone()),
    });
    charts.push(Chart {
        id: "loss".into(),
        title: "Training loss (rank 0)".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        time_axis: false,
        series: {
            let mut all = series(&|j| j.loss_curve.clone());
            all.extend(fault_marks(jobs));
            all
        },
    });
    // Scaling: E(N) = thr(N) / (N × thr(1)), metrics.md, all from this run.
    let base = jobs
        .iter()
        .find(|j| j.workers == 1)
        .and_then(|j| j.throughput_samples_per_s);
    let mut measured: Vec<(f64, f64)> = jobs
        .iter()
        .filter_map(|j| Some((f64::from(j.workers), j.throughput_samples_per_s?)))
        .collect();
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    measured.dedup_by(|a, b| a.0 == b.0);
    if let (Some(base), true) = (base, measured.len() > 1) {
        charts.push(Chart {
            id: "scaling".into(),
            title: "Weak scaling: steady-state throughput vs workers".into(),
            x_label: "workers".into(),
            y_label: "samples per second".into(),
            time_axis: false,
            series: vec![
                Series {
                    name: "measured".into(),
                    points: measured.clone(),
                },
                Series {
                    name: "ideal (N × one worker)".into(),
                    points: measured.iter().map(|&(n, _)| (n, n * base)).collect(),
                },
            ],
        });
        for &(n, thr) in measured.iter().filter(|p| p.0 > 1.0) {
            figures.push(Figure {
                name: format!("scaling_efficiency_n{n}"),
                value: thr / (n * base),
                unit: "ratio".into(),
                definition:
                    "metrics.md Training: E(N) = throughput(N) / (N × throughput(1)), same run"
                        .into(),
            });
        }
    }
    // Recovery timeline of each interrupting fault: its parts laid end to end on the
    // seconds since the fault (detection, re-rendezvous, restore, catch-up).
    for j in jobs {
        for x in &j.recoveries {
            let mut at = 0.0;
            // One row per part, top to bottom in the order they happen (y = 4 … 1).
            let series = ["detection", "re-rendezvous", "restore", "catch-up"]
                .iter()
                .zip([x.detection_s, x.rendezvous_s, x.restore_s, x.catch_up_s])
                .zip([4.0, 3.0, 2.0, 1.0])
                .map(|((name, d), row)| {
                    let d = d.unwrap_or(0.0);
                    let points = vec![(at, row), (at + d, row)];
                    at += d;
                    Series {
                        name: format!("{name} {}", d_text(d)),
                        points,
                    }
                })
                .collect();
            charts.push(Chart {
                id: format!("recovery-{}-{}", j.variant, x.fault_id),
                title: format!(
                    "Recovery timeline after {} ({}, variant {}): total {}",
                    x.fault_id,
                    x.kind,
                    j.variant,
                    x.total_s.map_or_else(|| "not recovered".to_owned(), d_text)
                ),
                x_label: "seconds since the fault".into(),
                y_label: "part (4 detection, 3 re-rendezvous, 2 restore, 1 catch-up)".into(),
                time_axis: false,
                series,
            });
        }
    }
    for j in jobs {
        for x in &j.stragglers {
            if let Some(slowdown) = x.slowdown {
                figures.push(Figure {
                    name: format!("{}_{}_straggler_slowdown", j.variant, x.fault_id),
                    value: slowdown,
                    unit: "ratio".into(),
                    definition: "rank-0 step time while throttled / over an equal span before (lock-step training waits for the straggler)".into(),
                });
            }
        }
        for x in &j.recoveries {
            for (what, v) in [
                ("detection_s", x.detection_s),
                ("rendezvous_s", x.rendezvous_s),
                ("restore_s", x.restore_s),
                ("catch_up_s", x.catch_up_s),
                ("recovery_s", x.total_s),
            ] {
                if let Some(v) = v {
                    figures.push(Figure {
                        name: format!("{}_{}_{what}", j.variant, x.fault_id),
                        value: v,
                        unit: "s".into(),
                        definition: "metrics.md Training: recovery time split into detection, re-rendezvous, restore, catch-up".into(),
                    });
                }
            }
        }
    }
    (charts, figures)
}

/// A vertical line on the loss plot at the step each interrupting fault hit (the restored
/// checkpoint step + the steps lost), spanning the loss range.
fn fault_marks(jobs: &[TrainingResult]) -> Vec<Series> {
    let losses = jobs.iter().flat_map(|j| j.loss_curve.iter().map(|p| p.1));
    let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), l| {
        (lo.min(l), hi.max(l))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    jobs.iter()
        .flat_map(|j| {
            j.recoveries.iter().filter_map(move |x| {
                let step = x.restored_step? + x.lost_steps?;
                Some(Series {
                    name: format!("fault {} at step {step}", x.fault_id),
                    points: vec![(step as f64, lo), (step as f64, hi)],
                })
            })
        })
        .collect()
}

fn d_text(seconds: f64) -> String {
    format!("{seconds:.3} s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StragglerEffect, TrainingRecovery};

    fn job(variant: &str, workers: u32, thr: f64) -> TrainingResult {
        TrainingResult {
            variant: variant.into(),
            workers,
            throughput_samples_per_s: Some(thr),
            loss_curve: vec![(0.0, 2.0), (1.0, 1.5)],
            throughput_curve: vec![(0.5, thr)],
            ..TrainingResult::default()
        }
    }

    #[test]
    fn scaling_efficiency_is_against_one_worker_of_the_same_run() {
        let (charts, figures) = charts_and_figures(&[job("one", 1, 100.0), job("two", 2, 150.0)]);
        let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["training-throughput", "loss", "scaling"]);
        assert_eq!(charts[0].series[1].name, "two (2 workers)");
        let ideal = &charts[2].series[1];
        assert_eq!(ideal.points, [(1.0, 100.0), (2.0, 200.0)]);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].name, "scaling_efficiency_n2");
        assert!((figures[0].value - 0.75).abs() < 1e-12);
    }

    #[test]
    fn a_lone_job_has_no_scaling_chart_and_recoveries_lay_their_parts_end_to_end() {
        let mut j = job("default", 2, 80.0);
        j.recoveries.push(TrainingRecovery {
            fault_id: "kill".into(),
            kind: "process.kill".into(),
            detection_s: Some(1.0),
            rendezvous_s: Some(0.5),
            restore_s: None,
            catch_up_s: Some(2.0),
            total_s: Some(3.5),
            restored_step: Some(20),
            lost_steps: Some(6),
            ..TrainingRecovery::default()
        });
        j.stragglers.push(StragglerEffect {
            fault_id: "slow".into(),
            slowdown: Some(2.5),
            ..StragglerEffect::default()
        });
        let (charts, figures) = charts_and_figures(&[j]);
        let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["training-throughput", "loss", "recovery-default-kill"]
        );
        let parts: Vec<(f64, f64)> = charts[2]
            .series
            .iter()
            .map(|s| (s.points[0].0, s.points[1].0))
            .collect();
        assert_eq!(parts, [(0.0, 1.0), (1.0, 1.5), (1.5, 1.5), (1.5, 3.5)]);
        let rows: Vec<f64> = charts[2].series.iter().map(|s| s.points[0].1).collect();
        assert_eq!(rows, [4.0, 3.0, 2.0, 1.0], "one row per part");
        assert!(charts[2].title.ends_with("total 3.500 s"));
        let mark = charts[1]
            .series
            .last()
            .expect("a fault mark on the loss plot");
        assert_eq!(mark.name, "fault kill at step 26");
        assert_eq!(mark.points, [(26.0, 1.5), (26.0, 2.0)]);
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "default_slow_straggler_slowdown",
                "default_kill_detection_s",
                "default_kill_rendezvous_s",
                "default_kill_catch_up_s",
                "default_kill_recovery_s"
            ]
        );
    }
}
