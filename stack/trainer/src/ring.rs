//! The ring all-reduce schedule as pure functions: which chunk each rank sends, receives and
//! reduces at each step. No sockets here; [`crate::comm::TcpRing`] moves the bytes.
//!
//! A buffer of `len` values is cut into `world` contiguous chunks ([`chunk_ranges`]; chunks
//! may be empty when `len < world`). Reduce-scatter takes `world − 1` steps: at step `s`
//! rank `r` sends chunk `(r − s) mod N` to rank `r + 1` and receives chunk `(r − s − 1) mod N`
//! from rank `r − 1`, adding it into its own copy. Rank `r` then holds the complete sum of
//! chunk `(r + 1) mod N`. All-gather takes `world − 1` more steps that copy complete chunks
//! around the ring. Every value crosses `2(N − 1)/N` of the buffer per rank, the
//! bandwidth-optimal volume, and the summation order of each chunk is fixed by the ring, so
//! the result is bitwise reproducible for a given world size.

use std::ops::Range;

/// One step of the schedule for one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingStep {
    /// Chunk index sent to the next rank.
    pub send: usize,
    /// Chunk index received from the previous rank.
    pub recv: usize,
    /// `true`: add the received values into the local chunk (reduce-scatter);
    /// `false`: overwrite it (all-gather).
    pub reduce: bool,
}

/// Splits `0..len` into `world` contiguous ranges whose lengths differ by at most one (the
/// first `len % world` get one extra value). Empty ranges when `len < world`.
pub fn chunk_ranges(len: usize, world: usize) -> Vec<Range<usize>> {
    assert!(world > 0, "world size must be positive");
    let base = len / world;
    let extra = len % world;
    let mut start = 0;
    (0..world)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let r = start..start + n;
            start += n;
            r
        })
        .collect()
}

/// The `2(world − 1)` steps of a ring all-reduce for `rank` (empty for `world == 1`).
pub fn all_reduce_schedule(rank: usize, world: usize) -> Vec<RingStep> {
    assert!(rank < world, "rank {rank} outside world {world}");
    let n = world;
    let m = |x: isize| x.rem_euclid(n as isize) as usize;
    let r = rank as isize;
    let mut steps = Vec::with_capacity(2 * (n - 1));
    for s in 0..n.saturating_sub(1) as isize {
        steps.push(RingStep {
            send: m(r - s),
            recv: m(r - s - 1),
            reduce: true,
        });
    }
    for s in 0..n.saturating_sub(1) as isize {
        steps.push(RingStep {
            send: m(r + 1 - s),
            recv: m(r - s),
            reduce: false,
        });
    }
    steps
}

/// Next and previous rank on the ring.
pub fn neighbours(rank: usize, world: usize) -> (usize, usize) {
    ((rank + 1) % world, (rank + world - 1) % world)
}

/// Runs the schedule for all ranks in memory (the message-passing semantics of the ring,
/// step by step), for tests of the schedule itself.
pub fn simulate(mut buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let n = buffers.len();
    if n <= 1 {
        return buffers;
    }
    let len = buffers[0].len();
    let ranges = chunk_ranges(len, n);
    let schedules: Vec<_> = (0..n).map(|r| all_reduce_schedule(r, n)).collect();
    for step in 0..2 * (n - 1) {
        // Everyone sends first (values as they were before this step), then receives.
        let sent: Vec<Vec<f32>> = (0..n)
            .map(|r| buffers[r][ranges[schedules[r][step].send].clone()].to_vec())
            .collect();
        for r in 0..n {
            let (_, prev) = neighbours(r, n);
            let st = schedules[r][step];
            debug_assert_eq!(schedules[prev][step].send, st.recv);
            let dst = &mut buffers[r][ranges[st.recv].clone()];
            for (d, s) in dst.iter_mut().zip(&sent[prev]) {
                if st.reduce {
                    *d += *s;
                } else {
                    *d = *s;
                }
            }
        }
    }
    buffers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunks_cover_the_buffer_even_when_smaller_than_the_world() {
        let r = chunk_ranges(3, 5);
        assert_eq!(r, vec![0..1, 1..2, 2..3, 3..3, 3..3]);
        let r = chunk_ranges(10, 3);
        assert_eq!(r, vec![0..4, 4..7, 7..10]);
    }

    #[test]
    fn each_rank_receives_what_its_predecessor_sends() {
        for n in 1..=8 {
            for step in 0..2 * (n - 1) {
                for r in 0..n {
                    let (_, prev) = neighbours(r, n);
                    assert_eq!(
                        all_reduce_schedule(prev, n)[step].send,
                        all_reduce_schedule(r, n)[step].recv
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn simulated_ring_gives_every_rank_the_exact_sum(
            n in 1usize..=8,
            len in 0usize..40,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Small integers: sums are exact in f32 whatever the order.
            let inputs: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..len).map(|_| rng.gen_range(-100i32..100) as f32).collect())
                .collect();
            let expect: Vec<f32> = (0..len).map(|i| inputs.iter().map(|b| b[i]).sum()).collect();
            for out in simulate(inputs) {
                prop_assert_eq!(&out, &expect);
            }
        }
    }
}
