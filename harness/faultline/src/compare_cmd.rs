//! `faultline compare`: is the candidate worse than the baseline? Loads runs (folders, a
//! history folder, or runs it makes itself, interleaved) and hands them to the `compare`
//! crate, which judges every figure; this module only chooses the runs, refuses
//! incompatible ones unless `--force`, and writes the outputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::runner::{self, ProgressMode, RunOptions};

/// Most `--runs` per side.
pub const MAX_RUNS: u32 = 50;

/// Exit status for usage errors, unreadable runs and refused (incompatible) comparisons.
const USAGE: u8 = 2;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 no figure got worse; 1 a figure got worse; 2 usage error, \
unreadable run, or incompatible runs without --force; 130 interrupted.\n\
How verdicts are reached: docs/compare.md."
)]
pub struct CompareArgs {
    /// Candidate run folders (`reports/<scenario>/<run-id>`, or `.../latest`).
    pub candidate: Vec<PathBuf>,
    /// A baseline run folder; repeat for several.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// Every run folder under DIR is a baseline run (a scenario's report folder, or the
    /// nightly history); each judged figure's history is plotted with its change points.
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// Make the runs: SCENARIO (file, or name in scenarios/) --runs times as the baseline
    /// and --runs times as the candidate, interleaved in balanced order (B C C B B C ...,
    /// so a drift of the machine over the runs falls on both sides alike), after
    /// --warmup-runs discarded runs of each side, then compare them.
    #[arg(long, value_name = "SCENARIO", conflicts_with_all = ["baseline", "history", "candidate"])]
    pub run: Option<String>,
    /// Runs per side with --run (1..=50). A figure judged from per-run values needs at
    /// least 4 per side at --alpha 0.05 (docs/compare.md).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUNS)))]
    pub runs: u32,
    /// Runs of each side made first and not compared (0..=10), as hyperfine's --warmup:
    /// the first runs after a build or on a cold machine are slower (measured: a first
    /// run's inter-token gap 1.6x the next ones'), which would fall on one side only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub warmup_runs: u32,
    /// Stack binaries of the baseline runs (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    pub baseline_bin_dir: Option<PathBuf>,
    /// Stack binaries of the candidate runs (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    pub candidate_bin_dir: Option<PathBuf>,
    /// COMPONENT=ARG appended to that component's arguments in the candidate runs only
    /// (repeatable), e.g. server=--fault-slowdown=0.1; listed in those runs' reports.
    #[arg(long, value_name = "COMPONENT=ARG", value_parser = parse_component_arg)]
    pub candidate_arg: Vec<(String, String)>,
    /// Folder that receives the runs of --run (and the comparison page).
    #[arg(long, default_value = "reports", env = "FAULTLINE_REPORTS")]
    pub reports: PathBuf,
    /// Smallest relative change that counts, a fraction (0.05 = 5 %).
    #[arg(long, default_value_t = 0.05)]
    pub floor: f64,
    /// Significance level (interval 1 - alpha, p < alpha).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples per figure (100..=100000).
    #[arg(long, default_value_t = 2000)]
    pub resamples: u32,
    /// Seed of the bootstraps.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compare runs of different scenarios, seeds, machines or workloads anyway (the
    /// differences are printed).
    #[arg(long)]
    pub force: bool,
    /// Print the comparison as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write JUnit XML (one test case per figure; worse = failure) to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the HTML page (and comparison.json) into this folder (with --run: default
    /// <reports>/<scenario>/compare-<first run id>/).
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,
    /// No progress output from --run.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_component_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, a)) if !c.is_empty() && !a.is_empty() => Ok((c.to_owned(), a.to_owned())),
        _ => Err(format!(
            "expected COMPONENT=ARG (e.g. server=--fault-slowdown=0.1), got {s:?}"
        )),
    }
}

fn err(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(USAGE)
}

/// Runs `faultline compare`.
pub async fn main(args: CompareArgs, cancel: CancellationToken) -> ExitCode {
    let opts = compare::Options {
        magnitude_floor: args.floor,
        alpha: args.alpha,
        resamples: args.resamples,
        seed: args.seed,
    };
    if let Err(e) = opts.validate() {
        return err(e);
    }
    let (baseline, candidate, history, default_html) = if let Some(scenario) = &args.run {
        match make_runs(&args, scenario, cancel.clone()).await {
            Ok(Made::Done(b, c, dir)) => (b, c, None, Some(dir)),
            Ok(Made::Interrupted) => {
                eprintln!("faultline compare: interrupted; nothing compared");
                return ExitCode::from(130);
            }
            Err(e) => return err(e),
        }
    } else {
        match load_runs(&args) {
            Ok((b, c, h)) => (b, c, h, None),
            Err(e) => return err(e),
        }
    };
    let comparison = match compare::compare(&baseline, &candidate, &opts) {
        Ok(c) => c,
        Err(e) => return err(e),
    };
    if !comparison.compatibility.is_empty() {
        let lines: Vec<String> = comparison
            .compatibility
            .iter()
            .map(|i| {
                format!(
                    "  run {} differs from {} in {}: {} instead of {}",
                    i.run_id, i.reference_run_id, i.field, i.found, i.expected
                )
            })
            .collect();
        if args.force {
            eprintln!(
                "WARNING: comparing runs that differ (--force):\n{}",
                lines.join("\n")
            );
        } else {
            eprintln!(
                "error: these runs are not comparable (different scenario, seed, machine or workload):\n{}\nrerun with --force to compare them anyway",
                lines.join("\n")
            );
            return ExitCode::from(USAGE);
        }
    }
    let html_dir = args.html.clone().or(default_html);
    if let Some(dir) = &html_dir {
        if let Err(e) = write_page(dir, &comparison, history.as_deref()) {
            return err(e);
        }
    }
    if let Some(junit) = &args.junit {
        if let Err(e) = std::fs::write(junit, compare::junit_xml(&comparison)) {
            return err(format!("writing {}: {e}", junit.display()));
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&comparison) {
            Ok(j) => println!("{j}"),
            Err(e) => return err(format!("serialising the comparison: {e}")),
        }
    } else {
        print!("{}", compare::text(&comparison));
        if let Some(dir) = &html_dir {
            println!("comparison: {}", dir.join("index.html").display());
        }
    }
    ExitCode::from(u8::try_from(compare::exit_code(&comparison)).unwrap_or(1))
}

type Loaded = (
    Vec<compare::Run>,
    Vec<compare::Run>,
    Option<Vec<compare::Run>>,
);

/// Baseline (folders and/or a history) and candidate runs from disk.
fn load_runs(args: &CompareArgs) -> Result<Loaded, String> {
    if args.candidate.is_empty() {
        return Err("name the candidate run folder(s) (e.g. reports/<scenario>/latest), or use --run SCENARIO".into());
    }
    if args.baseline.is_empty() && args.history.is_none() {
        return Err("name the baseline: --baseline RUN_DIR (repeatable) or --history DIR".into());
    }
    let mut candidate = Vec::new();
    for dir in &args.candidate {
        candidate.push(compare::load_run(dir).map_err(|e| e.to_string())?);
    }
    let is_candidate = |r: &compare::Run| {
        candidate
            .iter()
            .any(|c| c.metrics.run.run_id == r.metrics.run.run_id)
    };
    let mut baseline = Vec::new();
    for dir in &args.baseline {
        let r = compare::load_run(dir).map_err(|e| e.to_string())?;
        if !is_candidate(&r) {
            baseline.push(r);
        }
    }
    let mut history = None;
    if let Some(dir) = &args.history {
        let h = compare::load_history(dir).map_err(|e| e.to_string())?;
        for s in &h.skipped {
            eprintln!("note: skipped {}: {}", s.dir.display(), s.reason);
        }
        // The candidate may live in the same folder (reports/<scenario>/latest).
        let runs: Vec<compare::Run> = h.runs.into_iter().filter(|r| !is_candidate(r)).collect();
        baseline.extend(runs.iter().cloned());
        history = Some(runs);
    }
    if baseline.is_empty() {
        return Err("the baseline holds no run (other than the candidate)".into());
    }
    Ok((baseline, candidate, history))
}

enum Made {
    Done(Vec<compare::Run>, Vec<compare::Run>, PathBuf),
    Interrupted,
}

/// `--run`: `--warmup-runs` discarded runs of each side, then the scenario `--runs` times
/// per side, interleaved in balanced order ([`side_order`]).
async fn make_runs(
    args: &CompareArgs,
    scenario: &str,
    cancel: CancellationToken,
) -> Result<Made, String> {
    let path = crate::cli::resolve_scenario(scenario)?;
    // A wrong --candidate-arg fails now, not after the first baseline run.
    let loaded = scenario::load(&path).map_err(|e| e.to_string())?;
    for (component, arg) in &args.candidate_arg {
        if !loaded.components.iter().any(|c| &c.name == component) {
            let names: Vec<&str> = loaded.components.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "--candidate-arg {component}={arg}: no component {component:?}; expected one of: {}",
                names.join(", ")
            ));
        }
    }
    let progress = if args.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };
    let side = |bin_dir: &Option<PathBuf>, extra: &[(String, String)]| RunOptions {
        reports_dir: args.reports.clone(),
        bin_dir: bin_dir.clone(),
        progress,
        extra_args: extra.to_vec(),
        ..RunOptions::default()
    };
    let sides = [
        ("baseline", side(&args.baseline_bin_dir, &[])),
        (
            "candidate",
            side(&args.candidate_bin_dir, &args.candidate_arg),
        ),
    ];
    let mut runs: [Vec<compare::Run>; 2] = [Vec::new(), Vec::new()];
    let mut first_dir: Option<PathBuf> = None;
    let warmups = args.warmup_runs;
    for i in 0..warmups + args.runs {
        for s in side_order(i.saturating_sub(warmups), i < warmups) {
            let (label, opts) = &sides[s];
            if cancel.is_cancelled() {
                return Ok(Made::Interrupted);
            }
            if i < warmups {
                eprintln!(
                    "faultline compare: {label} warm-up run {} of {warmups} (not compared)",
                    i + 1
                );
            } else {
                eprintln!(
                    "faultline compare: {label} run {} of {}",
                    i - warmups + 1,
                    args.runs
                );
            }
            let outcome = runner::run_file(&path, opts, cancel.clone())
                .await
                .map_err(|e| e.to_string())?;
            if outcome.interrupted {
                return Ok(Made::Interrupted);
            }
            if !outcome.metrics.passed() {
                eprintln!(
                    "note: {label} run {} did not pass its SLOs ({}); it is compared all the same",
                    outcome.metrics.run.run_id,
                    outcome.dir.join("index.html").display()
                );
            }
            if i < warmups {
                continue;
            }
            first_dir.get_or_insert_with(|| outcome.dir.clone());
            runs[s].push(compare::Run::from_metrics(&outcome.dir, outcome.metrics));
        }
    }
    let first = first_dir.ok_or("no run was made")?;
    let id = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = first
        .parent()
        .map_or_else(|| args.reports.clone(), Path::to_path_buf)
        .join(format!("compare-{id}"));
    let [b, c] = runs;
    Ok(Made::Done(b, c, dir))
}

/// The sides (0 baseline, 1 candidate) of the `pair`-th pair of runs, in order: B C, C B,
/// B C, ... (ABBA), so a machine that slows down or speeds up steadily over the runs
/// shifts both sides' medians alike; warm-up pairs are B C.
fn side_order(pair: u32, warmup: bool) -> [usize; 2] {
    if warmup || pair % 2 == 0 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// `DIR/index.html` and `DIR/comparison.json`.
fn write_page(
    dir: &Path,
    c: &compare::Comparison,
    history: Option<&[compare::Run]>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let page = dir.join("index.html");
    std::fs::write(&page, compare::html(c, history))
        .map_err(|e| format!("writing {}: {e}", page.display()))?;
    let json = dir.join("comparison.json");
    let text =
        serde_json::to_string_pretty(c).map_err(|e| format!("serialising the comparison: {e}"))?;
    std::fs::write(&json, text + "\n").map_err(|e| format!("writing {}: {e}", json.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_alternate_in_balanced_order_after_warm_ups() {
        let order: Vec<usize> = (0..4).flat_map(|p| side_order(p, false)).collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0]);
        // Over every two pairs, each side's mean position is the same: a linear drift
        // adds the same to both medians.
        let mean = |side: usize| {
            let at: Vec<usize> = (0..order.len()).filter(|&i| order[i] == side).collect();
            at.iter().sum::<usize>() as f64 / at.len() as f64
        };
        assert_eq!(mean(0), mean(1));
        assert_eq!(side_order(1, true), [0, 1]);
    }
}
