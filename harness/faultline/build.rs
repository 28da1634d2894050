//! Generates one test case per scenario file (`tests/scenarios.rs` includes it), so adding
//! a file under `scenarios/` adds a test. Scenarios without `quick = true` are generated
//! as `#[ignore]`d tests that `cargo test -p faultline --test scenarios -- --ignored` runs.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::new();
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ident: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        // A file that does not parse is still a test: it fails with the located error.
        let quick = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.parse::<toml::Table>().ok())
            .and_then(|t| t.get("quick").and_then(toml::Value::as_bool))
            .unwrap_or(true);
        let ignore = if quick {
            String::new()
        } else {
            "#[ignore = \"not quick: cargo test -p faultline --test scenarios -- --ignored\"]\n"
                .to_owned()
        };
        let _ = write!(
            out,
            "#[test]\n{ignore}fn scenario_{ident}() {{\n    run_scenario({:?});\n}}\n\n",
            path.display().to_string()
        );
    }
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("scenario_tests.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
