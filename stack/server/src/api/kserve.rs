//! KServe v2 / Triton HTTP protocol: health, metadata and inference under `/v2`, and the
//! classifier's `POST /v1/models/{m}/infer` (the same handler, OpenAI-shaped errors).
//!
//! What stock clients (tritonclient) call: `GET /v2` (server metadata), `/v2/health/live`,
//! `/v2/health/ready`, `/v2/models/{m}[/versions/{v}]` (model metadata),
//! `.../ready` and `POST .../infer`. Health answers are `200` with an empty body for true,
//! `400` for false (the spec's 4xx) with the reasons as `{"error": ...}`. Every error on a
//! `/v2` route is `{"error": "message"}`, the message starting with the field it is about.
//!
//! Inference takes one FP32 tensor shaped `[k, D]` or `[D]`, its `data` flat or nested
//! exactly as the shape, or as Triton binary tensor data (`binary_data_size` and the
//! `Inference-Header-Content-Length` header: the default of tritonclient's HTTP client).
//! Validation ([`parse_infer`]) is a plain function of the headers and body bytes; the
//! handlers only move bytes to and from the engine. Rules: `docs/server.md` ("KServe v2").
//!
//! A model's version comes from one place, `Engine::version`; a version in a URL must be
//! it, or the answer is `404`.

use super::*;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{get, post, MethodRouter};
use wire::kserve::{
    self as v2, InferResponse, InferenceRequest, ModelMetadata, Nesting, RequestInput,
    ServerMetadata, TensorData, TensorMetadata,
};

/// `name` in `GET /v2`.
pub const SERVER_NAME: &str = "faultline-server";
/// `extensions` in `GET /v2`: Triton's binary tensor data extension.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];
/// The classifier's input tensor, as its metadata names it.
const INPUT_NAME: &str = "input";
/// The classifier's one output tensor.
const OUTPUT_NAME: &str = "logits";
/// Bytes of one FP32 element in binary tensor data.
const FP32_BYTES: usize = 4;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", only(Method::GET, get(server_metadata)))
        .route("/v2/health/live", only(Method::GET, get(live)))
        .route("/v2/health/ready", only(Method::GET, get(ready)))
        .route("/v2/models/{name}", only(Method::GET, get(model_metadata)))
        .route(
            "/v2/models/{name}/ready",
            only(Method::GET, get(model_ready)),
        )
        .route("/v2/models/{name}/infer", only(Method::POST, post(infer)))
        .route(
            "/v2/models/{name}/versions/{version}",
            only(Method::GET, get(version_metadata)),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            only(Method::GET, get(version_ready)),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            only(Method::POST, post(version_infer)),
        )
        .route("/v1/models/{name}/infer", post(infer))
}

/// A route that answers other methods with a KServe-shaped `405` and an `Allow` header.
fn only(allowed: Method, router: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    let fallback = move |method: Method, uri: Uri| {
        let allowed = allowed.clone();
        async move {
            let mut resp = ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                kind: "method_not_allowed",
                message: format!("{method} is not allowed on {}; use {allowed}", uri.path()),
                param: None,
                shape: ErrorShape::KServe,
            }
            .into_response();
            resp.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_str(allowed.as_str()).expect("a method name is a header value"),
            );
            resp
        }
    };
    router.fallback(fallback)
}

/// Puts an error in the route's body shape; on `/v2` the message starts with the field it
/// is about (KServe's body has no `param`).
fn shaped(e: ApiError, path: &str) -> ApiError {
    let shape = ErrorShape::for_path(path);
    let mut e = e.with_shape(shape);
    if shape == ErrorShape::KServe {
        if let Some(param) = &e.param {
            if !e.message.starts_with(param.as_str()) {
                e.message = format!("{param}: {}", e.message);
            }
        }
    }
    e
}

fn bad_path(r: PathRejection) -> ApiError {
    ApiError::bad_request(
        "path",
        format!("cannot read the URL path: {}", r.body_text()),
    )
}

/// `false` from a health route: `400` (the spec's 4xx) naming why.
fn not_ready(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "not_ready",
        message,
        param: None,
        shape: ErrorShape::KServe,
    }
}

/// `true` from a health route: `200`, empty body.
fn health_ok() -> Response {
    StatusCode::OK.into_response()
}

/// The engine problems, each naming its model; empty when every engine lives and progresses.
fn engine_problems(app: &AppState) -> Vec<String> {
    app.models.values().filter_map(Engine::problem).collect()
}

fn draining(app: &AppState) -> bool {
    app.draining.load(Ordering::Acquire)
}

/// `GET /v2`.
async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: SERVER_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
    })
}

/// `GET /v2/health/live`: as `/healthz` (every engine thread lives and progresses).
async fn live(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let problems = engine_problems(&app);
    if problems.is_empty() {
        Ok(health_ok())
    } else {
        Err(not_ready(format!("not live: {}", problems.join("; "))))
    }
}

/// `GET /v2/health/ready`: every engine healthy and the server not draining.
async fn ready(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut problems = engine_problems(&app);
    if draining(&app) {
        problems.push("server is draining (shutting down)".into());
    }
    if problems.is_empty() {
        Ok(health_ok())
    } else {
        Err(not_ready(format!("not ready: {}", problems.join("; "))))
    }
}

/// The engine for `name` at `version` (`None`: the current one); `404` otherwise.
fn model_at<'a>(
    app: &'a AppState,
    name: &str,
    version: Option<&str>,
) -> Result<&'a Engine, ApiError> {
    let engine = lookup(app, name)?;
    match version {
        Some(v) if v != engine.version() => Err(ApiError::not_found(format!(
            "model `{name}` has no version `{v}`; its versions: {}",
            engine.version()
        ))),
        _ => Ok(engine),
    }
}

fn readiness(app: &AppState, name: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let engine = model_at(app, name, version)?;
    if let Some(problem) = engine.problem() {
        return Err(not_ready(format!("model `{name}` is not ready: {problem}")));
    }
    if draining(app) {
        return Err(not_ready(format!(
            "model `{name}` is not ready: the server is draining (shutting down)"
        )));
    }
    Ok(health_ok())
}

/// `GET /v2/models/{name}/ready`: this model's engine healthy and the server not draining.
async fn model_ready(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(bad_path).map_err(|e| shaped(e, uri.path()))?;
    readiness(&app, &name, None).map_err(|e| shaped(e, uri.path()))
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
async fn version_ready(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, version)) = path.map_err(bad_path).map_err(|e| shaped(e, uri.path()))?;
    readiness(&app, &name, Some(&version)).map_err(|e| shaped(e, uri.path()))
}

fn metadata(app: &AppState, name: &str, version: Option<&str>) -> Result<ModelMetadata, ApiError> {
    let engine = model_at(app, name, version)?;
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    let (inputs, outputs) = match engine {
        Engine::Mlp(e) => (
            vec![tensor(
                INPUT_NAME,
                v2::DATATYPE_FP32,
                vec![-1, e.input_dim() as i64],
            )],
            vec![tensor(
                OUTPUT_NAME,
                v2::DATATYPE_FP32,
                vec![-1, e.num_classes() as i64],
            )],
        ),
        Engine::Lm(_) => (
            vec![tensor("prompt", "BYTES", vec![-1])],
            vec![tensor("text", "BYTES", vec![-1])],
        ),
    };
    Ok(ModelMetadata {
        name: name.to_string(),
        versions: vec![engine.version().to_string()],
        platform: format!("candle_cpu_{}", engine.kind().as_str()),
        inputs,
        outputs,
    })
}

/// `GET /v2/models/{name}`.
async fn model_metadata(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let Path(name) = name.map_err(bad_path).map_err(|e| shaped(e, uri.path()))?;
    metadata(&app, &name, None)
        .map(Json)
        .map_err(|e| shaped(e, uri.path()))
}

/// `GET /v2/models/{name}/versions/{version}`.
async fn version_metadata(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let Path((name, version)) = path.map_err(bad_path).map_err(|e| shaped(e, uri.path()))?;
    metadata(&app, &name, Some(&version))
        .map(Json)
        .map_err(|e| shaped(e, uri.path()))
}

/// `POST /v{1,2}/models/{name}/infer`.
async fn infer(
    State(app): State<Arc<AppState>>,
    name: Result<Path<String>, PathRejection>,
    Extension(request_label): Extension<RequestLabel>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match name {
        Ok(Path(name)) => run_infer(&app, &request_label, &uri, &name, None, &headers, body).await,
        Err(r) => shaped(bad_path(r), uri.path()).into_response(),
    }
}

/// `POST /v2/models/{name}/versions/{version}/infer`.
async fn version_infer(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    Extension(request_label): Extension<RequestLabel>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match path {
        Ok(Path((name, version))) => {
            run_infer(
                &app,
                &request_label,
                &uri,
                &name,
                Some(&version),
                &headers,
                body,
            )
            .await
        }
        Err(r) => shaped(bad_path(r), uri.path()).into_response(),
    }
}

async fn run_infer(
    app: &Arc<AppState>,
    request_label: &RequestLabel,
    uri: &Uri,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let _in_flight = app.enter();
    let label = label_for(app, name);
    request_label.set(&label);
    let result = infer_inner(app, name, version, headers, body).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    app.metrics.request_done(&label, status.as_u16());
    match result {
        Ok(answer) => {
            app.metrics
                .e2e_latency
                .get_or_create(&Metrics::model(&label))
                .observe(arrived.elapsed().as_secs_f64());
            answer.into_response()
        }
        Err(e) => shaped(e, uri.path()).into_response(),
    }
}

async fn infer_inner(
    app: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Answer, ApiError> {
    if draining(app) {
        app.metrics.request_shed(&label_for(app, name), "draining");
        return Err(ApiError::draining());
    }
    let engine = model_at(app, name, version)?;
    let version = engine.version().to_string();
    let Engine::Mlp(engine) = engine else {
        return Err(ApiError::bad_request(
            "model",
            format!("model `{name}` is a language model: use POST /v1/completions"),
        ));
    };
    check_content_type(headers)?;
    // Shed before parsing: under overload most requests end here, cheaply.
    engine
        .admission()
        .map_err(|e| ApiError::from_submit(e, name, ModelKind::Mlp, &app.metrics))?;
    let bytes = body.map_err(|r| ApiError::from_body_rejection(r, app.max_body_bytes))?;
    let model = ModelShape {
        input_dim: engine.input_dim(),
        max_batch: engine.max_batch_size(),
    };
    let job = parse_infer(headers, bytes, app.max_body_bytes, model)?;
    let rx = engine
        .submit(job.rows, job.samples)
        .map_err(|e| ApiError::from_submit(e, name, ModelKind::Mlp, &app.metrics))?;
    let logits = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => {
            return Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "internal_error",
                message: format!("model `{name}` failed: {msg}"),
                param: None,
                shape: ErrorShape::KServe,
            })
        }
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "model `{name}`: engine stopped before answering"
            )))
        }
    };
    let c = engine.num_classes() as i64;
    let shape = if job.batched {
        vec![job.samples as i64, c]
    } else {
        vec![c]
    };
    Ok(Answer {
        response: InferResponse {
            model_name: name.to_string(),
            model_version: Some(version),
            id: job.id,
            outputs: vec![v2::InferOutputTensor {
                name: OUTPUT_NAME.into(),
                shape,
                datatype: v2::DATATYPE_FP32.into(),
                parameters: v2::Parameters::new(),
                data: Some(logits),
            }],
        },
        binary: job.binary_output,
    })
}

/// Checks the infer routes' content-type rule: `Content-Type` JSON (`application/json`,
/// `application/*+json`), `application/octet-stream` (binary tensor data; tritonclient's
/// asyncio client sends it for every body) or absent (tritonclient's HTTP client sends
/// none) — absent only without an `Origin` header, which browsers send on every POST. So
/// an HTML form (`text/plain`, `multipart/form-data`, `application/x-www-form-urlencoded`)
/// or a script's body-typed POST from another site cannot run inference. `Content-Encoding`
/// must be absent or `identity`, as [`require_json`] says.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    // require_json checks Content-Encoding before Content-Type, so a Content-Type complaint
    // means the encoding was fine (pinned by a unit test).
    let Err(mut e) = require_json(headers) else {
        return Ok(());
    };
    if e.param.as_deref() != Some("Content-Type") {
        return Err(e);
    }
    match headers.get(header::CONTENT_TYPE) {
        None if !headers.contains_key(header::ORIGIN) => Ok(()),
        None => {
            e.message = "missing Content-Type on a request with an Origin header (a browser's); \
                         expected application/json"
                .into();
            Err(e)
        }
        Some(ct) => {
            let essence = ct
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence == "application/octet-stream" {
                return Ok(());
            }
            e.message = format!(
                "Content-Type `{}` is not supported; expected application/json, \
                 application/octet-stream (binary tensor data) or none",
                ct.to_str().unwrap_or("(not ASCII)")
            );
            Err(e)
        }
    }
}

/// A successful inference: the JSON response, and whether its output goes as binary data.
struct Answer {
    response: InferResponse,
    binary: bool,
}

impl IntoResponse for Answer {
    fn into_response(mut self) -> Response {
        if !self.binary {
            return Json(self.response).into_response();
        }
        // Binary tensor data: the JSON header, then each output's little-endian bytes.
        let mut tail = Vec::new();
        for out in &mut self.response.outputs {
            let data = out.data.take().unwrap_or_default();
            out.parameters
                .insert("binary_data_size".into(), (data.len() * FP32_BYTES).into());
            tail.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        }
        let mut body =
            serde_json::to_vec(&self.response).expect("an InferResponse always serialises");
        let header_len = body.len();
        body.extend_from_slice(&tail);
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(v2::INFERENCE_HEADER_CONTENT_LENGTH),
                    HeaderValue::from(header_len),
                ),
            ],
            body,
        )
            .into_response()
    }
}

/// What [`parse_infer`] checks a request against.
#[derive(Debug, Clone, Copy)]
struct ModelShape {
    input_dim: usize,
    max_batch: usize,
}

/// A checked inference request.
#[derive(Debug, Clone, PartialEq)]
struct InferJob {
    id: Option<String>,
    /// `samples × input_dim` values, row-major.
    rows: Vec<f32>,
    samples: usize,
    /// Whether the input was `[k, D]` (the output is `[k, C]`) rather than `[D]`.
    batched: bool,
    /// Whether the output goes as binary tensor data.
    binary_output: bool,
}

/// Splits the body at `Inference-Header-Content-Length`, parses the JSON part and checks
/// it against the model. Without the header the whole body is JSON; with `0` the whole body
/// is one sample's FP32 bytes (Triton's raw binary request; the output is binary).
fn parse_infer(
    headers: &HeaderMap,
    bytes: Bytes,
    max_body_bytes: usize,
    model: ModelShape,
) -> Result<InferJob, ApiError> {
    let header_len = match headers.get(v2::INFERENCE_HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => {
            let parsed = v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok());
            match parsed {
                Some(n) if n <= bytes.len() => Some(n),
                _ => {
                    return Err(ApiError::bad_request(
                        "Inference-Header-Content-Length",
                        format!(
                        "expected the byte length of the JSON part of the body, 0..={}, got `{}`",
                        bytes.len(),
                        v.to_str().unwrap_or("(not ASCII)")
                    ),
                    ))
                }
            }
        }
    };
    if header_len == Some(0) {
        let shape = [1, model.input_dim as i64];
        let rows = binary_values(&bytes, &shape, "body", INPUT_NAME)?;
        return Ok(InferJob {
            id: None,
            rows,
            samples: 1,
            batched: true,
            binary_output: true,
        });
    }
    let (json, binary) = match header_len {
        Some(n) => (bytes.slice(..n), Some(bytes.slice(n..))),
        None => (bytes, None),
    };
    let req: InferenceRequest = parse_json(Ok(json), max_body_bytes)?;
    check_request(req, binary.as_deref(), model)
}

/// Checks a parsed request against the model; `binary` is the body after the JSON header,
/// when the request has one.
fn check_request(
    req: InferenceRequest,
    binary: Option<&[u8]>,
    model: ModelShape,
) -> Result<InferJob, ApiError> {
    let d = model.input_dim;
    let max_batch = model.max_batch;
    let binary_output = wants_binary_output(&req)?;
    let n = req.inputs.len();
    let Some(input) = req.inputs.into_iter().next().filter(|_| n == 1) else {
        return Err(ApiError::bad_request(
            "inputs",
            format!("expected exactly 1 input tensor (`{INPUT_NAME}`), got {n}"),
        ));
    };
    if input.datatype != v2::DATATYPE_FP32 {
        return Err(ApiError::bad_request(
            "inputs[0].datatype",
            format!(
                "expected \"{}\" (the model's input datatype; values are not converted), got \"{}\"",
                v2::DATATYPE_FP32,
                input.datatype
            ),
        ));
    }
    let (samples, batched) = match input.shape.as_slice() {
        [dim] if *dim == d as i64 => (1, false),
        [k, dim] if *dim == d as i64 && *k >= 1 && *k <= max_batch as i64 => (*k as usize, true),
        _ => {
            return Err(ApiError::bad_request(
                "inputs[0].shape",
                format!(
                    "expected [k, {d}] with 1 <= k <= {max_batch} (--max-batch-size), or [{d}]; got {:?}",
                    input.shape
                ),
            ))
        }
    };
    let rows = input_values(&input, binary)?;
    Ok(InferJob {
        id: req.id,
        rows,
        samples,
        batched,
        binary_output,
    })
}

/// Whether the output goes as binary data: a requested output's `binary_data`, else the
/// request's `binary_data_output`, else JSON.
fn wants_binary_output(req: &InferenceRequest) -> Result<bool, ApiError> {
    let flag = |params: &v2::Parameters, key: &str, at: &str| match params.get(key) {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::bad_request(
            &format!("{at}parameters.{key}"),
            format!("expected true or false, got {other}"),
        )),
    };
    let default = flag(&req.parameters, "binary_data_output", "")?.unwrap_or(false);
    let outputs = req.outputs.as_deref().unwrap_or_default();
    if outputs.len() > 1 {
        return Err(ApiError::bad_request(
            "outputs",
            format!(
                "expected at most 1 requested output (`{OUTPUT_NAME}`), got {}",
                outputs.len()
            ),
        ));
    }
    let Some(out) = outputs.first() else {
        return Ok(default);
    };
    if out.name != OUTPUT_NAME {
        return Err(ApiError::bad_request(
            "outputs[0].name",
            format!(
                "the model has no output `{}`; its only output is `{OUTPUT_NAME}`",
                out.name
            ),
        ));
    }
    if out.parameters.contains_key("classification") {
        return Err(ApiError::bad_request(
            "outputs[0].parameters.classification",
            "classification outputs are not supported; request the raw logits",
        ));
    }
    Ok(flag(&out.parameters, "binary_data", "outputs[0].")?.unwrap_or(default))
}

/// The input's values from `data` or from binary tensor data, checked against its shape.
fn input_values(input: &RequestInput, binary: Option<&[u8]>) -> Result<Vec<f32>, ApiError> {
    let size = input.parameters.get("binary_data_size");
    let tail_len = binary.map_or(0, <[u8]>::len);
    match (&input.data, size) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "inputs[0]",
            "has both `data` and parameters.binary_data_size; send the values one way",
        )),
        (None, None) => Err(ApiError::bad_request(
            "inputs[0].data",
            "missing: give the values as `data` or as binary tensor data (parameters.binary_data_size)",
        )),
        (Some(data), None) => {
            if tail_len > 0 {
                return Err(ApiError::bad_request(
                    "Inference-Header-Content-Length",
                    format!("{tail_len} bytes follow the JSON header, but no input has parameters.binary_data_size"),
                ));
            }
            json_values(data, &input.shape, &input.name)
        }
        (None, Some(size)) => {
            let param = "inputs[0].parameters.binary_data_size";
            let Some(binary) = binary else {
                return Err(ApiError::bad_request(
                    param,
                    "binary tensor data needs the Inference-Header-Content-Length header (the byte length of the JSON part of the body)",
                ));
            };
            let size = size.as_u64().ok_or_else(|| {
                ApiError::bad_request(param, format!("expected a byte count, got {size}"))
            })?;
            if size != binary.len() as u64 {
                return Err(ApiError::bad_request(
                    param,
                    format!(
                        "{size} bytes declared, but {} bytes follow the JSON header",
                        binary.len()
                    ),
                ));
            }
            binary_values(binary, &input.shape, param, &input.name)
        }
    }
}

/// The product of a shape already checked to be positive and small.
fn elements(shape: &[i64]) -> usize {
    shape.iter().map(|&x| x.max(0) as usize).product()
}

/// `data[i][j]` for row-major element `i` of data nested as `dims` (`data[i]` when flat).
fn element_path(mut i: usize, dims: &[usize]) -> String {
    let mut index = vec![0; dims.len().max(1)];
    if dims.len() > 1 {
        for (slot, &n) in index.iter_mut().zip(dims).rev() {
            *slot = i % n.max(1);
            i /= n.max(1);
        }
    } else {
        index[0] = i;
    }
    let at: String = index.iter().map(|x| format!("[{x}]")).collect();
    format!("data{at}")
}

/// FP32 values of JSON `data` nested exactly as `shape` or flat.
fn json_values(data: &TensorData, shape: &[i64], tensor: &str) -> Result<Vec<f32>, ApiError> {
    let dims = match &data.nesting {
        Nesting::Ragged(at) => {
            return Err(ApiError::bad_request(
                &format!("inputs[0].{at}"),
                format!(
                    "differs in length or depth from the elements beside it: nested data of tensor `{tensor}` must be shaped exactly {shape:?}"
                ),
            ))
        }
        Nesting::Rectangular(dims) => dims,
    };
    if let Some((i, kind)) = data.non_number {
        return Err(ApiError::bad_request(
            &format!("inputs[0].{}", element_path(i, dims)),
            format!("expected a number (FP32) in tensor `{tensor}`, got a {kind}"),
        ));
    }
    let want = elements(shape);
    if dims.len() > 1 {
        let matches =
            dims.len() == shape.len() && dims.iter().zip(shape).all(|(&n, &s)| n as i64 == s);
        if !matches {
            return Err(ApiError::bad_request(
                "inputs[0].data",
                format!(
                    "is nested as {dims:?} but shape is {shape:?}; nest it exactly as the shape or send it flat"
                ),
            ));
        }
    } else if data.values.len() != want {
        return Err(ApiError::bad_request(
            "inputs[0].data",
            format!(
                "shape {shape:?} needs {want} values, got {}",
                data.values.len()
            ),
        ));
    }
    data.values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = v as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                Err(ApiError::bad_request(
                    &format!("inputs[0].{}", element_path(i, dims)),
                    format!(
                        "{v:e} in tensor `{tensor}` overflows FP32 (finite FP32 values lie within ±{:e})",
                        f32::MAX
                    ),
                ))
            }
        })
        .collect()
}

/// FP32 values of binary tensor data (little-endian) for `shape`; every value must be finite.
fn binary_values(
    bytes: &[u8],
    shape: &[i64],
    param: &str,
    tensor: &str,
) -> Result<Vec<f32>, ApiError> {
    let want = elements(shape) * FP32_BYTES;
    if bytes.len() != want {
        return Err(ApiError::bad_request(
            param,
            format!(
                "shape {shape:?} of FP32 needs {want} bytes of binary data, got {}",
                bytes.len()
            ),
        ));
    }
    bytes
        .chunks_exact(FP32_BYTES)
        .enumerate()
        .map(|(i, b)| {
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if f.is_finite() {
                Ok(f)
            } else {
                Err(ApiError::bad_request(
                    &format!("inputs[0].data[{i}]"),
                    format!("{f} in tensor `{tensor}` (binary data) is not a finite FP32 value"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: ModelShape = ModelShape {
        input_dim: 4,
        max_batch: 8,
    };

    fn request(json: serde_json::Value) -> InferenceRequest {
        serde_json::from_value(json).expect("a well-formed request")
    }

    fn fp32(shape: serde_json::Value, data: serde_json::Value) -> InferenceRequest {
        request(
            serde_json::json!({"inputs":[{"name":"input","shape":shape,"datatype":"FP32","data":data}]}),
        )
    }

    fn check(req: InferenceRequest) -> Result<InferJob, ApiError> {
        check_request(req, None, MODEL)
    }

    /// Asserts a 400 naming `param`, whose message contains `needle`.
    fn refused(r: Result<InferJob, ApiError>, param: &str, needle: &str) {
        let e = r.expect_err(param);
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
        assert!(
            e.message.contains(needle),
            "{param}: {:?} lacks {needle:?}",
            e.message
        );
    }

    #[test]
    fn flat_and_nested_data_give_the_same_rows() {
        let flat = check(fp32(
            serde_json::json!([2, 4]),
            serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8]),
        ))
        .expect("flat");
        let nested = check(fp32(
            serde_json::json!([2, 4]),
            serde_json::json!([[1, 2, 3, 4], [5, 6, 7, 8]]),
        ))
        .expect("nested");
        assert_eq!(flat, nested);
        assert_eq!((flat.samples, flat.batched), (2, true));
        assert_eq!(flat.rows, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let one = check(fp32(
            serde_json::json!([4]),
            serde_json::json!([1, 2, 3, 4]),
        ))
        .expect("[D]");
        assert_eq!((one.samples, one.batched), (1, false));
    }

    #[test]
    fn nested_data_must_match_the_shape_exactly() {
        refused(
            check(fp32(
                serde_json::json!([2, 4]),
                serde_json::json!([[1, 2], [3, 4], [5, 6], [7, 8]]),
            )),
            "inputs[0].data",
            "nested as [4, 2] but shape is [2, 4]",
        );
        refused(
            check(fp32(
                serde_json::json!([2, 4]),
                serde_json::json!([[1, 2, 3, 4], [5, 6, 7]]),
            )),
            "inputs[0].data[1]",
            "shaped exactly [2, 4]",
        );
        refused(
            check(fp32(
                serde_json::json!([1, 4]),
                serde_json::json!([[[1, 2, 3, 4]]]),
            )),
            "inputs[0].data",
            "nested as [1, 1, 4]",
        );
        refused(
            check(fp32(
                serde_json::json!([2, 4]),
                serde_json::json!([1, 2, 3]),
            )),
            "inputs[0].data",
            "needs 8 values, got 3",
        );
    }

    #[test]
    fn values_that_overflow_fp32_are_refused_naming_tensor_and_value() {
        refused(
            check(fp32(
                serde_json::json!([1, 4]),
                serde_json::json!([[0, 1e39, 0, 0]]),
            )),
            "inputs[0].data[0][1]",
            "1e39 in tensor `input` overflows FP32",
        );
        refused(
            check(fp32(
                serde_json::json!([4]),
                serde_json::json!([0, 0, 0, -4e38]),
            )),
            "inputs[0].data[3]",
            "-4e38",
        );
        // The largest finite FP32 and values that underflow to zero are accepted.
        let ok = check(fp32(
            serde_json::json!([4]),
            serde_json::json!([3.4028234663852886e38, 1e-50, 0, 0]),
        ))
        .expect("in range");
        assert_eq!(ok.rows[..2], [f32::MAX, 0.0]);
    }

    #[test]
    fn non_numbers_and_other_datatypes_are_refused() {
        refused(
            check(fp32(
                serde_json::json!([2, 4]),
                serde_json::json!([[0, 0, 0, 0], [0, "x", 0, 0]]),
            )),
            "inputs[0].data[1][1]",
            "got a string",
        );
        for datatype in ["FP64", "INT32", "fp32"] {
            let r = request(
                serde_json::json!({"inputs":[{"name":"input","shape":[4],"datatype":datatype,"data":[1,2,3,4]}]}),
            );
            refused(check(r), "inputs[0].datatype", "expected \"FP32\"");
        }
    }

    #[test]
    fn shape_and_input_count_name_the_field_and_expectation() {
        for shape in [
            serde_json::json!([2, 5]),
            serde_json::json!([0, 4]),
            serde_json::json!([9, 4]),
            serde_json::json!([1, 1, 4]),
        ] {
            refused(
                check(fp32(shape, serde_json::json!([]))),
                "inputs[0].shape",
                "expected [k, 4] with 1 <= k <= 8",
            );
        }
        refused(
            check(request(serde_json::json!({"inputs": []}))),
            "inputs",
            "expected exactly 1 input tensor",
        );
    }

    #[test]
    fn requested_outputs_choose_json_or_binary() {
        let with = |extra: serde_json::Value| {
            let mut r = serde_json::json!({"inputs":[{"name":"input","shape":[4],"datatype":"FP32","data":[1,2,3,4]}]});
            r.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            check(request(r))
        };
        assert!(!with(serde_json::json!({})).expect("ok").binary_output);
        assert!(
            with(serde_json::json!({"parameters":{"binary_data_output":true}}))
                .expect("ok")
                .binary_output
        );
        assert!(
            !with(serde_json::json!({"parameters":{"binary_data_output":true},
                "outputs":[{"name":"logits","parameters":{"binary_data":false}}]}))
            .expect("ok")
            .binary_output
        );
        refused(
            with(serde_json::json!({"outputs":[{"name":"probs"}]})),
            "outputs[0].name",
            "no output `probs`",
        );
        refused(
            with(
                serde_json::json!({"outputs":[{"name":"logits","parameters":{"classification":3}}]}),
            ),
            "outputs[0].parameters.classification",
            "not supported",
        );
        refused(
            with(serde_json::json!({"parameters":{"binary_data_output":"yes"}})),
            "parameters.binary_data_output",
            "true or false",
        );
    }

    fn binary_body(json: serde_json::Value, values: &[f32]) -> (HeaderMap, Bytes) {
        let mut body = serde_json::to_vec(&json).expect("json");
        let mut headers = HeaderMap::new();
        headers.insert(
            v2::INFERENCE_HEADER_CONTENT_LENGTH,
            HeaderValue::from(body.len()),
        );
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        (headers, Bytes::from(body))
    }

    #[test]
    fn binary_tensor_data_is_read_after_the_json_header() {
        let (headers, body) = binary_body(
            serde_json::json!({"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",
                "parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}),
            &[1.0, 2.0, 3.0, 4.5],
        );
        let job = parse_infer(&headers, body, 1 << 20, MODEL).expect("valid");
        assert_eq!(job.rows, vec![1.0, 2.0, 3.0, 4.5]);
        assert!(job.binary_output);
        // Raw binary request: header length 0, the whole body is one sample.
        let mut raw = HeaderMap::new();
        raw.insert(v2::INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(0));
        let bytes: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let job = parse_infer(&raw, Bytes::from(bytes), 1 << 20, MODEL).expect("raw");
        assert_eq!(
            (job.samples, job.batched, job.binary_output),
            (1, true, true)
        );
    }

    #[test]
    fn binary_tensor_data_sizes_and_values_are_checked() {
        let input = |size: u64| {
            serde_json::json!({"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",
                "parameters":{"binary_data_size":size}}]})
        };
        let (h, b) = binary_body(input(12), &[1.0, 2.0, 3.0]);
        refused(
            parse_infer(&h, b, 1 << 20, MODEL),
            "inputs[0].parameters.binary_data_size",
            "needs 16 bytes",
        );
        let (h, b) = binary_body(input(16), &[1.0, 2.0, 3.0]);
        refused(
            parse_infer(&h, b, 1 << 20, MODEL),
            "inputs[0].parameters.binary_data_size",
            "16 bytes declared, but 12 bytes follow",
        );
        let (h, b) = binary_body(input(16), &[1.0, f32::NAN, 3.0, 4.0]);
        refused(
            parse_infer(&h, b, 1 << 20, MODEL),
            "inputs[0].data[1]",
            "NaN",
        );
        let no_header = Bytes::from(serde_json::to_vec(&input(16)).expect("json"));
        refused(
            parse_infer(&HeaderMap::new(), no_header, 1 << 20, MODEL),
            "inputs[0].parameters.binary_data_size",
            "needs the Inference-Header-Content-Length header",
        );
        let mut h = HeaderMap::new();
        h.insert(v2::INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(999));
        refused(
            parse_infer(&h, Bytes::from_static(b"{}"), 1 << 20, MODEL),
            "Inference-Header-Content-Length",
            "0..=2",
        );
    }

    fn content_type(pairs: &[(&'static str, &'static str)]) -> Result<(), ApiError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        check_content_type(&h)
    }

    #[test]
    fn content_type_rule_lets_tritonclient_in_and_keeps_forms_out() {
        for ok in [
            &[][..],
            &[("content-type", "application/json")],
            &[("content-type", "application/json; charset=utf-8")],
            &[("content-type", "application/octet-stream")],
            &[("content-type", "application/json"), ("origin", "http://a")],
        ] {
            assert_eq!(content_type(ok), Ok(()), "{ok:?}");
        }
        for (bad, param) in [
            (&[("content-type", "text/plain")][..], "Content-Type"),
            (
                &[("content-type", "multipart/form-data; boundary=x")],
                "Content-Type",
            ),
            (
                &[("content-type", "application/x-www-form-urlencoded")],
                "Content-Type",
            ),
            (&[("origin", "http://evil.example")], "Content-Type"),
            // No Content-Type does not excuse a compressed body.
            (&[("content-encoding", "gzip")], "Content-Encoding"),
            (
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-encoding", "gzip"),
                ],
                "Content-Encoding",
            ),
        ] {
            let e = content_type(bad).expect_err("refused");
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad:?}");
            assert_eq!(e.param.as_deref(), Some(param), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn kserve_errors_start_with_the_field() {
        let e = shaped(
            ApiError::bad_request("inputs[0].shape", "expected [k, 4]"),
            "/v2/models/m/infer",
        );
        assert_eq!(e.message, "inputs[0].shape: expected [k, 4]");
        assert_eq!(e.shape, ErrorShape::KServe);
        let e = shaped(
            ApiError::bad_request("inputs[0].shape", "expected [k, 4]"),
            "/v1/models/m/infer",
        );
        assert_eq!(e.message, "expected [k, 4]");
        assert_eq!(e.shape, ErrorShape::OpenAi);
    }

    #[test]
    fn element_paths_follow_the_nesting() {
        assert_eq!(element_path(5, &[8]), "data[5]");
        assert_eq!(element_path(5, &[2, 4]), "data[1][1]");
        assert_eq!(element_path(0, &[]), "data[0]");
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
