//! `PR_SET_PDEATHSIG` for spawned children: if the runner is killed outright (SIGKILL,
//! OOM), the kernel kills its children, so no stack process outlives a dead harness.
//!
//! This is the one place in faultline with `unsafe`: `pre_exec` is unsafe because the
//! closure runs between fork and exec. The closure only calls the async-signal-safe
//! `prctl` and `getppid` syscalls and allocates nothing.
#![allow(unsafe_code)]

/// Arranges for `cmd`'s child to receive SIGKILL when the spawning thread's process dies.
pub fn set_on(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure performs only async-signal-safe syscalls (see module docs).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}
