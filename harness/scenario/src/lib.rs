//! Scenario files: the typed format ([`model`]), parsing with located errors, and validation.
//!
//! Not here: running a scenario (that is the `faultline` crate's runner).

pub mod model;

pub use model::*;
