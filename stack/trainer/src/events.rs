//! Progress events: one JSON object per line on stdout, the contract with the harness (see
//! the crate docs for every event and field). Lines are written whole under the stdout lock,
//! so events from different threads never interleave.

use std::io::Write;

/// Seconds since the Unix epoch, as a float (the `t_unix_s` field).
pub fn unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes `event` (a JSON object) as one line, adding `t_unix_s` when absent.
pub fn emit(mut event: serde_json::Value) {
    if let Some(obj) = event.as_object_mut() {
        obj.entry("t_unix_s").or_insert_with(|| unix_s().into());
    }
    let mut line = event.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    // A closed stdout (harness gone) must not kill training.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
