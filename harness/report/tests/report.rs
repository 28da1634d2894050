//! The report of a realistic run and of an empty one: files, plots, page, JUnit, summaries.
//! The terminal summary is snapshotted (`tests/snapshots/`); regenerate after an intended
//! change with `INSTA_UPDATE=always cargo test -p report` (or `cargo insta review`).

mod fixture;

use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Parses `xml` to the end, failing the test on the first XML error.
fn assert_well_formed(name: &str, xml: &str) {
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e) | Event::Empty(e)) => {
                for attribute in e.attributes().with_checks(true) {
                    if let Err(err) = attribute {
                        panic!("{name}: bad attribute: {err}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => panic!(
                "{name} is not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            ),
        }
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn write_run_writes_every_file_and_metrics_round_trip() {
    let metrics = fixture::run_metrics();
    let dir = tempfile::tempdir().expect("temp dir");
    let written = report::write_run(dir.path(), &metrics).expect("report written");
    let names: Vec<String> = written
        .files
        .iter()
        .map(|p| p.file_name().expect("file").to_string_lossy().into_owned())
        .collect();
    for expected in [
        "metrics.json",
        "latency.svg",
        "throughput.svg",
        "distribution.svg",
        "streaming.svg",
        "search.svg",
        "queue_depth.svg",
        "junit.xml",
        "index.html",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
        assert!(
            dir.path().join(expected).is_file(),
            "{expected} not on disk"
        );
    }
    assert_eq!(written.index, dir.path().join("index.html"));
    let back: report::RunMetrics =
        serde_json::from_str(&read(dir.path(), "metrics.json")).expect("metrics.json parses");
    // Floats may differ in the last bit after a JSON round trip; compare the rest exactly.
    assert_eq!(back.run, metrics.run);
    assert_eq!(back.slos, metrics.slos);
    assert_eq!(back.accounting, metrics.accounting);
    assert_eq!(back.windows.len(), metrics.windows.len());
    for (b, m) in back.distribution.iter().zip(&metrics.distribution) {
        assert!((b.percentile - m.percentile).abs() < 1e-9);
    }
}

/// `REPORT_FIXTURE_OUT=/tmp/report cargo test -p report --test report -- --ignored`
/// writes the fixture's report there (and the empty run's into `empty/`), to look at the page
/// and plots.
#[test]
#[ignore = "writes the fixture report to $REPORT_FIXTURE_OUT for a person to look at"]
fn write_fixture_report_for_review() {
    let dir = std::path::PathBuf::from(
        std::env::var("REPORT_FIXTURE_OUT").expect("set REPORT_FIXTURE_OUT"),
    );
    std::fs::create_dir_all(&dir).expect("create output folder");
    report::write_run(&dir, &fixture::run_metrics()).expect("report written");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("create output folder");
    report::write_run(&empty, &fixture::empty_run_metrics()).expect("report written");
}

#[test]
fn svgs_are_well_formed_and_name_their_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &fixture::run_metrics()).expect("report written");
    let expectations: [(&str, &[&str]); 6] = [
        (
            "latency.svg",
            &[
                "corrected p50",
                "corrected p99",
                "corrected max",
                "service p99",
                "kill-server-0",
                "warm-up",
                "latency (ms, log scale)",
                "scenario time (s)",
            ],
        ),
        (
            "throughput.svg",
            &[
                "sent/s",
                "completed/s",
                "errors/s connect_refused",
                "timeouts/s",
                "goodput/s",
                "requests per second (1/s)",
            ],
        ),
        (
            "distribution.svg",
            &[
                "corrected",
                "service",
                "percentile (%, nines scale)",
                "99.9",
                "max",
            ],
        ),
        (
            "streaming.svg",
            &["TTFT p50", "TTFT p99", "ITL p50", "ITL p99"],
        ),
        (
            "search.svg",
            &[
                "batched (best 1200 /s)",
                "bound p99 ≤ 50 ms",
                "offered rate (requests/s)",
            ],
        ),
        (
            "queue_depth.svg",
            &[
                "Server queue depth",
                "server/1 queue",
                "queued requests",
                "kill-server-0",
            ],
        ),
    ];
    for (file, needles) in expectations {
        let svg = read(dir.path(), file);
        assert_well_formed(file, &svg);
        assert!(
            svg.contains("viewBox=\"0 0 960 440\""),
            "{file} has no viewBox"
        );
        for needle in needles {
            assert!(svg.contains(needle), "{file} lacks {needle:?}");
        }
    }
}

#[test]
fn html_has_verdicts_accounting_tables_and_no_external_urls() {
    let metrics = fixture::run_metrics();
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &metrics).expect("report written");
    let html = read(dir.path(), "index.html");
    for needle in [
        "<div class=\"banner fail\">FAIL — 2 of 3 SLOs passed",
        "availability (measured) ≥ 99.5 %",
        "97.5 %",
        "sent 4400 = ok 4300 + errors 92 [connect_refused 92] + timeouts 8 + dropped 0; balanced: yes",
        "20250101T120000Z-crash-recovery",
        "0123456789abcdef0123456789abcdef01234567",
        "seed</dt><dd>7",
        "corrected p99.9 (ms)",
        "TTFT p50 (ms)",
        "send lag p99 (ms)",
        "kill-server-0",
        "signal 9 (SIGKILL)",
        "<a href=\"logs/server-0.log\">",
        "1200 requests/s",
        "recovery_s_kill_server_0",
        "<a href=\"metrics.json\">",
        "<a href=\"events.jsonl\">",
        "viewBox=\"0 0 960 440\"",
        // Which replica took the failures.
        "Requests per replica",
        "<td>server/1</td><td>2200</td><td>2100</td><td><span class=\"bad\">100</span></td><td>connect_refused 92</td><td>8</td><td>0</td><td>100.0 %</td>",
        "<td>server/0</td><td>2200</td><td>2200</td><td>0</td><td>–</td><td>0</td><td>0</td><td>0.0 %</td>",
        // The region map and the per-link table.
        "<h2>Network</h2>",
        "<td>eu</td><td>server/1</td>",
        "<td>us → eu</td><td>80.0</td>",
        "<td>12</td><td>48000</td><td>96000</td>",
    ] {
        assert!(html.contains(needle), "index.html lacks {needle:?}");
    }
    // Escaped: the description holds markup characters.
    assert!(html.contains("p99 &lt;recovers&gt; &amp; availability"));
    assert!(!html.contains("<recovers>"));
    // Self-contained: no external stylesheets, scripts, images or links.
    for external in ["http://", "https://", "<script", "<link", "src="] {
        assert!(!html.contains(external), "index.html contains {external:?}");
    }
    // One inline SVG per plot.
    assert_eq!(html.matches("<svg ").count(), 6);
}

#[test]
fn html_marks_failures_and_unrecovered_faults() {
    let mut metrics = fixture::run_metrics();
    metrics.recoveries[0].recovery_s = None;
    metrics.searches[0].best_rate_per_s = None;
    metrics
        .failures
        .push("readiness timeout: server/1 <never> ready".into());
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &metrics).expect("report written");
    let html = read(dir.path(), "index.html");
    assert!(html.contains("not recovered"));
    assert!(html.contains("no rate passed"));
    assert!(html.contains("readiness timeout: server/1 &lt;never&gt; ready"));
    assert!(html.contains("1 run failure</div>"));
}

#[test]
fn junit_has_a_failing_case_for_the_failing_slo() {
    let mut metrics = fixture::run_metrics();
    metrics
        .failures
        .push("accounting did not balance in window 3".into());
    let xml = report::junit_xml(&metrics);
    assert_well_formed("junit.xml", &xml);
    assert!(
        xml.contains("<testsuite name=\"crash-recovery\" tests=\"5\""),
        "{xml}"
    );
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(xml.contains("errors=\"1\""), "{xml}");
    let failing = xml
        .split("<testcase ")
        .find(|case| case.contains("availability (measured)"))
        .expect("a test case for the availability SLO");
    assert!(
        failing.contains("<failure message=\"expected ≥ 99.5 %, observed 97.5 %\""),
        "{failing}"
    );
    let passing = xml
        .split("<testcase ")
        .find(|case| case.contains("slo[0]"))
        .expect("a test case for slo[0]");
    assert!(!passing.contains("<failure"), "{passing}");
    assert!(xml.contains("accounting: sent = ok + errors + timeouts + dropped"));
    assert!(xml.contains("run failure 1"));
}

#[test]
fn junit_fails_unbalanced_accounting() {
    let mut metrics = fixture::run_metrics();
    metrics.accounting.ok -= 1;
    metrics.accounting.balanced = false;
    let xml = report::junit_xml(&metrics);
    let case = xml
        .split("<testcase ")
        .find(|case| case.starts_with("name=\"accounting"))
        .expect("accounting case");
    assert!(case.contains("<failure"), "{case}");
    assert!(case.contains("balanced: NO"), "{case}");
}

#[test]
fn text_summary_reads_at_a_glance() {
    insta::assert_snapshot!(report::text_summary(&fixture::run_metrics()));
}

#[test]
fn summary_json_has_verdicts_and_key_figures() {
    let metrics = fixture::run_metrics();
    let v = report::summary_json(&metrics);
    assert_eq!(v["scenario"], "crash-recovery");
    assert_eq!(v["run_id"], "20250101T120000Z-crash-recovery");
    assert_eq!(v["pass"], false);
    assert_eq!(v["slos"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["slos"][1]["pass"], false);
    assert_eq!(v["measured"]["phase"], "measured");
    assert_eq!(v["measured"]["sent"], 4000);
    assert!(v["measured"]["latency_ms"]["p99"].is_f64());
    assert!(v["measured"]["ttft_ms"]["p50"].is_f64());
    assert_eq!(v["accounting"]["sent"], 4400);
    assert_eq!(v["accounting"]["balanced"], true);
    assert_eq!(v["searches"][0]["best_rate_per_s"], 1200.0);
    assert_eq!(v["recoveries"][0]["recovery_s"], 1.4);
}

#[test]
fn empty_run_renders_without_panic() {
    let metrics = fixture::empty_run_metrics();
    let dir = tempfile::tempdir().expect("temp dir");
    let written = report::write_run(dir.path(), &metrics).expect("report written");
    assert_eq!(written.files.len(), 6, "{:?}", written.files);
    for file in ["latency.svg", "throughput.svg", "distribution.svg"] {
        let svg = read(dir.path(), file);
        assert_well_formed(file, &svg);
        assert!(svg.contains("no data"), "{file} should say no data");
    }
    let html = read(dir.path(), "index.html");
    assert!(html.contains("No SLOs declared"));
    assert!(html.contains("banner pass"));
    assert!(
        !html.contains("Requests per replica"),
        "no rows, no section"
    );
    assert!(!html.contains("<h2>Network</h2>"), "no network, no section");
    assert_well_formed("junit.xml", &report::junit_xml(&metrics));
    let text = report::text_summary(&metrics);
    assert!(text.starts_with("PASS crash-recovery"), "{text}");
    assert_eq!(
        report::summary_json(&metrics)["measured"],
        serde_json::Value::Null
    );
}

#[test]
fn write_run_names_the_file_it_cannot_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-run");
    let err = report::write_run(&missing, &fixture::run_metrics()).expect_err("folder missing");
    assert!(
        err.to_string().contains("no-such-run/metrics.json"),
        "{err}"
    );
}

#[test]
fn chart_ids_become_safe_file_names() {
    assert_eq!(report::plots::chart_stem("step_time"), "step_time");
    assert_eq!(report::plots::chart_stem("../evil id"), "___evil_id");
    assert_eq!(report::plots::chart_stem("latency"), "chart-latency");
}

#[test]
fn a_training_run_shows_jobs_recovery_splits_and_step_accounting_without_load_plots() {
    use report::{Chart, Series, StepBreakdown, TrainingRecovery, TrainingResult};
    let mut m = fixture::empty_run_metrics();
    m.training.push(TrainingResult {
        variant: "killed".into(),
        workers: 3,
        steps_completed: 500,
        target_steps: Some(500),
        steps_recomputed: 6,
        steps_accounted: true,
        throughput_samples_per_s: Some(13_408.0),
        breakdown: StepBreakdown {
            steps: 480,
            step_s: Some(0.01),
            ..StepBreakdown::default()
        },
        recoveries: vec![TrainingRecovery {
            fault_id: "kill".into(),
            kind: "process.kill".into(),
            detection_s: Some(0.31),
            total_s: None,
            lost_steps: Some(6),
            ..TrainingRecovery::default()
        }],
        ..TrainingResult::default()
    });
    m.charts.push(Chart {
        id: "loss".into(),
        title: "Training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        time_axis: false,
        series: vec![Series {
            name: "3 workers".into(),
            points: vec![(0.0, 2.3), (1.0, 2.1)],
        }],
    });
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &m).expect("written");
    let html = read(dir.path(), "index.html");
    assert!(html.contains("Recovery timeline"), "recovery splits table");
    assert!(
        html.contains("not recovered"),
        "an unrecovered fault is marked"
    );
    assert!(
        html.contains("500 completed, 6 recomputed"),
        "step accounting line"
    );
    assert!(dir.path().join("loss.svg").is_file());
    assert!(
        !dir.path().join("latency.svg").exists(),
        "no empty load plots"
    );
    let text = report::text_summary(&m);
    assert!(text.contains("accounted: yes"), "{text}");
    assert!(
        !text.contains("sent 0"),
        "no request accounting for a training run: {text}"
    );
}

#[test]
fn a_passing_training_run_has_no_failing_junit_case() {
    let mut m = fixture::empty_run_metrics();
    m.training.push(report::TrainingResult {
        variant: "default".into(),
        workers: 2,
        steps_completed: 10,
        target_steps: Some(10),
        steps_accounted: true,
        ..report::TrainingResult::default()
    });
    let xml = report::junit_xml(&m);
    assert!(!xml.contains("<failure"), "{xml}");
    assert!(xml.contains("every step of training job default"), "{xml}");
    m.training[0].steps_accounted = false;
    assert!(
        report::junit_xml(&m).contains("<failure"),
        "a gap in the steps fails"
    );
}

#[test]
fn a_search_run_gets_its_search_plot_and_trial_table_but_no_empty_load_plots() {
    let mut m = fixture::empty_run_metrics();
    let full = fixture::run_metrics();
    m.searches = full.searches.clone();
    m.searches[0].best_rate_per_s = None;
    m.searches[0].not_found =
        Some("only the floor rate_min = 50 req/s passed: the result is at or below the floor; lower rate_min".into());
    let plots = report::plots::build(&m).expect("plots draw");
    let files: Vec<&str> = plots.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(files, ["search.svg"]);
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &m).expect("written");
    let html = read(dir.path(), "index.html");
    assert!(html.contains("No max throughput found: only the floor rate_min = 50 req/s passed"));
    assert!(
        html.contains("<th>drained (s)</th>"),
        "trial table shows drain waits"
    );
}

#[test]
fn a_headline_phase_with_over_1_percent_generator_drops_warns_in_text_and_json() {
    let mut metrics = fixture::run_metrics();
    let text = report::text_summary(&metrics);
    assert!(
        text.contains("  dropped by generator: 0 of 4000 sent (0 %)"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
    assert_eq!(
        report::summary_json(&metrics)["warnings"],
        serde_json::json!([])
    );
    let measured = metrics
        .summaries
        .iter_mut()
        .find(|s| s.phase == "measured")
        .expect("a measured phase");
    measured.counts.ok -= 100;
    measured.counts.dropped_by_generator += 100;
    let text = report::text_summary(&metrics);
    assert!(
        text.contains("  dropped by generator: 100 of 4000 sent (2.50 %)"),
        "{text}"
    );
    let warning = text
        .lines()
        .find(|l| l.trim_start().starts_with("WARNING: "))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(
        warning.contains("2.50 % of the measured phase's requests (100 of 4000) were dropped by the generator, above 1 %"),
        "{warning}"
    );
    let json = report::summary_json(&metrics);
    assert_eq!(json["measured"]["drop_share"], 0.025);
    assert!(json["measured"]["latency_all_ms"]["p99"].is_f64());
    assert_eq!(json["warnings"][0].as_str(), Some(warning.trim_start()));
}

/// The fixture's load as two clients in two regions: us with most of it, eu 80 ms away.
fn with_two_clients(mut m: report::RunMetrics) -> report::RunMetrics {
    let client = |name: &str, share: u64, p50_ms: f64| {
        let mut summaries = m.summaries.clone();
        for s in &mut summaries {
            s.counts.sent = s.counts.sent * share / 4;
            s.counts.ok = s.counts.ok * share / 4;
            s.latency.p50_ms = Some(p50_ms);
            s.latency.p99_ms = Some(p50_ms * 2.0);
        }
        report::ClientLoad {
            variant: None,
            name: name.into(),
            region: name.into(),
            rate_per_s: 50.0 * share as f64,
            start_offset_s: 0.002,
            accounting: report::Accounting {
                sent: m.accounting.sent * share / 4,
                ok: m.accounting.ok * share / 4,
                balanced: true,
                ..report::Accounting::default()
            },
            summaries,
            connections_added: share * 2,
        }
    };
    m.clients = vec![client("us", 3, 6.5), client("eu", 1, 87.25)];
    m
}

#[test]
fn clients_get_a_table_by_region_a_summary_line_each_and_a_metrics_section() {
    let metrics = with_two_clients(fixture::run_metrics());
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &metrics).expect("report written");
    let html = read(dir.path(), "index.html");
    for needle in [
        "<h2>Clients by region</h2>",
        "<th>client</th><th>region</th><th>offered/s</th><th>phase</th>",
        "<td>us</td><td>us</td><td>150</td><td>measured</td><td>3000</td>",
        "<td>eu</td><td>eu</td><td>50.0</td><td>measured</td><td>1000</td>",
        "<td>87.2</td>",
        "<th>TTFT p50 (ms)</th>",
    ] {
        assert!(html.contains(needle), "index.html lacks {needle:?}");
    }
    assert!(
        !html.contains("<td>warmup</td>"),
        "warm-up rows are in metrics.json only"
    );
    let back: serde_json::Value =
        serde_json::from_str(&read(dir.path(), "metrics.json")).expect("metrics.json parses");
    assert_eq!(back["clients"][1]["name"], "eu");
    assert_eq!(back["clients"][1]["summaries"][1]["phase"], "measured");
    let text = report::text_summary(&metrics);
    assert!(
        text.contains("client us (region us, 150/s): measured 3000 sent, availability"),
        "{text}"
    );
    assert!(text.contains("client eu (region eu, 50.0/s)"), "{text}");
    let json = report::summary_json(&metrics);
    assert_eq!(json["clients"][0]["sent"], 3000);
    assert_eq!(json["clients"][1]["latency_ms"]["p50"], 87.25);
}

#[test]
fn a_load_from_one_place_has_no_clients_section_anywhere() {
    let metrics = fixture::run_metrics();
    let dir = tempfile::tempdir().expect("temp dir");
    report::write_run(dir.path(), &metrics).expect("report written");
    let json: serde_json::Value =
        serde_json::from_str(&read(dir.path(), "metrics.json")).expect("metrics.json parses");
    assert!(
        json.get("clients").is_none(),
        "no key: existing reports keep their shape"
    );
    assert!(!read(dir.path(), "index.html").contains("Clients by region"));
    assert!(report::summary_json(&metrics).get("clients").is_none());
}

#[test]
fn the_workload_line_says_how_far_the_pool_could_grow_and_what_each_load_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut m = fixture::run_metrics();
    m.run.workload.connections = 1;
    let html = |m: &report::RunMetrics| {
        report::write_run(dir.path(), m).expect("writes");
        read(dir.path(), "index.html")
    };
    assert!(html(&m).contains("1 connection per replica</dd>"));
    assert!(report::summary_json(&m).get("connections").is_none());
    m.run.workload.max_connections = Some(40);
    m.run.workload.connections_added = Some(83);
    m.run.workload.connections_added_by_variant = [("one", 38), ("three", 39), ("calm", 6)]
        .into_iter()
        .map(|(v, n)| report::VariantCount {
            variant: v.into(),
            count: n,
        })
        .collect();
    assert!(
        html(&m).contains(
            "1 connection per replica, growing to at most 40 when every one is busy (83 added in all: one 38, three 39, calm 6)"
        ),
        "per variant"
    );
    let json = report::summary_json(&m);
    assert_eq!(json["connections"]["added"], 83);
    assert_eq!(json["connections"]["max_per_replica"], 40);
    assert!(report::text_summary(&m)
        .contains("connections: 1 per replica at the start, 83 added when all were busy (at most 40 per replica)"));
    let mut m = with_two_clients(m);
    m.run.workload.connections_added = Some(8);
    m.run.workload.connections_added_by_variant.clear();
    assert!(
        html(&m).contains(
            "1 connection per replica and client, growing to at most 40 when every one is busy (8 added in all: client us 6, client eu 2)"
        ),
        "per client"
    );
}

#[test]
fn a_staged_rate_shows_every_stage_on_the_workload_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut m = fixture::run_metrics();
    m.run.workload.stages = vec![
        report::StageInfo {
            duration_s: 10.0,
            target_per_s: 600.0,
        },
        report::StageInfo {
            duration_s: 5.0,
            target_per_s: 0.0,
        },
    ];
    report::write_run(dir.path(), &m).expect("writes");
    let html = read(dir.path(), "index.html");
    assert!(
        html.contains("200 requests/s, then to 600 over 10 s, then to 0 over 5 s)"),
        "the stages are on the workload line"
    );
}
