//! The Grafana dashboard `docs/grafana/faultline.json` charts only metrics the stack
//! exports: every metric named in a panel's PromQL (and in the `model` variable's query) is
//! on the `/metrics` of a real `server` or a real `trainer worker`. A renamed or misspelled
//! metric fails the test naming the panel and the metric.
//!
//! The pure parts (metric names in PromQL, names a scrape exports, a dashboard's queries)
//! are unit-tested here too; the stack binaries come from `cargo build --workspace`.

mod common;

use common::{drain, first_line, Reaped};

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// PromQL words that are not metric names when they are not followed by `(`: aggregation
/// operators (`sum by (le) (…)`), binary and set operators, modifiers, literals.
const KEYWORDS: [&str; 28] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal opening at `i` (`"…"`, `'…'` with `\` escapes, or a
/// raw `` `…` ``).
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        j += if s[j] == '\\' && quote != '`' { 2 } else { 1 };
    }
    j + 1
}

/// Index just past the group opening at `i` (`{…}`, `[…]`, `(…)`), nesting and strings
/// included.
fn skip_group(s: &[char], i: usize) -> usize {
    let (open, close) = (
        s[i],
        match s[i] {
            '{' => '}',
            '[' => ']',
            _ => ')',
        },
    );
    let (mut depth, mut j) = (0usize, i);
    while j < s.len() {
        match s[j] {
            '"' | '\'' | '`' => {
                j = skip_string(s, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The metric names a PromQL expression selects, in order of first appearance: what is left
/// after functions (a name before `(`), aggregation and binary keywords, label lists of
/// `by`/`without`/`on`/`ignoring`/`group_*`, label matchers `{…}`, range and subquery
/// selectors `[…]`, strings, numbers and durations, and Grafana variables (`$x`, `${x}`).
/// Histogram series keep their suffix (`…_bucket`); [`exported_names`] knows them.
fn metric_names(expr: &str) -> Vec<String> {
    let s: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&s, i);
        } else if matches!(c, '{' | '[') {
            i = skip_group(&s, i);
        } else if c == '$' {
            i += 1;
            if s.get(i) == Some(&'{') {
                i = skip_group(&s, i);
            } else {
                while i < s.len() && ident(s[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // 0.99, 1e3, 5m, 1h30m, 0x1f
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < s.len() && ident(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let mut next = i;
            while next < s.len() && s[next].is_whitespace() {
                next += 1;
            }
            let before_paren = s.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if before_paren && LABEL_LISTS.contains(&lower.as_str()) {
                i = skip_group(&s, next);
            } else if !before_paren && !KEYWORDS.contains(&lower.as_str()) && !names.contains(&word)
            {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every series name a text exposition (0.0.4 or OpenMetrics) can carry: each `# TYPE`
/// family, a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count` (a summary's
/// `_sum` and `_count`), and every sample's name. Families without samples yet count: they
/// are registered, and Prometheus will have series for them once they move.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            names.insert(name.to_string());
            let suffixes: &[&str] = match kind {
                "counter" if !name.ends_with("_total") => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every query of a dashboard as (where, PromQL): each target `expr` of each panel (rows'
/// nested panels included) as `panel "TITLE"`, and each query variable's series selector
/// (the first argument of `label_values(…, label)`, or `query_result(…)`) as
/// `variable "NAME"`.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or("")
            .trim();
        let selector = if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            // label_values(selector, label) or label_values(label): only the first has one.
            inner.rsplit_once(',').map(|(sel, _)| sel.to_string())
        } else {
            query
                .strip_prefix("query_result(")
                .and_then(|q| q.strip_suffix(')'))
                .map(str::to_string)
        };
        if let Some(sel) = selector {
            let name = v["name"].as_str().unwrap_or("(unnamed)");
            out.push((format!("variable {name:?}"), sel));
        }
    }
    out
}

/// One line per metric a dashboard query names that is not in `exported`.
fn unexported(dashboard: &Value, exported: &BTreeSet<String>) -> Vec<String> {
    dashboard_queries(dashboard)
        .into_iter()
        .flat_map(|(place, expr)| {
            metric_names(&expr)
                .into_iter()
                .filter(|m| !exported.contains(m))
                .map(move |m| {
                    format!("{place}: `{m}` is exported by neither the server nor the trainer (in `{expr}`)")
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn metric_names_leave_out_functions_keywords_matchers_ranges_strings_and_variables() {
    let cases: [(&str, &[&str]); 9] = [
        (
            r#"histogram_quantile(0.99, sum by (le, model) (rate(faultline_e2e_request_latency_seconds_bucket{model=~"$model"}[$__rate_interval])))"#,
            &["faultline_e2e_request_latency_seconds_bucket"],
        ),
        (
            "sum by (phase) (rate(a_sum[5m])) / sum by (phase) (rate(a_count[5m]))",
            &["a_sum", "a_count"],
        ),
        ("max(x) / max(y) > bool 0.5", &["x", "y"]),
        ("sum without (instance) (x offset 1h30m)", &["x"]),
        (
            "a * on(job) group_left(kind) b unless ignoring (le) c",
            &["a", "b", "c"],
        ),
        (
            r#"label_replace(up{job="by"}, "dst", "$1", "src", "(sum|rate)")"#,
            &["up"],
        ),
        (
            "SUM BY (x) (rate(requests_total[${__range}]))",
            &["requests_total"],
        ),
        ("max_over_time(x[10m:1m]) @ start() + 1e-3", &["x"]),
        (
            "topk(3, ns:series:rate5m) or vector(0)",
            &["ns:series:rate5m"],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(metric_names(expr), want, "{expr}");
    }
}

#[test]
fn a_histogram_family_exports_its_bucket_sum_and_count_series_even_before_samples() {
    let text = "# HELP h_seconds H.\n# TYPE h_seconds histogram\n\
                # TYPE g gauge\ng{kind=\"a\"} 0\n\
                # TYPE c counter\nc_total 1\n\
                # TYPE om_style counter\n";
    let names = exported_names(text);
    for name in [
        "h_seconds_bucket",
        "h_seconds_sum",
        "h_seconds_count",
        "g",
        "c_total",
        "om_style_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    assert!(!names.contains("g_bucket"), "a gauge has no buckets");
}

#[test]
fn a_misspelled_metric_is_reported_with_its_panel() {
    let exported = exported_names(
        "# TYPE faultline_requests_total counter\n# TYPE faultline_num_requests_waiting gauge\n",
    );
    let dashboard = serde_json::json!({
        "panels": [
            {"type": "row", "title": "Server", "panels": [
                {"title": "Nested", "targets": [{"expr": "sum(faultline_requests_total)"}]}
            ]},
            {"title": "Request rate", "targets": [
                {"expr": "sum by (status) (rate(faultline_requests_totl{model=~\"$model\"}[5m]))"}
            ]}
        ],
        "templating": {"list": [
            {"name": "model", "type": "query",
             "query": {"query": "label_values(faultline_num_requests_waitin, model)"}},
            {"name": "datasource", "type": "datasource", "query": "prometheus"}
        ]}
    });
    let problems = unexported(&dashboard, &exported);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("panel \"Request rate\": `faultline_requests_totl`"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("variable \"model\": `faultline_num_requests_waitin`"),
        "{}",
        problems[1]
    );
}

fn scrape(client: &reqwest::blocking::Client, addr: &str) -> String {
    client
        .get(format!("http://{addr}/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("scraping {addr}/metrics: {e}"))
}

/// The dashboard, relative to the repository root.
const DASHBOARD: &str = "docs/grafana/faultline.json";

fn dashboard() -> Value {
    let path = common::repo_root().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus); run with `cargo test -p faultline --test dashboard -- --ignored`"]
fn every_dashboard_query_parses_as_promql() {
    // promtool parses rule expressions; Grafana's variables become what Grafana substitutes.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    let queries = dashboard_queries(&dashboard());
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$model", ".*");
        let quoted = serde_json::to_string(&expr).expect("a string");
        rules.push_str(&format!(
            "  - record: dashboard:query{i}\n    expr: {quoted}\n"
        ));
    }
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool on PATH (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}\nqueries: {queries:#?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_metric_the_dashboard_charts_is_exported_by_a_real_server_or_trainer() {
    let dashboard = dashboard();

    // Importable: a Prometheus datasource variable every query uses, and the model variable.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("datasource").expect("a `datasource` variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    assert!(var("model").is_some(), "a `model` variable for the server");
    let queries = dashboard_queries(&dashboard);
    assert!(
        queries.len() >= 20,
        "the dashboard has its panels: {queries:?}"
    );
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
        }
    }

    let bin = common::bin_dir();
    assert!(
        bin.join("trainer").is_file(),
        "stack binary {} missing: run `cargo build --workspace` first",
        bin.join("trainer").display()
    );
    let (_server, mut server_out) =
        Reaped::spawn(Command::new(bin.join("server")).args(["--listen", "127.0.0.1:0"]));
    let server_addr = first_line(&mut server_out, "the server listened", |l| {
        l.strip_prefix("listening on ").map(str::to_owned)
    });
    drain(server_out);

    let dir = tempfile::tempdir().expect("temp dir");
    let rendezvous = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let (_coordinator, coordinator_out) = Reaped::spawn(Command::new(bin.join("trainer")).args([
        "rendezvous",
        "--listen",
        &rendezvous,
        "--max-workers",
        "1",
    ]));
    drain(coordinator_out);
    let (_worker, mut worker_out) = Reaped::spawn(
        Command::new(bin.join("trainer"))
            .args(["worker", "--rendezvous", &rendezvous, "--run-dir"])
            .arg(dir.path())
            .args([
                "--mlp-hidden",
                "64",
                "--steps",
                "1000000",
                "--checkpoint-every",
                "10",
            ]),
    );
    let control = first_line(&mut worker_out, "the worker started", |l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["event"] == "start").then(|| v["control"].as_str().map(str::to_owned))?
    });
    drain(worker_out);

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut exported = exported_names(&scrape(&client, &server_addr));
    let trainer = scrape(&client, &control);
    assert!(
        trainer.contains("# TYPE faultline_trainer_step_seconds histogram"),
        "the worker serves its metrics:\n{trainer}"
    );
    exported.extend(exported_names(&trainer));

    let problems = unexported(&dashboard, &exported);
    assert!(
        problems.is_empty(),
        "{DASHBOARD} names metrics no process exports:\n{}",
        problems.join("\n")
    );
}
