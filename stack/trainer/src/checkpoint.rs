//! Checkpoints: model weights, optimiser state, data position and RNG state, written
//! atomically and asynchronously, verified on restore.
//!
//! Layout under the checkpoint directory (`RUN_DIR/checkpoints`):
//!
//! ```text
//! step-00000040/model.safetensors   weights under the model's own names (servable as is)
//! step-00000040/optim.safetensors   AdamW moments `m.<name>`, `v.<name>`
//! step-00000040/manifest.json       [`Manifest`]: step, world, seed, model, data position,
//!                                   RNG state, optimiser step, file sizes and CRC-32C
//! ```
//!
//! Manifests name the checksum algorithm per file ([`FileEntry`]): format 2 writes CRC-32C
//! (hardware-accelerated, ≈ 0.6 ms for a 16 MB checkpoint where SHA-256 took ≈ 8 ms of the
//! writer's CPU); format-1 checkpoints with SHA-256 still restore.
//!
//! A checkpoint is written into `.tmp-step-…-<pid>/` (tensors streamed to disk while being
//! checksummed, each file fsynced), the temp directory is fsynced, renamed to `step-…` and the
//! parent directory fsynced; then all but the newest `keep` checkpoints are removed. With
//! `keep ≥ 2` the oldest checkpoint is first renamed to the temp name and its files are
//! overwritten in place (it would be pruned anyway), which saves the page-cache allocation
//! that dominated the writer's CPU time. A crash at any instant leaves either the
//! previous checkpoints untouched plus a temp directory that restore ignores, or the new
//! complete checkpoint. [`restore_latest`] walks checkpoints newest first, verifies sizes and
//! checksums, and falls back to an older one when a newer one is damaged, reporting every
//! checkpoint it skipped and why.
//!
//! Training pays for asynchronous checkpoints only through the CPU they take from it, so the
//! [`AsyncWriter`] thread runs at the lowest priority (nice 19) on any core, filling the time
//! the workers leave idle, and hands its snapshot buffers back for the next snapshot
//! ([`SnapshotBuffers`]), so taking one copies into mapped memory instead of page-faulting 16 MB.
//!
//! Failpoints (armed in tests): see [`FAILPOINTS`].

use crate::failpoint::{FailAction, Failpoints, Injected};
use crate::optim::AdamWConfig;
use crate::workload::{ModelSpec, Param};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Instant;

/// Every named failpoint in checkpoint writing, in the order they are reached.
pub const FAILPOINTS: [&str; 7] = [
    "ckpt.after_create_tmp",
    "ckpt.write_model",
    "ckpt.write_optim",
    "ckpt.write_manifest",
    "ckpt.before_rename",
    "ckpt.after_rename",
    "ckpt.before_prune",
];

/// Checkpoint format version written in the manifest: 2 records CRC-32C checksums.
pub const FORMAT_VERSION: u32 = 2;

/// Oldest format [`load`] still reads: 1, whose manifests record SHA-256 checksums.
pub const OLDEST_READABLE_FORMAT: u32 = 1;

/// Everything needed to continue training exactly where a checkpoint was taken.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Steps completed (the next step to run).
    pub step: u64,
    pub world: usize,
    pub seed: u64,
    pub spec: ModelSpec,
    pub layout: Vec<(String, Vec<usize>)>,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub optimizer: AdamWConfig,
    pub optimizer_t: u64,
    /// Samples consumed over all ranks so far.
    pub samples_seen: u64,
    /// Seconds the training thread spent taking this snapshot (copying the state).
    pub snapshot_s: f64,
}

/// Snapshot buffers the writer has finished with, handed to the next [`Snapshot`] (see
/// [`SnapshotBuffers::copy`]): it then copies into memory that is already mapped. A fresh
/// allocation this large page-faults on first touch (glibc gives freed multi-megabyte blocks
/// back to the kernel), which cost the training thread ≈ 4 ms per 16 MB snapshot against
/// ≈ 0.9 ms for the copy alone. Each [`AsyncWriter`] owns one ([`AsyncWriter::buffers`]);
/// it holds at most [`SPARE_BUFFERS_MAX`] buffers, so a worker that checkpoints keeps about
/// one snapshot's worth of memory between checkpoints.
#[derive(Debug, Clone, Default)]
pub struct SnapshotBuffers(Arc<Mutex<Vec<Vec<f32>>>>);

/// Spare buffers kept: params, m and v of two snapshots (one queued, one being written).
const SPARE_BUFFERS_MAX: usize = 6;

impl SnapshotBuffers {
    /// A copy of `src` for a [`Snapshot`], in a spare buffer that fits when there is one,
    /// else in a new one.
    pub fn copy(&self, src: &[f32]) -> Vec<f32> {
        let spare = {
            let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            spare
                .iter()
                .position(|b| b.capacity() >= src.len())
                .map(|i| spare.swap_remove(i))
        };
        match spare {
            Some(mut buf) => {
                buf.clear();
                buf.extend_from_slice(src);
                buf
            }
            None => src.to_vec(),
        }
    }

    /// Takes back the state buffers of a written snapshot.
    fn recycle(&self, snap: Snapshot) {
        let mut spare = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for buf in [snap.params, snap.m, snap.v] {
            if spare.len() < SPARE_BUFFERS_MAX && buf.capacity() > 0 {
                spare.push(buf);
            }
        }
    }
}

/// One file of a checkpoint. Each checksum field names its algorithm; [`load`] verifies every
/// one recorded and refuses an entry that records none.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// CRC-32C (Castagnoli, as in iSCSI and ext4) of the whole file as 8 lowercase hex digits
    /// of the 32-bit value; written by format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// SHA-256 of the whole file as 64 lowercase hex digits; written by format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl FileEntry {
    /// Checks `contents` against the size and every checksum recorded here; the error says
    /// which one differs.
    fn verify(&self, contents: &[u8]) -> Result<(), String> {
        if contents.len() as u64 != self.bytes {
            return Err(format!(
                "{} has {} bytes, manifest says {}",
                self.name,
                contents.len(),
                self.bytes
            ));
        }
        if self.crc32c.is_none() && self.sha256.is_none() {
            return Err(format!(
                "manifest records no checksum (crc32c or sha256) for {}",
                self.name
            ));
        }
        let checks = [
            ("CRC-32C", &self.crc32c, crc32c_hex as fn(&[u8]) -> String),
            ("SHA-256", &self.sha256, sha256_hex),
        ];
        for (algorithm, recorded, sum) in checks {
            if let Some(recorded) = recorded {
                let actual = sum(contents);
                if !actual.eq_ignore_ascii_case(recorded) {
                    return Err(format!(
                        "{} has {algorithm} {actual}, manifest says {recorded}",
                        self.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where the data stream stands. Batches are a pure function of `(seed, step, rank)`, so the
/// step is the position; `samples_seen` counts samples over all ranks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPosition {
    pub step: u64,
    pub samples_seen: u64,
}

/// RNG state: a counter-based generator (`StdRng` seeded by `mix_seed(seed, counter, rank)`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    pub kind: String,
    pub seed: u64,
    pub counter: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub step: u64,
    pub world: usize,
    pub model: ModelSpec,
    pub data: DataPosition,
    pub rng: RngState,
    pub optimizer: AdamWConfig,
    pub optimizer_t: u64,
    pub files: Vec<FileEntry>,
    pub written_unix_s: f64,
}

/// Checkpoint I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise tensors for {path}: {message}")]
    Serialise { path: PathBuf, message: String },
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error("checkpoint {path} is unusable: {reason}")]
    Bad { path: PathBuf, reason: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// CPU seconds used by the calling thread so far (0 where the clock is unavailable).
fn thread_cpu_s() -> f64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn crc32c_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

/// Streams `entries` (F32 tensors, data in this order) to `path` as a safetensors file,
/// checksumming while writing, then fsyncs it: no serialised copy of the checkpoint is built,
/// so the writer thread reads each byte once. Returns the file size and CRC-32C (hex).
/// Failpoint `point`: `Error` stops after creating the file, `Partial` after the header and
/// the first half of the tensors.
fn write_tensors(
    fp: &Failpoints,
    point: &'static str,
    path: &Path,
    entries: &[(String, Vec<usize>, &[f32])],
) -> Result<(u64, String), CheckpointError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in entries {
        let n = std::mem::size_of_val(*data);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| {
        CheckpointError::Serialise {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    // Pad with spaces (allowed by the format) so tensor data starts 8-byte aligned.
    head.resize(head.len().next_multiple_of(8), b' ');
    // No truncation: a recycled file is overwritten in place and cut to size at the end.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("create", path))?;
    let action = fp.action(point);
    if action == Some(FailAction::Exit) {
        std::process::exit(97);
    }
    if action == Some(FailAction::Error) {
        return Err(Injected(point).into());
    }
    let mut crc = 0u32;
    let mut total = 0u64;
    let mut put = |bytes: &[u8]| -> Result<(), CheckpointError> {
        crc = crc32c::crc32c_append(crc, bytes);
        total += bytes.len() as u64;
        file.write_all(bytes).map_err(io("write", path))
    };
    put(&(head.len() as u64).to_le_bytes())?;
    put(&head)?;
    let upto = if action == Some(FailAction::Partial) {
        entries.len() / 2
    } else {
        entries.len()
    };
    for (_, _, data) in &entries[..upto] {
        put(bytemuck::cast_slice(data))?;
    }
    let sync = file.set_len(total).and_then(|()| file.sync_all());
    if action.is_some() {
        return Err(Injected(point).into());
    }
    sync.map_err(io("fsync", path))?;
    Ok((total, format!("{crc:08x}")))
}

fn fsync_dir(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", path))
}

/// What a finished write reports.
#[derive(Debug, Clone)]
pub struct WriteReport {
    pub step: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub write_s: f64,
    /// CPU seconds the writing thread spent on this checkpoint.
    pub cpu_s: f64,
    /// Seconds the training thread spent taking the snapshot ([`Snapshot::snapshot_s`]).
    pub snapshot_s: f64,
    /// Checkpoint directories removed by the keep-last-M policy.
    pub pruned: Vec<PathBuf>,
}

/// Writes `snap` under `dir` atomically, keeping the newest `keep` checkpoints.
pub fn write(
    dir: &Path,
    snap: &Snapshot,
    keep: usize,
    fp: &Failpoints,
) -> Result<WriteReport, CheckpointError> {
    let started = Instant::now();
    let cpu_started_s = thread_cpu_s();
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let name = step_dir_name(snap.step);
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("remove stale", &tmp))?;
    }
    // Recycle the oldest checkpoint, which this write would prune anyway: renamed to the temp
    // name it stops being a checkpoint at once, and overwriting its files in place reuses
    // their page-cache pages instead of allocating 2× the checkpoint size each time (the
    // dominant CPU cost of a write). Only when another `keep − 1` good ones remain.
    let existing = list(dir);
    let recycled = keep >= 2
        && existing.len() >= keep
        && existing
            .last()
            .is_some_and(|(_, oldest)| std::fs::rename(oldest, &tmp).is_ok());
    if recycled {
        let _ = std::fs::remove_file(tmp.join("manifest.json"));
    } else {
        std::fs::create_dir(&tmp).map_err(io("create", &tmp))?;
    }
    fp.hit("ckpt.after_create_tmp")?;

    let model_path = tmp.join("model.safetensors");
    let mut model_entries = Vec::with_capacity(snap.layout.len());
    let mut optim_entries = Vec::with_capacity(2 * snap.layout.len());
    let mut off = 0;
    for (n, shape) in &snap.layout {
        let len: usize = shape.iter().product();
        model_entries.push((n.clone(), shape.clone(), &snap.params[off..off + len]));
        optim_entries.push((format!("m.{n}"), shape.clone(), &snap.m[off..off + len]));
        optim_entries.push((format!("v.{n}"), shape.clone(), &snap.v[off..off + len]));
        off += len;
    }
    let optim_path = tmp.join("optim.safetensors");
    let mut files = Vec::new();
    let mut data_bytes = 0;
    for (point, path, entries) in [
        ("ckpt.write_model", &model_path, &model_entries),
        ("ckpt.write_optim", &optim_path, &optim_entries),
    ] {
        let (bytes, crc32c) = write_tensors(fp, point, path, entries)?;
        data_bytes += bytes;
        files.push(FileEntry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            crc32c: Some(crc32c),
            sha256: None,
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        step: snap.step,
        world: snap.world,
        model: snap.spec.clone(),
        data: DataPosition {
            step: snap.step,
            samples_seen: snap.samples_seen,
        },
        rng: RngState {
            kind: "counter:splitmix64(seed,step,rank)->StdRng".into(),
            seed: snap.seed,
            counter: snap.step,
        },
        optimizer: snap.optimizer,
        optimizer_t: snap.optimizer_t,
        files,
        written_unix_s: crate::events::unix_s(),
    };
    let manifest_path = tmp.join("manifest.json");
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Serialise {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
    let mut f = File::create(&manifest_path).map_err(io("create", &manifest_path))?;
    fp.write("ckpt.write_manifest", &mut f, &manifest_bytes)?
        .map_err(io("write", &manifest_path))?;
    fsync_dir(&tmp)?;
    fp.hit("ckpt.before_rename")?;

    let final_path = dir.join(&name);
    let mut displaced = None;
    if final_path.exists() {
        // Re-writing a step (after a fall-back past a damaged copy): move the old one aside
        // first; rename cannot replace a non-empty directory.
        let old = dir.join(format!(".old-{name}-{}", std::process::id()));
        std::fs::rename(&final_path, &old).map_err(io("rename", &final_path))?;
        displaced = Some(old);
    }
    std::fs::rename(&tmp, &final_path).map_err(io("rename", &tmp))?;
    fp.hit("ckpt.after_rename")?;
    fsync_dir(dir)?;
    if let Some(old) = displaced {
        let _ = std::fs::remove_dir_all(old);
    }
    fp.hit("ckpt.before_prune")?;
    let pruned = prune(dir, keep)?;
    let report = WriteReport {
        step: snap.step,
        path: final_path,
        bytes: data_bytes + manifest_bytes.len() as u64,
        write_s: started.elapsed().as_secs_f64(),
        cpu_s: thread_cpu_s() - cpu_started_s,
        snapshot_s: snap.snapshot_s,
        pruned,
    };
    tracing::debug!(
        step = report.step,
        write_s = report.write_s,
        cpu_s = report.cpu_s,
        snapshot_s = report.snapshot_s,
        "checkpoint written"
    );
    Ok(report)
}

/// Checkpoint directories under `dir`, newest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out
}

/// Removes all but the newest `keep` checkpoints and temp directories of dead writers.
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut removed = Vec::new();
    for (_, path) in list(dir).into_iter().skip(keep.max(1)) {
        std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        removed.push(path);
    }
    let me = format!("-{}", std::process::id());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.starts_with(".tmp-") || name.starts_with(".old-")) && !name.ends_with(&me) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(removed)
}

/// A verified checkpoint, in the flat layout of the workload.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// A checkpoint skipped by [`restore_latest`], with the reason.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub step: u64,
    pub path: PathBuf,
    pub reason: String,
}

fn read_flat(
    bytes: &[u8],
    path: &Path,
    layout: &[Param],
    prefix: &str,
) -> Result<Vec<f32>, CheckpointError> {
    let bad = |reason: String| CheckpointError::Bad {
        path: path.to_path_buf(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(layout.iter().map(|p| p.len).sum());
    for p in layout {
        let name = format!("{prefix}{}", p.name);
        let t = st
            .tensor(&name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if t.shape() != p.shape.as_slice() || t.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected F32 {:?}",
                t.dtype(),
                t.shape(),
                p.shape
            )));
        }
        out.extend(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(out)
}

/// Loads and verifies one checkpoint directory.
pub fn load(path: &Path, layout: &[Param]) -> Result<Restored, CheckpointError> {
    let bad = |reason: String| CheckpointError::Bad {
        path: path.to_path_buf(),
        reason,
    };
    let manifest_path = path.join("manifest.json");
    let text = std::fs::read(&manifest_path).map_err(io("read", &manifest_path))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if !(OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&manifest.format_version) {
        return Err(bad(format!(
            "format_version {} (expected {OLDEST_READABLE_FORMAT} to {FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    let mut contents = std::collections::HashMap::new();
    for f in &manifest.files {
        let p = path.join(&f.name);
        let bytes = std::fs::read(&p).map_err(io("read", &p))?;
        f.verify(&bytes).map_err(bad)?;
        contents.insert(f.name.clone(), bytes);
    }
    let model = contents
        .get("model.safetensors")
        .ok_or_else(|| bad("manifest lists no model.safetensors".into()))?;
    let optim = contents
        .get("optim.safetensors")
        .ok_or_else(|| bad("manifest lists no optim.safetensors".into()))?;
    Ok(Restored {
        params: read_flat(model, path, layout, "")?,
        m: read_flat(optim, path, layout, "m.")?,
        v: read_flat(optim, path, layout, "v.")?,
        manifest,
        path: path.to_path_buf(),
    })
}

/// The newest checkpoint under `dir` that verifies, with the newer ones skipped on the way.
/// `max_step` limits the search (checkpoints after it are ignored, not skipped).
pub fn restore_latest(
    dir: &Path,
    layout: &[Param],
    max_step: Option<u64>,
) -> (Option<Restored>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    for (step, path) in list(dir) {
        if max_step.is_some_and(|m| step > m) {
            continue;
        }
        match load(&path, layout) {
            Ok(r) => return (Some(r), skipped),
            Err(e) => {
                tracing::warn!(step, path = %path.display(), error = %e, "checkpoint fails verification; falling back to an older one");
                skipped.push(Skipped {
                    step,
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    (None, skipped)
}

/// Makes the calling (writer) thread yield to training: lowest nice value, so it runs
/// in the time training leaves idle, on any core rather than only the worker's pinned one.
fn background_thread() {
    // Linux keeps nice values per thread: PRIO_PROCESS with a thread id sets this one only.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::warn!(error = %e, "cannot lower the checkpoint writer's priority; it competes with training");
    }
    let mut any = nix::sched::CpuSet::new();
    for cpu in 0..nix::sched::CpuSet::count() {
        // Cannot fail below `count()`; the kernel ignores CPUs that do not exist.
        let _ = any.set(cpu);
    }
    // Pid 0: the calling thread (affinity too is per thread).
    if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &any) {
        tracing::warn!(error = %e, "cannot let the checkpoint writer run on every core; it stays on the worker's");
    }
}

enum Command {
    Write(Box<Snapshot>),
    Flush(mpsc::Sender<()>),
}

/// Writes checkpoints on a background thread so training continues. The thread runs at
/// nice 19 and may use every core (the worker's pinning does not hold it), so it takes the
/// CPU that training leaves idle rather than delaying a step; where that fails it warns and
/// writes anyway. At most one snapshot waits while another is being written;
/// [`AsyncWriter::submit`] blocks beyond that (and says for how long).
#[derive(Debug)]
pub struct AsyncWriter {
    tx: Option<mpsc::SyncSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    buffers: SnapshotBuffers,
}

impl AsyncWriter {
    /// Starts the writer thread; `on_done` runs on it after each write (success or failure).
    pub fn start(
        dir: PathBuf,
        keep: usize,
        fp: Failpoints,
        on_done: impl Fn(Result<WriteReport, CheckpointError>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Command>(1);
        let buffers = SnapshotBuffers::default();
        let spare = buffers.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                background_thread();
                for cmd in rx {
                    match cmd {
                        Command::Write(snap) => {
                            on_done(write(&dir, &snap, keep, &fp));
                            spare.recycle(*snap);
                        }
                        Command::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawning the checkpoint writer thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
            buffers,
        }
    }

    /// Where snapshots for this writer should copy the state ([`SnapshotBuffers::copy`]).
    pub fn buffers(&self) -> &SnapshotBuffers {
        &self.buffers
    }

    /// Queues a snapshot; returns the seconds spent waiting for the queue.
    pub fn submit(&self, snap: Snapshot) -> f64 {
        let started = Instant::now();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Write(Box::new(snap)));
        }
        started.elapsed().as_secs_f64()
    }

    /// Waits until every queued snapshot is written.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if let Some(tx) = &self.tx {
            if tx.send(Command::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}

impl Drop for AsyncWriter {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    fn workload() -> Workload {
        Workload::new(
            ModelSpec::Mlp {
                config: models::mlp::MlpConfig {
                    input_dim: 4,
                    hidden: vec![5],
                    num_classes: 3,
                },
                teacher_hidden: 4,
            },
            1,
            None,
        )
        .expect("workload")
    }

    fn snapshot(w: &Workload, step: u64) -> Snapshot {
        let n = w.num_values();
        Snapshot {
            step,
            world: 2,
            seed: 1,
            spec: w.spec().clone(),
            layout: w
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect(),
            params: (0..n).map(|i| i as f32 + step as f32).collect(),
            m: vec![step as f32; n],
            v: vec![0.5; n],
            optimizer: AdamWConfig::default(),
            optimizer_t: step,
            samples_seen: step * 8,
            snapshot_s: 0.0,
        }
    }

    #[test]
    fn written_checkpoint_restores_exactly_and_only_the_last_m_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        for step in [5, 10, 15] {
            write(dir.path(), &snapshot(&w, step), 2, &Failpoints::default()).expect("write");
        }
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![15, 10]);
        let (r, skipped) = restore_latest(dir.path(), w.params(), None);
        let r = r.expect("restorable");
        assert!(skipped.is_empty());
        let s = snapshot(&w, 15);
        assert_eq!((r.params, r.m, r.v), (s.params, s.m, s.v));
        assert_eq!(r.manifest.data.samples_seen, 120);
        // The weights file is a model file the server's loader accepts.
        let mlp = models::mlp::Mlp::load(&r.path.join("model.safetensors")).expect("servable");
        assert_eq!(mlp.config().hidden, vec![5]);
    }

    #[test]
    fn damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        for step in [5, 10] {
            write(dir.path(), &snapshot(&w, step), 3, &Failpoints::default()).expect("write");
        }
        let model = dir.path().join("step-00000010/model.safetensors");
        let mut bytes = std::fs::read(&model).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&model, bytes).expect("corrupt");
        let (r, skipped) = restore_latest(dir.path(), w.params(), None);
        assert_eq!(r.expect("fallback").manifest.step, 5);
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].reason.contains("CRC-32C"),
            "{}",
            skipped[0].reason
        );
    }

    /// Rewrites the manifest of the checkpoint at `path` through `edit` (on its JSON).
    fn edit_manifest(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let manifest = path.join("manifest.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).expect("read manifest"))
                .expect("manifest JSON");
        edit(&mut json);
        std::fs::write(&manifest, serde_json::to_vec_pretty(&json).expect("JSON"))
            .expect("write manifest");
    }

    fn flip_bit(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).expect("corrupt");
    }

    #[test]
    fn a_flipped_bit_anywhere_in_either_file_fails_the_crc32c_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        let report = write(dir.path(), &snapshot(&w, 5), 2, &Failpoints::default()).expect("write");
        let manifest = load(&report.path, w.params()).expect("verifies").manifest;
        assert_eq!(manifest.format_version, FORMAT_VERSION);
        for f in &manifest.files {
            assert!(f.crc32c.is_some() && f.sha256.is_none(), "{f:?}");
            let file = report.path.join(&f.name);
            let len = f.bytes as usize;
            // The header length, the JSON header, tensor data, the last byte.
            for at in [0, 9, len / 2, len - 1] {
                flip_bit(&file, at);
                let err = load(&report.path, w.params()).expect_err("corruption caught");
                assert!(err.to_string().contains("CRC-32C"), "{at}: {err}");
                flip_bit(&file, at);
            }
        }
        load(&report.path, w.params()).expect("verifies again once repaired");
    }

    #[test]
    fn a_format_1_manifest_with_sha256_checksums_still_restores_and_catches_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        let report = write(dir.path(), &snapshot(&w, 5), 2, &Failpoints::default()).expect("write");
        // What a format-1 writer left: SHA-256 per file, no CRC-32C.
        edit_manifest(&report.path, |m| {
            m["format_version"] = 1.into();
            for f in m["files"].as_array_mut().expect("files") {
                let name = f["name"].as_str().expect("name").to_owned();
                let bytes = std::fs::read(report.path.join(&name)).expect("read");
                let f = f.as_object_mut().expect("entry");
                f.remove("crc32c");
                f.insert("sha256".into(), sha256_hex(&bytes).into());
            }
        });
        let r = load(&report.path, w.params()).expect("format 1 restores");
        assert_eq!(r.manifest.format_version, 1);
        assert_eq!(r.params, snapshot(&w, 5).params);
        flip_bit(&report.path.join("optim.safetensors"), 100);
        let err = load(&report.path, w.params()).expect_err("damage caught");
        assert!(err.to_string().contains("SHA-256"), "{err}");
    }

    #[test]
    fn a_manifest_without_checksums_or_of_an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        let report = write(dir.path(), &snapshot(&w, 5), 2, &Failpoints::default()).expect("write");
        edit_manifest(&report.path, |m| {
            for f in m["files"].as_array_mut().expect("files") {
                f.as_object_mut().expect("entry").remove("crc32c");
            }
        });
        let err = load(&report.path, w.params()).expect_err("no checksum");
        assert!(err.to_string().contains("records no checksum"), "{err}");
        edit_manifest(&report.path, |m| {
            m["format_version"] = (FORMAT_VERSION + 1).into()
        });
        let err = load(&report.path, w.params()).expect_err("newer format");
        assert!(err.to_string().contains("format_version"), "{err}");
    }

    #[test]
    fn the_writer_thread_runs_at_nice_19_and_on_every_core_even_when_started_pinned() {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let cores = |set: &CpuSet| {
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect::<Vec<_>>()
        };
        let allowed = cores(&sched_getaffinity(Pid::from_raw(0)).expect("own affinity"));
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = snapshot(&workload(), 1);
        let (tx, rx) = mpsc::channel();
        let path = dir.path().to_path_buf();
        let first = allowed[0];
        // Started from a thread pinned to one core, as a pinned worker's training thread is.
        std::thread::spawn(move || {
            let mut one = CpuSet::new();
            one.set(first).expect("a core below CpuSet::count()");
            sched_setaffinity(Pid::from_raw(0), &one).expect("pin to one core");
            let writer = AsyncWriter::start(path, 2, Failpoints::default(), move |r| {
                let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
                let on = sched_getaffinity(Pid::from_raw(0)).map(|s| cores(&s));
                let _ = tx.send((r.is_ok(), nice.ok(), on.ok()));
            });
            writer.submit(snap);
            writer.flush();
        })
        .join()
        .expect("pinned thread");
        let (written, nice, on) = rx.recv().expect("a write report");
        assert!(written);
        assert_eq!(nice, Some(19));
        let on = on.expect("writer affinity");
        assert!(
            allowed.iter().all(|c| on.contains(c)),
            "{on:?} ⊉ {allowed:?}"
        );
    }

    #[test]
    fn snapshot_copies_are_exact_whatever_spare_buffer_they_reuse() {
        let w = workload();
        // Spare buffers with stale contents, longer and shorter than what is copied next.
        let mut junk = snapshot(&w, 9);
        junk.params = vec![7.0; 1000];
        junk.m = vec![8.0; 3];
        let buffers = SnapshotBuffers::default();
        buffers.recycle(junk);
        for len in [0, 3, 500, 1000, 2000] {
            let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            assert_eq!(buffers.copy(&src), src);
        }
    }

    #[test]
    fn a_crash_at_every_failpoint_leaves_a_restorable_checkpoint_and_the_next_write_works() {
        let w = workload();
        // keep = 2 exercises recycling the oldest checkpoint's files; keep = 1 fresh files.
        for keep in [1, 2] {
            for point in FAILPOINTS {
                for action in [FailAction::Error, FailAction::Partial] {
                    let dir = tempfile::tempdir().expect("tempdir");
                    for step in [5, 10] {
                        write(
                            dir.path(),
                            &snapshot(&w, step),
                            keep,
                            &Failpoints::default(),
                        )
                        .expect("first");
                    }
                    let fp = Failpoints::default();
                    fp.set(point, action);
                    let crashed = write(dir.path(), &snapshot(&w, 15), keep, &fp);
                    assert!(crashed.is_err(), "{point} fired");
                    let (r, _) = restore_latest(dir.path(), w.params(), None);
                    let r = r.expect("restorable after crash");
                    // Before the rename the previous checkpoint stands; after it the new one.
                    let renamed = matches!(point, "ckpt.after_rename" | "ckpt.before_prune");
                    let expect = if renamed { 15 } else { 10 };
                    assert_eq!(r.manifest.step, expect, "keep {keep} {point} {action:?}");
                    assert_eq!(r.params, snapshot(&w, expect).params);
                    // A later writer (another process in real life) cleans up and succeeds.
                    write(dir.path(), &snapshot(&w, 20), keep, &Failpoints::default())
                        .expect("next");
                    let (r, skipped) = restore_latest(dir.path(), w.params(), None);
                    assert_eq!(r.expect("next").manifest.step, 20);
                    assert!(skipped.is_empty());
                }
            }
        }
    }

    #[test]
    fn async_writer_reports_each_checkpoint_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = workload();
        let (tx, rx) = mpsc::channel();
        let writer = AsyncWriter::start(
            dir.path().to_path_buf(),
            5,
            Failpoints::default(),
            move |r| {
                let _ = tx.send(r.map(|r| r.step).map_err(|e| e.to_string()));
            },
        );
        writer.submit(snapshot(&w, 1));
        writer.submit(snapshot(&w, 2));
        writer.flush();
        assert_eq!(list(dir.path()).len(), 2);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![Ok(1), Ok(2)]);
    }
}
