//! Sans-IO continuous-batching scheduler for the language model.
//!
//! Sequences wait in a bounded FIFO queue ([`ContinuousScheduler::push`], refusing with an
//! [`Overload`] at `max_waiting`, or when the sequence would wait longer than `max_wait` for
//! a slot: sequences ahead of it that find no free slot, at the rate slots free up, measured
//! from decode steps run with every slot taken — [`crate::admission`]) and are admitted
//! into the running set between decode steps ([`ContinuousScheduler::admit`]) while fewer than
//! `max_running` run; finished or cancelled sequences leave the running set
//! ([`ContinuousScheduler::finish`]), freeing their slot for the next step. The scheduler only
//! counts running sequences; the engine shell in [`crate::engine`] owns their state.

use crate::admission::{self, Overload, Throughput};
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
    max_wait: Option<Duration>,
    /// Sequences finished per second of decoding with every slot taken.
    slot_frees: Throughput,
}

impl<T> ContinuousScheduler<T> {
    /// `max_running` ≥ 1 sequences decode together; `max_waiting` ≥ 1 may wait; none is
    /// admitted to the queue while the oldest waiting has waited longer than `max_wait`.
    pub fn new(max_running: usize, max_waiting: usize, max_wait: Option<Duration>) -> Self {
        Self {
            waiting: VecDeque::new(),
            running: 0,
            max_running: max_running.max(1),
            max_waiting: max_waiting.max(1),
            max_wait,
            slot_frees: Throughput::default(),
        }
    }

    /// Whether a sequence would be refused as overloaded now.
    pub fn overload(&self) -> Option<Overload> {
        let waiting = self.waiting.len();
        if waiting >= self.max_waiting {
            return Some(Overload::QueueFull { waiting });
        }
        let free = self.max_running.saturating_sub(self.running);
        let ahead = (self.waiting.len() + 1).saturating_sub(free);
        if ahead == 0 {
            return None;
        }
        admission::check(
            waiting,
            self.max_waiting,
            self.slot_frees.time_for(ahead as u64),
            self.max_wait,
        )
    }

    /// Queues a sequence; hands it back, with the reason, when the queue is overloaded.
    pub fn push(&mut self, item: T, now: Instant) -> Result<(), (T, Overload)> {
        if let Some(why) = self.overload() {
            return Err((item, why));
        }
        self.waiting.push_back((item, now));
        Ok(())
    }

    /// Queues all of `items` (the choices of one request) or none: hands them all back, with
    /// the reason, when any would be refused.
    pub fn push_all(&mut self, items: Vec<T>, now: Instant) -> Result<(), (Vec<T>, Overload)> {
        let mut rest = items.into_iter();
        for (pushed, item) in rest.by_ref().enumerate() {
            if let Err((item, why)) = self.push(item, now) {
                let mut back: Vec<T> = self
                    .waiting
                    .drain(self.waiting.len() - pushed..)
                    .map(|(t, _)| t)
                    .collect();
                back.push(item);
                back.extend(rest);
                return Err((back, why));
            }
        }
        Ok(())
    }

    /// A decode step with `ran` sequences took `busy` and ended `finished` of them.
    /// Only steps with every slot taken measure how fast slots free up.
    pub fn step_done(&mut self, ran: usize, finished: usize, busy: Duration) {
        if ran >= self.max_running {
            self.slot_frees.observe(finished as u64, busy);
        }
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
        let mut s = ContinuousScheduler::new(2, 10, None);
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
    fn a_group_is_queued_whole_or_not_at_all() {
        let now = Instant::now();
        let mut s = ContinuousScheduler::new(1, 3, None);
        s.push(0, now).expect("room");
        let (back, why) = s
            .push_all(vec![1, 2, 3], now)
            .expect_err("only 2 places left");
        assert_eq!(back, vec![1, 2, 3]);
        assert_eq!(why, Overload::QueueFull { waiting: 3 });
        assert_eq!(s.waiting(), 1, "nothing of the group stays queued");
        s.push_all(vec![1, 2], now).expect("fits");
        assert_eq!(s.waiting(), 3);
    }

    #[test]
    fn full_queue_hands_the_sequence_back() {
        let t0 = Instant::now();
        let mut s = ContinuousScheduler::new(1, 1, None);
        s.push("a", t0).expect("room");
        assert_eq!(
            s.push("b", t0),
            Err(("b", Overload::QueueFull { waiting: 1 }))
        );
    }

    #[test]
    fn sequences_that_would_wait_past_the_budget_for_a_slot_are_refused() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = ContinuousScheduler::new(2, 100, Some(ms(10)));
        s.push("a", t0).expect("free slot");
        s.push("b", t0).expect("free slot");
        assert_eq!(s.admit(t0).len(), 2);
        // Steps with a free slot measure nothing.
        s.step_done(1, 0, ms(50));
        s.push("c", t0).expect("no rate measured: count bound only");
        // Full steps: one sequence ends per 5 ms, so 10 ms of waiting is 2 ahead.
        s.step_done(2, 1, ms(5));
        s.step_done(2, 3, ms(15));
        s.push("d", t0).expect("2 ahead: 10 ms");
        assert_eq!(
            s.push("e", t0),
            Err(("e", Overload::QueueWait { estimated: ms(15) }))
        );
        s.finish(2);
        assert_eq!(s.admit(t0).len(), 2, "c and d run");
        s.push("f", t0).expect("1 ahead again");
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
            let mut s = ContinuousScheduler::new(max_running, max_waiting, None);
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
