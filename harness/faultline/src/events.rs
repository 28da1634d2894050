//! The run clock and `events.jsonl`: one JSON object per line for every process start and
//! exit, fault injection and heal, and phase change, stamped with the run clock.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

/// One monotonic clock for the whole run. `run_s` counts from the runner's start; the
/// scenario clock (t = 0 at the first intended request) is derived in the analysis.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    start_wall: SystemTime,
}

impl RunClock {
    pub fn start() -> Self {
        RunClock {
            start: Instant::now(),
            start_wall: SystemTime::now(),
        }
    }

    /// Seconds since the run started.
    pub fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Run-clock seconds of a wall-clock instant (negative if before the run).
    pub fn wall_to_s(&self, t: SystemTime) -> f64 {
        match t.duration_since(self.start_wall) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    pub fn instant_at(&self, run_s: f64) -> Instant {
        self.start + Duration::from_secs_f64(run_s.max(0.0))
    }

    pub fn start_wall(&self) -> SystemTime {
        self.start_wall
    }
}

/// Append-only `events.jsonl`; cheap to clone, safe to share between tasks.
#[derive(Clone, Debug)]
pub struct EventLog {
    clock: RunClock,
    out: Arc<Mutex<Option<BufWriter<File>>>>,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl EventLog {
    /// Creates `path` (truncating) and logs to it.
    pub fn create(path: &Path, clock: RunClock) -> std::io::Result<Self> {
        let file = File::create(path)?;
        Ok(EventLog {
            clock,
            out: Arc::new(Mutex::new(Some(BufWriter::new(file)))),
            lines: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Records event `kind` with extra fields; returns its run-clock time.
    pub fn emit(&self, kind: &str, fields: Value) -> f64 {
        let t = self.clock.now_s();
        let mut obj = Map::new();
        obj.insert("run_s".into(), json!(round_us(t)));
        obj.insert(
            "wall".into(),
            json!(humantime::format_rfc3339_micros(SystemTime::now()).to_string()),
        );
        obj.insert("event".into(), json!(kind));
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let line = Value::Object(obj);
        tracing::debug!(target: "faultline::events", "{line}");
        if let Ok(mut guard) = self.out.lock() {
            if let Some(w) = guard.as_mut() {
                // An event log that cannot be written is reported once at the end by the
                // runner (the flush below fails too); losing the run for it is worse.
                let _ = writeln!(w, "{line}").and_then(|()| w.flush());
            }
        }
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
        t
    }

    /// Every event so far, in order.
    pub fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Flushes and closes the file.
    pub fn close(&self) -> std::io::Result<()> {
        if let Ok(mut guard) = self.out.lock() {
            if let Some(mut w) = guard.take() {
                w.flush()?;
            }
        }
        Ok(())
    }
}

/// Rounds seconds to microseconds for stable, readable output.
pub fn round_us(s: f64) -> f64 {
    (s * 1e6).round() / 1e6
}
