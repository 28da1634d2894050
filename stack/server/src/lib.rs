//! The faultline reference inference server.
//!
//! Serves a classifier MLP over the KServe v2 JSON protocol (dynamic batching, Triton
//! semantics) and a byte-level language model over the OpenAI completions API (continuous
//! batching, SSE streaming), with bounded admission, engine-aware health checks, Prometheus
//! metrics and graceful drain. The `server` binary only parses [`Args`] and calls [`run`].
//!
//! Codemap:
//! * [`config`]: flags (`SERVER_*` env vars too) → validated [`ServerConfig`].
//! * [`admission`]: sans-IO admission control (count bound, estimated wait vs budget).
//! * [`batcher`]: sans-IO dynamic batcher (`push`/`poll` → `Dispatch | WaitUntil | Idle`).
//! * [`scheduler`]: sans-IO continuous-batching scheduler for the LM.
//! * [`engine`]: one OS thread per model driving those cores with candle; fault hooks.
//! * [`health`]: per-engine liveness read by `/healthz` and `/readyz`.
//! * [`metrics`]: the one `prometheus-client` registry.
//! * [`repository`]: model versions (flag, weights metadata) and the Triton-style model
//!   repository that `POST /v2/repository/models/NAME/load` swaps versions in from.
//! * [`text`]: sans-IO byte → UTF-8 text assembly and stop sequences for generated tokens.
//! * [`api`]: axum routes, validation, error bodies, SSE, the per-request deadline.
//! * [`conn`]: the accept loop and per-connection limits (cap, header bytes, header-read
//!   and keep-alive timeouts), and how a drain closes connections.
//!
//! Not here: TLS, auth, GPU, tokenisers, serving two versions of one model at once.

pub mod admission;
pub mod api;
pub mod batcher;
pub mod config;
pub mod conn;
pub mod engine;
pub mod health;
pub mod metrics;
pub mod repository;
pub mod scheduler;
pub mod text;

pub use config::{Args, ServerConfig};

use anyhow::Context;
use api::{AppState, Engine};
use batcher::BatcherConfig;
use config::ModelKind;
use engine::{LmEngine, MlpEngine};
use metrics::Metrics;
use models::lm::{ByteLm, LmConfig};
use models::mlp::{Mlp, MlpConfig};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight request finished.
    Complete,
    /// `--drain-timeout-s` passed with this many requests still in flight.
    TimedOut { in_flight: usize },
}

/// A bound, loaded server that has not started serving yet.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: Arc<AppState>,
    threads: Vec<JoinHandle<()>>,
    engines: Vec<Engine>,
    config: ServerConfig,
}

/// Engines by model name, and the threads running them.
type LoadedModels = (BTreeMap<String, Engine>, Vec<JoinHandle<()>>);

/// Starts model engines with the server's settings: at startup for every `--model`, and
/// later for each version a repository load swaps in.
#[derive(Debug, Clone)]
pub struct Loader {
    config: ServerConfig,
    metrics: Arc<Metrics>,
}

impl Loader {
    pub fn new(config: &ServerConfig, metrics: &Arc<Metrics>) -> Self {
        Self {
            config: config.clone(),
            metrics: metrics.clone(),
        }
    }

    /// The repository directory, if `--model-repository` was given.
    pub fn repository(&self) -> Option<&std::path::Path> {
        self.config.model_repository.as_deref()
    }

    /// Loads `weights` (or seeded weights) as a `kind` model and starts its engine thread.
    /// The version is `version`, else the weights' metadata version, else `1`. Blocking.
    pub fn start(
        &self,
        name: &str,
        kind: ModelKind,
        weights: Option<&std::path::Path>,
        version: Option<&str>,
    ) -> anyhow::Result<(Engine, JoinHandle<()>)> {
        let config = &self.config;
        let metrics = &self.metrics;
        let version = match (version, weights) {
            (Some(v), _) => v.to_string(),
            (None, Some(p)) => repository::weights_version(p)
                .map_err(anyhow::Error::msg)?
                .unwrap_or_else(|| repository::DEFAULT_VERSION.to_string()),
            (None, None) => repository::DEFAULT_VERSION.to_string(),
        };
        Ok(match kind {
            ModelKind::Mlp => {
                let model = match weights {
                    Some(p) => Mlp::load(p),
                    None => Mlp::seeded(MlpConfig::default(), config.seed),
                }
                .and_then(|m| m.frozen())
                .with_context(|| format!("loading model `{name}`"))?;
                let batcher = BatcherConfig {
                    max_batch_size: config.max_batch_size,
                    max_queue_delay: config.max_queue_delay,
                    preferred_batch_sizes: config.preferred_batch_sizes.clone(),
                    max_queue: config.max_queue,
                    max_queue_wait: config.max_queue_wait,
                };
                tracing::info!(model = %name, %version, config = ?model.config(), "loaded classifier");
                // A batcher legitimately idles up to max_queue_delay with work queued.
                let stall = config
                    .engine_stall_threshold
                    .max(config.max_queue_delay * 2);
                let (e, t) = MlpEngine::start(
                    name,
                    &version,
                    model,
                    batcher,
                    config.faults,
                    stall,
                    metrics.clone(),
                )
                .context("starting engine thread")?;
                (Engine::Mlp(e), t)
            }
            ModelKind::Lm => {
                let model = match weights {
                    Some(p) => ByteLm::load(p),
                    None => ByteLm::seeded(
                        LmConfig {
                            hidden_dim: config.lm_hidden_dim,
                            ..LmConfig::default()
                        },
                        config.seed,
                    ),
                }
                .and_then(|m| m.frozen())
                .with_context(|| format!("loading model `{name}`"))?;
                tracing::info!(model = %name, %version, config = ?model.config(), "loaded language model");
                let (e, t) = LmEngine::start(
                    name,
                    &version,
                    model,
                    config.lm_max_running,
                    config.max_queue,
                    config.lm_max_queue_wait,
                    config.faults,
                    config.engine_stall_threshold,
                    metrics.clone(),
                )
                .context("starting engine thread")?;
                (Engine::Lm(e), t)
            }
        })
    }
}

fn load_models(loader: &Loader, config: &ServerConfig) -> anyhow::Result<LoadedModels> {
    let mut engines = BTreeMap::new();
    let mut threads = Vec::new();
    for spec in &config.models {
        let started = Instant::now();
        let (engine, thread) = loader.start(
            &spec.name,
            spec.kind,
            spec.weights.as_deref(),
            spec.version.as_deref(),
        )?;
        threads.push(thread);
        tracing::debug!(model = %spec.name, elapsed_ms = started.elapsed().as_millis() as u64, "engine started");
        engines.insert(spec.name.clone(), engine);
    }
    Ok((engines, threads))
}

impl Server {
    /// Loads every model, starts its engine thread and binds `config.listen`.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::with_names(config.metrics_names));
        let loader = Loader::new(&config, &metrics);
        let (models, threads) = load_models(&loader, &config)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let engines = models.values().cloned().collect();
        let app = Arc::new(AppState::new(&config, models, metrics, loader));
        Ok(Self {
            listener,
            addr,
            app,
            threads,
            engines,
            config,
        })
    }

    /// The bound address (the real port when `--listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` and new model requests answer
    /// 503, idle connections and half-received requests are closed at once, and in-flight
    /// requests (open streams included) finish, for at most the drain timeout; then stops
    /// the engines.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<DrainOutcome> {
        let Server {
            listener,
            app,
            threads,
            engines,
            config,
            ..
        } = self;
        let router = api::router(app.clone());
        let drain = conn::DrainSignal::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut accept = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn::serve(
            listener,
            router,
            config.conn,
            app.metrics.clone(),
            drain.clone(),
            stop.clone(),
        )));
        tokio::select! {
            () = shutdown => {}
            r = &mut accept => {
                // The accept loop only returns when stopped; a panic in it ends the server.
                r.context("the accept loop failed")?;
            }
        }
        app.start_draining();
        drain.start();
        tracing::info!(in_flight = app.in_flight(), "draining");
        let outcome = match tokio::time::timeout(config.drain_timeout, app.wait_idle()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_) => {
                let in_flight = app.in_flight();
                tracing::warn!(in_flight, "drain timeout passed; stopping anyway");
                DrainOutcome::TimedOut { in_flight }
            }
        };
        // Stop accepting; let the last responses flush (bounded), then close the rest.
        stop.cancel();
        let linger = match outcome {
            DrainOutcome::Complete => DRAIN_LINGER,
            DrainOutcome::TimedOut { .. } => Duration::ZERO,
        };
        if tokio::time::timeout(linger, &mut accept).await.is_err() {
            accept.abort();
        }
        for e in &engines {
            match e {
                Engine::Mlp(e) => e.shutdown(),
                Engine::Lm(e) => e.shutdown(),
            }
        }
        // Join engines that have stopped; a wedged one (fault hook) is left to process exit.
        let join_deadline = Instant::now() + Duration::from_secs(1);
        for t in threads {
            while !t.is_finished() && Instant::now() < join_deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        tracing::info!(?outcome, "stopped");
        Ok(outcome)
    }
}

/// After a complete drain, how long connections get to flush their last response before
/// they are closed.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Open files the server keeps for itself beyond client connections (models, logs, the
/// listener, the runtime).
const RESERVED_FDS: u64 = 64;

/// Raises the open-file soft limit to the hard limit (as Go's runtime does) and returns
/// how many client connections it allows.
fn connection_budget() -> Option<usize> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    usize::try_from(limit.saturating_sub(RESERVED_FDS)).ok()
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers now and returns a future that
/// resolves on the first of them.
///
/// The handlers are installed when this is called, not when the future is first polled:
/// a supervisor may send SIGTERM as soon as the server answers its first request, and a
/// signal that arrives before the handler is installed takes the default action (the
/// process dies without draining). Call it before announcing the listening address.
/// Must be called inside a tokio runtime.
pub fn termination_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("Ctrl-C received"),
        }
    })
}

/// The `server` binary: validate flags, set up logging and threads, bind, print
/// `listening on ADDR` on stdout, serve until SIGTERM/Ctrl-C, drain, return.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.validate()?;
    if let Some(n) = config.threads {
        // candle's CPU matmuls size their thread pool from this; set before any is created,
        // while the process is still single-threaded.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut config = config;
    if let Some(budget) = connection_budget() {
        if config.conn.max_connections > budget {
            tracing::warn!(
                requested = config.conn.max_connections,
                allowed = budget,
                "--max-connections is above what the open-file limit allows; lowered"
            );
            config.conn.max_connections = budget.max(1);
        }
    }
    tracing::info!(limits = %config.limits_line(), "limits");
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        // Before the address is announced: from then on a SIGTERM must drain.
        let shutdown = termination_signal()?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", server.local_addr()).context("writing stdout")?;
            out.flush().context("flushing stdout")?;
        }
        tracing::info!(addr = %server.local_addr(), "listening");
        server.serve(shutdown).await?;
        Ok(())
    })
}
