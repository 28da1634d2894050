//! Sans-IO dynamic batcher with Triton's semantics, for the classifier.
//!
//! Requests (each carrying one or more samples) are [`DynamicBatcher::push`]ed with the time
//! they arrive; [`DynamicBatcher::poll`] says, for a given time, whether to dispatch a batch
//! now, when to ask again, or that nothing is waiting. A batch is dispatched when
//!
//! 1. the waiting requests fill `max_batch_size` samples (or the next request would overflow
//!    it), or
//! 2. a prefix of the queue adds up to one of `preferred_batch_sizes` (the largest such), or
//! 3. the oldest request has waited `max_queue_delay`.
//!
//! Requests are never split and leave in FIFO order. [`DynamicBatcher::push`] refuses a
//! request ([`Overload`]) when `max_queue` requests wait or when its estimated wait exceeds
//! `max_queue_wait` (see [`crate::admission`]): the rest of the batch being computed, plus
//! one batch time for every full batch queued ahead of the one the request will ride, at
//! the time per batch measured from batches at least half full
//! ([`DynamicBatcher::batch_done`]; a lightly loaded engine runs small batches, which say
//! little about its saturated speed, and needs no shedding anyway).
//! No clocks, threads or sockets here; the engine shell in [`crate::engine`] drives it.

use crate::admission::{self, Overload, Throughput};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batching policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most samples in one batch (≥ 1).
    pub max_batch_size: usize,
    /// Longest the oldest request waits for the batch to fill.
    pub max_queue_delay: Duration,
    /// Sizes dispatched as soon as a queue prefix reaches one exactly.
    pub preferred_batch_sizes: Vec<usize>,
    /// Most requests waiting (≥ 1).
    pub max_queue: usize,
    /// Refuse a request whose estimated wait exceeds this; `None`: never.
    pub max_queue_wait: Option<Duration>,
}

/// A request in the queue.
#[derive(Debug)]
pub struct Queued<T> {
    pub item: T,
    /// Samples this request contributes to a batch (≥ 1).
    pub samples: usize,
    pub enqueued_at: Instant,
}

/// What the shell should do now.
#[derive(Debug)]
pub enum Decision<T> {
    /// Run these requests as one batch.
    Dispatch(Vec<Queued<T>>),
    /// Nothing to dispatch before this instant (unless more requests arrive).
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// Why [`DynamicBatcher::push`] refused a request; the request is handed back.
#[derive(Debug)]
pub enum PushError<T> {
    /// The queue is overloaded.
    Overloaded(T, Overload),
    /// The request has 0 samples or more than `max_batch_size`: it could never be dispatched.
    BadSize(T),
}

/// The batcher state machine. See the module docs.
#[derive(Debug)]
pub struct DynamicBatcher<T> {
    config: BatcherConfig,
    queue: VecDeque<Queued<T>>,
    samples_waiting: usize,
    /// Batches (at least half full) per second of compute.
    batches: Throughput,
    /// When the batch being computed was dispatched.
    computing_since: Option<Instant>,
}

impl<T> DynamicBatcher<T> {
    pub fn new(config: BatcherConfig) -> Self {
        Self {
            config,
            queue: VecDeque::new(),
            samples_waiting: 0,
            batches: Throughput::default(),
            computing_since: None,
        }
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Samples waiting, over all requests.
    pub fn samples_waiting(&self) -> usize {
        self.samples_waiting
    }

    /// About how long a request of `samples` samples arriving at `now` would wait for its
    /// batch to start; `None` until a batch time has been measured.
    pub fn estimated_wait(&self, samples: usize, now: Instant) -> Option<Duration> {
        let batch = self.batches.time_for(1)?;
        let position = self.samples_waiting + samples;
        let batches_ahead = position
            .div_ceil(self.config.max_batch_size)
            .saturating_sub(1);
        let in_progress = self.computing_since.map_or(Duration::ZERO, |t| {
            batch.saturating_sub(now.saturating_duration_since(t))
        });
        Some(in_progress.saturating_add(self.batches.time_for(batches_ahead as u64)?))
    }

    /// Whether a request of `samples` samples would be refused as overloaded at `now`.
    pub fn overload(&self, samples: usize, now: Instant) -> Option<Overload> {
        admission::check(
            self.queue.len(),
            self.config.max_queue,
            self.estimated_wait(samples, now),
            self.config.max_queue_wait,
        )
    }

    /// The batch last dispatched, of `samples` samples, took `exec` to compute.
    pub fn batch_done(&mut self, samples: usize, exec: Duration) {
        self.computing_since = None;
        if samples * 2 >= self.config.max_batch_size {
            self.batches.observe(1, exec);
        }
    }

    /// Queues a request of `samples` samples that arrived at `now`.
    pub fn push(&mut self, item: T, samples: usize, now: Instant) -> Result<(), PushError<T>> {
        if samples == 0 || samples > self.config.max_batch_size {
            return Err(PushError::BadSize(item));
        }
        if let Some(why) = self.overload(samples, now) {
            return Err(PushError::Overloaded(item, why));
        }
        self.samples_waiting += samples;
        self.queue.push_back(Queued {
            item,
            samples,
            enqueued_at: now,
        });
        Ok(())
    }

    /// Decides what to do at `now`. Call again after a `Dispatch` (another batch may be ready),
    /// at the `WaitUntil` instant, and after every `push`.
    pub fn poll(&mut self, now: Instant) -> Decision<T> {
        let Some(oldest) = self.queue.front() else {
            return Decision::Idle;
        };
        let deadline = oldest.enqueued_at + self.config.max_queue_delay;
        let max = self.config.max_batch_size;
        let mut sum = 0;
        let mut fitting = 0;
        let mut full = false;
        let mut preferred = None;
        for q in &self.queue {
            if sum + q.samples > max {
                full = true;
                break;
            }
            sum += q.samples;
            fitting += 1;
            if self.config.preferred_batch_sizes.contains(&sum) {
                preferred = Some(fitting);
            }
        }
        let take = if full || sum == max {
            fitting
        } else if let Some(n) = preferred {
            n
        } else if now >= deadline {
            fitting
        } else {
            return Decision::WaitUntil(deadline);
        };
        let batch: Vec<Queued<T>> = self.queue.drain(..take).collect();
        self.samples_waiting -= batch.iter().map(|q| q.samples).sum::<usize>();
        self.computing_since = Some(now);
        Decision::Dispatch(batch)
    }

    /// Removes and returns everything waiting (used when the engine dies).
    pub fn take_all(&mut self) -> Vec<Queued<T>> {
        self.samples_waiting = 0;
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(max: usize, delay_ms: u64, preferred: &[usize], max_queue: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch_size: max,
            max_queue_delay: Duration::from_millis(delay_ms),
            preferred_batch_sizes: preferred.to_vec(),
            max_queue,
            max_queue_wait: None,
        }
    }

    fn ids<T: Copy>(d: Decision<T>) -> Vec<T> {
        match d {
            Decision::Dispatch(b) => b.iter().map(|q| q.item).collect(),
            other => panic!(
                "expected a dispatch, got {other:?}",
                other = matches_name(&other)
            ),
        }
    }

    fn matches_name<T>(d: &Decision<T>) -> &'static str {
        match d {
            Decision::Dispatch(_) => "Dispatch",
            Decision::WaitUntil(_) => "WaitUntil",
            Decision::Idle => "Idle",
        }
    }

    #[test]
    fn empty_batcher_is_idle() {
        let mut b = DynamicBatcher::<u32>::new(cfg(4, 5, &[], 10));
        assert!(matches!(b.poll(Instant::now()), Decision::Idle));
    }

    #[test]
    fn partial_batch_waits_until_oldest_deadline_then_dispatches() {
        let t0 = Instant::now();
        let mut b = DynamicBatcher::new(cfg(4, 5, &[], 10));
        b.push(1, 1, t0).expect("room");
        b.push(2, 1, t0 + Duration::from_millis(3)).expect("room");
        match b.poll(t0 + Duration::from_millis(3)) {
            Decision::WaitUntil(d) => assert_eq!(d, t0 + Duration::from_millis(5)),
            other => panic!("expected WaitUntil, got {}", matches_name(&other)),
        }
        assert_eq!(ids(b.poll(t0 + Duration::from_millis(5))), vec![1, 2]);
        assert!(b.is_empty());
    }

    #[test]
    fn full_batch_dispatches_immediately_and_leftovers_wait() {
        let t0 = Instant::now();
        let mut b = DynamicBatcher::new(cfg(4, 100, &[], 10));
        for i in 0..5 {
            b.push(i, 1, t0).expect("room");
        }
        assert_eq!(ids(b.poll(t0)), vec![0, 1, 2, 3]);
        assert!(matches!(b.poll(t0), Decision::WaitUntil(_)));
        assert_eq!(b.samples_waiting(), 1);
    }

    #[test]
    fn request_that_would_overflow_closes_the_batch() {
        let t0 = Instant::now();
        let mut b = DynamicBatcher::new(cfg(8, 100, &[], 10));
        b.push("a", 5, t0).expect("room");
        b.push("b", 4, t0).expect("room");
        assert_eq!(ids(b.poll(t0)), vec!["a"]);
    }

    #[test]
    fn preferred_size_dispatches_largest_reached_prefix() {
        let t0 = Instant::now();
        let mut b = DynamicBatcher::new(cfg(16, 100, &[2, 4], 10));
        for i in 0..5 {
            b.push(i, 1, t0).expect("room");
        }
        assert_eq!(ids(b.poll(t0)), vec![0, 1, 2, 3]);
        assert!(matches!(b.poll(t0), Decision::WaitUntil(_)));
    }

    #[test]
    fn queue_bound_refuses_and_returns_the_request() {
        let t0 = Instant::now();
        let mut b = DynamicBatcher::new(cfg(4, 1, &[], 2));
        b.push(1, 1, t0).expect("room");
        b.push(2, 1, t0).expect("room");
        assert!(matches!(
            b.push(3, 1, t0),
            Err(PushError::Overloaded(3, Overload::QueueFull { waiting: 2 }))
        ));
        assert!(matches!(b.push(4, 5, t0), Err(PushError::BadSize(4))));
        assert!(matches!(b.push(5, 0, t0), Err(PushError::BadSize(5))));
    }

    #[test]
    fn requests_whose_estimated_wait_exceeds_the_budget_are_refused() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = DynamicBatcher::new(BatcherConfig {
            max_queue_wait: Some(ms(50)),
            ..cfg(4, 1, &[], 100)
        });
        // Small batches measure nothing; without a measurement only the count applies.
        b.batch_done(1, ms(100));
        assert_eq!(b.estimated_wait(1, t0), None);
        for i in 0..8 {
            b.push(i, 1, t0).expect("no batch time measured yet");
        }
        // A full batch of 4 took 20 ms.
        b.batch_done(4, ms(20));
        assert_eq!(
            b.estimated_wait(1, t0),
            Some(ms(40)),
            "2 full batches ahead"
        );
        // A batch is being computed: 15 ms of it are left at t0 + 5 ms.
        assert_eq!(ids(b.poll(t0)), vec![0, 1, 2, 3]);
        assert_eq!(b.estimated_wait(1, t0 + ms(5)), Some(ms(15 + 20)));
        for i in 8..12 {
            b.push(i, 1, t0 + ms(5))
                .expect("rides the next batch: 35 ms");
        }
        assert!(matches!(
            b.push(12, 1, t0 + ms(5)),
            Err(PushError::Overloaded(12, Overload::QueueWait { estimated })) if estimated == ms(55)
        ));
        b.batch_done(4, ms(20));
        assert_eq!(
            b.estimated_wait(1, t0 + ms(20)),
            Some(ms(40)),
            "nothing in progress"
        );
    }

    proptest! {
        /// Driven by a shell that polls at every arrival and at every deadline it is given:
        /// every accepted request is dispatched exactly once, in FIFO order, no batch exceeds
        /// max_batch_size, and no request waits longer than max_queue_delay.
        #[test]
        fn no_request_lost_duplicated_or_late(
            max in 1usize..12,
            delay_ms in 0u64..20,
            max_queue in 1usize..30,
            preferred in proptest::collection::vec(1usize..12, 0..3),
            arrivals in proptest::collection::vec((0u64..10, 1usize..12), 0..80),
        ) {
            let preferred: Vec<usize> = preferred.into_iter().filter(|p| *p <= max).collect();
            let delay = Duration::from_millis(delay_ms);
            let t0 = Instant::now();
            let mut b = DynamicBatcher::new(cfg(max, delay_ms, &preferred, max_queue));
            let mut now = t0;
            let mut accepted = Vec::new();
            let mut dispatched = Vec::new();
            let mut wake: Option<Instant> = None;
            let drive = |b: &mut DynamicBatcher<usize>, now: Instant, dispatched: &mut Vec<usize>| -> Result<Option<Instant>, TestCaseError> {
                loop {
                    match b.poll(now) {
                        Decision::Dispatch(batch) => {
                            prop_assert!(!batch.is_empty());
                            prop_assert!(batch.iter().map(|q| q.samples).sum::<usize>() <= max);
                            for q in batch {
                                prop_assert!(now - q.enqueued_at <= delay, "waited {:?} > {:?}", now - q.enqueued_at, delay);
                                dispatched.push(q.item);
                            }
                        }
                        Decision::WaitUntil(d) => { prop_assert!(d > now); return Ok(Some(d)) }
                        Decision::Idle => return Ok(None),
                    }
                }
            };
            for (i, (gap_ms, samples)) in arrivals.into_iter().enumerate() {
                let next = now + Duration::from_millis(gap_ms);
                // Serve deadlines that fall before the next arrival, on time.
                while let Some(d) = wake.filter(|d| *d <= next) {
                    now = d;
                    wake = drive(&mut b, now, &mut dispatched)?;
                }
                now = next;
                let samples = samples.min(max);
                if b.push(i, samples, now).is_ok() {
                    accepted.push(i);
                }
                wake = drive(&mut b, now, &mut dispatched)?;
            }
            while let Some(d) = wake {
                now = d;
                wake = drive(&mut b, now, &mut dispatched)?;
            }
            prop_assert_eq!(dispatched, accepted);
            prop_assert!(b.is_empty());
            prop_assert_eq!(b.samples_waiting(), 0);
        }
    }
}
