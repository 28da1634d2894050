//! `faultline proxy`: the API server as a command, with Toxiproxy's defaults.

use crate::api::{router, ApiConfig};
use crate::registry::{ProxySpec, Registry};
use anyhow::{bail, Context as _};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable that can hold the API token.
pub const TOKEN_ENV: &str = "FAULTLINE_PROXY_TOKEN";

/// Flags of `faultline proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address of the HTTP API (Toxiproxy's default port). Anything but a loopback address
    /// needs --token.
    #[arg(long, default_value = "127.0.0.1:8474")]
    pub listen: SocketAddr,
    /// Seed of every random choice (toxicity draws, jitter, slice sizes); the same seed
    /// and the same order of connections replay the same faults. Default: from the clock,
    /// printed at start.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Create these proxies at start: a JSON file in `POST /populate`'s shape (a list of
    /// {name, listen, upstream, enabled}), as Toxiproxy's -config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on every API request (required to listen on a
    /// non-loopback address).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Threads that move the proxied bytes (1 to 256). One is cheapest per request (no
    /// wake-ups across cores) and is what docs/BENCHMARKS.md measures against a
    /// one-thread haproxy; more spread many busy connections over more cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// The tokio runtime `faultline proxy` runs on: one thread (current-thread runtime) or a
/// pool of `--threads`. The caller enables the drivers and builds it.
pub fn runtime_builder(args: &ProxyArgs) -> tokio::runtime::Builder {
    if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(args.threads));
        b
    }
}

/// Serves the API until SIGINT or SIGTERM, then stops every proxy (listeners and
/// connections closed, toxics removed) and returns.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && args.token.as_deref().is_none_or(str::is_empty) {
        bail!(
            "--listen {}: not a loopback address; the API can create listeners and cut traffic, so \
             listening beyond this machine needs --token (or {TOKEN_ENV})",
            args.listen
        );
    }
    raise_open_file_limit();
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before anything is announced, so an early signal still stops cleanly.
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let registry = Registry::new(seed);
    if let Some(path) = &args.config {
        let text = std::fs::read(path)
            .with_context(|| format!("--config {}: cannot read it", path.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("--config {}: not JSON", path.display()))?;
        let serde_json::Value::Array(list) = v else {
            bail!(
                "--config {}: expected a JSON list of proxies [{{\"name\", \"listen\", \"upstream\"}}, …]",
                path.display()
            );
        };
        let mut specs = Vec::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            specs.push(
                ProxySpec::from_json(p, Some(&format!("proxy {}", i + 1)))
                    .map_err(|e| anyhow::anyhow!("--config {}: {}", path.display(), e.message))?,
            );
        }
        if let (_, Some(e)) = registry.populate(specs) {
            registry.shutdown();
            bail!("--config {}: {}", path.display(), e.message);
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
    let addr = listener.local_addr().context("reading the API address")?;
    let app = router(
        registry.clone(),
        &ApiConfig {
            token: args.token.clone().filter(|t| !t.is_empty()),
        },
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr} (seed {seed})").context("writing stdout")?;
        out.flush().context("flushing stdout")?;
    }
    tracing::info!(%addr, seed, "proxy API listening");
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("Ctrl-C received"),
        }
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    registry.shutdown();
    served.context("serving the API")?;
    Ok(())
}

/// Raises the open-file soft limit to the hard limit (as Go's runtime does, and so
/// Toxiproxy): every proxied connection takes two descriptors.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
