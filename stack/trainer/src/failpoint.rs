//! Named failpoints for crash-consistency tests (STYLE item 7, after TiKV's fail-rs).
//!
//! Code that must survive a crash at any instant calls [`Failpoints::hit`] (or
//! [`Failpoints::write`] for a file write) at each interesting point. Unit tests arm points
//! per instance with `set`; process tests arm them with the `TRAINER_FAILPOINTS` environment
//! variable (`name=action,…`, actions `error`, `partial`, `exit`), read only when the crate
//! is built with the `failpoints` feature. In ordinary builds no point can be armed and a hit
//! costs one uncontended lock.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// Stop here with an error, leaving everything written so far as a crash would.
    Error,
    /// For a file write: write the first half of the bytes, flush them, then stop. Elsewhere
    /// the same as `Error`.
    Partial,
    /// Exit the process at once with status 97 (a real crash, for process tests).
    Exit,
}

/// Returned by an armed point.
#[derive(Debug, thiserror::Error)]
#[error("failpoint `{0}` fired")]
pub struct Injected(pub &'static str);

/// A set of armed points. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Failpoints(Arc<Mutex<HashMap<&'static str, FailAction>>>);

impl Failpoints {
    /// Points armed by `TRAINER_FAILPOINTS` (only with the `failpoints` feature; otherwise
    /// none).
    pub fn from_env(known: &[&'static str]) -> Self {
        let fp = Self::default();
        #[cfg(feature = "failpoints")]
        if let Ok(spec) = std::env::var("TRAINER_FAILPOINTS") {
            for item in spec.split(',').filter(|s| !s.is_empty()) {
                let (name, action) = item.split_once('=').unwrap_or((item, "error"));
                let action = match action {
                    "partial" => FailAction::Partial,
                    "exit" => FailAction::Exit,
                    _ => FailAction::Error,
                };
                if let Some(k) = known.iter().find(|k| **k == name) {
                    fp.set(k, action);
                }
            }
        }
        let _ = known;
        fp
    }

    /// Arms `name`.
    #[cfg(any(test, feature = "failpoints"))]
    pub fn set(&self, name: &'static str, action: FailAction) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, action);
    }

    /// The action armed at `name`, if any.
    pub fn action(&self, name: &'static str) -> Option<FailAction> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// A point with no write: errors (or exits) when armed.
    pub fn hit(&self, name: &'static str) -> Result<(), Injected> {
        match self.action(name) {
            None => Ok(()),
            Some(FailAction::Exit) => std::process::exit(97),
            Some(_) => Err(Injected(name)),
        }
    }

    /// Writes `bytes` to `file` (and fsyncs it), unless `name` is armed: then writes half
    /// (`Partial`) or nothing and fails.
    pub fn write(
        &self,
        name: &'static str,
        file: &mut std::fs::File,
        bytes: &[u8],
    ) -> Result<std::io::Result<()>, Injected> {
        match self.action(name) {
            None => Ok(file.write_all(bytes).and_then(|()| file.sync_all())),
            Some(FailAction::Partial) => {
                let _ = file.write_all(&bytes[..bytes.len() / 2]);
                let _ = file.sync_all();
                Err(Injected(name))
            }
            Some(FailAction::Exit) => std::process::exit(97),
            Some(FailAction::Error) => Err(Injected(name)),
        }
    }
}
