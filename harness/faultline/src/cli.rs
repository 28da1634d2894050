//! Command-line interface of the `faultline` binary: argument types and the commands they
//! run. `main.rs` only parses and calls [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::runner::{self, ProgressMode, RunOptions};

/// The scenario `faultline run` uses when none is named.
pub const DEFAULT_SCENARIO: &str = "serve-crash-restart";

#[derive(Debug, Parser)]
#[command(
    name = "faultline",
    version,
    about = "Chaos and benchmark harness for ML infrastructure",
    long_about = "Starts a stack as real processes on loopback, drives open-loop load, injects \
                  faults on a timeline, checks SLOs and writes plotted reports."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario and write its report (exit 1 when an SLO fails).
    Run(RunArgs),
    /// Check scenario files and report every problem with file:line:column.
    Validate {
        /// Scenario files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Drive load against any HTTP server (wrk2-style, coordinated-omission corrected).
    Load(loadgen::cli::LoadArgs),
    /// Is the candidate worse than the baseline? Judges every figure of runs (folders, a
    /// history, or runs it makes itself, interleaved) with noise-aware statistics.
    Compare(crate::compare_cmd::CompareArgs),
    /// A TCP fault proxy with Toxiproxy's HTTP API (port 8474): toxics per direction,
    /// HTTP-aware faults, a blackhole, seeds and Prometheus metrics.
    Proxy(proxy::cli::ProxyArgs),
    /// Print the JSON Schema of the scenario format.
    Schema,
    /// List the scenarios in a folder.
    List {
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario file, or the name of one in `scenarios/`.
    #[arg(default_value = DEFAULT_SCENARIO)]
    pub scenario: String,
    /// Folder that receives `<scenario>/<run-id>/`.
    #[arg(long, default_value = "reports", env = "FAULTLINE_REPORTS")]
    pub reports: PathBuf,
    /// Folder holding the stack binaries (default: next to this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print a JSON summary on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Also copy the JUnit XML report to this path.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run the scenario this many times (seeds S, S+1, …) and report each figure's spread
    /// over the runs (min, p50, p90, p99, max, mean, stddev) in
    /// `<reports>/<scenario>/series-<run id>/series.json`; exit 1 unless every run passed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::repeat::MAX_RUNS)))]
    pub runs: u32,
}

/// Resolves `name_or_path` to a scenario file.
pub fn resolve_scenario(name_or_path: &str) -> Result<PathBuf, String> {
    let direct = PathBuf::from(name_or_path);
    if direct.is_file() {
        return Ok(direct);
    }
    let named = Path::new("scenarios").join(format!("{name_or_path}.toml"));
    if named.is_file() {
        return Ok(named);
    }
    Err(format!(
        "scenario {name_or_path:?}: no such file, and no {} (run from the repository root, or pass a path)",
        named.display()
    ))
}

/// Cancels `token` on the first SIGINT or SIGTERM; a second one exits at once (the
/// stack's processes then die by their parent-death signal).
///
/// The handlers are installed before this returns (not when the task first runs), so a
/// signal that comes right after start is never taken with the default action, which
/// would skip healing and stopping.
fn cancel_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not stop the run cleanly");
        return;
    };
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                eprintln!("faultline: stopping (healing faults, stopping processes); press Ctrl-C again to abort");
                token.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}

async fn run(args: RunArgs) -> ExitCode {
    let path = match resolve_scenario(&args.scenario) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = RunOptions {
        reports_dir: args.reports,
        bin_dir: args.bin_dir,
        seed: args.seed,
        progress: if args.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        },
        ..RunOptions::default()
    };
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    if args.runs > 1 {
        return series(&path, &opts, args.runs, args.json, cancel).await;
    }
    let outcome = match runner::run_file(&path, &opts, cancel).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(junit) = &args.junit {
        if let Err(e) = std::fs::write(junit, report::junit_xml(&outcome.metrics)) {
            eprintln!("error: writing {}: {e}", junit.display());
        }
    }
    let index = outcome.dir.join("index.html");
    if args.json {
        let mut summary = report::summary_json(&outcome.metrics);
        if let Some(obj) = summary.as_object_mut() {
            obj.insert(
                "report".into(),
                serde_json::Value::String(index.display().to_string()),
            );
        }
        out(&format!("{summary:#}\n"));
    } else {
        out(&format!(
            "{}\nreport: {}\n",
            report::text_summary(&outcome.metrics),
            index.display()
        ));
    }
    if outcome.interrupted {
        ExitCode::from(130)
    } else if outcome.metrics.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `faultline run --runs N`.
async fn series(
    path: &Path,
    opts: &RunOptions,
    runs: u32,
    json: bool,
    cancel: CancellationToken,
) -> ExitCode {
    let (series, file) = match crate::repeat::run_series(path, opts, runs, cancel).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        let mut v = serde_json::to_value(&series).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("series".into(), file.display().to_string().into());
        }
        println!("{v:#}");
    } else {
        print!("{}", crate::repeat::render(&series));
        println!("series: {}", file.display());
    }
    if series.interrupted {
        ExitCode::from(130)
    } else if series.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for f in files {
        match scenario::load(f) {
            Ok(_) => println!("{}: ok", f.display()),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn list(dir: &Path) -> ExitCode {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for f in files {
        match scenario::load(&f) {
            Ok(s) => println!(
                "{:<32} {:<6} {}",
                f.file_stem().unwrap_or_default().to_string_lossy(),
                if s.quick { "quick" } else { "" },
                s.description.lines().next().unwrap_or_default()
            ),
            Err(e) => println!("{}: invalid ({e})", f.display()),
        }
    }
    ExitCode::SUCCESS
}

/// Runs the parsed command line.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Validate { files } => validate(&files),
        Command::Load(args) => match loadgen::cli::run(args).await {
            Ok(verdict) => ExitCode::from(verdict.exit_code()),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Compare(args) => {
            let cancel = CancellationToken::new();
            cancel_on_signals(cancel.clone());
            crate::compare_cmd::main(args, cancel).await
        }
        Command::Proxy(args) => match proxy::cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("faultline proxy: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Schema => {
            println!("{:#}", scenario::json_schema());
            ExitCode::SUCCESS
        }
        Command::List { dir } => list(&dir),
    }
}

/// Prints to stdout; a closed stdout (`faultline run … | head -1`) is not an error, as
/// the report is already written and the exit code still carries the verdict.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}
