//! Prometheus exposition formats for `GET /metrics`: which one a scraper asked for
//! ([`negotiate`], from its `Accept` header) and the classic text format 0.0.4 made from
//! OpenMetrics text ([`to_text_004`]).
//!
//! `prometheus-client` encodes OpenMetrics 1.0 only. Prometheus reads both, but
//! `promtool check metrics`, older scrapers and most people's `curl` expect the classic
//! format, so it is the default and OpenMetrics is served when `Accept` prefers it (as
//! client_golang does). The conversion is line by line and covers what `prometheus-client`
//! writes: it is not a general OpenMetrics parser (no timestamps are rewritten, because
//! `prometheus-client` writes none).

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Text004,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format to answer an `Accept` header with: OpenMetrics when the header gives
/// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) a quality above zero and at
/// least that of any text/plain (0.0.4 or no version), `text/*` or `*/*` entry; otherwise
/// text 0.0.4, also for a missing header or one naming nothing we serve (a scrape is never
/// refused).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let (mut open_q, mut text_q) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0f64, None::<String>);
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "version" => version = Some(v.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
        let q = q.clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text"
                if matches!(version.as_deref(), None | Some("1.0.0") | Some("0.0.1")) =>
            {
                open_q = open_q.max(q);
            }
            "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => {
                text_q = text_q.max(q);
            }
            "text/*" | "*/*" => text_q = text_q.max(q),
            _ => {}
        }
    }
    if open_q > 0.0 && open_q >= text_q {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

/// The classic text format 0.0.4 of OpenMetrics text `om`: counters' `# HELP`/`# TYPE` name
/// the `_total` sample, `_created` samples, `# UNIT` lines, exemplars and `# EOF` are
/// dropped, `info` and `stateset` become gauges (`info` samples keep their `_info` name),
/// `unknown` and `gaugehistogram` become `untyped`, and `\"` in help text (not an escape in
/// 0.0.4) becomes `"`.
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The current family: its name and OpenMetrics type.
    let mut family = String::new();
    let mut kind = String::new();
    // A `# HELP` waits for its `# TYPE`, which decides the name it is written under.
    let mut help: Option<(&str, String)> = None;
    let flush_help = |out: &mut String, help: &mut Option<(&str, String)>| {
        if let Some((name, text)) = help.take() {
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
    };
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, &mut help);
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name.to_string();
            kind = t.trim().to_string();
            let (classic_name, classic_type) = match kind.as_str() {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "unknown" | "gaugehistogram" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            match help.take() {
                Some((h, text)) if h == name => {
                    out.push_str(&format!("# HELP {classic_name} {text}\n"));
                }
                other => {
                    help = other;
                    flush_help(&mut out, &mut help);
                }
            }
            out.push_str(&format!("# TYPE {classic_name} {classic_type}\n"));
            continue;
        }
        flush_help(&mut out, &mut help);
        if line.starts_with('#') {
            continue; // `# UNIT`, `# EOF` and other comments carry nothing for 0.0.4
        }
        let sample = strip_exemplar(line);
        if kind == "counter" && sample_name(sample) == format!("{family}_created") {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    flush_help(&mut out, &mut help);
    out
}

/// A sample line's metric name (up to `{` or a space).
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// A sample line without its exemplar (` # {…} value`), which 0.0.4 does not have. A `#`
/// inside a quoted label value is not an exemplar.
fn strip_exemplar(line: &str) -> &str {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.x sends when OpenMetrics is enabled, and what it sends without.
    const PROMETHEUS_OM: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_CLASSIC: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

    #[test]
    fn classic_text_is_the_default_and_openmetrics_is_served_when_preferred() {
        assert_eq!(negotiate(None), Format::Text004);
        assert_eq!(negotiate(Some("*/*")), Format::Text004);
        assert_eq!(negotiate(Some(PROMETHEUS_CLASSIC)), Format::Text004);
        assert_eq!(negotiate(Some("application/json")), Format::Text004);
        assert_eq!(negotiate(Some(PROMETHEUS_OM)), Format::OpenMetrics);
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some(
                "Application/OpenMetrics-Text; Version=1.0.0; q=0.9, text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        // Asked for, but less than text; refused with q=0; a version we do not write.
        assert_eq!(
            negotiate(Some("text/plain;q=1, application/openmetrics-text;q=0.5")),
            Format::Text004
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Text004
        );
    }

    #[test]
    fn counters_are_declared_under_their_total_name_and_openmetrics_only_lines_go() {
        let om = "# HELP app_requests Requests \\\"served\\\".\n\
                  # TYPE app_requests counter\n\
                  # UNIT app_requests requests\n\
                  app_requests_total{code=\"200\"} 3 # {trace_id=\"a#b\"} 1.0\n\
                  app_requests_created{code=\"200\"} 1.7e9\n\
                  # HELP app_depth Queue depth.\n\
                  # TYPE app_depth gauge\n\
                  app_depth{q=\"x # y\"} 2\n\
                  # HELP app_build Build.\n\
                  # TYPE app_build info\n\
                  app_build_info{version=\"1\"} 1\n\
                  # EOF\n";
        let text = to_text_004(om);
        assert_eq!(
            text,
            "# HELP app_requests_total Requests \"served\".\n\
             # TYPE app_requests_total counter\n\
             app_requests_total{code=\"200\"} 3\n\
             # HELP app_depth Queue depth.\n\
             # TYPE app_depth gauge\n\
             app_depth{q=\"x # y\"} 2\n\
             # HELP app_build_info Build.\n\
             # TYPE app_build_info gauge\n\
             app_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn histograms_pass_through_unchanged() {
        let om = "# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_sum 0.5\nh_seconds_count 1\nh_seconds_bucket{le=\"1.0\"} 1\nh_seconds_bucket{le=\"+Inf\"} 1\n# EOF\n";
        assert_eq!(to_text_004(om), om.trim_end_matches("# EOF\n"));
    }
}
