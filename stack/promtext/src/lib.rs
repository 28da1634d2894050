//! The two text formats Prometheus reads, and which one a scraper asked for: shared by
//! every `GET /metrics` in the stack (the inference server's and the trainer's control
//! endpoint), so both answer the same `Accept` header the same way.
//!
//! `prometheus-client` encodes OpenMetrics 1.0 only (prometheus/client_rust#51 asks for
//! the classic format; it is open). `promtool check metrics`, `curl` users and older
//! scrapers read the classic text format 0.0.4, so `/metrics` answers in it unless the
//! `Accept` header prefers OpenMetrics ([`negotiate`]), and [`to_text_004`] rewrites the
//! registry's OpenMetrics text into it.
//!
//! Why a converter and not a crate: the `prometheus` crate writes 0.0.4, but only from its
//! own registry, so every metric would be kept twice or a process would leave
//! `prometheus-client` (one registry per process, STYLE.md rule 10). What differs between
//! the formats for what `prometheus-client` writes is a handful of line rules (below), so
//! the converter is small and unit-tested; `promtool` and a real Prometheus scrape check
//! its output end to end (`.ci/clients/prometheus_check.sh`). The `Accept` parser is
//! hand-written for the same reason it is small: the `mime` crate in the lock file parses
//! one media type, not a list with q-values.
//!
//! Not here: the HTTP handlers (the server's `api::ops`, the trainer's `control`), the
//! registries and metric names (each process's `metrics` module), or a general OpenMetrics
//! parser: the converter handles the lines `prometheus-client` writes (no timestamps, help
//! text unescaped). No I/O and no dependencies: plain functions of strings.

/// A text exposition format `/metrics` can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format 0.0.4: the default.
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

/// How well one `Accept` range fits a format: more specific ranges override less specific
/// ones (RFC 9110 §12.5.1), whatever their order.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Fit {
    /// 0 `*/*`, 1 `type/*`, 2 `type/subtype`, 3 `type/subtype; version=V`.
    specificity: u8,
    q: f64,
}

/// Versions of each format's media type that [`Format`] output satisfies. OpenMetrics
/// 0.0.1 and 1.0.0 text differ in nothing `prometheus-client` writes.
const OPENMETRICS_VERSIONS: [&str; 2] = ["1.0.0", "0.0.1"];
const TEXT_VERSIONS: [&str; 1] = ["0.0.4"];

/// Most ranges read from one `Accept` header; the rest are ignored (a bound on the work an
/// unauthenticated header can cause; Prometheus sends at most five).
pub const MAX_ACCEPT_RANGES: usize = 32;

/// The format to answer a request whose `Accept` header is `accept`: OpenMetrics when the
/// header names `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) with a
/// quality above 0 and at least that given to the classic format (`text/plain` with
/// version 0.0.4 or none, `text/*` or `*/*`, the most specific range deciding); else the
/// classic format — also with no header, a malformed one or one naming nothing served here
/// (a scrape is never refused). This picks what Prometheus's own client library
/// (client_golang's `expfmt.Negotiate`) picks for every header Prometheus sends.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let (mut open, mut text) = (None::<Fit>, None::<Fit>);
    for range in accept.split(',').take(MAX_ACCEPT_RANGES) {
        let Some(range) = MediaRange::parse(range) else {
            continue;
        };
        // Wildcards stand for the classic format only: OpenMetrics is served when asked
        // for by name, so `curl` (`*/*`) and browsers get the classic format.
        if let Some(fit) = range.fit("application", "openmetrics-text", &OPENMETRICS_VERSIONS) {
            if fit.specificity >= 2 && open.is_none_or(|o| fit.specificity > o.specificity) {
                open = Some(fit);
            }
        }
        if let Some(fit) = range.fit("text", "plain", &TEXT_VERSIONS) {
            if text.is_none_or(|t| fit.specificity > t.specificity) {
                text = Some(fit);
            }
        }
    }
    match open {
        Some(o) if o.q > 0.0 && o.q >= text.map_or(0.0, |t| t.q) => Format::OpenMetrics,
        _ => Format::Text004,
    }
}

/// One `type/subtype; param=value; q=Q` range of an `Accept` header.
#[derive(Debug)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    q: f64,
}

impl<'a> MediaRange<'a> {
    /// `None` for a range that is not `type/subtype` or has a malformed `q`.
    fn parse(range: &'a str) -> Option<Self> {
        let mut parts = range.split(';').map(str::trim);
        let (kind, subtype) = parts.next()?.split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let (mut version, mut q) = (None, 1.0);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim() {
                k if k.eq_ignore_ascii_case("q") => {
                    q = value
                        .parse::<f64>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))?;
                }
                k if k.eq_ignore_ascii_case("version") => version = Some(value),
                _ => {}
            }
        }
        Some(Self {
            kind,
            subtype,
            version,
            q,
        })
    }

    /// How this range fits `kind/subtype` in one of `versions`; `None` when it does not.
    fn fit(&self, kind: &str, subtype: &str, versions: &[&str]) -> Option<Fit> {
        let specificity = match (self.kind, self.subtype) {
            ("*", "*") => 0,
            (k, "*") if k.eq_ignore_ascii_case(kind) => 1,
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => {
                match self.version {
                    None => 2,
                    Some(v) if versions.contains(&v) => 3,
                    Some(_) => return None,
                }
            }
            _ => return None,
        };
        Some(Fit {
            specificity,
            q: self.q,
        })
    }
}

/// The classic text format 0.0.4 of the OpenMetrics text `om` that `prometheus-client`
/// writes. Per family: a counter's `# HELP` and `# TYPE` name its `_total` sample, an
/// `info` becomes a gauge named `_info`, and `unknown`, `stateset` and `gaugehistogram`
/// become `untyped`. Dropped: `# UNIT` and `# EOF` lines, `_created` samples and exemplars.
/// Sample lines are otherwise kept as they are: label and value syntax are the same in both.
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The family whose samples follow, and its OpenMetrics type.
    let (mut family, mut kind) = ("", "");
    // `prometheus-client` writes a family's `# HELP` just before its `# TYPE`, which decides
    // the name the help is written under: it waits here for it.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, classic) = classic_descriptor(family, kind);
            match help.take() {
                Some((of, text)) if of == family => {
                    out.push_str(&format!("# HELP {name} {text}\n"))
                }
                other => flush_help(&mut out, other),
            }
            out.push_str(&format!("# TYPE {name} {classic}\n"));
            continue;
        }
        flush_help(&mut out, help.take());
        if line.starts_with('#') {
            // `# UNIT`, `# EOF`: OpenMetrics only.
        } else if !is_created(line, family, kind) {
            out.push_str(strip_exemplar(line));
            out.push('\n');
        }
    }
    flush_help(&mut out, help);
    out
}

/// Writes a `# HELP` line no `# TYPE` followed, under its own name.
fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {name} {text}\n"));
    }
}

/// The 0.0.4 name and type of an OpenMetrics family `name` of type `kind`.
fn classic_descriptor(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" => (format!("{name}_total"), "counter"),
        "gauge" => (name.to_string(), "gauge"),
        "histogram" => (name.to_string(), "histogram"),
        "summary" => (name.to_string(), "summary"),
        "info" => (format!("{name}_info"), "gauge"),
        _ => (name.to_string(), "untyped"),
    }
}

/// Whether a sample line is the `_created` sample of a counter, histogram or summary
/// `family` (0.0.4 has no such samples).
fn is_created(line: &str, family: &str, kind: &str) -> bool {
    let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
    matches!(kind, "counter" | "histogram" | "summary")
        && name.strip_prefix(family) == Some("_created")
}

/// A sample line without its exemplar (` # {…} value`), which 0.0.4 does not have. A `#`
/// inside a quoted label value starts none.
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

    /// What Prometheus 2.x sends by default (OpenMetrics preferred).
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// Prometheus 2.49+ with `scrape_protocols: [OpenMetricsText1.0.0]`; Prometheus 3's
    /// default.
    const PROMETHEUS_2_49_OM_ONLY: &str =
        "application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.4";
    const PROMETHEUS_3_DEFAULT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// Prometheus with OpenMetrics turned off (`scrape_protocols: [PrometheusText0.0.4]`).
    const PROMETHEUS_CLASSIC: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

    #[test]
    fn prometheus_gets_openmetrics_when_it_asks_for_it_and_classic_text_otherwise() {
        for accept in [PROMETHEUS_2, PROMETHEUS_2_49_OM_ONLY, PROMETHEUS_3_DEFAULT] {
            assert_eq!(negotiate(Some(accept)), Format::OpenMetrics, "{accept}");
        }
        assert_eq!(negotiate(Some(PROMETHEUS_CLASSIC)), Format::Text004);
    }

    #[test]
    fn no_header_curl_browsers_and_unknown_types_get_classic_text() {
        for accept in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Some("application/json"),
            Some("application/*"),
            Some("garbage;;;,,=="),
        ] {
            assert_eq!(negotiate(accept), Format::Text004, "{accept:?}");
        }
    }

    #[test]
    fn q_values_decide_between_the_formats() {
        let cases = [
            ("application/openmetrics-text", Format::OpenMetrics),
            (
                "application/openmetrics-text;q=0.2, */*;q=0.1",
                Format::OpenMetrics,
            ),
            (
                "text/plain;q=0.9, application/openmetrics-text;q=0.5",
                Format::Text004,
            ),
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.9",
                Format::OpenMetrics,
            ),
            ("*/*, application/openmetrics-text;q=0.5", Format::Text004),
            // Equal quality: OpenMetrics, since it was named.
            (
                "text/plain, application/openmetrics-text",
                Format::OpenMetrics,
            ),
            ("application/openmetrics-text;q=0", Format::Text004),
            ("application/openmetrics-text;q=0.000", Format::Text004),
            // A more specific range overrides a wildcard, before or after it.
            (
                "text/plain;q=0, */*, application/openmetrics-text;q=0.1",
                Format::OpenMetrics,
            ),
            (
                "application/openmetrics-text;q=0.3, text/*;q=0.1, text/plain;q=0.4",
                Format::Text004,
            ),
            // Malformed q: the range is ignored.
            ("application/openmetrics-text;q=2", Format::Text004),
            ("application/openmetrics-text;q=high", Format::Text004),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(Some(accept)), want, "{accept}");
        }
    }

    #[test]
    fn versions_parameters_and_case_are_read_as_http_says() {
        let cases = [
            (
                "application/openmetrics-text; version=0.0.1",
                Format::OpenMetrics,
            ),
            (
                "application/openmetrics-text; version=\"1.0.0\"",
                Format::OpenMetrics,
            ),
            (
                "Application/OpenMetrics-Text; Version=1.0.0; Q=0.9, text/plain;q=0.5",
                Format::OpenMetrics,
            ),
            (
                "application/openmetrics-text; charset=utf-8; escaping=underscores",
                Format::OpenMetrics,
            ),
            // A version not written here is not a match.
            (
                "application/openmetrics-text;version=2.0.0",
                Format::Text004,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(Some(accept)), want, "{accept}");
        }
    }

    #[test]
    fn ranges_past_the_bound_are_ignored() {
        let mut accept = "application/json,".repeat(MAX_ACCEPT_RANGES);
        accept.push_str("application/openmetrics-text");
        assert_eq!(negotiate(Some(&accept)), Format::Text004);
    }

    #[test]
    fn content_types_name_format_version_and_charset() {
        assert_eq!(
            Format::Text004.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn counters_are_declared_under_their_total_name_and_openmetrics_only_lines_go() {
        let om = "# HELP app_requests Requests.\n\
                  # TYPE app_requests counter\n\
                  app_requests_total{code=\"200\"} 3 # {trace_id=\"a\"} 1.0\n\
                  app_requests_created{code=\"200\"} 1.7e9\n\
                  # HELP app_wait_seconds Wait.\n\
                  # TYPE app_wait_seconds histogram\n\
                  # UNIT app_wait_seconds seconds\n\
                  app_wait_seconds_sum 0.5\n\
                  app_wait_seconds_count 1\n\
                  app_wait_seconds_bucket{le=\"1.0\"} 1\n\
                  app_wait_seconds_bucket{le=\"+Inf\"} 1\n\
                  app_wait_seconds_created 1.7e9\n\
                  # HELP app_depth Queue depth.\n\
                  # TYPE app_depth gauge\n\
                  app_depth{q=\"x # y\"} 2\n\
                  # HELP app_build Build.\n\
                  # TYPE app_build info\n\
                  app_build_info{version=\"1\"} 1\n\
                  # HELP vllm:prompt_tokens Prompt tokens.\n\
                  # TYPE vllm:prompt_tokens counter\n\
                  vllm:prompt_tokens_total{model_name=\"m\"} 7\n\
                  # EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP app_requests_total Requests.\n\
             # TYPE app_requests_total counter\n\
             app_requests_total{code=\"200\"} 3\n\
             # HELP app_wait_seconds Wait.\n\
             # TYPE app_wait_seconds histogram\n\
             app_wait_seconds_sum 0.5\n\
             app_wait_seconds_count 1\n\
             app_wait_seconds_bucket{le=\"1.0\"} 1\n\
             app_wait_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP app_depth Queue depth.\n\
             # TYPE app_depth gauge\n\
             app_depth{q=\"x # y\"} 2\n\
             # HELP app_build_info Build.\n\
             # TYPE app_build_info gauge\n\
             app_build_info{version=\"1\"} 1\n\
             # HELP vllm:prompt_tokens_total Prompt tokens.\n\
             # TYPE vllm:prompt_tokens_total counter\n\
             vllm:prompt_tokens_total{model_name=\"m\"} 7\n"
        );
    }

    #[test]
    fn a_gauge_named_like_a_created_sample_is_kept() {
        let om =
            "# HELP jobs_created Jobs made.\n# TYPE jobs_created gauge\njobs_created 4\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP jobs_created Jobs made.\n# TYPE jobs_created gauge\njobs_created 4\n"
        );
    }
}
