//! `faultline run --runs N`: the same scenario N times with seeds `S, S+1, …, S+N−1`, and
//! the spread of each headline figure over the runs (a failover time is a distribution:
//! "p99 over 20 runs" needs 20 runs).
//!
//! Each run writes its own report as usual; the series writes
//! `<reports>/<scenario>/series-<first run id>/series.json` and prints one table. The series
//! passes only if every run passed. [`figures_of`] and [`spread`] are pure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use report::RunMetrics;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::runner::{self, RunError, RunOptions};

/// Most runs in a series.
pub const MAX_RUNS: u32 = 100;

/// The headline figures of one run, by name (see the module docs for which).
pub fn figures_of(m: &RunMetrics) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in &m.summaries {
        if s.counts.sent == 0 {
            continue;
        }
        if let Some(p) = s.latency.p50_ms {
            out.insert(format!("{} p50 corrected latency (ms)", s.phase), p);
        }
        if let Some(p) = s.latency.p99_ms {
            out.insert(format!("{} p99 corrected latency (ms)", s.phase), p);
        }
        if let Some(a) = s.availability {
            out.insert(format!("{} availability", s.phase), a);
        }
        out.insert(format!("{} throughput (req/s)", s.phase), s.throughput_rps);
    }
    for r in &m.recoveries {
        if let Some(v) = r.recovery_s {
            out.insert(format!("recovery after {} (s)", r.fault_id), v);
        }
        if let Some(v) = r.latency_recovery_s {
            out.insert(format!("latency recovery after {} (s)", r.fault_id), v);
        }
    }
    for s in &m.searches {
        if let Some(b) = s.best_rate_per_s {
            out.insert(format!("max throughput {} (req/s)", s.variant), b);
        }
    }
    for t in &m.training {
        if let Some(v) = t.throughput_samples_per_s {
            out.insert(format!("training throughput {} (samples/s)", t.variant), v);
        }
    }
    for f in &m.figures {
        out.insert(format!("{} ({})", f.name, f.unit), f.value);
    }
    out
}

/// The spread of one figure over the runs that measured it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub figure: String,
    /// Runs that measured it (a run where a fault never recovered has no recovery time).
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    /// Sample standard deviation (0 for one run).
    pub stddev: f64,
}

/// Nearest-rank percentile of sorted values.
fn rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let i = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[i.clamp(1, n) - 1]
}

/// The spread of every figure over `runs` (one map per run, from [`figures_of`]).
pub fn spread(runs: &[BTreeMap<String, f64>]) -> Vec<Spread> {
    let mut by: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (k, v) in r {
            if v.is_finite() {
                by.entry(k).or_default().push(*v);
            }
        }
    }
    by.into_iter()
        .map(|(figure, mut v)| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            let mean = v.iter().sum::<f64>() / n as f64;
            let var = if n > 1 {
                v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
            } else {
                0.0
            };
            Spread {
                figure: figure.to_owned(),
                n,
                min: v[0],
                p50: rank(&v, 50.0),
                p90: rank(&v, 90.0),
                p99: rank(&v, 99.0),
                max: v[n - 1],
                mean,
                stddev: var.sqrt(),
            }
        })
        .collect()
}

/// One run of the series, as `series.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRun {
    pub seed: u64,
    pub run_id: String,
    pub passed: bool,
    pub report: PathBuf,
}

/// What `series.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub scenario: String,
    pub runs: Vec<SeriesRun>,
    pub passed: bool,
    pub interrupted: bool,
    pub figures: Vec<Spread>,
}

/// The series as a text table.
pub fn render(s: &Series) -> String {
    let mut out = format!(
        "{} {}: {} of {} runs passed{}\n",
        if s.passed { "PASS" } else { "FAIL" },
        s.scenario,
        s.runs.iter().filter(|r| r.passed).count(),
        s.runs.len(),
        if s.interrupted { " (interrupted)" } else { "" }
    );
    for r in s.runs.iter().filter(|r| !r.passed) {
        out.push_str(&format!(
            "  failed: seed {} ({})\n",
            r.seed,
            r.report.display()
        ));
    }
    let w = s
        .figures
        .iter()
        .map(|f| f.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:<w$}  {:>3}  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "figure", "n", "min", "p50", "p90", "p99", "max", "mean", "stddev"
    ));
    for f in &s.figures {
        out.push_str(&format!(
            "{:<w$}  {:>3}  {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>10.4}\n",
            f.figure, f.n, f.min, f.p50, f.p90, f.p99, f.max, f.mean, f.stddev
        ));
    }
    out
}

/// Runs the scenario `runs` times (seeds from the option's or the scenario's seed up) and
/// writes `series.json` beside the runs' reports. Ctrl-C stops after the current run.
pub async fn run_series(
    path: &Path,
    opts: &RunOptions,
    runs: u32,
    cancel: CancellationToken,
) -> Result<(Series, PathBuf), RunError> {
    let first_seed = match opts.seed {
        Some(s) => s,
        None => scenario::load(path)?.seed,
    };
    let mut listed = Vec::new();
    let mut figures = Vec::new();
    let mut dir = None;
    let mut name = String::new();
    let mut interrupted = false;
    for i in 0..u64::from(runs.min(MAX_RUNS)) {
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        let seed = first_seed.wrapping_add(i);
        let one = RunOptions {
            seed: Some(seed),
            ..opts.clone()
        };
        let outcome = runner::run_file(path, &one, cancel.clone()).await?;
        interrupted |= outcome.interrupted;
        name.clone_from(&outcome.metrics.run.scenario);
        if dir.is_none() {
            dir = outcome
                .dir
                .parent()
                .map(|p| p.join(format!("series-{}", outcome.metrics.run.run_id)));
        }
        figures.push(figures_of(&outcome.metrics));
        listed.push(SeriesRun {
            seed,
            run_id: outcome.metrics.run.run_id.clone(),
            passed: outcome.metrics.passed(),
            report: outcome.dir.join("index.html"),
        });
    }
    let series = Series {
        scenario: name,
        passed: !listed.is_empty() && !interrupted && listed.iter().all(|r| r.passed),
        runs: listed,
        interrupted,
        figures: spread(&figures),
    };
    let dir = dir.unwrap_or_else(|| opts.reports_dir.join("series"));
    std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
        path: dir.clone(),
        source,
    })?;
    let file = dir.join("series.json");
    let json = serde_json::to_string_pretty(&series).unwrap_or_default();
    std::fs::write(&file, json + "\n").map_err(|source| RunError::Io {
        path: file.clone(),
        source,
    })?;
    Ok((series, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_nearest_rank_over_the_runs_that_measured_each_figure() {
        let runs: Vec<BTreeMap<String, f64>> = (1..=20)
            .map(|i| {
                let mut m = BTreeMap::from([("recovery after kill (s)".to_owned(), f64::from(i))]);
                if i % 2 == 0 {
                    m.insert("other".to_owned(), 1.0);
                }
                m
            })
            .collect();
        let s = spread(&runs);
        assert_eq!(s.len(), 2);
        let other = &s[0];
        assert_eq!(
            (other.figure.as_str(), other.n, other.stddev),
            ("other", 10, 0.0)
        );
        let r = &s[1];
        assert_eq!(r.n, 20);
        assert_eq!(
            (r.min, r.p50, r.p90, r.p99, r.max),
            (1.0, 10.0, 18.0, 20.0, 20.0)
        );
        assert!((r.mean - 10.5).abs() < 1e-12);
        assert!((r.stddev - 5.916_079_783).abs() < 1e-6);
    }

    #[test]
    fn a_series_fails_when_any_run_failed_and_says_which() {
        let s = Series {
            scenario: "x".into(),
            runs: vec![
                SeriesRun {
                    seed: 1,
                    run_id: "a".into(),
                    passed: true,
                    report: "r/a/index.html".into(),
                },
                SeriesRun {
                    seed: 2,
                    run_id: "b".into(),
                    passed: false,
                    report: "r/b/index.html".into(),
                },
            ],
            passed: false,
            interrupted: false,
            figures: spread(&[BTreeMap::from([("f".to_owned(), 2.0)])]),
        };
        let text = render(&s);
        assert!(
            text.starts_with("FAIL x: 1 of 2 runs passed\n  failed: seed 2 (r/b/index.html)\n"),
            "{text}"
        );
        assert!(text.contains("f     "), "{text}");
    }
}
