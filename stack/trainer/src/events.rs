//! Progress events: one JSON object per line on stdout, the contract with the harness. The
//! types are [`wire::trainer::Event`] (see the crate docs for every event and field), so the
//! harness reads exactly what is written here. Lines are written whole under the stdout
//! lock, so events from different threads never interleave.

use std::io::Write;

pub use wire::trainer::{Event, EventLine};

/// Seconds since the Unix epoch, as a float (the `t_unix_s` field).
pub fn unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes `event` as one line, stamped with the current `t_unix_s`.
pub fn emit(event: impl Into<Event>) {
    let line = EventLine {
        t_unix_s: unix_s(),
        event: event.into(),
    };
    // Plain data with string keys: serializing cannot fail (a non-finite float is `null`).
    let Ok(mut text) = serde_json::to_string(&line) else {
        return;
    };
    text.push('\n');
    let mut out = std::io::stdout().lock();
    // A closed stdout (harness gone) must not kill training.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
