//! `index.html`: one self-contained page (inline CSS, inline SVG, no external assets).
//! Every text from the metrics goes through [`format::html`].

use crate::format::{self, html as esc, ms, num, percent};
use crate::model::{PhaseSummary, RunMetrics};
use crate::plots::Plot;
use std::fmt::Write as _;

/// A table cell: plain text (escaped here) or trusted markup built in this module.
enum Cell {
    Text(String),
    Html(String),
}

fn t(text: impl Into<String>) -> Cell {
    Cell::Text(text.into())
}

fn verdict(pass: bool) -> Cell {
    Cell::Html(if pass {
        "<span class=\"ok\">pass</span>".into()
    } else {
        "<span class=\"bad\">FAIL</span>".into()
    })
}

fn table(headers: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for h in headers {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell {
                Cell::Text(s) => out.push_str(&format!("<td>{}</td>", esc(&s))),
                Cell::Html(s) => out.push_str(&format!("<td>{s}</td>")),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn section(title: &str, body: &str) -> String {
    format!("<section>\n<h2>{}</h2>\n{body}</section>\n", esc(title))
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |s| format!("{} s", format::short(s)))
}

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.banner { font-size: 1.4em; font-weight: bold; padding: 0.5em 0.8em; border-radius: 6px; margin: 1em 0; }
.banner.pass { background: #e3f4e1; color: #1d6b22; border: 1px solid #9fd49a; }
.banner.fail { background: #fbe3e1; color: #a12119; border: 1px solid #eda29c; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1d6b22; font-weight: bold; } .bad { color: #a12119; font-weight: bold; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dl.facts dt { font-weight: bold; } dl.facts dd { margin: 0; }
code, .mono { font-family: ui-monospace, 'SF Mono', Menlo, monospace; font-size: 0.95em; }
figure { margin: 1.2em 0; } figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.accounting { font-family: ui-monospace, Menlo, monospace; padding: 0.5em; background: #f7f7f7; }
";

/// The whole page. `plots` are inlined in order; `links` are files in the run folder.
pub fn page(metrics: &RunMetrics, plots: &[Plot]) -> String {
    let run = &metrics.run;
    let pass = metrics.passed();
    let mut body = String::new();

    body.push_str(&format!("<h1>{}</h1>\n", esc(&run.scenario)));
    if !run.description.is_empty() {
        body.push_str(&format!("<p>{}</p>\n", esc(&run.description)));
    }
    let passed = metrics.slos.iter().filter(|s| s.pass).count();
    body.push_str(&format!(
        "<div class=\"banner {}\">{} — {passed} of {} SLOs passed, {} run failure{}</div>\n",
        if pass { "pass" } else { "fail" },
        if pass { "PASS" } else { "FAIL" },
        metrics.slos.len(),
        metrics.failures.len(),
        if metrics.failures.len() == 1 { "" } else { "s" },
    ));

    body.push_str(&section("Run", &facts(metrics)));
    body.push_str(&section("SLOs", &slos(metrics)));
    if !metrics.failures.is_empty() {
        let items: String = metrics
            .failures
            .iter()
            .map(|f| format!("<li class=\"bad\">{}</li>\n", esc(f)))
            .collect();
        body.push_str(&section("Run failures", &format!("<ul>\n{items}</ul>\n")));
    }
    let intro = if metrics.training.is_empty() {
        "Every request the generator scheduled is counted exactly once (metrics.md \"Accounting\")."
    } else {
        "Every step number from 0 to the last completed at least once; work redone after a restore and steps skipped by a finite check are counted."
    };
    let lines: String = format::accounting_checks(metrics)
        .iter()
        .map(|c| {
            format!(
                "<p class=\"accounting {}\">{}</p>\n",
                if c.balanced { "ok" } else { "bad" },
                esc(&c.line)
            )
        })
        .collect();
    body.push_str(&section(
        "Accounting",
        &format!("<p>{}</p>\n{lines}", esc(intro)),
    ));
    if !metrics.summaries.is_empty() {
        body.push_str(&section("Summary by phase", &summaries(&metrics.summaries)));
    }
    if !metrics.clients.is_empty() {
        body.push_str(&section("Clients by region", &clients(metrics)));
    }
    if metrics.replicas.len() > 1 {
        body.push_str(&section("Requests per replica", &replicas(metrics)));
    }
    if let Some(n) = &metrics.network {
        body.push_str(&section("Network", &network(n)));
    }
    if !metrics.recoveries.is_empty() {
        body.push_str(&section("Recoveries", &recoveries(metrics)));
    }
    if !metrics.faults.is_empty() {
        body.push_str(&section("Faults", &faults(metrics)));
    }
    if !metrics.processes.is_empty() {
        body.push_str(&section("Processes", &processes(metrics)));
    }
    if !metrics.searches.is_empty() {
        body.push_str(&section("Max-throughput search", &searches(metrics)));
    }
    if !metrics.training.is_empty() {
        body.push_str(&section("Training", &training(metrics)));
    }
    if !metrics.figures.is_empty() {
        body.push_str(&section("Figures", &figures(metrics)));
    }
    if !plots.is_empty() {
        let figs: String = plots
            .iter()
            .map(|p| {
                format!(
                    "<figure id=\"{}\">\n{}\n<figcaption>{} (<a href=\"{}\">{}</a>)</figcaption>\n</figure>\n",
                    esc(&p.file),
                    inline_svg(&p.svg),
                    esc(&p.title),
                    esc(&p.file),
                    esc(&p.file)
                )
            })
            .collect();
        body.push_str(&section("Plots", &figs));
    }
    body.push_str(&section(
        "Files",
        "<ul>\n<li><a href=\"metrics.json\">metrics.json</a>: every figure on this page, machine-readable</li>\n<li><a href=\"events.jsonl\">events.jsonl</a>: the run's event log (faults, process starts and exits, phases)</li>\n<li><a href=\"junit.xml\">junit.xml</a>: SLO verdicts as JUnit test cases</li>\n</ul>\n",
    ));

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} {} — faultline</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}<footer><p>faultline {} · schema {}</p></footer>\n</body>\n</html>\n",
        if pass { "PASS" } else { "FAIL" },
        esc(&run.scenario),
        esc(&run.faultline_version),
        metrics.schema_version,
    )
}

/// An SVG document as inline markup: no XML declaration, no namespace URL (HTML knows it).
fn inline_svg(svg: &str) -> String {
    let svg = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    };
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// The workload's connections: per replica (and per client), and with
/// `max_connections` how far the pools could grow and how many connections they added,
/// in all and per variant, client or search trial.
fn connections_text(metrics: &RunMetrics) -> String {
    let w = &metrics.run.workload;
    let each = if metrics.clients.is_empty() {
        " per replica"
    } else {
        " per replica and client"
    };
    let mut text = format!(
        "{}{each}",
        if w.connections == 1 {
            "1 connection".to_owned()
        } else {
            format!("{} connections", w.connections)
        }
    );
    let Some(max) = w.max_connections else {
        return text;
    };
    let added = w.connections_added.unwrap_or(0);
    let _ = write!(
        text,
        ", growing to at most {max} when every one is busy ({added} added"
    );
    let mut parts: Vec<String> = Vec::new();
    if !w.connections_added_by_variant.is_empty() {
        parts = w
            .connections_added_by_variant
            .iter()
            .map(|v| format!("{} {}", v.variant, v.count))
            .collect();
    } else if metrics.clients.len() > 1 {
        parts = metrics
            .clients
            .iter()
            .map(|c| format!("client {} {}", c.name, c.connections_added))
            .collect();
    } else if let [search] = metrics.searches.as_slice() {
        parts = search
            .trials
            .iter()
            .enumerate()
            .map(|(i, t)| format!("trial {} {}", i + 1, t.connections_added))
            .collect();
    }
    if parts.len() > 1 {
        let _ = write!(text, " in all: {}", parts.join(", "));
    }
    text.push(')');
    text
}

fn facts(metrics: &RunMetrics) -> String {
    let run = &metrics.run;
    let w = &run.workload;
    let mut rate = w
        .rate_per_s
        .map_or_else(String::new, |r| format!(", {} requests/s", num(r)));
    for st in &w.stages {
        let _ = write!(
            rate,
            ", then to {} over {} s",
            num(st.target_per_s),
            format::short(st.duration_s)
        );
    }
    let mut rows = vec![
        ("run id", run.run_id.clone()),
        ("scenario file", run.scenario_file.clone()),
        ("seed", run.seed.to_string()),
        ("git commit", run.git_commit.clone()),
        ("faultline", run.faultline_version.clone()),
        ("started", run.started_at.clone()),
        ("wall time", format!("{} s", format::short(run.wall_s))),
        (
            "host",
            format!("{} {}, {} CPUs", run.host.os, run.host.arch, run.host.cpus),
        ),
    ];
    if !run.extra_args.is_empty() {
        rows.push((
            "extra arguments",
            format!(
                "{} (added for this run: not the scenario as written)",
                run.extra_args.join(" ")
            ),
        ));
    }
    let training = w.mode == "training";
    let workload = if training {
        vec![
            (
                "workload",
                format!("training job on the replicas of {}", w.target),
            ),
            (
                "timeline",
                format!(
                    "warm-up {} s, then up to {} s for the job",
                    format::short(w.warmup_s),
                    format::short(w.duration_s)
                ),
            ),
        ]
    } else {
        vec![
            (
                "workload",
                format!(
                    "{} ({} arrivals{rate}) → {}, {}",
                    w.mode,
                    w.arrival,
                    w.target,
                    connections_text(metrics)
                ),
            ),
            (
                "timeline",
                format!(
                    "warm-up {} s, measured {} s, request timeout {} s",
                    format::short(w.warmup_s),
                    format::short(w.duration_s),
                    format::short(w.timeout_s)
                ),
            ),
        ]
    };
    let rows: Vec<(&str, String)> = rows.into_iter().chain(workload).collect();
    let items: String = rows
        .iter()
        .map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>\n", esc(k), esc(v)))
        .collect();
    format!("<dl class=\"facts\">\n{items}</dl>\n")
}

fn slos(metrics: &RunMetrics) -> String {
    if metrics.slos.is_empty() {
        return "<p>No SLOs declared; the run passes unless it fails on its own.</p>\n".into();
    }
    table(
        &["#", "SLO", "phase", "expected", "observed", "verdict"],
        metrics
            .slos
            .iter()
            .map(|s| {
                vec![
                    t(s.index.to_string()),
                    t(s.description.clone()),
                    t(s.phase.clone().unwrap_or_else(|| "–".into())),
                    t(s.expected.clone()),
                    t(s.observed.clone()),
                    verdict(s.pass),
                ]
            })
            .collect(),
    )
}

/// Metrics as rows, phases as columns.
fn summaries(summaries: &[PhaseSummary]) -> String {
    type Row = (&'static str, fn(&PhaseSummary) -> String);
    let mut rows: Vec<Row> = vec![
        ("window (s)", |s| {
            format!("{} – {}", format::short(s.start_s), format::short(s.end_s))
        }),
        ("sent", |s| s.counts.sent.to_string()),
        ("ok", |s| s.counts.ok.to_string()),
        ("errors + timeouts", |s| {
            (format::error_total(&s.counts) + s.counts.timeouts).to_string()
        }),
        ("availability (ok/sent)", |s| percent(s.availability)),
        ("throughput (completed/s)", |s| num(s.throughput_rps)),
        ("corrected p50 (ms)", |s| ms(s.latency.p50_ms)),
        ("corrected p90 (ms)", |s| ms(s.latency.p90_ms)),
        ("corrected p99 (ms)", |s| ms(s.latency.p99_ms)),
        ("corrected p99.9 (ms)", |s| ms(s.latency.p999_ms)),
        ("corrected max (ms)", |s| ms(s.latency.max_ms)),
        ("all requests p99 (ms)", |s| ms(s.latency_all.p99_ms)),
        ("all requests max (ms)", |s| ms(s.latency_all.max_ms)),
        ("dropped by generator", |s| {
            let share = (s.counts.sent > 0)
                .then(|| s.counts.dropped_by_generator as f64 / s.counts.sent as f64);
            match share {
                Some(x) if x > 0.01 => format!("{} (over 1 %: WARNING)", percent(Some(x))),
                x => percent(x),
            }
        }),
        ("service p50 (ms)", |s| ms(s.service.p50_ms)),
        ("service p90 (ms)", |s| ms(s.service.p90_ms)),
        ("service p99 (ms)", |s| ms(s.service.p99_ms)),
        ("service p99.9 (ms)", |s| ms(s.service.p999_ms)),
        ("service max (ms)", |s| ms(s.service.max_ms)),
        ("send lag p99 (ms)", |s| ms(s.send_lag.p99_ms)),
    ];
    if summaries.iter().any(|s| s.ttft.count > 0) {
        rows.extend::<[Row; 7]>([
            ("TTFT p50 (ms)", |s| ms(s.ttft.p50_ms)),
            ("TTFT p99 (ms)", |s| ms(s.ttft.p99_ms)),
            ("ITL p50 (ms)", |s| ms(s.itl.p50_ms)),
            ("ITL p99 (ms)", |s| ms(s.itl.p99_ms)),
            ("TPOT p50 (ms)", |s| ms(s.tpot.p50_ms)),
            ("TPOT p99 (ms)", |s| ms(s.tpot.p99_ms)),
            ("output tokens/s", |s| num(s.output_tokens_per_s)),
        ]);
    }
    let mut headers = vec!["figure"];
    headers.extend(summaries.iter().map(|s| s.phase.as_str()));
    table(
        &headers,
        rows.into_iter()
            .map(|(name, value)| {
                std::iter::once(t(name))
                    .chain(summaries.iter().map(|s| t(value(s))))
                    .collect()
            })
            .collect(),
    )
}

/// Each load client of `[[workload.clients]]`: one row per client and phase that had
/// requests (warm-up left out; every phase is in `metrics.json`).
fn clients(metrics: &RunMetrics) -> String {
    let streams = metrics
        .clients
        .iter()
        .flat_map(|c| &c.summaries)
        .any(|s| s.ttft.count > 0);
    let mut rows = Vec::new();
    for c in &metrics.clients {
        for s in c
            .summaries
            .iter()
            .filter(|s| s.phase != "warmup" && s.counts.sent > 0)
        {
            let failed = format::failed(&s.counts);
            let mut row = vec![
                t(match &c.variant {
                    Some(v) => format!("{} [{v}]", c.name),
                    None => c.name.clone(),
                }),
                t(c.region.clone()),
                t(num(c.rate_per_s)),
                t(s.phase.clone()),
                t(s.counts.sent.to_string()),
                t(s.counts.ok.to_string()),
                if failed > 0 {
                    Cell::Html(format!("<span class=\"bad\">{failed}</span>"))
                } else {
                    t("0")
                },
                t(percent(s.availability)),
                t(num(s.throughput_rps)),
                t(ms(s.latency.p50_ms)),
                t(ms(s.latency.p99_ms)),
                t(ms(s.latency_all.p99_ms)),
            ];
            if streams {
                row.push(t(ms(s.ttft.p50_ms)));
                row.push(t(ms(s.itl.p50_ms)));
            }
            rows.push(row);
        }
    }
    let mut headers = vec![
        "client",
        "region",
        "offered/s",
        "phase",
        "sent",
        "ok",
        "failed",
        "availability",
        "completed/s",
        "corrected p50 (ms)",
        "corrected p99 (ms)",
        "all requests p99 (ms)",
    ];
    if streams {
        headers.extend(["TTFT p50 (ms)", "ITL p50 (ms)"]);
    }
    format!(
        "<p>The load came from several clients, each an open loop of its own sending from its region at its own rate; its requests to replicas in other regions crossed the link. Every other figure on this page covers all clients together; each client's rows count only its own requests (its accounting: {}).</p>\n{}",
        esc(&metrics
            .clients
            .iter()
            .map(|c| format!(
                "{} sent {} = ok {} + failed {}",
                c.name,
                c.accounting.sent,
                c.accounting.ok,
                format::failed(&c.accounting)
            ))
            .collect::<Vec<_>>()
            .join("; ")),
        table(&headers, rows)
    )
}

/// Which replica took the failures: the load per replica of the workload's target.
/// The region map and the per-link table.
fn network(n: &crate::model::Network) -> String {
    let regions = n
        .regions
        .iter()
        .map(|r| {
            vec![
                t(r.name.clone()),
                t(if r.replicas.is_empty() {
                    "–".to_owned()
                } else {
                    r.replicas.join(", ")
                }),
            ]
        })
        .collect();
    let links: Vec<Vec<Cell>> = n
        .links
        .iter()
        .map(|l| {
            vec![
                t(format!("{} → {}", l.from, l.to)),
                t(format::ms(Some(l.rtt_ms))),
                t(format::ms(Some(l.jitter_ms))),
                t(l.rate_kbps
                    .map_or("unlimited".to_owned(), |r| format!("{r} KB/s"))),
                t(l.proxies.to_string()),
                t(l.connections.to_string()),
                t(l.bytes_from.to_string()),
                t(l.bytes_to.to_string()),
            ]
        })
        .collect();
    let isolation = if n.mode == "netns" {
        "Each region ran in a network namespace of its own (mode netns): the links were the only way between regions."
    } else {
        "Regions were address blocks on one loopback (mode loopback): a program that ignored the placeholders could reach any region directly."
    };
    let mut out = format!(
        "<p>Each region's replicas. Traffic between regions crosses the fault proxy of its link (one per replica of the destination); inside a region it goes straight to the replica. {isolation}</p>\n{}",
        table(&["region", "replicas"], regions)
    );
    if !links.is_empty() {
        out.push_str(&table(
            &[
                "link",
                "rtt ms",
                "jitter ms",
                "rate",
                "proxies",
                "connections",
                "bytes from → to",
                "bytes to → from",
            ],
            links,
        ));
    }
    out
}

fn replicas(metrics: &RunMetrics) -> String {
    let rows = metrics
        .replicas
        .iter()
        .map(|r| {
            let a = &r.accounting;
            let errors: Vec<String> = a.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let failed = format::failed(a);
            vec![
                t(match &r.variant {
                    Some(v) => format!("{} [{v}]", r.replica),
                    None => r.replica.clone(),
                }),
                t(a.sent.to_string()),
                t(a.ok.to_string()),
                if failed > 0 {
                    Cell::Html(format!("<span class=\"bad\">{failed}</span>"))
                } else {
                    t("0")
                },
                t(if errors.is_empty() {
                    "–".to_owned()
                } else {
                    errors.join(", ")
                }),
                t(a.timeouts.to_string()),
                t(a.dropped_by_generator.to_string()),
                t(format::percent(r.failure_share)),
                t(format::ms(r.latency.p99_ms)),
                t(format::ms(r.latency_all.p99_ms)),
            ]
        })
        .collect();
    format!(
        "<p>The generator's requests to each replica's address over the whole run (warm-up included); the rows of a load add up to its accounting. Share: the replica's failed requests (errors, timeouts, drops) over all failed requests of the load.</p>\n{}",
        table(
            &[
                "replica", "sent", "ok", "failed", "errors", "timeouts", "dropped",
                "share of failures", "p99 ms (ok)", "p99 ms (all)",
            ],
            rows,
        )
    )
}

fn recoveries(metrics: &RunMetrics) -> String {
    let intro = if metrics.run.workload.mode == "training" {
        "<p>Recovery time: fault instant → the first full training step after it (detection, re-rendezvous, restore and catch-up; see the training section).</p>\n"
    } else {
        "<p>Recovery time: fault instant → start of the first 100 ms window after which success stays ≥ 99 % for ≥ 1 s (metrics.md \"failover time\"). Latency recovery: fault instant → the first window, from the heal on, from which p99 stays within 2 × its pre-fault value for 2 windows.</p>\n"
    };
    let rows = metrics
        .recoveries
        .iter()
        .map(|r| {
            vec![
                t(match &r.variant {
                    Some(v) => format!("{} [{v}]", r.fault_id),
                    None => r.fault_id.clone(),
                }),
                t(r.kind.clone()),
                t(format!("{} s", format::short(r.start_s))),
                match r.recovery_s {
                    Some(s) => t(format!("{} s", format::short(s))),
                    None => Cell::Html("<span class=\"bad\">not recovered</span>".into()),
                },
                t(r.latency_recovery_s
                    .map_or_else(|| "–".to_owned(), |s| format!("{} s", format::short(s)))),
                t(r.failed_requests.to_string()),
                t(r.restarts.to_string()),
            ]
        })
        .collect();
    intro.to_owned()
        + &table(
            &[
                "fault",
                "kind",
                "at",
                "recovery",
                "latency recovery",
                "failed requests",
                "restarts",
            ],
            rows,
        )
}

fn faults(metrics: &RunMetrics) -> String {
    table(
        &["id", "kind", "target", "start", "end", "detail"],
        metrics
            .faults
            .iter()
            .map(|f| {
                vec![
                    t(f.id.clone()),
                    t(f.kind.clone()),
                    t(f.target.clone().unwrap_or_else(|| "–".into())),
                    t(format!("{} s", format::short(f.start_s))),
                    t(f.end_s.map_or_else(
                        || "never healed".into(),
                        |e| format!("{} s", format::short(e)),
                    )),
                    t(f.detail.clone()),
                ]
            })
            .collect(),
    )
}

fn processes(metrics: &RunMetrics) -> String {
    let mut rows = Vec::new();
    for p in &metrics.processes {
        for (i, life) in p.lives.iter().enumerate() {
            rows.push(vec![
                t(p.name.clone()),
                t(p.kind.clone()),
                t(p.address.clone()),
                t((i + 1).to_string()),
                t(life.pid.to_string()),
                t(format!("{} s", format::short(life.started_s))),
                t(opt_s(life.ready_s)),
                t(opt_s(life.ended_s)),
                t(life.how.clone().unwrap_or_else(|| "–".into())),
                t(life.cause.clone().unwrap_or_else(|| "–".into())),
                Cell::Html(format!("<a href=\"{}\">{}</a>", esc(&p.log), esc(&p.log))),
            ]);
        }
        if p.lives.is_empty() {
            rows.push(vec![
                t(p.name.clone()),
                t(p.kind.clone()),
                t(p.address.clone()),
                t("0"),
                t("–"),
                t("never started"),
                t("–"),
                t("–"),
                t("–"),
                t("–"),
                Cell::Html(format!("<a href=\"{}\">{}</a>", esc(&p.log), esc(&p.log))),
            ]);
        }
    }
    table(
        &[
            "process", "kind", "address", "life", "pid", "started", "ready", "ended", "how",
            "cause", "log",
        ],
        rows,
    )
}

fn searches(metrics: &RunMetrics) -> String {
    let mut out = table(
        &["variant", "bound", "best rate"],
        metrics
            .searches
            .iter()
            .map(|s| {
                vec![
                    t(s.variant.clone()),
                    t(format!(
                        "{} ≤ {} ms, errors ≤ {}",
                        format::percentile_name(s.percentile),
                        format::short(s.latency_ms_max),
                        percent(Some(s.error_ratio_max))
                    )),
                    match s.best_rate_per_s {
                        Some(r) => t(format!("{} requests/s", num(r))),
                        None => Cell::Html("<span class=\"bad\">no rate passed</span>".into()),
                    },
                ]
            })
            .collect(),
    );
    for s in &metrics.searches {
        out.push_str(&format!("<h3>Trials: {}</h3>\n", esc(&s.variant)));
        if let Some(why) = &s.not_found {
            out.push_str(&format!("<p>No max throughput found: {}</p>\n", esc(why)));
        }
        out.push_str(&table(
            &[
                "trial",
                "drained (s)",
                "offered (1/s)",
                "achieved (1/s)",
                &format!("{} latency (ms)", format::percentile_name(s.percentile)),
                "error ratio",
                "sent",
                "verdict",
            ],
            s.trials
                .iter()
                .map(|tr| {
                    vec![
                        t(tr.purpose.clone()),
                        t(opt_num(tr.drain_s)),
                        t(num(tr.rate_per_s)),
                        t(num(tr.achieved_rps)),
                        t(num(tr.latency_ms)),
                        t(percent(Some(tr.error_ratio))),
                        t(tr.accounting.sent.to_string()),
                        verdict(tr.passed),
                    ]
                })
                .collect(),
        ));
    }
    out
}

fn figures(metrics: &RunMetrics) -> String {
    table(
        &["figure", "value", "unit", "definition"],
        metrics
            .figures
            .iter()
            .map(|f| {
                vec![
                    t(f.name.clone()),
                    t(num(f.value)),
                    t(f.unit.clone()),
                    t(f.definition.clone()),
                ]
            })
            .collect(),
    )
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), num)
}

fn opt_int(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_owned(), |x| x.to_string())
}

/// Training jobs: one row per variant, the step-time breakdown, step accounting, and the
/// recovery splits of every interrupting fault.
fn training(metrics: &RunMetrics) -> String {
    let jobs = &metrics.training;
    let mut out = String::from(
        "<p>Throughput is steady-state samples/s over all ranks, excluding each membership epoch's warm-up steps (metrics.md \"Training\").</p>\n",
    );
    out.push_str(&table(
        &[
            "variant",
            "workers",
            "threads/worker",
            "gradients via",
            "samples/s",
            "steps done / asked",
            "recomputed",
            "skipped (ECC)",
            "accounted",
            "checkpoints",
            "restores",
            "loss first → last",
            "published weights",
        ],
        jobs.iter()
            .map(|j| {
                vec![
                    t(j.variant.clone()),
                    t(j.workers.to_string()),
                    t(j.threads_per_worker.map_or("–".into(), |x| x.to_string())),
                    t(j.gradient_transport.clone().unwrap_or_else(|| "–".into())),
                    t(opt_num(j.throughput_samples_per_s)),
                    t(format!(
                        "{} / {}",
                        j.steps_completed,
                        opt_int(j.target_steps)
                    )),
                    t(j.steps_recomputed.to_string()),
                    t(j.steps_skipped.to_string()),
                    verdict(j.steps_accounted),
                    t(format!(
                        "{} written, {} failed",
                        j.checkpoints_written, j.checkpoint_errors
                    )),
                    t(j.restores.to_string()),
                    t(format!(
                        "{} → {}",
                        opt_num(j.loss_first),
                        opt_num(j.loss_last)
                    )),
                    t(j.published.clone().unwrap_or_else(|| "–".into())),
                ]
            })
            .collect(),
    ));
    out.push_str("<h3>Step-time breakdown (mean per steady-state step)</h3>\n");
    out.push_str(&table(
        &[
            "variant",
            "steps",
            "step",
            "compute",
            "exposed comm",
            "waiting",
            "data",
            "update",
            "throttle",
        ],
        jobs.iter()
            .map(|j| {
                let b = &j.breakdown;
                vec![
                    t(j.variant.clone()),
                    t(b.steps.to_string()),
                    t(opt_s(b.step_s)),
                    t(opt_s(b.compute_s)),
                    t(opt_s(b.comm_s)),
                    t(opt_s(b.wait_s)),
                    t(opt_s(b.data_s)),
                    t(opt_s(b.update_s)),
                    t(opt_s(b.throttle_s)),
                ]
            })
            .collect(),
    ));
    let recs: Vec<Vec<Cell>> = jobs
        .iter()
        .flat_map(|j| j.recoveries.iter().map(move |r| (j, r)))
        .map(|(j, r)| {
            vec![
                t(j.variant.clone()),
                t(r.fault_id.clone()),
                t(r.kind.clone()),
                t(opt_s(r.detection_s)),
                t(opt_s(r.rendezvous_s)),
                t(opt_s(r.restore_s)),
                t(opt_s(r.catch_up_s)),
                if r.total_s.is_some() {
                    t(opt_s(r.total_s))
                } else {
                    Cell::Html("<span class=\"bad\">not recovered</span>".into())
                },
                t(opt_int(r.lost_steps)),
                t(opt_int(r.world_after)),
            ]
        })
        .collect();
    if !recs.is_empty() {
        out.push_str("<h3>Recovery timeline (fault → detection → new ring → restore → first full step)</h3>\n");
        out.push_str(&table(
            &[
                "variant",
                "fault",
                "kind",
                "detection",
                "re-rendezvous",
                "restore",
                "catch-up",
                "total",
                "lost steps",
                "workers after",
            ],
            recs,
        ));
    }
    out.push_str("<h3>GPU faults seen by the job</h3>\n");
    out.push_str(&table(
        &[
            "variant",
            "corrupted steps (gpu.ecc)",
            "caught by the finite check",
            "silent corruption (escaped)",
        ],
        jobs.iter()
            .map(|j| {
                vec![
                    t(j.variant.clone()),
                    t(j.ecc_injected.to_string()),
                    t(j.ecc_detected.to_string()),
                    if j.ecc_silent > 0 {
                        Cell::Html(format!("<span class=\"bad\">{}</span>", j.ecc_silent))
                    } else {
                        t("0")
                    },
                ]
            })
            .collect(),
    ));
    let stragglers: Vec<Vec<Cell>> = jobs
        .iter()
        .flat_map(|j| j.stragglers.iter().map(move |x| (j, x)))
        .map(|(j, x)| {
            vec![
                t(j.variant.clone()),
                t(x.fault_id.clone()),
                t(opt_s(x.step_s_before)),
                t(opt_s(x.step_s_during)),
                t(x.slowdown
                    .map_or_else(|| "–".to_owned(), |r| format!("{}×", format::short(r)))),
                t(opt_s(x.wait_s_during)),
            ]
        })
        .collect();
    if !stragglers.is_empty() {
        out.push_str("<h3>Stragglers (gpu.throttle): the job's step time, rank 0</h3>\n");
        out.push_str(&table(
            &[
                "variant",
                "fault",
                "step before",
                "step during",
                "slowdown",
                "waiting for the slowest rank during",
            ],
            stragglers,
        ));
    }
    let exits: Vec<Vec<Cell>> = jobs
        .iter()
        .flat_map(|j| {
            j.exits
                .iter()
                .map(move |e| vec![t(j.variant.clone()), t(e.clone())])
        })
        .collect();
    if !exits.is_empty() {
        out.push_str("<h3>Worker exits</h3>\n");
        out.push_str(&table(&["variant", "exit"], exits));
    }
    out
}
