//! Command-line flags (each also read from a `SERVER_*` environment variable) and their
//! validation into a [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The kind of model a `--model` flag loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Classifier MLP served by `POST /v2/models/{name}/infer` behind the dynamic batcher.
    Mlp,
    /// Byte-level LM served by `POST /v1/completions` behind the continuous batcher.
    Lm,
}

impl ModelKind {
    /// `"mlp"` or `"lm"`, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Lm => "lm",
        }
    }

    /// The flag that sets this kind's queueing-time budget (the admission rule).
    pub fn queue_wait_flag(self) -> &'static str {
        match self {
            ModelKind::Mlp => "--max-queue-wait-ms",
            ModelKind::Lm => "--lm-max-queue-wait-ms",
        }
    }
}

/// The names `/metrics` exports (`--metrics-names`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsNames {
    /// faultline's own: the `faultline_` namespace, label `model`.
    #[default]
    Faultline,
    /// vLLM's (`vllm:num_requests_running`, label `model_name`, …) for the families vLLM
    /// has, so dashboards and alerts built for vLLM work unchanged; the others keep their
    /// faultline names.
    Vllm,
}

impl MetricsNames {
    /// `"faultline"` or `"vllm"`, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsNames::Faultline => "faultline",
            MetricsNames::Vllm => "vllm",
        }
    }
}

/// One `--model NAME=KIND[:PATH.safetensors]` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Routing name: `[A-Za-z0-9._-]+`.
    pub name: String,
    pub kind: ModelKind,
    /// Weights file; without it weights come from `--seed`.
    pub weights: Option<PathBuf>,
    /// `@VERSION` given on the command line; else the weights' own (their safetensors
    /// metadata `version`), else `1`.
    pub version: Option<String>,
}

/// Whether `v` is a usable version: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl FromStr for ModelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = "expected NAME=KIND[:PATH.safetensors][@VERSION] with KIND `mlp` or `lm`, e.g. `mlp=mlp` or `tiny-lm=lm:/w/lm.safetensors@3`";
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` has no `=`: {expected}"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "model name `{name}` must be non-empty and use only A-Z a-z 0-9 . _ -"
            ));
        }
        let (rest, version) = match rest.rsplit_once('@') {
            Some((r, v)) if !v.contains('/') => {
                if !valid_version(v) {
                    return Err(format!(
                        "version `{v}` must be 1 to 64 of A-Z a-z 0-9 . _ -: {expected}"
                    ));
                }
                (r, Some(v.to_string()))
            }
            _ => (rest, None),
        };
        let (kind, path) = match rest.split_once(':') {
            Some((k, p)) if !p.is_empty() => (k, Some(PathBuf::from(p))),
            Some((_, _)) => return Err(format!("`{s}` has an empty weights path: {expected}")),
            None => (rest, None),
        };
        let kind = match kind {
            "mlp" => ModelKind::Mlp,
            "lm" => ModelKind::Lm,
            other => return Err(format!("unknown model kind `{other}`: {expected}")),
        };
        Ok(Self {
            name: name.to_string(),
            kind,
            weights: path,
            version,
        })
    }
}

/// Command-line flags of the `server` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "server",
    version,
    about = "faultline reference inference server: KServe v2 classifier + OpenAI completions"
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port. Prints `listening on ADDR` once bound.
    #[arg(long, env = "SERVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Model to load, NAME=KIND[:PATH.safetensors][@VERSION], KIND `mlp` or `lm`; repeatable
    /// (or comma-separated). Default: `mlp=mlp` and `tiny-lm=lm`. The version is `@VERSION`,
    /// else the weights' safetensors metadata `version`, else `1`.
    #[arg(long = "model", env = "SERVER_MODEL", value_delimiter = ',')]
    pub models: Vec<ModelSpec>,
    /// Most samples in one classifier batch (1..=1024).
    #[arg(long, env = "SERVER_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,
    /// Longest a classifier request waits for a batch to fill, milliseconds (0..=10000).
    #[arg(long, env = "SERVER_MAX_QUEUE_DELAY_MS", default_value_t = 2.0)]
    pub max_queue_delay_ms: f64,
    /// Batch sizes dispatched as soon as reached, comma-separated (e.g. `8,16`).
    #[arg(long, env = "SERVER_PREFERRED_BATCH_SIZES", value_delimiter = ',')]
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting per model (1..=65536); beyond it requests get 429.
    #[arg(long, env = "SERVER_MAX_QUEUE", default_value_t = 256)]
    pub max_queue: usize,
    /// Refuse a classifier request (429) whose estimated queueing time — the batch in
    /// progress and the full batches ahead of it, at the measured time per batch — exceeds
    /// this, milliseconds (0..=60000; 0 turns it off).
    #[arg(long, env = "SERVER_MAX_QUEUE_WAIT_MS", default_value_t = 50.0)]
    pub max_queue_wait_ms: f64,
    /// Refuse a completion (429) whose estimated wait for a decode slot — sequences ahead of
    /// it, at the measured rate slots free up — exceeds this, milliseconds (0..=60000; 0
    /// turns it off). Lower than the classifier's: an LM's cycle is one decode step.
    #[arg(long, env = "SERVER_LM_MAX_QUEUE_WAIT_MS", default_value_t = 30.0)]
    pub lm_max_queue_wait_ms: f64,
    /// Most sequences decoded together by the LM, the continuous-batch width (1..=256).
    #[arg(long, env = "SERVER_LM_MAX_RUNNING", default_value_t = 16)]
    pub lm_max_running: usize,
    /// GRU width of a seeded LM (one given without a weights file), 8..=4096: the model's
    /// size. Compute per token grows with its square (512: about 1 M multiply-adds; 2048:
    /// about 13 M), for benchmarks that need an engine-bound decode step. Weights files
    /// carry their own sizes.
    #[arg(long, env = "SERVER_LM_HIDDEN_DIM", default_value_t = 512)]
    pub lm_hidden_dim: usize,
    /// Largest accepted `max_tokens` (1..=65536); larger requests get 400.
    #[arg(long, env = "SERVER_MAX_TOKENS_LIMIT", default_value_t = 512)]
    pub max_tokens_limit: u32,
    /// Longest accepted prompt, bytes (1..=1048576); longer prompts get 400. The byte-level
    /// LM prefills one byte per decode step.
    #[arg(long, env = "SERVER_MAX_PROMPT_BYTES", default_value_t = 8192)]
    pub max_prompt_bytes: usize,
    /// Largest accepted request body, bytes (1..=268435456); larger bodies get 413.
    #[arg(long, env = "SERVER_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most open client connections (1..=65536); one more is answered 503 and closed.
    /// Lowered to what the open-file limit allows, with a warning.
    #[arg(long, env = "SERVER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most bytes of request head held per connection (8192..=1048576); a larger head
    /// gets 431.
    #[arg(long, env = "SERVER_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// A request head must be complete this long after its first byte (after the accept,
    /// for a connection's first request), seconds (0 < s <= 3600); else the connection closes.
    #[arg(long, env = "SERVER_HEADER_READ_TIMEOUT_S", default_value_t = 10.0)]
    pub header_read_timeout_s: f64,
    /// An idle keep-alive connection closes this long after its last response, seconds
    /// (0 < s <= 3600).
    #[arg(long, env = "SERVER_KEEP_ALIVE_TIMEOUT_S", default_value_t = 60.0)]
    pub keep_alive_timeout_s: f64,
    /// Deadline of every request from its head's arrival, seconds (0 < s <= 3600): a request
    /// not answered by then gets 504; a stream still running ends with an error event.
    #[arg(long, env = "SERVER_REQUEST_TIMEOUT_S", default_value_t = 60.0)]
    pub request_timeout_s: f64,
    /// Longest a SIGTERM/Ctrl-C drain waits for in-flight requests, seconds (0..=3600).
    #[arg(long, env = "SERVER_DRAIN_TIMEOUT_S", default_value_t = 10.0)]
    pub drain_timeout_s: f64,
    /// Metric names on `/metrics`: `faultline` (the `faultline_` namespace) or `vllm`
    /// (vLLM's `vllm:` names, `model_name` label and histogram buckets for the metrics vLLM
    /// has; the rest keep faultline names). Any other value exits 2 naming the two.
    #[arg(
        long,
        env = "SERVER_METRICS_NAMES",
        value_enum,
        default_value_t = MetricsNames::Faultline
    )]
    pub metrics_names: MetricsNames,
    /// Triton-style model repository, `DIR/NAME/VERSION/model.safetensors`: enables
    /// `POST /v2/repository/index` and `POST /v2/repository/models/NAME/load`, which swaps in
    /// another version of a loaded model without dropping requests. Must be a directory.
    #[arg(long, env = "SERVER_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// Seed for weights without a file and for sampling requests without a `seed`.
    #[arg(long, env = "SERVER_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Compute threads for candle's matmuls (sets RAYON_NUM_THREADS; 1..=1024); default:
    /// all cores.
    #[arg(long, env = "SERVER_THREADS")]
    pub threads: Option<usize>,
    /// An engine with work that has not progressed for this long is reported unhealthy, seconds.
    #[arg(
        long,
        env = "SERVER_ENGINE_STALL_THRESHOLD_S",
        default_value_t = 2.0,
        hide = true
    )]
    pub engine_stall_threshold_s: f64,
    /// FAULT HOOK: every engine wedges (stops making progress, thread stays alive) after this
    /// many batches/decode steps. For testing health checks; never set in production.
    #[arg(long, env = "SERVER_FAULT_STALL_ENGINE_AFTER", hide = true)]
    pub fault_stall_engine_after: Option<u64>,
    /// FAULT HOOK: every engine thread exits after this many batches/decode steps.
    #[arg(long, env = "SERVER_FAULT_EXIT_ENGINE_AFTER", hide = true)]
    pub fault_exit_engine_after: Option<u64>,
    /// FAULT HOOK: every batch/decode step takes at least this long, milliseconds
    /// (a slow accelerator). Makes queueing and draining observable in tests.
    #[arg(long, env = "SERVER_FAULT_STEP_DELAY_MS", hide = true)]
    pub fault_step_delay_ms: Option<f64>,
    /// FAULT HOOK: every batch/decode step takes this fraction longer than its compute
    /// (0.1: 10 % slower, as a proportionally slower accelerator), 0..=100. For proving
    /// that `faultline compare` catches a regression; never set in production.
    #[arg(long, env = "SERVER_FAULT_SLOWDOWN", hide = true)]
    pub fault_slowdown: Option<f64>,
}

/// Faults injected into every engine loop (see the `SERVER_FAULT_*` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineFaults {
    pub stall_after_steps: Option<u64>,
    pub exit_after_steps: Option<u64>,
    pub step_delay: Option<Duration>,
    /// Extra time per step as a fraction of its compute time.
    pub slowdown: Option<f64>,
}

/// Validated configuration; see [`Args`] for the meaning of each field.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub models: Vec<ModelSpec>,
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub preferred_batch_sizes: Vec<usize>,
    pub max_queue: usize,
    /// `None` when `--max-queue-wait-ms 0`.
    pub max_queue_wait: Option<Duration>,
    /// `None` when `--lm-max-queue-wait-ms 0`.
    pub lm_max_queue_wait: Option<Duration>,
    pub lm_max_running: usize,
    /// Width of seeded LMs.
    pub lm_hidden_dim: usize,
    pub max_tokens_limit: u32,
    pub max_prompt_bytes: usize,
    pub max_body_bytes: usize,
    pub conn: crate::conn::ConnLimits,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    pub metrics_names: MetricsNames,
    pub model_repository: Option<PathBuf>,
    pub seed: u64,
    pub threads: Option<usize>,
    pub engine_stall_threshold: Duration,
    pub faults: EngineFaults,
}

/// Every problem found in the flags, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid server flags:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// The models loaded when no `--model` is given: `mlp=mlp` and `tiny-lm=lm`.
pub fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            name: "mlp".into(),
            kind: ModelKind::Mlp,
            weights: None,
            version: None,
        },
        ModelSpec {
            name: "tiny-lm".into(),
            kind: ModelKind::Lm,
            weights: None,
            version: None,
        },
    ]
}

/// Longest duration any flag accepts: an hour.
const MAX_SECONDS: f64 = 3600.0;

fn seconds(flag: &str, v: f64, problems: &mut Vec<String>) -> Duration {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v <= MAX_SECONDS => d,
        _ => {
            problems.push(format!(
                "--{flag} = {v}: expected a number of seconds in 0..={MAX_SECONDS}"
            ));
            Duration::ZERO
        }
    }
}

/// A timeout: like [`seconds`] but zero is refused too.
fn timeout(flag: &str, v: f64, problems: &mut Vec<String>) -> Duration {
    let d = seconds(flag, v, problems);
    if v == 0.0 {
        problems.push(format!(
            "--{flag} = 0: expected a number of seconds above 0 and at most {MAX_SECONDS}"
        ));
    }
    d
}

/// A queueing budget in milliseconds, 0..=60000; 0 turns it off (`None`).
fn queue_wait(flag: &str, ms: f64, problems: &mut Vec<String>) -> Option<Duration> {
    if ms > 60_000.0 {
        problems.push(format!("--{flag} = {ms}: expected 0..=60000"));
    }
    let d = seconds(flag, ms / 1000.0, problems);
    (!d.is_zero()).then_some(d)
}

fn within(flag: &str, v: usize, lo: usize, hi: usize, problems: &mut Vec<String>) {
    if !(lo..=hi).contains(&v) {
        problems.push(format!("--{flag} = {v}: expected {lo}..={hi}"));
    }
}

impl Args {
    /// Checks every flag and reports all problems at once.
    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        let mut p = Vec::new();
        within("max-batch-size", self.max_batch_size, 1, 1024, &mut p);
        within("max-queue", self.max_queue, 1, 65536, &mut p);
        within("lm-max-running", self.lm_max_running, 1, 256, &mut p);
        within("lm-hidden-dim", self.lm_hidden_dim, 8, 4096, &mut p);
        within(
            "max-prompt-bytes",
            self.max_prompt_bytes,
            1,
            1 << 20,
            &mut p,
        );
        within("max-body-bytes", self.max_body_bytes, 1, 1 << 28, &mut p);
        within(
            "max-tokens-limit",
            self.max_tokens_limit as usize,
            1,
            65536,
            &mut p,
        );
        within("max-connections", self.max_connections, 1, 65536, &mut p);
        // hyper refuses read buffers under 8 KiB.
        within(
            "max-header-bytes",
            self.max_header_bytes,
            8192,
            1 << 20,
            &mut p,
        );
        if let Some(n) = self.threads {
            within("threads", n, 1, 1024, &mut p);
        }
        for s in &self.preferred_batch_sizes {
            if *s == 0 || *s > self.max_batch_size {
                p.push(format!(
                    "--preferred-batch-sizes contains {s}: expected 1..={} (--max-batch-size)",
                    self.max_batch_size
                ));
            }
        }
        let max_queue_delay = seconds(
            "max-queue-delay-ms",
            self.max_queue_delay_ms / 1000.0,
            &mut p,
        );
        let drain_timeout = seconds("drain-timeout-s", self.drain_timeout_s, &mut p);
        let header_read_timeout =
            timeout("header-read-timeout-s", self.header_read_timeout_s, &mut p);
        let keep_alive_timeout = timeout("keep-alive-timeout-s", self.keep_alive_timeout_s, &mut p);
        let request_timeout = timeout("request-timeout-s", self.request_timeout_s, &mut p);
        let max_queue_wait = queue_wait("max-queue-wait-ms", self.max_queue_wait_ms, &mut p);
        let lm_max_queue_wait =
            queue_wait("lm-max-queue-wait-ms", self.lm_max_queue_wait_ms, &mut p);
        if self.max_queue_delay_ms > 10_000.0 {
            p.push(format!(
                "--max-queue-delay-ms = {}: expected 0..=10000",
                self.max_queue_delay_ms
            ));
        }
        let engine_stall_threshold = seconds(
            "engine-stall-threshold-s",
            self.engine_stall_threshold_s,
            &mut p,
        );
        let step_delay = self
            .fault_step_delay_ms
            .map(|ms| seconds("fault-step-delay-ms", ms / 1000.0, &mut p));
        if let Some(f) = self.fault_slowdown {
            if !(0.0..=100.0).contains(&f) {
                p.push(format!(
                    "--fault-slowdown = {f}: expected a fraction 0..=100"
                ));
            }
        }
        let models = if self.models.is_empty() {
            default_models()
        } else {
            self.models
        };
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.name == m.name) {
                p.push(format!("--model: name `{}` is given twice", m.name));
            }
        }
        if let Some(dir) = &self.model_repository {
            if !dir.is_dir() {
                p.push(format!(
                    "--model-repository = {}: expected an existing directory",
                    dir.display()
                ));
            }
        }
        if !p.is_empty() {
            return Err(ConfigError(p));
        }
        let mut preferred = self.preferred_batch_sizes;
        preferred.sort_unstable();
        preferred.dedup();
        Ok(ServerConfig {
            listen: self.listen,
            models,
            max_batch_size: self.max_batch_size,
            max_queue_delay,
            preferred_batch_sizes: preferred,
            max_queue: self.max_queue,
            max_queue_wait,
            lm_max_queue_wait,
            lm_max_running: self.lm_max_running,
            lm_hidden_dim: self.lm_hidden_dim,
            max_tokens_limit: self.max_tokens_limit,
            max_prompt_bytes: self.max_prompt_bytes,
            max_body_bytes: self.max_body_bytes,
            conn: crate::conn::ConnLimits {
                max_connections: self.max_connections,
                max_header_bytes: self.max_header_bytes,
                header_read_timeout,
                keep_alive_timeout,
            },
            request_timeout,
            drain_timeout,
            metrics_names: self.metrics_names,
            model_repository: self.model_repository,
            seed: self.seed,
            threads: self.threads,
            engine_stall_threshold,
            faults: EngineFaults {
                stall_after_steps: self.fault_stall_engine_after,
                exit_after_steps: self.fault_exit_engine_after,
                step_delay,
                slowdown: self.fault_slowdown.filter(|f| *f > 0.0),
            },
        })
    }
}

impl ServerConfig {
    /// Every limit and timeout on one line, as logged at startup.
    pub fn limits_line(&self) -> String {
        format!(
            "max-connections={} max-header-bytes={} header-read-timeout-s={} keep-alive-timeout-s={} \
             request-timeout-s={} drain-timeout-s={} max-body-bytes={} max-prompt-bytes={} \
             max-tokens-limit={} max-queue={} max-queue-wait-ms={} lm-max-queue-wait-ms={} \
             max-batch-size={} lm-max-running={} metrics-names={}",
            self.conn.max_connections,
            self.conn.max_header_bytes,
            self.conn.header_read_timeout.as_secs_f64(),
            self.conn.keep_alive_timeout.as_secs_f64(),
            self.request_timeout.as_secs_f64(),
            self.drain_timeout.as_secs_f64(),
            self.max_body_bytes,
            self.max_prompt_bytes,
            self.max_tokens_limit,
            self.max_queue,
            self.max_queue_wait.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            self.lm_max_queue_wait.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            self.max_batch_size,
            self.lm_max_running,
            self.metrics_names.as_str(),
        )
    }

    /// Defaults as if `server` were run with no flags, listening on `listen`.
    pub fn with_defaults(listen: SocketAddr) -> Self {
        use clap::Parser;
        let mut cfg = Args::parse_from(["server"])
            .validate()
            .expect("the default flags are valid");
        cfg.listen = listen;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn model_spec_parses_name_kind_and_optional_path() {
        let m: ModelSpec = "tiny-lm=lm:/w/a.safetensors".parse().expect("valid");
        assert_eq!(m.name, "tiny-lm");
        assert_eq!(m.kind, ModelKind::Lm);
        assert_eq!(m.weights, Some(PathBuf::from("/w/a.safetensors")));
        let m: ModelSpec = "c=mlp".parse().expect("valid");
        assert_eq!((m.kind, m.weights), (ModelKind::Mlp, None));
    }

    #[test]
    fn model_spec_errors_say_what_is_expected() {
        for bad in ["mlp", "=mlp", "a=cnn", "a=lm:", "a b=mlp"] {
            let e = bad.parse::<ModelSpec>().expect_err(bad);
            assert!(e.contains("expected") || e.contains("must"), "{bad}: {e}");
        }
    }

    #[test]
    fn no_model_flag_loads_the_two_defaults() {
        let cfg = Args::parse_from(["server"]).validate().expect("valid");
        let names: Vec<_> = cfg.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["mlp", "tiny-lm"]);
        assert_eq!(cfg.max_batch_size, 32);
        assert_eq!(cfg.max_queue_delay, Duration::from_millis(2));
    }

    #[test]
    fn the_slowdown_hook_is_a_bounded_fraction() {
        let cfg = Args::parse_from(["server", "--fault-slowdown", "0.1"])
            .validate()
            .expect("valid");
        assert_eq!(cfg.faults.slowdown, Some(0.1));
        let off = Args::parse_from(["server", "--fault-slowdown", "0"])
            .validate()
            .expect("valid");
        assert_eq!(off.faults.slowdown, None);
        for bad in ["-0.5", "NaN", "101", "inf"] {
            let e = Args::parse_from(["server", &format!("--fault-slowdown={bad}")])
                .validate()
                .expect_err(bad);
            assert!(
                e.to_string().contains(&format!(
                    "--fault-slowdown = {bad}: expected a fraction 0..=100"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let e = Args::parse_from([
            "server",
            "--max-batch-size",
            "4",
            "--preferred-batch-sizes",
            "2,8",
            "--max-queue",
            "0",
            "--max-queue-delay-ms=-1",
            "--model",
            "a=mlp",
            "--model",
            "a=lm",
        ])
        .validate()
        .expect_err("invalid");
        assert_eq!(e.0.len(), 4, "{e}");
    }

    #[test]
    fn every_count_and_timeout_has_an_upper_bound_named_in_the_error() {
        let e = Args::parse_from([
            "server",
            "--max-connections=100000",
            "--max-header-bytes=100",
            "--request-timeout-s=0",
            "--keep-alive-timeout-s=NaN",
            "--header-read-timeout-s=1e9",
            "--lm-max-running=100000",
            "--lm-hidden-dim=4097",
            "--max-tokens-limit=1000000",
            "--drain-timeout-s=-1",
        ])
        .validate()
        .expect_err("invalid");
        let text = e.to_string();
        for needle in [
            "--max-connections = 100000: expected 1..=65536",
            "--max-header-bytes = 100: expected 8192..=1048576",
            "--request-timeout-s = 0: expected",
            "--keep-alive-timeout-s = NaN: expected",
            "--header-read-timeout-s = 1000000000: expected",
            "--lm-max-running = 100000: expected 1..=256",
            "--lm-hidden-dim = 4097: expected 8..=4096",
            "--max-tokens-limit = 1000000: expected 1..=65536",
            "--drain-timeout-s = -1: expected",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
    }

    #[test]
    fn default_limits_are_all_on_the_startup_line() {
        let cfg = Args::parse_from(["server"]).validate().expect("valid");
        let line = cfg.limits_line();
        for needle in [
            "max-connections=1024",
            "max-header-bytes=32768",
            "header-read-timeout-s=10",
            "keep-alive-timeout-s=60",
            "request-timeout-s=60",
            "max-body-bytes=1048576",
            "max-prompt-bytes=8192",
            "max-tokens-limit=512",
            "metrics-names=faultline",
        ] {
            assert!(line.contains(needle), "missing {needle} in {line}");
        }
    }

    #[test]
    fn metrics_names_default_to_faultline_and_take_only_the_two_schemes() {
        let cfg = Args::parse_from(["server"]).validate().expect("valid");
        assert_eq!(cfg.metrics_names, MetricsNames::Faultline);
        let cfg = Args::parse_from(["server", "--metrics-names", "vllm"])
            .validate()
            .expect("valid");
        assert_eq!(cfg.metrics_names, MetricsNames::Vllm);
        assert!(cfg.limits_line().contains("metrics-names=vllm"));
        let e = Args::try_parse_from(["server", "--metrics-names", "triton"])
            .expect_err("not a scheme")
            .to_string();
        assert!(e.contains("faultline") && e.contains("vllm"), "{e}");
    }
}
