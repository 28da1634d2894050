//! Shared-memory all-reduce for ranks on one host ([`ShmComm`]), the way NCCL's SHM transport
//! and MPI's shared-memory BTLs serve same-node ranks: a byte crosses memory once per copy
//! instead of twice through the kernel as over loopback TCP.
//!
//! One segment per membership epoch, created by rank 0 in [`segment_dir`] (`TRAINER_SHM_DIR`,
//! else `/dev/shm`, else the temp dir) with its blocks reserved (a full tmpfs is an error,
//! not a SIGBUS later), opened by the other ranks, and unlinked as soon as every rank has
//! mapped it, so nothing is left behind however the job ends; [`sweep_stale`] removes one
//! left by a crash inside that window. The bootstrap runs over the epoch's
//! TCP ring, which also carries aborts: [`crate::comm::AbortHandle::abort`] raises the flag
//! this communicator polls while it waits.
//!
//! ## The algorithm
//! Buffers are processed in slices of `world × PIECE` values; slice `s` uses slot
//! `s mod SLOTS` of each rank's input area and of the shared output area, so up to `SLOTS`
//! slices are in flight. Slice values are split into `world` chunks (as [`crate::ring::chunk_ranges`]);
//! rank `r` owns chunk `r`. Per slice every rank:
//! 1. **publishes** the chunks it does not own into its input slot;
//! 2. **reduces** its own chunk: the sum of every rank's values in rank order
//!    (`x₀ + x₁ + … + x_{N−1}`, so the result does not depend on which rank computes it),
//!    written to its local buffer and to the output slot;
//! 3. **gathers** the other ranks' reduced chunks from the output slot.
//!
//! Each step bumps a per-rank counter in the segment header (slices done, monotonic across
//! calls); a step waits only on the counters it depends on (inputs published, outputs
//! reduced, slots released `SLOTS` slices ago, and — for a reduce — this rank's own gather
//! of the slot's previous slice), so ranks run ahead of each other up to `SLOTS` slices. Waits spin briefly when every rank can have its own core, then sleep on a
//! futex; they wake every [`POLL`] to check the abort flags and that peer processes live.
//!
//! Not here: the TCP ring ([`crate::comm`]); choosing the transport (`worker`).

use crate::comm::{CommError, Communicator, TcpRing};
use shm::{futex_wait, futex_wake_all, Region};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Values per chunk per slice (256 KiB of f32).
pub const PIECE: usize = 64 * 1024;
/// Slices in flight.
pub const SLOTS: usize = 4;
/// Values reduced at a time (16 KiB: the working set stays in L1).
const BLOCK: usize = 4096;
/// How often a sleeping rank checks aborts and peer liveness.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a rank spins before sleeping, when ranks need not share cores.
const SPIN: Duration = Duration::from_micros(50);
/// "FLSHM001": the segment format.
const MAGIC: u64 = u64::from_le_bytes(*b"FLSHM001");

/// Where the segment's header words and data areas lie.
#[derive(Debug, Clone, Copy)]
struct Layout {
    world: usize,
    piece: usize,
    data: usize,
    total: usize,
}

impl Layout {
    const MAGIC: usize = 0;
    const WORLD: usize = 8;
    const PIECE: usize = 16;
    const ABORT: usize = 64;
    const PROGRESS: usize = 128;
    const WAITERS: usize = 192;
    /// Per-rank words start here, 192 bytes (three cache lines) per rank.
    const RANKS: usize = 256;

    fn new(world: usize, piece: usize) -> Self {
        let header = Self::RANKS + world * 192;
        let data = header.div_ceil(4096) * 4096;
        let total = data + (world + 1) * SLOTS * world * piece * 4;
        Self {
            world,
            piece,
            data,
            total,
        }
    }
    /// Slices rank `r` has published.
    fn published(r: usize) -> usize {
        Self::RANKS + r * 192
    }
    /// Rank `r`'s process id.
    fn pid(r: usize) -> usize {
        Self::published(r) + 8
    }
    /// Slices rank `r` has reduced (its reads of everyone's inputs are done).
    fn reduced(r: usize) -> usize {
        Self::published(r) + 64
    }
    /// Slices rank `r` has gathered (its reads of the outputs are done).
    fn consumed(r: usize) -> usize {
        Self::published(r) + 128
    }
    fn slot_bytes(&self) -> usize {
        self.world * self.piece * 4
    }
    /// Byte offset of rank `r`'s input slot `slot`.
    fn input(&self, r: usize, slot: usize) -> usize {
        self.data + (r * SLOTS + slot) * self.slot_bytes()
    }
    /// Byte offset of output slot `slot`.
    fn output(&self, slot: usize) -> usize {
        self.data + (self.world * SLOTS + slot) * self.slot_bytes()
    }
}

/// Chunk `c` of `world` chunks of a slice of `len` values (as [`crate::ring::chunk_ranges`]).
fn chunk(len: usize, world: usize, c: usize) -> Range<usize> {
    let (base, extra) = (len / world, len % world);
    let start = c * base + c.min(extra);
    start..start + base + usize::from(c < extra)
}

/// All-reduce and broadcast through a shared-memory segment. Build with [`ShmComm::connect`].
#[derive(Debug)]
pub struct ShmComm {
    rank: usize,
    world: usize,
    layout: Layout,
    region: Region,
    /// Slices processed by every collective so far (all ranks agree).
    seq: u64,
    /// Raised by the TCP ring's abort handle.
    abort: Arc<AtomicBool>,
    /// Peer process ids (for liveness checks), by rank.
    pids: Vec<i32>,
    spin: Duration,
    scratch: Vec<f32>,
}

/// Where segments are created: `TRAINER_SHM_DIR` when set (e.g. a larger tmpfs where a
/// container's `/dev/shm` is small), else `/dev/shm` (memory-backed) when present, else the
/// temp dir.
pub fn segment_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRAINER_SHM_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Whether process `pid` no longer exists (false for 0, the "not recorded yet" pid).
fn exited(pid: i32) -> bool {
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

/// Removes segments in `dir` whose creator (rank 0) no longer runs: left by a job that
/// crashed in the milliseconds between creating its segment and unlinking it. Returns how
/// many it removed.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("faultline-trainer-") {
            continue;
        }
        let path = entry.path();
        let Ok(len) = entry.metadata().map(|m| m.len() as usize) else {
            continue;
        };
        if len < Layout::RANKS + 192 {
            continue;
        }
        let Ok(region) = Region::open(&path, len) else {
            continue;
        };
        if region.u64_at(Layout::MAGIC).load(Ordering::Acquire) != MAGIC {
            continue;
        }
        let pid = region.u64_at(Layout::pid(0)).load(Ordering::Acquire);
        if i32::try_from(pid).is_ok_and(exited) && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), pid, "removed a stale shared-memory segment");
            removed += 1;
        }
    }
    removed
}

impl ShmComm {
    /// Sets up the segment of one membership epoch over `ring`; every rank of the ring calls
    /// it. `key` names the segment and must be the same on every rank and unique per job and
    /// epoch (e.g. rank 0's ring address and the epoch). `Ok(Err(reason))`: shared memory is
    /// not usable by every rank (another host, another container, no space); every rank gets
    /// it, so all fall back together. `Err`: the ring failed during the bootstrap.
    pub fn connect(ring: &mut TcpRing, key: &str) -> Result<Result<Self, String>, CommError> {
        Self::connect_with(ring, key, PIECE, &segment_dir())
    }

    fn connect_with(
        ring: &mut TcpRing,
        key: &str,
        piece: usize,
        dir: &Path,
    ) -> Result<Result<Self, String>, CommError> {
        let (rank, world) = (ring.rank(), ring.world());
        let layout = Layout::new(world, piece);
        let name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = dir.join(format!("faultline-trainer-{name}"));
        let mut region = None;
        let mut failure = None;
        let mut failed = [0.0f32];
        if rank == 0 {
            sweep_stale(dir);
            // A segment of the same name can only be left over from a crashed run.
            let _ = std::fs::remove_file(&path);
            match Region::create(&path, layout.total) {
                Ok(r) => {
                    r.u64_at(Layout::WORLD)
                        .store(world as u64, Ordering::Relaxed);
                    r.u64_at(Layout::PIECE)
                        .store(piece as u64, Ordering::Relaxed);
                    r.u64_at(Layout::MAGIC).store(MAGIC, Ordering::Release);
                    region = Some(r);
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    failed[0] = 1.0;
                }
            }
        }
        ring.all_reduce_sum(&mut failed)?;
        if failed[0] > 0.0 {
            return Ok(Err(failure.unwrap_or_else(|| {
                format!(
                    "rank 0 could not create the shared-memory segment {}",
                    path.display()
                )
            })));
        }
        if rank != 0 {
            match Region::open(&path, layout.total) {
                Ok(r)
                    if r.u64_at(Layout::MAGIC).load(Ordering::Acquire) == MAGIC
                        && r.u64_at(Layout::WORLD).load(Ordering::Relaxed) == world as u64
                        && r.u64_at(Layout::PIECE).load(Ordering::Relaxed) == piece as u64 =>
                {
                    region = Some(r)
                }
                Ok(_) => failure = Some(format!("{} has another layout", path.display())),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(r) = &region {
            r.u64_at(Layout::pid(rank))
                .store(u64::from(std::process::id()), Ordering::Release);
        }
        let mut failed = [f32::from(u8::from(region.is_none()))];
        let agreed = ring.all_reduce_sum(&mut failed);
        if rank == 0 {
            // Every rank has mapped it or given up: the name is no longer needed.
            let _ = std::fs::remove_file(&path);
        }
        agreed?;
        let region = match region {
            Some(r) if failed[0] == 0.0 => r,
            _ => {
                return Ok(Err(failure.unwrap_or_else(|| {
                    format!(
                        "{} rank(s) could not map the shared-memory segment {} (ranks on other hosts or in other containers?)",
                        failed[0],
                        path.display()
                    )
                })))
            }
        };
        let pids = (0..world)
            .map(|r| {
                let pid = region.u64_at(Layout::pid(r)).load(Ordering::Acquire);
                i32::try_from(pid).unwrap_or(0)
            })
            .collect();
        let spin = if shm::online_cpus() >= world {
            SPIN
        } else {
            Duration::ZERO
        };
        Ok(Ok(Self {
            rank,
            world,
            layout,
            region,
            seq: 0,
            abort: ring.abort_flag(),
            pids,
            spin,
            scratch: vec![0.0; BLOCK],
        }))
    }

    fn counter(&self, offset: usize) -> u64 {
        self.region.u64_at(offset).load(Ordering::Acquire)
    }

    /// Whether every rank but this one has `counter(rank) ≥ at_least`.
    fn others_reached(&self, counter: fn(usize) -> usize, at_least: u64) -> bool {
        (0..self.world)
            .filter(|&r| r != self.rank)
            .all(|r| self.counter(counter(r)) >= at_least)
    }

    /// Records that this rank finished slice `s` of `counter` and wakes sleeping ranks.
    fn advance(&self, counter: fn(usize) -> usize, s: u64) {
        self.region
            .u64_at(counter(self.rank))
            .store(s + 1, Ordering::Release);
        self.region
            .u32_at(Layout::PROGRESS)
            .fetch_add(1, Ordering::SeqCst);
        if self.region.u32_at(Layout::WAITERS).load(Ordering::SeqCst) > 0 {
            futex_wake_all(self.region.u32_at(Layout::PROGRESS));
        }
    }

    /// Marks the segment aborted for every rank and returns the error.
    fn fail(&self, message: String) -> CommError {
        self.region.u32_at(Layout::ABORT).store(1, Ordering::SeqCst);
        self.region
            .u32_at(Layout::PROGRESS)
            .fetch_add(1, Ordering::SeqCst);
        futex_wake_all(self.region.u32_at(Layout::PROGRESS));
        CommError::Backend {
            backend: "shm",
            message,
        }
    }

    /// An error when this rank, another rank or a dead peer process aborted the collective.
    fn check_abort(&self, slept: bool) -> Result<(), CommError> {
        if self.abort.load(Ordering::SeqCst) {
            return Err(self.fail("aborted (the membership epoch ended)".into()));
        }
        if self.region.u32_at(Layout::ABORT).load(Ordering::SeqCst) != 0 {
            return Err(CommError::Backend {
                backend: "shm",
                message: "aborted by another rank".into(),
            });
        }
        if slept {
            for (r, &pid) in self.pids.iter().enumerate() {
                if r != self.rank && exited(pid) {
                    return Err(self.fail(format!("rank {r} (pid {pid}) exited")));
                }
            }
        }
        Ok(())
    }

    /// Blocks until `ready` holds: spins up to `self.spin`, then sleeps on the progress futex,
    /// waking at least every [`POLL`] to check aborts.
    fn wait_until(&self, mut ready: impl FnMut(&Self) -> bool) -> Result<(), CommError> {
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            if ready(self) {
                return Ok(());
            }
            polls += 1;
            if polls % 64 == 0 {
                self.check_abort(false)?;
                if started.elapsed() >= self.spin {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        let progress = self.region.u32_at(Layout::PROGRESS);
        let waiters = self.region.u32_at(Layout::WAITERS);
        loop {
            // Register, then read the word, then re-check: a rank that advances after the
            // re-check changes the word (so the wait returns at once) or sees the waiter.
            waiters.fetch_add(1, Ordering::SeqCst);
            let seen = progress.load(Ordering::SeqCst);
            let done = ready(self);
            if !done {
                futex_wait(progress, seen, POLL);
            }
            waiters.fetch_sub(1, Ordering::SeqCst);
            if done || ready(self) {
                return Ok(());
            }
            self.check_abort(progress.load(Ordering::SeqCst) == seen)?;
        }
    }

    /// Slice `k` of `len` values: its element range in the caller's buffer.
    fn slice(&self, len: usize, k: usize) -> Range<usize> {
        let size = self.world * self.layout.piece;
        let start = k * size;
        start..len.min(start + size)
    }

    fn publish(&self, data: &[f32], s: u64, slice: Range<usize>) {
        let input = self.layout.input(self.rank, s as usize % SLOTS);
        for c in (0..self.world).filter(|&c| c != self.rank) {
            let ch = chunk(slice.len(), self.world, c);
            self.region.write_f32(
                input + ch.start * 4,
                &data[slice.start + ch.start..][..ch.len()],
            );
        }
        self.advance(Layout::published, s);
    }

    fn reduce(&mut self, data: &mut [f32], s: u64, slice: Range<usize>) {
        let slot = s as usize % SLOTS;
        let own = chunk(slice.len(), self.world, self.rank);
        let mut tmp = std::mem::take(&mut self.scratch);
        let mut at = own.start;
        while at < own.end {
            let n = BLOCK.min(own.end - at);
            let local = &mut data[slice.start + at..][..n];
            let acc = &mut tmp[..n];
            for r in 0..self.world {
                let input = self.layout.input(r, slot) + at * 4;
                match (r == 0, r == self.rank) {
                    (true, true) => acc.copy_from_slice(local),
                    (true, false) => self.region.read_f32(input, acc),
                    (false, true) => acc.iter_mut().zip(local.iter()).for_each(|(a, l)| *a += l),
                    (false, false) => self.region.add_f32(input, acc),
                }
            }
            local.copy_from_slice(acc);
            self.region
                .write_f32(self.layout.output(slot) + at * 4, acc);
            at += n;
        }
        self.scratch = tmp;
        self.advance(Layout::reduced, s);
    }

    fn gather(&self, data: &mut [f32], s: u64, slice: Range<usize>) {
        let output = self.layout.output(s as usize % SLOTS);
        for c in (0..self.world).filter(|&c| c != self.rank) {
            let ch = chunk(slice.len(), self.world, c);
            self.region.read_f32(
                output + ch.start * 4,
                &mut data[slice.start + ch.start..][..ch.len()],
            );
        }
        self.advance(Layout::consumed, s);
    }
}

/// The next step of an all-reduce in progress.
#[derive(Debug, Clone, Copy)]
enum Next {
    Reduce,
    Gather,
    Publish,
}

impl ShmComm {
    /// Which step can run now, given `done` = (published, reduced, gathered) slices of this
    /// call starting at absolute slice `base`, out of `n`.
    fn next(&self, base: u64, n: usize, done: (usize, usize, usize)) -> Option<Next> {
        let (p, r, g) = done;
        let released = |s: u64| (s + 1).saturating_sub(SLOTS as u64);
        // Reducing slice s writes this rank's chunk of output slot s mod SLOTS, which this
        // rank's own gather of slice s − SLOTS may still have to read (the chunks move when
        // the slices differ in length), so that gather comes first.
        if r < p && r < g + SLOTS {
            let s = base + r as u64;
            if self.others_reached(Layout::published, s + 1)
                && self.others_reached(Layout::consumed, released(s))
            {
                return Some(Next::Reduce);
            }
        }
        if g < r && self.others_reached(Layout::reduced, base + g as u64 + 1) {
            return Some(Next::Gather);
        }
        if p < n && self.others_reached(Layout::reduced, released(base + p as u64)) {
            return Some(Next::Publish);
        }
        None
    }
}

impl Communicator for ShmComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), CommError> {
        if self.world == 1 || data.is_empty() {
            return Ok(());
        }
        self.check_abort(false)?;
        let n = data.len().div_ceil(self.world * self.layout.piece);
        let base = self.seq;
        let mut done = (0usize, 0usize, 0usize);
        while done.2 < n {
            let step = match self.next(base, n, done) {
                Some(step) => step,
                None => {
                    self.wait_until(|c| c.next(base, n, done).is_some())?;
                    continue;
                }
            };
            match step {
                Next::Publish => {
                    let range = self.slice(data.len(), done.0);
                    self.publish(data, base + done.0 as u64, range);
                    done.0 += 1;
                }
                Next::Reduce => {
                    let range = self.slice(data.len(), done.1);
                    self.reduce(data, base + done.1 as u64, range);
                    done.1 += 1;
                }
                Next::Gather => {
                    let range = self.slice(data.len(), done.2);
                    self.gather(data, base + done.2 as u64, range);
                    done.2 += 1;
                }
            }
        }
        self.seq = base + n as u64;
        Ok(())
    }

    /// The root writes each slice whole into its input slot; the others copy it out. Every
    /// rank advances all three counters per slice, as in an all-reduce, so the two can be
    /// mixed freely.
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> Result<(), CommError> {
        if root >= self.world {
            return Err(CommError::BadRoot {
                root,
                world: self.world,
            });
        }
        if self.world == 1 || data.is_empty() {
            return Ok(());
        }
        self.check_abort(false)?;
        let n = data.len().div_ceil(self.world * self.layout.piece);
        for k in 0..n {
            let s = self.seq + k as u64;
            let range = self.slice(data.len(), k);
            let input = self.layout.input(root, s as usize % SLOTS);
            if self.rank == root {
                let released = (s + 1).saturating_sub(SLOTS as u64);
                self.wait_until(|c| c.others_reached(Layout::reduced, released))?;
                self.region.write_f32(input, &data[range]);
                self.advance(Layout::published, s);
            } else {
                self.advance(Layout::published, s);
                self.wait_until(|c| c.counter(Layout::published(root)) > s)?;
                self.region.read_f32(input, &mut data[range]);
            }
            self.advance(Layout::reduced, s);
            self.advance(Layout::consumed, s);
        }
        self.seq += n as u64;
        Ok(())
    }
}

/// Shared-memory communicators for `world` ranks in this process (tests and benchmarks),
/// bootstrapped over a loopback TCP ring as workers do.
pub fn loopback_shm(world: usize, epoch: u64) -> Result<Vec<ShmComm>, CommError> {
    loopback_shm_with(world, epoch, PIECE)
}

fn loopback_shm_with(world: usize, epoch: u64, piece: usize) -> Result<Vec<ShmComm>, CommError> {
    let mut rings = crate::comm::loopback_ring(world, epoch)?;
    let key = format!("loopback-{}-{epoch}-{}", std::process::id(), unique());
    let mut out = Vec::with_capacity(world);
    for r in connect_all(&mut rings, &key, piece, &segment_dir()) {
        match r? {
            Ok(c) => out.push(c),
            Err(reason) => {
                return Err(CommError::Backend {
                    backend: "shm",
                    message: reason,
                })
            }
        }
    }
    Ok(out)
}

/// [`ShmComm::connect_with`] on every ring at once (one thread each, as the ranks of a job
/// run concurrently), in rank order.
#[allow(clippy::type_complexity)]
fn connect_all(
    rings: &mut [TcpRing],
    key: &str,
    piece: usize,
    dir: &Path,
) -> Vec<Result<Result<ShmComm, String>, CommError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = rings
            .iter_mut()
            .map(|ring| s.spawn(move || ShmComm::connect_with(ring, key, piece, dir)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bootstrap thread panicked"))
            .collect()
    })
}

/// A number unique within this process, for segment names.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Runs `f` on every rank's thread and returns the buffers.
    fn run_all(
        comms: &mut [ShmComm],
        mut bufs: Vec<Vec<f32>>,
        f: impl Fn(&mut ShmComm, &mut Vec<f32>) + Sync,
    ) -> Vec<Vec<f32>> {
        std::thread::scope(|s| {
            for (c, b) in comms.iter_mut().zip(bufs.iter_mut()) {
                let f = &f;
                s.spawn(move || f(c, b));
            }
        });
        bufs
    }

    /// The all-reduce result is the sum in rank order, bit for bit, on every rank, for
    /// 1…8 ranks, sizes around the slice boundaries and random ones (a small piece, so many
    /// slices, slot reuse and a short last slice happen), over many calls on one segment.
    #[test]
    fn shm_all_reduce_equals_the_rank_order_sum_on_every_rank() {
        let seed = crate::comm::tests::test_seed();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for world in 1..=8usize {
            let piece = 7;
            let mut comms = loopback_shm_with(world, 1, piece).expect("bootstrap");
            let slice = world * piece;
            let mut lens = vec![1, 2, 3, 5, 13, slice - 1, slice, slice + 1, 10 * slice + 3];
            lens.extend((0..24).map(|_| rng.gen_range(1..12 * slice)));
            for len in lens {
                let inputs: Vec<Vec<f32>> = (0..world)
                    .map(|_| (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
                    .collect();
                let expected: Vec<f32> = (0..len)
                    .map(|i| {
                        let mut acc = inputs[0][i];
                        for x in &inputs[1..] {
                            acc += x[i];
                        }
                        acc
                    })
                    .collect();
                let out = run_all(&mut comms, inputs, |c, b| {
                    c.all_reduce_sum(b).expect("all-reduce")
                });
                for (r, b) in out.iter().enumerate() {
                    assert_eq!(
                        b, &expected,
                        "world {world}, len {len}, rank {r} (test seed {seed})"
                    );
                }
            }
        }
    }

    #[test]
    fn shm_all_reduce_of_a_large_buffer_with_the_default_piece() {
        let world = 3;
        let mut comms = loopback_shm(world, 1).expect("bootstrap");
        let len = world * PIECE * SLOTS * 2 + 12345;
        let bufs: Vec<Vec<f32>> = (0..world)
            .map(|r| (0..len).map(|i| (i % 1000) as f32 + r as f32).collect())
            .collect();
        let out = run_all(&mut comms, bufs, |c, b| c.all_reduce_sum(b).expect("ar"));
        for b in &out {
            for (i, v) in b.iter().enumerate() {
                assert_eq!(*v, 3.0 * (i % 1000) as f32 + 3.0, "index {i}");
            }
        }
    }

    #[test]
    fn shm_broadcast_and_all_reduce_interleave() {
        let world = 4;
        let mut comms = loopback_shm_with(world, 1, 5).expect("bootstrap");
        let len = 97;
        let bufs: Vec<Vec<f32>> = (0..world).map(|r| vec![r as f32; len]).collect();
        let out = run_all(&mut comms, bufs, |c, b| {
            c.broadcast(b, 2).expect("broadcast");
            c.all_reduce_sum(b).expect("all-reduce");
            c.broadcast(b, 0).expect("broadcast");
            c.barrier().expect("barrier");
        });
        for b in &out {
            assert!(b.iter().all(|&v| v == 8.0), "{b:?}");
        }
        let err = comms[0].broadcast(&mut [0.0], 9).expect_err("bad root");
        assert!(err.to_string().contains("outside the world of 4"), "{err}");
    }

    #[test]
    fn the_segment_is_unlinked_once_every_rank_mapped_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rings = crate::comm::loopback_ring(3, 1).expect("ring");
        let comms: Vec<ShmComm> = connect_all(&mut rings, "unlink", 8, dir.path())
            .into_iter()
            .map(|r| r.expect("ring").expect("shm"))
            .collect();
        assert_eq!(comms.len(), 3);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "segment file left behind: {left:?}");
    }

    /// A segment left by a crashed job (its rank 0 is gone) is removed by the next job's
    /// rank 0; one whose creator still runs is kept.
    #[test]
    fn a_segment_whose_creator_died_is_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(2, 8);
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead = child.id();
        child.wait().expect("wait");
        for (name, pid) in [
            ("faultline-trainer-dead", dead),
            ("faultline-trainer-live", std::process::id()),
        ] {
            let r = Region::create(&dir.path().join(name), layout.total).expect("create");
            r.u64_at(Layout::pid(0))
                .store(u64::from(pid), Ordering::Release);
            r.u64_at(Layout::MAGIC).store(MAGIC, Ordering::Release);
        }
        std::fs::write(dir.path().join("faultline-trainer-junk"), b"not a segment").expect("junk");
        assert_eq!(sweep_stale(dir.path()), 1);
        assert!(!dir.path().join("faultline-trainer-dead").exists());
        assert!(dir.path().join("faultline-trainer-live").exists());
        assert!(dir.path().join("faultline-trainer-junk").exists());
    }

    /// When rank 0 cannot create the segment, every rank learns it (so all fall back
    /// together) with the reason naming the path, and the ring still works.
    #[test]
    fn every_rank_gets_the_reason_when_the_segment_cannot_be_created() {
        let mut rings = crate::comm::loopback_ring(3, 1).expect("ring");
        let dir = Path::new("/nonexistent/faultline-test");
        for (rank, r) in connect_all(&mut rings, "x", 8, dir).into_iter().enumerate() {
            let reason = r.expect("the ring works").expect_err("no segment");
            assert!(
                reason.contains("/nonexistent/faultline-test"),
                "rank {rank}: {reason}"
            );
        }
        let out = std::thread::scope(|s| {
            let hs: Vec<_> = rings
                .iter_mut()
                .map(|r| {
                    s.spawn(move || {
                        let mut b = [1.0f32; 3];
                        r.all_reduce_sum(&mut b).map(|()| b)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("join").expect("all-reduce"))
                .collect::<Vec<_>>()
        });
        assert!(out.iter().all(|b| b == &[3.0; 3]));
    }

    /// The scheduling rule behind slot reuse, with the peer far ahead: this rank may not
    /// reduce slice s + SLOTS (writing output slot s mod SLOTS) before it has gathered
    /// slice s from that slot, nor publish past the slots its peers have released.
    #[test]
    fn a_rank_gathers_a_slot_before_reducing_into_it_again() {
        let comms = loopback_shm_with(2, 1, 8).expect("bootstrap");
        let me = &comms[0];
        for counter in [
            Layout::published(1),
            Layout::reduced(1),
            Layout::consumed(1),
        ] {
            me.region.u64_at(counter).store(100, Ordering::Release);
        }
        let s = SLOTS;
        // Published s + 1 slices, reduced s, gathered none: slice s would reuse slot 0.
        assert!(matches!(me.next(0, 10, (s + 1, s, 0)), Some(Next::Gather)));
        assert!(matches!(me.next(0, 10, (s + 1, s, 1)), Some(Next::Reduce)));
        // The peer has published and reduced nothing: the first SLOTS slices may be
        // published, not more.
        me.region
            .u64_at(Layout::published(1))
            .store(0, Ordering::Release);
        me.region
            .u64_at(Layout::reduced(1))
            .store(0, Ordering::Release);
        assert!(matches!(me.next(0, 10, (s - 1, 0, 0)), Some(Next::Publish)));
        assert!(me
            .next(0, 10, (s, 0, 0))
            .is_none_or(|n| !matches!(n, Next::Publish)));
    }

    /// A rank waiting for a peer that never arrives returns an error once the ring's abort
    /// handle fires (what the heartbeat detector does), and its peers see the abort too.
    #[test]
    fn aborting_unblocks_a_rank_waiting_for_a_stopped_peer() {
        let mut rings = crate::comm::loopback_ring(3, 1).expect("ring");
        let key = format!("abort-{}-{}", std::process::id(), unique());
        let mut comms: Vec<ShmComm> = connect_all(&mut rings, &key, 8, &segment_dir())
            .into_iter()
            .map(|r| r.expect("ring").expect("shm"))
            .collect();
        let handle = rings[0].abort_handle().expect("handle");
        let mut third = comms.pop().expect("rank 2");
        let started = Instant::now();
        std::thread::scope(|s| {
            for c in comms.iter_mut() {
                s.spawn(move || {
                    let mut b = vec![1.0f32; 1000];
                    let err = c.all_reduce_sum(&mut b).expect_err("rank 2 never joins");
                    assert!(err.to_string().contains("aborted"), "{err}");
                });
            }
            // Abort once both are asleep on the progress futex waiting for rank 2 (or after
            // the patience: the scope cannot end while they wait, so abort before failing).
            let waiters = third.region.u32_at(Layout::WAITERS);
            let deadline = Instant::now() + Duration::from_secs(30);
            let both_asleep = loop {
                if waiters.load(Ordering::SeqCst) == 2 {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            handle.abort();
            assert!(both_asleep, "ranks 0 and 1 never waited for rank 2");
        });
        assert!(started.elapsed() < Duration::from_secs(20));
        // The stopped rank, resuming later, sees the abort instead of hanging.
        let err = third
            .all_reduce_sum(&mut vec![1.0f32; 1000])
            .expect_err("aborted segment");
        assert!(err.to_string().contains("aborted"), "{err}");
    }
}
