//! Waiting on conditions with a patience, never on bare sleeps.

use std::time::{Duration, Instant};

/// Polls `cond` every few milliseconds until it holds (true) or `patience` runs out (false).
pub fn poll_until(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
