//! One sampler of the machine while a stack runs: every replica's CPU use and resident
//! memory, and the host's CPU use and load average, every [`PERIOD`], from `/proc`. The
//! report plots them on the scenario clock beside the faults, so a reviewer sees which
//! process was busy and whether the machine itself was (a busy host explains a slow run).
//!
//! The `/proc` parsers are pure and unit-tested; [`Sampler`] is the async shell.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::events::RunClock;
use crate::supervisor::Replica;

/// Time between samples.
pub const PERIOD: Duration = Duration::from_millis(500);

/// One process at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    /// `component/replica`.
    pub name: String,
    /// CPU use since the previous sample, in cores (1.0 = one core busy).
    pub cpu_cores: Option<f64>,
    pub rss_bytes: Option<u64>,
}

/// The machine at one instant, on the run clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub run_s: f64,
    pub procs: Vec<ProcSample>,
    /// Busy share of all host CPUs since the previous sample (0..=1).
    pub host_busy: Option<f64>,
    /// 1-minute load average.
    pub load1: Option<f64>,
}

/// `utime + stime` in clock ticks from `/proc/<pid>/stat` (fields 14 and 15; the command
/// name in parentheses may hold spaces, so fields are counted after the last `)`).
pub fn proc_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11, stime (15) 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident bytes from `/proc/<pid>/status` (`VmRSS:  1234 kB`).
pub fn status_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `(busy, total)` jiffies of the aggregate `cpu` line of `/proc/stat`; idle and iowait
/// count as not busy.
pub fn host_cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total.saturating_sub(idle), total))
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn load1(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel reports them in
/// `USER_HZ`, which is 100 on every Linux architecture (part of the ABI, whatever the
/// kernel's own tick rate).
const TICKS_PER_S: f64 = 100.0;

/// Samples the machine until stopped; dropping it stops the task.
pub struct Sampler {
    cancel: CancellationToken,
    task: AbortOnDropHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `replicas` (their current pids, each time) and the host.
    pub fn start(replicas: Vec<Replica>, clock: RunClock) -> Sampler {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            // Previous (pid, ticks) per replica, and the previous host jiffies.
            let mut prev_proc: Vec<Option<(u32, u64)>> = vec![None; replicas.len()];
            let mut prev_host: Option<(u64, u64)> = None;
            let mut prev_at: Option<f64> = None;
            loop {
                let now = clock.now_s();
                let dt = prev_at.map(|p| now - p).filter(|d| *d > 0.0);
                let mut procs = Vec::new();
                for (i, r) in replicas.iter().enumerate() {
                    let pid = r.pid();
                    let read = |file: &str| {
                        pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/{file}")).ok())
                    };
                    let ticks = read("stat").as_deref().and_then(proc_cpu_ticks);
                    let rss = read("status").as_deref().and_then(status_rss_bytes);
                    let cpu = match (prev_proc[i], pid, ticks, dt) {
                        (Some((pp, pt)), Some(p), Some(t), Some(dt)) if pp == p && t >= pt => {
                            Some((t - pt) as f64 / TICKS_PER_S / dt)
                        }
                        _ => None,
                    };
                    prev_proc[i] = pid.zip(ticks);
                    procs.push(ProcSample {
                        name: r.spec().name.clone(),
                        cpu_cores: cpu,
                        rss_bytes: rss,
                    });
                }
                let host = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .as_deref()
                    .and_then(host_cpu_jiffies);
                let host_busy = match (prev_host, host) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 && b1 >= b0 => {
                        Some((b1 - b0) as f64 / (t1 - t0) as f64)
                    }
                    _ => None,
                };
                prev_host = host;
                prev_at = Some(now);
                samples.push(Sample {
                    run_s: now,
                    procs,
                    host_busy,
                    load1: std::fs::read_to_string("/proc/loadavg")
                        .ok()
                        .as_deref()
                        .and_then(load1),
                });
                tokio::select! {
                    () = tokio::time::sleep(PERIOD) => {}
                    () = stop.cancelled() => break,
                }
            }
            samples
        });
        Sampler {
            cancel,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Stops sampling and returns the samples (none if the task failed).
    pub async fn finish(self) -> Vec<Sample> {
        self.cancel.cancel();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_as_the_kernel_writes_them() {
        let stat = "4242 (my server) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 9 0 100 5000000 1200 18446744073709551615";
        assert_eq!(proc_cpu_ticks(stat), Some(175));
        assert_eq!(proc_cpu_ticks("garbage"), None);
        let status = "Name:\tserver\nVmPeak:\t  9000 kB\nVmRSS:\t  1200 kB\nThreads:\t4\n";
        assert_eq!(status_rss_bytes(status), Some(1200 * 1024));
        assert_eq!(status_rss_bytes("Name:\tzombie\n"), None);
        let host = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 1 1 1 0 0\n";
        assert_eq!(host_cpu_jiffies(host), Some((161, 981)));
        assert_eq!(load1("1.83 1.52 1.61 3/412 31337\n"), Some(1.83));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_child_shows_its_cpu_and_memory_and_the_host_its_load() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().expect("temp dir");
        let events =
            crate::events::EventLog::create(&dir.path().join("events.jsonl"), RunClock::start())
                .expect("log");
        // A shell spinning on one core until stopped.
        let spec = crate::supervisor::ReplicaSpec {
            name: "spin/0".into(),
            component: "spin".into(),
            kind: scenario::ComponentKind::Server,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "while :; do :; done".into()],
            env: BTreeMap::new(),
            addr: "127.0.0.1:9".parse().expect("addr"),
            public: "127.0.0.1:9".parse().expect("addr"),
            region: "default".into(),
            restart: scenario::Restart {
                policy: scenario::RestartPolicy::Never,
                max_restarts: 0,
                backoff: Duration::from_millis(10),
            },
            readiness: scenario::Readiness::default(),
            probe: crate::supervisor::Probe::Tcp,
            log_path: dir.path().join("spin.log"),
            netns: None,
        };
        let sup = crate::supervisor::Supervisor::start(vec![spec], &events, Duration::from_secs(1));
        let r = sup.replicas()[0].clone();
        assert!(crate::wait::poll_until(Duration::from_secs(5), || r
            .pid()
            .is_some()));
        let sampler = Sampler::start(sup.replicas().to_vec(), events.clock());
        // Enough samples for two CPU deltas (a fixed wait is the behaviour here: sampling).
        tokio::time::sleep(PERIOD * 3).await;
        let samples = sampler.finish().await;
        sup.shutdown().await;
        assert!(samples.len() >= 3, "{samples:?}");
        let last = samples.last().expect("samples");
        let p = &last.procs[0];
        assert_eq!(p.name, "spin/0");
        assert!(p.rss_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(
            samples
                .iter()
                .any(|s| s.procs[0].cpu_cores.is_some_and(|c| c > 0.1)),
            "a spinning shell uses CPU: {samples:?}"
        );
        assert!(samples.iter().any(|s| s.host_busy.is_some()));
        assert!(last.load1.is_some());
    }
}
