//! Report assembly: a pure function from the scenario, the run's identity and what each
//! stack lifetime produced ([`StackResult`]) to the report model ([`RunMetrics`]). The
//! runner measures; this decides what the report says, and its unit tests pin that down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use loadgen::LoadReport;
use report::{
    FaultSpan, HostInfo, PhaseSummary, ProcessLife, ProcessRecord, Recovery, RunInfo, RunMetrics,
    SearchResult, Span, WorkloadInfo,
};
use scenario::{ComponentKind, FaultKind, LatencyMeasure, LoadMode, Scenario, Slo};

use crate::analysis::{self, PhaseData};
use crate::events::round_us;
use crate::sampler::Sample;
use crate::slo::{self, Evidence};
use crate::supervisor::{End, Life, Replica};
use crate::timeline::FaultEvent;

/// Who the run is: everything in the report's header that is not in the scenario.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// The scenario's display name (report folder).
    pub name: String,
    pub file: PathBuf,
    pub run_id: String,
    pub seed: u64,
    pub commit: String,
    pub started: SystemTime,
    pub wall_s: f64,
    pub host: HostInfo,
    /// `component=argument` added to the scenario for this run (`RunOptions::extra_args`).
    pub extra_args: Vec<String>,
}

impl RunIdentity {
    /// This machine, as the report describes it.
    pub fn this_host() -> HostInfo {
        HostInfo {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
        }
    }
}

/// One replica as the report shows it: its record once the stack has stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRecord {
    /// `component/replica`.
    pub name: String,
    pub component: String,
    pub kind: ComponentKind,
    pub addr: SocketAddr,
    /// Its log (stdout and stderr of every life), under the run folder's `logs/`.
    pub log_path: PathBuf,
    pub lives: Vec<Life>,
}

impl ReplicaRecord {
    /// The record of a supervised replica, as it stands now.
    pub fn of(r: &Replica) -> Self {
        let spec = r.spec();
        ReplicaRecord {
            name: spec.name.clone(),
            component: spec.component.clone(),
            kind: spec.kind,
            addr: spec.addr,
            log_path: spec.log_path.clone(),
            lives: r.lives(),
        }
    }

    /// Restarts made (starts after the first).
    pub fn restarts(&self) -> u32 {
        u32::try_from(self.lives.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

/// What one stack lifetime (the scenario, or one of its variants) produced.
#[derive(Debug, Default)]
pub struct StackResult {
    /// The variant this lifetime ran (`default` without variants).
    pub variant: String,
    pub load: Option<LoadReport>,
    /// The replica behind each of the load's targets, in the load's target order.
    pub load_targets: Vec<String>,
    /// Each client of `[[workload.clients]]` and its own report (their merge is `load`);
    /// empty for a load from one place.
    pub clients: Vec<crate::clients::ClientRun>,
    /// Scenario t = 0 of this lifetime, on the run clock.
    pub load_t0_s: Option<f64>,
    pub faults: Vec<FaultEvent>,
    pub search: Option<SearchResult>,
    pub training: Option<report::TrainingResult>,
    pub replicas: Vec<ReplicaRecord>,
    /// What each fault proxy (links between regions, `net.*` fronts) carried.
    pub net_traffic: Vec<(crate::stack::PlannedProxy, proxy::ProxyStats)>,
    pub failures: Vec<String>,
    /// CPU, memory and host load while the stack ran ([`crate::sampler`]).
    pub samples: Vec<Sample>,
}

/// Why a process life ended, as the verdict sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Still running when the record was taken.
    Running,
    /// The runner stopped it (end of the run, Ctrl-C).
    Runner,
    /// It exited with its kind's "workload finished" code (a training job's end).
    Done,
    /// The fault with this id explains it (see [`scenario::KindSpec::fault_exits`]).
    Fault(String),
    /// Nothing planned explains it: the run fails.
    Unplanned,
}

impl Cause {
    /// The report's wording; `None` while running.
    pub fn text(&self) -> Option<String> {
        match self {
            Cause::Running => None,
            Cause::Runner => Some("stopped by the runner".into()),
            Cause::Done => Some("workload finished".into()),
            Cause::Fault(id) => Some(format!("fault {id}")),
            Cause::Unplanned => Some("UNPLANNED".into()),
        }
    }
}

/// The region map and the per-link table: `None` without regions and without fault
/// proxies. Link traffic is summed over the link's proxies and over the variants.
pub fn network(scenario: &Scenario, results: &[StackResult]) -> Option<report::Network> {
    let proxies: Vec<&(crate::stack::PlannedProxy, proxy::ProxyStats)> =
        results.iter().flat_map(|r| &r.net_traffic).collect();
    let netns = scenario.network.mode == scenario::NetworkMode::Netns;
    if scenario.regions.is_empty() && proxies.is_empty() && !netns {
        return None;
    }
    let names: Vec<String> = if scenario.regions.is_empty() {
        vec!["default".to_owned()]
    } else {
        scenario.regions.iter().map(|r| r.name.clone()).collect()
    };
    let region_of = |component: &str| {
        scenario
            .component(component)
            .and_then(|c| c.region.clone())
            .unwrap_or_else(|| names[0].clone())
    };
    let mut regions: Vec<report::RegionRow> = names
        .iter()
        .map(|n| report::RegionRow {
            name: n.clone(),
            replicas: Vec::new(),
        })
        .collect();
    for r in results.iter().flat_map(|r| &r.replicas) {
        let region = region_of(&r.component);
        if let Some(row) = regions.iter_mut().find(|row| row.name == region) {
            if !row.replicas.contains(&r.name) {
                row.replicas.push(r.name.clone());
            }
        }
    }
    let mut links = Vec::new();
    for (fi, from) in names.iter().enumerate() {
        for (ti, to) in names.iter().enumerate() {
            if fi == ti {
                continue;
            }
            let (f, t) = (fi + 1, ti + 1);
            let on_link: Vec<_> = proxies
                .iter()
                .filter(|(p, _)| {
                    p.link
                        .is_some_and(|(a, b)| usize::from(a) == f && usize::from(b) == t)
                })
                .collect();
            let conf = scenario.links.iter().find(|l| {
                (l.between[0] == *from && l.between[1] == *to)
                    || (l.between[0] == *to && l.between[1] == *from)
            });
            let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            links.push(report::LinkRow {
                from: from.clone(),
                to: to.clone(),
                rtt_ms: ms(conf.and_then(|l| l.rtt)),
                jitter_ms: ms(conf.and_then(|l| l.jitter)),
                rate_kbps: conf.and_then(|l| l.rate_kbps),
                proxies: u32::try_from(
                    on_link
                        .iter()
                        .map(|(p, _)| p.replica.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len(),
                )
                .unwrap_or(u32::MAX),
                connections: on_link.iter().map(|(_, s)| s.connections).sum(),
                bytes_from: on_link.iter().map(|(_, s)| s.bytes_upstream).sum(),
                bytes_to: on_link.iter().map(|(_, s)| s.bytes_downstream).sum(),
            });
        }
    }
    Some(report::Network {
        mode: scenario.network.mode.as_str().to_owned(),
        regions,
        links,
    })
}

/// Whether a fault of `kind` explains an end `end` of a replica of `component_kind`.
fn explains(kind: FaultKind, end: End, component_kind: ComponentKind) -> bool {
    match (kind, end) {
        (FaultKind::ProcessKill | FaultKind::RegionDown, End::Signal(9)) => true,
        (_, End::Code(code)) => component_kind
            .spec()
            .fault_exits
            .iter()
            .any(|&(k, c)| k == kind && c == code),
        _ => false,
    }
}

/// The cause of every life of every replica, in order. Each injected fault explains at
/// most one end per replica it targets: the first matching one after its injection.
pub fn life_causes(replicas: &[ReplicaRecord], faults: &[FaultEvent]) -> Vec<Vec<Cause>> {
    replicas
        .iter()
        .map(|rep| {
            let mut used = vec![false; faults.len()];
            rep.lives
                .iter()
                .map(|l| {
                    let (Some(end), Some(ended)) = (l.end, l.ended_s) else {
                        return Cause::Running;
                    };
                    if end == End::Runner {
                        return Cause::Runner;
                    }
                    if matches!(end, End::Code(c) if rep.kind.spec().done_code == Some(c)) {
                        return Cause::Done;
                    }
                    let by = faults.iter().enumerate().find(|(i, f)| {
                        !used[*i]
                            && f.injected_s.is_some_and(|t| t <= ended)
                            && (f.target.as_deref().is_some_and(|t| {
                                crate::faults::names(t, &rep.component, &rep.name)
                            }) || f.replicas.contains(&rep.name))
                            && explains(f.kind, end, rep.kind)
                    });
                    match by {
                        Some((i, f)) => {
                            used[i] = true;
                            Cause::Fault(f.id.clone())
                        }
                        None => Cause::Unplanned,
                    }
                })
                .collect()
        })
        .collect()
}

/// Faults of a lifetime that did not happen as planned: never injected (the workload
/// ended first), or cut short by the end of the run.
pub fn fault_coverage(faults: &[FaultEvent]) -> Vec<String> {
    let mut out = Vec::new();
    for f in faults {
        match (f.injected_s, f.healed_s) {
            (None, _) => out.push(format!(
                "fault {} ({}) was never injected: the workload ended (or the run was stopped) before its time; move it earlier or lengthen the workload",
                f.id,
                f.kind.name()
            )),
            (Some(inj), Some(healed)) if f.cut_short => out.push(format!(
                "fault {} ({}) was planned to last {:.3} s but lasted {:.3} s: the workload ended first; shorten the fault or lengthen the workload",
                f.id,
                f.kind.name(),
                f.planned_s.unwrap_or(0.0),
                healed - inj
            )),
            _ => {}
        }
    }
    out
}

/// CPU per process (cores), resident memory per process (MiB) and the host's busy share
/// and load average, on the scenario clock.
pub fn machine_charts(samples: &[Sample], to_scn: &dyn Fn(f64) -> f64) -> Vec<report::Chart> {
    if samples.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = samples[0].procs.iter().map(|p| p.name.as_str()).collect();
    let per_proc = |value: &dyn Fn(&crate::sampler::ProcSample) -> Option<f64>| {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| report::Series {
                name: (*name).to_owned(),
                points: samples
                    .iter()
                    .filter_map(|s| Some((to_scn(s.run_s), value(s.procs.get(i)?)?)))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let host = |value: &dyn Fn(&Sample) -> Option<f64>| {
        samples
            .iter()
            .filter_map(|s| Some((to_scn(s.run_s), value(s)?)))
            .collect::<Vec<_>>()
    };
    vec![
        report::Chart {
            id: "cpu".into(),
            title: "CPU per process (cores busy, sampled every 0.5 s)".into(),
            x_label: "scenario time (s)".into(),
            y_label: "cores".into(),
            time_axis: true,
            series: per_proc(&|p| p.cpu_cores),
        },
        report::Chart {
            id: "memory".into(),
            title: "Resident memory per process (MiB)".into(),
            x_label: "scenario time (s)".into(),
            y_label: "MiB".into(),
            time_axis: true,
            series: per_proc(&|p| p.rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0))),
        },
        report::Chart {
            id: "host".into(),
            title: "Host: CPUs busy (all cores) and 1-minute load average".into(),
            x_label: "scenario time (s)".into(),
            y_label: "busy share / load".into(),
            time_axis: true,
            series: vec![
                report::Series {
                    name: "busy share of all CPUs".into(),
                    points: host(&|s| s.host_busy),
                },
                report::Series {
                    name: "load average (1 min)".into(),
                    points: host(&|s| s.load1),
                },
            ],
        },
    ]
}

/// Peak resident memory of each process and the host's mean busy share over each stack
/// lifetime.
pub fn machine_figures(results: &[StackResult]) -> Vec<report::Figure> {
    let several = results.len() > 1;
    let mut out = Vec::new();
    for (k, r) in results.iter().enumerate() {
        let prefix = if several {
            format!("lifetime{k}_")
        } else {
            String::new()
        };
        let Some(first) = r.samples.first() else {
            continue;
        };
        for (i, p) in first.procs.iter().enumerate() {
            let peak = r
                .samples
                .iter()
                .filter_map(|s| s.procs.get(i)?.rss_bytes)
                .max();
            if let Some(peak) = peak {
                out.push(report::Figure {
                    name: format!("{prefix}{}_peak_rss_mib", p.name.replace('/', "_")),
                    value: round_us(peak as f64 / (1024.0 * 1024.0)),
                    unit: "MiB".into(),
                    definition: "largest resident set size sampled (/proc/PID/statm), every 0.5 s"
                        .into(),
                });
            }
        }
        let busy: Vec<f64> = r.samples.iter().filter_map(|s| s.host_busy).collect();
        if !busy.is_empty() {
            out.push(report::Figure {
                name: format!("{prefix}host_cpu_busy_mean"),
                value: round_us(busy.iter().sum::<f64>() / busy.len() as f64),
                unit: "share of all CPUs".into(),
                definition: "mean busy share of the host's CPUs while the stack ran (/proc/stat): how busy the machine was".into(),
            });
        }
    }
    out
}

/// Adds `a` into `total` (balanced only if both are).
fn add_accounting(total: &mut report::Accounting, a: &report::Accounting) {
    total.sent += a.sent;
    total.ok += a.ok;
    total.timeouts += a.timeouts;
    total.dropped_by_generator += a.dropped_by_generator;
    total.balanced &= a.balanced;
    for (kind, n) in &a.errors {
        *total.errors.entry(kind.clone()).or_insert(0) += n;
    }
}

/// What one lifetime's load run contributes to the report, on its own scenario clock.
#[derive(Debug, Clone)]
struct LoadSection {
    spans: Vec<Span>,
    phases: Vec<PhaseData>,
    windows: Vec<report::WindowMetrics>,
    faults: Vec<FaultSpan>,
    recoveries: Vec<Recovery>,
    distribution: Vec<report::DistributionPoint>,
    accounting: report::Accounting,
    balanced: bool,
    unbalanced_windows: Vec<f64>,
    replicas: Vec<report::ReplicaLoad>,
    clients: Vec<report::ClientLoad>,
}

/// Which replica took a load's failures: one row per target of `load`, named by
/// `names` (the replica behind each target, in the load's target order).
fn replica_loads(load: &LoadReport, names: &[String]) -> Vec<report::ReplicaLoad> {
    let failed_total: u64 = load.targets.iter().map(|t| t.counts.failed()).sum();
    load.targets
        .iter()
        .enumerate()
        .map(|(i, t)| report::ReplicaLoad {
            variant: None,
            replica: names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("target #{i}")),
            accounting: analysis::accounting(&t.counts),
            failure_share: (failed_total > 0)
                .then(|| round_us(t.counts.failed() as f64 / failed_total as f64)),
            latency: report::Percentiles::from_histogram(&t.latency),
            latency_all: report::Percentiles::from_histogram(&t.latency_all),
        })
        .collect()
}

/// Each client's own figures (`[[workload.clients]]`): its accounting and its phases, on
/// the scenario clock. A client's windows are keyed by its own t = 0, `start_offset_s`
/// after the load's, so the fault times are moved onto its clock to tell its phases apart
/// and its phases moved back. Also the scenario-clock start of every window of a client
/// that does not balance.
fn client_loads(
    clients: &[crate::clients::ClientRun],
    load: &LoadReport,
    times: &[analysis::FaultTimes],
) -> (Vec<report::ClientLoad>, Vec<f64>) {
    let mut unbalanced = Vec::new();
    let rows = clients
        .iter()
        .map(|c| {
            let offset = c
                .report
                .started_at
                .duration_since(load.started_at)
                .map_or(0.0, |d| d.as_secs_f64());
            let own: Vec<analysis::FaultTimes> = times
                .iter()
                .map(|t| analysis::FaultTimes {
                    start_s: t.start_s - offset,
                    heal_s: t.heal_s.map(|h| h - offset),
                    ..*t
                })
                .collect();
            unbalanced.extend(
                c.report
                    .windows
                    .iter()
                    .filter(|w| !w.counts.balanced())
                    .map(|w| round_us(w.start.as_secs_f64() + offset)),
            );
            let summaries = analysis::phases(&c.report, &own)
                .iter()
                .map(|p| {
                    let mut s = p.summary();
                    if p.span_s() > 0.0 {
                        s.start_s = round_us(s.start_s + offset);
                        s.end_s = round_us(s.end_s + offset);
                    }
                    s
                })
                .collect();
            report::ClientLoad {
                variant: None,
                name: c.name.clone(),
                region: c.region.clone(),
                rate_per_s: c.rate_per_s,
                start_offset_s: round_us(offset),
                accounting: analysis::accounting(&c.report.accounting),
                summaries,
                connections_added: c.report.connections.added,
            }
        })
        .collect();
    (rows, unbalanced)
}

/// Connections the load generator's pools added in one variant's run: its load (its
/// clients' merged) or its search's trials.
fn added_by(r: &StackResult) -> u64 {
    r.load.as_ref().map_or(0, |l| l.connections.added)
        + r.search
            .as_ref()
            .map_or(0, |s| s.trials.iter().map(|t| t.connections_added).sum())
}

/// The load section of one lifetime: faults and their recoveries, phases, windows with
/// their phase, distribution and accounting.
fn load_section(scenario: &Scenario, r: &StackResult, load: &LoadReport) -> LoadSection {
    let t0 = r.load_t0_s.unwrap_or(0.0);
    let to_scn = |s: f64| round_us(s - t0);
    let fine_width = load
        .fine
        .get(1)
        .zip(load.fine.first())
        .map(|(b, a)| b.start - a.start)
        .unwrap_or(loadgen::DEFAULT_FINE_WINDOW);
    let measured_end = load.measured.end.as_secs_f64();
    let mut times = Vec::new();
    let mut recoveries = Vec::new();
    let mut faults = Vec::new();
    for f in &r.faults {
        let Some(inj) = f.injected_s else { continue };
        let start_s = to_scn(inj);
        let healed = f.healed_s.map(to_scn);
        let recovery = analysis::recovery_s(&load.fine, fine_width, start_s, measured_end);
        let baseline = analysis::baseline_p99_ms(load, start_s);
        let latency_recovery =
            baseline.and_then(|b| analysis::latency_recovery_s(load, start_s, healed, b));
        let t = analysis::FaultTimes {
            start_s,
            reach_s: baseline.map_or(0.0, |ms| ms / 1000.0),
            heal_s: healed,
            recovery_s: recovery,
            latency_recovery_s: latency_recovery,
        };
        times.push(t);
        let (_, acting_end) = t.faulted(measured_end);
        let (_, recovered) = t.recovering(measured_end);
        let restarts = r
            .replicas
            .iter()
            .filter(|rep| {
                f.target
                    .as_deref()
                    .is_some_and(|t| crate::faults::names(t, &rep.component, &rep.name))
            })
            .flat_map(|rep| &rep.lives)
            .filter(|l| to_scn(l.started_s) >= start_s && to_scn(l.started_s) <= recovered)
            .count() as u32;
        recoveries.push(Recovery {
            fault_id: f.id.clone(),
            kind: f.kind.name().to_owned(),
            variant: None,
            start_s,
            recovery_s: recovery.map(round_us),
            latency_recovery_s: latency_recovery.map(round_us),
            latency_baseline_ms: baseline.map(round_us),
            failed_requests: analysis::failed_between(
                &load.fine,
                fine_width,
                start_s,
                recovery.map_or(f64::INFINITY, |rec| start_s + rec),
            ),
            restarts,
        });
        faults.push(FaultSpan {
            id: f.id.clone(),
            kind: f.kind.name().to_owned(),
            target: f.target.clone(),
            start_s,
            end_s: Some(round_us(acting_end)),
            detail: f.detail.clone(),
        });
    }
    let bound = goodput_bound_us(&scenario.slo);
    let windows = load
        .windows
        .iter()
        .map(|w| {
            let s = w.start.as_secs_f64();
            let mut m = analysis::window_metrics(w, bound);
            let phase = analysis::window_phase(load, s, s + w.width.as_secs_f64(), &times);
            m.phase = Some(phase.to_owned());
            m
        })
        .collect();
    let mut unbalanced_windows: Vec<f64> = load
        .windows
        .iter()
        .filter(|w| !w.counts.balanced())
        .map(|w| w.start.as_secs_f64())
        .collect();
    // Every client's requests balance on their own too, not only in the sum.
    let (clients, clients_unbalanced) = client_loads(&r.clients, load, &times);
    unbalanced_windows.extend(clients_unbalanced);
    LoadSection {
        spans: vec![
            Span {
                name: "warmup".into(),
                start_s: load.warmup.start.as_secs_f64(),
                end_s: load.warmup.end.as_secs_f64(),
            },
            Span {
                name: "measured".into(),
                start_s: load.measured.start.as_secs_f64(),
                end_s: measured_end,
            },
        ],
        phases: analysis::phases(load, &times),
        windows,
        faults,
        recoveries,
        distribution: report::distribution_from_histograms(
            &load.measured.stats.latency,
            &load.measured.stats.service,
        ),
        accounting: analysis::accounting(&load.accounting),
        balanced: unbalanced_windows.is_empty()
            && load.accounting.balanced()
            && r.clients.iter().all(|c| c.report.balanced()),
        unbalanced_windows,
        replicas: replica_loads(load, &r.load_targets),
        clients,
    }
}

/// p99 corrected latency over scenario time, one line per variant.
fn variant_latency_chart(loads: &[(&StackResult, LoadSection)]) -> report::Chart {
    report::Chart {
        id: "variants-latency".into(),
        title: "p99 corrected latency per 1 s window, by variant".into(),
        x_label: "scenario time (s)".into(),
        y_label: "ms".into(),
        time_axis: true,
        series: loads
            .iter()
            .map(|(r, sec)| report::Series {
                name: r.variant.clone(),
                points: sec
                    .windows
                    .iter()
                    .filter_map(|w| Some((w.start_s + w.width_s / 2.0, w.latency.p99_ms?)))
                    .collect(),
            })
            .collect(),
    }
}

/// The tightest corrected-latency bound of the SLOs, for goodput.
fn goodput_bound_us(slos: &[Slo]) -> Option<u64> {
    slos.iter()
        .filter_map(|s| match s {
            Slo::Latency {
                measure: LatencyMeasure::Corrected,
                latency_ms_max: Some(max),
                ..
            } => Some((max * 1000.0) as u64),
            _ => None,
        })
        .min()
}

/// The report of a run: a pure function of the scenario, the run's identity and what each
/// stack lifetime produced.
pub fn assemble(scenario: &Scenario, id: &RunIdentity, results: &[StackResult]) -> RunMetrics {
    let w = &scenario.workload;
    let mut failures: Vec<String> = results.iter().flat_map(|r| r.failures.clone()).collect();
    let searches: Vec<SearchResult> = results.iter().filter_map(|r| r.search.clone()).collect();
    // Scenario clock: t = 0 at the first intended request of the (single) load run.
    // With variants, the clock of the first lifetime that injected faults.
    let t0 = results
        .iter()
        .find(|r| !r.faults.is_empty())
        .and_then(|r| r.load_t0_s)
        .or_else(|| results.iter().find_map(|r| r.load_t0_s))
        .unwrap_or(0.0);
    let to_scn = |s: f64| round_us(s - t0);

    let mut processes = Vec::new();
    for r in results {
        let causes = life_causes(&r.replicas, &r.faults);
        for (rep, causes) in r.replicas.iter().zip(causes) {
            let mut lives = Vec::new();
            for (l, cause) in rep.lives.iter().zip(causes) {
                if cause == Cause::Unplanned {
                    failures.push(format!(
                        "{} (pid {}) ended at {} s ({}), which no fault on the timeline explains and the runner did not ask for",
                        rep.name,
                        l.pid,
                        l.ended_s.map_or_else(|| "?".to_owned(), |t| format!("{:.3}", to_scn(t))),
                        l.how.as_deref().unwrap_or("unknown"),
                    ));
                }
                lives.push(ProcessLife {
                    pid: l.pid,
                    started_s: to_scn(l.started_s),
                    ready_s: l.ready_s.map(to_scn),
                    ended_s: l.ended_s.map(to_scn),
                    how: l.how.clone(),
                    cause: cause.text(),
                });
            }
            processes.push(ProcessRecord {
                name: rep.name.clone(),
                kind: match rep.kind.spec().binary {
                    "" => rep.kind.spec().name.to_owned(),
                    binary => binary.to_owned(),
                },
                address: rep.addr.to_string(),
                lives,
                log: format!(
                    "logs/{}",
                    rep.log_path
                        .file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                ),
            });
        }
        failures.extend(fault_coverage(&r.faults));
    }

    let mut metrics = RunMetrics {
        schema_version: report::SCHEMA_VERSION,
        run: RunInfo {
            scenario: id.name.clone(),
            description: scenario.description.clone(),
            scenario_file: id.file.display().to_string(),
            run_id: id.run_id.clone(),
            started_at: humantime::format_rfc3339_seconds(id.started).to_string(),
            wall_s: round_us(id.wall_s),
            seed: id.seed,
            git_commit: id.commit.clone(),
            faultline_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: id.host.clone(),
            extra_args: id.extra_args.clone(),
            workload: WorkloadInfo {
                mode: w.mode.name().to_owned(),
                arrival: w.arrival.name().to_owned(),
                rate_per_s: w.total_rate_per_s(),
                connections: w.connections,
                stages: w
                    .stages
                    .iter()
                    .map(|st| report::StageInfo {
                        duration_s: st.duration.as_secs_f64(),
                        target_per_s: st.target,
                    })
                    .collect(),
                max_connections: w.max_connections,
                connections_added: w
                    .max_connections
                    .map(|_| results.iter().map(added_by).sum()),
                connections_added_by_variant: match (w.max_connections, results) {
                    (Some(_), [_, _, ..]) => results
                        .iter()
                        .map(|r| report::VariantCount {
                            variant: r.variant.clone(),
                            count: added_by(r),
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                warmup_s: w.warmup.as_secs_f64(),
                duration_s: w.duration.as_secs_f64(),
                timeout_s: w.timeout.as_secs_f64(),
                target: w.target.clone(),
            },
        },
        phases: Vec::new(),
        faults: Vec::new(),
        windows: Vec::new(),
        summaries: Vec::new(),
        distribution: Vec::new(),
        recoveries: Vec::new(),
        accounting: report::Accounting::default(),
        replicas: Vec::new(),
        clients: Vec::new(),
        network: network(scenario, results),
        processes,
        searches,
        figures: Vec::new(),
        charts: Vec::new(),
        training: Vec::new(),
        slos: Vec::new(),
        failures: Vec::new(),
    };

    let mut phases: Vec<PhaseData> = Vec::new();
    let mut balanced = true;
    let mut unbalanced_windows = Vec::new();
    let loads: Vec<(&StackResult, LoadSection)> = results
        .iter()
        .filter_map(|r| Some((r, load_section(scenario, r, r.load.as_ref()?))))
        .collect();
    let several = loads.len() > 1;
    // Per variant: phases for its SLO verdicts, its recoveries.
    let mut per_variant: Vec<(String, Vec<PhaseData>, Vec<Recovery>)> = Vec::new();
    if let Some((_, first)) = loads.first() {
        metrics.phases = first.spans.clone();
        metrics.windows = first.windows.clone();
        metrics.faults = first.faults.clone();
        metrics.distribution = first.distribution.clone();
        phases = first.phases.clone();
        let mut total = report::Accounting {
            balanced: true,
            ..report::Accounting::default()
        };
        for (r, sec) in &loads {
            let name = |phase: &str| {
                if several {
                    format!("{}: {phase}", r.variant)
                } else {
                    phase.to_owned()
                }
            };
            metrics
                .summaries
                .extend(sec.phases.iter().map(|p| PhaseSummary {
                    phase: name(&p.name),
                    ..p.summary()
                }));
            let mut recs = sec.recoveries.clone();
            if several {
                for rec in &mut recs {
                    rec.variant = Some(r.variant.clone());
                }
            }
            metrics.recoveries.extend(recs.iter().cloned());
            metrics
                .replicas
                .extend(sec.replicas.iter().cloned().map(|mut row| {
                    row.variant = several.then(|| r.variant.clone());
                    row
                }));
            metrics
                .clients
                .extend(sec.clients.iter().cloned().map(|mut row| {
                    row.variant = several.then(|| r.variant.clone());
                    row
                }));
            add_accounting(&mut total, &sec.accounting);
            balanced &= sec.balanced;
            unbalanced_windows.extend(sec.unbalanced_windows.iter().copied());
            per_variant.push((r.variant.clone(), sec.phases.clone(), recs));
        }
        metrics.accounting = total;
        if several {
            metrics.charts.push(variant_latency_chart(&loads));
        }
    } else if !metrics.searches.is_empty() {
        let mut total = report::Accounting {
            balanced: true,
            ..report::Accounting::default()
        };
        for t in metrics.searches.iter().flat_map(|s| s.trials.iter()) {
            add_accounting(&mut total, &t.accounting);
        }
        balanced = total.balanced;
        metrics.accounting = total;
    } else if w.mode == LoadMode::Training {
        balanced = training_section(&mut metrics, results, &to_scn);
    } else if failures.is_empty() {
        failures.push("the workload produced no measurements".to_owned());
    }
    if !balanced && w.mode == LoadMode::Training {
        failures.push(
            "step accounting does not balance: a step number between 0 and the last completed step never completed, or the job stopped before its last step".to_owned(),
        );
    } else if !balanced {
        failures.push(format!(
            "request accounting does not balance (sent ≠ ok + errors + timeouts + dropped) in windows starting at {unbalanced_windows:?} s"
        ));
    }
    if let Some(n) = metrics
        .accounting
        .errors
        .get("generator_resources")
        .filter(|n| **n > 0)
    {
        failures.push(format!(
            "the load generator failed {n} request(s) itself (generator_resources): it ran out of file descriptors or local ports opening connections, so those failures are not the target's; raise the open-file limit (ulimit -n) or lower workload.connections / max_connections"
        ));
    }
    if per_variant.len() > 1 {
        // Every SLO judges every variant's load.
        for (variant, vphases, vrecs) in &per_variant {
            let evidence = Evidence {
                phases: vphases,
                recoveries: vrecs,
                searches: &metrics.searches,
                training: &metrics.training,
                accounting_balanced: balanced,
                unbalanced_windows: unbalanced_windows.clone(),
            };
            metrics
                .slos
                .extend(
                    slo::evaluate(&scenario.slo, &evidence)
                        .into_iter()
                        .map(|mut v| {
                            v.description = format!("{} [{variant}]", v.description);
                            v
                        }),
                );
        }
    } else {
        let evidence = Evidence {
            phases: &phases,
            recoveries: &metrics.recoveries,
            searches: &metrics.searches,
            training: &metrics.training,
            accounting_balanced: balanced,
            unbalanced_windows,
        };
        metrics.slos = slo::evaluate(&scenario.slo, &evidence);
    }
    let clocked = results
        .iter()
        .find(|r| !r.faults.is_empty() && r.load_t0_s.is_some())
        .or_else(|| results.iter().find(|r| r.load_t0_s.is_some()))
        .or_else(|| results.first());
    if let Some(r) = clocked {
        metrics.charts.extend(machine_charts(&r.samples, &to_scn));
    }
    metrics.figures.extend(machine_figures(results));
    metrics.failures = failures;
    metrics
}

/// Fills the training results, their faults and recoveries, charts and figures; returns
/// whether every job's steps are accounted.
fn training_section(
    metrics: &mut RunMetrics,
    results: &[StackResult],
    to_scn: &dyn Fn(f64) -> f64,
) -> bool {
    let mut accounted = true;
    for r in results {
        let Some(t) = &r.training else { continue };
        accounted &= t.steps_accounted;
        for f in &r.faults {
            let Some(inj) = f.injected_s else { continue };
            let start_s = to_scn(inj);
            let rec = t.recoveries.iter().find(|x| x.fault_id == f.id);
            let end = f
                .healed_s
                .map(to_scn)
                .or_else(|| rec.and_then(|x| x.total_s).map(|d| start_s + d));
            metrics.faults.push(FaultSpan {
                id: f.id.clone(),
                kind: f.kind.name().to_owned(),
                target: f.target.clone(),
                start_s,
                end_s: end.map(round_us),
                detail: f.detail.clone(),
            });
            if let Some(x) = rec {
                metrics.recoveries.push(Recovery {
                    fault_id: f.id.clone(),
                    kind: f.kind.name().to_owned(),
                    variant: None,
                    start_s,
                    recovery_s: x.total_s.map(round_us),
                    latency_recovery_s: None,
                    latency_baseline_ms: None,
                    failed_requests: 0,
                    restarts: r.replicas.iter().map(ReplicaRecord::restarts).sum(),
                });
            }
        }
        metrics.training.push(t.clone());
    }
    let (charts, figures) = report::training::charts_and_figures(&metrics.training);
    metrics.charts.extend(charts);
    metrics.figures.extend(figures);
    accounted
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use loadgen::{Counts, ErrorKind, FineWindow, LatencyStats, PhaseStats, WindowStats};
    use scenario::FaultKind;

    use super::*;

    const OPEN_LOOP: &str = r#"
[[components]]
name = "server"
kind = "server"

[workload]
target = "server"
rate_per_s = 10
warmup = "1s"
duration = "4s"
requests = [{ kind = "infer", model = "mlp" }]

[[faults]]
id = "kill"
at = "2s"
kind = "process.kill"
target = "server"

[[slo]]
kind = "availability"
phase = "measured"
ratio_min = 0.5
"#;

    const TRAINING: &str = r#"
[[components]]
name = "rendezvous"
kind = "trainer-rendezvous"

[[components]]
name = "worker"
kind = "trainer-worker"
replicas = 2
args = ["--rendezvous", "{rendezvous.addr}"]

[workload]
target = "worker"
mode = "training"
duration = "10s"

[[faults]]
id = "kill"
at = "3s"
kind = "process.kill"
target = "worker/1"
"#;

    fn identity() -> RunIdentity {
        RunIdentity {
            name: "t".into(),
            file: PathBuf::from("scenarios/t.toml"),
            run_id: "r1".into(),
            seed: 7,
            commit: "abc".into(),
            started: SystemTime::UNIX_EPOCH,
            wall_s: 12.345_678_9,
            host: HostInfo {
                os: "linux".into(),
                arch: "x86_64".into(),
                cpus: 2,
            },
            extra_args: Vec::new(),
        }
    }

    fn counts(sent: u64, ok: u64, refused: u64) -> Counts {
        let mut c = Counts {
            sent,
            ok,
            ..Counts::default()
        };
        if refused > 0 {
            c.errors.insert(ErrorKind::ConnectRefused, refused);
        }
        c
    }

    /// Five 1 s windows of 10 requests; the fault at 2 s fails the first 300 ms.
    fn load_report() -> LoadReport {
        let s = Duration::from_secs;
        let windows = (0..5)
            .map(|i| WindowStats {
                start: s(i),
                width: s(1),
                counts: if i == 2 {
                    counts(10, 7, 3)
                } else {
                    counts(10, 10, 0)
                },
                completed: 10,
                stats: LatencyStats::default(),
            })
            .collect();
        let fine = (0..50)
            .map(|i| FineWindow {
                start: Duration::from_millis(100 * i),
                sent: 1,
                ok: u64::from(!(20..23).contains(&i)),
                failed: u64::from((20..23).contains(&i)),
            })
            .collect();
        LoadReport {
            started_at: SystemTime::UNIX_EPOCH,
            seed: 7,
            windows,
            fine,
            warmup: PhaseStats {
                start: s(0),
                end: s(1),
                counts: counts(10, 10, 0),
                completed: 10,
                stats: LatencyStats::default(),
            },
            measured: PhaseStats {
                start: s(1),
                end: s(5),
                counts: counts(40, 37, 3),
                completed: 37,
                stats: LatencyStats::default(),
            },
            accounting: counts(50, 47, 3),
            // Two targets; the second took every failure.
            targets: [counts(25, 25, 0), counts(25, 22, 3)]
                .into_iter()
                .map(|counts| loadgen::TargetStats {
                    counts,
                    latency: loadgen::new_histogram(),
                    latency_all: loadgen::new_histogram(),
                })
                .collect(),
            connections: loadgen::ConnectionUse::default(),
        }
    }

    fn life(pid: u32, started_s: f64, ended_s: Option<f64>) -> Life {
        Life {
            pid,
            started_s,
            ready_s: Some(started_s + 0.1),
            ended_s,
            how: ended_s.map(|_| "signal 9 (SIGKILL)".to_owned()),
            end: ended_s.map(|_| End::Signal(9)),
        }
    }

    fn server(lives: Vec<Life>) -> ReplicaRecord {
        ReplicaRecord {
            name: "server/0".into(),
            component: "server".into(),
            kind: ComponentKind::Server,
            addr: "127.9.1.1:7100".parse().expect("addr"),
            log_path: PathBuf::from("/run/logs/server-0.log"),
            lives,
        }
    }

    fn kill_at(run_s: f64) -> FaultEvent {
        FaultEvent {
            id: "kill".into(),
            kind: FaultKind::ProcessKill,
            target: Some("server".into()),
            injected_s: Some(run_s),
            healed_s: None,
            detail: "SIGKILL pids [1]".into(),
            planned_s: None,
            cut_short: false,
            replicas: Vec::new(),
        }
    }

    #[test]
    fn a_load_run_is_put_on_the_scenario_clock_with_its_recovery_and_restarts() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        // The load started 10 s into the run; the kill came 2 s later.
        let result = StackResult {
            load: Some(load_report()),
            load_targets: vec!["server/0".into(), "server/1".into()],
            load_t0_s: Some(10.0),
            faults: vec![kill_at(12.0)],
            replicas: vec![server(vec![life(1, 9.0, Some(12.0)), life(2, 12.2, None)])],
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[result]);
        assert!(m.failures.is_empty(), "{:?}", m.failures);
        assert!(m.passed());
        assert_eq!(m.run.wall_s, 12.345_679);
        assert_eq!(m.run.host.cpus, 2);
        let p = &m.processes[0];
        assert_eq!(p.log, "logs/server-0.log");
        assert_eq!(p.address, "127.9.1.1:7100");
        assert_eq!(p.lives[0].started_s, -1.0);
        assert_eq!(p.lives[1].started_s, 2.2);
        assert_eq!(m.faults.len(), 1);
        assert_eq!(m.faults[0].start_s, 2.0);
        let r = &m.recoveries[0];
        assert_eq!(r.restarts, 1);
        assert_eq!(r.failed_requests, 3);
        assert!(
            r.recovery_s.is_some_and(|s| (s - 0.3).abs() < 1e-9),
            "{r:?}"
        );
        assert_eq!(m.accounting.sent, 50);
        assert!(m.accounting.balanced);
        assert_eq!(m.windows.len(), 5);
        assert_eq!(m.slos.len(), 1);
        // Which replica took the failures.
        let names: Vec<_> = m.replicas.iter().map(|r| r.replica.as_str()).collect();
        assert_eq!(names, ["server/0", "server/1"]);
        assert_eq!(m.replicas[0].failure_share, Some(0.0));
        assert_eq!(m.replicas[1].failure_share, Some(1.0));
        assert_eq!(m.replicas[1].accounting.errors["connect_refused"], 3);
        assert_eq!(
            m.replicas.iter().map(|r| r.accounting.sent).sum::<u64>(),
            m.accounting.sent
        );
        assert!(m.replicas.iter().all(|r| r.variant.is_none()));
    }

    /// Two clients (`[[workload.clients]]`), eu's t = 0 5 ms after us's, each the load of
    /// [`load_report`]; their merge is the run's load.
    fn two_clients(eu: LoadReport) -> StackResult {
        let us = load_report();
        let mut merged = us.clone();
        merged.merge(eu.clone());
        let client = |name: &str, rate_per_s: f64, report: LoadReport| crate::clients::ClientRun {
            name: name.into(),
            region: name.into(),
            rate_per_s,
            report,
        };
        StackResult {
            load: Some(merged),
            load_targets: vec!["server/0".into(), "server/1".into()],
            load_t0_s: Some(10.0),
            clients: vec![client("us", 10.0, us), client("eu", 10.0, eu)],
            faults: vec![kill_at(12.0)],
            replicas: vec![server(vec![life(1, 9.0, Some(12.0)), life(2, 12.2, None)])],
            ..StackResult::default()
        }
    }

    fn later(mut report: LoadReport, ms: u64) -> LoadReport {
        report.started_at += Duration::from_millis(ms);
        report
    }

    #[test]
    fn clients_get_their_own_phases_on_the_scenario_clock_and_add_up_to_the_run() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let m = assemble(
            &scenario,
            &identity(),
            &[two_clients(later(load_report(), 5))],
        );
        assert!(m.failures.is_empty(), "{:?}", m.failures);
        assert_eq!(m.accounting.sent, 100, "every request of both clients");
        let names: Vec<_> = m.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["us", "eu"]);
        assert_eq!(
            m.clients.iter().map(|c| c.accounting.sent).sum::<u64>(),
            m.accounting.sent
        );
        assert_eq!(m.clients[0].start_offset_s, 0.0);
        assert_eq!(m.clients[1].start_offset_s, 0.005);
        let phase = |c: usize, name: &str| {
            m.clients[c]
                .summaries
                .iter()
                .find(|s| s.phase == name)
                .cloned()
                .expect("a summary of every phase")
        };
        // us: the kill at 2 s fails 3 requests of window [2, 3).
        let faulted = phase(0, "faulted");
        assert_eq!((faulted.start_s, faulted.end_s), (2.0, 3.0));
        assert_eq!((faulted.counts.sent, faulted.counts.ok), (10, 7));
        // eu: on its clock the kill came at 1.995 s; 5 ms (plus its few ms in flight) of
        // its window [1, 2) is less than the 50 ms a window needs to join a phase, so its
        // faulted window is [2, 3), told on the scenario clock.
        let faulted = phase(1, "faulted");
        assert_eq!((faulted.start_s, faulted.end_s), (2.005, 3.005));
        assert_eq!((faulted.counts.sent, faulted.counts.ok), (10, 7));
        let measured = phase(1, "measured");
        assert_eq!((measured.start_s, measured.counts.sent), (1.005, 40));
        assert!(m.clients.iter().all(|c| c.variant.is_none()));
        // The run's own figures are of both together.
        let all = m
            .summaries
            .iter()
            .find(|s| s.phase == "measured")
            .expect("measured");
        assert_eq!(all.counts.sent, 80);
    }

    #[test]
    fn a_client_whose_requests_do_not_balance_fails_the_run_even_when_the_sum_does() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let mut r = two_clients(later(load_report(), 5));
        // One request moved from the first client to the second: the sum still balances.
        r.clients[0].report.windows[3].counts.sent -= 1;
        r.clients[1].report.windows[3].counts.sent += 1;
        let m = assemble(&scenario, &identity(), &[r]);
        assert!(!m.passed());
        assert_eq!(
            m.failures,
            ["request accounting does not balance (sent ≠ ok + errors + timeouts + dropped) in windows starting at [3.0, 3.005] s"]
        );
    }

    #[test]
    fn a_load_from_one_place_has_no_client_rows() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let result = StackResult {
            load: Some(load_report()),
            load_t0_s: Some(0.0),
            ..StackResult::default()
        };
        assert!(assemble(&scenario, &identity(), &[result])
            .clients
            .is_empty());
    }

    #[test]
    fn an_unbalanced_window_fails_the_run_and_names_the_window() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let mut load = load_report();
        load.windows[3].counts.sent += 1;
        let result = StackResult {
            load: Some(load),
            load_t0_s: Some(0.0),
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[result]);
        assert!(!m.passed());
        assert_eq!(
            m.failures,
            ["request accounting does not balance (sent ≠ ok + errors + timeouts + dropped) in windows starting at [3.0] s"]
        );
    }

    #[test]
    fn a_run_without_measurements_fails_unless_it_failed_already() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let m = assemble(&scenario, &identity(), &[StackResult::default()]);
        assert_eq!(m.failures, ["the workload produced no measurements"]);
        let failed = StackResult {
            failures: vec!["server/0 did not become ready".into()],
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[failed]);
        assert_eq!(m.failures, ["server/0 did not become ready"]);
    }

    #[test]
    fn a_training_run_reports_its_job_recoveries_and_step_accounting() {
        let scenario = scenario::parse(TRAINING, "t.toml").expect("valid");
        let job = report::TrainingResult {
            variant: "default".into(),
            workers: 2,
            steps_accounted: true,
            throughput_samples_per_s: Some(100.0),
            recoveries: vec![report::TrainingRecovery {
                fault_id: "kill".into(),
                kind: "process.kill".into(),
                total_s: Some(1.5),
                ..report::TrainingRecovery::default()
            }],
            ..report::TrainingResult::default()
        };
        let mut fault = kill_at(5.0);
        fault.target = Some("worker/1".into());
        let ok = StackResult {
            load_t0_s: Some(2.0),
            faults: vec![fault],
            training: Some(job.clone()),
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[ok]);
        assert!(m.failures.is_empty(), "{:?}", m.failures);
        assert_eq!(m.faults[0].start_s, 3.0);
        assert_eq!(m.faults[0].end_s, Some(4.5));
        assert_eq!(m.recoveries[0].recovery_s, Some(1.5));
        assert!(m.charts.iter().any(|c| c.id == "recovery-default-kill"));
        let gap = StackResult {
            training: Some(report::TrainingResult {
                steps_accounted: false,
                ..job
            }),
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[gap]);
        assert_eq!(m.failures.len(), 1);
        assert!(m.failures[0].starts_with("step accounting does not balance"));
    }

    fn ended(pid: u32, at: f64, end: End) -> Life {
        Life {
            pid,
            started_s: 0.0,
            ready_s: Some(0.1),
            ended_s: Some(at),
            how: Some(format!("{end:?}")),
            end: Some(end),
        }
    }

    fn replica(name: &str, kind: ComponentKind, lives: Vec<Life>) -> ReplicaRecord {
        ReplicaRecord {
            name: name.into(),
            component: name.split('/').next().unwrap_or(name).into(),
            kind,
            addr: "127.9.1.1:7100".parse().expect("addr"),
            log_path: PathBuf::from(format!("/run/logs/{name}.log")),
            lives,
        }
    }

    fn fault(id: &str, kind: FaultKind, target: &str, at: f64) -> FaultEvent {
        FaultEvent {
            id: id.into(),
            kind,
            target: Some(target.into()),
            injected_s: Some(at),
            healed_s: None,
            detail: String::new(),
            planned_s: None,
            cut_short: false,
            replicas: Vec::new(),
        }
    }

    #[test]
    fn an_exit_no_fault_explains_fails_the_run_however_loose_the_slos() {
        let scenario = scenario::parse(OPEN_LOOP, "t.toml").expect("valid");
        let result = StackResult {
            load: Some(load_report()),
            load_t0_s: Some(0.0),
            replicas: vec![replica(
                "server/0",
                ComponentKind::Server,
                vec![ended(41, 3.0, End::Signal(6)), ended(42, 9.0, End::Runner)],
            )],
            ..StackResult::default()
        };
        let m = assemble(&scenario, &identity(), &[result]);
        assert!(!m.passed());
        assert_eq!(
            m.failures,
            ["server/0 (pid 41) ended at 3.000 s (Signal(6)), which no fault on the timeline explains and the runner did not ask for"]
        );
        let causes: Vec<_> = m.processes[0]
            .lives
            .iter()
            .map(|l| l.cause.clone())
            .collect();
        assert_eq!(
            causes,
            [
                Some("UNPLANNED".to_owned()),
                Some("stopped by the runner".to_owned())
            ]
        );
    }

    #[test]
    fn each_fault_explains_the_one_exit_its_kind_causes_on_the_replicas_it_targets() {
        use ComponentKind::{Server, TrainerRendezvous, TrainerWorker};
        let replicas = [
            replica(
                "server/0",
                Server,
                vec![
                    ended(1, 2.5, End::Signal(9)),
                    ended(2, 4.0, End::Signal(9)),
                    ended(3, 9.0, End::Code(0)),
                ],
            ),
            replica(
                "rendezvous/0",
                TrainerRendezvous,
                vec![ended(4, 9.0, End::Code(0))],
            ),
            replica("worker/1", TrainerWorker, vec![ended(5, 5.0, End::Code(3))]),
            replica("worker/2", TrainerWorker, vec![ended(6, 7.0, End::Code(5))]),
            replica("worker/3", TrainerWorker, vec![ended(7, 1.0, End::Code(3))]),
        ];
        let faults = [
            fault("kill", FaultKind::ProcessKill, "server", 2.0),
            fault("lost", FaultKind::GpuLost, "worker/1", 4.0),
            fault("hang", FaultKind::ProcessPause, "worker/2", 1.0),
            fault("lost3", FaultKind::GpuLost, "worker/3", 2.0),
        ];
        let causes = life_causes(&replicas, &faults);
        let text: Vec<Vec<String>> = causes
            .iter()
            .map(|c| c.iter().map(|c| c.text().unwrap_or_default()).collect())
            .collect();
        assert_eq!(
            text,
            [
                // One kill explains one SIGKILL; a server's own exit 0 is not "done".
                vec!["fault kill", "UNPLANNED", "UNPLANNED"],
                vec!["workload finished"],
                vec!["fault lost"],
                // A paused worker evicted by the rendezvous exits 5.
                vec!["fault hang"],
                // An exit before the fault's injection is not its doing.
                vec!["UNPLANNED"],
            ]
        );
    }

    #[test]
    fn faults_never_injected_or_cut_short_fail_the_run() {
        let mut never = fault("late", FaultKind::ProcessKill, "server", 0.0);
        never.injected_s = None;
        let mut short = fault("slow", FaultKind::GpuThrottle, "worker/0", 1.0);
        short.healed_s = Some(1.5);
        short.planned_s = Some(5.0);
        short.cut_short = true;
        let mut whole = fault("pause", FaultKind::ProcessPause, "worker/0", 1.0);
        whole.healed_s = Some(3.0);
        whole.planned_s = Some(2.0);
        assert_eq!(
            fault_coverage(&[never, short, whole]),
            [
                "fault late (process.kill) was never injected: the workload ended (or the run was stopped) before its time; move it earlier or lengthen the workload",
                "fault slow (gpu.throttle) was planned to last 5.000 s but lasted 0.500 s: the workload ended first; shorten the fault or lengthen the workload",
            ]
        );
    }
}
