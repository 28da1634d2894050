//! Checkpoints: model weights, optimiser state, data position and RNG state, written
//! atomically and asynchronously, verified on restore.
//!
//! Layout under the checkpoint directory (`RUN_DIR/checkpoints`):
//!
//! ```text
//! step-00000040/model.safetensors   weights under the model's own names (servable as is)
//! step-00000040/optim.safetensors   AdamW moments `m.<name>`, `v.<name>`
//! step-00000040/manifest.json       [`Manifest`]: step, world, seed, model, data position,
//!                                   RNG state, optimiser step, file sizes and SHA-256
//! ```
//!
//! A checkpoint is written into `.tmp-step-…-<pid>/` (tensors streamed to disk while being
//! hashed, each file fsynced), the temp directory is fsynced, renamed to `step-…` and the
//! parent directory fsynced; then all but the newest `keep` checkpoints are removed. With
//! `keep ≥ 2` the oldest checkpoint is first renamed to the temp name and its files are
//! overwritten in place (it would be pruned anyway), which saves the page-cache allocation
//! that dominated the writer's CPU time. A crash at any instant leaves either the
//! previous checkpoints untouched plus a temp directory that restore ignores, or the new
//! complete checkpoint. [`restore_latest`] walks checkpoints newest first, verifies sizes and
//! checksums, and falls back to an older one when a newer one is damaged, reporting every
//! checkpoint it skipped and why.
//!
//! Failpoints (armed in tests): see [`FAILPOINTS`].

use crate::failpoint::{FailAction, Failpoints, Injected};
use crate::optim::AdamWConfig;
use crate::workload::{ModelSpec, Param};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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

/// Checkpoint format version in the manifest.
pub const FORMAT_VERSION: u32 = 1;

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
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
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

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `entries` (F32 tensors, data in this order) to `path` as a safetensors file,
/// hashing while writing, then fsyncs it: no serialised copy of the checkpoint is built, so
/// the writer thread touches each byte once. Returns the file size and SHA-256.
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
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut put = |bytes: &[u8]| -> Result<(), CheckpointError> {
        hasher.update(bytes);
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
    let digest = hasher.finalize();
    Ok((total, digest.iter().map(|b| format!("{b:02x}")).collect()))
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
        let (bytes, sha256) = write_tensors(fp, point, path, entries)?;
        data_bytes += bytes;
        files.push(FileEntry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            sha256,
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
    Ok(WriteReport {
        step: snap.step,
        path: final_path,
        bytes: data_bytes + manifest_bytes.len() as u64,
        write_s: started.elapsed().as_secs_f64(),
        pruned,
    })
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
    if manifest.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format_version {} (expected {FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    let mut contents = std::collections::HashMap::new();
    for f in &manifest.files {
        let p = path.join(&f.name);
        let bytes = std::fs::read(&p).map_err(io("read", &p))?;
        if bytes.len() as u64 != f.bytes {
            return Err(bad(format!(
                "{} has {} bytes, manifest says {}",
                f.name,
                bytes.len(),
                f.bytes
            )));
        }
        let sum = sha256_hex(&bytes);
        if sum != f.sha256 {
            return Err(bad(format!(
                "{} has SHA-256 {sum}, manifest says {}",
                f.name, f.sha256
            )));
        }
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

enum Command {
    Write(Box<Snapshot>),
    Flush(mpsc::Sender<()>),
}

/// Writes checkpoints on a background thread so training continues. At most one snapshot
/// waits while another is being written; [`AsyncWriter::submit`] blocks beyond that (and
/// says for how long).
#[derive(Debug)]
pub struct AsyncWriter {
    tx: Option<mpsc::SyncSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                for cmd in rx {
                    match cmd {
                        Command::Write(snap) => on_done(write(&dir, &snap, keep, &fp)),
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
        }
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
            skipped[0].reason.contains("SHA-256"),
            "{}",
            skipped[0].reason
        );
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
