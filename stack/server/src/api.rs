//! HTTP surface: routes, request validation, admission, error bodies.
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

use crate::admission::Overload;
use crate::config::{ModelKind, ServerConfig};
use crate::engine::{LmEngine, LmJob, MlpEngine, SubmitError};
use crate::metrics::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use wire::error::{ErrorBody, ErrorDetail};
use wire::health::HealthStatus;
use wire::kserve::{self, InferRequest, InferResponse, ModelMetadata, TensorMetadata};
use wire::openai::{
    CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse, ModelCard, ModelList,
    Usage, STREAM_DONE,
};

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
}

impl AppState {
    pub(crate) fn new(
        config: &ServerConfig,
        models: BTreeMap<String, Engine>,
        metrics: Arc<Metrics>,
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
}

impl ApiError {
    fn bad_request(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found_error",
            message: message.into(),
            param: None,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "service_unavailable",
            message: message.into(),
            param: None,
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
            }
        } else {
            Self {
                status: r.status(),
                kind: "invalid_request_error",
                message: format!("cannot read request body: {}", r.body_text()),
                param: None,
            }
        }
    }

    fn from_submit(e: SubmitError, model: &str, metrics: &Metrics) -> Self {
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
                }
            }
            SubmitError::Overloaded(Overload::QueueWait { estimated }) => {
                metrics.request_shed(model, "queue_wait");
                Self {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "queue_full",
                    message: format!(
                        "model `{model}` is overloaded: this request would wait about {:.0} ms, past --max-queue-wait-ms; retry later",
                        estimated.as_secs_f64().min(1e9) * 1000.0
                    ),
                    param: None,
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
        let mut resp = (self.status, Json(self.body())).into_response();
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
    let answer = tokio::time::timeout_at(deadline, next.run(req)).await;
    unanswered.armed = false;
    match answer {
        Ok(resp) => resp,
        Err(_) => {
            if let Some(model) = label.get() {
                app.metrics
                    .request_done(&model, StatusCode::GATEWAY_TIMEOUT.as_u16());
            }
            ApiError::deadline_passed(app.request_timeout).into_response()
        }
    }
}

/// All routes, with the body limit and the deadline applied.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .route("/v1/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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

/// serde's "missing field `x`" names the field: surface it as `param`.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// `POST /v{1,2}/models/{name}/infer`.
async fn infer(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(request_label): Extension<RequestLabel>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let _in_flight = app.enter();
    let label = label_for(&app, &name);
    request_label.set(&label);
    let result = infer_inner(&app, &name, body).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    app.metrics.request_done(&label, status.as_u16());
    if result.is_ok() {
        app.metrics
            .e2e_latency
            .get_or_create(&Metrics::model(&label))
            .observe(arrived.elapsed().as_secs_f64());
    }
    match result {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks one KServe input against the model: returns `(rows, samples, batched)`.
fn validate_input(
    req: InferRequest,
    d: usize,
    max_batch: usize,
) -> Result<(Vec<f32>, usize, bool), ApiError> {
    let n = req.inputs.len();
    let Some(input) = req.inputs.into_iter().next().filter(|_| n == 1) else {
        return Err(ApiError::bad_request(
            "inputs",
            format!("expected exactly 1 input tensor, got {n}"),
        ));
    };
    if input.datatype != kserve::DATATYPE_FP32 {
        return Err(ApiError::bad_request(
            "inputs[0].datatype",
            format!(
                "expected \"{}\", got \"{}\"",
                kserve::DATATYPE_FP32,
                input.datatype
            ),
        ));
    }
    let bad_shape = || {
        ApiError::bad_request(
            "inputs[0].shape",
            format!(
                "expected [k, {d}] with 1 <= k <= {max_batch}, or [{d}]; got {:?}",
                input.shape
            ),
        )
    };
    let (samples, batched) = match input.shape.as_slice() {
        [dim] if *dim == d as i64 => (1, false),
        [k, dim] if *dim == d as i64 && *k >= 1 && *k <= max_batch as i64 => (*k as usize, true),
        _ => return Err(bad_shape()),
    };
    if input.data.len() != samples * d {
        return Err(ApiError::bad_request(
            "inputs[0].data",
            format!(
                "shape {:?} needs {} values, got {}",
                input.shape,
                samples * d,
                input.data.len()
            ),
        ));
    }
    Ok((input.data, samples, batched))
}

async fn infer_inner(
    app: &AppState,
    name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<InferResponse, ApiError> {
    if app.draining.load(Ordering::Acquire) {
        app.metrics.request_shed(&label_for(app, name), "draining");
        return Err(ApiError::draining());
    }
    let engine = match lookup(app, name)? {
        Engine::Mlp(e) => e,
        Engine::Lm(_) => {
            return Err(ApiError::bad_request(
                "model",
                format!("model `{name}` is a language model: use POST /v1/completions"),
            ))
        }
    };
    // Shed before parsing: under overload most requests end here, cheaply.
    engine
        .admission()
        .map_err(|e| ApiError::from_submit(e, name, &app.metrics))?;
    let req: InferRequest = parse_json(body, app.max_body_bytes)?;
    let id = req.id.clone();
    let (rows, samples, batched) =
        validate_input(req, engine.input_dim(), engine.max_batch_size())?;
    let rx = engine
        .submit(rows, samples)
        .map_err(|e| ApiError::from_submit(e, name, &app.metrics))?;
    let logits = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => {
            return Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "internal_error",
                message: format!("model `{name}` failed: {msg}"),
                param: None,
            })
        }
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "model `{name}`: engine stopped before answering"
            )))
        }
    };
    let c = engine.num_classes() as i64;
    let shape = if batched {
        vec![samples as i64, c]
    } else {
        vec![c]
    };
    Ok(InferResponse {
        model_name: name.to_string(),
        id,
        outputs: vec![kserve::InferOutputTensor {
            name: "logits".into(),
            shape,
            datatype: kserve::DATATYPE_FP32.into(),
            data: logits,
        }],
    })
}

/// `GET /v2/models/{name}`.
async fn model_metadata(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let engine = lookup(&app, &name)?;
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    let (inputs, outputs) = match engine {
        Engine::Mlp(e) => (
            vec![tensor("input", "FP32", vec![-1, e.input_dim() as i64])],
            vec![tensor("logits", "FP32", vec![-1, e.num_classes() as i64])],
        ),
        Engine::Lm(_) => (
            vec![tensor("prompt", "BYTES", vec![-1])],
            vec![tensor("text", "BYTES", vec![-1])],
        ),
    };
    Ok(Json(ModelMetadata {
        name,
        versions: vec!["1".into()],
        platform: format!("candle_cpu_{}", engine.kind().as_str()),
        inputs,
        outputs,
    }))
}

/// `GET /v1/models`.
async fn list_models(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: app
            .models
            .iter()
            .map(|(name, e)| ModelCard {
                id: name.clone(),
                object: "model".into(),
                created: app.created_unix_s,
                owned_by: "faultline".into(),
                kind: Some(e.kind().as_str().into()),
            })
            .collect(),
    })
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

/// `GET /metrics`.
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
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
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// A validated completion request.
struct Completion {
    model: String,
    prompt: Vec<u8>,
    max_tokens: u32,
    temperature: f32,
    stream: bool,
    seed: u64,
    id: String,
}

fn validate_completion(app: &AppState, req: CompletionRequest) -> Result<Completion, ApiError> {
    match lookup(app, &req.model)? {
        Engine::Lm(_) => {}
        Engine::Mlp(_) => {
            return Err(ApiError::bad_request(
                "model",
                format!(
                    "model `{}` is a classifier: use POST /v2/models/{}/infer",
                    req.model, req.model
                ),
            ))
        }
    }
    if req.prompt.is_empty() {
        return Err(ApiError::bad_request(
            "prompt",
            "expected a non-empty string",
        ));
    }
    if req.prompt.len() > app.max_prompt_bytes {
        return Err(ApiError::bad_request(
            "prompt",
            format!(
                "prompt is {} bytes; expected at most {} (--max-prompt-bytes)",
                req.prompt.len(),
                app.max_prompt_bytes
            ),
        ));
    }
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 || max_tokens > app.max_tokens_limit {
        return Err(ApiError::bad_request(
            "max_tokens",
            format!(
                "expected 1..={} (--max-tokens-limit), got {max_tokens}",
                app.max_tokens_limit
            ),
        ));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            "temperature",
            format!("expected a number in 0..=2, got {temperature}"),
        ));
    }
    let n = app.next_id();
    let seed = req
        .seed
        .unwrap_or_else(|| app.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    Ok(Completion {
        model: req.model,
        prompt: req.prompt.into_bytes(),
        max_tokens,
        temperature,
        stream: req.stream.unwrap_or(false),
        seed,
        id: format!("cmpl-{n}"),
    })
}

/// `POST /v1/completions`.
async fn completions(
    State(app): State<Arc<AppState>>,
    Extension(request_label): Extension<RequestLabel>,
    Extension(Deadline(deadline)): Extension<Deadline>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let in_flight = app.enter();
    let mut label = UNKNOWN_MODEL_LABEL.to_string();
    request_label.set(&label);
    let request = CompletionCtx {
        arrived,
        deadline,
        in_flight,
        request_label: &request_label,
    };
    let result = completions_inner(&app, body, request, &mut label).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    app.metrics.request_done(&label, status.as_u16());
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// What a completion handler carries besides its body.
struct CompletionCtx<'a> {
    arrived: Instant,
    deadline: tokio::time::Instant,
    in_flight: InFlight,
    request_label: &'a RequestLabel,
}

async fn completions_inner(
    app: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    request: CompletionCtx<'_>,
    label: &mut String,
) -> Result<Response, ApiError> {
    let CompletionCtx {
        arrived,
        deadline,
        in_flight,
        request_label,
    } = request;
    if app.draining.load(Ordering::Acquire) {
        app.metrics.request_shed(UNKNOWN_MODEL_LABEL, "draining");
        return Err(ApiError::draining());
    }
    let req: CompletionRequest = parse_json(body, app.max_body_bytes)?;
    *label = label_for(app, &req.model);
    request_label.set(label);
    let c = validate_completion(app, req)?;
    let Some(Engine::Lm(engine)) = app.models.get(&c.model) else {
        return Err(ApiError::not_found(format!(
            "model `{}` is not loaded",
            c.model
        )));
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prompt_tokens = c.prompt.len() as u32;
    engine
        .submit(LmJob {
            prompt: c.prompt,
            max_tokens: c.max_tokens as usize,
            temperature: c.temperature,
            seed: c.seed,
            tokens: tx,
            arrived,
        })
        .map_err(|e| ApiError::from_submit(e, &c.model, &app.metrics))?;
    let id = c.id;
    let created = unix_now_s();
    if c.stream {
        return Ok(stream_response(StreamState {
            rx,
            id,
            created,
            model: c.model,
            max_tokens: c.max_tokens,
            sent: 0,
            ending: false,
            finished: false,
            deadline,
            timeout: app.request_timeout,
            metrics: app.metrics.clone(),
            _in_flight: in_flight,
        }));
    }
    let mut text = String::new();
    let mut n = 0u32;
    while let Some(token) = rx.recv().await {
        text.push(models::lm::token_text(token));
        n += 1;
    }
    if n < c.max_tokens {
        return Err(ApiError::unavailable(format!(
            "model `{}`: engine stopped after {n} of {} tokens",
            c.model, c.max_tokens
        )));
    }
    Ok(Json(CompletionResponse {
        id,
        object: "text_completion".into(),
        created,
        model: c.model,
        choices: vec![CompletionChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason: Some("length".into()),
        }],
        usage: Usage {
            prompt_tokens,
            completion_tokens: n,
            total_tokens: prompt_tokens + n,
        },
    })
    .into_response())
}

/// One SSE stream's state. Dropped before `finished` means the client went away.
struct StreamState {
    rx: mpsc::UnboundedReceiver<u32>,
    id: String,
    created: u64,
    model: String,
    max_tokens: u32,
    sent: u32,
    /// The last event before `[DONE]` was sent (last token, or an error).
    ending: bool,
    /// `[DONE]` was sent.
    finished: bool,
    deadline: tokio::time::Instant,
    /// `--request-timeout-s`, for the deadline error's message.
    timeout: Duration,
    metrics: Arc<Metrics>,
    _in_flight: InFlight,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.ending {
            self.metrics.stream_ended_early(&self.model, "client_gone");
        }
    }
}

/// SSE: one `data: {chunk}` per token, then `data: [DONE]`. If the engine stops early or
/// the deadline passes, an `data: {"error":…}` event precedes `[DONE]`.
fn stream_response(state: StreamState) -> Response {
    let events = futures_util::stream::unfold(state, |mut s| async move {
        if s.finished {
            return None;
        }
        let event = if s.ending {
            s.finished = true;
            Ok(Event::default().data(STREAM_DONE))
        } else {
            let next = tokio::time::timeout_at(s.deadline, s.rx.recv()).await;
            s.ending = true;
            match next {
                Ok(Some(token)) => {
                    s.sent += 1;
                    s.ending = s.sent >= s.max_tokens;
                    Event::default().json_data(CompletionChunk {
                        id: s.id.clone(),
                        object: "text_completion".into(),
                        created: s.created,
                        model: s.model.clone(),
                        choices: vec![CompletionChoice {
                            index: 0,
                            text: models::lm::token_text(token).to_string(),
                            logprobs: None,
                            finish_reason: s.ending.then(|| "length".into()),
                        }],
                    })
                }
                Ok(None) => {
                    // Engine stopped early: say so, then end the stream like vLLM does.
                    s.metrics.stream_ended_early(&s.model, "engine_stopped");
                    let err = ApiError::unavailable(format!(
                        "model `{}`: engine stopped after {} of {} tokens",
                        s.model, s.sent, s.max_tokens
                    ));
                    Event::default().json_data(err.body())
                }
                Err(_) => {
                    // Deadline: closing the channel stops generation at the engine's next step.
                    s.rx.close();
                    s.metrics.stream_ended_early(&s.model, "deadline");
                    Event::default().json_data(ApiError::deadline_passed(s.timeout).body())
                }
            }
        };
        let event =
            event.unwrap_or_else(|e| Event::default().comment(format!("encode error: {e}")));
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_validation_names_the_field_and_expectation() {
        let req = |shape: Vec<i64>, datatype: &str, n: usize| InferRequest {
            id: None,
            inputs: vec![kserve::InferInputTensor {
                name: "input".into(),
                shape,
                datatype: datatype.into(),
                data: vec![0.0; n],
            }],
        };
        let ok = validate_input(req(vec![2, 4], "FP32", 8), 4, 8).expect("valid");
        assert_eq!((ok.1, ok.2), (2, true));
        let ok = validate_input(req(vec![4], "FP32", 4), 4, 8).expect("valid");
        assert_eq!((ok.1, ok.2), (1, false));
        for (r, param) in [
            (req(vec![2, 4], "INT32", 8), "inputs[0].datatype"),
            (req(vec![2, 5], "FP32", 10), "inputs[0].shape"),
            (req(vec![0, 4], "FP32", 0), "inputs[0].shape"),
            (req(vec![9, 4], "FP32", 36), "inputs[0].shape"),
            (req(vec![2, 4], "FP32", 7), "inputs[0].data"),
            (
                InferRequest {
                    id: None,
                    inputs: vec![],
                },
                "inputs",
            ),
        ] {
            let e = validate_input(r, 4, 8).expect_err(param);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
            assert!(
                e.message.contains("expected")
                    || e.message.contains("needs")
                    || e.message.contains("exceeds"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn missing_field_is_extracted_from_serde_messages() {
        assert_eq!(
            missing_field("missing field `prompt` at line 1 column 17").as_deref(),
            Some("prompt")
        );
        assert_eq!(missing_field("expected value"), None);
    }
}
