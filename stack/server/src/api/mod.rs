//! HTTP surface: routes, request validation, admission, error bodies.
//!
//! Each protocol lives in its own module and contributes its routes through `routes()`:
//! [`openai`] (`/v1/completions`, `/v1/chat/completions`, `/v1/models`), [`kserve`]
//! (`/v2/...`, KServe v2 / Triton) and [`ops`] (`/healthz`, `/readyz`, `/metrics`). This
//! module holds what they share: state, the error type, the deadline and body helpers.
//!
//! Handlers only move bytes: they validate, submit to an engine ([`crate::engine`]) and
//! translate replies. Every model request holds an [`InFlight`] guard for its whole life
//! (streams included), which the drain in [`crate::Server::serve`] waits on.
//!
//! Every request has a deadline (`--request-timeout-s` after its head arrived), enforced by
//! one middleware ([`enforce_deadline`]): a request not answered by then gets `504` in the
//! route's error shape, its handler is dropped, and the engine drops its work at the next
//! batch or step. A stream that has started ends at the deadline with an error event and
//! `[DONE]`. Each model request is counted once in `faultline_requests_total{model,status}`:
//! by its handler, or as `504` by the middleware, or as `499` (nginx's "client closed
//! request") when the client went away before an answer.

mod kserve;
mod openai;
mod ops;
mod repository;

use crate::admission::Overload;
use crate::config::{ModelKind, ServerConfig};
use crate::engine::{LmEngine, MlpEngine, SubmitError};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use wire::error::{ErrorBody, ErrorDetail};
use wire::health::HealthStatus;

/// Metric label for requests that name no loaded model.
pub const UNKNOWN_MODEL_LABEL: &str = "_unknown";
/// `max_tokens` when a completion request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 16;
/// Seconds in the `Retry-After` header of 429 and 503 answers.
pub const RETRY_AFTER_S: u64 = 1;

/// A loaded model and its engine.
#[derive(Debug, Clone)]
pub enum Engine {
    Mlp(MlpEngine),
    Lm(LmEngine),
}

impl Engine {
    fn kind(&self) -> ModelKind {
        match self {
            Engine::Mlp(_) => ModelKind::Mlp,
            Engine::Lm(_) => ModelKind::Lm,
        }
    }

    /// The version of the model's weights being served.
    fn version(&self) -> String {
        match self {
            Engine::Mlp(e) => e.version(),
            Engine::Lm(e) => e.version(),
        }
    }

    fn problem(&self) -> Option<String> {
        match self {
            Engine::Mlp(e) => e.health().problem(),
            Engine::Lm(e) => e.health().problem(),
        }
    }

    fn load(&self) -> (usize, usize) {
        let h = match self {
            Engine::Mlp(e) => e.health(),
            Engine::Lm(e) => e.health(),
        };
        (h.waiting(), h.running())
    }
}

/// State shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    pub(crate) models: BTreeMap<String, Engine>,
    pub(crate) metrics: Arc<Metrics>,
    max_tokens_limit: u32,
    max_prompt_bytes: usize,
    max_body_bytes: usize,
    request_timeout: Duration,
    seed: u64,
    created_unix_s: u64,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    counter: AtomicU64,
    /// Starts engines for repository loads.
    loader: crate::Loader,
    /// One repository load at a time.
    loading: tokio::sync::Mutex<()>,
}

impl AppState {
    pub(crate) fn new(
        config: &ServerConfig,
        models: BTreeMap<String, Engine>,
        metrics: Arc<Metrics>,
        loader: crate::Loader,
    ) -> Self {
        Self {
            models,
            metrics,
            max_tokens_limit: config.max_tokens_limit,
            max_prompt_bytes: config.max_prompt_bytes,
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            seed: config.seed,
            created_unix_s: unix_now_s(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            counter: AtomicU64::new(0),
            loader,
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts draining: readiness fails and new model requests get 503.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no model request (or open stream) is in flight.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Counts one in-flight request until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error answer: status, OpenAI-style body, `Retry-After` on 429/503.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Which protocol's error body to answer with.
    pub shape: ErrorShape,
}

/// The error body shape of a route family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}` (OpenAI; every non-`/v2` route).
    OpenAi,
    /// `{"error": "message"}` (KServe v2 / Triton; every `/v2` route).
    KServe,
}

impl ErrorShape {
    /// The shape of errors on `path`: KServe's on `/v2` and below, OpenAI's elsewhere.
    pub fn for_path(path: &str) -> Self {
        if path == "/v2" || path.starts_with("/v2/") {
            Self::KServe
        } else {
            Self::OpenAi
        }
    }
}

impl ApiError {
    /// The same error in another protocol's body shape.
    pub fn with_shape(mut self, shape: ErrorShape) -> Self {
        self.shape = shape;
        self
    }

    fn bad_request(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_string()),
            shape: ErrorShape::OpenAi,
        }
    }

    fn unsupported_media_type(header_name: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "unsupported_media_type",
            message: message.into(),
            param: Some(header_name.to_string()),
            shape: ErrorShape::OpenAi,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found_error",
            message: message.into(),
            param: None,
            shape: ErrorShape::OpenAi,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "service_unavailable",
            message: message.into(),
            param: None,
            shape: ErrorShape::OpenAi,
        }
    }

    fn draining() -> Self {
        Self::unavailable("server is draining (shutting down); retry on another replica")
    }

    fn deadline_passed(timeout: Duration) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "timeout",
            message: format!(
                "no answer within the request deadline of {} s (--request-timeout-s): the model is overloaded or stalled",
                timeout.as_secs_f64()
            ),
            param: None,
            shape: ErrorShape::OpenAi,
        }
    }

    fn from_body_rejection(r: BytesRejection, limit: usize) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                kind: "payload_too_large",
                message: format!(
                    "request body is larger than the limit of {limit} bytes (--max-body-bytes)"
                ),
                param: Some("body".into()),
                shape: ErrorShape::OpenAi,
            }
        } else {
            Self {
                status: r.status(),
                kind: "invalid_request_error",
                message: format!("cannot read request body: {}", r.body_text()),
                param: None,
                shape: ErrorShape::OpenAi,
            }
        }
    }

    fn from_submit(e: SubmitError, model: &str, kind: ModelKind, metrics: &Metrics) -> Self {
        match e {
            SubmitError::Overloaded(Overload::QueueFull { waiting }) => {
                metrics.request_shed(model, "queue_full");
                Self {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "queue_full",
                    message: format!(
                        "model `{model}` has {waiting} requests waiting, the limit (--max-queue); retry later"
                    ),
                    param: None,
                    shape: ErrorShape::OpenAi,
                }
            }
            SubmitError::Overloaded(Overload::QueueWait { estimated }) => {
                metrics.request_shed(model, "queue_wait");
                Self {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "queue_full",
                    message: format!(
                        "model `{model}` is overloaded: this request would wait about {:.0} ms, past {}; retry later",
                        estimated.as_secs_f64().min(1e9) * 1000.0,
                        kind.queue_wait_flag()
                    ),
                    param: None,
                    shape: ErrorShape::OpenAi,
                }
            }
            SubmitError::Unavailable(why) => {
                metrics.request_shed(model, "engine_unavailable");
                Self::unavailable(format!("model `{model}` is unavailable: {why}"))
            }
            SubmitError::TooManySamples { samples, max } => Self::bad_request(
                "inputs[0].shape",
                format!("batch dimension {samples} exceeds max_batch_size {max}"),
            ),
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                code: self.status.as_u16(),
                param: self.param.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = match self.shape {
            ErrorShape::OpenAi => (self.status, Json(self.body())).into_response(),
            ErrorShape::KServe => (
                self.status,
                Json(wire::kserve::ErrorResponse {
                    error: self.message.clone(),
                }),
            )
                .into_response(),
        };
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The unread rest of the body makes the connection unusable: say so, so a
            // keep-alive client opens a new one instead of reusing this one and failing.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// When a request must be answered by: its arrival plus `--request-timeout-s`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub tokio::time::Instant);

/// The model label a handler resolved, shared with [`enforce_deadline`] so a request it
/// times out (or whose client leaves) is counted under the right model.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestLabel(Arc<Mutex<Option<String>>>);

impl RequestLabel {
    fn set(&self, label: &str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(label.to_string());
    }

    fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Counts a model request as `499` if it is dropped unanswered (the client went away).
struct Unanswered {
    app: Arc<AppState>,
    label: RequestLabel,
    armed: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.armed {
            if let Some(label) = self.label.get() {
                self.app.metrics.request_done(&label, CLIENT_CLOSED_REQUEST);
            }
        }
    }
}

/// Status counted for a model request whose client left before its answer (nginx's 499).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The per-request deadline (module docs).
async fn enforce_deadline(
    State(app): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + app.request_timeout;
    let label = RequestLabel::default();
    req.extensions_mut().insert(Deadline(deadline));
    req.extensions_mut().insert(label.clone());
    let mut unanswered = Unanswered {
        app: app.clone(),
        label: label.clone(),
        armed: true,
    };
    let shape = ErrorShape::for_path(req.uri().path());
    let answer = tokio::time::timeout_at(deadline, next.run(req)).await;
    unanswered.armed = false;
    match answer {
        Ok(resp) => resp,
        Err(_) => {
            if let Some(model) = label.get() {
                app.metrics
                    .request_done(&model, StatusCode::GATEWAY_TIMEOUT.as_u16());
            }
            ApiError::deadline_passed(app.request_timeout)
                .with_shape(shape)
                .into_response()
        }
    }
}

/// All routes, with the body limit and the deadline applied.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .merge(kserve::routes())
        .merge(openai::routes())
        .merge(ops::routes())
        .merge(repository::routes())
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            enforce_deadline,
        ))
        .with_state(state)
}

async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
        .with_shape(ErrorShape::for_path(uri.path()))
}

fn lookup<'a>(app: &'a AppState, name: &str) -> Result<&'a Engine, ApiError> {
    app.models.get(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "model `{name}` is not loaded; loaded models: {}",
            app.models.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

fn label_for(app: &AppState, name: &str) -> String {
    if app.models.contains_key(name) {
        name.to_string()
    } else {
        UNKNOWN_MODEL_LABEL.to_string()
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    max_body_bytes: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError::from_body_rejection(r, max_body_bytes))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let mut err = ApiError::bad_request("body", format!("invalid JSON body: {e}"));
        if let Some(field) = missing_field(&e.to_string()) {
            err.param = Some(field);
        }
        err
    })
}

/// Checks that a request carries a JSON body: `Content-Type: application/json` (or any
/// `application/*+json`, parameters allowed) and no `Content-Encoding` other than
/// `identity`. Anything else is `415`: it also stops a cross-site HTML form (which can only
/// send `text/plain`, `multipart/form-data` or `application/x-www-form-urlencoded`) from
/// running inference.
pub(crate) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("(not ASCII)").trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(ApiError::unsupported_media_type(
                "Content-Encoding",
                format!("Content-Encoding `{enc}` is not supported; send the body uncompressed"),
            ));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::unsupported_media_type(
            "Content-Type",
            "missing Content-Type; expected application/json",
        ));
    };
    let ct = ct.to_str().unwrap_or("(not ASCII)");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(
            "Content-Type",
            format!("Content-Type `{ct}` is not supported; expected application/json"),
        ))
    }
}

/// serde's "missing field `x`" names the field: surface it as `param`.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}
