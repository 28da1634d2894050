//! What to send, how fast and for how long; validated before any socket opens.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};

/// Default width of [`crate::WindowStats`] windows (metrics.md: 1 s windows).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);
/// Default width of [`crate::FineWindow`]s (failover time is computed on 100 ms windows).
pub const DEFAULT_FINE_WINDOW: Duration = Duration::from_millis(100);

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrival {
    /// Evenly spaced: request *i* at `t0 + i/rate` (piecewise across rate steps).
    #[default]
    Constant,
    /// A Poisson process with the (stepped) rate, gaps drawn from the seeded RNG.
    Poisson,
}

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Label used in logs.
    pub name: String,
    pub method: Method,
    /// Path and query, appended to the target's base path (e.g. `/v1/completions?x=1`).
    pub path: String,
    /// Extra headers; `host` is set from the target.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Parse the body as server-sent events and record TTFT/ITL/TPOT;
    /// `data: [DONE]` ends the stream.
    pub streaming: bool,
    /// Relative weight in the mix (> 0).
    pub weight: f64,
}

impl RequestTemplate {
    /// A `GET path` template with weight 1.
    pub fn get(path: impl Into<String>) -> Self {
        RequestTemplate {
            name: "get".to_owned(),
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            streaming: false,
            weight: 1.0,
        }
    }
}

/// From `at` (since load start, warm-up included) until the next step, the offered rate
/// is `rate_per_s × multiplier`. Before the first step the multiplier is 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStep {
    pub at: Duration,
    pub multiplier: f64,
}

/// What every run needs, however it is paced: where to send, what to send, over how many
/// connections, for how long, and how to window the results.
///
/// On its own it describes a closed-loop run ([`crate::run_closed_loop`]): each
/// connection sends its next request as soon as the previous one completes (like `wrk`),
/// so latency equals service time and there is no schedule to omit. An open-loop run adds
/// a schedule to it ([`OpenLoopSpec`]).
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Base URLs (`http://host:port[/prefix]`), used round-robin.
    pub targets: Vec<Uri>,
    /// Weighted request mix; the choice per request comes from the seeded RNG.
    pub requests: Vec<RequestTemplate>,
    /// Keep-alive connections per target (like `wrk -c`). Closed loop: each has one
    /// request in flight.
    pub connections: usize,
    /// Unmeasured phase before `duration`.
    pub warmup: Duration,
    /// Measured phase, after warm-up.
    pub duration: Duration,
    /// Per-request limit, from the actual send. Open loop: also the longest a request may
    /// wait for a free connection, from its intended send; a connection that comes free
    /// later drops it unsent (`dropped_by_generator`). A sent request gets the whole limit
    /// again, so a success can end up to about twice this after its intended send.
    pub timeout: Duration,
    pub seed: u64,
    /// Width of [`crate::WindowStats`].
    pub window: Duration,
    /// Width of [`crate::FineWindow`].
    pub fine_window: Duration,
}

impl LoadSpec {
    /// A spec with the documented defaults: 10 connections, no warm-up, 10 s, 10 s
    /// timeout, seed 0, [`DEFAULT_WINDOW`] and [`DEFAULT_FINE_WINDOW`].
    pub fn new(targets: Vec<Uri>, requests: Vec<RequestTemplate>) -> Self {
        LoadSpec {
            targets,
            requests,
            connections: 10,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            seed: 0,
            window: DEFAULT_WINDOW,
            fine_window: DEFAULT_FINE_WINDOW,
        }
    }

    /// Checks every field and reports every problem at once.
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut p = Problems::default();
        self.check(&mut p);
        p.into_result()
    }

    fn check(&self, p: &mut Problems) {
        if self.targets.is_empty() {
            p.push("targets", "[]", "at least one base URL");
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.scheme_str() != Some("http") || t.authority().is_none() {
                p.push(
                    format!("targets[{i}]"),
                    t,
                    "an http:// URL with a host (https is not supported)",
                );
            }
        }
        if self.requests.is_empty() {
            p.push("requests", "[]", "at least one request template");
        }
        for (i, r) in self.requests.iter().enumerate() {
            if !(r.weight.is_finite() && r.weight > 0.0) {
                p.push(
                    format!("requests[{i}].weight"),
                    r.weight,
                    "a finite number > 0",
                );
            }
            if !r.path.starts_with('/') {
                p.push(
                    format!("requests[{i}].path"),
                    &r.path,
                    "a path starting with '/'",
                );
            }
        }
        if self.connections == 0 {
            p.push("connections", 0, "at least 1");
        }
        if self.timeout.is_zero() {
            p.push("timeout", "0s", "a duration > 0");
        }
        if self.window.is_zero() {
            p.push("window", "0s", "a duration > 0");
        }
        if self.fine_window.is_zero() {
            p.push("fine_window", "0s", "a duration > 0");
        }
        if (self.warmup + self.duration).is_zero() {
            p.push("duration", "0s", "warmup + duration > 0");
        }
    }
}

/// An open-loop (fixed-schedule, coordinated-omission corrected) run: a [`LoadSpec`]
/// plus the schedule its requests are released on.
#[derive(Debug, Clone)]
pub struct OpenLoopSpec {
    /// Targets, mix, connections, phases, timeout, seed and windows.
    pub load: LoadSpec,
    /// Base offered rate, requests per second across all targets.
    pub rate_per_s: f64,
    pub arrival: Arrival,
    /// Rate multipliers over time (load spikes); sorted by `at`.
    pub rate_steps: Vec<RateStep>,
    /// Most connections per target the run may hold (k6's `maxVUs`, vegeta's
    /// `-max-connections`): when a request comes due and every connection to its target
    /// is busy, the load thread opens another for it instead of making it wait, up to
    /// this many (at least `load.connections`). The extra connections stay open for the
    /// rest of the run and are counted in [`crate::LoadReport::connections`]. `None`: the
    /// pool stays at `load.connections` and such a request waits for one to come free
    /// (its wait is send lag).
    pub max_connections: Option<usize>,
}

impl OpenLoopSpec {
    /// A spec with [`LoadSpec::new`]'s defaults, constant arrival and no rate steps.
    pub fn new(targets: Vec<Uri>, requests: Vec<RequestTemplate>, rate_per_s: f64) -> Self {
        OpenLoopSpec {
            load: LoadSpec::new(targets, requests),
            rate_per_s,
            arrival: Arrival::Constant,
            rate_steps: Vec::new(),
            max_connections: None,
        }
    }

    /// The pool's bound per target: `max_connections`, or `load.connections` without one.
    pub fn connection_limit(&self) -> usize {
        self.max_connections
            .unwrap_or(self.load.connections)
            .max(self.load.connections)
    }

    /// Checks every field, the shared ones first, and reports every problem at once.
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut p = Problems::default();
        self.load.check(&mut p);
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0) {
            p.push("rate_per_s", self.rate_per_s, "a finite number > 0");
        }
        let mut last = Duration::ZERO;
        for (i, s) in self.rate_steps.iter().enumerate() {
            if !(s.multiplier.is_finite() && s.multiplier >= 0.0) {
                p.push(
                    format!("rate_steps[{i}].multiplier"),
                    s.multiplier,
                    "a finite number >= 0",
                );
            }
            if s.at < last {
                p.push(
                    format!("rate_steps[{i}].at"),
                    format!("{:?}", s.at),
                    "steps sorted by `at`",
                );
            }
            last = s.at;
        }
        if let Some(max) = self.max_connections {
            if max < self.load.connections {
                p.push(
                    "max_connections",
                    max,
                    "at least `connections` (the pool starts at `connections` and only grows)",
                );
            }
        }
        p.into_result()
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The field path, e.g. `requests[1].weight`.
    pub field: String,
    /// The offending value as written.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}: expected {}",
            self.field, self.value, self.expected
        )
    }
}

#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, value: impl fmt::Display, expected: &'static str) {
        self.0.push(SpecProblem {
            field: field.into(),
            value: value.to_string(),
            expected,
        });
    }
    fn into_result(self) -> Result<(), LoadError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(LoadError::InvalidSpec(self.0))
        }
    }
}

/// Why a run could not start. Once a run starts, failures are counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load spec: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<SpecProblem>),
    #[error("cannot resolve target {target}: {source}")]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "request template {template:?} for target {target} does not form a valid request: {reason}"
    )]
    BadRequest {
        template: String,
        target: String,
        reason: String,
    },
    #[error("the load generator cannot open its connections: {0}")]
    Resources(String),
    #[error("load generator task failed: {0}")]
    Internal(String),
}

impl LoadError {
    /// A bounded label for failure metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LoadError::InvalidSpec(_) => "invalid_spec",
            LoadError::Resolve { .. } => "resolve",
            LoadError::BadRequest { .. } => "bad_request",
            LoadError::Resources(_) => "resources",
            LoadError::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_problem_with_its_field() {
        let mut spec = OpenLoopSpec::new(
            vec![Uri::from_static("https://x:1")],
            vec![RequestTemplate {
                weight: 0.0,
                ..RequestTemplate::get("nope")
            }],
            -1.0,
        );
        spec.load.connections = 0;
        let err = spec.validate().expect_err("invalid");
        let LoadError::InvalidSpec(problems) = &err else {
            panic!("unexpected {err}")
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "targets[0]",
                "requests[0].weight",
                "requests[0].path",
                "connections",
                "rate_per_s"
            ]
        );
        assert!(err
            .to_string()
            .contains("rate_per_s = -1: expected a finite number > 0"));
    }

    #[test]
    fn closed_and_open_loop_report_the_same_shared_problems() {
        let mut load = LoadSpec::new(Vec::new(), vec![RequestTemplate::get("/")]);
        load.timeout = Duration::ZERO;
        load.duration = Duration::ZERO;
        let fields = |r: Result<(), LoadError>| match r {
            Err(LoadError::InvalidSpec(problems)) => {
                problems.into_iter().map(|p| p.field).collect::<Vec<_>>()
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        };
        let closed = fields(load.validate());
        assert_eq!(closed, ["targets", "timeout", "duration"]);
        let open = OpenLoopSpec {
            load,
            ..OpenLoopSpec::new(Vec::new(), Vec::new(), 1.0)
        };
        assert_eq!(fields(open.validate()), closed);
    }
}
