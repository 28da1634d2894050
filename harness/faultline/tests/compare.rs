//! `faultline compare` as a user runs it: real runs of a short scenario, then the
//! comparison of their folders (exit status, refusal of incompatible runs, outputs), and
//! `--run` making its own interleaved runs with a candidate-only argument.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHORT: &str = r#"
description = "two seconds of light load, for compare tests"
seed = 3
[[components]]
name = "server"
kind = "server"
[workload]
target = "server"
rate_per_s = 40
warmup = "500ms"
duration = "2s"
[[workload.requests]]
kind = "infer"
model = "mlp"
"#;

fn faultline(reports: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.current_dir(common::repo_root())
        .env("FAULTLINE_REPORTS", reports)
        .env("FAULTLINE_BIN_DIR", common::bin_dir());
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the short scenario with `seed`; returns its run folder.
fn run(reports: &Path, scenario: &Path, seed: u64) -> PathBuf {
    let out = faultline(reports)
        .args(["run", "--quiet", "--seed", &seed.to_string()])
        .arg(scenario)
        .output()
        .expect("faultline run");
    assert!(out.status.success(), "{}", text(&out));
    let latest = reports.join("short/latest");
    std::fs::canonicalize(&latest).expect("latest run folder")
}

#[test]
fn folders_compare_and_runs_of_different_seeds_are_refused_unless_forced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reports = dir.path().join("reports");
    let scenario = dir.path().join("short.toml");
    std::fs::write(&scenario, SHORT).expect("scenario");
    let a = run(&reports, &scenario, 3);
    let b = run(&reports, &scenario, 3);
    let c = run(&reports, &scenario, 4);

    // Same scenario and seed: judged; one run per side, so windows are pooled.
    let page = dir.path().join("page");
    let junit = dir.path().join("compare.xml");
    let out = faultline(&reports)
        .args(["compare", "--json", "--baseline"])
        .arg(&a)
        .arg(&b)
        .arg("--html")
        .arg(&page)
        .arg("--junit")
        .arg(&junit)
        .output()
        .expect("compare");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    let figures = json["figures"].as_array().expect("figures");
    assert!(!figures.is_empty(), "{}", text(&out));
    assert!(json["compatibility"].as_array().is_some_and(Vec::is_empty));
    assert!(page.join("index.html").is_file());
    assert!(page.join("comparison.json").is_file());
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("<testsuite"), "{xml}");

    // Another seed: refused, naming the field, exit 2.
    let out = faultline(&reports)
        .args(["compare", "--baseline"])
        .arg(&a)
        .arg(&c)
        .output()
        .expect("compare");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed") && err.contains("--force"), "{err}");
    // --force compares them all the same, with a warning.
    let out = faultline(&reports)
        .args(["compare", "--force", "--baseline"])
        .arg(&a)
        .arg(&c)
        .output()
        .expect("compare");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));

    // The report folder as a history, the latest run as the candidate (left out of the
    // baseline): the history is the two seed-3 runs and the seed-4 one.
    let out = faultline(&reports)
        .args(["compare", "--force", "--history"])
        .arg(reports.join("short"))
        .arg(reports.join("short/latest"))
        .output()
        .expect("compare");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("baseline: 2 run(s)"), "{stdout}");
}

#[test]
fn run_makes_interleaved_runs_and_marks_the_candidate_arguments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reports = dir.path().join("reports");
    let scenario = dir.path().join("short.toml");
    std::fs::write(&scenario, SHORT).expect("scenario");
    let out = faultline(&reports)
        .args(["compare", "--quiet", "--json", "--runs", "1", "--run"])
        .arg(&scenario)
        .args(["--candidate-arg", "server=--fault-slowdown=0.5"])
        .args(["--warmup-runs", "1"])
        .output()
        .expect("compare --run");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The warm-up run of each side is made and not compared.
    assert_eq!(json["baseline"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["candidate"].as_array().map(Vec::len), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("candidate warm-up run 1 of 1 (not compared)"),
        "{stderr}"
    );
    // The candidate run's own report says it is not the scenario as written.
    let mut marked = 0;
    for run in std::fs::read_dir(reports.join("short"))
        .expect("runs")
        .flatten()
    {
        // Not the `latest` link to one of them.
        if run.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        let m = run.path().join("metrics.json");
        let Ok(text) = std::fs::read_to_string(&m) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("metrics");
        if v["run"]["extra_args"] == serde_json::json!(["server=--fault-slowdown=0.5"]) {
            marked += 1;
        }
    }
    assert_eq!(
        marked, 2,
        "exactly the candidate runs (warm-up and measured) carry it"
    );
    let compare_pages: Vec<_> = std::fs::read_dir(reports.join("short"))
        .expect("runs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("compare-"))
        .collect();
    assert_eq!(compare_pages.len(), 1);
    assert!(compare_pages[0].path().join("index.html").is_file());

    // An unknown component is a usage error naming the components.
    let out = faultline(&reports)
        .args(["compare", "--quiet", "--runs", "1", "--run"])
        .arg(&scenario)
        .args(["--candidate-arg", "nosuch=--x"])
        .output()
        .expect("compare --run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of: server"));
}
