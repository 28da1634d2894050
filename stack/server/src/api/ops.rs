//! Operations routes: `/healthz`, `/readyz`, `/metrics`.

use super::*;
use axum::http::HeaderMap;
use axum::routing::get;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn health(app: &AppState) -> Vec<String> {
    app.models.values().filter_map(Engine::problem).collect()
}

fn health_response(status: StatusCode, word: &str, reasons: Vec<String>) -> Response {
    let mut resp = (
        status,
        Json(HealthStatus {
            status: word.into(),
            reasons,
        }),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    }
    resp
}

/// `GET /healthz`: 503 when any engine thread died or stalled with work waiting.
async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let reasons = health(&app);
    if reasons.is_empty() {
        health_response(StatusCode::OK, "ok", reasons)
    } else {
        health_response(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", reasons)
    }
}

/// `GET /readyz`: as `/healthz`, and 503 while draining.
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let mut reasons = health(&app);
    if !reasons.is_empty() {
        return health_response(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", reasons);
    }
    if app.draining.load(Ordering::Acquire) {
        reasons.push("server is draining".into());
        return health_response(StatusCode::SERVICE_UNAVAILABLE, "draining", reasons);
    }
    health_response(StatusCode::OK, "ok", reasons)
}

/// `GET /metrics`: the classic text format 0.0.4, or OpenMetrics 1.0 when `Accept` prefers
/// it (see [`promtext::negotiate`]).
async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    app.metrics.model_info.clear();
    for (name, e) in &app.models {
        app.metrics
            .model_info
            .get_or_create(&crate::metrics::ModelInfoLabels {
                model: name.clone(),
                version: e.version(),
            })
            .set(1);
    }
    for (name, e) in &app.models {
        let (waiting, running) = e.load();
        let labels = Metrics::model(name);
        app.metrics
            .waiting
            .get_or_create(&labels)
            .set(waiting as i64);
        app.metrics
            .running
            .get_or_create(&labels)
            .set(running as i64);
    }
    // Several `Accept` lines are one list (RFC 9110 §5.3); a value that is not visible
    // ASCII is ignored.
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = promtext::negotiate(Some(&accept));
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // The body depends on `Accept`: caches must not serve one format for the other.
            (header::VARY, "accept"),
        ],
        app.metrics.render(format),
    )
        .into_response()
}
