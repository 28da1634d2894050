//! Isolating max-throughput trials: before a trial, wait until the target answers one
//! request of the mix at the latency it had before the search started, so a trial never
//! inherits the previous one's backlog (or a replica a fault killed that is still coming
//! back).
//!
//! Rule (docs/metrics.md "max throughput"): the baseline is the fastest of
//! [`BASELINE_PROBES`] probes before the first trial; the target is drained when
//! [`DRAINED_PROBES`] probes in a row succeed within `max(2 × baseline, baseline + 5 ms)`;
//! the wait gives up after [`DRAIN_MAX`] (the run then records a failure for that trial).

use std::time::{Duration, Instant};

use loadgen::{LoadSpec, RequestTemplate};
use tokio_util::sync::CancellationToken;

/// Probes taken for the baseline.
pub const BASELINE_PROBES: usize = 3;
/// Consecutive good probes that mean "drained".
pub const DRAINED_PROBES: usize = 2;
/// Longest wait for a drain.
pub const DRAIN_MAX: Duration = Duration::from_secs(30);
/// Pause between probes.
const PROBE_GAP: Duration = Duration::from_millis(50);

/// One request of the mix, sent alone.
pub struct Probe {
    client: reqwest::Client,
    url: String,
    template: RequestTemplate,
}

/// How a drain wait ended.
#[derive(Debug, Clone, Copy)]
pub struct Waited {
    pub waited: Duration,
    pub timed_out: bool,
}

impl Probe {
    /// A probe of the first request of `load`'s mix against its first target.
    pub fn new(load: &LoadSpec) -> Result<Probe, String> {
        let (Some(target), Some(template)) = (load.targets.first(), load.requests.first()) else {
            return Err("the search has no target or no request to probe".to_owned());
        };
        let base = target.to_string();
        let url = format!("{}{}", base.trim_end_matches('/'), template.path);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(load.timeout)
            .build()
            .map_err(|e| format!("probe client: {e}"))?;
        Ok(Probe {
            client,
            url,
            template: template.clone(),
        })
    }

    /// The latency of one probe, or None when it failed.
    async fn once(&self) -> Option<Duration> {
        let mut req = self
            .client
            .request(self.template.method.clone(), &self.url)
            .body(self.template.body.clone());
        for (k, v) in &self.template.headers {
            req = req.header(k, v);
        }
        let started = Instant::now();
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.bytes().await.ok()?;
        Some(started.elapsed())
    }

    /// The fastest of [`BASELINE_PROBES`] probes (None if every one failed).
    pub async fn baseline(&self, cancel: &CancellationToken) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        for _ in 0..BASELINE_PROBES {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(l) = self.once().await {
                best = Some(best.map_or(l, |b| b.min(l)));
            }
        }
        best
    }

    /// Waits until drained (see the module rule); without a baseline, until probes succeed.
    pub async fn wait_drained(
        &self,
        baseline: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Waited {
        let bound = baseline.map(|b| (b * 2).max(b + Duration::from_millis(5)));
        let started = Instant::now();
        let mut good = 0;
        while good < DRAINED_PROBES {
            if cancel.is_cancelled() || started.elapsed() >= DRAIN_MAX {
                return Waited {
                    waited: started.elapsed(),
                    timed_out: !cancel.is_cancelled(),
                };
            }
            let ok = self
                .once()
                .await
                .is_some_and(|l| bound.is_none_or(|b| l <= b));
            if ok {
                good += 1;
            } else {
                good = 0;
                tokio::select! {
                    () = tokio::time::sleep(PROBE_GAP) => {}
                    () = cancel.cancelled() => {}
                }
            }
        }
        Waited {
            waited: started.elapsed(),
            timed_out: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scenario_bounds_know_the_search_shape_of_the_load_generator() {
        use loadgen::search::{CONFIRM_CANDIDATES, CONFIRM_TRIALS, MAX_STEPS};
        let confirm = u32::try_from(CONFIRM_CANDIDATES).expect("small") * CONFIRM_TRIALS;
        assert_eq!(scenario::bounds::SEARCH_FIXED_TRIALS, 2 + confirm);
        assert_eq!(scenario::bounds::MAX_SEARCH_STEPS, MAX_STEPS);
    }
}
