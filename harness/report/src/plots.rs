//! The plots of a run, built from [`RunMetrics`] as [`LineChart`]s and rendered to SVG.

use crate::format;
use crate::model::{Chart, Percentiles, RunMetrics, WindowMetrics};
use crate::percentiles::nines;
use crate::svg::{self, Band, BandKind, Bound, Line, LineChart, XAxis, YScale, PALETTE};

/// One rendered plot.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File name in the run folder, e.g. `latency.svg`.
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// File stems the built-in plots use; a [`Chart`] with one of these ids gets a `chart-` prefix.
const BUILT_IN: [&str; 5] = [
    "latency",
    "throughput",
    "distribution",
    "streaming",
    "search",
];

/// Every plot of the run: the built-in load plots (for load runs; streaming and search only
/// when there is data for them), then one per [`Chart`].
///
/// # Errors
/// The file name and the plotters error of a plot that could not be drawn.
pub fn build(metrics: &RunMetrics) -> Result<Vec<Plot>, (String, String)> {
    // A run with only generic charts (a training job) or only searches gets no empty load
    // plots; a load run gets them even when empty, rendered as "no data".
    let load_run =
        !metrics.windows.is_empty() || (metrics.charts.is_empty() && metrics.searches.is_empty());
    let mut charts: Vec<(String, LineChart)> = Vec::new();
    if load_run {
        charts.push(("latency.svg".into(), latency(metrics)));
        charts.push(("throughput.svg".into(), throughput(metrics)));
        charts.push(("distribution.svg".into(), distribution(metrics)));
    }
    if metrics
        .windows
        .iter()
        .any(|w| w.ttft.count > 0 || w.itl.count > 0)
    {
        charts.push(("streaming.svg".into(), streaming(metrics)));
    }
    if !metrics.searches.is_empty() {
        charts.push(("search.svg".into(), search(metrics)));
    }
    for chart in &metrics.charts {
        charts.push((
            format!("{}.svg", chart_stem(&chart.id)),
            generic(metrics, chart),
        ));
    }
    charts
        .into_iter()
        .map(|(file, chart)| match svg::render(&chart) {
            Ok(svg) => Ok(Plot {
                file,
                title: chart.title,
                svg,
            }),
            Err(e) => Err((file, e)),
        })
        .collect()
}

/// A safe, non-clashing file stem for a chart id.
pub fn chart_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() || BUILT_IN.contains(&stem.as_str()) {
        format!("chart-{stem}")
    } else {
        stem
    }
}

/// Warm-up phases, faults and runs of `recovering` windows as shaded intervals.
fn bands(metrics: &RunMetrics) -> Vec<Band> {
    let warmup = metrics
        .phases
        .iter()
        .filter(|p| p.name == "warmup" && p.end_s > p.start_s)
        .map(|p| Band {
            start: p.start_s,
            end: Some(p.end_s),
            label: "warm-up".into(),
            kind: BandKind::Warmup,
        });
    let faults = metrics.faults.iter().map(|f| Band {
        start: f.start_s,
        end: f.end_s,
        label: f.id.clone(),
        kind: BandKind::Fault,
    });
    let mut recovering: Vec<Band> = Vec::new();
    for w in metrics
        .windows
        .iter()
        .filter(|w| w.phase.as_deref() == Some("recovering"))
    {
        match recovering.last_mut() {
            Some(b) if b.end.is_some_and(|e| (e - w.start_s).abs() < 1e-9) => {
                b.end = Some(w.start_s + w.width_s);
            }
            _ => recovering.push(Band {
                start: w.start_s,
                end: Some(w.start_s + w.width_s),
                label: "recovering".into(),
                kind: BandKind::Recovering,
            }),
        }
    }
    warmup.chain(faults).chain(recovering).collect()
}

fn mid(w: &WindowMetrics) -> f64 {
    w.start_s + w.width_s / 2.0
}

/// A line of one value per window.
fn per_window(
    metrics: &RunMetrics,
    name: &str,
    color: usize,
    dashed: bool,
    value: impl Fn(&WindowMetrics) -> Option<f64>,
) -> Line {
    Line {
        name: name.into(),
        color: PALETTE[color % PALETTE.len()],
        dashed,
        markers: false,
        connect: true,
        points: metrics.windows.iter().map(|w| (mid(w), value(w))).collect(),
    }
}

fn time_chart(
    metrics: &RunMetrics,
    title: &str,
    y_label: &str,
    y_scale: YScale,
    lines: Vec<Line>,
) -> LineChart {
    LineChart {
        title: title.into(),
        x_label: "scenario time (s)".into(),
        y_label: y_label.into(),
        x_axis: XAxis::Time,
        y_scale,
        lines,
        bands: bands(metrics),
        bounds: Vec::new(),
    }
}

fn latency(metrics: &RunMetrics) -> LineChart {
    let lines = vec![
        per_window(metrics, "corrected p50", 0, false, |w| w.latency.p50_ms),
        per_window(metrics, "corrected p99", 1, false, |w| w.latency.p99_ms),
        per_window(metrics, "corrected max", 3, false, |w| w.latency.max_ms),
        per_window(metrics, "service p99", 2, true, |w| w.service.p99_ms),
    ];
    time_chart(
        metrics,
        "Latency per window (corrected = from intended send time)",
        "latency (ms, log scale)",
        YScale::Log,
        lines,
    )
}

fn throughput(metrics: &RunMetrics) -> LineChart {
    let rate = |n: u64, w: &WindowMetrics| (w.width_s > 0.0).then(|| n as f64 / w.width_s);
    let mut lines = vec![
        per_window(metrics, "sent/s", 0, true, move |w| rate(w.counts.sent, w)),
        per_window(metrics, "completed/s", 2, false, |w| Some(w.throughput_rps)),
    ];
    if metrics.windows.iter().any(|w| w.goodput_rps.is_some()) {
        lines.push(per_window(metrics, "goodput/s", 9, true, |w| w.goodput_rps));
    }
    // Error kinds, most frequent first, as separate lines.
    let mut kinds: Vec<(String, u64)> = Vec::new();
    for w in &metrics.windows {
        for (kind, n) in &w.counts.errors {
            match kinds.iter_mut().find(|(k, _)| k == kind) {
                Some(entry) => entry.1 += n,
                None => kinds.push((kind.clone(), *n)),
            }
        }
    }
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let colors = [3, 1, 4, 5, 6, 8];
    for (i, (kind, _)) in kinds.iter().take(colors.len()).enumerate() {
        let kind = kind.clone();
        lines.push(per_window(
            metrics,
            &format!("errors/s {kind}"),
            colors[i],
            false,
            move |w| rate(w.counts.errors.get(&kind).copied().unwrap_or(0), w),
        ));
    }
    if metrics.windows.iter().any(|w| w.counts.timeouts > 0) {
        lines.push(per_window(metrics, "timeouts/s", 7, false, move |w| {
            rate(w.counts.timeouts, w)
        }));
    }
    if metrics
        .windows
        .iter()
        .any(|w| w.counts.dropped_by_generator > 0)
    {
        lines.push(per_window(metrics, "dropped/s", 5, true, move |w| {
            rate(w.counts.dropped_by_generator, w)
        }));
    }
    time_chart(
        metrics,
        "Throughput per window (by intended send time; completed by completion time)",
        "requests per second (1/s)",
        YScale::Linear,
        lines,
    )
}

fn distribution(metrics: &RunMetrics) -> LineChart {
    // The max (percentile 100) sits half a nine past the last finite point.
    let last = metrics
        .distribution
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| nines(p.percentile))
        .fold(0.0f64, f64::max);
    let x = |p: f64| if p >= 100.0 { last + 0.5 } else { nines(p) };
    let line = |name: &str,
                color: usize,
                dashed: bool,
                value: fn(&crate::DistributionPoint) -> f64| Line {
        name: name.into(),
        color: PALETTE[color],
        dashed,
        markers: false,
        connect: true,
        points: metrics
            .distribution
            .iter()
            .map(|p| (x(p.percentile), Some(value(p))))
            .collect(),
    };
    LineChart {
        title: "Latency by percentile, measured phase (last point: max)".into(),
        x_label: "percentile (%, nines scale)".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Nines {
            max_from: last + 0.25,
        },
        y_scale: YScale::Auto,
        lines: vec![
            line("corrected", 0, false, |p| p.latency_ms),
            line("service", 2, true, |p| p.service_ms),
        ],
        bands: Vec::new(),
        bounds: Vec::new(),
    }
}

fn streaming(metrics: &RunMetrics) -> LineChart {
    let p = |f: fn(&Percentiles) -> Option<f64>, pick: fn(&WindowMetrics) -> &Percentiles| {
        move |w: &WindowMetrics| f(pick(w))
    };
    let lines = vec![
        per_window(metrics, "TTFT p50", 0, false, p(|p| p.p50_ms, |w| &w.ttft)),
        per_window(metrics, "TTFT p99", 1, false, p(|p| p.p99_ms, |w| &w.ttft)),
        per_window(metrics, "ITL p50", 2, true, p(|p| p.p50_ms, |w| &w.itl)),
        per_window(metrics, "ITL p99", 3, true, p(|p| p.p99_ms, |w| &w.itl)),
    ];
    time_chart(
        metrics,
        "Streaming: time to first token and inter-token latency per window",
        "latency (ms)",
        YScale::Auto,
        lines,
    )
}

fn search(metrics: &RunMetrics) -> LineChart {
    let mut lines = Vec::new();
    let mut bounds: Vec<Bound> = Vec::new();
    for (i, s) in metrics.searches.iter().enumerate() {
        let mut trials: Vec<(f64, Option<f64>)> = s
            .trials
            .iter()
            .map(|t| (t.rate_per_s, Some(t.latency_ms)))
            .collect();
        trials.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = s
            .best_rate_per_s
            .map_or_else(|| "none".to_owned(), |r| format!("{} /s", format::short(r)));
        // Red marks failed trials; variants take the other colours.
        let color = [0, 1, 2, 4, 5, 6, 7, 8, 9].map(|c| PALETTE[c])[i % 9];
        lines.push(Line {
            name: format!("{} (best {best})", s.variant),
            color,
            dashed: false,
            markers: true,
            connect: true,
            points: trials,
        });
        // Failed trials (latency or errors over the bound) are crossed out.
        let failed: Vec<(f64, Option<f64>)> = s
            .trials
            .iter()
            .filter(|t| !t.passed)
            .map(|t| (t.rate_per_s, Some(t.latency_ms)))
            .collect();
        if !failed.is_empty() {
            lines.push(Line {
                name: format!("{} trial failed", s.variant),
                color: PALETTE[3],
                dashed: false,
                markers: true,
                connect: false,
                points: failed,
            });
        }
        let label = format!(
            "bound {} ≤ {} ms",
            format::percentile_name(s.percentile),
            format::short(s.latency_ms_max)
        );
        if !bounds.iter().any(|b| b.label == label) {
            bounds.push(Bound {
                y: s.latency_ms_max,
                label,
            });
        }
    }
    let percentile = metrics.searches.first().map_or_else(
        || "percentile".to_owned(),
        |s| format::percentile_name(s.percentile),
    );
    LineChart {
        title: "Max-throughput search: latency at each offered rate".into(),
        x_label: "offered rate (requests/s)".into(),
        y_label: format!("{percentile} latency (ms)"),
        x_axis: XAxis::Plain,
        y_scale: YScale::Auto,
        lines,
        bands: Vec::new(),
        bounds,
    }
}

fn generic(metrics: &RunMetrics, chart: &Chart) -> LineChart {
    LineChart {
        title: chart.title.clone(),
        x_label: chart.x_label.clone(),
        y_label: chart.y_label.clone(),
        x_axis: if chart.time_axis {
            XAxis::Time
        } else {
            XAxis::Plain
        },
        y_scale: YScale::Auto,
        lines: chart
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| Line {
                name: s.name.clone(),
                color: PALETTE[i % PALETTE.len()],
                dashed: false,
                markers: s.points.len() <= 30,
                connect: true,
                points: s.points.iter().map(|&(x, y)| (x, Some(y))).collect(),
            })
            .collect(),
        bands: if chart.time_axis {
            bands(metrics)
        } else {
            Vec::new()
        },
        bounds: Vec::new(),
    }
}
