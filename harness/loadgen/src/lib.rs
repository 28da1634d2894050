//! `loadgen`: a wrk2-class HTTP load generator, usable as a library (the `faultline`
//! runner calls [`run_open_loop`], [`run_closed_loop`] and [`search_max_throughput`]) and
//! as `faultline load URL …` through [`cli`].
//!
//! What it measures follows `metrics.md`: latency from the *intended* send time
//! (coordinated-omission corrected) next to the uncorrected service time and the send
//! lag, HdrHistograms (µs, 3 significant digits) per window and per phase, and
//! accounting in which every request ends in exactly one bucket
//! (`sent = ok + errors + timeouts + dropped_by_generator`). Corrected latency comes twice:
//! over successes (`latency`) and over every request, a failure until it was given up
//! (`latency_all`), so no percentile leaves out the requests that fared worst.
//!
//! Codemap:
//! - [`schedule`]: pure open-loop schedule (constant / Poisson, rate steps, mix choice).
//! - [`record`]: pure histogram windowing and merging; [`LoadReport`] and its digest.
//! - [`sse`]: pure SSE parsing for TTFT / ITL / TPOT.
//! - [`search`]: pure bisection and trial verdicts; the async search loop.
//! - `http1`: pure HTTP/1.1 client codec (request bytes, incremental response reader).
//! - `conn`: one HTTP/1.1 keep-alive connection on that codec, error classification.
//! - `run`: the async drivers (scheduler thread, connection workers).
//! - [`cli`]: `faultline load` arguments, human / JSON output and exit status
//!   ([`cli::Verdict`]).
//! - `fuzzing` (hidden): drives the `http1` reader for the cargo-fuzz targets in
//!   `harness/fuzz`.
//!
//! Not here: HTTPS, HTTP/2, pipelining, retries (a failed request is counted, never
//! retried).

/// The histogram crate, re-exported so callers merge and query with the same version.
pub use hdrhistogram;

pub mod cli;
mod conn;
mod counts;
#[doc(hidden)]
pub mod fuzzing;
mod http1;
pub mod record;
mod run;
pub mod schedule;
pub mod search;
mod spec;
pub mod sse;

pub use counts::{Counts, ErrorKind, UnknownErrorKind, DROP_SHARE_WARN_ABOVE};
pub use record::{
    new_histogram, ConnectionUse, FineWindow, HistogramSummary, LatencyStats, LoadReport,
    PhaseStats, PhaseSummary, ReportSummary, TargetStats, TargetSummary, WindowStats,
    WindowSummary,
};
pub use run::{
    default_open_loop_threads, run_closed_loop, run_closed_loop_on, run_open_loop,
    run_open_loop_on, Progress,
};
pub use search::{
    search_max_throughput, search_max_throughput_with, SearchCriteria, SearchReport, Trial,
    TrialPurpose, TrialRun,
};
pub use spec::{
    Arrival, LoadError, LoadSpec, OpenLoopSpec, RateStep, RequestTemplate, SpecProblem,
    DEFAULT_FINE_WINDOW, DEFAULT_WINDOW,
};
