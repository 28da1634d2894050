//! Shared memory between processes on one host, with the few operations a collective needs:
//! a file mapped `MAP_SHARED` by every process ([`Region`]), atomic words inside it, bulk
//! `f32` copies and additions in and out of it, and a futex wait/wake on a word of it.
//!
//! This crate is where the workspace's shared-memory `unsafe` lives, so that callers (the
//! trainer's shared-memory all-reduce) stay safe code. The contract:
//! - Offsets are byte offsets into the region; every accessor checks bounds and alignment
//!   and panics on a violation, which is a bug in the caller's layout, not bad input.
//! - The atomics are ordinary Rust atomics on shared memory (valid across processes on the
//!   same kernel; the futex is the non-private kind, so it works across processes too). A
//!   word used as an atomic is only ever accessed atomically, by every process.
//! - Bulk data (`f32`s) is never seen through a reference: this crate forms no `&[f32]`,
//!   `&mut [f32]` or `&f32` over the mapping, not even inside a call, and hands none out.
//!   A reference would promise the compiler that the bytes do not change (or that nobody
//!   else reads them) while it lives, and another process's accesses break that promise.
//!   [`Region::write_f32`], [`Region::read_f32`] and [`Region::add_f32`] read and write the
//!   mapping through raw pointers, one call at a time.
//! - Those bulk accesses are plain (non-atomic) loads and stores, so they are race-free only
//!   under the caller's protocol, which this crate cannot check: no process or thread writes
//!   bytes while another reads or writes them, and every hand-over is ordered by the
//!   atomics (a writer stores data, then a counter with `Release`; a reader loads the
//!   counter with `Acquire`, then the data). A caller that breaks the protocol has a data
//!   race, which Rust's memory model leaves undefined; on the hardware this runs on
//!   (x86-64, aarch64) the reader gets stale or torn `f32` values. The mapping itself stays
//!   valid for as long as the `Region` lives.
//!
//! Why not atomics for the data too: relaxed per-element atomic loads and stores would make
//! a broken protocol merely wrong data, but they do not vectorize and cost 2–5× the copy
//! bandwidth of `copy_nonoverlapping` and of a plain add loop (an x86-64 micro-benchmark),
//! and bandwidth is what this transport exists for; a bulk atomic copy (RFC 3301) is not in
//! stable Rust.

use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// A shared mapping of a whole file.
#[derive(Debug)]
pub struct Region {
    map: MmapRaw,
    len: usize,
    path: PathBuf,
}

/// Why a region could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {actual} bytes; expected {expected}")]
    Size {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
}

impl Region {
    /// Creates `path` (which must not exist) with `len` zero bytes and maps it.
    pub fn create(path: &Path, len: usize) -> Result<Self, RegionError> {
        let io = |op| {
            move |source| RegionError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io("create"))?;
        let made = file
            .set_len(len as u64)
            .map_err(io("size"))
            .and_then(|()| allocate(&file, len).map_err(io("allocate")))
            .and_then(|()| Self::map(file, path, len));
        if made.is_err() {
            // Created here and unusable: leave nothing behind.
            let _ = std::fs::remove_file(path);
        }
        made
    }

    /// Opens and maps `path`, which must be exactly `len` bytes.
    pub fn open(path: &Path, len: usize) -> Result<Self, RegionError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| RegionError::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })?;
        let actual = file
            .metadata()
            .map_err(|source| RegionError::Io {
                op: "stat",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if actual != len as u64 {
            return Err(RegionError::Size {
                path: path.to_path_buf(),
                actual,
                expected: len as u64,
            });
        }
        Self::map(file, path, len)
    }

    fn map(file: File, path: &Path, len: usize) -> Result<Self, RegionError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|source| RegionError::Io {
                op: "mmap",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            map,
            len,
            path: path.to_path_buf(),
        })
    }

    /// The mapped file (it may have been unlinked since).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Panics unless `[offset, offset + bytes)` lies in the region and `offset` is a
    /// multiple of `align`; returns the address.
    fn at(&self, offset: usize, bytes: usize, align: usize) -> *mut u8 {
        let end = offset.checked_add(bytes).expect("region offset overflows");
        assert!(
            end <= self.len,
            "region access {offset}..{end} outside {} bytes",
            self.len
        );
        let ptr = self.map.as_mut_ptr().wrapping_add(offset);
        assert!(
            (ptr as usize) % align == 0,
            "region offset {offset} is not {align}-byte aligned"
        );
        ptr
    }

    /// The `AtomicU64` at byte `offset` (8-byte aligned).
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        let ptr = self.at(offset, 8, 8);
        // SAFETY: `at` checked that the 8 bytes lie inside the mapping, which lives as long as
        // `&self`, and that they are 8-byte aligned; an AtomicU64 has the size and alignment
        // of a u64 and every bit pattern is valid. Other processes only access the word
        // atomically (the crate contract), so there is no non-atomic race on it.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU64::from_ptr(ptr.cast::<u64>())
        }
    }

    /// The `AtomicU32` at byte `offset` (4-byte aligned); usable with [`futex_wait`].
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        let ptr = self.at(offset, 4, 4);
        // SAFETY: as in `u64_at`, for 4 bytes.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU32::from_ptr(ptr.cast::<u32>())
        }
    }

    /// Copies `src` into the region at byte `offset` (4-byte aligned). Panics when the
    /// destination is not inside the region or not aligned. No other process or thread may
    /// access these bytes during the call (the crate's protocol).
    pub fn write_f32(&self, offset: usize, src: &[f32]) {
        let ptr = self.at(offset, std::mem::size_of_val(src), 4).cast::<f32>();
        // SAFETY: the destination is inside the live mapping and aligned (checked by `at`);
        // it cannot overlap `src`, a Rust slice, because this crate never forms a slice over
        // the mapping. Under the protocol nothing else accesses the destination meanwhile.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), ptr, src.len());
        }
    }

    /// Copies `dst.len()` values from the region at byte `offset` (4-byte aligned) into
    /// `dst`. Panics as [`Region::write_f32`] does; no one may write these bytes during the
    /// call (the crate's protocol).
    pub fn read_f32(&self, offset: usize, dst: &mut [f32]) {
        let ptr = self.at(offset, std::mem::size_of_val(dst), 4).cast::<f32>();
        // SAFETY: as in `write_f32`, in the other direction.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(ptr.cast_const(), dst.as_mut_ptr(), dst.len());
        }
    }

    /// Adds the region's `dst.len()` values at byte `offset` (4-byte aligned) into `dst`,
    /// element by element. Panics as [`Region::write_f32`] does; no one may write these
    /// bytes during the call (the crate's protocol).
    pub fn add_f32(&self, offset: usize, dst: &mut [f32]) {
        let src = self
            .at(offset, std::mem::size_of_val(dst), 4)
            .cast::<f32>()
            .cast_const();
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: `at` checked that `dst.len()` aligned f32s from `src` lie inside the
            // live mapping, so `src + i` (i < dst.len()) is in bounds and aligned, and every
            // bit pattern is a valid f32. Each value is read by value through the raw pointer
            // (no reference to the mapping); the protocol keeps writers off these bytes
            // during the call.
            #[allow(unsafe_code)]
            let value = unsafe { src.add(i).read() };
            *d += value;
        }
    }
}

/// Reserves the file's blocks now, so a full filesystem (a container's 64 MB `/dev/shm`) is
/// an error here instead of a SIGBUS when a process first touches a page of the mapping.
fn allocate(file: &File, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "region too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is owned by
    // `file`, which outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: keep the sparse file (the old behaviour).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// Blocks while `word` holds `expected`, until [`futex_wake_all`] on the same word (from any
/// process mapping it), `timeout`, or a signal. Returns at once when `word` differs.
/// Spurious returns happen: callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT (shared, not FUTEX_PRIVATE, so other processes' wakes reach it)
    // reads the aligned u32 behind `word`, which is valid for the call; `ts` outlives the
    // call; the unused arguments are ignored for FUTEX_WAIT. Errors (EAGAIN when the value
    // changed, ETIMEDOUT, EINTR) all mean "re-check", which the caller does.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process and thread blocked in [`futex_wait`] on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key; the remaining arguments
    // are ignored for it.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Processors online on this host — not this process's affinity share, which a pinned
/// worker sees as one — or 1 when unknown.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system value and has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn two_mappings_of_one_file_see_each_others_data_and_atomics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r");
        let a = Region::create(&path, 4096).expect("create");
        let b = Region::open(&path, 4096).expect("open");
        a.write_f32(64, &[1.5, -2.0, 3.25]);
        let mut got = [0.0f32; 3];
        b.read_f32(64, &mut got);
        assert_eq!(got, [1.5, -2.0, 3.25]);
        let mut acc = [1.0f32, 1.0, 1.0];
        b.add_f32(64, &mut acc);
        assert_eq!(acc, [2.5, -1.0, 4.25]);
        a.u64_at(0).store(7, Ordering::Release);
        assert_eq!(b.u64_at(0).load(Ordering::Acquire), 7);
        b.u32_at(8).fetch_add(3, Ordering::SeqCst);
        assert_eq!(a.u32_at(8).load(Ordering::SeqCst), 3);
    }

    /// Waits until `word` holds `want`, sleeping on the futex; panics after 30 s so a lost
    /// hand-over fails the test instead of hanging it.
    fn wait_for(word: &AtomicU32, want: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = word.load(Ordering::Acquire);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {want}, word is {now}"
            );
            futex_wait(word, now, Duration::from_millis(100));
        }
    }

    /// The protocol the crate documents, run for real: one thread writes through its own
    /// mapping and releases a counter, another acquires it and adds from a second mapping.
    /// Every round rewrites the same bytes, so the reader must see each round's values, never
    /// an earlier round's.
    #[test]
    fn add_f32_sees_each_round_that_another_mapping_wrote_under_the_protocol() {
        const ROUNDS: u32 = 200;
        const LEN: usize = 1001; // not a multiple of any vector width
        const DATA: usize = 64;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r");
        let writer = Region::create(&path, DATA + LEN * 4).expect("create");
        let reader = Region::open(&path, DATA + LEN * 4).expect("open");
        std::thread::scope(|s| {
            s.spawn(|| {
                let word = writer.u32_at(0);
                for round in 0..ROUNDS {
                    let values: Vec<f32> = (0..LEN).map(|i| (round as usize * i) as f32).collect();
                    writer.write_f32(DATA, &values);
                    word.store(2 * round + 1, Ordering::Release);
                    futex_wake_all(word);
                    wait_for(word, 2 * round + 2);
                }
            });
            let word = reader.u32_at(0);
            for round in 0..ROUNDS {
                wait_for(word, 2 * round + 1);
                let mut acc = vec![0.5f32; LEN];
                reader.add_f32(DATA, &mut acc);
                for (i, v) in acc.iter().enumerate() {
                    assert_eq!(
                        *v,
                        (round as usize * i) as f32 + 0.5,
                        "round {round}, index {i}"
                    );
                }
                word.store(2 * round + 2, Ordering::Release);
                futex_wake_all(word);
            }
        });
    }

    #[test]
    #[should_panic(expected = "not 4-byte aligned")]
    fn a_misaligned_add_panics_instead_of_reading_across_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Region::create(&dir.path().join("r"), 64).expect("create");
        a.add_f32(2, &mut [0.0; 2]);
    }

    #[test]
    fn create_reserves_the_blocks_up_front() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r");
        let len = 1 << 20;
        let _a = Region::create(&path, len).expect("create");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), len as u64);
        assert!(
            meta.blocks() * 512 >= len as u64,
            "{} blocks",
            meta.blocks()
        );
    }

    #[test]
    fn create_refuses_an_existing_file_and_open_checks_the_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r");
        let _a = Region::create(&path, 4096).expect("create");
        let err = Region::create(&path, 4096).expect_err("exists");
        assert!(err.to_string().contains("create"), "{err}");
        let err = Region::open(&path, 8192).expect_err("wrong size");
        assert!(err.to_string().contains("expected 8192"), "{err}");
        let err = Region::open(&dir.path().join("missing"), 8).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn an_access_past_the_end_panics_instead_of_touching_other_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Region::create(&dir.path().join("r"), 64).expect("create");
        a.write_f32(60, &[1.0, 2.0]);
    }

    #[test]
    fn futex_wake_reaches_a_waiter_on_another_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r");
        let a = Region::create(&path, 64).expect("create");
        let b = Region::open(&path, 64).expect("open");
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let asleep = std::thread::scope(|s| {
            s.spawn(|| {
                // `/proc/thread-self` names this thread: `PID/task/TID`.
                let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                tx.send(Path::new("/proc").join(me).join("stat"))
                    .expect("send");
                // Waits while the word is 0; a long timeout so only the wake ends it quickly.
                while b.u32_at(0).load(Ordering::SeqCst) == 0 {
                    futex_wait(b.u32_at(0), 0, Duration::from_secs(30));
                }
            });
            // Wake only once the waiter sleeps (state S: nothing else it does sleeps), so the
            // wake, not the word already changed, is what ends its wait. Past the patience it
            // is woken anyway (the scope cannot end while it waits) and the test fails.
            let stat = rx.recv().expect("the waiter's stat path");
            let deadline = Instant::now() + Duration::from_secs(30);
            let asleep = loop {
                if thread_state(&stat) == Some('S') {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            a.u32_at(0).store(1, Ordering::SeqCst);
            futex_wake_all(a.u32_at(0));
            asleep
        });
        assert!(asleep, "the waiter never went to sleep on the futex");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the wake was lost"
        );
    }

    /// The state letter of `/proc/PID/task/TID/stat` (`R` running, `S` sleeping, …).
    fn thread_state(stat: &Path) -> Option<char> {
        let stat = std::fs::read_to_string(stat).ok()?;
        // `tid (comm) state …`; comm may hold spaces and parentheses.
        let (_, rest) = stat.rsplit_once(')')?;
        rest.trim_start().chars().next()
    }

    #[test]
    fn futex_wait_returns_at_once_when_the_word_already_changed_and_after_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Region::create(&dir.path().join("r"), 64).expect("create");
        a.u32_at(0).store(5, Ordering::SeqCst);
        let t = Instant::now();
        futex_wait(a.u32_at(0), 4, Duration::from_secs(30)); // returns: 5 != 4
        futex_wait(a.u32_at(0), 5, Duration::from_millis(20)); // returns: timeout
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "a wait outlived its cause"
        );
    }
}
