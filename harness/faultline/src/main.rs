//! `faultline`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = faultline::cli::Cli::parse();
    raise_open_file_limit();
    // `faultline proxy` picks its own thread count (one by default: its data path is
    // cheapest without cross-core wake-ups); every other command uses all cores.
    let mut builder = match &cli.command {
        faultline::cli::Command::Proxy(args) => proxy::cli::runtime_builder(args),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(faultline::cli::main(cli))
}

/// Raises the soft limit on open files to the hard one: the load generator holds one
/// socket per connection (up to 10,000 per scenario, `scenario::bounds`), and the default
/// soft limit (often 1024) is far below that. Stack processes inherit the raised limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}
