//! `faultline load` without the faultline binary:
//! `cargo run -p loadgen --release --example load -- http://127.0.0.1:8080/ --rate 1000`.

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
async fn main() -> anyhow::Result<()> {
    loadgen::cli::run(Cli::parse().load).await
}
