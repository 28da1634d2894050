//! `PR_SET_PDEATHSIG` for spawned children: if the runner is killed outright (SIGKILL,
//! OOM), the kernel kills its children, so no stack process outlives a dead harness.
//!
//! This is one of the two places in faultline with `unsafe` (`netns::enter_on` is the
//! other, under the same invariant): `pre_exec` is unsafe because its
//! closure runs in the child between `fork` and `exec`. The runner is multithreaded, so at
//! that point another thread may have held the allocator's lock (or any other lock) at the
//! instant of the fork, and the child has only the forking thread to release it. The
//! closure therefore keeps this invariant, which any edit to it must keep:
//! - it calls only async-signal-safe functions (here the `prctl` and `getppid` syscalls);
//! - it does not allocate or free, take a lock, or use a Rust `thread_local!`: no
//!   `format!`, no `String`, no `Box`, no logging, and no `std::io::Error` other than the
//!   ones built from an errno (`from_raw_os_error`, `last_os_error`), which are stored
//!   inline.
//!
//! A failure is returned as an errno error; std sends the errno to the parent over its
//! pipe, so `spawn` fails with that OS error (ESRCH: "No such process" when the parent died
//! before the child could arm the signal).
//!
//! Not here: stopping children in the ordinary way (`supervisor`, `kill_on_drop`).
#![allow(unsafe_code)]

/// Arranges for `cmd`'s child to receive SIGKILL when the thread that spawns it exits
/// (Linux ties the signal to the parent thread, not the process: callers spawn from threads
/// that live as long as the runner, see `supervisor`).
/// Spawning then fails with the OS error from `prctl`, or with ESRCH when the parent has
/// already exited by the time the child runs the closure.
pub fn set_on(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure keeps the module's invariant: it calls only the async-signal-safe
    // `prctl` and `getppid`, and builds only errno-based `io::Error`s, which do not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl, before the signal was armed:
            // the child was reparented and would outlive it.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
