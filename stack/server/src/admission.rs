//! Sans-IO admission control shared by the classifier's batcher and the LM's scheduler.
//!
//! A queue refuses a request ([`Overload`], answered `429`) when
//!
//! 1. `max_waiting` requests already wait (a memory bound, `--max-queue`), or
//! 2. the request's **estimated queueing time** exceeds the budget (`--max-queue-wait-ms`).
//!    The estimate comes from the engine's measured speed while saturated ([`Throughput`]):
//!    for the classifier, the batch in progress plus the full batches queued ahead of the
//!    request, at the measured time per batch ([`crate::batcher`]); for the LM, the
//!    sequences ahead of it that find no free slot, at the rate slots free up
//!    ([`crate::scheduler`]).
//!
//! Rule 2 keeps an admitted request's wait near the budget under any overload: the queue
//! holds about `budget × throughput` work, whatever the offered rate, and a burst is
//! refused at its tail instead of being queued up to the count bound. (Admitting while the
//! oldest waiting request is young, CoDel's signal used at the tail, was tried first: under
//! 5× load it admitted bursts at the offered rate whenever the head was young, and queues
//! filled to the count bound.) Until a throughput has been measured only rule 1 applies.

use std::time::Duration;

/// Why a queue refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// This many requests already wait (`max_waiting`).
    QueueFull { waiting: usize },
    /// The request would wait about this long, past the budget.
    QueueWait { estimated: Duration },
}

/// An engine's service rate while busy: items finished per second of busy time, as an
/// exponentially weighted average over windows of at least [`Throughput::WINDOW`].
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    per_s: Option<f64>,
    items: u64,
    busy: Duration,
}

impl Throughput {
    /// Shortest stretch of busy time folded into the average at once.
    pub const WINDOW: Duration = Duration::from_millis(20);
    /// Weight of the newest window.
    pub const ALPHA: f64 = 0.25;

    /// `items` finished (samples of a batch, sequences of a decode step — possibly none)
    /// during `busy` of work.
    pub fn observe(&mut self, items: u64, busy: Duration) {
        self.items += items;
        self.busy += busy;
        if self.busy < Self::WINDOW {
            return;
        }
        let sample = self.items as f64 / self.busy.as_secs_f64();
        self.per_s = Some(match self.per_s {
            None => sample,
            Some(r) => r + Self::ALPHA * (sample - r),
        });
        self.items = 0;
        self.busy = Duration::ZERO;
    }

    /// Items per second, once measured (a window that finished nothing measures 0).
    pub fn per_s(&self) -> Option<f64> {
        self.per_s
    }

    /// About how long `items` take at the measured rate; `None` before a measurement.
    /// A measured rate of 0 (the engine finished nothing lately) reads as very long.
    pub fn time_for(&self, items: u64) -> Option<Duration> {
        let r = self.per_s?;
        if r <= 0.0 {
            return Some(Duration::MAX);
        }
        Some(Duration::try_from_secs_f64(items as f64 / r).unwrap_or(Duration::MAX))
    }
}

/// The admission decision for a request that would wait about `estimated` (`None`: not yet
/// known), with `waiting` requests queued.
pub fn check(
    waiting: usize,
    max_waiting: usize,
    estimated: Option<Duration>,
    budget: Option<Duration>,
) -> Option<Overload> {
    if waiting >= max_waiting {
        return Some(Overload::QueueFull { waiting });
    }
    let (estimated, budget) = (estimated?, budget?);
    (estimated > budget).then_some(Overload::QueueWait { estimated })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn throughput_is_measured_over_windows_and_averaged() {
        let mut t = Throughput::default();
        t.observe(10, MS(10));
        assert_eq!(t.per_s(), None, "half a window");
        t.observe(10, MS(10));
        assert_eq!(t.per_s(), Some(1000.0));
        // A slower window moves the average a quarter of the way.
        t.observe(10, MS(40));
        assert_eq!(t.per_s(), Some(1000.0 + 0.25 * (250.0 - 1000.0)));
        assert_eq!(t.time_for(0), Some(Duration::ZERO));
    }

    #[test]
    fn a_window_that_finished_nothing_makes_every_wait_long() {
        let mut t = Throughput::default();
        t.observe(0, MS(30));
        assert_eq!(t.time_for(1), Some(Duration::MAX));
    }

    #[test]
    fn count_bound_applies_first_and_wait_bound_only_once_estimated() {
        let budget = Some(MS(50));
        assert_eq!(
            check(8, 8, Some(MS(1)), budget),
            Some(Overload::QueueFull { waiting: 8 })
        );
        assert_eq!(check(7, 8, None, budget), None, "no estimate yet");
        assert_eq!(check(0, 8, Some(MS(50)), budget), None);
        assert_eq!(
            check(0, 8, Some(MS(51)), budget),
            Some(Overload::QueueWait { estimated: MS(51) })
        );
        assert_eq!(
            check(0, 8, Some(MS(51)), None),
            None,
            "no budget: no wait bound"
        );
    }
}
