//! Helpers shared by the trainer's process tests: a child whose JSON-line events are
//! collected, the small MLP job they train, `trainer launch`, a minimal HTTP client for
//! the control endpoint, and waits on conditions ([`eventually`]) instead of sleeps.
//!
//! Every pipe to a child is read as the child runs (a child that fills a 64 KiB pipe
//! nobody reads blocks forever).
#![allow(dead_code)] // each test binary uses its own subset

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// How often [`eventually`] and [`poll_until`] check their condition.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it returns `Some`, failing the test naming `what` after `patience`.
pub fn eventually<T>(patience: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {patience:?}: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Polls `done` until it holds or `patience` has passed; whether it held. For cleanup paths
/// that must not panic (a `Drop`).
pub fn poll_until(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Reads `from` to its end on a thread of its own; the thread returns the bytes.
fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

/// A child process whose stdout events are collected; killed on drop. Every stdout line
/// must read as a `wire::trainer::EventLine` (the harness's parser): [`Proc::events`] fails
/// the test naming a line that does not.
pub struct Proc {
    pub child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    /// Lines that are not `EventLine`s, with serde's reason.
    unparsed: Arc<Mutex<Vec<String>>>,
    /// The thread reading stdout; finished once every holder of the pipe (the child and
    /// anything it started) has closed it.
    reader: JoinHandle<()>,
    /// SIGTERM first on drop, so a launcher stops the workers it started.
    graceful: bool,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn trainer");
        let stdout = child.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let unparsed = Arc::new(Mutex::new(Vec::new()));
        let (sink, bad) = (events.clone(), unparsed.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Err(e) = serde_json::from_str::<wire::trainer::EventLine>(&line) {
                    bad.lock()
                        .expect("unparsed lock")
                        .push(format!("{e}: {line}"));
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("events lock").push(v);
                }
            }
        });
        Self {
            child,
            events,
            unparsed,
            reader,
            graceful: false,
        }
    }

    /// The events so far; fails if a line was not a `wire::trainer::EventLine`.
    pub fn events(&self) -> Vec<Value> {
        let unparsed = self.unparsed.lock().expect("unparsed lock");
        assert!(
            unparsed.is_empty(),
            "stdout lines the harness cannot read:\n{}",
            unparsed.join("\n")
        );
        self.events.lock().expect("events lock").clone()
    }

    /// Waits until an event satisfies `pred` (patience: `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(secs), what, || {
            self.events().into_iter().find(|v| pred(v))
        })
    }

    /// Waits (patience: `secs`, for both) until the process has exited and its stdout has
    /// been read to the end, so [`Proc::events`] holds every event it and its children wrote;
    /// returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = &mut self.child;
        let status = eventually(Duration::from_secs(secs), "the process exits", || {
            child.try_wait().expect("try_wait")
        });
        let reader = &self.reader;
        eventually(
            deadline.saturating_duration_since(Instant::now()),
            "its stdout closes (a process it started still holds it?)",
            || reader.is_finished().then_some(()),
        );
        status.code().unwrap_or(-1)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.graceful && matches!(self.child.try_wait(), Ok(None)) {
            kill(
                u64::from(self.child.id()),
                nix::sys::signal::Signal::SIGTERM,
            );
            // Past the patience it is killed below; a drop must not panic.
            let child = &mut self.child;
            poll_until(Duration::from_secs(10), || {
                !matches!(child.try_wait(), Ok(None))
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

pub fn kill(pid: u64, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("signal");
}

pub fn small_mlp(run_dir: &Path, steps: u64, every: u64) -> Vec<String> {
    [
        "--run-dir",
        run_dir.to_str().expect("utf-8 path"),
        "--mlp-input",
        "32",
        "--mlp-hidden",
        "64",
        "--mlp-classes",
        "4",
        "--teacher-hidden",
        "16",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "5",
        "--steps",
        &steps.to_string(),
        "--checkpoint-every",
        &every.to_string(),
        "--keep",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Process tests run one at a time: each starts up to four processes, and a 2-core machine
/// running several at once starves heartbeat threads past their timeout.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Heartbeat timeout for tests that do not measure detection: generous, so a loaded machine
/// does not evict a slow worker.
pub const RELAXED_HEARTBEAT_S: &str = "3";

pub fn launch(nproc: usize, min: usize, worker_args: &[String]) -> Proc {
    launch_with_heartbeat(nproc, min, RELAXED_HEARTBEAT_S, worker_args)
}

pub fn launch_with_heartbeat(
    nproc: usize,
    min: usize,
    heartbeat_s: &str,
    worker_args: &[String],
) -> Proc {
    launch_with_env(nproc, min, heartbeat_s, worker_args, &[])
}

pub fn launch_with_env(
    nproc: usize,
    min: usize,
    heartbeat_s: &str,
    worker_args: &[String],
    env: &[(&str, &str)],
) -> Proc {
    let mut args: Vec<String> = vec![
        "launch".into(),
        "--nproc".into(),
        nproc.to_string(),
        "--min-workers".into(),
        min.to_string(),
        "--replace-timeout-s".into(),
        "0.3".into(),
        "--heartbeat-timeout-s".into(),
        heartbeat_s.into(),
        "--".into(),
    ];
    args.extend(worker_args.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut job = Proc::spawn_with_env(&refs, env);
    job.graceful = true; // SIGTERM: the launcher stops its workers itself, letting them clean up
    job
}

/// Minimal HTTP/1.1 request; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http_with(addr, method, path, &[], body);
    (status, body)
}

/// Minimal HTTP/1.1 request with extra request headers; returns (status, response head,
/// body).
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect control");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_string(), body.to_string())
}

/// `GET /status`, read as the harness reads it.
pub fn status(addr: &str) -> wire::trainer::Status {
    let body = http(addr, "GET", "/status", "").1;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("a /status body: {e}: {body}"))
}

pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

/// Runs `cmd` to its exit with stdin closed and stdout and stderr each read by a thread as
/// it runs; past `secs` (for the exit and the pipes closing) the child is killed and the
/// test fails.
pub fn output_within(mut cmd: Command, secs: u64) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    // Killed and reaped on every path, a failed wait included.
    let mut child = KillChildOnDrop(child);
    let stdout = drain(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let what = format!("{cmd:?} exits");
    let status = eventually(Duration::from_secs(secs), &what, || {
        child.0.try_wait().expect("try_wait")
    });
    eventually(
        deadline.saturating_duration_since(Instant::now()),
        "its stdout and stderr close (a process it started still holds them?)",
        || (stdout.is_finished() && stderr.is_finished()).then_some(()),
    );
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Kills and reaps the child when dropped.
struct KillChildOnDrop(Child);

impl Drop for KillChildOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the trainer to its exit (patience: `secs`; killed and failed past it); returns its
/// exit code and stderr.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], secs: u64) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn");
    let out = output_within(cmd, secs);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `pid` is a live trainer process: it exists, is not a zombie (an orphan whose
/// reaper does not reap), and runs this trainer binary (so a reused pid does not count).
pub fn trainer_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z") | Some("X")) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(BIN.as_bytes()))
}

/// The pids whose parent is `parent` (from `/proc/*/stat`).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// SIGKILLs the trainer processes among `pids` that still run, when dropped: a failing test
/// leaves nothing behind.
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if trainer_alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Connects to `addr`, retrying while the process behind it starts (patience: `secs`).
pub fn connect(addr: &str, secs: u64) -> std::net::TcpStream {
    eventually(
        Duration::from_secs(secs),
        &format!("connect {addr}"),
        || std::net::TcpStream::connect(addr).ok(),
    )
}
