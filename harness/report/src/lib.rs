//! Run reports: the `metrics.json` model ([`model`]), SVG plots, `index.html`, JUnit XML.
//!
//! [`write_run`] writes everything into a run folder; [`junit_xml`], [`summary_json`] and
//! [`text_summary`] give the same verdicts for CI and the terminal. [`Percentiles::from_histogram`]
//! and [`distribution_from_histograms`] turn the runner's microsecond HdrHistograms into the
//! model's millisecond figures.
//!
//! Not here: measuring anything; the runner fills [`RunMetrics`] and calls this crate.

pub mod format;
mod html;
mod junit;
pub mod model;
mod percentiles;
pub mod plots;
mod summary;
pub mod svg;
pub mod training;

use std::path::{Path, PathBuf};

pub use junit::junit_xml;
pub use model::*;
pub use percentiles::{distribution_from_histograms, nines};
pub use summary::{summary_json, text_summary};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {file}: {message}")]
    Plot { file: String, message: String },
    #[error("serializing metrics.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// What [`write_run`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `index.html` in the run folder.
    pub index: PathBuf,
    /// Every file written, `metrics.json` first.
    pub files: Vec<PathBuf>,
}

/// Writes `metrics.json` (pretty), the SVG plots, `index.html` and `junit.xml` into `dir`,
/// an existing run folder (the runner writes `events.jsonl` and process logs there itself;
/// the page links them). Existing files of the same names are replaced.
///
/// # Errors
/// [`ReportError::Io`] naming the file that could not be written (for instance when `dir`
/// does not exist); [`ReportError::Plot`] if plotters fails.
pub fn write_run(dir: &Path, metrics: &RunMetrics) -> Result<Written, ReportError> {
    let mut files = Vec::new();
    let mut write = |name: &str, contents: &[u8]| -> Result<PathBuf, ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        files.push(path.clone());
        Ok(path)
    };
    let json = serde_json::to_string_pretty(metrics)? + "\n";
    write("metrics.json", json.as_bytes())?;
    let plots =
        plots::build(metrics).map_err(|(file, message)| ReportError::Plot { file, message })?;
    for plot in &plots {
        write(&plot.file, plot.svg.as_bytes())?;
    }
    write("junit.xml", junit_xml(metrics).as_bytes())?;
    let index = write("index.html", html::page(metrics, &plots).as_bytes())?;
    tracing::debug!(dir = %dir.display(), files = files.len(), "report written");
    Ok(Written { index, files })
}
