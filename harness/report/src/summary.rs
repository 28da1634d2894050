//! Summaries for the end of `faultline run`: compact JSON (`--json`) and terminal text.
//!
//! Both show the headline phase's corrected latency over successes and over every request
//! (`all`, when the report has it) and its generator drop share, with a warning above
//! [`DROP_SHARE_WARN_ABOVE`].

use serde_json::{json, Value};

use crate::format::{self, ms, num, percent};
use crate::model::{Accounting, Percentiles, PhaseSummary, RunMetrics};

/// Above this share of generator drops (`dropped_by_generator / sent`, 1 %) the summary
/// warns: the figures then describe the generator's backlog as much as the target. The
/// same bound as `loadgen::DROP_SHARE_WARN_ABOVE` (this crate does not depend on loadgen).
pub const DROP_SHARE_WARN_ABOVE: f64 = 0.01;

/// `dropped_by_generator / sent`; None when nothing was sent.
pub fn drop_share(counts: &Accounting) -> Option<f64> {
    (counts.sent > 0).then(|| counts.dropped_by_generator as f64 / counts.sent as f64)
}

/// A drop share as a percentage, 3 significant digits: 0.025 → "2.50 %", 0 → "0 %".
fn share_percent(share: f64) -> String {
    format!("{} %", num(share * 100.0))
}

/// The warning when more than [`DROP_SHARE_WARN_ABOVE`] of a phase's requests were dropped
/// by the generator (never sent: no connection came free within the request timeout, or
/// still queued when the load stopped); None at or below it.
pub fn drop_warning(phase: &PhaseSummary) -> Option<String> {
    let share = drop_share(&phase.counts).filter(|s| *s > DROP_SHARE_WARN_ABOVE)?;
    Some(format!(
        "WARNING: {} of the {} phase's requests ({} of {}) were dropped by the generator, \
         above {} %: never sent, because no connection came free within the request timeout \
         or they were still queued when the load stopped. The target did not keep up with \
         the offered rate over these connections; `corrected` covers successes only, `all` \
         counts every request until it was given up.",
        share_percent(share),
        phase.phase,
        phase.counts.dropped_by_generator,
        phase.counts.sent,
        format::short(DROP_SHARE_WARN_ABOVE * 100.0),
    ))
}

/// The phase whose figures headline a run: `measured`, else the first summary.
pub fn headline_phase(metrics: &RunMetrics) -> Option<&PhaseSummary> {
    metrics
        .summaries
        .iter()
        .find(|s| s.phase == "measured")
        .or_else(|| metrics.summaries.first())
}

fn percentiles_json(p: &Percentiles) -> Value {
    json!({
        "count": p.count,
        "p50": p.p50_ms, "p90": p.p90_ms, "p95": p.p95_ms,
        "p99": p.p99_ms, "p999": p.p999_ms, "max": p.max_ms,
    })
}

/// A compact summary for `faultline run --json`: scenario, run id, pass, failures, SLO
/// verdicts, the measured phase's key figures (latencies in ms, rates per second), accounting
/// and search results, and for a load given as `[[workload.clients]]` each client's figures
/// of the same phase (`clients`, absent otherwise). The caller may add the report path.
pub fn summary_json(metrics: &RunMetrics) -> Value {
    let run = &metrics.run;
    let measured = headline_phase(metrics).map(|s| {
        let mut v = json!({
            "phase": s.phase,
            "sent": s.counts.sent,
            "availability": s.availability,
            "throughput_rps": s.throughput_rps,
            "latency_ms": percentiles_json(&s.latency),
            "latency_all_ms": percentiles_json(&s.latency_all),
            "drop_share": drop_share(&s.counts),
            "service_ms": percentiles_json(&s.service),
            "send_lag_p99_ms": s.send_lag.p99_ms,
        });
        if s.ttft.count > 0 {
            v["ttft_ms"] = percentiles_json(&s.ttft);
            v["itl_ms"] = percentiles_json(&s.itl);
            v["tpot_ms"] = percentiles_json(&s.tpot);
            v["output_tokens_per_s"] = json!(s.output_tokens_per_s);
        }
        v
    });
    let warnings: Vec<String> = headline_phase(metrics)
        .and_then(drop_warning)
        .into_iter()
        .collect();
    let a = &metrics.accounting;
    let headline = headline_phase(metrics).map(|s| s.phase.as_str());
    let clients: Vec<Value> = metrics
        .clients
        .iter()
        .map(|c| {
            let s = c
                .summaries
                .iter()
                .find(|s| Some(s.phase.as_str()) == headline);
            json!({
                "name": c.name,
                "variant": c.variant,
                "region": c.region,
                "rate_per_s": c.rate_per_s,
                "phase": s.map(|s| &s.phase),
                "sent": s.map(|s| s.counts.sent),
                "availability": s.and_then(|s| s.availability),
                "throughput_rps": s.map(|s| s.throughput_rps),
                "latency_ms": s.map(|s| percentiles_json(&s.latency)),
            })
        })
        .collect();
    let mut out = json!({
        "scenario": run.scenario,
        "run_id": run.run_id,
        "pass": metrics.passed(),
        "seed": run.seed,
        "git_commit": run.git_commit,
        "started_at": run.started_at,
        "wall_s": run.wall_s,
        "failures": metrics.failures,
        "warnings": warnings,
        "slos": metrics.slos.iter().map(|s| json!({
            "index": s.index,
            "description": s.description,
            "phase": s.phase,
            "expected": s.expected,
            "observed": s.observed,
            "pass": s.pass,
        })).collect::<Vec<_>>(),
        "measured": measured,
        "accounting_balanced": format::accounting_checks(metrics).iter().all(|c| c.balanced),
        "accounting": {
            "sent": a.sent,
            "ok": a.ok,
            "errors": a.errors,
            "timeouts": a.timeouts,
            "dropped_by_generator": a.dropped_by_generator,
            "balanced": a.balanced,
        },
        "recoveries": metrics.recoveries.iter().map(|r| json!({
            "fault_id": r.fault_id,
            "recovery_s": r.recovery_s,
        })).collect::<Vec<_>>(),
        "searches": metrics.searches.iter().map(|s| json!({
            "variant": s.variant,
            "best_rate_per_s": s.best_rate_per_s,
        })).collect::<Vec<_>>(),
    });
    let w = &run.workload;
    if let Some(max) = w.max_connections {
        out["connections"] = json!({
            "per_replica": w.connections,
            "max_per_replica": max,
            "added": w.connections_added.unwrap_or(0),
        });
    }
    // Only a load given as `[[workload.clients]]` has them.
    if !clients.is_empty() {
        out["clients"] = Value::Array(clients);
    }
    out
}

/// Left-aligned text columns separated by two spaces.
pub(crate) fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let widths: Vec<usize> = (0..rows.iter().map(Vec::len).max().unwrap_or(0))
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A short terminal summary: verdict, key percentiles, accounting, SLO table, failures.
pub fn text_summary(metrics: &RunMetrics) -> String {
    let run = &metrics.run;
    let mut out = String::new();
    let passed_slos = metrics.slos.iter().filter(|s| s.pass).count();
    out.push_str(&format!(
        "{} {}  (run {}, seed {}, commit {})\n",
        if metrics.passed() { "PASS" } else { "FAIL" },
        run.scenario,
        run.run_id,
        run.seed,
        run.git_commit,
    ));
    if !run.extra_args.is_empty() {
        out.push_str(&format!(
            "extra arguments (not the scenario as written): {}\n",
            run.extra_args.join(" ")
        ));
    }
    if let Some(s) = headline_phase(metrics) {
        out.push_str(&format!(
            "{} phase: {} sent, availability {}, {} completed/s\n",
            s.phase,
            s.counts.sent,
            percent(s.availability),
            num(s.throughput_rps)
        ));
        let line = |name: &str, p: &Percentiles| {
            format!(
                "  {name:<10} p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms\n",
                ms(p.p50_ms),
                ms(p.p90_ms),
                ms(p.p99_ms),
                ms(p.p999_ms),
                ms(p.max_ms)
            )
        };
        out.push_str(&line("corrected", &s.latency));
        if s.latency_all.count > 0 {
            out.push_str(&line("all", &s.latency_all));
        }
        out.push_str(&line("service", &s.service));
        if s.ttft.count > 0 {
            out.push_str(&line("TTFT", &s.ttft));
            out.push_str(&line("ITL", &s.itl));
        }
        if s.latency_all.count > 0 {
            out.push_str(
                "  (corrected, service: successes only; all: every request, a failure until it \
                 was given up)\n",
            );
        }
        if let Some(share) = drop_share(&s.counts) {
            out.push_str(&format!(
                "  dropped by generator: {} of {} sent ({})\n",
                s.counts.dropped_by_generator,
                s.counts.sent,
                share_percent(share)
            ));
        }
        if let Some(warning) = drop_warning(s) {
            out.push_str(&format!("  {warning}\n"));
        }
        let w = &metrics.run.workload;
        if let Some(max) = w.max_connections {
            out.push_str(&format!(
                "  connections: {} per replica at the start, {} added when all were busy (at most {max} per replica)\n",
                w.connections,
                w.connections_added.unwrap_or(0)
            ));
        }
    }
    for check in format::accounting_checks(metrics) {
        if metrics.training.is_empty() {
            out.push_str("accounting: ");
        }
        out.push_str(&check.line);
        out.push('\n');
    }
    // Each client of `[[workload.clients]]`, in the headline phase.
    let headline = headline_phase(metrics).map(|s| s.phase.as_str());
    for c in &metrics.clients {
        let name = match &c.variant {
            Some(v) => format!("{} [{v}]", c.name),
            None => c.name.clone(),
        };
        let phase = c
            .summaries
            .iter()
            .find(|s| Some(s.phase.as_str()) == headline)
            .or_else(|| c.summaries.first());
        match phase {
            Some(s) => out.push_str(&format!(
                "client {name} (region {}, {}/s): {} {} sent, availability {}, corrected p50 {}  p99 {} ms\n",
                c.region,
                num(c.rate_per_s),
                s.phase,
                s.counts.sent,
                percent(s.availability),
                ms(s.latency.p50_ms),
                ms(s.latency.p99_ms),
            )),
            None => out.push_str(&format!(
                "client {name} (region {}, {}/s): no requests\n",
                c.region,
                num(c.rate_per_s)
            )),
        }
    }
    if metrics.replicas.len() > 1 {
        // Which replica took the failures: failed requests per replica, whole run.
        let parts: Vec<String> = metrics
            .replicas
            .iter()
            .map(|r| {
                let a = &r.accounting;
                let failed = format::failed(a);
                let name = match &r.variant {
                    Some(v) => format!("{} [{v}]", r.replica),
                    None => r.replica.clone(),
                };
                format!("{name} {failed} of {}", a.sent)
            })
            .collect();
        out.push_str(&format!("failed by replica: {}\n", parts.join(", ")));
    }
    for r in &metrics.recoveries {
        out.push_str(&format!(
            "recovery {}: {}\n",
            r.fault_id,
            r.recovery_s
                .map_or_else(|| "not recovered".to_owned(), |s| format!("{} s", num(s)))
        ));
    }
    for s in &metrics.searches {
        out.push_str(&format!(
            "search {}: best {}\n",
            s.variant,
            s.best_rate_per_s.map_or_else(
                || "none passed".to_owned(),
                |r| format!("{} requests/s", num(r))
            )
        ));
    }
    if !metrics.slos.is_empty() {
        out.push_str(&format!(
            "SLOs: {passed_slos} of {} passed\n",
            metrics.slos.len()
        ));
        let rows: Vec<Vec<String>> = metrics
            .slos
            .iter()
            .map(|s| {
                vec![
                    if s.pass { "pass" } else { "FAIL" }.to_owned(),
                    s.description.clone(),
                    format!("expected {}", s.expected),
                    format!("observed {}", s.observed),
                ]
            })
            .collect();
        out.push_str(&columns(&rows, "  "));
    }
    if !metrics.failures.is_empty() {
        out.push_str("failures:\n");
        for f in &metrics.failures {
            out.push_str(&format!("  - {f}\n"));
        }
    }
    out
}
