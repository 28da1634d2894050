//! Liveness of one engine loop, shared between its thread and the HTTP handlers.
//!
//! The loop calls [`EngineHealth::beat`] every time it turns; the handlers read
//! [`EngineHealth::problem`]. An engine is unhealthy when its thread has exited, or when work is
//! waiting or running and the loop has not turned for longer than the stall threshold. Only
//! atomics are read, so a wedged engine (even one holding its queue lock) cannot wedge the
//! health check.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug)]
pub struct EngineHealth {
    model: String,
    epoch: Instant,
    stall_threshold: Duration,
    last_beat_ms: AtomicU64,
    alive: AtomicBool,
    waiting: AtomicUsize,
    running: AtomicUsize,
}

impl EngineHealth {
    pub fn new(model: &str, stall_threshold: Duration) -> Self {
        Self {
            model: model.to_string(),
            epoch: Instant::now(),
            stall_threshold,
            last_beat_ms: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The loop made progress (or work just arrived at an idle engine: the stall clock starts).
    pub fn beat(&self) {
        self.last_beat_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The engine thread is gone.
    pub fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Publishes queue depth and running count (also exported as gauges).
    pub fn set_load(&self, waiting: usize, running: usize) {
        self.waiting.store(waiting, Ordering::Release);
        self.running.store(running, Ordering::Release);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// `None` when healthy, otherwise one line naming the model and the symptom.
    pub fn problem(&self) -> Option<String> {
        if !self.alive.load(Ordering::Acquire) {
            return Some(format!("engine for model `{}`: thread exited", self.model));
        }
        let (waiting, running) = (self.waiting(), self.running());
        if waiting + running == 0 {
            return None;
        }
        let idle_ms = self
            .now_ms()
            .saturating_sub(self.last_beat_ms.load(Ordering::Acquire));
        let idle = Duration::from_millis(idle_ms);
        (idle > self.stall_threshold).then(|| {
            format!(
                "engine for model `{}`: no progress for {:.1} s (threshold {:.1} s) with {waiting} waiting and {running} running",
                self.model,
                idle.as_secs_f64(),
                self.stall_threshold.as_secs_f64()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_engine_is_healthy_however_long_ago_it_beat() {
        let h = EngineHealth::new("m", Duration::ZERO);
        assert_eq!(h.problem(), None);
    }

    #[test]
    fn engine_with_work_and_no_progress_past_threshold_is_unhealthy() {
        let h = EngineHealth::new("m", Duration::ZERO);
        h.set_load(1, 0);
        // Threshold zero: the stall shows once a whole millisecond without a beat has passed
        // (the clock counts milliseconds); poll for it, with a patience.
        let deadline = Instant::now() + Duration::from_secs(10);
        let p = loop {
            if let Some(p) = h.problem() {
                break p;
            }
            assert!(Instant::now() < deadline, "the stall was never reported");
            std::thread::yield_now();
        };
        assert!(p.contains("`m`") && p.contains("no progress"), "{p}");
    }

    #[test]
    fn dead_engine_is_unhealthy_even_without_work() {
        let h = EngineHealth::new("m", Duration::from_secs(60));
        h.mark_dead();
        assert!(h.problem().expect("dead").contains("thread exited"));
    }
}
