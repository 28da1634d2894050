//! Sans-IO continuous-batching scheduler for the language model.
//!
//! Sequences wait in a bounded FIFO queue ([`ContinuousScheduler::push`]) and are admitted
//! into the running set between decode steps ([`ContinuousScheduler::admit`]) while fewer than
//! `max_running` run; finished or cancelled sequences leave the running set
//! ([`ContinuousScheduler::finish`]), freeing their slot for the next step. The scheduler only
//! counts running sequences; the engine shell in [`crate::engine`] owns their state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A sequence moved from the queue into the running set, with how long it waited.
#[derive(Debug)]
pub struct Admitted<T> {
    pub item: T,
    pub queued_for: Duration,
}

/// See the module docs.
#[derive(Debug)]
pub struct ContinuousScheduler<T> {
    waiting: VecDeque<(T, Instant)>,
    running: usize,
    max_running: usize,
    max_waiting: usize,
}

impl<T> ContinuousScheduler<T> {
    /// `max_running` ≥ 1 sequences decode together; `max_waiting` ≥ 1 may wait.
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            running: 0,
            max_running: max_running.max(1),
            max_waiting: max_waiting.max(1),
        }
    }

    /// Queues a sequence; hands it back when `max_waiting` are already waiting.
    pub fn push(&mut self, item: T, now: Instant) -> Result<(), T> {
        if self.waiting.len() >= self.max_waiting {
            return Err(item);
        }
        self.waiting.push_back((item, now));
        Ok(())
    }

    /// Moves waiting sequences into the running set, oldest first, up to `max_running`.
    pub fn admit(&mut self, now: Instant) -> Vec<Admitted<T>> {
        let free = self.max_running.saturating_sub(self.running);
        let n = free.min(self.waiting.len());
        self.running += n;
        self.waiting
            .drain(..n)
            .map(|(item, at)| Admitted {
                item,
                queued_for: now.saturating_duration_since(at),
            })
            .collect()
    }

    /// `n` running sequences finished or were cancelled.
    pub fn finish(&mut self, n: usize) {
        debug_assert!(n <= self.running, "finishing more sequences than run");
        self.running = self.running.saturating_sub(n);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Removes everything waiting (used when the engine dies).
    pub fn take_waiting(&mut self) -> Vec<T> {
        self.waiting.drain(..).map(|(t, _)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admits_up_to_max_running_in_fifo_order() {
        let t0 = Instant::now();
        let mut s = ContinuousScheduler::new(2, 10);
        for i in 0..3 {
            s.push(i, t0).expect("room");
        }
        let a: Vec<_> = s.admit(t0).into_iter().map(|a| a.item).collect();
        assert_eq!(a, vec![0, 1]);
        assert!(s.admit(t0).is_empty());
        s.finish(1);
        let later = t0 + Duration::from_millis(7);
        let a = s.admit(later);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].item, 2);
        assert_eq!(a[0].queued_for, Duration::from_millis(7));
    }

    #[test]
    fn full_queue_hands_the_sequence_back() {
        let t0 = Instant::now();
        let mut s = ContinuousScheduler::new(1, 1);
        s.push("a", t0).expect("room");
        assert_eq!(s.push("b", t0), Err("b"));
    }

    proptest! {
        /// Under any interleaving of arrivals, admissions and completions: the running set
        /// never exceeds max_running, the queue never exceeds max_waiting, and every accepted
        /// sequence is admitted exactly once, in arrival order.
        #[test]
        fn bounded_fifo_and_nothing_lost(
            max_running in 1usize..6,
            max_waiting in 1usize..8,
            ops in proptest::collection::vec(0u8..3, 0..200),
        ) {
            let t0 = Instant::now();
            let mut s = ContinuousScheduler::new(max_running, max_waiting);
            let (mut next, mut accepted, mut admitted) = (0usize, vec![], vec![]);
            for op in ops {
                match op {
                    0 => { if s.push(next, t0).is_ok() { accepted.push(next) } next += 1; }
                    1 => admitted.extend(s.admit(t0).into_iter().map(|a| a.item)),
                    _ => if s.running() > 0 { s.finish(1) },
                }
                prop_assert!(s.running() <= max_running);
                prop_assert!(s.waiting() <= max_waiting);
            }
            while s.waiting() > 0 {
                s.finish(s.running());
                admitted.extend(s.admit(t0).into_iter().map(|a| a.item));
            }
            prop_assert_eq!(admitted, accepted);
        }
    }
}
