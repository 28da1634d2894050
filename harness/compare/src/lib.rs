//! Night-to-night comparison of faultline runs: "is tonight worse than last night?"
//!
//! [`load_run`] reads one run folder's `metrics.json`; [`load_history`] every run folder
//! of a scenario's report folder, oldest first. Each [`Run`] carries the figures
//! extracted from it ([`extract`]: serving phases, recoveries, searches, training and the
//! named `figures[]`, each with a unit, a [`Direction`] and per-window samples where the
//! run has them). [`compare()`] judges every figure of a candidate set of runs against a
//! baseline set and returns a serialisable [`Comparison`]; [`text`], [`junit_xml`],
//! [`html`] render it and [`exit_code`] turns it into a process status.
//! [`change_points`] finds where one figure's history shifted (E-divisive means).
//!
//! # How a verdict is reached
//!
//! (The same text, with examples, is in `docs/compare.md`.)
//!
//! * **Per-run samples**, when both sides have at least 3 runs with the figure: the
//!   samples are the runs' values. The p-value is a two-sided Mann-Whitney U test, exact
//!   without ties for m + n ≤ 40, else the normal approximation with tie correction. The
//!   interval is an iid bootstrap ([`Options::resamples`], seeded) of the relative change
//!   of medians. The smallest attainable p is 2 / C(m+n, m): 0.1 for 3 runs against 3,
//!   so at α = 0.05 that test cannot decide and the next rule applies (or the figure is
//!   `NotComparable`, saying so); 4 against 4 (0.029) or 3 against 5 (0.036) can.
//! * **Pooled windows**, otherwise, for figures with per-window samples (a phase's
//!   throughput and p99), when each side has at least [`MIN_WINDOWS`]: the windows of all
//!   runs of a side are pooled and resampled by a moving-block bootstrap (block length
//!   ⌈n^(1/3)⌉ windows for a run of n windows; blocks never cross runs) because
//!   consecutive windows are autocorrelated. The p-value comes from the same bootstrap
//!   (a rank test would assume independent windows).
//! * **Single values** (recovery time, best rate, training figures) with fewer than 3
//!   runs on a side are `NotComparable` ("one sample per side" / "n runs against m"): one
//!   value per side carries no noise estimate, and a change of any size can be noise.
//!   Repeat the runs (3+ per side, 4+ for α = 0.05) to judge them.
//! * The relative change is (median(candidate) − median(baseline)) / |median(baseline)|.
//!   A figure is **Worse** when that change is beyond [`Options::magnitude_floor`] in its
//!   bad direction **and** the 1 − α interval excludes 0 **and** p < α; **Better** the
//!   same in the good direction; else **NoChange**. A figure missing on one side, with an
//!   unknown direction, or with a baseline median of 0 is **NotComparable** with the
//!   reason.
//!
//! ```no_run
//! # fn main() -> Result<(), compare::CompareError> {
//! let history = compare::load_history(std::path::Path::new("reports/serve-crash-restart"))?;
//! let Some((tonight, before)) = history.runs.split_last() else { return Ok(()) };
//! let c = compare::compare(before, std::slice::from_ref(tonight), &compare::Options::default())?;
//! print!("{}", compare::text(&c));
//! std::process::exit(compare::exit_code(&c));
//! # }
//! ```
//!
//! Not here: running anything, the CLI, choosing which runs are the baseline, or
//! overriding an incompatibility (the caller's `--force`).

mod changepoint;
mod compare;
pub mod extract;
mod render;
pub mod stats;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use changepoint::{
    change_points, ChangePoint, ChangePointOptions, MAX_PERMUTATIONS, MAX_SERIES,
};
pub use compare::{
    compare, history_values, Comparison, FigureComparison, Incompatibility, Method, Options,
    RunSummary, SideSummary, Verdict, MAX_RESAMPLES, MIN_RUNS, MIN_WINDOWS,
};
pub use extract::{Direction, RunFigure};
pub use render::{exit_code, html, junit_xml, text};

/// The largest `metrics.json` read (256 MiB); a bigger file is refused, not read.
pub const MAX_METRICS_BYTES: u64 = 256 * 1024 * 1024;
/// The most run folders [`load_history`] reads; more is an error naming the limit.
pub const MAX_HISTORY_RUNS: usize = 1000;

/// Why runs could not be loaded or compared. Each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no such file; expected a faultline run folder holding metrics.json (reports/<scenario>/<run-id>/)", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {size} bytes is above the limit of {MAX_METRICS_BYTES} bytes for metrics.json", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}: not a faultline metrics.json: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: schema_version {found}, expected {expected} (written by another faultline version; compare runs of one version)", path.display())]
    Schema {
        path: PathBuf,
        found: u64,
        expected: u32,
    },
    #[error("{}: {count} run folders is above the limit of {MAX_HISTORY_RUNS}; point at a smaller folder", dir.display())]
    TooManyRuns { dir: PathBuf, count: usize },
    #[error("invalid options: {}", .0.join("; "))]
    Options(Vec<String>),
}

/// One loaded run: where it was, its metrics, and the figures extracted from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The run folder.
    pub dir: PathBuf,
    pub metrics: report::RunMetrics,
    /// [`extract::figures`] of `metrics`.
    pub figures: Vec<RunFigure>,
}

impl Run {
    /// A run from metrics already in memory (`dir` only labels it).
    pub fn from_metrics(dir: impl Into<PathBuf>, metrics: report::RunMetrics) -> Self {
        let figures = extract::figures(&metrics);
        Self {
            dir: dir.into(),
            metrics,
            figures,
        }
    }

    /// The figure called `name`, if the run has it.
    pub fn figure(&self, name: &str) -> Option<&RunFigure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// Reads `dir/metrics.json` (at most [`MAX_METRICS_BYTES`]).
///
/// # Errors
/// [`CompareError::Missing`] without the file, [`CompareError::TooLarge`],
/// [`CompareError::Io`], [`CompareError::Malformed`] when it is not JSON or not a
/// `RunMetrics`, [`CompareError::Schema`] for another `schema_version`.
pub fn load_run(dir: &Path) -> Result<Run, CompareError> {
    let path = dir.join("metrics.json");
    let io = |source: std::io::Error| CompareError::Io {
        path: path.clone(),
        source,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CompareError::Missing { path });
        }
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_METRICS_BYTES {
        return Err(CompareError::TooLarge {
            path,
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(&path).map_err(io)?;
    // The version first, so an old or new layout says so instead of "missing field".
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u64,
    }
    let version: Version =
        serde_json::from_slice(&bytes).map_err(|source| CompareError::Malformed {
            path: path.clone(),
            source,
        })?;
    if version.schema_version != u64::from(report::SCHEMA_VERSION) {
        return Err(CompareError::Schema {
            path,
            found: version.schema_version,
            expected: report::SCHEMA_VERSION,
        });
    }
    let metrics: report::RunMetrics =
        serde_json::from_slice(&bytes).map_err(|source| CompareError::Malformed {
            path: path.clone(),
            source,
        })?;
    Ok(Run::from_metrics(dir, metrics))
}

/// A folder skipped by [`load_history`], and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub dir: PathBuf,
    pub reason: String,
}

/// Every run of a scenario's report folder, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// Ordered by `run.started_at` (RFC 3339 UTC, which sorts as text), then run id.
    pub runs: Vec<Run>,
    /// Sub-folders that hold no `metrics.json` (a run that died before its report) or
    /// whose `metrics.json` could not be read, with the error: one broken night does not
    /// hide the others.
    pub skipped: Vec<Skipped>,
}

/// Loads every run folder directly under `dir` (`reports/<scenario>/`), skipping
/// symbolic links (`latest`), `series-*` folders and plain files.
///
/// # Errors
/// [`CompareError::Io`] when `dir` cannot be listed; [`CompareError::TooManyRuns`] above
/// [`MAX_HISTORY_RUNS`] folders.
pub fn load_history(dir: &Path) -> Result<History, CompareError> {
    let io = |source| CompareError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let kind = entry.file_type().map_err(io)?;
        let name = entry.file_name();
        if kind.is_symlink() || !kind.is_dir() || name.to_string_lossy().starts_with("series-") {
            continue;
        }
        folders.push(entry.path());
        if folders.len() > MAX_HISTORY_RUNS {
            return Err(CompareError::TooManyRuns {
                dir: dir.to_path_buf(),
                count: folders.len(),
            });
        }
    }
    folders.sort();
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for folder in folders {
        match load_run(&folder) {
            Ok(run) => runs.push(run),
            Err(e) => skipped.push(Skipped {
                dir: folder,
                reason: e.to_string(),
            }),
        }
    }
    runs.sort_by(|a, b| {
        (&a.metrics.run.started_at, &a.metrics.run.run_id)
            .cmp(&(&b.metrics.run.started_at, &b.metrics.run.run_id))
    });
    Ok(History { runs, skipped })
}
