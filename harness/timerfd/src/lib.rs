//! A one-shot monotonic-clock sleep that wakes at the instant asked, to the microsecond,
//! for tokio: a Linux `timerfd` registered with the runtime's reactor.
//!
//! tokio's own timer wheel rounds deadlines up to whole milliseconds, so a `sleep_until`
//! wakes 0–1 ms (about 1 ms on average) late. The open-loop load generator releases
//! requests on time with this, and the fault proxy's latency toxic delivers on time.
//!
//! Hand-written over `nix`'s safe `TimerFd` because no maintained crate offers a
//! sub-millisecond tokio sleep. Not here: periodic timers, other clocks, other platforms.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// A one-shot timer; one per task that sleeps (it holds a file descriptor).
#[derive(Debug)]
pub struct Timer {
    fd: AsyncFd<Handle>,
}

#[derive(Debug)]
struct Handle(nix::sys::timerfd::TimerFd);

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// A new timer on the current tokio runtime (which needs IO enabled).
    pub fn new() -> std::io::Result<Self> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        // Deprecated in tokio 1.54 because an arbitrary `AsRawFd` may hand out a
        // descriptor it does not own (the safe replacement is `unsafe`, and the workspace
        // forbids unsafe code); `Handle` owns its descriptor (an `OwnedFd` inside
        // `TimerFd`) for as long as the `AsyncFd` lives, which is the soundness condition.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(Handle(fd), tokio::io::Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Sleeps until `due` (returns at once when it has passed). Cancel-safe: a new call
    /// re-arms the timer.
    pub async fn sleep_until(&mut self, due: Instant) -> std::io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let now = Instant::now();
        if due <= now {
            return Ok(());
        }
        self.fd
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(due - now)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(std::io::Error::from)?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            match nix::unistd::read(guard.get_inner().as_raw_fd(), &mut buf) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EAGAIN) => guard.clear_ready(),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn it_never_wakes_early_and_a_passed_deadline_returns_at_once() {
        let mut t = Timer::new().expect("timerfd");
        for us in [200u64, 1_500, 3_000] {
            let due = Instant::now() + Duration::from_micros(us);
            t.sleep_until(due).await.expect("sleep");
            assert!(Instant::now() >= due);
        }
        let past = Instant::now();
        t.sleep_until(past).await.expect("at once");
    }
}
