//! `trainer`: command-line shell over the `trainer` library (see its crate docs for the
//! contract: flags, environment variables, control API, events and exit codes).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use trainer::{exit, launch, optim::AdamWConfig, rendezvous, worker, workload::ModelSpec};

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    about = "Data-parallel trainer: ring all-reduce, checkpoints, elastic recovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One training worker (like a torchrun child or a Kubernetes Job pod).
    Worker(Box<WorkerArgs>),
    /// The rendezvous and failure detector the workers join (like torchrun's c10d store).
    Rendezvous(RendezvousArgs),
    /// Start a rendezvous and N local workers; stop them all on exit or Ctrl-C.
    /// Worker flags go after `--`.
    Launch(LaunchArgs),
    /// Measure candle's matmul rate and an MLP training step's compute rate (one JSON line).
    BenchCompute(BenchComputeArgs),
}

#[derive(Parser, Debug)]
struct BenchComputeArgs {
    /// MLP width (and matmul k = n).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Batch rows (matmul m).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Compute threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Kind {
    Mlp,
    Lm,
    /// A user's TorchScript classifier (`--torchscript PATH`; feature `tch`; world size 1).
    Torchscript,
}

/// `--comm`: the gradient all-reduce backend.
#[derive(Copy, Clone, Debug, ValueEnum)]
enum Comm {
    /// Shared memory when all ranks are on one host, else the TCP ring.
    Auto,
    /// The TCP ring, even on one host.
    Tcp,
    /// Shared memory; exit when a rank cannot map the segment.
    Shm,
    /// NCCL on CUDA (feature `cuda`), bootstrapped over the TCP ring.
    Nccl,
}

#[derive(Parser, Debug)]
struct WorkerArgs {
    /// Preferred rank; the rendezvous orders ranks by it.
    #[arg(long, env = "RANK")]
    rank: Option<usize>,
    /// Expected number of workers.
    #[arg(long, env = "WORLD_SIZE", default_value_t = 1)]
    world_size: usize,
    /// Rendezvous HOST:PORT (default: MASTER_ADDR:MASTER_PORT).
    #[arg(long, env = "TRAINER_RENDEZVOUS")]
    rendezvous: Option<String>,
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    master_addr: String,
    #[arg(long, env = "MASTER_PORT", default_value_t = 29500)]
    master_port: u16,
    /// Control endpoint address (port 0: any free port, printed in the `start` event).
    #[arg(long, env = "TRAINER_CONTROL", default_value = "127.0.0.1:0")]
    control: String,
    /// Ring listener address.
    #[arg(long, env = "TRAINER_DATA_ADDR", default_value = "127.0.0.1:0")]
    data_addr: String,
    /// Run directory (checkpoints/, final/), shared by all workers.
    #[arg(long, env = "TRAINER_RUN_DIR")]
    run_dir: PathBuf,
    #[arg(long, value_enum, default_value = "mlp")]
    model: Kind,
    /// TorchScript model file for `--model torchscript` (saved with `torch.jit.save`; input
    /// `[batch, --mlp-input]`, output `[batch, --mlp-classes]` logits).
    #[arg(long, required_if_eq("model", "torchscript"))]
    torchscript: Option<PathBuf>,
    /// Gradient all-reduce backend; control and aborts always use the TCP ring.
    #[arg(long, value_enum, env = "TRAINER_COMM", default_value = "auto")]
    comm: Comm,
    /// CUDA device of `--comm nccl` (default: the worker's rank in each epoch) and of
    /// `--model torchscript` (given: train on CUDA device 0; absent: on the CPU).
    #[arg(long, env = "TRAINER_CUDA_DEVICE")]
    cuda_device: Option<usize>,
    #[arg(long, default_value_t = 256)]
    mlp_input: usize,
    /// Hidden widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1024,1024")]
    mlp_hidden: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    mlp_classes: usize,
    #[arg(long, default_value_t = 64)]
    teacher_hidden: usize,
    #[arg(long, default_value_t = 32)]
    lm_embed: usize,
    #[arg(long, default_value_t = 128)]
    lm_hidden: usize,
    #[arg(long, default_value_t = 32)]
    seq_len: usize,
    /// Training text for `--model lm` (default: the bundled public-domain text).
    #[arg(long)]
    text: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Samples per worker per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// All-reduce bucket size in MiB.
    #[arg(long, default_value_t = 4.0)]
    bucket_mib: f64,
    /// Checkpoint every K steps (0: never).
    #[arg(long, default_value_t = 20)]
    checkpoint_every: u64,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 3)]
    keep: usize,
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// Compute threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long, env = "TRAINER_THREADS")]
    threads: Option<usize>,
    /// Pin this process to these cores (comma-separated), e.g. set by `launch`.
    #[arg(long, env = "TRAINER_CPUS", value_delimiter = ',')]
    cpus: Vec<usize>,
}

#[derive(Parser, Debug)]
struct RendezvousArgs {
    #[arg(long, default_value = "127.0.0.1:29500")]
    listen: String,
    #[arg(long, default_value_t = 1)]
    min_workers: usize,
    #[arg(long)]
    max_workers: usize,
    /// Wait this long for --max-workers before forming the first ring with --min-workers;
    /// a job below --min-workers this long is shut down (seconds, 0..=3600).
    #[arg(long, default_value = "60", value_parser = seconds, allow_negative_numbers = true)]
    startup_timeout_s: Duration,
    /// Wait this long for a replacement before continuing with fewer workers (seconds,
    /// 0..=3600).
    #[arg(long, default_value = "2", value_parser = seconds, allow_negative_numbers = true)]
    replace_timeout_s: Duration,
    /// A worker silent this long is declared dead (seconds, above 0 and at most 3600).
    #[arg(long, default_value = "1", value_parser = timeout_seconds, allow_negative_numbers = true)]
    heartbeat_timeout_s: Duration,
    /// Exit once every member reported done.
    #[arg(long)]
    exit_when_done: bool,
}

#[derive(Parser, Debug)]
struct LaunchArgs {
    #[arg(long)]
    nproc: usize,
    #[arg(long)]
    min_workers: Option<usize>,
    /// The rendezvous's `--replace-timeout-s` (seconds, 0..=3600).
    #[arg(long, default_value = "2", value_parser = seconds, allow_negative_numbers = true)]
    replace_timeout_s: Duration,
    /// The rendezvous's `--heartbeat-timeout-s` (seconds, above 0 and at most 3600).
    #[arg(long, default_value = "1", value_parser = timeout_seconds, allow_negative_numbers = true)]
    heartbeat_timeout_s: Duration,
    #[arg(long, default_value_t = 0)]
    rendezvous_port: u16,
    #[arg(long)]
    control_base_port: Option<u16>,
    #[arg(long)]
    threads_per_worker: Option<usize>,
    /// Do not pin workers to disjoint cores.
    #[arg(long)]
    no_pin: bool,
    /// Flags for every worker, after `--`.
    #[arg(last = true)]
    worker_args: Vec<String>,
}

/// Longest duration a `--*-s` flag accepts: an hour (as the server's flags).
const MAX_SECONDS: f64 = 3600.0;

/// Value parser of every seconds flag (`--*-timeout-s`): a finite number of seconds in
/// `0..=MAX_SECONDS`. clap prefixes the message with the flag, so a bad value reads
/// "invalid value '-1' for '--replace-timeout-s <…>': -1 is not a number of seconds in
/// 0..=3600" (exit 2) instead of panicking where it becomes a `Duration`.
fn seconds(arg: &str) -> Result<Duration, String> {
    let out_of_range = || format!("{arg} is not a number of seconds in 0..={MAX_SECONDS}");
    let v: f64 = arg.trim().parse().map_err(|_| out_of_range())?;
    if !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(out_of_range());
    }
    Duration::try_from_secs_f64(v).map_err(|_| out_of_range())
}

/// [`seconds`] for a timeout that must be above zero (a heartbeat timeout of 0 would
/// declare every worker dead at once).
fn timeout_seconds(arg: &str) -> Result<Duration, String> {
    match seconds(arg)? {
        d if d.is_zero() => Err(format!(
            "{arg} is not a number of seconds above 0 and at most {MAX_SECONDS}"
        )),
        d => Ok(d),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Before anything starts: a child of `trainer launch` dies with it.
    let launcher = std::env::var(launch::PARENT_PID_ENV).ok();
    if let Err(e) = launch::die_with_launcher(launcher.as_deref()) {
        eprintln!("trainer: {e}");
        std::process::exit(exit::ERROR);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let code = match cli.command {
        Cmd::Worker(a) => run_worker(*a),
        Cmd::Rendezvous(a) => run_rendezvous(a),
        Cmd::BenchCompute(a) => {
            if let Some(t) = a.threads {
                std::env::set_var("RAYON_NUM_THREADS", t.to_string());
            }
            match trainer::calibrate::run(a.width, a.batch, a.steps) {
                Ok(r) => {
                    trainer::events::emit(r);
                    exit::DONE
                }
                Err(e) => {
                    eprintln!("trainer bench-compute: {e}");
                    exit::ERROR
                }
            }
        }
        Cmd::Launch(a) => match launch::run(&launch::LaunchConfig {
            nproc: a.nproc,
            min_workers: a.min_workers.unwrap_or(a.nproc),
            replace_timeout: a.replace_timeout_s,
            heartbeat_timeout: a.heartbeat_timeout_s,
            rendezvous_port: a.rendezvous_port,
            control_base_port: a.control_base_port,
            threads_per_worker: a.threads_per_worker,
            pin: !a.no_pin,
            worker_args: a.worker_args,
        }) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("trainer launch: {e:#}");
                exit::ERROR
            }
        },
    };
    std::process::exit(code);
}

/// Rejects what this build cannot run (exit 2, before anything starts), then runs the worker.
fn run_worker(a: WorkerArgs) -> i32 {
    let spec = match a.model {
        Kind::Mlp => ModelSpec::Mlp {
            config: models::mlp::MlpConfig {
                input_dim: a.mlp_input,
                hidden: a.mlp_hidden.clone(),
                num_classes: a.mlp_classes,
            },
            teacher_hidden: a.teacher_hidden,
        },
        Kind::Lm => ModelSpec::Lm {
            config: models::lm::LmConfig {
                embed_dim: a.lm_embed,
                hidden_dim: a.lm_hidden,
            },
            seq_len: a.seq_len,
        },
        Kind::Torchscript => {
            let cfg = worker::TorchScriptConfig {
                path: a.torchscript.clone().unwrap_or_default(),
                run_dir: a.run_dir.clone(),
                world_size: a.world_size,
                input_dim: a.mlp_input,
                classes: a.mlp_classes,
                steps: a.steps,
                batch: a.batch,
                lr: f64::from(a.lr),
                seed: a.seed,
                cuda: a.cuda_device.is_some(),
            };
            if let Some(reason) = cfg.unsupported_reason() {
                eprintln!("trainer worker: {reason}");
                return exit::USAGE;
            }
            return worker::run_torchscript(&cfg);
        }
    };
    let cfg = worker_config(a, spec);
    if let Some(reason) = cfg.comm.unsupported_reason() {
        eprintln!("trainer worker: {reason}");
        return exit::USAGE;
    }
    worker::run(cfg)
}

fn worker_config(a: WorkerArgs, spec: ModelSpec) -> worker::WorkerConfig {
    if !a.cpus.is_empty() {
        let mut set = nix::sched::CpuSet::new();
        for c in &a.cpus {
            if let Err(e) = set.set(*c) {
                eprintln!("trainer worker: --cpus {c}: {e}; not pinning");
            }
        }
        // Before any thread starts, so every thread of the worker inherits the mask.
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            eprintln!(
                "trainer worker: cannot pin to cores {:?}: {e}; running unpinned",
                a.cpus
            );
        }
    }
    let threads = a
        .threads
        .unwrap_or_else(candle_core::utils::get_num_threads);
    // candle's CPU kernels size their thread pool from this variable.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    worker::WorkerConfig {
        rank_hint: a.rank,
        world_size: a.world_size,
        rendezvous: a
            .rendezvous
            .unwrap_or_else(|| format!("{}:{}", a.master_addr, a.master_port)),
        control: a.control,
        data_addr: a.data_addr,
        run_dir: a.run_dir,
        spec,
        text: a.text,
        steps: a.steps,
        batch_per_worker: a.batch,
        bucket_values: ((a.bucket_mib * 1024.0 * 1024.0 / 4.0) as usize).max(1),
        seed: a.seed,
        optimizer: AdamWConfig {
            lr: a.lr,
            ..AdamWConfig::default()
        },
        checkpoint_every: a.checkpoint_every,
        keep: a.keep,
        heartbeat_interval: Duration::from_millis(a.heartbeat_ms),
        threads,
        cpus: a.cpus,
        comm: match a.comm {
            Comm::Auto => worker::CommBackend::Auto,
            Comm::Tcp => worker::CommBackend::Tcp,
            Comm::Shm => worker::CommBackend::Shm,
            Comm::Nccl => worker::CommBackend::Nccl {
                device: a.cuda_device,
            },
        },
    }
}

fn run_rendezvous(a: RendezvousArgs) -> i32 {
    let listener = match std::net::TcpListener::bind(&a.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("trainer rendezvous: cannot listen on {}: {e}", a.listen);
            return exit::ERROR;
        }
    };
    let policy = rendezvous::Policy {
        min_workers: a.min_workers.min(a.max_workers).max(1),
        max_workers: a.max_workers.max(1),
        startup_timeout: a.startup_timeout_s,
        replace_timeout: a.replace_timeout_s,
        heartbeat_timeout: a.heartbeat_timeout_s,
    };
    match rendezvous::serve(listener, policy, a.exit_when_done) {
        Ok(()) => exit::DONE,
        Err(e) => {
            eprintln!("trainer rendezvous: {e}");
            exit::ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_flags_accept_0_to_an_hour_and_refuse_the_rest_with_the_range() {
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("0.3"), Ok(Duration::from_millis(300)));
        assert_eq!(seconds("3600"), Ok(Duration::from_secs(3600)));
        for bad in [
            "-1", "-0.001", "NaN", "inf", "-inf", "1e300", "3600.5", "", "soon",
        ] {
            let e = seconds(bad).expect_err(bad);
            assert!(e.contains("0..=3600"), "{bad}: {e}");
        }
        assert_eq!(timeout_seconds("1"), Ok(Duration::from_secs(1)));
        let e = timeout_seconds("0").expect_err("zero");
        assert!(e.contains("above 0 and at most 3600"), "{e}");
        assert!(timeout_seconds("-1").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
