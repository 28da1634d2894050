//! `faultline load URL …`: arguments, and a wrk-like human summary or `--json`.
//!
//! The faultline binary flattens [`LoadArgs`] into its `load` subcommand, calls [`run`]
//! and exits with [`Verdict::exit_code`]; `cargo run -p loadgen --release --example load
//! -- URL …` does the same without it. Every flag value is checked when parsed, and the
//! error names the flag and what it expects. The output and exit statuses are documented
//! in the crate's README ("Output", "Exit status").

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::{HeaderName, HeaderValue, Method, Uri};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::counts::{Counts, ErrorKind, DROP_SHARE_WARN_ABOVE};
use crate::record::{HistogramSummary, LoadReport, ReportSummary};
use crate::search::{SearchCriteria, SearchReport};
use crate::{
    default_open_loop_threads, run_closed_loop_on, run_open_loop_on, search_max_throughput,
    Arrival, LoadSpec, OpenLoopSpec, RequestTemplate,
};

/// Arrival process flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalArg {
    Constant,
    Poisson,
}

/// Arguments of `faultline load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Target URL: http://host:port/path?query. Repeat for several targets (round-robin);
    /// every target takes the same path and query.
    #[arg(value_name = "URL", required = true, value_parser = parse_url)]
    pub urls: Vec<Uri>,
    /// Offered rate, requests per second (open loop; required unless --closed-loop or
    /// --search).
    #[arg(long, value_name = "PER_S", value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// Arrival process of the open-loop schedule.
    #[arg(long, value_enum, default_value = "constant")]
    pub arrival: ArrivalArg,
    /// Measured phase length, e.g. 30s, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before the measured phase.
    #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
    pub warmup: Duration,
    /// Keep-alive connections per target.
    #[arg(short = 'c', long, default_value = "10", value_parser = parse_connections, allow_negative_numbers = true)]
    pub connections: usize,
    /// Open loop: when a request comes due and every connection to its target is busy,
    /// open another for it, up to this many per target (k6's maxVUs); the extra ones stay
    /// open until the run ends. Default: no more than --connections (such a request waits
    /// for a free connection; its wait is send lag). At least --connections.
    #[arg(long, value_name = "N", value_parser = parse_connections, allow_negative_numbers = true, conflicts_with = "closed_loop")]
    pub max_connections: Option<usize>,
    /// Per-request timeout, from the actual send. Open loop: also the longest a request
    /// may wait for a free connection; one that waited longer is dropped unsent
    /// (`dropped by generator`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// HTTP method.
    #[arg(long, default_value = "GET", value_parser = parse_method)]
    pub method: Method,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
    /// Extra header, "Name: value"; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Parse responses as server-sent events and report TTFT, ITL and TPOT.
    #[arg(long)]
    pub stream: bool,
    /// Closed loop (like wrk): each connection sends as soon as its previous response ends.
    #[arg(long, conflicts_with_all = ["rate", "search"])]
    pub closed_loop: bool,
    /// Event-loop threads, each owning an equal share of the connections; in an open loop
    /// each also releases its share of the schedule. Default: one per core for
    /// --closed-loop, half the cores (at least 1) for an open loop, whose threads spin
    /// before each send. At most one per connection, and at most 1024.
    #[arg(short = 't', long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Seed of every random choice (Poisson gaps, request mix).
    #[arg(long, default_value = "0")]
    pub seed: u64,
    /// Print the report as JSON instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Search for the highest open-loop rate meeting the SLO (bisection; --warmup and
    /// --duration are per trial).
    #[arg(long)]
    pub search: bool,
    /// SLO: corrected latency bound at --slo-percentile, milliseconds (required by --search).
    #[arg(long, value_name = "MS", value_parser = parse_positive, allow_negative_numbers = true)]
    pub slo_p99_ms: Option<f64>,
    /// Percentile the latency SLO applies to.
    #[arg(long, default_value = "99", value_parser = parse_percentile)]
    pub slo_percentile: f64,
    /// SLO: largest failed / sent ratio.
    #[arg(long, default_value = "0.01", value_parser = parse_ratio, allow_negative_numbers = true)]
    pub slo_error_ratio: f64,
    /// Lowest rate the search tries, per second.
    #[arg(long, default_value = "10", value_parser = parse_rate, allow_negative_numbers = true)]
    pub search_min_rate: f64,
    /// Highest rate the search tries, per second (required by --search).
    #[arg(long, value_parser = parse_rate, allow_negative_numbers = true)]
    pub search_max_rate: Option<f64>,
    /// Most trials the search runs.
    #[arg(long, default_value = "8", value_parser = clap::value_parser!(u32).range(1..))]
    pub search_steps: u32,
}

fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("expected an http:// URL such as http://127.0.0.1:8080/path ({e})"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err("expected an http:// URL with a host (https is not supported)".into());
    }
    Ok(uri)
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a number > 0".into()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    parse_positive(s).map_err(|_| "expected requests per second, a number > 0".into())
}

fn parse_percentile(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
        _ => Err("expected a percentile in (0, 100], e.g. 99 or 99.9".into()),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a ratio in [0, 1], e.g. 0.01".into()),
    }
}

/// Most `--connections` and `--max-connections` per target: each is a socket and a
/// 16 KiB read buffer here (and a socket in the target); a million is far past any
/// machine's open-file limit.
pub const MAX_CONNECTIONS: usize = 1_000_000;

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=MAX_CONNECTIONS).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a whole number of connections >= 1 and <= {MAX_CONNECTIONS}"
        )),
    }
}

/// Most `--threads`: one OS thread each.
const MAX_THREADS: usize = 1024;

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=MAX_THREADS).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a whole number of threads from 1 to {MAX_THREADS}"
        )),
    }
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 500ms, 10s or 2m ({e})"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_or_zero(s)? {
        d if d.is_zero() => Err("expected a duration > 0, such as 500ms, 10s or 2m".into()),
        d => Ok(d),
    }
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.as_bytes())
        .map_err(|_| "expected an HTTP method such as GET or POST".into())
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or("expected \"Name: value\" (a colon between name and value)")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("expected a valid header name, got {:?}", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| "expected a header value of visible ASCII".to_owned())?;
    Ok((name, value))
}

impl LoadArgs {
    /// Splits each URL into a base (scheme + authority) and one request template.
    fn targets_and_requests(&self) -> anyhow::Result<(Vec<Uri>, Vec<RequestTemplate>)> {
        let body = match (&self.body, &self.body_file) {
            (Some(b), _) => Bytes::from(b.clone()),
            (None, Some(path)) => Bytes::from(
                std::fs::read(path)
                    .with_context(|| format!("--body-file {}: cannot read", path.display()))?,
            ),
            (None, None) => Bytes::new(),
        };
        let mut targets = Vec::new();
        let mut paths = Vec::new();
        for url in &self.urls {
            let base: Uri = format!(
                "http://{}",
                url.authority().map(|a| a.as_str()).unwrap_or_default()
            )
            .parse()
            .with_context(|| format!("URL {url}: bad host"))?;
            targets.push(base);
            paths.push(url.path_and_query().map_or("/", |p| p.as_str()).to_owned());
        }
        let first = &paths[0];
        if paths.iter().any(|p| p != first) {
            bail!("URL: every target must use the same path and query (got {paths:?})");
        }
        let request = RequestTemplate {
            name: "cli".into(),
            method: self.method.clone(),
            path: first.clone(),
            headers: self.headers.clone(),
            body,
            streaming: self.stream,
            weight: 1.0,
        };
        Ok((targets, vec![request]))
    }

    /// The flags every run shares: targets, request, connections, phases, timeout, seed.
    fn load_spec(&self) -> anyhow::Result<LoadSpec> {
        let (targets, requests) = self.targets_and_requests()?;
        let mut load = LoadSpec::new(targets, requests);
        load.warmup = self.warmup;
        load.duration = self.duration;
        load.connections = self.connections;
        load.timeout = self.timeout;
        load.seed = self.seed;
        Ok(load)
    }

    fn open_loop_spec(&self, rate: f64) -> anyhow::Result<OpenLoopSpec> {
        if let Some(max) = self.max_connections.filter(|m| *m < self.connections) {
            bail!(
                "--max-connections {max}: expected at least --connections ({}): the pool starts at --connections and only grows",
                self.connections
            );
        }
        let arrival = match self.arrival {
            ArrivalArg::Constant => Arrival::Constant,
            ArrivalArg::Poisson => Arrival::Poisson,
        };
        Ok(OpenLoopSpec {
            load: self.load_spec()?,
            rate_per_s: rate,
            arrival,
            rate_steps: Vec::new(),
            max_connections: self.max_connections,
        })
    }
}

/// Which loop drove a run (named as in scenario files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Requests at their scheduled times: latency is corrected for coordinated omission.
    OpenLoop,
    /// Each connection sends when its previous response ends. There is no schedule, so
    /// "corrected" latency is the service time and the send lag is 0: neither is shown.
    ClosedLoop,
}

/// How a `faultline load` run ended, and the exit status it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The load ran and at least one request of the measured phase succeeded (2xx):
    /// exit status 0.
    Ran,
    /// No request of the measured phase succeeded: every one failed (nothing listening,
    /// only error statuses, timeouts, …) or none was sent. The figures measure nothing
    /// but the failures: exit status [`Verdict::NO_REQUEST_SUCCEEDED_EXIT`]. (In a
    /// search: no request of any trial succeeded.)
    NoRequestSucceeded,
}

impl Verdict {
    /// Exit status when no request succeeded (2 is left to usage and startup errors).
    pub const NO_REQUEST_SUCCEEDED_EXIT: u8 = 1;

    /// The process exit status for this verdict: 0 or [`Self::NO_REQUEST_SUCCEEDED_EXIT`].
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ran => 0,
            Verdict::NoRequestSucceeded => Self::NO_REQUEST_SUCCEEDED_EXIT,
        }
    }

    fn of<'a>(reports: impl IntoIterator<Item = &'a LoadReport>) -> Self {
        if reports.into_iter().any(|r| r.measured.counts.ok > 0) {
            Verdict::Ran
        } else {
            Verdict::NoRequestSucceeded
        }
    }
}

/// What a run prints on stdout, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The human summary or the JSON report, newline-terminated.
    pub text: String,
    pub verdict: Verdict,
}

/// Exit status after a second Ctrl-C, which quits without waiting for the requests in
/// flight or printing the report (128 + SIGINT, as shells report it).
pub const INTERRUPTED_TWICE_EXIT: i32 = 130;

/// Runs the load the arguments describe and prints its report to stdout; the caller
/// exits with the verdict's [`Verdict::exit_code`]. Ctrl-C stops the load early and still
/// prints what was measured. Errors are usage or startup errors (bad flags, unreadable
/// body file, unresolvable target), before any load.
pub async fn run(args: LoadArgs) -> anyhow::Result<Verdict> {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    // Installed now, not when the task first runs: an early Ctrl-C must still print the
    // report rather than kill the process.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let timeout = humantime::format_duration(args.timeout).to_string();
    let signal = tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            on_signal.cancel();
            eprintln!(
                "interrupted: the load stops; requests in flight get up to their timeout ({timeout}) to finish, then the report is printed. Ctrl-C again to quit at once without it."
            );
            if interrupt.recv().await.is_some() {
                eprintln!("interrupted again: quitting without the report");
                std::process::exit(INTERRUPTED_TWICE_EXIT);
            }
        }
    });
    let out = execute(&args, cancel).await;
    signal.abort();
    let out = out?;
    print!("{}", out.text);
    Ok(out.verdict)
}

/// The `--json` report of one run: the [`ReportSummary`] with how it was driven and how
/// it ended.
#[derive(Serialize)]
struct JsonReport {
    mode: Mode,
    /// False in a closed loop: `latency` there equals `service` and `send_lag` is 0.
    latency_corrected: bool,
    verdict: Verdict,
    /// The warnings the human summary prints ([`drop_warning`]); empty when none.
    warnings: Vec<String>,
    #[serde(flatten)]
    summary: ReportSummary,
}

/// The warning when more than [`DROP_SHARE_WARN_ABOVE`] of the measured phase's requests
/// were dropped by the generator; `None` at or below it (or when nothing was sent).
pub fn drop_warning(counts: &Counts, timeout: Duration) -> Option<String> {
    let share = counts.drop_share().filter(|s| *s > DROP_SHARE_WARN_ABOVE)?;
    Some(format!(
        "WARNING: {:.1} % of requests ({} of {}) were dropped by the generator, above {} %: \
         never sent, because no connection came free within the timeout ({}) or they were \
         still queued when the run stopped. The target did not keep up with the offered \
         rate over these connections. Success-only latency leaves them out; latency over \
         all requests counts each until it was given up.",
        share * 100.0,
        counts.dropped_by_generator,
        counts.sent,
        DROP_SHARE_WARN_ABOVE * 100.0,
        humantime::format_duration(timeout),
    ))
}

/// The warning when the generator itself failed requests for want of file descriptors or
/// local ports ([`ErrorKind::GeneratorResources`]); `None` when it never did.
pub fn resource_warning(counts: &Counts) -> Option<String> {
    let n = *counts.errors.get(&ErrorKind::GeneratorResources)?;
    Some(format!(
        "WARNING: {n} request(s) failed in the generator itself (generator_resources): it ran \
         out of file descriptors or local ports opening connections. These failures are not \
         the target's; raise the open-file limit (ulimit -n) or lower --connections / \
         --max-connections."
    ))
}

/// Send lag p99 of the measured phase above which an open loop warns that it did not
/// hold its schedule (a held schedule keeps it in the tens of microseconds here).
pub const SEND_LAG_WARN_ABOVE_US: u64 = 1_000;

/// The warning when an open loop's measured send lag p99 is above
/// [`SEND_LAG_WARN_ABOVE_US`]: requests went out late, waiting for a free connection or
/// for the generator itself; `None` at or below it.
pub fn schedule_warning(send_lag: &HistogramSummary) -> Option<String> {
    let p99 = send_lag.p99_us.filter(|us| *us > SEND_LAG_WARN_ABOVE_US)?;
    Some(format!(
        "WARNING: the generator did not hold its schedule: send lag p99 {} (above {}): \
         requests waited for a free connection or for the generator itself before they \
         went out. Corrected latency counts the wait; raise -c or --max-connections, or \
         lower --rate, to measure the target rather than the generator's queue.",
        fmt_us(p99),
        fmt_us(SEND_LAG_WARN_ABOVE_US)
    ))
}

/// Runs the load and returns what `run` prints, with the verdict.
pub async fn execute(args: &LoadArgs, cancel: CancellationToken) -> anyhow::Result<Output> {
    if args.search {
        let Some(latency_ms) = args.slo_p99_ms else {
            bail!("--search needs --slo-p99-ms <MS>: the latency bound the rate must meet");
        };
        let Some(rate_max) = args.search_max_rate else {
            bail!("--search needs --search-max-rate <PER_S>: the highest rate to try");
        };
        if rate_max < args.search_min_rate {
            bail!(
                "--search-max-rate {rate_max}: expected at least --search-min-rate ({})",
                args.search_min_rate
            );
        }
        let base = args.open_loop_spec(rate_max)?;
        let criteria = SearchCriteria {
            percentile: args.slo_percentile,
            latency_max: Duration::from_secs_f64(latency_ms / 1000.0),
            error_ratio_max: args.slo_error_ratio,
            rate_min: args.search_min_rate,
            rate_max,
            steps: args.search_steps,
            trial_warmup: args.warmup,
            trial_duration: args.duration,
        };
        let report = search_max_throughput(&base, &criteria, cancel).await?;
        let verdict = Verdict::of(report.trials.iter().map(|t| &t.report));
        let text = if args.json {
            serde_json::to_string_pretty(&search_json(&report, verdict))? + "\n"
        } else {
            render_search(&criteria, &report, verdict)
        };
        return Ok(Output { text, verdict });
    }
    let mode = if args.closed_loop {
        Mode::ClosedLoop
    } else {
        Mode::OpenLoop
    };
    let (report, header) = if args.closed_loop {
        let spec = args.load_spec()?;
        let header = format!(
            "closed loop, {} connection(s) per target, seed {}",
            args.connections, args.seed
        );
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        (
            run_closed_loop_on(&spec, threads, cancel, None).await?,
            header,
        )
    } else {
        let Some(rate) = args.rate else {
            bail!("--rate <PER_S> is required for an open-loop run (or pass --closed-loop or --search)");
        };
        let spec = args.open_loop_spec(rate)?;
        let header = format!(
            "open loop, {rate}/s {:?}, {} connection(s) per target, seed {}",
            args.arrival, args.connections, args.seed
        )
        .to_lowercase();
        let threads = args.threads.unwrap_or_else(default_open_loop_threads);
        (
            run_open_loop_on(&spec, threads, cancel, None).await?,
            header,
        )
    };
    let verdict = Verdict::of([&report]);
    if args.json {
        let mut summary = report.summary();
        for (t, url) in summary.targets.iter_mut().zip(&args.urls) {
            t.url = Some(url.to_string());
        }
        let late = if mode == Mode::OpenLoop {
            schedule_warning(&summary.measured.send_lag)
        } else {
            None
        };
        let json = JsonReport {
            mode,
            latency_corrected: mode == Mode::OpenLoop,
            verdict,
            warnings: drop_warning(&report.measured.counts, args.timeout)
                .into_iter()
                .chain(late)
                .chain(resource_warning(&report.accounting))
                .collect(),
            summary,
        };
        let text = serde_json::to_string_pretty(&json)? + "\n";
        return Ok(Output { text, verdict });
    }
    let urls: Vec<String> = args.urls.iter().map(ToString::to_string).collect();
    let text = render_report(
        &urls.join(", "),
        &header,
        &report,
        args.stream,
        mode,
        args.timeout,
    );
    Ok(Output { text, verdict })
}

fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// A figure of an empty histogram is "n/a", not a latency of 0.
fn fmt_opt_us(us: Option<u64>) -> String {
    us.map_or_else(|| "n/a".to_owned(), fmt_us)
}

/// Mean and standard deviation, to the microsecond.
fn fmt_opt_f64_us(us: Option<f64>) -> String {
    fmt_opt_us(us.map(|v| v.round() as u64))
}

/// Bytes in binary units, as wrk prints them (but named KiB, MiB, GiB).
fn fmt_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024.0 {
        return format!("{bytes:.0}B");
    }
    let mut v = bytes / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

fn hist_row(out: &mut String, name: &str, h: &HistogramSummary) {
    let _ = writeln!(
        out,
        "    {name:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        fmt_opt_f64_us(h.mean_us),
        fmt_opt_f64_us(h.stdev_us),
        fmt_opt_us(h.p50_us),
        fmt_opt_us(h.p90_us),
        fmt_opt_us(h.p95_us),
        fmt_opt_us(h.p99_us),
        fmt_opt_us(h.p999_us),
        fmt_opt_us(h.max_us),
        h.count
    );
}

/// The wrk-like human summary of one run (measured phase). A closed loop shows service
/// time only: without a schedule, corrected latency is the same histogram and the send
/// lag is 0. Every run shows `all` (every request, failures until given up) beside the
/// success-only rows; an open loop shows the drop share under them, with a warning line
/// above [`DROP_SHARE_WARN_ABOVE`]. `timeout` is the run's request timeout.
pub fn render_report(
    urls: &str,
    header: &str,
    report: &LoadReport,
    streaming: bool,
    mode: Mode,
    timeout: Duration,
) -> String {
    let s: ReportSummary = report.summary();
    let m = &s.measured;
    let mut out = String::new();
    let _ = writeln!(out, "{header} @ {urls}");
    let _ = writeln!(
        out,
        "  warm-up {:.1}s, measured {:.1}s",
        s.warmup.end_s - s.warmup.start_s,
        m.end_s - m.start_s
    );
    if mode == Mode::ClosedLoop {
        let _ = writeln!(
            out,
            "  closed loop: no schedule, so latency is the service time (corrected = service, send lag 0)"
        );
    }
    let _ = writeln!(
        out,
        "  Latency    {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "mean", "stdev", "p50", "p90", "p95", "p99", "p99.9", "max", "count"
    );
    if mode == Mode::OpenLoop {
        hist_row(&mut out, "corrected", &m.latency);
        hist_row(&mut out, "all", &m.latency_all);
    }
    hist_row(&mut out, "service", &m.service);
    if mode == Mode::OpenLoop {
        hist_row(&mut out, "send lag", &m.send_lag);
    } else {
        hist_row(&mut out, "all", &m.latency_all);
    }
    let timeout_text = humantime::format_duration(timeout);
    match mode {
        Mode::OpenLoop => {
            let _ = writeln!(
                out,
                "  Rows: corrected and service count successes only; all counts every request, a \
                 failure until it was given up (a timeout: at least {timeout_text}; a drop: its wait for a connection)"
            );
            let _ = writeln!(
                out,
                "  Dropped by generator: {} of {} sent ({})",
                m.counts.dropped_by_generator,
                m.counts.sent,
                m.drop_share
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{:.2} %", s * 100.0))
            );
            if let Some(warning) = drop_warning(&m.counts, timeout) {
                let _ = writeln!(out, "  {warning}");
            }
            if let Some(warning) = schedule_warning(&m.send_lag) {
                let _ = writeln!(out, "  {warning}");
            }
            if let Some(warning) = resource_warning(&report.accounting) {
                let _ = writeln!(out, "  {warning}");
            }
            let pool = &s.connections;
            if pool.limit > pool.initial {
                let _ = writeln!(
                    out,
                    "  Connections: {} at the start, {} added when every connection to a target was busy (at most {} in all)",
                    pool.initial, pool.added, pool.limit
                );
            }
        }
        Mode::ClosedLoop => {
            let _ = writeln!(
                out,
                "  Rows: service counts successes only; all counts every request, a failure \
                 until it was given up (a timeout: at least {timeout_text})"
            );
        }
    }
    if streaming {
        hist_row(&mut out, "ttft", &m.ttft);
        hist_row(&mut out, "itl", &m.itl);
        hist_row(&mut out, "tpot", &m.tpot);
        let _ = writeln!(
            out,
            "  Output tokens: {} ({:.1}/s)",
            m.output_tokens, m.output_tokens_per_s
        );
    }
    let c = &m.counts;
    let _ = writeln!(
        out,
        "  Requests: sent {}, ok {}, errors {}, timeouts {}, dropped by generator {} ({})",
        c.sent,
        c.ok,
        c.errors.values().sum::<u64>(),
        c.timeouts,
        c.dropped_by_generator,
        if s.balanced {
            "balanced"
        } else {
            "NOT BALANCED"
        }
    );
    if !c.errors.is_empty() {
        let kinds: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "  Errors: {}", kinds.join(", "));
    }
    if s.targets.len() > 1 {
        // `urls` is the targets joined with ", " in the order given (URLs hold no ", ").
        let names: Vec<&str> = urls.split(", ").collect();
        let _ = writeln!(out, "  Per target (whole run, warm-up included):");
        for (i, t) in s.targets.iter().enumerate() {
            let c = &t.counts;
            let mut failed = Vec::new();
            if !c.errors.is_empty() {
                failed.extend(c.errors.iter().map(|(k, n)| format!("{k} {n}")));
            }
            if c.timeouts > 0 {
                failed.push(format!("timeouts {}", c.timeouts));
            }
            if c.dropped_by_generator > 0 {
                failed.push(format!("dropped {}", c.dropped_by_generator));
            }
            let _ = writeln!(
                out,
                "    {}: sent {}, ok {}, failed {}{}; p99 {}",
                names.get(i).copied().unwrap_or("?"),
                c.sent,
                c.ok,
                c.failed(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failed.join(", "))
                },
                t.latency.p99_us.map_or_else(|| "n/a".to_owned(), fmt_us)
            );
        }
    }
    let _ = writeln!(
        out,
        "  Requests/sec:  {:>10.2}  (responses of any status: {})",
        m.requests_per_s, m.responses
    );
    let _ = writeln!(
        out,
        "  Successes/sec: {:>10.2}  (2xx responses: {})",
        m.successes_per_s, m.completed
    );
    let _ = writeln!(
        out,
        "  Transfer/sec:  {:>10}  ({} read)",
        fmt_bytes(m.bytes_read_per_s),
        fmt_bytes(m.bytes_read as f64)
    );
    if m.counts.ok == 0 {
        let _ = writeln!(
            out,
            "  No request succeeded in the measured phase: exit status {}",
            Verdict::NO_REQUEST_SUCCEEDED_EXIT
        );
    }
    out
}

fn render_search(criteria: &SearchCriteria, r: &SearchReport, verdict: Verdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "max throughput search: p{} <= {:?}, error ratio <= {}, completions >= {} x offered less those still in flight at the trial's end (rate x its p99)",
        criteria.percentile,
        criteria.latency_max,
        criteria.error_ratio_max,
        crate::search::ACHIEVED_MIN_RATIO
    );
    let _ = writeln!(
        out,
        "  {:<8} {:>10} {:>10} {:>10} {:>8} {:>9}  verdict",
        "purpose", "offered/s", "achieved/s", "latency", "errors", "drained"
    );
    for t in &r.trials {
        let _ = writeln!(
            out,
            "  {:<8} {:>10.1} {:>10.1} {:>10} {:>7.2}% {:>9}  {}",
            t.purpose.name(),
            t.rate_per_s,
            t.achieved_rps,
            if t.report.measured.stats.latency.is_empty() {
                "n/a".to_owned()
            } else {
                fmt_us(u64::try_from(t.latency_at_percentile.as_micros()).unwrap_or(u64::MAX))
            },
            t.error_ratio * 100.0,
            t.drained_for.map_or_else(
                || "-".to_owned(),
                |d| fmt_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            ),
            if t.passed { "pass" } else { "fail" }
        );
    }
    let _ = writeln!(
        out,
        "  drained: how long the trial waited for the target to finish the previous trial's backlog (- : no wait)"
    );
    match (r.best_rate_per_s, &r.not_found) {
        (Some(b), _) => {
            let _ = writeln!(out, "  best rate meeting the SLO: {b:.1}/s");
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "  no best rate: {why}");
        }
        (None, None) => {
            let _ = writeln!(out, "  no best rate");
        }
    }
    if verdict == Verdict::NoRequestSucceeded {
        let _ = writeln!(
            out,
            "  No request succeeded in any trial: exit status {}",
            Verdict::NO_REQUEST_SUCCEEDED_EXIT
        );
    }
    out
}

fn search_json(r: &SearchReport, verdict: Verdict) -> serde_json::Value {
    serde_json::json!({
        "mode": "max-throughput",
        "verdict": verdict,
        "best_rate_per_s": r.best_rate_per_s,
        "not_found": r.not_found,
        "trials": r.trials.iter().map(|t| serde_json::json!({
            "purpose": t.purpose.name(),
            "drain_s": t.drained_for.map(|d| d.as_secs_f64()),
            "rate_per_s": t.rate_per_s,
            "achieved_rps": t.achieved_rps,
            "latency_at_percentile_us": (!t.report.measured.stats.latency.is_empty())
                .then_some(t.latency_at_percentile.as_micros() as u64),
            "error_ratio": t.error_ratio,
            "passed": t.passed,
            "report": t.report.summary(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadArgs, String> {
        Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map(|c| c.load)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_parse_into_a_spec() {
        let a = parse(&[
            "http://127.0.0.1:8080/v1/x?y=1",
            "--rate",
            "500",
            "--arrival",
            "poisson",
            "--duration",
            "2s",
            "-c",
            "4",
            "-H",
            "x-test: 1",
            "--method",
            "POST",
            "--body",
            "{}",
        ])
        .expect("valid");
        let spec = a.open_loop_spec(500.0).expect("spec");
        assert_eq!(spec.load.targets[0], "http://127.0.0.1:8080");
        assert_eq!(spec.load.requests[0].path, "/v1/x?y=1");
        assert_eq!(spec.load.requests[0].method, Method::POST);
        assert_eq!(spec.arrival, Arrival::Poisson);
        assert_eq!(spec.load.connections, 4);
        assert_eq!(spec.load.requests[0].headers[0].0, "x-test");
    }

    #[test]
    fn bad_flag_values_name_the_flag_and_the_expectation() {
        let cases: &[(&[&str], &str, &str)] = &[
            (
                &["http://h:1", "--rate", "-3"],
                "--rate",
                "requests per second",
            ),
            (&["http://h:1", "--rate", "x"], "--rate", "a number > 0"),
            (
                &["http://h:1", "--duration", "10"],
                "--duration",
                "a duration such as",
            ),
            (&["http://h:1", "--duration", "0s"], "--duration", "> 0"),
            (&["http://h:1", "-c", "0"], "--connections", ">= 1"),
            (&["https://h:1"], "URL", "https is not supported"),
            (&["http://h:1", "-H", "nocolon"], "--header", "Name: value"),
            (
                &["http://h:1", "--arrival", "burst"],
                "--arrival",
                "constant",
            ),
            (
                &["http://h:1", "--slo-error-ratio", "2"],
                "--slo-error-ratio",
                "[0, 1]",
            ),
            (
                &["http://h:1", "--method", "G T"],
                "--method",
                "HTTP method",
            ),
        ];
        for (args, flag, expect) in cases {
            let err = parse(args).expect_err("invalid");
            assert!(err.contains(flag), "{args:?}: {err}");
            assert!(err.contains(expect), "{args:?}: {err}");
        }
    }

    #[tokio::test]
    async fn missing_rate_and_search_bounds_are_explained() {
        let a = parse(&["http://127.0.0.1:1/"]).expect("parses");
        let err = execute(&a, CancellationToken::new())
            .await
            .expect_err("no rate");
        assert!(err.to_string().contains("--rate <PER_S> is required"));
        let a = parse(&["http://127.0.0.1:1/", "--search"]).expect("parses");
        let err = execute(&a, CancellationToken::new())
            .await
            .expect_err("no slo");
        assert!(err.to_string().contains("--slo-p99-ms"));
    }

    #[test]
    fn max_connections_is_an_open_loop_bound_of_at_least_the_connections() {
        let a = parse(&["http://h:1", "-c", "4", "--max-connections", "64"]).expect("parses");
        let spec = a.open_loop_spec(10.0).expect("spec");
        assert_eq!(spec.max_connections, Some(64));
        assert_eq!(spec.connection_limit(), 64);
        let a = parse(&["http://h:1", "-c", "4", "--max-connections", "2"]).expect("parses");
        let err = a.open_loop_spec(10.0).expect_err("below -c").to_string();
        assert!(
            err.contains("--max-connections 2: expected at least --connections (4)"),
            "{err}"
        );
        let err = parse(&["http://h:1", "--closed-loop", "--max-connections", "8"])
            .expect_err("closed loop");
        assert!(err.contains("--max-connections"), "{err}");
        let err = parse(&["http://h:1", "--max-connections", "0"]).expect_err("zero");
        assert!(err.contains(">= 1"), "{err}");
    }

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// A report of one request, intended at 100 ms of a 1 s run and done 5 ms later.
    fn one_request(result: crate::counts::Completion) -> LoadReport {
        report_of(&[result])
    }

    /// A 1 s run of one request per result, each intended at 1 ms steps: successes and
    /// errors done 5 ms later, timeouts [`TIMEOUT`] later, drops after waiting 400 ms.
    fn report_of(results: &[crate::counts::Completion]) -> LoadReport {
        report_on(1, results)
    }

    /// [`report_of`] with request `i` sent to target `i % targets`.
    fn report_on(targets: usize, results: &[crate::counts::Completion]) -> LoadReport {
        use crate::counts::Completion;
        use crate::record::{Outcome, Recorder};
        let ms = Duration::from_millis;
        let mut r = Recorder::new(ms(1_000), ms(100), Duration::ZERO, ms(1_000), TIMEOUT)
            .with_targets(targets);
        for (i, &result) in results.iter().enumerate() {
            let intended = ms(100 + i as u64);
            let (actual, done) = match result {
                Completion::Ok | Completion::Error(_) => (Some(intended), intended + ms(5)),
                Completion::Timeout => (Some(intended), intended + TIMEOUT),
                Completion::Dropped => (None, intended + ms(400)),
            };
            r.record_at(
                i % targets,
                &Outcome {
                    intended,
                    actual,
                    done,
                    result,
                    stream: None,
                    bytes_read: if actual.is_some() { 2_048 } else { 0 },
                },
            );
        }
        r.finish(std::time::SystemTime::UNIX_EPOCH, 0, ms(1_000))
    }

    /// `n_ok` successes, then `n_dropped` drops.
    fn with_drops(n_ok: usize, n_dropped: usize) -> LoadReport {
        use crate::counts::Completion;
        let mut results = vec![Completion::Ok; n_ok];
        results.extend(std::iter::repeat_n(Completion::Dropped, n_dropped));
        report_of(&results)
    }

    fn row<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.trim_start().starts_with(name))
    }

    #[test]
    fn several_targets_get_a_row_each_naming_what_failed_there() {
        use crate::counts::{Completion, ErrorKind};
        let e503 = Completion::Error(ErrorKind::HttpStatus(503));
        let report = report_on(
            2,
            &[Completion::Ok, e503, Completion::Ok, Completion::Timeout],
        );
        assert!(report.balanced());
        let out = render_report(
            "http://a:1/, http://b:1/",
            "open loop",
            &report,
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        assert!(
            out.contains("Per target (whole run, warm-up included):"),
            "{out}"
        );
        let a = row(&out, "http://a:1/").expect("a row for a");
        assert!(a.contains("sent 2, ok 2, failed 0; p99 "), "{a}");
        let b = row(&out, "http://b:1/").expect("a row for b");
        assert!(
            b.contains("sent 2, ok 0, failed 2 (http_503 1, timeouts 1); p99 n/a"),
            "{b}"
        );
        // One target: no per-target rows.
        let one = render_report(
            "http://a:1/",
            "open loop",
            &report_of(&[Completion::Ok]),
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        assert!(!one.contains("Per target"), "{one}");
    }

    #[test]
    fn a_phase_without_a_success_prints_n_a_not_zero_and_the_exit_status() {
        use crate::counts::{Completion, ErrorKind};
        let report = one_request(Completion::Error(ErrorKind::HttpStatus(503)));
        let out = render_report(
            "http://h:1/",
            "open loop",
            &report,
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        for name in ["corrected", "service"] {
            let line = row(&out, name).unwrap_or_else(|| panic!("no {name} row in:\n{out}"));
            assert_eq!(line.matches("n/a").count(), 8, "{line}");
            assert!(!line.contains("0us") && !line.contains("0.00ms"), "{line}");
        }
        assert!(out.contains("No request succeeded in the measured phase: exit status 1"));
        assert_eq!(Verdict::of([&report]), Verdict::NoRequestSucceeded);
        assert_eq!(Verdict::of([&report]).exit_code(), 1);
    }

    #[test]
    fn a_summary_shows_requests_and_successes_per_second_bytes_mean_and_stdev() {
        use crate::counts::{Completion, ErrorKind};
        let ok = one_request(Completion::Ok);
        let out = render_report(
            "http://h:1/",
            "open loop",
            &ok,
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        assert!(row(&out, "Latency").is_some_and(|l| l.contains("mean") && l.contains("stdev")));
        assert!(
            out.contains("Requests/sec:        1.00  (responses of any status: 1)"),
            "{out}"
        );
        assert!(
            out.contains("Successes/sec:       1.00  (2xx responses: 1)"),
            "{out}"
        );
        assert!(
            out.contains("Transfer/sec:     2.00KiB  (2.00KiB read)"),
            "{out}"
        );
        assert!(!out.contains("No request succeeded"), "{out}");
        assert_eq!(Verdict::of([&ok]), Verdict::Ran);
        let e503 = one_request(Completion::Error(ErrorKind::HttpStatus(503)));
        let out = render_report(
            "http://h:1/",
            "open loop",
            &e503,
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        assert!(out.contains("Requests/sec:        1.00"), "{out}");
        assert!(out.contains("Successes/sec:       0.00"), "{out}");
    }

    #[test]
    fn a_closed_loop_summary_shows_service_time_without_corrected_or_send_lag_rows() {
        let report = one_request(crate::counts::Completion::Ok);
        let out = render_report(
            "http://h:1/",
            "closed loop",
            &report,
            false,
            Mode::ClosedLoop,
            TIMEOUT,
        );
        assert!(row(&out, "service").is_some(), "{out}");
        assert!(row(&out, "corrected").is_none(), "{out}");
        assert!(row(&out, "send lag").is_none(), "{out}");
        assert!(out.contains("corrected = service"), "{out}");
        let open = render_report(
            "http://h:1/",
            "open loop",
            &report,
            false,
            Mode::OpenLoop,
            TIMEOUT,
        );
        assert!(row(&open, "corrected").is_some() && row(&open, "send lag").is_some());
    }

    #[test]
    fn the_summary_shows_latency_over_all_requests_and_the_drop_share_warning_above_1_percent() {
        let open =
            |r: &LoadReport| render_report("u", "open loop", r, false, Mode::OpenLoop, TIMEOUT);
        // 3 of 100 dropped after waiting 400 ms: p99 over all requests is a drop, while
        // the successes alone would say 5 ms.
        let out = open(&with_drops(97, 3));
        let corrected = row(&out, "corrected").expect("corrected row");
        let all = row(&out, "all").unwrap_or_else(|| panic!("no `all` row in:\n{out}"));
        assert!(corrected.ends_with(" 97"), "{corrected}");
        assert!(all.ends_with(" 100"), "{all}");
        assert!(
            corrected.contains("5.00ms") && !corrected.contains("400"),
            "{corrected}"
        );
        assert!(all.contains(" 400."), "the drops' wait shows: {all}");
        assert!(
            out.contains("  Dropped by generator: 3 of 100 sent (3.00 %)"),
            "{out}"
        );
        let warning = row(&out, "WARNING").unwrap_or_else(|| panic!("no warning in:\n{out}"));
        assert!(
            warning
                .contains("3.0 % of requests (3 of 100) were dropped by the generator, above 1 %"),
            "{warning}"
        );
        assert!(warning.contains("within the timeout (300ms)"), "{warning}");
        // At 1 % exactly: the share is printed, without a warning.
        let out = open(&with_drops(99, 1));
        assert!(
            out.contains("(1.00 %)") && row(&out, "WARNING").is_none(),
            "{out}"
        );
        let out = open(&with_drops(10, 0));
        assert!(
            out.contains("Dropped by generator: 0 of 10 sent (0.00 %)"),
            "{out}"
        );
        // A timeout counts its whole timeout in `all`.
        let t = report_of(&[crate::counts::Completion::Timeout]);
        let all = row(&open(&t), "all").map(str::to_owned).expect("all row");
        assert!(all.contains(" 300.") && all.ends_with(" 1"), "{all}");
    }

    #[test]
    fn schedule_warning_is_for_send_lag_p99_above_a_millisecond() {
        let lag = |p99| HistogramSummary {
            count: 10,
            p99_us: Some(p99),
            ..HistogramSummary::default()
        };
        assert!(schedule_warning(&lag(SEND_LAG_WARN_ABOVE_US)).is_none());
        assert!(schedule_warning(&HistogramSummary::default()).is_none());
        let w = schedule_warning(&lag(2_500)).expect("late");
        assert!(
            w.contains("did not hold its schedule") && w.contains("2.50ms"),
            "{w}"
        );
    }

    #[test]
    fn drop_warning_is_none_at_or_below_1_percent_and_when_nothing_was_sent() {
        let counts = |r: LoadReport| r.measured.counts;
        assert!(drop_warning(&counts(with_drops(99, 1)), TIMEOUT).is_none());
        assert!(drop_warning(&counts(with_drops(98, 2)), TIMEOUT).is_some());
        assert!(drop_warning(&Counts::default(), TIMEOUT).is_none());
    }

    fn search_report() -> (SearchCriteria, SearchReport) {
        use crate::counts::Completion;
        use crate::search::{Trial, TrialPurpose};
        let trial = |rate_per_s, purpose, drained_for, passed| Trial {
            rate_per_s,
            purpose,
            drained_for,
            achieved_rps: rate_per_s,
            latency_at_percentile: Duration::from_millis(5),
            error_ratio: 0.0,
            passed,
            report: report_of(&[Completion::Ok]),
        };
        let criteria = SearchCriteria {
            percentile: 99.0,
            latency_max: Duration::from_millis(50),
            error_ratio_max: 0.01,
            rate_min: 10.0,
            rate_max: 1000.0,
            steps: 1,
            trial_warmup: Duration::ZERO,
            trial_duration: Duration::from_secs(1),
        };
        let report = SearchReport {
            trials: vec![
                trial(10.0, TrialPurpose::Bracket, None, true),
                trial(
                    1000.0,
                    TrialPurpose::Bracket,
                    Some(Duration::from_millis(1_500)),
                    false,
                ),
                trial(
                    505.0,
                    TrialPurpose::Bisect,
                    Some(Duration::from_millis(12)),
                    false,
                ),
            ],
            best_rate_per_s: None,
            not_found: Some("only the floor rate_min = 10 req/s passed".into()),
        };
        (criteria, report)
    }

    #[test]
    fn a_search_shows_each_trials_purpose_and_drain_wait_and_why_nothing_was_found() {
        let (criteria, report) = search_report();
        let out = render_search(&criteria, &report, Verdict::Ran);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].contains("purpose") && lines[1].contains("drained"),
            "{out}"
        );
        let trial = |i: usize| lines[2 + i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(trial(0)[0], "bracket");
        assert_eq!(trial(0)[5], "-", "the first trial did not wait: {out}");
        assert_eq!((trial(1)[0], trial(1)[5]), ("bracket", "1.50s"), "{out}");
        assert_eq!((trial(2)[0], trial(2)[5]), ("bisect", "12.00ms"), "{out}");
        assert!(
            out.contains("  no best rate: only the floor rate_min = 10 req/s passed"),
            "{out}"
        );
        let json = search_json(&report, Verdict::Ran);
        assert_eq!(
            json["not_found"],
            "only the floor rate_min = 10 req/s passed"
        );
        let trials = json["trials"].as_array().expect("trials");
        assert_eq!(trials[0]["purpose"], "bracket");
        assert!(trials[0]["drain_s"].is_null());
        assert_eq!(trials[1]["drain_s"], 1.5);
        assert_eq!(trials[2]["purpose"], "bisect");
        assert_eq!(trials[2]["drain_s"], 0.012);
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(fmt_bytes(0.0), "0B");
        assert_eq!(fmt_bytes(1023.0), "1023B");
        assert_eq!(fmt_bytes(1536.0), "1.50KiB");
        assert_eq!(fmt_bytes(3.0 * 1024.0 * 1024.0), "3.00MiB");
        assert_eq!(fmt_bytes(5.0 * 1024f64.powi(5)), "5120.00TiB");
    }
}
