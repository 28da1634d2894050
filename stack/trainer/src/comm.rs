//! Collective communication between workers: the [`Communicator`] trait and its TCP ring
//! implementation ([`TcpRing`]), plus [`Solo`] for a world of one.
//!
//! `TcpRing` keeps two loopback/LAN TCP connections per rank: one to the next rank (send) and
//! one from the previous rank (receive); both are used at once in each ring step (the send on
//! a scoped thread), so a step costs one chunk transfer. Values travel as native-endian f32
//! (all workers run on the same architecture). A ring can be aborted from another thread
//! ([`AbortHandle`]), which is how heartbeat failure detection unblocks a worker stuck in a
//! collective with a dead or stopped peer.
//!
//! Not here: the schedule math ([`crate::ring`]), membership ([`crate::rendezvous`]).

use crate::ring::{all_reduce_schedule, chunk_ranges, neighbours};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A collective failed: the ring is unusable and must be re-formed.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// Reading from or writing to a peer failed (peer died, connection reset, timeout).
    #[error("{op} with rank {peer} failed: {source}")]
    Io {
        op: &'static str,
        peer: usize,
        #[source]
        source: std::io::Error,
    },
    /// The ring could not be formed before the deadline.
    #[error("could not connect the ring (rank {rank} of {world}, epoch {epoch}): {message}")]
    Connect {
        rank: usize,
        world: usize,
        epoch: u64,
        message: String,
    },
    /// The root of a broadcast is not a rank.
    #[error("broadcast root {root} is outside the world of {world}")]
    BadRoot { root: usize, world: usize },
    /// A non-TCP backend (NCCL) failed.
    #[error("{backend} collective failed: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

/// Collective operations over the workers of one membership epoch. Every rank must call the
/// same collectives in the same order with buffers of the same length.
pub trait Communicator: Send {
    /// This worker's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// Number of workers.
    fn world(&self) -> usize;
    /// Replaces `data` on every rank with the element-wise sum over all ranks.
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), CommError>;
    /// Replaces `data` on every rank with `root`'s `data`.
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<(), CommError>;
    /// Returns once every rank has called `barrier`.
    fn barrier(&mut self) -> Result<(), CommError> {
        self.all_reduce_sum(&mut [0.0])
    }
}

/// The communicator of a world of one: every collective is the identity.
#[derive(Debug, Default)]
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32], root: usize) -> Result<(), CommError> {
        if root != 0 {
            return Err(CommError::BadRoot { root, world: 1 });
        }
        Ok(())
    }
}

/// Values per receive piece: received data is reduced in pieces of this size while the rest
/// of the chunk is still arriving.
const PIECE: usize = 64 * 1024;

/// Chunks up to this many bytes are written before reading, without a send thread (the
/// kernel's socket buffers hold them).
const INLINE_BYTES: usize = 32 * 1024;

/// Closes a ring's sockets from another thread so blocked collectives return an error, and
/// raises the ring's abort flag, which communicators bootstrapped over the ring (the
/// shared-memory one) poll while they wait.
#[derive(Debug)]
pub struct AbortHandle {
    streams: Vec<TcpStream>,
    flag: Arc<AtomicBool>,
}

impl AbortHandle {
    /// Shuts both connections down; collectives in progress fail with [`CommError::Io`].
    pub fn abort(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for s in &self.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Ring all-reduce over TCP. Build with [`TcpRing::connect`].
#[derive(Debug)]
pub struct TcpRing {
    rank: usize,
    world: usize,
    /// To `rank + 1`.
    next: Option<TcpStream>,
    /// From `rank − 1`.
    prev: Option<TcpStream>,
    scratch: Vec<f32>,
    /// Raised by [`AbortHandle::abort`].
    aborted: Arc<AtomicBool>,
}

/// First bytes on every ring connection: epoch and sender rank, so a connection left over
/// from an earlier epoch is recognised and dropped.
fn hello(epoch: u64, rank: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&epoch.to_le_bytes());
    b[8..].copy_from_slice(&(rank as u64).to_le_bytes());
    b
}

impl TcpRing {
    /// Forms the ring for `epoch`: connects to `peers[rank + 1]` and accepts the connection
    /// of `rank − 1` on `listener` (whose address is `peers[rank]`). Retries until `timeout`.
    pub fn connect(
        listener: &TcpListener,
        rank: usize,
        peers: &[SocketAddr],
        epoch: u64,
        timeout: Duration,
    ) -> Result<Self, CommError> {
        let world = peers.len();
        let err = |message: String| CommError::Connect {
            rank,
            world,
            epoch,
            message,
        };
        if rank >= world {
            return Err(err(format!("rank {rank} outside the peer list")));
        }
        if world == 1 {
            return Ok(Self {
                rank,
                world,
                next: None,
                prev: None,
                scratch: Vec::new(),
                aborted: Arc::default(),
            });
        }
        let deadline = Instant::now() + timeout;
        let (next_rank, prev_rank) = neighbours(rank, world);
        let next_addr = peers[next_rank];
        let next = std::thread::scope(|s| {
            let dialer = s.spawn(move || -> Result<TcpStream, String> {
                loop {
                    match TcpStream::connect_timeout(&next_addr, Duration::from_millis(500)) {
                        Ok(mut stream) => {
                            stream.set_nodelay(true).map_err(|e| e.to_string())?;
                            stream
                                .write_all(&hello(epoch, rank))
                                .map_err(|e| e.to_string())?;
                            return Ok(stream);
                        }
                        Err(e) if Instant::now() >= deadline => {
                            return Err(format!("connect to rank {next_rank} at {next_addr}: {e}"))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
            let prev = accept_prev(listener, epoch, prev_rank, deadline);
            let next = dialer
                .join()
                .unwrap_or_else(|_| Err("connect thread panicked".into()));
            (next, prev)
        });
        let (next, prev) = next;
        let next = next.map_err(err)?;
        let prev = prev.map_err(err)?;
        Ok(Self {
            rank,
            world,
            next: Some(next),
            prev: Some(prev),
            scratch: vec![0.0; PIECE],
            aborted: Arc::default(),
        })
    }

    /// A handle that aborts this ring from another thread.
    pub fn abort_handle(&self) -> Option<AbortHandle> {
        let streams = [&self.next, &self.prev]
            .into_iter()
            .flatten()
            .filter_map(|s| s.try_clone().ok())
            .collect::<Vec<_>>();
        (!streams.is_empty()).then(|| AbortHandle {
            streams,
            flag: self.aborted.clone(),
        })
    }

    /// The flag [`AbortHandle::abort`] raises.
    pub fn abort_flag(&self) -> Arc<AtomicBool> {
        self.aborted.clone()
    }

    /// Sets a read timeout on the receive side (hang detection independent of heartbeats).
    pub fn set_recv_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match &self.prev {
            Some(p) => p.set_read_timeout(timeout),
            None => Ok(()),
        }
    }

    fn streams(&self) -> (&TcpStream, &TcpStream) {
        match (&self.next, &self.prev) {
            (Some(n), Some(p)) => (n, p),
            _ => unreachable!("a ring of more than one rank has both streams"),
        }
    }
}

fn accept_prev(
    listener: &TcpListener,
    epoch: u64,
    prev_rank: usize,
    deadline: Instant,
) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.to_string())?;
                let mut h = [0u8; 16];
                if stream.read_exact(&mut h).is_ok() && h == hello(epoch, prev_rank) {
                    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    return Ok(stream);
                }
                // A stale connection from an earlier epoch, or a stranger: drop it.
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "rank {prev_rank} did not connect for epoch {epoch} in time"
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Writes `src` to `to` while reading as many values from `from` into `dst` (adding when
/// `reduce`), in pieces through `scratch`.
#[allow(clippy::too_many_arguments)]
fn exchange(
    to: &TcpStream,
    from: &TcpStream,
    src: &[f32],
    dst: &mut [f32],
    reduce: bool,
    scratch: &mut [f32],
    next_rank: usize,
    prev_rank: usize,
) -> Result<(), CommError> {
    let send_bytes: &[u8] = bytemuck::cast_slice(src);
    let recv = |dst: &mut [f32], scratch: &mut [f32]| -> Result<(), CommError> {
        let mut from = from;
        if !reduce {
            // All-gather: the received values are final; read them in place.
            return from
                .read_exact(bytemuck::cast_slice_mut(dst))
                .map_err(|source| CommError::Io {
                    op: "receive",
                    peer: prev_rank,
                    source,
                });
        }
        for piece in dst.chunks_mut(scratch.len().max(1)) {
            let buf = &mut scratch[..piece.len()];
            from.read_exact(bytemuck::cast_slice_mut(buf))
                .map_err(|source| CommError::Io {
                    op: "receive",
                    peer: prev_rank,
                    source,
                })?;
            for (d, s) in piece.iter_mut().zip(buf.iter()) {
                *d += *s;
            }
        }
        Ok(())
    };
    let send = || {
        let mut to = to;
        to.write_all(send_bytes).map_err(|source| CommError::Io {
            op: "send",
            peer: next_rank,
            source,
        })
    };
    if send_bytes.len() <= INLINE_BYTES {
        send()?;
        return recv(dst, scratch);
    }
    std::thread::scope(|s| {
        let sender = s.spawn(send);
        let received = recv(dst, scratch);
        if received.is_err() {
            // Unblock the sender if the peer is gone.
            let _ = to.shutdown(Shutdown::Write);
        }
        let sent = sender.join().unwrap_or_else(|_| {
            Err(CommError::Io {
                op: "send",
                peer: next_rank,
                source: std::io::Error::other("send thread panicked"),
            })
        });
        received.and(sent)
    })
}

/// Disjoint views of two ranges of one buffer: `(&data[a], &mut data[b])`.
fn split_pair(
    data: &mut [f32],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> (&[f32], &mut [f32]) {
    if a.end <= b.start {
        let (lo, hi) = data.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.len()])
    } else {
        assert!(b.end <= a.start, "ring chunks are disjoint");
        let (lo, hi) = data.split_at_mut(a.start);
        (&hi[..a.len()], &mut lo[b])
    }
}

impl Communicator for TcpRing {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), CommError> {
        if self.world == 1 {
            return Ok(());
        }
        let ranges = chunk_ranges(data.len(), self.world);
        let (next_rank, prev_rank) = neighbours(self.rank, self.world);
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = (|| {
            let (to, from) = self.streams();
            for st in all_reduce_schedule(self.rank, self.world) {
                let (src, dst) = split_pair(data, ranges[st.send].clone(), ranges[st.recv].clone());
                exchange(
                    to,
                    from,
                    src,
                    dst,
                    st.reduce,
                    &mut scratch,
                    next_rank,
                    prev_rank,
                )?;
            }
            Ok(())
        })();
        self.scratch = scratch;
        result
    }

    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<(), CommError> {
        if root >= self.world {
            return Err(CommError::BadRoot {
                root,
                world: self.world,
            });
        }
        if self.world == 1 {
            return Ok(());
        }
        let (next_rank, prev_rank) = neighbours(self.rank, self.world);
        let (to, from) = self.streams();
        let (mut to, mut from) = (to, from);
        // Pipelined along the ring: receive a piece from the previous rank, forward it, unless
        // the next rank is the root (the chain ends there).
        for piece in data.chunks_mut(PIECE) {
            if self.rank != root {
                from.read_exact(bytemuck::cast_slice_mut(piece))
                    .map_err(|source| CommError::Io {
                        op: "receive",
                        peer: prev_rank,
                        source,
                    })?;
            }
            if next_rank != root {
                to.write_all(bytemuck::cast_slice(piece))
                    .map_err(|source| CommError::Io {
                        op: "send",
                        peer: next_rank,
                        source,
                    })?;
            }
        }
        Ok(())
    }
}

/// Builds a ring of `world` ranks on loopback inside one process, one communicator per rank
/// (for tests and benchmarks; real workers use [`TcpRing::connect`] with their own
/// listener).
pub fn loopback_ring(world: usize, epoch: u64) -> Result<Vec<TcpRing>, CommError> {
    let listeners: Vec<TcpListener> = (0..world)
        .map(|rank| {
            TcpListener::bind("127.0.0.1:0").map_err(|e| CommError::Connect {
                rank,
                world,
                epoch,
                message: format!("bind: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let peers: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound listener has an address"))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, l)| {
                let peers = &peers;
                s.spawn(move || TcpRing::connect(l, rank, peers, epoch, Duration::from_secs(10)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ring connect thread does not panic"))
            .collect()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The one seed of every random test input in this crate's unit tests:
    /// `FAULTLINE_TEST_SEED` when set, else a fixed default. Printed once per test binary
    /// straight to stderr (past the test harness's capture), so any failing run's log holds
    /// it; tests also name it in their failure messages.
    pub(crate) fn test_seed() -> u64 {
        const DEFAULT: u64 = 0x5eed_f417;
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *SEED.get_or_init(|| {
            let seed = match std::env::var("FAULTLINE_TEST_SEED") {
                Ok(v) => v.trim().parse().unwrap_or_else(|e| {
                    panic!("FAULTLINE_TEST_SEED={v:?}: {e}; expected an unsigned 64-bit integer")
                }),
                Err(_) => DEFAULT,
            };
            let _ = writeln!(
                std::io::stderr(),
                "test seed: {seed} (set FAULTLINE_TEST_SEED={seed} to replay)"
            );
            seed
        })
    }

    /// Runs one all-reduce over real loopback sockets and compares with the sum in f64.
    fn check_all_reduce(world: usize, len: usize, rng: &mut rand::rngs::StdRng) {
        let inputs: Vec<Vec<f32>> = (0..world)
            .map(|_| (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
            .collect();
        let exact: Vec<f64> = (0..len)
            .map(|i| inputs.iter().map(|b| f64::from(b[i])).sum())
            .collect();
        let rings = loopback_ring(world, 1).expect("ring");
        let outputs: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = rings
                .into_iter()
                .zip(inputs)
                .map(|(mut ring, mut buf)| {
                    s.spawn(move || {
                        ring.all_reduce_sum(&mut buf).expect("all-reduce");
                        buf
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        });
        for (rank, out) in outputs.iter().enumerate() {
            for (i, (o, e)) in out.iter().zip(&exact).enumerate() {
                let tol = 1e-5 * world as f64;
                assert!(
                    (f64::from(*o) - e).abs() <= tol,
                    "world {world} len {len} rank {rank} [{i}]: {o} vs {e} (test seed {})",
                    test_seed()
                );
            }
        }
        // Every rank ends with bitwise the same values.
        for out in &outputs[1..] {
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                outputs[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn tcp_all_reduce_equals_the_sum_for_1_to_8_ranks_and_odd_prime_tiny_sizes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed());
        for world in 1..=8 {
            for len in [0, 1, 2, 3, 7, 13, 97, 1009] {
                check_all_reduce(world, len, &mut rng);
            }
            let random_len = rng.gen_range(1..5000);
            check_all_reduce(world, random_len, &mut rng);
        }
    }

    #[test]
    fn tcp_all_reduce_of_a_buffer_larger_than_a_piece_uses_the_send_thread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(test_seed());
        check_all_reduce(3, 3 * PIECE + 11, &mut rng);
    }

    #[test]
    fn broadcast_copies_the_root_buffer_to_every_rank() {
        for world in [1, 2, 5] {
            for root in 0..world {
                let rings = loopback_ring(world, 3).expect("ring");
                let outs: Vec<Vec<f32>> = std::thread::scope(|s| {
                    let hs: Vec<_> = rings
                        .into_iter()
                        .enumerate()
                        .map(|(r, mut ring)| {
                            s.spawn(move || {
                                let mut buf = vec![r as f32; 5];
                                ring.broadcast(&mut buf, root).expect("broadcast");
                                ring.barrier().expect("barrier");
                                buf
                            })
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().expect("join")).collect()
                });
                for o in outs {
                    assert_eq!(o, vec![root as f32; 5]);
                }
            }
        }
    }

    #[test]
    fn aborting_a_ring_unblocks_a_rank_waiting_for_a_stopped_peer() {
        let mut rings = loopback_ring(2, 1).expect("ring");
        let _silent_peer = rings.pop().expect("rank 1");
        let mut ring = rings.pop().expect("rank 0");
        let handle = ring.abort_handle().expect("handle");
        std::thread::scope(|s| {
            let waiter = s.spawn(move || ring.all_reduce_sum(&mut [1.0; 4]));
            handle.abort();
            assert!(waiter.join().expect("join").is_err());
        });
    }
}
