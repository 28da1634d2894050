//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::cell::OnceCell;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Repository root (two folders above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`, where cargo put the stack binaries (`cargo test --workspace` builds
/// `server` because its package has integration tests).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("executable has a folder");
    let dir = deps.parent().expect("deps has a parent").to_path_buf();
    assert!(
        dir.join("server").is_file(),
        "stack binary {} missing: run `cargo build --workspace` (or `cargo test --workspace`) first",
        dir.join("server").display()
    );
    dir
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Polls `cond` until it holds or `patience` runs out.
pub fn eventually(patience: Duration, cond: impl FnMut() -> bool) -> bool {
    faultline::wait::poll_until(patience, cond)
}

/// Async form of [`eventually`] for tests inside a runtime.
pub async fn eventually_async(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// Starts `cmd` with stdout piped (for [`first_line`], then [`drain`]) and no stdin
    /// or stderr.
    pub fn spawn(cmd: &mut Command) -> (Self, BufReader<ChildStdout>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a stack process");
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        (Self(child), out)
    }
}

/// The first stdout line `pick` accepts, mapped (EOF fails the test with `what`).
pub fn first_line<T>(
    out: &mut BufReader<ChildStdout>,
    what: &str,
    pick: impl Fn(&str) -> Option<T>,
) -> T {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "the process exited before {what}");
        if let Some(v) = pick(line.trim()) {
            return v;
        }
    }
}

/// Reads the rest of a child's pipe on a thread, so the child never blocks on a full pipe
/// nor fails writing to a closed one; the thread ends at EOF, when the child does.
pub fn drain(mut pipe: impl Read + Send + 'static) {
    std::thread::spawn(move || std::io::copy(&mut pipe, &mut std::io::sink()));
}

/// Bytes of a child's output [`capture`] keeps for failure messages; the rest is read
/// and dropped.
pub const CAPTURE_BYTES_MAX: u64 = 1 << 20;

/// A child's pipe read to EOF on its own thread (see [`capture`]).
pub struct Captured {
    rx: mpsc::Receiver<String>,
    text: OnceCell<String>,
}

/// Reads `pipe` to EOF on a thread, as [`drain`] does, keeping the first
/// [`CAPTURE_BYTES_MAX`] bytes for [`Captured::text`].
pub fn capture(mut pipe: impl Read + Send + 'static) -> Captured {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = pipe.by_ref().take(CAPTURE_BYTES_MAX).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
    });
    Captured {
        rx,
        text: OnceCell::new(),
    }
}

impl Captured {
    /// Everything the child wrote, once the pipe is closed; waits at most `patience`, so a
    /// process still holding the pipe open is named in the text rather than hanging the test.
    pub fn text(&self, patience: Duration) -> String {
        if let Some(t) = self.text.get() {
            return t.clone();
        }
        match self.rx.recv_timeout(patience) {
            Ok(t) => self.text.get_or_init(|| t).clone(),
            Err(_) => format!("(pipe still open after {patience:?}: its writer is still running)"),
        }
    }
}

/// Why `[network] mode = "netns"` cannot run here, if it cannot (it needs root and
/// iproute2's `ip`; CI runs as root).
#[allow(dead_code)]
pub fn netns_unavailable() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    if std::process::Command::new("ip")
        .arg("-V")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return Some("iproute2's `ip` is not installed");
    }
    None
}

/// Whether the network interface `name` exists in this namespace.
#[allow(dead_code)]
pub fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}
