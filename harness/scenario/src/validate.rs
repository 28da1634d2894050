//! The validation pass: every rule a parsed [`Scenario`] must meet, all problems reported at once.
//!
//! Pure: takes the typed scenario, returns problems named by [`FieldPath`]. Positions in the
//! file are added afterwards by [`crate::parse`]. Not here: anything that needs the machine
//! (ports, binaries); the runner checks those.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::bounds::*;
use crate::kinds::{kind_names, FaultDomain, KindSpec, ProbeKind, Role, KINDS};
use crate::locate::FieldPath;
use crate::model::*;

pub use crate::bounds::MAX_REPLICAS;

/// One broken rule: the field and what is wrong with it (`…; expected …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: FieldPath,
    pub message: String,
}

/// HTTP methods accepted by `kind = "http"` requests.
pub const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Placeholders the runner replaces in component and variant `args` and in component `env`
/// values (see [`Component::args`]).
pub const PLACEHOLDERS: &[&str] = &[
    "{addr}",
    "{host}",
    "{port}",
    "{NAME.addr}",
    "{NAME.addrs}",
    "{NAME.regions}",
    "{region}",
    "{run_dir}",
    "{replica}",
    "{replicas}",
    "{seed}",
];

/// Checks every rule and returns every problem, in the order of the scenario's fields.
pub fn validate(scenario: &Scenario) -> Vec<Problem> {
    let mut v = Validator {
        scenario,
        problems: Vec::new(),
    };
    v.scenario();
    v.problems
}

struct Validator<'a> {
    scenario: &'a Scenario,
    problems: Vec<Problem>,
}

fn root() -> FieldPath {
    FieldPath::root()
}

fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A bound such as `MAX_TIMEOUT` as written in scenario files (`"24h"`, not `"1day"`).
fn fmt_limit(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs() % 3600 == 0 && !d.is_zero() {
        format!("{}h", d.as_secs() / 3600)
    } else {
        fmt_duration(d)
    }
}

/// A number as a user would write it; `1e300` rather than 301 digits.
fn fmt_number(value: f64) -> String {
    if value.abs() >= 1e15 {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

/// `[a-z0-9-]+`
fn is_simple_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The text inside each brace-free `{…}` of `arg`, in order; an unclosed `{` is literal text.
fn placeholders(arg: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        // `{{` and `}}` are literal braces; a lone `}` is just a character.
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
            continue;
        }
        let Some(after) = tail.strip_prefix('{') else {
            rest = &tail[1..];
            continue;
        };
        match after.find(['{', '}']) {
            Some(end) if after[end..].starts_with('}') => {
                found.push(&after[..end]);
                rest = &after[end + 1..];
            }
            Some(inner_open) => rest = &after[inner_open..],
            None => break,
        }
    }
    found
}

/// Bytes of a component's own `args` and `env` (names and values), as
/// [`MAX_COMMAND_BYTES`] counts them.
fn command_bytes(c: &Component) -> usize {
    let env: usize = c.env.iter().map(|(k, v)| k.len() + v.len()).sum();
    args_bytes(&c.args) + env
}

fn args_bytes(args: &[String]) -> usize {
    args.iter().map(String::len).sum()
}

fn quoted_list<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.to_owned()).collect();
    if names.is_empty() {
        "(none declared)".to_owned()
    } else {
        names.join(", ")
    }
}

impl<'a> Validator<'a> {
    fn problem(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// `value` must be finite and > 0.
    fn positive(&mut self, path: FieldPath, value: f64, what: &str) {
        if !(value.is_finite() && value > 0.0) {
            self.problem(
                path,
                format!("{value} is out of range; expected {what} > 0"),
            );
        }
    }

    /// `value` must be finite and in `[lo, hi]` (`lo_open`/`hi_open` exclude the ends).
    fn in_range(&mut self, path: FieldPath, value: f64, lo: (f64, bool), hi: (f64, bool)) {
        let above = if lo.1 { value > lo.0 } else { value >= lo.0 };
        let below = if hi.1 { value < hi.0 } else { value <= hi.0 };
        if !(value.is_finite() && above && below) {
            let open = if lo.1 { '(' } else { '[' };
            let close = if hi.1 { ')' } else { ']' };
            self.problem(
                path,
                format!(
                    "{value} is out of range; expected a number in {open}{}, {}{close}",
                    lo.0, hi.0
                ),
            );
        }
    }

    fn nonzero_duration(&mut self, path: FieldPath, d: Duration) {
        if d.is_zero() {
            self.problem(
                path,
                "0s is not a usable duration; expected a duration > 0 such as \"10s\" or \"500ms\"",
            );
        }
    }

    /// A count within its bound: `"{n} {noun}; expected at most {max}{per}"`. Returns whether
    /// it is.
    fn at_most(&mut self, path: FieldPath, n: u64, max: u64, noun: &str, per: &str) -> bool {
        if n > max {
            self.problem(path, format!("{n} {noun}; expected at most {max}{per}"));
        }
        n <= max
    }

    /// A list within its bound; see [`Validator::at_most`].
    fn len_at_most(&mut self, path: FieldPath, len: usize, max: usize, noun: &str) -> bool {
        self.at_most(path, len as u64, max as u64, noun, "")
    }

    /// A text of at most `max` bytes. The text is not repeated in the message (it may be
    /// megabytes); returns whether it is within the bound, so that callers check (and
    /// quote) only texts that are.
    fn bytes_at_most(&mut self, path: FieldPath, text: &str, max: usize) -> bool {
        self.at_most(path, text.len() as u64, max as u64, "bytes", " bytes")
    }

    /// A number at most `max` (`unit` follows it in the message). Non-finite values are
    /// left to the check of the field's lower bound, which names them.
    fn number_at_most(&mut self, path: FieldPath, value: f64, max: f64, unit: &str) {
        if value.is_finite() && value > max {
            self.problem(
                path,
                format!(
                    "{} is above the limit; expected at most {max}{unit}",
                    fmt_number(value)
                ),
            );
        }
    }

    /// A duration at most `max`; returns whether it is.
    fn duration_at_most(&mut self, path: FieldPath, d: Duration, max: Duration) -> bool {
        if d > max {
            self.problem(
                path,
                format!(
                    "{} is above the limit; expected at most {}",
                    fmt_duration(d),
                    fmt_limit(max)
                ),
            );
        }
        d <= max
    }

    /// The names of `[[regions]]`, in order.
    fn region_names(&self) -> Vec<&'a str> {
        self.scenario
            .regions
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    fn component_names(&self) -> Vec<&str> {
        self.scenario
            .components
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    fn known_component(&mut self, path: FieldPath, name: &str) -> Option<&'a Component> {
        let found = self.scenario.component(name);
        if found.is_none() {
            let names = quoted_list(self.component_names());
            self.problem(
                path,
                format!("unknown component \"{name}\"; expected one of: {names}"),
            );
        }
        found
    }

    /// Names of the components whose kind satisfies `pred`.
    fn components_with(&self, pred: impl Fn(&KindSpec) -> bool) -> Vec<&'a str> {
        self.scenario
            .components
            .iter()
            .filter(|c| pred(c.kind.spec()))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// `args` (at `path`) within their bounds, and their placeholders known and naming
    /// existing components.
    fn args(&mut self, path: &FieldPath, args: &[String]) {
        if !self.len_at_most(path.clone(), args.len(), MAX_ARGS, "arguments") {
            return;
        }
        for (j, arg) in args.iter().enumerate() {
            if self.bytes_at_most(path.index(j), arg, MAX_ARG_BYTES) {
                self.placeholders_in(path.index(j), arg);
            }
        }
    }

    /// Placeholders in one argument or environment value are known and name existing
    /// components.
    fn placeholders_in(&mut self, path: FieldPath, text: &str) {
        for inner in placeholders(text) {
            if matches!(
                inner,
                "addr" | "host" | "port" | "run_dir" | "replica" | "replicas" | "seed" | "region"
            ) {
                continue;
            }
            match inner.rsplit_once('.') {
                Some((name, "addr" | "addrs" | "regions"))
                    if self.scenario.component(name).is_none() =>
                {
                    let names = quoted_list(self.component_names());
                    self.problem(
                        path.clone(),
                        format!("unknown component \"{name}\" in placeholder {{{inner}}}; expected one of: {names}"),
                    );
                }
                Some((_, "addr" | "addrs" | "regions")) => {}
                _ => self.problem(
                    path.clone(),
                    format!(
                        "unknown placeholder {{{inner}}}; expected one of {} (NAME a component)",
                        PLACEHOLDERS.join(", ")
                    ),
                ),
            }
        }
    }

    fn scenario(&mut self) {
        let s = self.scenario;
        if let Some(name) = s
            .name
            .as_ref()
            .filter(|name| self.bytes_at_most(root().key("name"), name, MAX_NAME_BYTES))
        {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            if !ok {
                self.problem(
                    root().key("name"),
                    format!("invalid name \"{name}\" (it names the report folder); expected letters, digits, '-', '_' or '.'"),
                );
            }
        }
        self.bytes_at_most(
            root().key("description"),
            &s.description,
            MAX_DESCRIPTION_BYTES,
        );
        if !self.lists() {
            return;
        }
        self.components();
        self.regions();
        self.network();
        self.workload();
        self.faults();
        self.slos();
        self.variants();
    }

    /// The lists of entries within their bounds. Above one, no entry is checked: checking
    /// every entry, and every reference between them, would flood the output and take long.
    fn lists(&mut self) -> bool {
        let s = self.scenario;
        let lists = [
            (
                root().key("components"),
                s.components.len(),
                MAX_COMPONENTS,
                "components",
            ),
            (
                root().key("workload").key("requests"),
                s.workload.requests.len(),
                MAX_REQUESTS,
                "requests",
            ),
            (
                root().key("workload").key("clients"),
                s.workload.clients.len(),
                MAX_CLIENTS,
                "clients",
            ),
            (root().key("faults"), s.faults.len(), MAX_FAULTS, "faults"),
            (root().key("slo"), s.slo.len(), MAX_SLOS, "SLOs"),
            (
                root().key("variants"),
                s.variants.len(),
                MAX_VARIANTS,
                "variants",
            ),
        ];
        let mut within = true;
        for (path, len, max, noun) in lists {
            within &= self.len_at_most(path, len, max, noun);
        }
        within
    }

    fn components(&mut self) {
        let s = self.scenario;
        if s.components.is_empty() {
            self.problem(
                root().key("components"),
                "no components; expected at least one [[components]] table",
            );
        }
        let total: u64 = s.components.iter().map(|c| u64::from(c.replicas)).sum();
        if total > u64::from(MAX_REPLICAS)
            && s.components.iter().all(|c| c.replicas <= MAX_REPLICAS)
        {
            self.problem(
                root().key("components"),
                format!("{total} replicas in all components together; expected at most {MAX_REPLICAS} (each replica gets its own loopback address)"),
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in s.components.iter().enumerate() {
            let path = root().key("components").index(i);
            if self.bytes_at_most(path.key("name"), &c.name, MAX_NAME_BYTES) {
                if !is_simple_name(&c.name) {
                    self.problem(
                        path.key("name"),
                        format!(
                            "invalid name \"{}\"; expected lowercase letters, digits and '-' ([a-z0-9-]+)",
                            c.name
                        ),
                    );
                }
                if let Some(first) = seen.insert(&c.name, i) {
                    self.problem(
                        path.key("name"),
                        format!(
                            "duplicate component name \"{}\" (also components[{first}]); expected unique names",
                            c.name
                        ),
                    );
                    seen.insert(&c.name, first);
                }
            }
            if c.replicas == 0 {
                self.problem(path.key("replicas"), "0 replicas; expected at least 1");
            } else {
                let max = u64::from(MAX_REPLICAS);
                self.at_most(path.key("replicas"), c.replicas.into(), max, "replicas", "");
            }
            self.restart(&path.key("restart"), &c.restart);
            self.readiness(&path.key("readiness"), c);
            self.command(&path.key("command"), c);
            self.args(&path.key("args"), &c.args);
            if self.len_at_most(
                path.key("env"),
                c.env.len(),
                MAX_ENV,
                "environment variables",
            ) {
                self.env(&path.key("env"), &c.env);
            }
            let bytes = command_bytes(c);
            if bytes > MAX_COMMAND_BYTES {
                self.problem(
                    path.clone(),
                    format!("args and env take {bytes} bytes; expected at most {MAX_COMMAND_BYTES} bytes in all (execve refuses long command lines)"),
                );
            }
        }
    }

    fn restart(&mut self, path: &FieldPath, restart: &Restart) {
        let max = u64::from(MAX_RESTARTS);
        let n = u64::from(restart.max_restarts);
        self.at_most(path.key("max_restarts"), n, max, "restarts", " per replica");
        self.duration_at_most(path.key("backoff"), restart.backoff, MAX_TIMEOUT);
    }

    /// `command`: required (a program) for `kind = "command"`, refused for the others.
    fn command(&mut self, path: &FieldPath, c: &Component) {
        match (&c.command, c.kind == ComponentKind::Command) {
            (None, true) => self.problem(
                path.clone(),
                "missing; expected the program to run (a path, or a name found in PATH), e.g. command = \"python3\"",
            ),
            (Some(_), false) => self.problem(
                path.clone(),
                format!(
                    "only used by kind = \"command\" (kind is \"{}\", which runs its own binary); expected no command",
                    c.kind.name()
                ),
            ),
            (Some(cmd), true) => {
                if cmd.trim().is_empty() || cmd.contains('\0') {
                    self.problem(
                        path.clone(),
                        format!("{cmd:?} is not a program; expected a path or a name found in PATH"),
                    );
                } else {
                    self.bytes_at_most(path.clone(), cmd, MAX_PROGRAM_BYTES);
                }
            }
            (None, false) => {}
        }
    }

    fn readiness(&mut self, path: &FieldPath, c: &Component) {
        let r = &c.readiness;
        let probe = match r.probe {
            Some(ProbeMode::Http) => ProbeKind::Http,
            Some(ProbeMode::Tcp) => ProbeKind::Tcp,
            None => c.kind.spec().probe,
        };
        // A TCP probe (a rendezvous, by default a command) never uses the readiness path.
        if self.bytes_at_most(path.key("path"), &r.path, MAX_PATH_BYTES)
            && probe == ProbeKind::Http
            && !r.path.starts_with('/')
        {
            self.problem(
                path.key("path"),
                format!(
                    "\"{}\" is not an HTTP path; expected a path starting with '/'",
                    r.path
                ),
            );
        }
        self.nonzero_duration(path.key("timeout"), r.timeout);
        self.duration_at_most(path.key("timeout"), r.timeout, MAX_TIMEOUT);
    }

    /// Environment variables (at most [`MAX_ENV`], checked by the caller): names and
    /// values within their bounds, valid names, known placeholders in values.
    fn env(&mut self, path: &FieldPath, env: &BTreeMap<String, String>) {
        for (key, value) in env {
            if key.len() > MAX_NAME_BYTES {
                // Not at `env.KEY`: that path would repeat the whole name.
                self.problem(
                    path.clone(),
                    format!(
                        "an environment variable name of {} bytes; expected names of at most {MAX_NAME_BYTES} bytes",
                        key.len()
                    ),
                );
                continue;
            }
            if self.bytes_at_most(path.key(key), value, MAX_ARG_BYTES) {
                self.placeholders_in(path.key(key), value);
            }
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.problem(
                    path.key(key),
                    format!("invalid environment variable name \"{key}\"; expected a non-empty name without '='"),
                );
            }
        }
    }

    fn workload(&mut self) {
        let w = &self.scenario.workload;
        let path = root().key("workload");
        let training = w.mode == LoadMode::Training;
        if let Some(target) = self.known_component(path.key("target"), &w.target) {
            let role = target.kind.spec().role;
            match (training, role) {
                (true, Role::Train) | (false, Role::Serve) => {}
                (true, _) => {
                    let kinds = kind_names(|k| k.role == Role::Train);
                    let workers = quoted_list(self.components_with(|k| k.role == Role::Train));
                    self.problem(
                        path.key("target"),
                        format!(
                            "\"{}\" is a {} component and mode = \"training\" trains on the target's replicas; expected a {kinds} component: {workers}",
                            w.target,
                            target.kind.name()
                        ),
                    );
                }
                (false, _) => self.problem(
                    path.key("target"),
                    format!(
                        "\"{}\" is a {} component, which takes no HTTP load (mode is \"{}\"); expected a {} component, or mode = \"training\" with a {}",
                        w.target,
                        target.kind.name(),
                        w.mode.name(),
                        kind_names(|k| k.role == Role::Serve),
                        kind_names(|k| k.role == Role::Train),
                    ),
                ),
            }
        }

        let clients = !w.clients.is_empty();
        match (w.mode, w.rate_per_s) {
            (LoadMode::OpenLoop, Some(_)) if clients => self.problem(
                path.key("rate_per_s"),
                "not used with [[workload.clients]] (each client offers its own rate_per_s); expected no workload.rate_per_s, or no clients",
            ),
            (LoadMode::OpenLoop, None) if clients => {}
            (LoadMode::OpenLoop, None) => self.problem(
                path.key("rate_per_s"),
                "missing offered rate; expected rate_per_s > 0 (requests per second) with mode = \"open-loop\"",
            ),
            (LoadMode::ClosedLoop, Some(_)) => self.problem(
                path.key("rate_per_s"),
                "not used with mode = \"closed-loop\" (each connection sends when its previous request ends); expected no rate_per_s, or mode = \"open-loop\"",
            ),
            (LoadMode::Training, Some(_)) => self.problem(
                path.key("rate_per_s"),
                "not used with mode = \"training\" (a training job has no offered rate); expected no rate_per_s",
            ),
            (_, Some(rate)) => self.rate(path.key("rate_per_s"), rate),
            (_, None) => {}
        }
        self.duration_at_most(path.key("warmup"), w.warmup, MAX_DURATION);
        match (w.mode, w.duration.is_zero()) {
            (LoadMode::MaxThroughput, true) => {}
            (LoadMode::MaxThroughput, false) => self.problem(
                path.key("duration"),
                "not used with mode = \"max-throughput\" (each trial lasts search.trial); expected no duration",
            ),
            (_, true) => self.problem(
                path.key("duration"),
                format!(
                    "missing (or 0s); expected the length of the measured phase, a duration > 0 such as \"20s\", with mode = \"{}\"",
                    w.mode.name()
                ),
            ),
            (_, false) => {
                self.duration_at_most(path.key("duration"), w.duration, MAX_DURATION);
            }
        }
        self.nonzero_duration(path.key("timeout"), w.timeout);
        self.duration_at_most(path.key("timeout"), w.timeout, MAX_TIMEOUT);
        self.clients(&path);
        self.connections(&path);

        if training && !w.requests.is_empty() {
            self.problem(
                path.key("requests"),
                "not used with mode = \"training\" (the job sends no HTTP requests); expected no requests",
            );
        } else if !training && w.requests.is_empty() {
            self.problem(
                path.key("requests"),
                "empty request mix; expected at least one request",
            );
        }
        for (i, r) in w.requests.iter().enumerate() {
            self.request(path.key("requests").index(i), r);
        }

        match (&w.search, w.mode) {
            (None, LoadMode::MaxThroughput) => self.problem(
                path.key("search"),
                "missing; expected a [workload.search] table with mode = \"max-throughput\"",
            ),
            (Some(_), mode) if mode != LoadMode::MaxThroughput => self.problem(
                path.key("search"),
                format!(
                    "only used with mode = \"max-throughput\" (mode is \"{}\"); expected no [workload.search] table",
                    mode.name()
                ),
            ),
            (Some(search), _) => self.search(path.key("search"), search),
            (None, _) => {}
        }
        self.stages(&path, w);
        if w.training.is_some() && !training {
            self.problem(
                path.key("training"),
                format!(
                    "only used with mode = \"training\" (mode is \"{}\"); expected no [workload.training] table",
                    w.mode.name()
                ),
            );
        }
        if let Some(t) = &w.training {
            let path = path.key("training").key("warmup_steps");
            self.at_most(path, t.warmup_steps.into(), MAX_STEPS, "steps", "");
        }
    }

    /// `[[workload.clients]]` (at most [`MAX_CLIENTS`], checked in [`Validator::lists`]):
    /// an open loop only, without the workload's own `rate_per_s` and `region`; each in a
    /// declared region, at a rate, under a unique name; their rates within
    /// [`MAX_RATE_PER_S`] in all.
    fn clients(&mut self, path: &FieldPath) {
        let w = &self.scenario.workload;
        if w.clients.is_empty() {
            return;
        }
        let at = path.key("clients");
        if w.mode != LoadMode::OpenLoop {
            self.problem(
                at.clone(),
                format!(
                    "clients are open loops, each at its own rate (mode is \"{}\"); expected mode = \"open-loop\", or no [[workload.clients]]",
                    w.mode.name()
                ),
            );
        }
        if let Some(region) = &w.region {
            self.problem(
                path.key("region"),
                format!("\"{region}\" is not used with [[workload.clients]] (each client sends from its own region); expected no workload.region, or no clients"),
            );
        }
        let declared = self.region_names();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, c) in w.clients.iter().enumerate() {
            let here = at.index(i);
            if declared.is_empty() {
                self.problem(
                    here.key("region"),
                    format!("\"{}\" but no [[regions]] are declared; expected a [[regions]] table named \"{}\"", c.region, c.region),
                );
            } else if !declared.contains(&c.region.as_str()) {
                self.problem(
                    here.key("region"),
                    format!(
                        "\"{}\" is not a declared region; expected one of {}",
                        c.region,
                        quoted_list(declared.iter().copied())
                    ),
                );
            }
            self.rate(here.key("rate_per_s"), c.rate_per_s);
            let name_ok = match &c.name {
                Some(name) => {
                    let fits = self.bytes_at_most(here.key("name"), name, MAX_NAME_BYTES);
                    if fits && !is_simple_name(name) {
                        self.problem(
                            here.key("name"),
                            format!("invalid name \"{name}\"; expected lowercase letters, digits and '-' ([a-z0-9-]+)"),
                        );
                    }
                    fits
                }
                // A region name of any length is reported at its own region field.
                None => c.region.len() <= MAX_NAME_BYTES,
            };
            if !name_ok {
                continue;
            }
            let name = c.display_name();
            if let Some(&first) = seen.get(name) {
                let (key, how) = if c.name.is_some() {
                    ("name", "")
                } else {
                    ("region", "; a client's name defaults to its region")
                };
                self.problem(
                    here.key(key),
                    format!("duplicate client name \"{name}\" (also workload.clients[{first}]{how}); expected unique names (set `name`)"),
                );
            } else {
                seen.insert(name, i);
            }
        }
        let total: f64 = w.clients.iter().map(|c| c.rate_per_s).sum();
        let each_ok = w.clients.iter().all(|c| {
            c.rate_per_s.is_finite() && c.rate_per_s > 0.0 && c.rate_per_s <= MAX_RATE_PER_S
        });
        if each_ok && total > MAX_RATE_PER_S {
            self.problem(
                at,
                format!(
                    "the clients offer {} requests per second in all; expected at most {MAX_RATE_PER_S} requests per second together",
                    fmt_number(total)
                ),
            );
        }
    }

    /// A rate (requests per second): finite, > 0, at most [`MAX_RATE_PER_S`].
    fn rate(&mut self, path: FieldPath, rate: f64) {
        self.positive(path.clone(), rate, "a finite rate (requests per second)");
        self.number_at_most(path, rate, MAX_RATE_PER_S, " requests per second");
    }

    /// `connections` per target replica, and in all over the target's replicas (the most
    /// any variant runs).
    fn connections(&mut self, path: &FieldPath) {
        let s = self.scenario;
        let w = &s.workload;
        let workload = path;
        let path = workload.key("connections");
        let max = u64::from(MAX_CONNECTIONS);
        let per = u64::from(w.connections);
        let connections_ok = if w.connections == 0 {
            self.problem(path.clone(), "0 connections; expected at least 1");
            false
        } else {
            self.at_most(path.clone(), per, max, "connections", " per target replica")
        };
        // The pool may grow to max_connections: the totals below bound what it may reach.
        // Its own rules are checked whatever `connections` is.
        let grown = match w.max_connections {
            None => Some((path, per)),
            Some(_) if !matches!(w.mode, LoadMode::OpenLoop | LoadMode::MaxThroughput) => {
                self.problem(
                    workload.key("max_connections"),
                    format!(
                        "not used with mode = \"{}\" (only an open loop has requests waiting for a connection); expected no max_connections",
                        w.mode.name()
                    ),
                );
                None
            }
            Some(0) => {
                self.problem(
                    workload.key("max_connections"),
                    "0 connections; expected at least connections (and at least 1)",
                );
                None
            }
            Some(m) if connections_ok && m < w.connections => {
                self.problem(
                    workload.key("max_connections"),
                    format!(
                        "{m}; expected at least connections ({}): the pool starts at connections and only grows",
                        w.connections
                    ),
                );
                None
            }
            Some(m) => {
                let path = workload.key("max_connections");
                let m = u64::from(m);
                self.at_most(path.clone(), m, max, "connections", " per target replica")
                    .then_some((path, m))
            }
        };
        let Some((path, per)) = grown.filter(|_| connections_ok) else {
            return;
        };
        // Unused in training mode; an unknown target is reported at workload.target, and
        // too many replicas at the component or variant.
        if w.mode == LoadMode::Training {
            return;
        }
        let Some(target) = s.component(&w.target) else {
            return;
        };
        let replicas = if s.variants.is_empty() {
            target.replicas
        } else {
            s.variants
                .iter()
                .map(|v| {
                    v.replicas
                        .get(&target.name)
                        .copied()
                        .unwrap_or(target.replicas)
                })
                .max()
                .unwrap_or(target.replicas)
        };
        let total = per * u64::from(replicas);
        // Each client holds its own connections; a list above its bound is reported alone.
        let clients = w.clients.len().max(1) as u64;
        if replicas <= MAX_REPLICAS && total > max {
            self.problem(
                path,
                format!(
                    "{per} connections × {replicas} replicas of \"{}\" = {total} connections; expected at most {max} in all (the load generator holds each one open)",
                    target.name
                ),
            );
        } else if replicas <= MAX_REPLICAS && total * clients > max {
            self.problem(
                path,
                format!(
                    "{per} connections × {replicas} replicas of \"{}\" × {clients} clients = {} connections; expected at most {max} in all (each client holds its own)",
                    target.name,
                    total * clients
                ),
            );
        }
    }

    fn request(&mut self, path: FieldPath, r: &RequestSpec) {
        let weight = match r {
            RequestSpec::Infer { model, weight } => {
                self.model(path.key("model"), model);
                *weight
            }
            RequestSpec::Completion {
                model,
                prompt,
                max_tokens,
                weight,
                ..
            } => {
                self.model(path.key("model"), model);
                self.bytes_at_most(path.key("prompt"), prompt, MAX_BODY_BYTES);
                if *max_tokens == 0 {
                    self.problem(path.key("max_tokens"), "0 tokens; expected max_tokens >= 1");
                } else {
                    let max = u64::from(MAX_TOKENS);
                    self.at_most(
                        path.key("max_tokens"),
                        (*max_tokens).into(),
                        max,
                        "tokens",
                        "",
                    );
                }
                *weight
            }
            RequestSpec::Http {
                method,
                path: http_path,
                body,
                headers,
                weight,
            } => {
                if self.len_at_most(path.key("headers"), headers.len(), MAX_HEADERS, "headers") {
                    for (name, value) in headers {
                        let at = path.key("headers").key(name);
                        let token = !name.is_empty()
                            && name.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
                            });
                        if !token {
                            self.problem(
                                at,
                                format!("\"{name}\" is not an HTTP header name; expected letters, digits and !#$%&'*+-.^_`|~"),
                            );
                        } else if matches!(
                            name.to_ascii_lowercase().as_str(),
                            "host" | "content-length" | "transfer-encoding" | "connection"
                        ) {
                            self.problem(
                                at,
                                format!("header \"{name}\" is set by the load generator; expected another header"),
                            );
                        } else if self.bytes_at_most(at.clone(), value, MAX_HEADER_BYTES)
                            && value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
                        {
                            self.problem(
                                at,
                                "the value holds CR, LF or NUL; expected one line of text",
                            );
                        }
                    }
                }
                if self.bytes_at_most(path.key("method"), method, MAX_NAME_BYTES)
                    && !HTTP_METHODS.contains(&method.as_str())
                {
                    self.problem(
                        path.key("method"),
                        format!(
                            "unknown HTTP method \"{method}\"; expected one of: {}",
                            HTTP_METHODS.join(", ")
                        ),
                    );
                }
                if self.bytes_at_most(path.key("path"), http_path, MAX_PATH_BYTES)
                    && !http_path.starts_with('/')
                {
                    self.problem(
                        path.key("path"),
                        format!("\"{http_path}\" is not an HTTP path; expected a path starting with '/'"),
                    );
                }
                self.bytes_at_most(path.key("body"), body, MAX_BODY_BYTES);
                *weight
            }
        };
        self.positive(path.key("weight"), weight, "a finite weight");
        self.number_at_most(path.key("weight"), weight, MAX_WEIGHT, "");
    }

    fn model(&mut self, path: FieldPath, model: &str) {
        if model.is_empty() {
            self.problem(
                path,
                "empty model name; expected the name of a model the server loads",
            );
        } else {
            self.bytes_at_most(path, model, MAX_NAME_BYTES);
        }
    }

    /// `workload.stages`: open loop only, bounded, each ramp > 0 long to a finite rate,
    /// together within the run.
    fn stages(&mut self, path: &FieldPath, w: &Workload) {
        if w.stages.is_empty() {
            return;
        }
        let path = path.key("stages");
        if w.mode != LoadMode::OpenLoop {
            self.problem(
                path,
                format!(
                    "stages ramp an open-loop rate (mode is \"{}\"); expected mode = \"open-loop\", or no stages",
                    w.mode.name()
                ),
            );
            return;
        }
        if !self.len_at_most(path.clone(), w.stages.len(), MAX_STAGES, "stages") {
            return;
        }
        let mut total = Duration::ZERO;
        for (i, st) in w.stages.iter().enumerate() {
            let at = path.index(i);
            self.nonzero_duration(at.key("duration"), st.duration);
            self.duration_at_most(at.key("duration"), st.duration, MAX_DURATION);
            total = total.saturating_add(st.duration);
            if !(st.target.is_finite() && st.target >= 0.0) {
                self.problem(
                    at.key("target"),
                    format!(
                        "{}; expected a finite rate ≥ 0 (requests per second)",
                        st.target
                    ),
                );
            }
            self.number_at_most(at.key("target"), st.target, MAX_RATE_PER_S, "");
        }
        let horizon = w.warmup.saturating_add(w.duration);
        if total > horizon {
            self.problem(
                path,
                format!(
                    "the stages last {} in all, longer than the run; expected at most warmup + duration = {}",
                    fmt_duration(total),
                    fmt_duration(horizon)
                ),
            );
        }
    }

    fn search(&mut self, path: FieldPath, s: &Search) {
        self.in_range(
            path.key("percentile"),
            s.percentile,
            (0.0, true),
            (100.0, true),
        );
        self.positive(
            path.key("latency_ms_max"),
            s.latency_ms_max,
            "a finite latency bound (milliseconds)",
        );
        self.number_at_most(
            path.key("latency_ms_max"),
            s.latency_ms_max,
            MAX_LATENCY_MS,
            " ms",
        );
        self.in_range(
            path.key("error_ratio_max"),
            s.error_ratio_max,
            (0.0, false),
            (1.0, false),
        );
        self.rate(path.key("rate_per_s_min"), s.rate_per_s_min);
        self.rate(path.key("rate_per_s_max"), s.rate_per_s_max);
        if s.rate_per_s_min.is_finite()
            && s.rate_per_s_max.is_finite()
            && s.rate_per_s_min >= s.rate_per_s_max
        {
            self.problem(
                path.key("rate_per_s_max"),
                format!(
                    "{} is not above rate_per_s_min = {}; expected rate_per_s_min < rate_per_s_max",
                    s.rate_per_s_max, s.rate_per_s_min
                ),
            );
        }
        self.nonzero_duration(path.key("trial"), s.trial);
        let trial_ok = self.duration_at_most(path.key("trial"), s.trial, MAX_DURATION);
        let max_steps = u64::from(MAX_SEARCH_STEPS);
        let steps_ok = self.at_most(path.key("steps"), s.steps.into(), max_steps, "steps", "");
        // The whole search: its trials, each its warm-up and its measured trial.
        let warmup = self.scenario.workload.warmup;
        if trial_ok && steps_ok && warmup <= MAX_DURATION {
            let one = warmup + s.trial;
            let trials = s.steps + SEARCH_FIXED_TRIALS;
            let all = one.saturating_mul(trials);
            if all > MAX_DURATION {
                self.problem(
                    path.key("steps"),
                    format!(
                        "up to {trials} trials ({SEARCH_FIXED_TRIALS} + {} steps) of {} (warmup {} + trial {}) take up to {}; expected at most {} for the whole search (fewer steps, or shorter trials)",
                        s.steps,
                        fmt_duration(one),
                        fmt_duration(warmup),
                        fmt_duration(s.trial),
                        fmt_duration(all),
                        fmt_limit(MAX_DURATION)
                    ),
                );
            }
        }
    }

    fn faults(&mut self) {
        let s = self.scenario;
        let w = &s.workload;
        // Phases above their bounds are reported at their fields; with them, the end of the
        // run is not computed (it could overflow) and fault times are not checked against it.
        // A missing duration (reported at workload.duration) has no end of run either.
        let phases_ok = w.warmup <= MAX_DURATION
            && w.duration <= MAX_DURATION
            && (w.mode == LoadMode::MaxThroughput || !w.duration.is_zero())
            && w.search.as_ref().is_none_or(|s| s.trial <= MAX_DURATION);
        let horizon = phases_ok.then(|| s.horizon());
        let horizon_text = |horizon: Duration| match (w.mode, &w.search) {
            (LoadMode::MaxThroughput, Some(search)) => format!(
                "{} (warmup {} + search.trial {})",
                fmt_duration(horizon),
                fmt_duration(w.warmup),
                fmt_duration(search.trial)
            ),
            _ => format!(
                "{} (warmup {} + duration {})",
                fmt_duration(horizon),
                fmt_duration(w.warmup),
                fmt_duration(w.duration)
            ),
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, f) in s.faults.iter().enumerate() {
            let path = root().key("faults").index(i);
            let id = f.id_or_default(i);
            // An id above its bound is not checked (or quoted) further.
            let id_ok =
                f.id.as_ref()
                    .is_none_or(|given| self.bytes_at_most(path.key("id"), given, MAX_NAME_BYTES));
            if let Some(given) = f.id.as_ref().filter(|_| id_ok) {
                if given.is_empty() || given.chars().any(|c| c.is_whitespace()) {
                    self.problem(
                        path.key("id"),
                        format!("invalid id \"{given}\"; expected a non-empty name without spaces"),
                    );
                }
            }
            if let Some(first) = seen.get(&id).filter(|_| id_ok) {
                let whose = if f.id.is_some() { "" } else { "default " };
                self.problem(
                    path.key("id"),
                    format!("duplicate {whose}fault id \"{id}\" (also faults[{first}]); expected unique ids (set `id`)"),
                );
            } else if id_ok {
                seen.insert(id, i);
            }

            match f.kind.domain() {
                FaultDomain::Load => {
                    if f.target.is_some() {
                        self.problem(
                            path.key("target"),
                            format!(
                                "not used by {} (it changes the offered rate); expected no target",
                                f.kind.name()
                            ),
                        );
                    }
                    if matches!(w.mode, LoadMode::ClosedLoop | LoadMode::Training) {
                        self.problem(
                            path.key("kind"),
                            format!(
                                "{} multiplies the offered rate, which mode = \"{}\" does not have; expected mode = \"open-loop\" or \"max-throughput\"",
                                f.kind.name(),
                                w.mode.name()
                            ),
                        );
                    }
                }
                FaultDomain::Region => self.region_fault(&path, f),
                domain => self.targeted_fault(&path, f, domain),
            }

            let needs_until = matches!(
                f.kind,
                FaultKind::ProcessPause
                    | FaultKind::LoadSpike
                    | FaultKind::GpuThrottle
                    | FaultKind::GpuOom
            );
            let without_until = match f.kind {
                FaultKind::GpuLost => {
                    "the worker exits; the restart policy decides when it comes back"
                }
                FaultKind::GpuEcc => "it corrupts `steps` consecutive steps; set steps instead",
                _ => "the restart policy decides when the target comes back",
            };
            match f.until {
                None if needs_until => self.problem(
                    path.key("until"),
                    format!(
                        "missing; expected the scenario time at which {} ends (until > at)",
                        f.kind.name()
                    ),
                ),
                Some(_)
                    if !needs_until
                        && !matches!(f.kind.domain(), FaultDomain::Net | FaultDomain::Region) =>
                {
                    self.problem(
                        path.key("until"),
                        format!(
                            "not used by {} ({without_until}); expected no until",
                            f.kind.name()
                        ),
                    )
                }
                Some(until) if until <= f.at => self.problem(
                    path.key("until"),
                    format!(
                        "{} is not after at = {}; expected until > at",
                        fmt_duration(until),
                        fmt_duration(f.at)
                    ),
                ),
                Some(until) => {
                    if let Some(h) = horizon.filter(|&h| until > h) {
                        self.problem(
                            path.key("until"),
                            format!(
                                "{} is after the end of the run at {}; expected until <= {}",
                                fmt_duration(until),
                                horizon_text(h),
                                fmt_duration(h)
                            ),
                        );
                    }
                }
                None => {}
            }
            if let Some(h) = horizon.filter(|&h| f.at >= h) {
                self.problem(
                    path.key("at"),
                    format!(
                        "{} is not before the end of the run at {}; expected at < {}",
                        fmt_duration(f.at),
                        horizon_text(h),
                        fmt_duration(h)
                    ),
                );
            }

            match f.after_step {
                Some(_) if w.mode != LoadMode::Training => self.problem(
                    path.key("after_step"),
                    format!(
                        "waits for a training step, which mode = \"{}\" does not have; expected no after_step, or workload.mode = \"training\"",
                        w.mode.name()
                    ),
                ),
                Some(step) => {
                    self.at_most(path.key("after_step"), step, MAX_STEPS, "steps", "");
                }
                None => {}
            }

            self.fault_params(&path, f);
        }
    }

    /// The kind-specific parameters: each only on its kind, required ones present, in range.
    fn fault_params(&mut self, path: &FieldPath, f: &Fault) {
        use FaultKind::{GpuEcc, GpuOom, GpuThrottle, LoadSpike};
        let rate = "the rate multiplier of load.spike (> 0, e.g. 3.0)";
        if let Some(m) =
            self.fault_param(path, f, "multiplier", f.multiplier, LoadSpike, Some(rate))
        {
            self.positive(path.key("multiplier"), m, "a finite multiplier");
            self.number_at_most(path.key("multiplier"), m, MAX_MULTIPLIER, "");
            self.spiked_rate(path.key("multiplier"), m);
        }
        self.fault_param(path, f, "mode", f.mode, GpuEcc, None);
        match self.fault_param(path, f, "steps", f.steps, GpuEcc, None) {
            Some(0) => self.problem(path.key("steps"), "0 steps; expected steps >= 1"),
            Some(n) => {
                self.at_most(path.key("steps"), n.into(), MAX_STEPS, "steps", "");
            }
            None => {}
        }
        let slow = "the slow-down factor of gpu.throttle (>= 1, e.g. 3.0)";
        if let Some(factor) = self.fault_param(path, f, "factor", f.factor, GpuThrottle, Some(slow))
        {
            if !(factor.is_finite() && factor >= 1.0) {
                self.problem(
                    path.key("factor"),
                    format!("{factor} is out of range; expected a finite factor >= 1 (3.0 = every op takes 3× as long)"),
                );
            }
            self.number_at_most(path.key("factor"), factor, MAX_THROTTLE_FACTOR, "");
        }
        let limit = "the allocation limit of gpu.oom in bytes (> 0, e.g. 1000000)";
        match self.fault_param(path, f, "limit_bytes", f.limit_bytes, GpuOom, Some(limit)) {
            Some(0) => self.problem(path.key("limit_bytes"), "0 bytes; expected limit_bytes > 0"),
            Some(n) => {
                self.at_most(
                    path.key("limit_bytes"),
                    n,
                    MAX_LIMIT_BYTES,
                    "bytes",
                    " bytes (1 TiB)",
                );
            }
            None => {}
        }
        self.fault_param(path, f, "backoff", f.backoff, GpuOom, None);
        self.net_params(path, f);
    }

    /// `net.*` and `region.*` parameters: each only on its kinds, in range (bounds in
    /// docs/scenarios.md).
    fn net_params(&mut self, path: &FieldPath, f: &Fault) {
        let cycle = "one down-and-up cycle of region.flap (e.g. \"1s\")";
        if let Some(p) = self.fault_param(
            path,
            f,
            "period",
            f.period,
            FaultKind::RegionFlap,
            Some(cycle),
        ) {
            if p < MIN_FLAP_PERIOD || p > MAX_NET_DELAY {
                self.problem(
                    path.key("period"),
                    format!(
                        "{} is out of range; expected from {} to {}",
                        fmt_duration(p),
                        fmt_duration(MIN_FLAP_PERIOD),
                        fmt_duration(MAX_NET_DELAY)
                    ),
                );
            }
        }
        if f.regions.is_some() && f.kind.domain() != FaultDomain::Region {
            self.problem(
                path.key("regions"),
                format!(
                    "only used by region.* faults (kind is {}); expected no regions",
                    f.kind.name()
                ),
            );
        }
        use FaultKind::{NetBandwidth, NetHttpError, NetLatency};
        let rtt = "the round-trip time the fault adds (e.g. \"200ms\")";
        // latency and jitter belong to net.latency and region.latency alike.
        let latency_owner = if f.kind == FaultKind::RegionLatency {
            FaultKind::RegionLatency
        } else {
            NetLatency
        };
        if let Some(l) = self.fault_param(path, f, "latency", f.latency, latency_owner, Some(rtt)) {
            if l.is_zero() || l > MAX_NET_DELAY {
                self.problem(
                    path.key("latency"),
                    format!(
                        "{} is out of range; expected more than 0 and at most {}",
                        fmt_duration(l),
                        fmt_duration(MAX_NET_DELAY)
                    ),
                );
            }
        }
        if let Some(j) = self.fault_param(path, f, "jitter", f.jitter, latency_owner, None) {
            if j > MAX_NET_DELAY {
                self.problem(
                    path.key("jitter"),
                    format!(
                        "{} is out of range; expected at most {}",
                        fmt_duration(j),
                        fmt_duration(MAX_NET_DELAY)
                    ),
                );
            }
        }
        let rate = "the link's rate in KB/s (1 KB = 1000 bytes, e.g. 1000)";
        if let Some(r) =
            self.fault_param(path, f, "rate_kbps", f.rate_kbps, NetBandwidth, Some(rate))
        {
            if r == 0 {
                self.problem(
                    path.key("rate_kbps"),
                    "0 KB/s; expected at least 1 (to stop all traffic, use net.blackhole)",
                );
            }
            self.at_most(path.key("rate_kbps"), r, MAX_NET_RATE_KBPS, "KB/s", "");
        }
        if let Some(st) = self.fault_param(path, f, "status", f.status, NetHttpError, None) {
            if !(200..=599).contains(&st) {
                self.problem(
                    path.key("status"),
                    format!("{st} is out of range; expected an HTTP status from 200 to 599"),
                );
            }
        }
        if let Some(r) = self.fault_param(path, f, "ratio", f.ratio, NetHttpError, None) {
            if !(r.is_finite() && r > 0.0 && r <= 1.0) {
                self.problem(
                    path.key("ratio"),
                    format!(
                        "{r} is out of range; expected 0 < ratio <= 1 (0.3 = 30 % of requests)"
                    ),
                );
            }
        }
    }

    /// A `load.spike` keeps the offered rate within [`MAX_RATE_PER_S`]: the base rate, or
    /// the search's highest, times `multiplier`. Each out of range is reported at itself.
    fn spiked_rate(&mut self, path: FieldPath, multiplier: f64) {
        let w = &self.scenario.workload;
        let (base, name) = match (w.mode, &w.search) {
            (LoadMode::MaxThroughput, Some(s)) => {
                (s.rate_per_s_max, "workload.search.rate_per_s_max")
            }
            (LoadMode::OpenLoop, _) if !w.clients.is_empty() => {
                let total = w.total_rate_per_s().unwrap_or(0.0);
                (total, "the rates of workload.clients together")
            }
            (LoadMode::OpenLoop, _) => match w.rate_per_s {
                Some(rate) => (rate, "workload.rate_per_s"),
                None => return,
            },
            _ => return,
        };
        let ok = |v: f64, max: f64| v.is_finite() && v > 0.0 && v <= max;
        let spiked = base * multiplier;
        if ok(base, MAX_RATE_PER_S) && ok(multiplier, MAX_MULTIPLIER) && spiked > MAX_RATE_PER_S {
            self.problem(
                path,
                format!(
                    "spikes {name} = {} to {} requests per second; expected at most {MAX_RATE_PER_S} requests per second",
                    fmt_number(base),
                    fmt_number(spiked)
                ),
            );
        }
    }

    /// A parameter only `owner` uses: its value for that kind, a problem when another kind
    /// sets it or when `owner` lacks a `required` one (which says what to give).
    fn fault_param<T>(
        &mut self,
        path: &FieldPath,
        f: &Fault,
        key: &str,
        value: Option<T>,
        owner: FaultKind,
        required: Option<&str>,
    ) -> Option<T> {
        match (f.kind == owner, value, required) {
            (true, None, Some(what)) => {
                self.problem(path.key(key), format!("missing; expected {what}"));
                None
            }
            (true, value, _) => value,
            (false, Some(_), _) => {
                self.problem(
                    path.key(key),
                    format!(
                        "only used by {} (kind is {}); expected no {key}",
                        owner.name(),
                        f.kind.name()
                    ),
                );
                None
            }
            (false, None, _) => None,
        }
    }

    /// `region.*` faults: no target; `regions` naming declared regions, and (for a
    /// partition) not all of them.
    fn region_fault(&mut self, path: &FieldPath, f: &Fault) {
        let declared = self.region_names();
        if f.target.is_some() {
            self.problem(
                path.key("target"),
                format!(
                    "not used by {} (it acts on regions' links); expected regions = [\"…\"] instead",
                    f.kind.name()
                ),
            );
        }
        if declared.len() < 2 {
            self.problem(
                path.key("kind"),
                format!(
                    "{} acts on the links between regions, and this scenario declares {}; expected at least two [[regions]]",
                    f.kind.name(),
                    declared.len()
                ),
            );
        }
        let Some(regions) = &f.regions else {
            self.problem(
                path.key("regions"),
                format!(
                    "missing; expected the regions {} acts on, e.g. regions = [\"{}\"]",
                    f.kind.name(),
                    declared.first().copied().unwrap_or("eu")
                ),
            );
            return;
        };
        if regions.is_empty() {
            self.problem(path.key("regions"), "empty; expected at least one region");
        }
        let mut seen = BTreeSet::new();
        for (i, r) in regions.iter().enumerate() {
            if !declared.contains(&r.as_str()) {
                self.problem(
                    path.key("regions").index(i),
                    format!(
                        "\"{r}\" is not a declared region; expected one of {}",
                        quoted_list(declared.iter().copied())
                    ),
                );
            } else if !seen.insert(r.as_str()) {
                self.problem(
                    path.key("regions").index(i),
                    format!("\"{r}\" is listed twice"),
                );
            }
        }
        if f.kind == FaultKind::RegionPartition
            && !declared.is_empty()
            && seen.len() == declared.len()
        {
            self.problem(
                path.key("regions"),
                "every region is listed; expected a set of regions to cut off from the others",
            );
        }
    }

    /// `[network] mode = "netns"`: the namespaces' address plan bounds regions and the
    /// replicas in each (under every variant).
    fn network(&mut self) {
        let s = self.scenario;
        if s.network.mode != NetworkMode::Netns {
            return;
        }
        if s.regions.len() > MAX_NETNS_REGIONS {
            self.problem(
                root().key("regions"),
                format!(
                    "{} regions with [network] mode = \"netns\"; expected at most {MAX_NETNS_REGIONS} (or mode = \"loopback\", which takes {MAX_REGIONS})",
                    s.regions.len()
                ),
            );
            return;
        }
        let default = Variant::unvaried();
        let mut reported = BTreeSet::new();
        for variant in std::iter::once(&default).chain(&s.variants) {
            let mut per_region: BTreeMap<&str, u64> = BTreeMap::new();
            for c in &s.components {
                let region = c
                    .region
                    .as_deref()
                    .or_else(|| s.regions.first().map(|r| r.name.as_str()))
                    .unwrap_or("default");
                let n = variant.replicas.get(&c.name).unwrap_or(&c.replicas);
                *per_region.entry(region).or_insert(0) += u64::from(*n);
            }
            for (region, n) in per_region {
                if n > u64::from(MAX_NETNS_REPLICAS_PER_REGION) && reported.insert(region) {
                    let under = if std::ptr::eq(variant, &default) {
                        String::new()
                    } else {
                        format!(" under variant \"{}\"", variant.name)
                    };
                    self.problem(
                        root().key("network").key("mode"),
                        format!("region \"{region}\" holds {n} replicas{under}; with mode = \"netns\" a region holds at most {MAX_NETNS_REPLICAS_PER_REGION} (or use mode = \"loopback\")"),
                    );
                }
            }
        }
    }

    /// `[[regions]]` and `[[links]]`, and the regions components and the workload name.
    fn regions(&mut self) {
        let s = self.scenario;
        self.len_at_most(
            root().key("regions"),
            s.regions.len(),
            MAX_REGIONS,
            "regions",
        );
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in s.regions.iter().enumerate() {
            let path = root().key("regions").index(i).key("name");
            if self.bytes_at_most(path.clone(), &r.name, MAX_NAME_BYTES) && !is_simple_name(&r.name)
            {
                self.problem(
                    path.clone(),
                    format!("invalid name \"{}\"; expected lowercase letters, digits and '-' ([a-z0-9-]+)", r.name),
                );
            }
            if let Some(first) = names.insert(&r.name, i) {
                self.problem(
                    path,
                    format!(
                        "duplicate region \"{}\" (also regions[{first}]); expected unique names",
                        r.name
                    ),
                );
                names.insert(&r.name, first);
            }
        }
        let declared = quoted_list(s.regions.iter().map(|r| r.name.as_str()));
        let region_ref = |v: &mut Self, path: FieldPath, name: &Option<String>| {
            if let Some(n) = name {
                if s.regions.is_empty() {
                    v.problem(path, format!("\"{n}\" but no [[regions]] are declared; expected no region, or a [[regions]] table named \"{n}\""));
                } else if !names.contains_key(n.as_str()) {
                    v.problem(
                        path,
                        format!("\"{n}\" is not a declared region; expected one of {declared}"),
                    );
                }
            }
        };
        for (i, c) in s.components.iter().enumerate() {
            region_ref(
                self,
                root().key("components").index(i).key("region"),
                &c.region,
            );
        }
        // With clients, a workload.region is refused as such (see `clients`).
        if s.workload.clients.is_empty() {
            region_ref(
                self,
                root().key("workload").key("region"),
                &s.workload.region,
            );
        }
        let mut pairs = BTreeSet::new();
        for (i, l) in s.links.iter().enumerate() {
            let path = root().key("links").index(i);
            for (j, r) in l.between.iter().enumerate() {
                if !names.contains_key(r.as_str()) {
                    self.problem(
                        path.key("between").index(j),
                        format!("\"{r}\" is not a declared region; expected one of {declared}"),
                    );
                }
            }
            if l.between[0] == l.between[1] {
                self.problem(
                    path.key("between"),
                    format!("joins \"{}\" to itself; expected two different regions (traffic inside a region does not cross a link)", l.between[0]),
                );
            }
            let mut key = [l.between[0].as_str(), l.between[1].as_str()];
            key.sort_unstable();
            if !pairs.insert(key) {
                self.problem(
                    path.key("between"),
                    format!(
                        "a second link between \"{}\" and \"{}\"; expected one per pair",
                        key[0], key[1]
                    ),
                );
            }
            for (field, d) in [("rtt", l.rtt), ("jitter", l.jitter)] {
                if let Some(d) = d {
                    self.duration_at_most(path.key(field), d, MAX_NET_DELAY);
                }
            }
            if let Some(r) = l.rate_kbps {
                if r == 0 {
                    self.problem(path.key("rate_kbps"), "0 KB/s; expected at least 1 (a link that carries nothing is a region.partition fault)");
                }
                self.at_most(path.key("rate_kbps"), r, MAX_NET_RATE_KBPS, "KB/s", "");
            }
        }
    }

    /// Faults aimed at components: a target whose kind takes the fault's domain (see
    /// [`crate::kinds::KINDS`]); `gpu.*` faults also need training mode.
    fn targeted_fault(&mut self, path: &FieldPath, f: &Fault, domain: FaultDomain) {
        let mode = self.scenario.workload.mode;
        if domain == FaultDomain::Gpu && mode != LoadMode::Training {
            self.problem(
                path.key("kind"),
                format!(
                    "{} {} (mode is \"{}\"); expected workload.mode = \"training\"",
                    f.kind.name(),
                    domain.acts_on(),
                    mode.name()
                ),
            );
        }
        let every_kind = KINDS.iter().all(|k| k.takes(domain));
        let kinds = kind_names(|k| k.takes(domain));
        let eligible = quoted_list(self.components_with(|k| k.takes(domain)));
        let Some(target) = &f.target else {
            let naming = if every_kind {
                String::new()
            } else {
                format!(", naming a {kinds} component: {eligible}")
            };
            self.problem(
                path.key("target"),
                format!(
                    "missing target; expected \"component\" or \"component/replica\" for {}{naming}",
                    f.kind.name()
                ),
            );
            return;
        };
        self.fault_target(path.key("target"), target);
        let name = target.split('/').next().unwrap_or(target);
        if let Some(c) = self.scenario.component(name) {
            if !c.kind.spec().takes(domain) {
                self.problem(
                    path.key("target"),
                    format!(
                        "\"{name}\" is a {} component and {} {}; expected a {kinds} component: {eligible}",
                        c.kind.name(),
                        f.kind.name(),
                        domain.acts_on(),
                    ),
                );
            }
        }
    }

    fn fault_target(&mut self, path: FieldPath, target: &str) {
        let (name, replica) = match target.split_once('/') {
            Some((name, replica)) => (name, Some(replica)),
            None => (target, None),
        };
        let Some(component) = self.known_component(path.clone(), name) else {
            return;
        };
        let replicas = component.replicas;
        // Zero replicas is reported at the component; no replica index could be right.
        if let (Some(replica), true) = (replica, replicas > 0) {
            match replica.parse::<u32>() {
                Ok(i) if i < replicas => {}
                Ok(i) => self.problem(
                    path,
                    format!(
                        "replica {i} of \"{name}\" does not exist ({name} has {replicas} replica{}); expected \"{name}\" or \"{name}/0\" to \"{name}/{}\"",
                        if replicas == 1 { "" } else { "s" },
                        replicas.saturating_sub(1)
                    ),
                ),
                Err(_) => self.problem(
                    path,
                    format!("\"{target}\" has no replica number after '/'; expected \"{name}\" or \"{name}/<replica index>\""),
                ),
            }
        }
    }

    fn slos(&mut self) {
        let s = self.scenario;
        let fault_ids: Vec<String> = s
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| f.id_or_default(i))
            .collect();
        let variant_names: Vec<&str> = s.variants.iter().map(|v| v.name.as_str()).collect();
        let max_throughput = s.workload.mode == LoadMode::MaxThroughput;
        let training = s.workload.mode == LoadMode::Training;
        let streams = s
            .workload
            .requests
            .iter()
            .any(|r| matches!(r, RequestSpec::Completion { stream: true, .. }));

        for (i, slo) in s.slo.iter().enumerate() {
            let path = root().key("slo").index(i);
            if let Some(phase) = slo.phase() {
                self.phase(path.key("phase"), phase);
            }
            self.slo_mode(&path, slo);
            match slo {
                Slo::Latency {
                    measure,
                    percentile,
                    latency_ms_max,
                    latency_ms_min,
                    ..
                } => {
                    self.in_range(
                        path.key("percentile"),
                        *percentile,
                        (0.0, true),
                        (100.0, false),
                    );
                    if matches!(
                        measure,
                        LatencyMeasure::Ttft | LatencyMeasure::Itl | LatencyMeasure::Tpot
                    ) && !streams
                        && !training
                    {
                        self.problem(
                            path.key("measure"),
                            format!(
                                "\"{}\" is only measured on streamed completions and the request mix has none; expected a request with kind = \"completion\" and stream = true",
                                measure.name()
                            ),
                        );
                    }
                    self.bounds(
                        &path,
                        ("latency_ms_min", *latency_ms_min),
                        ("latency_ms_max", *latency_ms_max),
                        None,
                    );
                }
                Slo::Availability {
                    ratio_min,
                    phase,
                    abort_on_fail,
                } => {
                    if *abort_on_fail {
                        self.abort_on_fail(&path, *phase, None);
                    }
                    self.in_range(
                        path.key("ratio_min"),
                        *ratio_min,
                        (0.0, false),
                        (1.0, false),
                    );
                }
                Slo::Errors {
                    ratio_max,
                    ratio_min,
                    error_kind,
                    phase,
                    abort_on_fail,
                } => {
                    if *abort_on_fail {
                        let why = if error_kind.is_some() {
                            Some("error_kind: the live count has every error together; expected no error_kind")
                        } else if ratio_max.is_none() {
                            Some("ratio_min: a lower bound can always still be met; expected ratio_max")
                        } else {
                            None
                        };
                        self.abort_on_fail(&path, *phase, why);
                    }
                    match error_kind.as_deref() {
                        Some("") => self.problem(path.key("error_kind"), "empty error kind; expected a kind such as \"http_503\" or \"connect_refused\", or no error_kind for all errors"),
                        Some(kind) => {
                            self.bytes_at_most(path.key("error_kind"), kind, MAX_NAME_BYTES);
                        }
                        None => {}
                    }
                    self.bounds(
                        &path,
                        ("ratio_min", *ratio_min),
                        ("ratio_max", *ratio_max),
                        Some((0.0, 1.0)),
                    );
                }
                Slo::Throughput { rps_min, .. } => self.rate(path.key("rps_min"), *rps_min),
                Slo::Recovery {
                    fault,
                    recovery_s_max,
                    ..
                } => {
                    self.known_fault(path.key("fault"), fault, &fault_ids);
                    self.positive(
                        path.key("recovery_s_max"),
                        *recovery_s_max,
                        "a finite time (seconds)",
                    );
                    self.number_at_most(
                        path.key("recovery_s_max"),
                        *recovery_s_max,
                        MAX_DURATION.as_secs_f64(),
                        " s",
                    );
                }
                Slo::Accounting {} => {}
                Slo::MaxThroughput { variant, rps_min } => {
                    self.needs_max_throughput(&path, slo, max_throughput);
                    if let Some(variant) = variant {
                        self.known_variant(path.key("variant"), variant, &variant_names);
                    }
                    self.rate(path.key("rps_min"), *rps_min);
                }
                Slo::ThroughputRatio {
                    numerator,
                    denominator,
                    ratio_min,
                } => {
                    self.needs_max_throughput(&path, slo, max_throughput);
                    self.known_variant(path.key("numerator"), numerator, &variant_names);
                    self.known_variant(path.key("denominator"), denominator, &variant_names);
                    self.positive(path.key("ratio_min"), *ratio_min, "a finite ratio");
                    self.number_at_most(path.key("ratio_min"), *ratio_min, MAX_RATIO, "");
                }
                // steps_max: any count up to the bound is meaningful (0 = no step may be redone).
                Slo::LostSteps { fault, steps_max } => {
                    if let Some(fault) = fault {
                        self.known_fault(path.key("fault"), fault, &fault_ids);
                    }
                    self.at_most(path.key("steps_max"), *steps_max, MAX_STEPS, "steps", "");
                }
                Slo::ScalingEfficiency {
                    workers,
                    efficiency_min,
                } => {
                    self.in_range(
                        path.key("efficiency_min"),
                        *efficiency_min,
                        (0.0, true),
                        (2.0, false),
                    );
                    if *workers < 2 {
                        self.problem(
                            path.key("workers"),
                            format!("workers = {workers} is no scale-out (E(1) = 1 by definition); expected workers >= 2"),
                        );
                    } else if *workers > MAX_REPLICAS {
                        self.problem(
                            path.key("workers"),
                            format!("workers = {workers} is more replicas than a stack may have; expected at most {MAX_REPLICAS}"),
                        );
                    } else if training {
                        self.scaling_variants(&path, *workers);
                    }
                }
                Slo::Loss { final_ratio_max } => {
                    self.positive(
                        path.key("final_ratio_max"),
                        *final_ratio_max,
                        "a finite ratio",
                    );
                    self.number_at_most(
                        path.key("final_ratio_max"),
                        *final_ratio_max,
                        MAX_RATIO,
                        "",
                    );
                }
            }
        }
    }

    fn known_fault(&mut self, path: FieldPath, fault: &str, fault_ids: &[String]) {
        if !fault_ids.iter().any(|id| id == fault) {
            self.problem(
                path,
                format!(
                    "unknown fault id \"{fault}\"; expected one of: {}",
                    quoted_list(fault_ids.iter().map(String::as_str))
                ),
            );
        }
    }

    /// HTTP SLOs need an HTTP mode; training SLOs need `mode = "training"`.
    fn slo_mode(&mut self, path: &FieldPath, slo: &Slo) {
        let mode = self.scenario.workload.mode;
        let http = matches!(
            slo,
            Slo::Latency { .. }
                | Slo::Availability { .. }
                | Slo::Errors { .. }
                | Slo::Throughput { .. }
        );
        let trains = matches!(
            slo,
            Slo::LostSteps { .. } | Slo::ScalingEfficiency { .. } | Slo::Loss { .. }
        );
        if http && mode == LoadMode::Training {
            self.problem(
                path.key("kind"),
                format!(
                    "\"{}\" measures HTTP requests, which mode = \"training\" does not send; expected a recovery, accounting, lost-steps, scaling-efficiency or loss SLO",
                    slo.kind_name()
                ),
            );
        } else if trains && mode != LoadMode::Training {
            self.problem(
                path.key("kind"),
                format!(
                    "\"{}\" measures a training job (mode is \"{}\"); expected workload.mode = \"training\"",
                    slo.kind_name(),
                    mode.name()
                ),
            );
        }
    }

    /// E(N) needs a variant whose target runs `workers` replicas and a 1-replica baseline.
    fn scaling_variants(&mut self, path: &FieldPath, workers: u32) {
        let s = self.scenario;
        // An unknown target is reported at workload.target.
        let Some(target) = s.component(&s.workload.target) else {
            return;
        };
        let counts: Vec<u32> = s
            .variants
            .iter()
            .map(|v| {
                v.replicas
                    .get(&target.name)
                    .copied()
                    .unwrap_or(target.replicas)
            })
            .collect();
        let name = &target.name;
        for (count, why) in [(workers, "the scaled-out run"), (1, "the baseline of E(N)")] {
            if !counts.contains(&count) {
                self.problem(
                    path.key("workers"),
                    format!(
                        "no variant runs \"{name}\" with {count} replica{} ({why}); expected a [[variants]] entry with replicas = {{ {name} = {count} }}",
                        if count == 1 { "" } else { "s" }
                    ),
                );
            }
        }
    }

    /// `abort_on_fail`: open loop, measured phase, and what the SLO itself needs (`why`).
    fn abort_on_fail(&mut self, path: &FieldPath, phase: Phase, why: Option<&str>) {
        let mode = self.scenario.workload.mode;
        let problem = if mode != LoadMode::OpenLoop {
            Some(format!(
                "abort_on_fail stops an open-loop load (mode is \"{}\"); expected mode = \"open-loop\", or no abort_on_fail",
                mode.name()
            ))
        } else if phase != Phase::Measured {
            Some(format!(
                "abort_on_fail judges the measured phase as it runs (phase is \"{}\"); expected phase = \"measured\"",
                phase.name()
            ))
        } else {
            why.map(|w| format!("abort_on_fail cannot judge {w}"))
        };
        if let Some(p) = problem {
            self.problem(path.key("abort_on_fail"), p);
        }
    }

    fn phase(&mut self, path: FieldPath, phase: Phase) {
        let s = self.scenario;
        if matches!(phase, Phase::Faulted | Phase::Recovering) && s.faults.is_empty() {
            self.problem(
                path,
                format!("phase \"{}\" is empty because the scenario has no faults; expected \"measured\" or \"steady\", or add a [[faults]] entry", phase.name()),
            );
        } else if phase == Phase::Warmup && s.workload.warmup.is_zero() {
            self.problem(
                path,
                "phase \"warmup\" is empty because workload.warmup = \"0s\"; expected another phase, or a warmup > 0",
            );
        }
    }

    /// At least one of two optional bounds, each in range, `min <= max`.
    fn bounds(
        &mut self,
        path: &FieldPath,
        (min_key, min): (&str, Option<f64>),
        (max_key, max): (&str, Option<f64>),
        ratio: Option<(f64, f64)>,
    ) {
        if min.is_none() && max.is_none() {
            self.problem(
                path.clone(),
                format!("no bound; expected {max_key}, {min_key} or both"),
            );
        }
        for (key, value) in [(min_key, min), (max_key, max)] {
            let Some(value) = value else { continue };
            match ratio {
                Some(range) => {
                    self.in_range(path.key(key), value, (range.0, false), (range.1, false))
                }
                None => {
                    self.positive(path.key(key), value, "a finite bound (milliseconds)");
                    self.number_at_most(path.key(key), value, MAX_LATENCY_MS, " ms");
                }
            }
        }
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                self.problem(
                    path.key(min_key),
                    format!("{lo} is above {max_key} = {hi}; expected {min_key} <= {max_key}"),
                );
            }
        }
    }

    fn needs_max_throughput(&mut self, path: &FieldPath, slo: &Slo, max_throughput: bool) {
        if !max_throughput {
            self.problem(
                path.key("kind"),
                format!(
                    "\"{}\" needs a max-throughput search (mode is \"{}\"); expected workload.mode = \"max-throughput\"",
                    slo.kind_name(),
                    self.scenario.workload.mode.name()
                ),
            );
        }
    }

    fn known_variant(&mut self, path: FieldPath, name: &str, variants: &[&str]) {
        if !variants.contains(&name) {
            self.problem(
                path,
                format!(
                    "unknown variant \"{name}\"; expected one of: {}",
                    quoted_list(variants.iter().copied())
                ),
            );
        }
    }

    fn variants(&mut self) {
        let s = self.scenario;
        let mut seen = BTreeSet::new();
        for (i, variant) in s.variants.iter().enumerate() {
            let path = root().key("variants").index(i);
            if self.bytes_at_most(path.key("name"), &variant.name, MAX_NAME_BYTES) {
                if !is_simple_name(&variant.name) {
                    self.problem(
                        path.key("name"),
                        format!(
                            "invalid name \"{}\"; expected lowercase letters, digits and '-' ([a-z0-9-]+)",
                            variant.name
                        ),
                    );
                }
                if !seen.insert(variant.name.as_str()) {
                    self.problem(
                        path.key("name"),
                        format!(
                            "duplicate variant name \"{}\"; expected unique names",
                            variant.name
                        ),
                    );
                }
            }
            let total: u64 = s
                .components
                .iter()
                .map(|c| u64::from(*variant.replicas.get(&c.name).unwrap_or(&c.replicas)))
                .sum();
            let own_problem = s.components.iter().any(|c| c.replicas > MAX_REPLICAS)
                || variant.replicas.values().any(|&r| r > MAX_REPLICAS);
            if total > u64::from(MAX_REPLICAS) && !own_problem {
                self.problem(
                    path.key("replicas"),
                    format!("{total} replicas in all components together; expected at most {MAX_REPLICAS} (each replica gets its own loopback address)"),
                );
            }
            for (component, args) in self.per_component(&path.key("args"), &variant.args) {
                let args_path = path.key("args").key(component);
                let known = self.known_component(args_path.clone(), component);
                self.args(&args_path, args);
                if let Some(c) = known.filter(|c| command_bytes(c) <= MAX_COMMAND_BYTES) {
                    let bytes = command_bytes(c) + args_bytes(args);
                    if bytes > MAX_COMMAND_BYTES {
                        self.problem(
                            args_path,
                            format!("with the args and env of \"{component}\" these take {bytes} bytes; expected at most {MAX_COMMAND_BYTES} bytes in all (execve refuses long command lines)"),
                        );
                    }
                }
            }
            for (component, &replicas) in
                self.per_component(&path.key("replicas"), &variant.replicas)
            {
                let replicas_path = path.key("replicas").key(component);
                let Some(component) = self.known_component(replicas_path.clone(), component) else {
                    continue;
                };
                if replicas == 0 {
                    self.problem(replicas_path, "0 replicas; expected at least 1");
                } else if replicas > MAX_REPLICAS {
                    self.problem(
                        replicas_path,
                        format!("{replicas} replicas; expected at most {MAX_REPLICAS}"),
                    );
                } else if variant.inject_faults {
                    self.variant_fault_targets(replicas_path, component, replicas);
                }
            }
        }
    }

    /// The entries of a variant's component → value table whose keys could name a
    /// component: none when the table has more entries than a stack has components, and
    /// none with a key longer than a component name (reported at the table, unquoted).
    fn per_component<'m, T>(
        &mut self,
        path: &FieldPath,
        table: &'m BTreeMap<String, T>,
    ) -> Vec<(&'m String, &'m T)> {
        if !self.len_at_most(path.clone(), table.len(), MAX_COMPONENTS, "components") {
            return Vec::new();
        }
        let (fit, long): (Vec<_>, Vec<_>) = table
            .iter()
            .partition(|(name, _)| name.len() <= MAX_NAME_BYTES);
        for (name, _) in long {
            self.problem(
                path.clone(),
                format!(
                    "a component name of {} bytes; expected the name of a component (at most {MAX_NAME_BYTES} bytes)",
                    name.len()
                ),
            );
        }
        fit
    }

    /// A variant that injects faults keeps every replica a fault targets (a replica missing
    /// from the component itself is reported at the fault).
    fn variant_fault_targets(&mut self, path: FieldPath, component: &Component, replicas: u32) {
        let name = &component.name;
        for (i, f) in self.scenario.faults.iter().enumerate() {
            let Some((target, replica)) = f.target.as_deref().and_then(|t| t.split_once('/'))
            else {
                continue;
            };
            let Ok(r) = replica.parse::<u32>() else {
                continue;
            };
            if target == name && r >= replicas && r < component.replicas {
                self.problem(
                    path.clone(),
                    format!(
                        "{replicas} replica{} of \"{name}\" but faults[{i}] targets \"{name}/{r}\"; expected replicas > {r}, or inject_faults = false",
                        if replicas == 1 { "" } else { "s" }
                    ),
                );
            }
        }
    }
}
