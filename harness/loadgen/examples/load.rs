//! `faultline load` without the faultline binary:
//! `cargo run -p loadgen --release --example load -- http://127.0.0.1:8080/ --rate 1000`.
//! Exits as `faultline load` does: 0, 1 when no request succeeded, 2 on a usage error.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Open- or closed-loop HTTP load with CO-corrected latency"
)]
struct Cli {
    #[command(flatten)]
    load: loadgen::cli::LoadArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match loadgen::cli::run(Cli::parse().load).await {
        Ok(verdict) => ExitCode::from(verdict.exit_code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
