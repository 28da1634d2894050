//! The worker's control endpoint (tiny HTTP on its own thread and single-threaded tokio
//! runtime, so it answers while training runs):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 `ok` while the process runs |
//! | GET | `/readyz` | 200 once the worker is in a formed ring, else 503 |
//! | GET | `/status` | JSON [`StatusView`] |
//! | GET | `/metrics` | Prometheus text 0.0.4, or OpenMetrics 1.0.0 when `Accept` prefers it ([`crate::metrics`]) |
//! | POST | `/faults` | inject `{"kind":"gpu.ecc"\|"gpu.lost"\|"gpu.throttle"\|"gpu.oom", …}`; 400 with a message on a bad body |
//! | DELETE | `/faults` | heal every fault |
//! | DELETE | `/faults/{kind}` | heal one kind; 404 for an unknown kind |

use crate::device::{FaultSpec, SimDevice};
use crate::metrics::Metrics;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What the training loop publishes for `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub rank: Option<usize>,
    pub world: usize,
    pub step: u64,
    pub total_steps: u64,
    pub epoch: u64,
    pub ready: bool,
    pub last_checkpoint_step: Option<u64>,
    pub threads: usize,
    pub pid: u32,
    pub steps_total: u64,
    pub steps_skipped_total: u64,
    pub restores_total: u64,
    pub lost_steps_total: u64,
    pub checkpoints_written_total: u64,
    pub checkpoints_failed_total: u64,
    pub last_step_s: f64,
    pub last_compute_s: f64,
}

/// `/status` body: [`Status`] plus the device's faults and counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub status: Status,
    pub faults_active: Vec<&'static str>,
    pub throttle_factor: f64,
    pub ecc_injected_total: u64,
    pub ecc_detected_total: u64,
    pub ecc_silent_total: u64,
    pub oom_total: u64,
    pub throttle_s_total: f64,
}

/// State shared by the training loop and the endpoint.
#[derive(Debug, Clone)]
pub struct Shared {
    pub status: Arc<Mutex<Status>>,
    pub device: Arc<SimDevice>,
    /// The process's registry; reads `status` and `device` at scrape time.
    pub metrics: Arc<Metrics>,
}

impl Default for Shared {
    fn default() -> Self {
        let status = Arc::<Mutex<Status>>::default();
        let device = Arc::<SimDevice>::default();
        let metrics = Arc::new(Metrics::new(status.clone(), device.clone()));
        Self {
            status,
            device,
            metrics,
        }
    }
}

impl Shared {
    /// Updates the status under its lock.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn view(&self) -> StatusView {
        let status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let c = &self.device.counters;
        StatusView {
            status,
            faults_active: self.device.active_kinds(),
            throttle_factor: self.device.throttle_factor(),
            ecc_injected_total: c.ecc_injected_total.load(Ordering::Relaxed),
            ecc_detected_total: c.ecc_detected_total.load(Ordering::Relaxed),
            ecc_silent_total: c.ecc_silent_total.load(Ordering::Relaxed),
            oom_total: c.oom_total.load(Ordering::Relaxed),
            throttle_s_total: c.throttle_us_total.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                if s.view().status.ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not in a formed ring")
                }
            }),
        )
        .route(
            "/status",
            get(|State(s): State<Shared>| async move { Json(s.view()) }),
        )
        .route("/metrics", get(metrics))
        .route(
            "/faults",
            axum::routing::post(inject).delete(|State(s): State<Shared>| async move {
                s.device.heal(None);
                crate::events::emit(
                    serde_json::json!({"event": "fault", "kind": "all", "action": "healed"}),
                );
                Json(serde_json::json!({"active": s.device.active_kinds()}))
            }),
        )
        .route("/faults/{kind}", delete(heal_one))
        .with_state(shared)
}

/// `GET /metrics`: text 0.0.4, or OpenMetrics when `Accept` prefers it.
async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = promtext::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        s.metrics.render(format),
    )
}

async fn inject(State(s): State<Shared>, body: axum::body::Bytes) -> impl IntoResponse {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    serde_json::json!({"error": format!("bad fault body: {e}; expected {{\"kind\":\"gpu.ecc\"|\"gpu.lost\"|\"gpu.throttle\"|\"gpu.oom\", …}}")}),
                ),
            )
        }
    };
    if let Err(e) = spec.validate() {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e})),
        );
    }
    s.device.inject(&spec);
    let mut event = serde_json::to_value(&spec).unwrap_or_default();
    if let Some(o) = event.as_object_mut() {
        o.insert("event".into(), "fault".into());
        o.insert("action".into(), "injected".into());
        o.insert("rank".into(), s.view().status.rank.into());
    }
    crate::events::emit(event);
    (
        StatusCode::OK,
        Json(serde_json::json!({"active": s.device.active_kinds()})),
    )
}

async fn heal_one(State(s): State<Shared>, Path(kind): Path<String>) -> impl IntoResponse {
    if s.device.heal(Some(&kind)) {
        crate::events::emit(
            serde_json::json!({"event": "fault", "kind": kind, "action": "healed"}),
        );
        (
            StatusCode::OK,
            Json(serde_json::json!({"active": s.device.active_kinds()})),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({"error": format!("unknown fault kind {kind:?}; expected one of {:?}", crate::device::FAULT_KINDS)}),
            ),
        )
    }
}

/// The running endpoint. [`ControlServer::shutdown`] (or drop) stops it gracefully: requests
/// in flight are answered (so a `POST /faults` that makes the worker exit still gets its
/// 200), for at most one second.
#[derive(Debug)]
pub struct ControlServer {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Stops accepting, finishes requests in flight (≤ 1 s), and joins the server thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Binds `addr` and serves the endpoint on a background thread.
pub fn start(addr: &str, shared: Shared) -> std::io::Result<ControlServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("control-http".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let serve = axum::serve(listener, router(shared))
                    .with_graceful_shutdown(stopped(rx.clone()));
                let deadline = async move {
                    stopped(rx).await;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                };
                tokio::select! {
                    _ = serve => {}
                    _ = deadline => {}
                }
            });
        })?;
    Ok(ControlServer {
        addr: local,
        stop,
        thread: Some(thread),
    })
}
