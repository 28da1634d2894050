//! One line-chart renderer (plotters, SVG) behind every plot of the report.
//!
//! A [`LineChart`] is plain data: lines with gaps, shaded x intervals (faults, warm-up),
//! horizontal reference lines (bounds), axis kinds. [`render`] turns it into an SVG string
//! with a legend beside the plot, so the legend never hides data. Charts with nothing to draw
//! render a titled "no data" panel instead of failing.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Pixel size of every plot.
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 440;
const LEGEND_WIDTH: u32 = 220;
const FONT: &str = "sans-serif";

/// Tableau 10, the matplotlib default cycle: distinct and colour-blind friendly.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const FAULT: RGBColor = RGBColor(214, 39, 40);
const WARMUP: RGBColor = RGBColor(120, 120, 120);
const RECOVERING: RGBColor = RGBColor(255, 127, 14);
const BOUND: RGBColor = RGBColor(200, 0, 0);

/// One series; a `None` y leaves a gap.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub color: RGBColor,
    pub dashed: bool,
    /// Draw a dot at every point (sparse data such as search trials).
    pub markers: bool,
    /// Join the points with a line (false: markers only).
    pub connect: bool,
    pub points: Vec<(f64, Option<f64>)>,
}

/// A shaded x interval.
#[derive(Debug, Clone)]
pub struct Band {
    pub start: f64,
    /// `None`: to the right edge (a fault never healed).
    pub end: Option<f64>,
    pub label: String,
    pub kind: BandKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandKind {
    Fault,
    /// After a fault's heal, before it has recovered (the `recovering` phase).
    Recovering,
    Warmup,
}

/// A horizontal dashed reference line (an SLO or search bound).
#[derive(Debug, Clone)]
pub struct Bound {
    pub y: f64,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Seconds on the scenario clock.
    Time,
    /// Nines of a percentile: x = -log10(1 - p/100), labelled as percentiles; ticks at or
    /// past `max_from` are labelled "max".
    Nines {
        max_from: f64,
    },
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YScale {
    Linear,
    Log,
    /// Log when the positive values span more than two decades, else linear.
    Auto,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub y_scale: YScale,
    pub lines: Vec<Line>,
    pub bands: Vec<Band>,
    pub bounds: Vec<Bound>,
}

/// Renders `chart` to an SVG document (plotters gives it a `viewBox`, so it scales inlined).
///
/// # Errors
/// A plotters drawing error, as text (drawing into a `String` does not fail in practice).
pub fn render(chart: &LineChart) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult<'a> =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

fn use_log(chart: &LineChart) -> bool {
    match chart.y_scale {
        YScale::Linear => false,
        YScale::Log => true,
        YScale::Auto => {
            let ys = chart
                .lines
                .iter()
                .flat_map(|l| l.points.iter().filter_map(|p| p.1))
                .filter(|y| y.is_finite() && *y > 0.0);
            let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
                (lo.min(y), hi.max(y))
            });
            lo.is_finite() && hi / lo > 100.0
        }
    }
}

/// `(lo, hi)` of `values`, widened when empty of width.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    if hi - lo < 1e-9 {
        let pad = if lo.abs() > 1e-9 { lo.abs() * 0.5 } else { 1.0 };
        return Some((lo - pad, hi + pad));
    }
    Some((lo, hi))
}

/// A log10 tick value as the number it stands for.
fn log_tick(v: f64) -> String {
    crate::format::short(10f64.powf(v))
}

/// A nines tick as the percentile it stands for: 1 → 90, 2 → 99, 3 → 99.9.
fn nines_tick(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = ((x.ceil() as i32) - 1).clamp(0, 6) as usize;
    let s = format!("{p:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn draw<'a>(root: &Area<'a>, chart: &LineChart) -> DrawResult<'a> {
    root.fill(&WHITE)?;
    let area = root.titled(&chart.title, (FONT, 20).into_font().color(&BLACK))?;
    let log = use_log(chart);
    let ty = |y: f64| -> Option<f64> {
        if !y.is_finite() {
            None
        } else if log {
            (y > 0.0).then(|| y.log10())
        } else {
            Some(y)
        }
    };
    // Each line as runs of consecutive drawable points.
    let segments: Vec<Vec<Vec<(f64, f64)>>> = chart
        .lines
        .iter()
        .map(|line| {
            let mut runs = vec![Vec::new()];
            for &(x, y) in &line.points {
                match y.and_then(ty).filter(|_| x.is_finite()) {
                    Some(y) => runs.last_mut().expect("runs starts non-empty").push((x, y)),
                    None => runs.push(Vec::new()),
                }
            }
            runs.retain(|r| !r.is_empty());
            runs
        })
        .collect();
    let data = || segments.iter().flatten().flatten();
    let Some((mut x0, mut x1)) = extent(data().map(|p| p.0)) else {
        return no_data(&area);
    };
    let bounds: Vec<(f64, &str)> = chart
        .bounds
        .iter()
        .filter_map(|b| ty(b.y).map(|y| (y, b.label.as_str())))
        .collect();
    let Some((y_lo, y_hi)) = extent(data().map(|p| p.1).chain(bounds.iter().map(|b| b.0))) else {
        return no_data(&area);
    };
    if chart.x_axis == XAxis::Time {
        for band in &chart.bands {
            x0 = x0.min(band.start);
            x1 = x1.max(band.end.unwrap_or(band.start));
        }
    }
    if let XAxis::Nines { .. } = chart.x_axis {
        x0 = 0.0;
    }
    let (y0, y1) = if log {
        (y_lo.floor(), y_hi.ceil().max(y_lo.floor() + 1.0))
    } else if y_lo >= 0.0 {
        (0.0, y_hi * 1.08)
    } else {
        let pad = (y_hi - y_lo) * 0.08;
        (y_lo - pad, y_hi + pad)
    };

    let (plot_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut ctx = ChartBuilder::on(&plot_area)
        .margin(8)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;

    let x_fmt = |x: &f64| match chart.x_axis {
        XAxis::Nines { max_from } if *x >= max_from - 1e-9 => "max".to_owned(),
        XAxis::Nines { .. } => nines_tick(*x),
        _ => crate::format::short(*x),
    };
    let y_fmt = |y: &f64| {
        if log {
            log_tick(*y)
        } else {
            crate::format::short(*y)
        }
    };
    // Log axes with three decades or more: one tick per decade.
    let y_labels = if log && y1 - y0 >= 3.0 {
        (y1 - y0) as usize + 1
    } else {
        10
    };
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(match chart.x_axis {
            XAxis::Nines { .. } => (x1.ceil() as usize) + 1,
            _ => 12,
        })
        .y_labels(y_labels)
        .max_light_lines(2)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .bold_line_style(RGBColor(220, 220, 220))
        .light_line_style(RGBColor(242, 242, 242))
        .draw()?;

    // Bands below everything else.
    let width = x1 - x0;
    for band in &chart.bands {
        let (color, alpha) = match band.kind {
            BandKind::Fault => (FAULT, 0.16),
            BandKind::Recovering => (RECOVERING, 0.14),
            BandKind::Warmup => (WARMUP, 0.14),
        };
        let start = band.start.max(x0);
        let end = band.end.unwrap_or(x1).min(x1);
        if end - start < width * 0.004 {
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(start, y0), (start, y1)],
                color.mix(0.7).stroke_width(2),
            )))?;
        } else {
            ctx.draw_series(std::iter::once(Rectangle::new(
                [(start, y0), (end, y1)],
                color.mix(alpha).filled(),
            )))?;
        }
        let label_style = (FONT, 12).into_font().color(&color.mix(0.95));
        ctx.draw_series(std::iter::once(
            EmptyElement::at((start, y1)) + Text::new(band.label.clone(), (4, 4), label_style),
        ))?;
    }
    for &(y, _) in &bounds {
        ctx.draw_series(DashedLineSeries::new(
            vec![(x0, y), (x1, y)],
            8,
            5,
            BOUND.stroke_width(2),
        ))?;
    }
    for (line, runs) in chart.lines.iter().zip(&segments) {
        let style = line.color.stroke_width(2);
        for run in runs {
            if !line.connect {
                // markers only
            } else if line.dashed {
                ctx.draw_series(DashedLineSeries::new(run.clone(), 7, 4, style))?;
            } else {
                ctx.draw_series(LineSeries::new(run.clone(), style))?;
            }
            if !line.connect {
                ctx.draw_series(
                    run.iter()
                        .map(|&p| Cross::new(p, 6, line.color.stroke_width(3))),
                )?;
            } else if line.markers || run.len() == 1 {
                ctx.draw_series(run.iter().map(|&p| Circle::new(p, 3, line.color.filled())))?;
            }
        }
    }
    legend(&legend_area, chart, &bounds)
}

/// The legend, drawn beside the plot: one row per line, bound and band kind.
fn legend<'a>(area: &Area<'a>, chart: &LineChart, bounds: &[(f64, &str)]) -> DrawResult<'a> {
    let text = (FONT, 13).into_font().color(&BLACK);
    let mut y = 24;
    let row = |y: i32| (y, y + 18);
    let (x_sample, x_text) = (6, 40);
    let centre = Pos::new(HPos::Left, VPos::Center);
    for line in &chart.lines {
        if line.points.iter().all(|p| p.1.is_none()) {
            continue;
        }
        let style = line.color.stroke_width(2);
        if !line.connect {
            area.draw(&Cross::new(
                (x_sample + 14, y),
                6,
                line.color.stroke_width(3),
            ))?;
        } else if line.dashed {
            area.draw(&PathElement::new(
                vec![(x_sample, y), (x_sample + 11, y)],
                style,
            ))?;
            area.draw(&PathElement::new(
                vec![(x_sample + 17, y), (x_sample + 28, y)],
                style,
            ))?;
        } else {
            area.draw(&PathElement::new(
                vec![(x_sample, y), (x_sample + 28, y)],
                style,
            ))?;
        }
        if line.markers && line.connect {
            area.draw(&Circle::new((x_sample + 14, y), 3, line.color.filled()))?;
        }
        area.draw(&Text::new(
            line.name.clone(),
            (x_text, y),
            text.clone().pos(centre),
        ))?;
        y = row(y).1;
    }
    for (_, label) in bounds {
        area.draw(&PathElement::new(
            vec![(x_sample, y), (x_sample + 11, y)],
            BOUND.stroke_width(2),
        ))?;
        area.draw(&PathElement::new(
            vec![(x_sample + 17, y), (x_sample + 28, y)],
            BOUND.stroke_width(2),
        ))?;
        area.draw(&Text::new(
            label.to_string(),
            (x_text, y),
            text.clone().pos(centre),
        ))?;
        y = row(y).1;
    }
    for (kind, color, alpha, label) in [
        (BandKind::Warmup, WARMUP, 0.14, "warm-up"),
        (BandKind::Fault, FAULT, 0.16, "fault (injected → healed)"),
        (BandKind::Recovering, RECOVERING, 0.14, "recovering"),
    ] {
        if chart.x_axis == XAxis::Time && chart.bands.iter().any(|b| b.kind == kind) {
            area.draw(&Rectangle::new(
                [(x_sample, y - 7), (x_sample + 28, y + 7)],
                color.mix(alpha).filled(),
            ))?;
            area.draw(&Text::new(label, (x_text, y), text.clone().pos(centre)))?;
            y = row(y).1;
        }
    }
    Ok(())
}

fn no_data<'a>(area: &Area<'a>) -> DrawResult<'a> {
    let (w, h) = area.dim_in_pixel();
    let style = (FONT, 22)
        .into_font()
        .color(&RGBColor(120, 120, 120))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, Option<f64>)>, y_scale: YScale) -> LineChart {
        LineChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_axis: XAxis::Time,
            y_scale,
            lines: vec![Line {
                name: "only".into(),
                color: PALETTE[0],
                dashed: true,
                markers: false,
                connect: true,
                points,
            }],
            bands: vec![Band {
                start: 3.0,
                end: None,
                label: "never healed".into(),
                kind: BandKind::Fault,
            }],
            bounds: vec![Bound {
                y: f64::NAN,
                label: "nan bound".into(),
            }],
        }
    }

    #[test]
    fn odd_data_renders_without_panic() {
        let odd = vec![
            (0.0, Some(f64::NAN)),
            (1.0, None),
            (2.0, Some(0.0)),
            (3.0, Some(f64::INFINITY)),
            (f64::NAN, Some(1.0)),
            (4.0, Some(-1.0)),
        ];
        for scale in [YScale::Linear, YScale::Log, YScale::Auto] {
            let svg = render(&chart(odd.clone(), scale)).expect("renders");
            // On a log axis none of these points is drawable.
            assert_eq!(svg.contains("no data"), scale == YScale::Log, "{scale:?}");
            let single = render(&chart(vec![(5.0, Some(7.0))], scale)).expect("renders");
            assert!(single.contains("<circle"), "a lone point is drawn as a dot");
            let nothing = render(&chart(vec![(1.0, Some(-3.0))], YScale::Log)).expect("renders");
            assert!(nothing.contains("no data"));
        }
    }

    #[test]
    fn nines_ticks_read_as_percentiles() {
        assert_eq!(nines_tick(0.0), "0");
        assert_eq!(nines_tick(1.0), "90");
        assert_eq!(nines_tick(2.0), "99");
        assert_eq!(nines_tick(3.0), "99.9");
        assert_eq!(nines_tick(4.0), "99.99");
        assert_eq!(log_tick(2.0), "100");
    }
}
