//! The upper bound of every count, rate, duration and size a scenario can set, in one place.
//!
//! [`validate`](mod@crate::validate) checks each one and `docs/scenarios.md` lists each beside its field.
//! The bounds sit far above any real scenario yet keep a run safe on a small (2-core)
//! machine: no value makes the runner or the load generator allocate without limit, wait
//! for days, open more sockets than the kernel allows, or overflow a `Duration`. Lower
//! bounds (`> 0`, `>= 1`) are rules of their fields and stay in `validate`.
//!
//! Not here: bounds of the stack binaries' own flags (each binary checks those).

use std::time::Duration;

/// Most replicas one stack may have, all components together: the runner gives each its
/// own loopback address from one block of 254 (see `docs/scenarios.md`, "Addresses").
pub const MAX_REPLICAS: u32 = 254;

/// Most `[[components]]`: every component runs at least one replica, so the replica bound
/// already implies this one; checking it first keeps a runaway file to one problem.
pub const MAX_COMPONENTS: usize = MAX_REPLICAS as usize;

/// Longest scenario name, component name, variant name, fault id, model name and error
/// kind, and longest environment variable name, in bytes. A scenario name is a folder
/// name, and file systems stop at 255 bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest `description`, in bytes: "one or two sentences" at the top of a report.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// Most command-line arguments of one component (and, separately, of one variant for one
/// component).
pub const MAX_ARGS: usize = 1000;

/// Longest argument or environment value, in bytes; half of Linux's `MAX_ARG_STRLEN`
/// (128 KiB), which leaves room for placeholders such as `{NAME.addrs}` to expand.
pub const MAX_ARG_BYTES: usize = 64 * 1024;

/// Most environment variables of one component.
pub const MAX_ENV: usize = 1000;

/// Most headers of one `http` request (HTTP servers commonly refuse more than ~100).
pub const MAX_HEADERS: usize = 100;

/// Most bytes of one header value (servers commonly cap a whole head at 8–16 KiB).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most bytes of one replica's command line and environment from the scenario: the
/// component's `args`, `env` names and values, and the longest `args` a variant appends
/// to it. `execve` fails above `ARG_MAX` (2 MiB under the default 8 MiB stack limit, the
/// runner's own environment included), and the runner holds a copy per replica.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// Most restarts of one replica over a run (`restart.max_restarts`).
pub const MAX_RESTARTS: u32 = 1000;

/// Longest wait a scenario can ask for: `workload.timeout`, `readiness.timeout` and
/// `restart.backoff`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Longest phase: `workload.warmup`, `workload.duration` and `search.trial` each, and a
/// whole max-throughput search (its trials of `warmup + trial`, see
/// [`SEARCH_FIXED_TRIALS`]). Also the bound of `recovery_s_max`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Highest offered rate, requests per second: `workload.rate_per_s`, the search's rates,
/// a `load.spike`'s spiked rate, and the throughput SLOs (no run completes more requests
/// than it offers). A 2-core load generator tops out far below it.
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;

/// Most open load-generator connections: `workload.connections` per target replica, and
/// `connections × target replicas` in all. Each is a socket with a 16 KiB read buffer in
/// the load generator and another socket in the server.
pub const MAX_CONNECTIONS: u32 = 10_000;

/// Most entries of the request mix (`workload.requests`).
pub const MAX_REQUESTS: usize = 1000;

/// Largest request `weight`: with at most [`MAX_REQUESTS`] entries their sum stays small
/// and finite, and a 1 000 000 : 1 mix is as uneven as a mix gets.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// Longest `prompt` of a completion and `body` of an HTTP request, in bytes. The load
/// generator holds one copy per template and one per request in flight.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest HTTP path (`readiness.path`, `http` requests' `path`), in bytes: the request
/// line limit of common HTTP servers (8 KiB).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Most tokens one completion may ask for (`max_tokens`).
pub const MAX_TOKENS: u32 = 1_000_000;

/// Highest latency bound, milliseconds (`latency_ms_max`, `latency_ms_min`): the longest
/// [`MAX_TIMEOUT`]; a request that takes longer has timed out, so no latency is larger.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// Most bisection steps of a max-throughput search (`search.steps`, as
/// `loadgen::search::MAX_STEPS`): 100 halvings pin a rate far below any measurable
/// difference.
pub const MAX_SEARCH_STEPS: u32 = 100;

/// Trials of a max-throughput search besides its `steps`, at most: the bracket (2) and
/// the repeats that confirm the best rate (`loadgen::search`: up to 3 candidates × 2
/// repeats). [`MAX_DURATION`] bounds `(steps + this) × (warmup + trial)`.
pub const SEARCH_FIXED_TRIALS: u32 = 2 + 3 * 2;

/// Highest training step count a scenario names: `training.warmup_steps`, a fault's
/// `after_step`, `gpu.ecc`'s `steps`, `lost-steps`' `steps_max`. A 24 h run at 1000 steps
/// per second takes 86 400 000 steps.
pub const MAX_STEPS: u64 = 100_000_000;

/// Most `[[faults]]`.
pub const MAX_FAULTS: usize = 1000;

/// Largest `load.spike` `multiplier`; the spiked rate is also bounded by
/// [`MAX_RATE_PER_S`].
pub const MAX_MULTIPLIER: f64 = 1000.0;

/// Largest `gpu.throttle` `factor`: every op 1000× as long is a stopped worker already
/// (use `process.pause` for that).
pub const MAX_THROTTLE_FACTOR: f64 = 1000.0;

/// Largest `gpu.oom` `limit_bytes`: 1 TiB, above the memory of any one GPU, so a larger
/// limit would fail no allocation.
pub const MAX_LIMIT_BYTES: u64 = 1 << 40;

/// Shortest `region.flap` `period`: 10 ms (each half is a toxic change on every link).
pub const MIN_FLAP_PERIOD: Duration = Duration::from_millis(10);

/// Most `[[regions]]`: the address model's region segments (127.B.1.0 to 127.B.64.0).
pub const MAX_REGIONS: usize = 64;

/// Most regions with `[network] mode = "netns"`: a run's netns addresses are two /24s of
/// 198.18.0.0/15 (RFC 2544's benchmark range), 16 addresses per region.
pub const MAX_NETNS_REGIONS: usize = 16;

/// Most replicas in one region with `[network] mode = "netns"` (host addresses 1 to 15
/// of the region's 16).
pub const MAX_NETNS_REPLICAS_PER_REGION: u32 = 15;

/// Longest `command` of a `kind = "command"` component, bytes (PATH_MAX on Linux).
pub const MAX_PROGRAM_BYTES: usize = 4096;

/// Longest `net.latency` `latency` or `jitter`: one hour, the fault proxy's own bound.
pub const MAX_NET_DELAY: Duration = Duration::from_secs(3600);

/// Highest `net.bandwidth` `rate_kbps`: 100 GB/s, the fault proxy's own bound.
pub const MAX_NET_RATE_KBPS: u64 = 100_000_000;

/// Most `[[slo]]` entries.
pub const MAX_SLOS: usize = 1000;

/// Largest ratio bound that is not a fraction: `throughput-ratio`'s `ratio_min` and
/// `loss`' `final_ratio_max`.
pub const MAX_RATIO: f64 = 1_000_000.0;

/// Most `[[variants]]`: each runs the whole scenario again.
pub const MAX_VARIANTS: usize = 64;

/// Most `[[workload.clients]]`: each is an open loop with its own load thread and its own
/// `connections` per target replica, beside the stack on the same machine.
pub const MAX_CLIENTS: usize = 16;

/// Most `workload.stages`.
pub const MAX_STAGES: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bound_is_the_longest_timeout() {
        assert_eq!(MAX_LATENCY_MS, MAX_TIMEOUT.as_secs_f64() * 1000.0);
    }

    #[test]
    fn step_bound_covers_a_whole_run_at_a_thousand_steps_per_second() {
        assert!(MAX_STEPS >= MAX_DURATION.as_secs() * 1000);
    }

    #[test]
    fn a_whole_search_fits_in_a_duration() {
        let trial = MAX_DURATION + MAX_DURATION;
        assert!(trial
            .checked_mul(MAX_SEARCH_STEPS + SEARCH_FIXED_TRIALS)
            .is_some());
    }
}
