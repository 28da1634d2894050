//! A load given as several clients (`[[workload.clients]]`): each an open loop of its own,
//! sending from its region at its rate with its own seed, all at once.
//!
//! The pure part says who the clients are ([`plan`], [`client_seed`]) and how their live
//! progress adds up ([`total`]); [`run`] is the thin async shell that drives their open
//! loops together through `loadgen` and merges their reports into the run's
//! ([`loadgen::LoadReport::merge`]): every request of every client counted once. What
//! each client sent is kept beside it ([`ClientRun`]) for the report's per-client figures.
//!
//! Not here: where a client's requests go (its region's view of the replicas,
//! [`crate::stack::reach`]) and what the report makes of them ([`crate::assemble`]).

use loadgen::{LoadError, LoadReport, OpenLoopSpec, Progress};
use scenario::Scenario;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::faults::net::region_name;
use crate::stack::region_index;

/// The odd constant that spreads clients' seeds apart (2^64 / φ, as SplitMix64 steps).
const SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// One client of the load: where it sends from, how fast, with which seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// `name`, else its region.
    pub name: String,
    /// Its region's index in the address model (1-based).
    pub region: u8,
    pub region_name: String,
    /// Its base offered rate, requests per second (before stages and spikes).
    pub rate_per_s: f64,
    /// Its arrivals' and request mix's seed ([`client_seed`]).
    pub seed: u64,
}

/// The seed of client `index` (0-based, in file order) of a run seeded `seed`: the first
/// keeps the run's seed, every other one is a fixed step away, so a run replays.
pub fn client_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add(SEED_STEP.wrapping_mul(index as u64))
}

/// The clients of `scenario`'s `[[workload.clients]]`, in file order; empty for a load
/// from one place (the runner drives that as it always has).
pub fn plan(scenario: &Scenario, seed: u64) -> Vec<Client> {
    scenario
        .workload
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let region = region_index(scenario, Some(&c.region));
            Client {
                name: c.display_name().to_owned(),
                region,
                region_name: region_name(scenario, region),
                rate_per_s: c.rate_per_s,
                seed: client_seed(seed, i),
            }
        })
        .collect()
}

/// The live view of all clients together: counts and rates add up; `elapsed` is the
/// furthest along and `t0` the earliest (they started together).
pub fn total(each: &[Progress]) -> Progress {
    each.iter().fold(Progress::default(), |sum, p| Progress {
        elapsed: sum.elapsed.max(p.elapsed),
        sent: sum.sent + p.sent,
        ok: sum.ok + p.ok,
        failed: sum.failed + p.failed,
        in_flight: sum.in_flight + p.in_flight,
        rate_per_s: sum.rate_per_s + p.rate_per_s,
        t0: match (sum.t0, p.t0) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    })
}

/// Open-loop threads per client: the load generator's default share of the cores, split
/// among the clients, at least one each.
pub fn threads_each(clients: usize) -> usize {
    (loadgen::default_open_loop_threads() / clients.max(1)).max(1)
}

/// What one client sent, as its own report, for the report's per-client figures.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub name: String,
    pub region: String,
    pub rate_per_s: f64,
    pub report: LoadReport,
}

/// Runs every client's open loop at once and returns their merged report (the run's load)
/// and each one's own, in `clients` order. `progress` gets all clients' live progress
/// added up ([`total`]). A client that cannot start stops the others, and the run fails
/// with its error.
pub async fn run(
    clients: Vec<(Client, OpenLoopSpec)>,
    cancel: CancellationToken,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(LoadReport, Vec<ClientRun>), LoadError> {
    let threads = threads_each(clients.len());
    let stop = cancel.child_token();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in &clients {
        let (tx, rx) = watch::channel(Progress::default());
        senders.push(tx);
        receivers.push(rx);
    }
    let forward = forward_progress(receivers, progress);
    let loads = clients.iter().zip(senders).map(|((_, spec), tx)| {
        let stop = stop.clone();
        async move {
            let r = loadgen::run_open_loop_on(spec, threads, stop.clone(), Some(tx)).await;
            if r.is_err() {
                stop.cancel();
            }
            r
        }
    });
    let ((), results) = tokio::join!(forward, futures_util::future::join_all(loads));
    let mut runs = Vec::with_capacity(clients.len());
    for ((client, _), result) in clients.into_iter().zip(results) {
        runs.push(ClientRun {
            name: client.name,
            region: client.region_name,
            rate_per_s: client.rate_per_s,
            report: result?,
        });
    }
    let mut merged: Option<LoadReport> = None;
    for r in &runs {
        match &mut merged {
            None => merged = Some(r.report.clone()),
            Some(m) => m.merge(r.report.clone()),
        }
    }
    let merged = merged.ok_or_else(|| LoadError::Internal("no load clients to run".to_owned()))?;
    Ok((merged, runs))
}

/// Publishes the sum of the clients' progress on `out` whenever one of them moves; ends
/// when every client's sender is gone (its load ended).
async fn forward_progress(
    clients: Vec<watch::Receiver<Progress>>,
    out: Option<watch::Sender<Progress>>,
) {
    let Some(out) = out else { return };
    let (tx, mut rx) = mpsc::channel::<(usize, Progress)>(clients.len().max(1) * 4);
    let mut latest = vec![Progress::default(); clients.len()];
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let tx = tx.clone();
        tasks.spawn(async move {
            while client.changed().await.is_ok() {
                let p = *client.borrow_and_update();
                if tx.send((i, p)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    while let Some((i, p)) = rx.recv().await {
        latest[i] = p;
        out.send_replace(total(&latest));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TWO: &str = r#"
[[regions]]
name = "us"
[[regions]]
name = "eu"
[[components]]
name = "server"
kind = "server"
[workload]
target = "server"
duration = "2s"
requests = [{ kind = "infer", model = "mlp" }]
[[workload.clients]]
region = "eu"
rate_per_s = 10
[[workload.clients]]
name = "us-users"
region = "us"
rate_per_s = 40
"#;

    #[test]
    fn clients_send_from_their_region_at_their_rate_with_seeds_of_their_own() {
        let s = scenario::parse(TWO, "two.toml").expect("valid");
        let plan = plan(&s, 5);
        assert_eq!(
            plan,
            [
                Client {
                    name: "eu".into(),
                    region: 2,
                    region_name: "eu".into(),
                    rate_per_s: 10.0,
                    seed: 5,
                },
                Client {
                    name: "us-users".into(),
                    region: 1,
                    region_name: "us".into(),
                    rate_per_s: 40.0,
                    seed: 5u64.wrapping_add(SEED_STEP),
                },
            ]
        );
        // The same seed gives the same clients: a run replays.
        assert_eq!(super::plan(&s, 5), plan);
        let single = scenario::parse(
            &TWO.replace("[[workload.clients]]\nregion = \"eu\"\nrate_per_s = 10\n[[workload.clients]]\nname = \"us-users\"\nregion = \"us\"\nrate_per_s = 40\n", "rate_per_s = 5\n"),
            "one.toml",
        )
        .expect("valid");
        assert!(super::plan(&single, 5).is_empty(), "a load from one place");
    }

    #[test]
    fn client_seeds_differ_and_the_first_is_the_runs() {
        assert_eq!(client_seed(11, 0), 11);
        let seeds: std::collections::BTreeSet<u64> = (0..16).map(|i| client_seed(11, i)).collect();
        assert_eq!(seeds.len(), 16);
        assert_eq!(client_seed(u64::MAX, 1), u64::MAX.wrapping_add(SEED_STEP));
    }

    #[test]
    fn progress_adds_up_and_takes_the_furthest_clock_and_the_earliest_start() {
        let start = std::time::Instant::now();
        let p = |ms: u64, sent: u64, ok: u64, failed: u64, rate: f64| Progress {
            elapsed: Duration::from_millis(ms),
            sent,
            ok,
            failed,
            in_flight: sent - ok - failed,
            rate_per_s: rate,
            t0: Some(start + Duration::from_millis(1_200 - ms)),
        };
        let sum = total(&[p(1_200, 48, 40, 2, 40.0), p(1_198, 12, 9, 0, 10.0)]);
        assert_eq!(sum, p(1_200, 60, 49, 2, 50.0));
        let unstarted = Progress::default();
        assert_eq!(
            total(&[unstarted, p(1_198, 0, 0, 0, 0.0)]).t0,
            p(1_198, 0, 0, 0, 0.0).t0
        );
        assert_eq!(total(&[]), Progress::default());
    }

    #[test]
    fn every_client_gets_at_least_one_thread() {
        assert!(threads_each(16) >= 1);
        assert_eq!(threads_each(1), loadgen::default_open_loop_threads());
    }
}
