//! Generates one test case per scenario file (`tests/scenarios.rs` includes it), so adding
//! a file under `scenarios/` adds a test. Scenarios without `quick = true` are generated
//! as `#[ignore]`d tests that `cargo test -p faultline --test scenarios -- --ignored` runs.
//!
//! Also stamps the commit the binary is built from (`FAULTLINE_BUILD_COMMIT`: 12 hex digits,
//! `-dirty` when tracked files differed from it, or `unknown` outside a git checkout), so a
//! report names the code that ran rather than whatever checkout the runner's working
//! directory happens to be.

use std::fmt::Write as _;
use std::path::Path;

/// `git` in the crate's folder, trimmed stdout when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(manifest)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn stamp_commit() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty());
    let stamp = match commit {
        None => "unknown".to_owned(),
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
    };
    println!("cargo:rustc-env=FAULTLINE_BUILD_COMMIT={stamp}");
    // Rebuild the stamp when HEAD moves or the index changes.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head}");
        }
    }
}

fn main() {
    stamp_commit();
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
