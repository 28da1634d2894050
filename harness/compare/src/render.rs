//! A [`Comparison`] for people and CI: terminal text, JUnit XML, a self-contained HTML page
//! (inline SVG, no external URLs), and the process exit code.

use std::collections::HashSet;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use report::format::{html as esc, num};

use crate::changepoint::{change_points, ChangePoint, ChangePointOptions, MAX_SERIES};
use crate::compare::{history_values, Comparison, FigureComparison, Method, RunSummary, Verdict};
use crate::extract::Direction;
use crate::Run;

/// The process status for a comparison: 1 when a figure is [`Verdict::Worse`], else 0.
/// 2 is left to the caller for usage errors and refused (incompatible) runs.
pub fn exit_code(c: &Comparison) -> i32 {
    i32::from(c.regressions().next().is_some())
}

fn verdict_word(v: &Verdict) -> String {
    match v {
        Verdict::Better => "better".into(),
        Verdict::Worse => "WORSE".into(),
        Verdict::NoChange => "no change".into(),
        Verdict::NotComparable { reason } => format!("not comparable: {reason}"),
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn ci_text(f: &FigureComparison) -> String {
    f.ci.map_or_else(
        || "–".to_owned(),
        |(lo, hi)| format!("[{}, {}]", pct(lo), pct(hi)),
    )
}

fn value_text(s: Option<&crate::SideSummary>) -> String {
    s.map_or_else(|| "–".to_owned(), |s| num(s.value))
}

/// Baseline and candidate as compared: the judged medians (marked `~` when they are the
/// windows' rather than the runs'), else the runs' median values.
fn values_text(f: &FigureComparison) -> (String, String) {
    match (f.medians, &f.method) {
        (Some((b, c)), Some(Method::Windows { .. })) => {
            (format!("~{}", num(b)), format!("~{}", num(c)))
        }
        (Some((b, c)), _) => (num(b), num(c)),
        _ => (
            value_text(f.baseline.as_ref()),
            value_text(f.candidate.as_ref()),
        ),
    }
}

fn host_text(r: &RunSummary) -> String {
    let busy = r
        .host_cpu_busy_mean
        .map_or_else(|| "–".to_owned(), |b| format!("{:.0}%", b * 100.0));
    let load = r.load_average_mean.map_or_else(|| "–".to_owned(), num);
    format!("host CPUs busy {busy}, load average {load}")
}

/// One line per figure: name, baseline, candidate, unit, change, interval, p, verdict;
/// after a header with the runs (and their host load) and any incompatibility. Baseline
/// and candidate are the medians compared: the runs' values, or the windows' (marked `~`)
/// for pooled windows, or the runs' median values when the figure was not judged.
pub fn text(c: &Comparison) -> String {
    let mut out = String::new();
    for (label, runs) in [("baseline", &c.baseline), ("candidate", &c.candidate)] {
        out.push_str(&format!("{label}: {} run(s)\n", runs.len()));
        for r in runs.iter() {
            out.push_str(&format!(
                "  {} {} {}{}; {}\n",
                r.run_id,
                r.started_at,
                r.git_commit,
                if r.passed { "" } else { " (run FAILED)" },
                host_text(r)
            ));
        }
    }
    for i in &c.compatibility {
        out.push_str(&format!(
            "INCOMPATIBLE: run {} {} = {} (run {} has {})\n",
            i.run_id, i.field, i.found, i.reference_run_id, i.expected
        ));
    }
    let width = c.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &c.figures {
        let (b, cand) = values_text(f);
        out.push_str(&format!(
            "{:width$}  {:>9} → {:<9} {:<9} {:>8}  CI {:<18} p {:<6}  {}\n",
            f.name,
            b,
            cand,
            f.unit,
            f.change.map_or_else(|| "–".to_owned(), pct),
            ci_text(f),
            f.p_value
                .map_or_else(|| "–".to_owned(), |p| format!("{p:.3}")),
            verdict_word(&f.verdict),
        ));
    }
    let worse = c.regressions().count();
    out.push_str(&format!(
        "{} figures: {worse} worse, {} better, {} not comparable\n",
        c.figures.len(),
        c.figures
            .iter()
            .filter(|f| f.verdict == Verdict::Better)
            .count(),
        c.figures
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::NotComparable { .. }))
            .count(),
    ));
    out
}

/// JUnit XML: one suite `compare`, one test case per figure; Worse is a failure,
/// NotComparable is skipped with its reason, incompatibilities are errors.
pub fn junit_xml(c: &Comparison) -> String {
    let mut suite = TestSuite::new("compare");
    suite.add_property(("seed", c.options.seed.to_string().as_str()));
    for f in &c.figures {
        let (b, cand) = values_text(f);
        let line = format!(
            "{b} → {cand} {}, change {}, CI {}, p {}",
            f.unit,
            f.change.map_or_else(|| "–".to_owned(), pct),
            ci_text(f),
            f.p_value
                .map_or_else(|| "–".to_owned(), |p| format!("{p:.3}")),
        );
        let status = match &f.verdict {
            Verdict::Worse => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("worse: {line}"))
                    .set_type("regression");
                s
            }
            Verdict::NotComparable { reason } => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!("not comparable: {reason}"));
                s
            }
            Verdict::Better | Verdict::NoChange => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(f.name.as_str(), status);
        case.set_classname("compare.figure").set_system_out(line);
        suite.add_test_case(case);
    }
    for i in &c.compatibility {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(format!(
            "{} = {}, reference run {} has {}",
            i.field, i.found, i.reference_run_id, i.expected
        ))
        .set_type("incompatible");
        let mut case = TestCase::new(format!("compatible {} {}", i.run_id, i.field), s);
        case.set_classname("compare.compatibility");
        suite.add_test_case(case);
    }
    let mut report = Report::new("faultline-compare");
    report.add_test_suite(suite);
    report
        .to_string()
        .expect("serializing a JUnit report into memory does not fail")
}

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.banner { font-size: 1.4em; font-weight: bold; padding: 0.5em 0.8em; border-radius: 6px; margin: 1em 0; }
.banner.pass { background: #e3f4e1; color: #1d6b22; border: 1px solid #9fd49a; }
.banner.fail { background: #fbe3e1; color: #a12119; border: 1px solid #eda29c; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.worse { color: #a12119; font-weight: bold; } .better { color: #1d6b22; font-weight: bold; } .nc { color: #777; }
figure { margin: 1.2em 0; } figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
";

/// A self-contained page: a banner, the runs with their host load, incompatibilities, the
/// table of figures, and for each judged figure an inline SVG of its history (from
/// `history` when given, else the compared runs): baseline runs blue, candidate runs red,
/// other runs grey, change points ([`change_points`], default options, the comparison's
/// seed; the last [`MAX_SERIES`] runs) as dashed lines.
pub fn html(c: &Comparison, history: Option<&[Run]>) -> String {
    let worse = c.regressions().count();
    let mut body = String::from("<h1>faultline compare</h1>\n");
    let (class, banner) = if worse > 0 {
        ("fail", format!("{worse} figure(s) worse"))
    } else {
        ("pass", "no regression".to_owned())
    };
    body.push_str(&format!("<div class=\"banner {class}\">{banner}</div>\n"));
    body.push_str("<h2>Runs</h2>\n<table><thead><tr><th>side</th><th>run</th><th>started</th><th>commit</th><th>passed</th><th>host CPUs busy</th><th>load average</th></tr></thead><tbody>\n");
    for (label, runs) in [("baseline", &c.baseline), ("candidate", &c.candidate)] {
        for r in runs.iter() {
            body.push_str(&format!(
                "<tr><td>{label}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
                esc(&r.run_id),
                esc(&r.started_at),
                esc(&r.git_commit),
                if r.passed { "yes" } else { "<span class=\"worse\">no</span>" },
                r.host_cpu_busy_mean.map_or_else(|| "–".to_owned(), |b| format!("{:.0}%", b * 100.0)),
                r.load_average_mean.map_or_else(|| "–".to_owned(), num),
            ));
        }
    }
    body.push_str("</tbody></table>\n");
    if !c.compatibility.is_empty() {
        body.push_str("<h2>Incompatible runs</h2>\n<ul>\n");
        for i in &c.compatibility {
            body.push_str(&format!(
                "<li class=\"worse\">run {}: <code>{}</code> = {} (reference run {} has {})</li>\n",
                esc(&i.run_id),
                esc(&i.field),
                esc(&i.found),
                esc(&i.reference_run_id),
                esc(&i.expected)
            ));
        }
        body.push_str("</ul>\n");
    }
    body.push_str("<h2>Figures</h2>\n<table><thead><tr><th>figure</th><th>baseline</th><th>candidate</th><th>unit</th><th>change</th><th>CI</th><th>p</th><th>verdict</th></tr></thead><tbody>\n");
    for f in &c.figures {
        let class = match f.verdict {
            Verdict::Worse => "worse",
            Verdict::Better => "better",
            Verdict::NoChange => "",
            Verdict::NotComparable { .. } => "nc",
        };
        let (b, cand) = values_text(f);
        body.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"{class}\">{}</td></tr>\n",
            esc(&f.name),
            b,
            cand,
            esc(&f.unit),
            f.change.map_or_else(|| "–".to_owned(), pct),
            ci_text(f),
            f.p_value.map_or_else(|| "–".to_owned(), |p| format!("{p:.3}")),
            esc(&verdict_word(&f.verdict)),
        ));
    }
    body.push_str("</tbody></table>\n<h2>History of each judged figure</h2>\n");
    let base: HashSet<&str> = c.baseline.iter().map(|r| r.run_id.as_str()).collect();
    let cand: HashSet<&str> = c.candidate.iter().map(|r| r.run_id.as_str()).collect();
    for f in c
        .figures
        .iter()
        .filter(|f| f.direction != Direction::Unknown)
    {
        let points: Vec<(f64, Side)> = match history {
            Some(h) => history_values(h, &f.name)
                .into_iter()
                .map(|(i, v)| {
                    let id = h[i].metrics.run.run_id.as_str();
                    let side = if cand.contains(id) {
                        Side::Candidate
                    } else if base.contains(id) {
                        Side::Baseline
                    } else {
                        Side::Other
                    };
                    (v, side)
                })
                .collect(),
            None => {
                let vals = |s: Option<&crate::SideSummary>, side| {
                    s.map(|s| s.values.iter().map(move |&v| (v, side)).collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                let mut p = vals(f.baseline.as_ref(), Side::Baseline);
                p.extend(vals(f.candidate.as_ref(), Side::Candidate));
                p
            }
        };
        if points.is_empty() {
            continue;
        }
        let points = &points[points.len().saturating_sub(MAX_SERIES)..];
        let values: Vec<f64> = points.iter().map(|p| p.0).collect();
        let opts = ChangePointOptions {
            seed: c.options.seed,
            ..ChangePointOptions::default()
        };
        let cps = change_points(&values, &opts).unwrap_or_default();
        let caption = if cps.is_empty() {
            String::from("no change point")
        } else {
            cps.iter()
                .map(|cp| {
                    format!(
                        "change at run {}: mean {} → {} (p {:.3})",
                        cp.index + 1,
                        num(cp.mean_before),
                        num(cp.mean_after),
                        cp.p_value
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        body.push_str(&format!(
            "<figure>\n{}<figcaption>{} ({}) — {}; {}</figcaption>\n</figure>\n",
            history_svg(points, &cps),
            esc(&f.name),
            esc(&f.unit),
            esc(&verdict_word(&f.verdict)),
            esc(&caption)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>faultline compare</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Candidate,
    Other,
}

/// Points in run order, a grey line through them, dashed lines at change points.
fn history_svg(points: &[(f64, Side)], cps: &[ChangePoint]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    const PAD: f64 = 40.0;
    let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let (lo, hi) = (lo - 0.1 * span, hi + 0.1 * span);
    let n = points.len();
    let x = |i: f64| PAD + (W - 2.0 * PAD) * if n > 1 { i / (n - 1) as f64 } else { 0.5 };
    let y = |v: f64| H - PAD / 2.0 - (H - PAD) * (v - lo) / (hi - lo);
    let mut svg = format!("<svg viewBox=\"0 0 {W} {H}\" role=\"img\">\n");
    svg.push_str(&format!(
        "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">{}</text><text x=\"4\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
        y(hi) + 10.0,
        esc(&num(hi)),
        y(lo),
        esc(&num(lo))
    ));
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i as f64), y(p.0)))
        .collect();
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#bbb\" points=\"{}\"/>\n",
        line.join(" ")
    ));
    for cp in cps {
        let cx = x(cp.index as f64 - 0.5);
        svg.push_str(&format!(
            "<line x1=\"{cx:.1}\" y1=\"4\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"#a12119\" stroke-dasharray=\"4 3\"><title>change point: mean {} → {}</title></line>\n",
            H - 4.0,
            esc(&num(cp.mean_before)),
            esc(&num(cp.mean_after))
        ));
    }
    for (i, (v, side)) in points.iter().enumerate() {
        let (color, label) = match side {
            Side::Baseline => ("#4477aa", "baseline"),
            Side::Candidate => ("#cc3311", "candidate"),
            Side::Other => ("#999999", "history"),
        };
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{label} run {}: {}</title></circle>\n",
            x(i as f64),
            y(*v),
            i + 1,
            esc(&num(*v))
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
