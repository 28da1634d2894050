//! Judging a candidate set of runs against a baseline set, figure by figure (the rules
//! are in the crate docs, "How a verdict is reached").

use serde::{Deserialize, Serialize};

use crate::extract::{host_load, Direction, RunFigure};
use crate::stats::{
    block_length, bootstrap_relative_change, figure_seed, mann_whitney_u, median, Rng, UMethod,
    EXACT_U_MAX_N,
};
use crate::{CompareError, Run};

/// Runs per side from which per-run values are the samples.
pub const MIN_RUNS: usize = 3;
/// Windows per side (all runs together) below which pooled windows are not judged.
pub const MIN_WINDOWS: usize = 5;
/// The most bootstrap resamples per figure.
pub const MAX_RESAMPLES: u32 = 100_000;

/// How strict a comparison is. Defaults are [`Options::default`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Smallest relative change of the median that counts, as a fraction: 0.05 = 5 %.
    /// In [0, 10].
    pub magnitude_floor: f64,
    /// Significance level: the interval is 1 − alpha and p must be below alpha. 0.05; in
    /// (0, 0.5).
    pub alpha: f64,
    /// Bootstrap resamples per figure, 100..=[`MAX_RESAMPLES`]. 2000.
    pub resamples: u32,
    /// Seed of every bootstrap (mixed with the figure's name). 0.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            magnitude_floor: 0.05,
            alpha: 0.05,
            resamples: 2000,
            seed: 0,
        }
    }
}

impl Options {
    /// Every problem with the options, or `Ok`.
    ///
    /// # Errors
    /// [`CompareError::Options`] listing each value out of range.
    pub fn validate(&self) -> Result<(), CompareError> {
        let mut p = Vec::new();
        if !(0.0..=10.0).contains(&self.magnitude_floor) {
            p.push(format!(
                "magnitude_floor {} is not in [0, 10] (a fraction: 0.05 = 5 %)",
                self.magnitude_floor
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            p.push(format!("alpha {} is not in (0, 0.5)", self.alpha));
        }
        if !(100..=MAX_RESAMPLES).contains(&self.resamples) {
            p.push(format!(
                "resamples {} is not in 100..={MAX_RESAMPLES}",
                self.resamples
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(CompareError::Options(p))
        }
    }
}

/// A figure's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Better,
    Worse,
    NoChange,
    NotComparable { reason: String },
}

/// Which samples a figure was judged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Method {
    /// One sample per run; Mann-Whitney U (exact or normal) and an iid bootstrap.
    Runs { u_test: UMethod },
    /// Per-window samples pooled over runs; moving-block bootstrap for interval and p.
    /// Block length per run (baseline runs first), in windows.
    Windows { block_lengths: Vec<usize> },
}

/// One side of a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideSummary {
    /// Runs that have the figure.
    pub runs: usize,
    /// Median of those runs' values.
    pub value: f64,
    /// Per-window samples over those runs.
    pub windows: usize,
    /// Each of those runs' values, in run order.
    pub values: Vec<f64>,
}

/// One figure, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureComparison {
    pub name: String,
    pub unit: String,
    pub direction: Direction,
    /// `None` when no baseline run has the figure.
    pub baseline: Option<SideSummary>,
    pub candidate: Option<SideSummary>,
    /// `None` when not judged.
    pub method: Option<Method>,
    /// Medians of the judged samples, baseline and candidate: the runs' values, or for
    /// pooled windows the windows' (which may differ from the phase's own figure).
    pub medians: Option<(f64, f64)>,
    /// Relative change of those medians (0.1 = +10 %).
    pub change: Option<f64>,
    /// 1 − alpha bootstrap interval of `change`.
    pub ci: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// A run field that differs from the reference run (the first baseline run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incompatibility {
    pub run_id: String,
    pub reference_run_id: String,
    /// e.g. `run.seed`, `run.host.cpus`.
    pub field: String,
    pub expected: String,
    pub found: String,
}

/// One compared run, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub started_at: String,
    pub git_commit: String,
    pub dir: String,
    /// The run passed its own SLOs.
    pub passed: bool,
    /// Mean busy share of all host CPUs (0..=1) while the stack ran, if sampled.
    pub host_cpu_busy_mean: Option<f64>,
    /// Mean 1-minute load average while the stack ran, if sampled.
    pub load_average_mean: Option<f64>,
}

/// Everything a comparison found; serialisable for `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub options: Options,
    pub baseline: Vec<RunSummary>,
    pub candidate: Vec<RunSummary>,
    /// Empty when every run is of the same scenario, seed, host and workload. The caller
    /// decides whether to refuse (exit 2) or go on (`--force`); the figures are judged
    /// either way.
    pub compatibility: Vec<Incompatibility>,
    /// In order of first appearance, baseline runs first.
    pub figures: Vec<FigureComparison>,
}

impl Comparison {
    /// Figures judged [`Verdict::Worse`].
    pub fn regressions(&self) -> impl Iterator<Item = &FigureComparison> {
        self.figures.iter().filter(|f| f.verdict == Verdict::Worse)
    }
}

/// Judges every figure of `candidate` against `baseline` (see the crate docs).
///
/// # Errors
/// [`CompareError::Options`] when the options are out of range or a side has no runs.
pub fn compare(
    baseline: &[Run],
    candidate: &[Run],
    opts: &Options,
) -> Result<Comparison, CompareError> {
    let mut problems = match opts.validate() {
        Ok(()) => Vec::new(),
        Err(CompareError::Options(p)) => p,
        Err(e) => return Err(e),
    };
    if baseline.is_empty() {
        problems.push("no baseline runs".to_owned());
    }
    if candidate.is_empty() {
        problems.push("no candidate runs".to_owned());
    }
    if !problems.is_empty() {
        return Err(CompareError::Options(problems));
    }
    let mut names: Vec<&str> = Vec::new();
    for f in baseline
        .iter()
        .chain(candidate)
        .flat_map(|r| r.figures.iter())
    {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    let figures = names
        .iter()
        .map(|name| judge(name, baseline, candidate, opts))
        .collect();
    Ok(Comparison {
        options: *opts,
        baseline: baseline.iter().map(summary).collect(),
        candidate: candidate.iter().map(summary).collect(),
        compatibility: compatibility(baseline, candidate),
        figures,
    })
}

/// One figure's values in `history` order: (index of the run in `history`, value), for
/// the runs that have it. The input of [`crate::change_points`].
pub fn history_values(history: &[Run], figure: &str) -> Vec<(usize, f64)> {
    history
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.figure(figure)?.value)))
        .collect()
}

fn summary(r: &Run) -> RunSummary {
    let (busy, load) = host_load(&r.metrics);
    RunSummary {
        run_id: r.metrics.run.run_id.clone(),
        started_at: r.metrics.run.started_at.clone(),
        git_commit: r.metrics.run.git_commit.clone(),
        dir: r.dir.display().to_string(),
        passed: r.metrics.passed(),
        host_cpu_busy_mean: busy,
        load_average_mean: load,
    }
}

/// Fields that must match the first baseline run: scenario name and file, seed, host
/// (os, arch, cpus) and workload (mode, arrival, rate).
fn compatibility(baseline: &[Run], candidate: &[Run]) -> Vec<Incompatibility> {
    let Some(reference) = baseline.first() else {
        return Vec::new();
    };
    let fields = |r: &Run| -> Vec<(&'static str, String)> {
        let i = &r.metrics.run;
        vec![
            ("run.scenario", i.scenario.clone()),
            ("run.scenario_file", i.scenario_file.clone()),
            ("run.seed", i.seed.to_string()),
            ("run.host.os", i.host.os.clone()),
            ("run.host.arch", i.host.arch.clone()),
            ("run.host.cpus", i.host.cpus.to_string()),
            ("run.workload.mode", i.workload.mode.clone()),
            ("run.workload.arrival", i.workload.arrival.clone()),
            (
                "run.workload.rate_per_s",
                format!("{:?}", i.workload.rate_per_s),
            ),
        ]
    };
    let want = fields(reference);
    let mut out = Vec::new();
    for r in baseline.iter().skip(1).chain(candidate) {
        for ((field, expected), (_, found)) in want.iter().zip(fields(r)) {
            if *expected != found {
                out.push(Incompatibility {
                    run_id: r.metrics.run.run_id.clone(),
                    reference_run_id: reference.metrics.run.run_id.clone(),
                    field: (*field).to_owned(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
    }
    out
}

fn side(figs: &[&RunFigure]) -> Option<SideSummary> {
    let values: Vec<f64> = figs.iter().map(|f| f.value).collect();
    Some(SideSummary {
        runs: figs.len(),
        value: median(&values)?,
        windows: figs.iter().map(|f| f.samples.len()).sum(),
        values,
    })
}

fn judge(name: &str, baseline: &[Run], candidate: &[Run], opts: &Options) -> FigureComparison {
    let b: Vec<&RunFigure> = baseline.iter().filter_map(|r| r.figure(name)).collect();
    let c: Vec<&RunFigure> = candidate.iter().filter_map(|r| r.figure(name)).collect();
    let first = b
        .first()
        .or(c.first())
        .expect("the name came from one of the runs");
    let mut out = FigureComparison {
        name: name.to_owned(),
        unit: first.unit.clone(),
        direction: first.direction,
        baseline: side(&b),
        candidate: side(&c),
        method: None,
        medians: None,
        change: None,
        ci: None,
        p_value: None,
        verdict: Verdict::NoChange,
    };
    let not = |reason: String| Verdict::NotComparable { reason };
    if b.is_empty() || c.is_empty() {
        let (missing, n) = if b.is_empty() {
            ("baseline", baseline.len())
        } else {
            ("candidate", candidate.len())
        };
        out.verdict = not(format!(
            "missing in the {missing} (none of its {n} runs has it)"
        ));
        return out;
    }
    if first.direction == Direction::Unknown {
        out.verdict =
            not("unknown direction (no rule of extract::figure_direction applies)".into());
        return out;
    }
    let values = |s: &[&RunFigure]| -> Vec<f64> { s.iter().map(|f| f.value).collect() };
    let samples =
        |s: &[&RunFigure]| -> Vec<Vec<f64>> { s.iter().map(|f| f.samples.clone()).collect() };
    let (bv, cv) = (values(&b), values(&c));
    let (bs, cs) = (samples(&b), samples(&c));
    let (bw, cw) = (
        bs.iter().map(Vec::len).sum::<usize>(),
        cs.iter().map(Vec::len).sum::<usize>(),
    );
    let mut rng = Rng::new(figure_seed(opts.seed, name));
    let mut why_not_runs = None;
    if b.len() >= MIN_RUNS && c.len() >= MIN_RUNS {
        let u = mann_whitney_u(&cv, &bv).expect("both sides have runs");
        let smallest_p = smallest_exact_p(b.len(), c.len());
        // Ties only raise the smallest attainable p; the normal approximation would
        // understate it for so few runs.
        if smallest_p >= opts.alpha {
            why_not_runs = Some(format!(
                "{} runs against {}: the smallest attainable p is {smallest_p:.3}, not below alpha {}; add runs (4 against 4 reach 0.029)",
                b.len(),
                c.len(),
                opts.alpha
            ));
        } else {
            let (mb, mc) = (median(&bv), median(&cv));
            let boot = bootstrap_relative_change(
                std::slice::from_ref(&bv),
                std::slice::from_ref(&cv),
                &|_| 1,
                opts.resamples,
                opts.alpha,
                &mut rng,
            );
            out.method = Some(Method::Runs { u_test: u.method });
            return finish(out, mb, mc, boot.map(|r| (r.ci, u.p_value)), opts);
        }
    }
    if bw >= MIN_WINDOWS && cw >= MIN_WINDOWS {
        let all = |s: &[Vec<f64>]| -> Vec<f64> { s.iter().flatten().copied().collect() };
        let (mb, mc) = (median(&all(&bs)), median(&all(&cs)));
        let boot = bootstrap_relative_change(
            &bs,
            &cs,
            &block_length,
            opts.resamples,
            opts.alpha,
            &mut rng,
        );
        out.method = Some(Method::Windows {
            block_lengths: bs
                .iter()
                .chain(&cs)
                .map(|s| block_length(s.len()))
                .collect(),
        });
        return finish(out, mb, mc, boot.map(|r| (r.ci, r.p_value)), opts);
    }
    let reason = if let Some(r) = why_not_runs {
        r
    } else if bw > 0 || cw > 0 {
        format!(
            "{bw} windows against {cw}: needs {MIN_WINDOWS} per side (or {MIN_RUNS} runs per side)"
        )
    } else if b.len() == 1 && c.len() == 1 {
        "one sample per side: a single value carries no noise estimate; repeat the runs (3+ per side)".to_owned()
    } else {
        format!(
            "{} runs against {}: a single-value figure needs {MIN_RUNS} runs per side",
            b.len(),
            c.len()
        )
    };
    out.verdict = not(reason);
    out
}

/// Smallest two-sided exact Mann-Whitney p for m against n runs without ties:
/// 2 / C(m+n, m) (0 beyond [`EXACT_U_MAX_N`], where it is far below any alpha).
fn smallest_exact_p(m: usize, n: usize) -> f64 {
    if m + n > EXACT_U_MAX_N {
        return 0.0;
    }
    let mut binom = 1.0;
    for k in 0..m {
        binom = binom * (m + n - k) as f64 / (k + 1) as f64;
    }
    (2.0 / binom).min(1.0)
}

fn finish(
    mut out: FigureComparison,
    mb: Option<f64>,
    mc: Option<f64>,
    test: Option<((f64, f64), f64)>,
    opts: &Options,
) -> FigureComparison {
    let (Some(mb), Some(mc), Some((ci, p))) = (mb, mc, test) else {
        out.verdict = Verdict::NotComparable {
            reason: "the baseline median is 0: a relative change is undefined".into(),
        };
        return out;
    };
    let change = (mc - mb) / mb.abs();
    out.medians = Some((mb, mc));
    out.change = Some(change);
    out.ci = Some(ci);
    out.p_value = Some(p);
    let significant = (ci.0 > 0.0 || ci.1 < 0.0) && p < opts.alpha;
    let beyond = change.abs() > opts.magnitude_floor;
    let bad = match out.direction {
        Direction::HigherIsBetter => change < 0.0,
        Direction::LowerIsBetter => change > 0.0,
        Direction::Unknown => unreachable!("unknown directions are not judged"),
    };
    out.verdict = match (significant && beyond, bad) {
        (true, true) => Verdict::Worse,
        (true, false) => Verdict::Better,
        (false, _) => Verdict::NoChange,
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_exact_p_is_two_over_the_arrangements() {
        assert!((smallest_exact_p(3, 3) - 0.1).abs() < 1e-12);
        assert!((smallest_exact_p(4, 4) - 2.0 / 70.0).abs() < 1e-12);
        assert!((smallest_exact_p(3, 5) - 2.0 / 56.0).abs() < 1e-12);
    }

    #[test]
    fn options_out_of_range_are_all_named() {
        let bad = Options {
            magnitude_floor: -1.0,
            alpha: 0.0,
            resamples: 5,
            seed: 0,
        };
        let Err(CompareError::Options(p)) = bad.validate() else {
            panic!("accepted");
        };
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
