//! `trainer launch`: starts a rendezvous and N local workers, like `torchrun --standalone
//! --nproc-per-node N`, passes each worker torchrun's environment (`RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR`, `MASTER_PORT`) plus `RAYON_NUM_THREADS` so N workers share the machine's
//! cores, waits for them, and stops every child on exit, SIGINT or SIGTERM.
//!
//! A launcher that cannot clean up (SIGKILL, a crash) takes its children with it: each child
//! gets [`PARENT_PID_ENV`] (the launcher's pid) and, at startup, [`die_with_launcher`] asks
//! the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`) and exits at once if
//! the launcher is already gone. Nothing `launch` started outlives it.

use crate::exit;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable `launch` sets on the rendezvous and every worker it starts: its
/// own pid. A `trainer` process that finds it set dies with that process
/// ([`die_with_launcher`]).
pub const PARENT_PID_ENV: &str = "TRAINER_PARENT_PID";

/// Why a child of `launch` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum LauncherGone {
    #[error("{PARENT_PID_ENV} = {value:?}: expected the pid of the `trainer launch` that started this process")]
    BadPid { value: String },
    #[error("cannot ask to be killed with the launcher (prctl PR_SET_PDEATHSIG): {0}")]
    DeathSignal(nix::Error),
    #[error("the launcher (pid {launcher}) has already exited (the parent is now pid {parent}); not starting without it")]
    Exited { launcher: i32, parent: i32 },
}

/// Ties this process's life to the `trainer launch` that started it, when `launcher_pid`
/// (the value of [`PARENT_PID_ENV`]) is given: SIGKILL when the parent dies, and an error if
/// the parent is already not `launcher_pid` (it died before the signal was armed). Call it
/// first thing, before any thread starts. `None` (not started by `launch`) does nothing.
pub fn die_with_launcher(launcher_pid: Option<&str>) -> Result<(), LauncherGone> {
    let Some(value) = launcher_pid else {
        return Ok(());
    };
    let launcher: i32 = match value.trim().parse() {
        Ok(pid) if pid > 0 => pid,
        _ => {
            return Err(LauncherGone::BadPid {
                value: value.to_owned(),
            })
        }
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(LauncherGone::DeathSignal)?;
    // Armed now; a parent that died before this line has already re-parented us.
    let parent = nix::unistd::getppid().as_raw();
    if parent != launcher {
        return Err(LauncherGone::Exited { launcher, parent });
    }
    Ok(())
}

/// Launcher settings.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    pub nproc: usize,
    /// Smallest world the job continues with after losing workers.
    pub min_workers: usize,
    /// Wait for a replacement before continuing with fewer workers (the rendezvous's
    /// `--replace-timeout-s`, at most an hour).
    pub replace_timeout: Duration,
    /// A worker silent this long is declared dead (the rendezvous's `--heartbeat-timeout-s`:
    /// above 0 and at most an hour).
    pub heartbeat_timeout: Duration,
    /// Rendezvous port on 127.0.0.1 (0: pick a free one).
    pub rendezvous_port: u16,
    /// Worker r's control endpoint listens on `base + r` (None: any free port, printed in
    /// each worker's `start` event).
    pub control_base_port: Option<u16>,
    /// Threads per worker (None: cores / nproc, at least 1).
    pub threads_per_worker: Option<usize>,
    /// Pin worker r to cores `r·T .. (r+1)·T` (T threads per worker) when they fit the
    /// machine, like `numactl`/`taskset` per rank; without it the scheduler moves workers
    /// around and lock-step ranks wait for each other.
    pub pin: bool,
    /// Arguments passed to every `trainer worker`.
    pub worker_args: Vec<String>,
}

/// The cores worker `rank` is pinned to, if `nproc × threads` fits in `cores`.
pub fn pinned_cores(rank: usize, nproc: usize, threads: usize, cores: usize) -> Option<Vec<usize>> {
    (nproc * threads <= cores).then(|| (rank * threads..(rank + 1) * threads).collect())
}

/// Threads per worker so `nproc` workers share `cores` fairly.
pub fn fair_threads(cores: usize, nproc: usize) -> usize {
    (cores / nproc.max(1)).max(1)
}

/// Child processes killed (SIGTERM, then SIGKILL after a grace period) when dropped.
#[derive(Debug, Default)]
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for (_, c) in &mut self.0 {
            while let Ok(None) = c.try_wait() {
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Watches SIGINT and SIGTERM on a background thread.
fn signal_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Installed before this returns, so a signal right after start is never taken with
    // the default action (which would leave the workers running).
    let (mut int, mut term) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("launch-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                f.store(true, Ordering::SeqCst);
            });
        })?;
    Ok(flag)
}

/// Runs the job; returns 0 when the job finished (some worker exited 0, even if others were
/// lost on the way), else the first worker's non-zero code.
///
/// Call it on the main thread (or one that lives as long as the launcher): the children's
/// parent-death signal fires when the *thread* that started them exits.
pub fn run(cfg: &LaunchConfig) -> anyhow::Result<i32> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the trainer executable")?;
    let stop = signal_flag().context("installing signal handlers")?;
    let port = if cfg.rendezvous_port == 0 {
        free_port()?
    } else {
        cfg.rendezvous_port
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cfg
        .threads_per_worker
        .unwrap_or_else(|| fair_threads(cores, cfg.nproc));
    crate::events::emit(wire::trainer::Launch {
        nproc: cfg.nproc,
        threads_per_worker: threads,
        rendezvous: format!("127.0.0.1:{port}"),
        min_workers: cfg.min_workers,
        pinned: cfg.pin && pinned_cores(0, cfg.nproc, threads, cores).is_some(),
    });
    let mut children = Children::default();
    let launcher_pid = std::process::id().to_string();
    let rdzv = Command::new(&exe)
        .args([
            "rendezvous",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--min-workers",
            &cfg.min_workers.to_string(),
            "--max-workers",
            &cfg.nproc.to_string(),
            "--replace-timeout-s",
            &cfg.replace_timeout.as_secs_f64().to_string(),
            "--heartbeat-timeout-s",
            &cfg.heartbeat_timeout.as_secs_f64().to_string(),
            "--exit-when-done",
        ])
        .env(PARENT_PID_ENV, &launcher_pid)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the rendezvous")?;
    children.0.push(("rendezvous".into(), rdzv));
    for rank in 0..cfg.nproc {
        let control = match cfg.control_base_port {
            Some(base) => format!("127.0.0.1:{}", base as usize + rank),
            None => "127.0.0.1:0".into(),
        };
        let mut cmd = Command::new(&exe);
        if let Some(cpus) = pinned_cores(rank, cfg.nproc, threads, cores).filter(|_| cfg.pin) {
            let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
            cmd.env("TRAINER_CPUS", list.join(","));
        }
        let child = cmd
            .arg("worker")
            .args(&cfg.worker_args)
            .args(["--control", &control])
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", cfg.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("TRAINER_THREADS", threads.to_string())
            .env(PARENT_PID_ENV, &launcher_pid)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting worker {rank}"))?;
        children.0.push((format!("worker {rank}"), child));
    }
    let mut first_failure = None;
    let mut any_done = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(exit::INTERRUPTED); // `children` is dropped: every child is stopped
        }
        let mut running_workers = 0;
        for (name, c) in &mut children.0 {
            match c.try_wait()? {
                None if name.starts_with("worker") => running_workers += 1,
                Some(status) if name.starts_with("worker") => {
                    match status.code().unwrap_or(exit::ERROR) {
                        exit::DONE => any_done = true,
                        c => {
                            first_failure.get_or_insert(c);
                        }
                    }
                }
                _ => {}
            }
        }
        if running_workers == 0 {
            // The job succeeded if it finished, even after losing workers on the way.
            return Ok(if any_done {
                exit::DONE
            } else {
                first_failure.unwrap_or(exit::ERROR)
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_launcher_pid_that_is_not_a_pid_is_refused_before_anything_is_armed() {
        use super::{die_with_launcher, LauncherGone};
        assert!(die_with_launcher(None).is_ok(), "not started by launch");
        for bad in ["", "-3", "0", "launch"] {
            let e = die_with_launcher(Some(bad)).expect_err(bad);
            assert!(matches!(e, LauncherGone::BadPid { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("TRAINER_PARENT_PID"), "{e}");
        }
    }

    #[test]
    fn workers_share_cores_and_always_get_one_thread() {
        assert_eq!(super::fair_threads(16, 4), 4);
        assert_eq!(super::fair_threads(2, 4), 1);
        assert_eq!(super::fair_threads(2, 1), 2);
    }

    #[test]
    fn workers_are_pinned_to_disjoint_cores_only_when_they_fit() {
        assert_eq!(super::pinned_cores(1, 2, 1, 2), Some(vec![1]));
        assert_eq!(super::pinned_cores(1, 2, 2, 4), Some(vec![2, 3]));
        assert_eq!(super::pinned_cores(0, 3, 1, 2), None);
    }
}
