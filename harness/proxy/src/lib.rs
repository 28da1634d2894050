//! A TCP fault proxy that speaks Toxiproxy's HTTP API.
//!
//! Users know Toxiproxy: its API, its toxics and their attributes work here unchanged, so
//! its stock clients drive this proxy. Beyond it: a `blackhole` toxic, HTTP/1.1-aware
//! `http_error` and `http_abort` toxics, a seed for every random choice (a run replays),
//! and Prometheus metrics per proxy and toxic.
//!
//! * [`toxic`]: the toxics' JSON shape, their typed form and validation.
//! * [`pipe`]: one direction of one connection, sans-IO: the toxics' effect in time.
//! * [`http`]: an incremental HTTP/1.1 framer; [`http_toxics`]: `http_error` and
//!   `http_abort` on one connection.
//! * [`link`]: the async shell of one connection; [`registry`]: proxies, listeners,
//!   toxics; [`api`]: Toxiproxy's HTTP API; [`metrics`]: Prometheus metrics.
//!
//! Not here: scenario files, the runner's fault timeline (they use this crate).

pub mod api;
pub mod cli;
pub mod http;
pub mod http_toxics;
pub mod link;
pub mod metrics;
pub mod pipe;
pub mod registry;
pub mod toxic;

pub use api::{router, ApiConfig};
pub use registry::{ProxySpec, ProxyStats, Registry, ToxicGuard};
pub use toxic::{ApiError, Kind, Stream, Toxic};
