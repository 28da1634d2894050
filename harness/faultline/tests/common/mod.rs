//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
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
