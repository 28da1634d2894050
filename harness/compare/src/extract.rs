//! The figures of one run that a comparison judges, each with a name, unit, direction,
//! value and (where the run has them) per-window samples.
//!
//! Names (stable: they key figures across runs):
//!
//! | source | name | unit | direction | samples |
//! |---|---|---|---|---|
//! | `summaries[]` (not `warmup`) | `{phase} throughput_rps` | req/s | higher | windows' `throughput_rps` |
//! | | `{phase} availability` | ratio | higher | – |
//! | | `{phase} latency p50_ms`, `p99_ms`, `p999_ms` (corrected) | ms | lower | p99: windows' `latency.p99_ms` |
//! | | `{phase} service p99_ms`, `{phase} ttft p50_ms`, `ttft p99_ms`, `itl p50_ms`, `itl p99_ms` (when recorded) | ms | lower | – |
//! | `recoveries[]` | `recovery {fault} recovery_s`, `… latency_recovery_s` | s | lower | – |
//! | `searches[]` | `search {variant} best_rate_per_s` | req/s | higher | – |
//! | `training[]` | `training {variant} throughput_samples_per_s` | samples/s | higher | `throughput_curve` |
//! | | `training {variant} step_s`, `compute_s`, `comm_s`, `wait_s`, `data_s`, `update_s`, `throttle_s` | s | lower | – |
//! | | `training {variant} recovery {fault} detection_s`, `rendezvous_s`, `restore_s`, `catch_up_s`, `total_s` | s | lower | – |
//! | `figures[]` | `figure {name}` | its unit | [`figure_direction`] | – |
//!
//! A phase's windows are those whose `phase` is the phase's name, or, for a phase that
//! is a span in `phases[]` (`measured`), those lying inside the span. With variants the
//! phases are `"{variant}: {phase}"` and `recoveries[]` carry the variant; `windows[]`
//! hold only the first variant's load, so variant phases get no window samples.
//! A percentile figure needs enough samples in the phase to be one: p99 figures at least
//! 100, p99.9 at least 1000 (below that they are the sample's maximum, the noisiest
//! figure of a run); with fewer the run lacks the figure.
//! `figures[]` named `host_*` (the host's load) are not judged: [`host_load`] lists them
//! per run. The training recovery parts that `report::training` also copies into
//! `figures[]` are taken from `training[]` only. A figure whose value is missing (a p99
//! with no completions, a fault never recovered from) is left out: the run lacks it.
//! TrainingResult has no checkpoint-cost figure; a checkpoint restore's cost is the
//! recovery's `restore_s`.

use serde::{Deserialize, Serialize};

use report::{Percentiles, RunMetrics, WindowMetrics};

/// Which way is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
    /// Reported, never judged.
    Unknown,
}

/// One figure of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFigure {
    pub name: String,
    pub unit: String,
    pub direction: Direction,
    /// The run's value (finite).
    pub value: f64,
    /// Per-window (or per-step) values in time order; empty for single-value figures.
    pub samples: Vec<f64>,
}

/// Direction of a named `figures[]` entry, by these rules in order (lower-case name):
/// 1. a name starting `host_` → [`Direction::Unknown`] (the machine, not the system);
/// 2. containing `efficiency`, `throughput`, `goodput`, `bandwidth`, `busbw` or `algbw`,
///    ending `_per_s` or `_rps`, or a unit ending `/s` → higher is better;
/// 3. ending `_s`, `_ms`, `_mib`, `slowdown`, `lost_steps` or `_bytes`, or a unit `s`,
///    `ms`, `MiB` or `bytes` → lower is better;
/// 4. anything else → [`Direction::Unknown`] (reported, `NotComparable`).
pub fn figure_direction(name: &str, unit: &str) -> Direction {
    let n = name.to_ascii_lowercase();
    if n.starts_with("host_") {
        return Direction::Unknown;
    }
    let higher = [
        "efficiency",
        "throughput",
        "goodput",
        "bandwidth",
        "busbw",
        "algbw",
    ];
    if higher.iter().any(|h| n.contains(h))
        || n.ends_with("_per_s")
        || n.ends_with("_rps")
        || unit.ends_with("/s")
    {
        return Direction::HigherIsBetter;
    }
    let lower = ["_s", "_ms", "_mib", "slowdown", "lost_steps", "_bytes"];
    if lower.iter().any(|l| n.ends_with(l)) || ["s", "ms", "MiB", "bytes"].contains(&unit) {
        return Direction::LowerIsBetter;
    }
    Direction::Unknown
}

/// The host load of a run, from what the runner's sampler recorded: the `host_cpu_busy_mean`
/// figure(s) (mean busy share of all CPUs; several stack lifetimes give
/// `lifetime{k}_host_cpu_busy_mean`, averaged here) and the mean of the `host` chart's
/// "load average" series. Either is `None` when the run did not record it.
pub fn host_load(m: &RunMetrics) -> (Option<f64>, Option<f64>) {
    let busy: Vec<f64> = m
        .figures
        .iter()
        .filter(|f| f.name.ends_with("host_cpu_busy_mean") && f.value.is_finite())
        .map(|f| f.value)
        .collect();
    let load: Vec<f64> = m
        .charts
        .iter()
        .filter(|c| c.id == "host")
        .flat_map(|c| c.series.iter())
        .filter(|s| s.name.starts_with("load average"))
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    (crate::stats::mean(&busy), crate::stats::mean(&load))
}

/// A percentile a figure reads, and how many samples it needs to be judged.
#[derive(Debug, Clone, Copy)]
enum Quantile {
    P50,
    P99,
    P999,
}

impl Quantile {
    /// Samples below which the percentile is the sample's maximum (p99, p99.9) and not
    /// judged: 100 for p99, 1000 for p99.9, 1 for the median.
    fn min_samples(self) -> u64 {
        match self {
            Quantile::P50 => 1,
            Quantile::P99 => 100,
            Quantile::P999 => 1000,
        }
    }

    fn of(self, p: &Percentiles) -> Option<f64> {
        match self {
            Quantile::P50 => p.p50_ms,
            Quantile::P99 => p.p99_ms,
            Quantile::P999 => p.p999_ms,
        }
    }
}

/// Every figure of a run (see the module docs for names and rules).
pub fn figures(m: &RunMetrics) -> Vec<RunFigure> {
    let mut out = Figures(Vec::new());
    for s in m.summaries.iter().filter(|s| s.phase != "warmup") {
        let p = &s.phase;
        let windows = phase_windows(m, p);
        let w = |f: &dyn Fn(&WindowMetrics) -> Option<f64>| -> Vec<f64> {
            windows.iter().filter_map(|w| f(w)).collect()
        };
        // A phase with no requests (an empty `recovering`) has nothing to judge.
        if s.counts.sent == 0 && s.latency.count == 0 {
            continue;
        }
        out.push(
            format!("{p} throughput_rps"),
            "req/s",
            Direction::HigherIsBetter,
            Some(s.throughput_rps),
            w(&|w| Some(w.throughput_rps)),
        );
        out.push(
            format!("{p} availability"),
            "ratio",
            Direction::HigherIsBetter,
            s.availability,
            Vec::new(),
        );
        // A percentile is judged only from enough samples to be one: the p99 of fewer
        // than 100 requests is their maximum, the noisiest figure a run has (A/A
        // comparisons of 18 completions per run flagged it in 2 of 4).
        let lat = |name: &str, pc: &Percentiles, q: Quantile| {
            let enough = pc.count >= q.min_samples();
            (name.to_owned(), enough.then(|| q.of(pc)).flatten())
        };
        for (name, value, samples) in [
            (lat("latency p50_ms", &s.latency, Quantile::P50), Vec::new()),
            (
                lat("latency p99_ms", &s.latency, Quantile::P99),
                w(&|w| w.latency.p99_ms),
            ),
            (
                lat("latency p999_ms", &s.latency, Quantile::P999),
                Vec::new(),
            ),
            (lat("service p99_ms", &s.service, Quantile::P99), Vec::new()),
            (lat("ttft p50_ms", &s.ttft, Quantile::P50), Vec::new()),
            (lat("ttft p99_ms", &s.ttft, Quantile::P99), Vec::new()),
            // The median gap between streamed tokens is one decode step as the client sees
            // it: the figure a slower engine moves most directly (vLLM's benchmark reports
            // it as median ITL), with thousands of samples per run.
            (lat("itl p50_ms", &s.itl, Quantile::P50), Vec::new()),
            (lat("itl p99_ms", &s.itl, Quantile::P99), Vec::new()),
        ]
        .map(|((n, v), s)| (n, v, s))
        {
            out.push(
                format!("{p} {name}"),
                "ms",
                Direction::LowerIsBetter,
                value,
                samples,
            );
        }
    }
    for r in &m.recoveries {
        let who = match &r.variant {
            Some(v) => format!("{v}: {}", r.fault_id),
            None => r.fault_id.clone(),
        };
        for (what, v) in [
            ("recovery_s", r.recovery_s),
            ("latency_recovery_s", r.latency_recovery_s),
        ] {
            out.push(
                format!("recovery {who} {what}"),
                "s",
                Direction::LowerIsBetter,
                v,
                Vec::new(),
            );
        }
    }
    for s in &m.searches {
        out.push(
            format!("search {} best_rate_per_s", s.variant),
            "req/s",
            Direction::HigherIsBetter,
            s.best_rate_per_s,
            Vec::new(),
        );
    }
    let mut from_training = Vec::new();
    for t in &m.training {
        let v = &t.variant;
        out.push(
            format!("training {v} throughput_samples_per_s"),
            "samples/s",
            Direction::HigherIsBetter,
            t.throughput_samples_per_s,
            t.throughput_curve.iter().map(|p| p.1).collect(),
        );
        let b = &t.breakdown;
        for (what, x) in [
            ("step_s", b.step_s),
            ("compute_s", b.compute_s),
            ("comm_s", b.comm_s),
            ("wait_s", b.wait_s),
            ("data_s", b.data_s),
            ("update_s", b.update_s),
            ("throttle_s", b.throttle_s),
        ] {
            out.push(
                format!("training {v} {what}"),
                "s",
                Direction::LowerIsBetter,
                x,
                Vec::new(),
            );
        }
        for r in &t.recoveries {
            for (what, fig, x) in [
                ("detection_s", "detection_s", r.detection_s),
                ("rendezvous_s", "rendezvous_s", r.rendezvous_s),
                ("restore_s", "restore_s", r.restore_s),
                ("catch_up_s", "catch_up_s", r.catch_up_s),
                ("total_s", "recovery_s", r.total_s),
            ] {
                from_training.push(format!("{v}_{}_{fig}", r.fault_id));
                out.push(
                    format!("training {v} recovery {} {what}", r.fault_id),
                    "s",
                    Direction::LowerIsBetter,
                    x,
                    Vec::new(),
                );
            }
        }
    }
    for f in &m.figures {
        if f.name.starts_with("host_")
            || f.name.ends_with("host_cpu_busy_mean")
            || from_training.contains(&f.name)
        {
            continue;
        }
        out.push(
            format!("figure {}", f.name),
            &f.unit,
            figure_direction(&f.name, &f.unit),
            Some(f.value),
            Vec::new(),
        );
    }
    out.0
}

struct Figures(Vec<RunFigure>);

impl Figures {
    fn push(
        &mut self,
        name: String,
        unit: &str,
        direction: Direction,
        value: Option<f64>,
        samples: Vec<f64>,
    ) {
        let Some(value) = value.filter(|v| v.is_finite()) else {
            return;
        };
        // A name seen twice (two searches of one variant) keeps the first.
        if self.0.iter().any(|f| f.name == name) {
            return;
        }
        self.0.push(RunFigure {
            name,
            unit: unit.to_owned(),
            direction,
            value,
            samples: samples.into_iter().filter(|v| v.is_finite()).collect(),
        });
    }
}

/// The windows of a phase: by their `phase` label, or, for a span of `phases[]`
/// (`measured`), those inside it. Variant phases (`"v: steady"`) have none (see the
/// module docs).
fn phase_windows<'a>(m: &'a RunMetrics, phase: &str) -> Vec<&'a WindowMetrics> {
    if phase.contains(": ") {
        return Vec::new();
    }
    let labelled: Vec<&WindowMetrics> = m
        .windows
        .iter()
        .filter(|w| w.phase.as_deref() == Some(phase))
        .collect();
    if !labelled.is_empty() {
        return labelled;
    }
    let Some(span) = m.phases.iter().find(|s| s.name == phase) else {
        return Vec::new();
    };
    // Half a microsecond of slack for rounded offsets.
    m.windows
        .iter()
        .filter(|w| w.start_s >= span.start_s - 5e-7 && w.start_s + w.width_s <= span.end_s + 5e-7)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_directions_follow_the_documented_rules() {
        let d = figure_direction;
        assert_eq!(
            d("scaling_efficiency_n2", "ratio"),
            Direction::HigherIsBetter
        );
        assert_eq!(d("allreduce_busbw", "GB/s"), Direction::HigherIsBetter);
        assert_eq!(d("server_0_peak_rss_mib", "MiB"), Direction::LowerIsBetter);
        assert_eq!(d("a_crash_restore_s", "s"), Direction::LowerIsBetter);
        assert_eq!(
            d("a_throttle_straggler_slowdown", "ratio"),
            Direction::LowerIsBetter
        );
        assert_eq!(d("host_cpu_busy_mean", "share"), Direction::Unknown);
        assert_eq!(d("loss_last", "nats"), Direction::Unknown);
    }
}
