//! Scenario files: the typed format ([`model`]), parsing with located errors, and validation.
//!
//! [`load`] and [`parse`] deserialize a TOML file (unknown fields rejected), then run
//! [`validate()`], which reports every broken rule at once, the upper bounds in [`bounds`]
//! included. Each problem comes back as a [`Diagnostic`] printed
//! `FILE:LINE:COL: FIELD_PATH: what is wrong; expected …`, located by field path through
//! [`locate`](mod@locate). [`json_schema`] is the JSON schema of the format for editors (committed as
//! `scenarios/schema.json`).
//!
//! Not here: running a scenario (that is the `faultline` crate's runner).

pub mod bounds;
pub mod error;
pub mod kinds;
pub mod locate;
pub mod model;
pub mod validate;

use std::path::Path;

pub use error::{Diagnostic, ScenarioError};
pub use kinds::{FaultDomain, KindSpec, ProbeKind, Role, KINDS};
pub use locate::{locate, FieldPath, LineCol, Segment};
pub use model::*;
pub use validate::{validate, Problem};

/// Reads and parses a scenario file; see [`parse`].
///
/// # Errors
/// [`ScenarioError::Io`] when the file cannot be read, else as [`parse`].
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let src = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&src, &path.display().to_string())
}

/// Parses and validates a scenario; `origin` names the source in diagnostics (a file path).
///
/// # Errors
/// [`ScenarioError::Invalid`] with one diagnostic for a TOML syntax or type error (the first
/// one the parser meets), or with every validation problem, sorted by position.
pub fn parse(src: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = match toml::from_str(src) {
        Ok(scenario) => scenario,
        Err(err) => {
            return Err(ScenarioError::Invalid {
                diagnostics: vec![serde_diagnostic(src, origin, &err)],
            })
        }
    };
    let problems = validate(&scenario);
    if problems.is_empty() {
        return Ok(scenario);
    }
    // toml accepted the source, so toml_edit (the same parser underneath) does too.
    let doc = toml_edit::ImDocument::parse(src).ok();
    let mut diagnostics: Vec<Diagnostic> = problems
        .into_iter()
        .map(|p| {
            let offset = doc
                .as_ref()
                .map_or(0, |doc| locate::locate_offset(doc, &p.path));
            let at = LineCol::of_offset(src, offset);
            Diagnostic {
                file: origin.to_owned(),
                line: at.line,
                column: at.column,
                path: p.path.to_string(),
                message: p.message,
            }
        })
        .collect();
    diagnostics.sort_by_key(|d| (d.line, d.column));
    Err(ScenarioError::Invalid { diagnostics })
}

/// A syntax or serde error as a diagnostic: position from its span, field from the position.
fn serde_diagnostic(src: &str, origin: &str, err: &toml::de::Error) -> Diagnostic {
    let mut offset = err.span().map_or(0, |s| s.start);
    let doc = toml_edit::ImDocument::parse(src).ok();
    let mut path = doc
        .as_ref()
        .map(|doc| locate::path_at(doc, offset))
        .unwrap_or_default();
    let mut message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // serde reports a missing field at its table: name the field itself.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = path.key(field);
    }
    // serde may point an unknown field at its enclosing table or array: find the key itself.
    if let (Some(doc), Some(field)) = (
        &doc,
        message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next()),
    ) {
        if let Some((found, key_offset)) = locate::find_key(doc, &path, field) {
            path = found;
            offset = key_offset;
        }
    }
    for (from, to) in [
        ("expected f64", "expected a number"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number >= 0"),
        // TOML's own limits, met before any field's bound.
        (
            "number too large to fit in target type",
            "integer too large; expected at most 9223372036854775807 (TOML integers are 64-bit)",
        ),
        (
            "invalid floating-point number",
            "invalid floating-point number; expected a finite number such as 1.5 or 1e6",
        ),
    ] {
        if let Some(start) = message.strip_suffix(from) {
            message = format!("{start}{to}");
        }
    }
    if message.ends_with("expected a duration") {
        message.push_str(" such as \"10s\", \"500ms\" or \"1m 30s\"");
    }
    let at = LineCol::of_offset(src, offset);
    Diagnostic {
        file: origin.to_owned(),
        line: at.line,
        column: at.column,
        path: path.to_string(),
        message,
    }
}

/// The JSON schema of the scenario format (draft-07, from the [`model`] types and their docs).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Scenario);
    serde_json::to_value(schema).expect("a schemars schema always serializes to JSON")
}
