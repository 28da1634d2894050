//! Run reports: the `metrics.json` model ([`model`]), SVG plots, `index.html`, JUnit XML.
//!
//! Not here: measuring anything; the runner fills [`RunMetrics`] and calls this crate.

pub mod model;

pub use model::*;
