//! Loading real and broken run folders, judging synthetic nights, and the rendered outputs.
//!
//! `data/serve-crash-restart.metrics.json` is the unmodified `metrics.json` of
//! `faultline run scenarios/serve-crash-restart.toml` (seed 11, 2-core host).
//! Synthetic runs are that run with its windows and summaries replaced by seeded noise
//! shaped like a real run: window p99 with 10 % noise, autocorrelated (AR(1), φ = 0.5),
//! and a 1.5 % offset per run (the machine differs a little night to night).

use std::path::Path;

use compare::stats::{median, Rng};
use compare::{
    compare, exit_code, html, junit_xml, load_history, load_run, text, CompareError, Direction,
    Method, Options, Run, Verdict,
};
use report::RunMetrics;

const FIXTURE: &str = include_str!("data/serve-crash-restart.metrics.json");

fn fixture() -> RunMetrics {
    serde_json::from_str(FIXTURE).expect("the fixture is a RunMetrics")
}

fn write_run(dir: &Path, json: &str) {
    std::fs::create_dir_all(dir).expect("create run folder");
    std::fs::write(dir.join("metrics.json"), json).expect("write metrics.json");
}

/// One synthetic run: `windows` steady windows; latencies and recovery scaled by
/// `slowdown` (1.10 = 10 % slower).
fn synthetic(seed: u64, run: u64, slowdown: f64, windows: usize) -> Run {
    let mut m = fixture();
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(run));
    m.run.run_id = format!("s{seed}-r{run}");
    m.run.started_at = format!("2026-12-{:02}T03:00:00Z", 1 + run);
    let offset = 1.0 + 0.015 * rng.normal();
    let template = m.windows[1].clone();
    let mut ar = rng.normal();
    m.windows = (0..windows)
        .map(|i| {
            ar = 0.5 * ar + 0.75f64.sqrt() * rng.normal();
            let mut w = template.clone();
            w.start_s = 1.0 + i as f64;
            w.phase = Some("steady".into());
            w.latency.p99_ms = Some(48.0 * slowdown * offset * (1.0 + 0.10 * ar));
            w.throughput_rps = 150.0 * (1.0 + 0.05 * rng.normal());
            w
        })
        .collect();
    m.phases = vec![
        report::Span {
            name: "warmup".into(),
            start_s: 0.0,
            end_s: 1.0,
        },
        report::Span {
            name: "measured".into(),
            start_s: 1.0,
            end_s: 1.0 + windows as f64,
        },
    ];
    let p99: Vec<f64> = m.windows.iter().filter_map(|w| w.latency.p99_ms).collect();
    let thr: Vec<f64> = m.windows.iter().map(|w| w.throughput_rps).collect();
    let p99 = median(&p99).expect("windows") * 1.05;
    let thr = thr.iter().sum::<f64>() / thr.len() as f64;
    let template = m
        .summaries
        .iter()
        .find(|s| s.phase == "steady")
        .expect("steady summary")
        .clone();
    m.summaries = ["measured", "steady"]
        .iter()
        .map(|phase| {
            let mut s = template.clone();
            s.phase = (*phase).into();
            s.availability = Some(1.0);
            s.throughput_rps = thr;
            s.latency.p50_ms = Some(p99 * 0.5 * (1.0 + 0.02 * rng.normal()));
            s.latency.p99_ms = Some(p99);
            s.latency.p999_ms = Some(p99 * 1.3 * (1.0 + 0.05 * rng.normal()));
            s.service.p99_ms = Some(p99 * 0.9);
            s
        })
        .collect();
    m.recoveries[0].recovery_s = Some(0.7 * slowdown * (1.0 + 0.05 * rng.normal()));
    Run::from_metrics(format!("synthetic/{seed}/{run}"), m)
}

fn runs(seed: u64, first: u64, n: u64, slowdown: f64, windows: usize) -> Vec<Run> {
    (first..first + n)
        .map(|r| synthetic(seed, r, slowdown, windows))
        .collect()
}

fn opts(seed: u64) -> Options {
    Options {
        seed,
        resamples: 1000,
        ..Options::default()
    }
}

fn figure<'a>(c: &'a compare::Comparison, name: &str) -> &'a compare::FigureComparison {
    c.figures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no figure {name}"))
}

#[test]
fn figures_are_extracted_from_a_real_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), FIXTURE);
    let run = load_run(dir.path()).expect("the fixture loads");
    let names: Vec<&str> = run.figures.iter().map(|f| f.name.as_str()).collect();
    // Warm-up and the empty `recovering` phase are not judged; host load is not a figure.
    assert!(!names
        .iter()
        .any(|n| n.starts_with("warmup") || n.starts_with("recovering")));
    assert!(
        !names.iter().any(|n| n.contains("host_cpu_busy")),
        "{names:?}"
    );
    let measured = run
        .figure("measured throughput_rps")
        .expect("measured throughput");
    assert_eq!(measured.direction, Direction::HigherIsBetter);
    assert_eq!(measured.value, 139.375);
    assert_eq!(
        measured.samples.len(),
        8,
        "windows inside the measured span"
    );
    let steady = run.figure("steady latency p99_ms").expect("steady p99");
    assert_eq!(steady.direction, Direction::LowerIsBetter);
    assert_eq!(steady.value, 48.703);
    assert_eq!(
        steady.samples,
        vec![50.591, 48.703, 52.927, 42.399, 46.367, 47.935]
    );
    assert_eq!(
        run.figure("faulted latency p99_ms")
            .expect("faulted")
            .samples
            .len(),
        2
    );
    assert!(run.figure("steady availability").is_some());
    // Under 1000 requests the p99.9 is their maximum: not judged.
    let steady_count = m_steady_count(dir.path());
    assert!((100..1000).contains(&steady_count), "{steady_count}");
    assert!(run.figure("steady latency p999_ms").is_none());
    assert!(run.figure("steady service p99_ms").is_some());
    assert!(
        run.figure("steady ttft p99_ms").is_none(),
        "no streaming in this run"
    );
    let rec = run.figure("recovery crash recovery_s").expect("recovery");
    assert_eq!((rec.value, rec.unit.as_str()), (0.702055, "s"));
    assert!(run.figure("recovery crash latency_recovery_s").is_some());
    let rss = run.figure("figure server_0_peak_rss_mib").expect("rss");
    assert_eq!(rss.direction, Direction::LowerIsBetter);
    let (busy, load) = compare::extract::host_load(&run.metrics);
    assert_eq!(busy, Some(0.994216));
    assert!(load.is_some_and(|l| l > 0.0));
}

#[test]
fn a_missing_metrics_json_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load_run(&dir.path().join("nope")).expect_err("no file");
    assert!(matches!(err, CompareError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("nope/metrics.json"), "{err}");
}

#[test]
fn a_file_that_is_not_json_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), "<html>not json</html>");
    let err = load_run(dir.path()).expect_err("not json");
    assert!(matches!(err, CompareError::Malformed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("metrics.json: not a faultline metrics.json"),
        "{err}"
    );
}

#[test]
fn another_schema_version_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(
        dir.path(),
        &FIXTURE.replacen("\"schema_version\": 1", "\"schema_version\": 2", 1),
    );
    let err = load_run(dir.path()).expect_err("schema 2");
    assert!(
        matches!(
            err,
            CompareError::Schema {
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn json_of_the_wrong_shape_names_the_missing_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_run(dir.path(), r#"{"schema_version": 1}"#);
    let err = load_run(dir.path()).expect_err("wrong shape");
    assert!(matches!(err, CompareError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("missing field `run`"), "{err}");
}

#[cfg(unix)]
#[test]
fn history_is_every_run_folder_oldest_first_without_links_or_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let later = FIXTURE.replace("2026-12-03T10:09:41Z", "2026-12-04T03:00:00Z");
    let later = later.replace("20261203T100941158Z-s11", "z-later");
    // Folder names sort the other way round from start times.
    write_run(&dir.path().join("a-later"), &later);
    write_run(&dir.path().join("b-earlier"), FIXTURE);
    write_run(&dir.path().join("series-2026"), FIXTURE);
    std::fs::create_dir(dir.path().join("crashed")).expect("mkdir");
    std::fs::write(dir.path().join("README"), "x").expect("write");
    std::os::unix::fs::symlink(dir.path().join("a-later"), dir.path().join("latest"))
        .expect("symlink");
    let h = load_history(dir.path()).expect("history");
    let ids: Vec<&str> = h
        .runs
        .iter()
        .map(|r| r.metrics.run.run_id.as_str())
        .collect();
    assert_eq!(ids, vec!["20261203T100941158Z-s11", "z-later"]);
    assert_eq!(h.skipped.len(), 1);
    assert!(h.skipped[0].dir.ends_with("crashed"));
    assert!(
        h.skipped[0].reason.contains("no such file"),
        "{}",
        h.skipped[0].reason
    );
}

#[test]
fn a_a_comparisons_rarely_find_a_regression() {
    // One 2-minute night against one (pooled windows) and five 1-minute nights against five
    // (per-run values), each over 100 seeds: no figure Worse in at least 95 of them.
    for (n, windows) in [(1, 120), (5, 60)] {
        let flagged: Vec<u64> = (0..100u64)
            .filter(|&seed| {
                let c = compare(
                    &runs(seed, 0, n, 1.0, windows),
                    &runs(seed, 10, n, 1.0, windows),
                    &opts(seed),
                )
                .expect("valid");
                exit_code(&c) != 0
            })
            .collect();
        assert!(flagged.len() <= 5, "{n} vs {n}: Worse in seeds {flagged:?}");
    }
}

#[test]
fn a_ten_percent_slowdown_is_caught() {
    // Five 1-minute nights against five: caught in at least 19 of 20 seeds (with 30 s
    // nights about 15 of 20: a night's p99 then varies ±4 %). One night against one
    // sees only the windows' noise, not the night-to-night noise: with 120 windows a night
    // at least 16 of 20 (with 30 windows, about 6 of 20: too little data to tell 10 %
    // from noise, and the verdict says NoChange, never Worse, then).
    for (n, windows, may_miss) in [(5, 60, 1), (1, 120, 4)] {
        let missed: Vec<u64> = (0..20u64)
            .filter(|&seed| {
                let c = compare(
                    &runs(seed, 0, n, 1.0, windows),
                    &runs(seed, 10, n, 1.10, windows),
                    &opts(seed),
                )
                .expect("valid");
                figure(&c, "steady latency p99_ms").verdict != Verdict::Worse
            })
            .collect();
        assert!(
            missed.len() <= may_miss,
            "{n} vs {n}: slowdown missed in seeds {missed:?}"
        );
    }
    let c = compare(&runs(1, 0, 5, 1.0, 30), &runs(1, 10, 5, 1.10, 30), &opts(1)).expect("valid");
    let f = figure(&c, "steady latency p99_ms");
    assert!(matches!(f.method, Some(Method::Runs { .. })), "{f:?}");
    assert!(f.change.is_some_and(|x| (0.05..0.15).contains(&x)), "{f:?}");
    assert_eq!(exit_code(&c), 1);
    let c = compare(&runs(1, 0, 1, 1.0, 30), &runs(1, 10, 1, 1.10, 30), &opts(1)).expect("valid");
    let f = figure(&c, "steady latency p99_ms");
    // ⌈30^(1/3)⌉ = 4 windows a block.
    assert_eq!(
        f.method,
        Some(Method::Windows {
            block_lengths: vec![4, 4]
        })
    );
}

/// Runs whose recovery times are `values`, nothing else changed.
fn recoveries(values: &[f64]) -> Vec<Run> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let mut m = fixture();
            m.run.run_id = format!("r{i}-{v}");
            m.recoveries[0].recovery_s = Some(v);
            Run::from_metrics("x", m)
        })
        .collect()
}

#[test]
fn four_runs_against_four_use_the_exact_u_test() {
    let c = compare(
        &recoveries(&[1.0, 1.1, 1.2, 1.3]),
        &recoveries(&[2.0, 2.1, 2.2, 2.3]),
        &opts(0),
    )
    .expect("valid");
    let f = figure(&c, "recovery crash recovery_s");
    assert_eq!(f.verdict, Verdict::Worse);
    assert_eq!(
        f.method,
        Some(Method::Runs {
            u_test: compare::stats::UMethod::Exact
        })
    );
    assert!((f.p_value.expect("p") - 2.0 / 70.0).abs() < 1e-12);
    assert!((f.change.expect("change") - 1.0 / 1.15).abs() < 1e-12);
    let (lo, _) = f.ci.expect("ci");
    assert!(lo > 0.0);
    // The figures equal on both sides: no change, p 1.
    let rss = figure(&c, "figure server_0_peak_rss_mib");
    assert_eq!(rss.verdict, Verdict::NoChange);
    assert_eq!(rss.p_value, Some(1.0));
}

#[test]
fn a_faster_recovery_is_better_not_worse() {
    let c = compare(
        &recoveries(&[2.0, 2.1, 2.2, 2.3]),
        &recoveries(&[1.0, 1.1, 1.2, 1.3]),
        &opts(0),
    )
    .expect("valid");
    assert_eq!(
        figure(&c, "recovery crash recovery_s").verdict,
        Verdict::Better
    );
    assert_eq!(exit_code(&c), 0);
}

#[test]
fn a_change_under_the_floor_is_no_change_even_when_significant() {
    let c = compare(
        &recoveries(&[1.00, 1.001, 1.002, 1.003]),
        &recoveries(&[1.04, 1.041, 1.042, 1.043]),
        &opts(0),
    )
    .expect("valid");
    let f = figure(&c, "recovery crash recovery_s");
    assert!(f.p_value.expect("p") < 0.05);
    assert_eq!(f.verdict, Verdict::NoChange);
}

fn reason(f: &compare::FigureComparison) -> &str {
    match &f.verdict {
        Verdict::NotComparable { reason } => reason,
        v => panic!("{} is {v:?}", f.name),
    }
}

#[test]
fn too_few_runs_are_not_comparable_with_the_reason() {
    let c = compare(&recoveries(&[1.0]), &recoveries(&[5.0]), &opts(0)).expect("valid");
    let f = figure(&c, "recovery crash recovery_s");
    assert!(reason(f).starts_with("one sample per side"), "{f:?}");
    let c = compare(
        &recoveries(&[1.0, 1.1, 1.2]),
        &recoveries(&[2.0, 2.1, 2.2]),
        &opts(0),
    )
    .expect("valid");
    let f = figure(&c, "recovery crash recovery_s");
    assert!(
        reason(f).contains("smallest attainable p is 0.100"),
        "{f:?}"
    );
    // The fixture's faulted phase has 2 windows a run: 3 runs pool 6 a side, enough.
    let f = figure(&c, "faulted latency p99_ms");
    assert!(matches!(f.method, Some(Method::Windows { .. })), "{f:?}");
    let c = compare(&recoveries(&[1.0]), &recoveries(&[2.0]), &opts(0)).expect("valid");
    let f = figure(&c, "faulted latency p99_ms");
    assert!(reason(f).starts_with("2 windows against 2"), "{f:?}");
}

#[test]
fn a_figure_missing_on_one_side_or_without_direction_is_not_comparable() {
    let base = recoveries(&[1.0]);
    let mut cand = recoveries(&[1.0]);
    cand[0].metrics.recoveries.clear();
    cand[0].metrics.figures.push(report::Figure {
        name: "loss_last".into(),
        value: 0.3,
        unit: "nats".into(),
        definition: String::new(),
    });
    let cand = vec![Run::from_metrics("x", cand.remove(0).metrics)];
    let c = compare(&base, &cand, &opts(0)).expect("valid");
    let f = figure(&c, "recovery crash recovery_s");
    assert_eq!(
        reason(f),
        "missing in the candidate (none of its 1 runs has it)"
    );
    assert!(f.candidate.is_none());
    let f = figure(&c, "figure loss_last");
    assert!(reason(f).starts_with("missing in the baseline"), "{f:?}");
    let c = compare(&cand, &cand, &opts(0)).expect("valid");
    assert!(reason(figure(&c, "figure loss_last")).starts_with("unknown direction"));
}

#[test]
fn a_zero_baseline_is_not_comparable() {
    // The fixture's latency recovery is 0 s.
    let c = compare(&recoveries(&[1.0; 4]), &recoveries(&[1.0; 4]), &opts(0)).expect("valid");
    let f = figure(&c, "recovery crash latency_recovery_s");
    assert!(reason(f).contains("baseline median is 0"), "{f:?}");
}

#[test]
fn runs_of_another_seed_or_host_are_listed_as_incompatible() {
    let base = recoveries(&[1.0, 1.0]);
    let mut other = fixture();
    other.run.run_id = "other".into();
    other.run.seed = 12;
    other.run.host.cpus = 64;
    let c = compare(&base, &[Run::from_metrics("x", other)], &opts(0)).expect("valid");
    let fields: Vec<(&str, &str, &str)> = c
        .compatibility
        .iter()
        .map(|i| (i.field.as_str(), i.expected.as_str(), i.found.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![("run.seed", "11", "12"), ("run.host.cpus", "2", "64")]
    );
    assert!(c.compatibility.iter().all(|i| i.run_id == "other"));
    assert!(text(&c).contains("INCOMPATIBLE: run other run.seed = 12"));
}

#[test]
fn invalid_options_and_empty_sides_are_refused() {
    let bad = Options {
        alpha: 0.9,
        ..Options::default()
    };
    let err = compare(&[], &recoveries(&[1.0]), &bad).expect_err("invalid");
    let CompareError::Options(p) = err else {
        panic!("{err}")
    };
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn the_same_seed_gives_the_same_comparison() {
    let (b, c) = (runs(3, 0, 1, 1.0, 20), runs(3, 10, 1, 1.05, 20));
    let one = compare(&b, &c, &opts(9)).expect("valid");
    let two = compare(&b, &c, &opts(9)).expect("valid");
    assert_eq!(one, two);
    // serde_json may round the last bit of a float, so compare the verdicts.
    let json = serde_json::to_string(&one).expect("serialises");
    let back: compare::Comparison = serde_json::from_str(&json).expect("deserialises");
    let verdicts = |c: &compare::Comparison| -> Vec<(String, Verdict)> {
        c.figures
            .iter()
            .map(|f| (f.name.clone(), f.verdict.clone()))
            .collect()
    };
    assert_eq!(verdicts(&back), verdicts(&one));
}

#[test]
fn outputs_name_every_figure_and_mark_the_verdicts() {
    // A 50 % slowdown: worse, and a change point between the sides in the history.
    let base = runs(1, 0, 5, 1.0, 30);
    let cand = runs(1, 10, 5, 1.5, 30);
    let c = compare(&base, &cand, &opts(1)).expect("valid");
    let t = text(&c);
    for f in &c.figures {
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with(&format!("{} ", f.name)))
                .count(),
            1,
            "{}",
            f.name
        );
    }
    assert!(t.contains("WORSE"), "{t}");
    assert!(t.contains("host CPUs busy 99%"), "{t}");
    let x = junit_xml(&c);
    assert_eq!(x.matches("<testcase").count(), c.figures.len());
    assert!(x.contains("<failure") && x.contains("<skipped"), "{x}");
    let mut history = base.clone();
    history.extend(cand.iter().cloned());
    let h = html(&c, Some(&history));
    assert!(h.contains("figure(s) worse"));
    assert!(
        !h.contains("http://") && !h.contains("https://"),
        "no external URLs"
    );
    let judged = c
        .figures
        .iter()
        .filter(|f| f.direction != Direction::Unknown)
        .count();
    assert_eq!(h.matches("<svg").count(), judged);
    assert!(
        h.contains("change at run 6"),
        "the step between the sides is marked"
    );
    let without = html(&c, None);
    assert_eq!(without.matches("<svg").count(), judged);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

    /// The same runs on both sides: every judged figure has change 0 and no verdict but
    /// NoChange or NotComparable, whatever the runs and the seed.
    #[test]
    fn runs_compared_with_themselves_never_change(seed in 0u64..1000, n in 1u64..6, windows in 5usize..40) {
        let r = runs(seed, 0, n, 1.0, windows);
        let c = compare(&r, &r, &Options { resamples: 200, seed, ..Options::default() }).expect("valid");
        for f in &c.figures {
            proptest::prop_assert!(
                matches!(f.verdict, Verdict::NoChange | Verdict::NotComparable { .. }),
                "{f:?}"
            );
            if let Some(change) = f.change {
                proptest::prop_assert_eq!(change, 0.0);
            }
        }
        proptest::prop_assert_eq!(exit_code(&c), 0);
    }
}

/// The steady phase's latency sample count in the fixture run at `dir`.
fn m_steady_count(dir: &std::path::Path) -> u64 {
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json"),
    )
    .expect("JSON");
    m["summaries"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["phase"] == "steady"))
        .and_then(|s| s["latency"]["count"].as_u64())
        .expect("a steady latency count")
}
