//! `scenario::parse` on arbitrary text: TOML syntax, serde's typed model, validation and the
//! diagnostics' location (`locate`).
//!
//! Besides "never panics", it checks the promises of the diagnostics: at least one per
//! failure, each at a 1-based line and column inside the source (or just after it), naming
//! the origin, with a field path that reads back as itself (`FieldPath::parse`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use scenario::{FieldPath, ScenarioError};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Err(err) = scenario::parse(src, "fuzz.toml") else {
        return;
    };
    let ScenarioError::Invalid { diagnostics } = &err else {
        panic!("parse returned an I/O error: {err}");
    };
    assert!(
        !diagnostics.is_empty(),
        "an invalid scenario without diagnostics"
    );
    let lines = src.split('\n').count();
    for d in diagnostics {
        assert_eq!(d.file, "fuzz.toml");
        assert!(
            (1..=lines).contains(&d.line) && d.column >= 1,
            "{d} is outside a source of {lines} lines"
        );
        let line_chars = src
            .split('\n')
            .nth(d.line - 1)
            .map_or(0, |l| l.chars().count());
        assert!(
            d.column <= line_chars + 1,
            "{d}: column past the end of a line of {line_chars} characters"
        );
        if !d.path.is_empty() {
            let parsed = FieldPath::parse(&d.path)
                .unwrap_or_else(|| panic!("{d}: the field path does not parse back"));
            assert_eq!(
                parsed.to_string(),
                d.path,
                "{d}: the field path does not read back"
            );
        }
    }
    // The message printed to the user.
    let _ = err.to_string();
});
