//! The worker's control endpoint (tiny HTTP on its own thread and single-threaded tokio
//! runtime, so it answers while training runs):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 `ok` while the process runs |
//! | GET | `/readyz` | 200 once the worker is in a formed ring, else 503 |
//! | GET | `/status` | JSON [`wire::trainer::Status`] |
//! | GET | `/metrics` | Prometheus text 0.0.4, or OpenMetrics 1.0.0 when `Accept` prefers it ([`crate::metrics`]) |
//! | POST | `/faults` | inject a [`FaultRequest`], `{"kind":"gpu.ecc"\|"gpu.lost"\|"gpu.throttle"\|"gpu.oom", …}`; [`ActiveFaults`]; 400 with a message on a bad body |
//! | DELETE | `/faults` | heal every fault; [`ActiveFaults`] |
//! | DELETE | `/faults/{kind}` | heal one kind; [`ActiveFaults`]; 404 for an unknown kind |
//!
//! The bodies are `wire::trainer`'s types, shared with the harness.

use crate::device::{self, FaultRequest, GpuFaultKind, SimDevice};
use crate::metrics::Metrics;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use wire::trainer::{ActiveFaults, DeviceStatus, FaultEvent, Progress, Status};

/// State shared by the training loop and the endpoint.
#[derive(Debug, Clone)]
pub struct Shared {
    /// What the training loop publishes for `/status`.
    pub status: Arc<Mutex<Progress>>,
    pub device: Arc<SimDevice>,
    /// The process's registry; reads `status` and `device` at scrape time.
    pub metrics: Arc<Metrics>,
}

impl Default for Shared {
    fn default() -> Self {
        let status = Arc::<Mutex<Progress>>::default();
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
    /// Updates the progress under its lock.
    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A copy of the progress.
    pub fn progress(&self) -> Progress {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `/status` body: the progress and the device's faults and counters.
    pub fn view(&self) -> Status {
        let c = &self.device.counters;
        Status {
            progress: self.progress(),
            device: DeviceStatus {
                faults_active: self.device.active_kinds(),
                throttle_factor: self.device.throttle_factor(),
                ecc_injected_total: c.ecc_injected_total.load(Ordering::Relaxed),
                ecc_detected_total: c.ecc_detected_total.load(Ordering::Relaxed),
                ecc_silent_total: c.ecc_silent_total.load(Ordering::Relaxed),
                oom_total: c.oom_total.load(Ordering::Relaxed),
                throttle_s_total: c.throttle_us_total.load(Ordering::Relaxed) as f64 / 1e6,
            },
        }
    }

    fn active(&self) -> Json<ActiveFaults> {
        Json(ActiveFaults {
            active: self.device.active_kinds(),
        })
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Shared>| async move {
                if s.progress().ready {
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
                crate::events::emit(FaultEvent::Healed { kind: None });
                s.active()
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
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("bad fault body: {e}; expected {{\"kind\":\"gpu.ecc\"|\"gpu.lost\"|\"gpu.throttle\"|\"gpu.oom\", …}}"),
            )
        }
    };
    if let Err(e) = device::check(&request) {
        return refuse(StatusCode::BAD_REQUEST, e);
    }
    s.device.inject(&request);
    crate::events::emit(FaultEvent::Injected {
        request,
        rank: s.progress().rank,
    });
    s.active().into_response()
}

async fn heal_one(State(s): State<Shared>, Path(kind): Path<String>) -> impl IntoResponse {
    match kind.parse::<GpuFaultKind>() {
        Ok(kind) => {
            s.device.heal(Some(kind));
            crate::events::emit(FaultEvent::Healed { kind: Some(kind) });
            s.active().into_response()
        }
        Err(e) => refuse(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// An error answer, `{"error": message}`.
fn refuse(code: StatusCode, message: String) -> axum::response::Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
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
