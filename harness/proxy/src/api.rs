//! Toxiproxy's HTTP API over a [`Registry`]: the same paths, JSON fields, status codes
//! and defaults, so Toxiproxy's stock clients drive it.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /proxies` | 200, an object of proxies by name |
//! | `POST /proxies` | 201 with the proxy; 409 name taken; 400 bad field; 500 listen failed |
//! | `POST /populate` | 201 `{"proxies": […]}`; on an error its status with `error` and the proxies done |
//! | `GET /proxies/{p}` | 200 with the proxy and its toxics; 404 |
//! | `POST`/`PATCH /proxies/{p}` | 200 with the proxy (listen, upstream, enabled) |
//! | `DELETE /proxies/{p}` | 204 |
//! | `GET /proxies/{p}/toxics` | 200, a list |
//! | `POST /proxies/{p}/toxics` | 200 with the toxic (as Toxiproxy answers); 409; 400 |
//! | `GET /proxies/{p}/toxics/{t}` | 200; 404 |
//! | `POST`/`PATCH /proxies/{p}/toxics/{t}` | 200 with the toxic |
//! | `DELETE /proxies/{p}/toxics/{t}` | 204 |
//! | `POST /reset` | 204: every proxy enabled, every toxic removed |
//! | `GET /version` | 200 `{"version": "X.Y.Z", "server": "faultline-proxy"}` |
//! | `GET /metrics` | Prometheus text 0.0.4, or OpenMetrics when `Accept` prefers it |
//!
//! Errors are `{"error": message, "status": code}`. As in Toxiproxy, requests whose
//! `User-Agent` starts with `Mozilla/` get 403, so a web page cannot drive the proxy from a
//! browser. With a token ([`ApiConfig::token`]), every request needs
//! `Authorization: Bearer <token>`.

use crate::registry::{ProxySpec, Registry};
use crate::toxic::{self, ApiError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest API request body, bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The version `GET /version` reports: a bare semantic version, as Toxiproxy's (clients
/// parse it); `"server": "faultline-proxy"` says whose.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the API is served.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Clone)]
struct App {
    registry: Arc<Registry>,
    token: Option<Arc<str>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": self.message, "status": self.status}).to_string(),
        )
            .into_response()
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

/// The API's router over `registry`.
pub fn router(registry: Arc<Registry>, config: &ApiConfig) -> Router {
    let app = App {
        registry,
        token: config.token.as_deref().map(Arc::from),
    };
    Router::new()
        .route("/proxies", get(proxy_index).post(proxy_create))
        .route("/populate", post(populate))
        .route(
            "/proxies/{proxy}",
            get(proxy_show)
                .post(proxy_update)
                .patch(proxy_update)
                .delete(proxy_delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxic_index).post(toxic_create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic_show)
                .post(toxic_update)
                .patch(toxic_update)
                .delete(toxic_delete),
        )
        .route("/reset", post(reset))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Refuses browsers (as Toxiproxy does) and, with a token, requests without it.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua.starts_with("Mozilla/") {
        return ApiError {
            status: 403,
            message:
                "User agent not allowed: the API refuses browsers, so a web page cannot drive it"
                    .into(),
        }
        .into_response();
    }
    if let Some(token) = &app.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**token) {
            return ApiError {
                status: 401,
                message: "missing or wrong token: send Authorization: Bearer <token> (the --token the proxy was started with)".into(),
            }
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such route: see the Toxiproxy API (/proxies, /populate, /reset, /version, /metrics)",
    )
}

async fn proxy_index(State(app): State<App>) -> Response {
    json_response(StatusCode::OK, &app.registry.list())
}

async fn proxy_create(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let spec = ProxySpec::from_json(&parse_body(&body)?, None)?;
    let v = app.registry.create(spec)?;
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn populate(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    // Toxiproxy's clients send a list; its config files too. `{"proxies": [...]}` is
    // accepted as well.
    let list = match &v {
        Value::Array(a) => a.clone(),
        Value::Object(o) if o.contains_key("proxies") => match o.get("proxies") {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(ApiError::bad_request(
                    "proxies: expected a list of proxies",
                ))
            }
        },
        _ => {
            return Err(ApiError::bad_request(
                "bad request body: expected a list of proxies [{\"name\", \"listen\", \"upstream\"}, …]",
            ))
        }
    };
    // Every element is checked before any proxy is created.
    let mut specs = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        specs.push(ProxySpec::from_json(p, Some(&format!("proxy {}", i + 1)))?);
    }
    let (done, error) = app.registry.populate(specs);
    Ok(match error {
        None => json_response(StatusCode::CREATED, &json!({"proxies": done})),
        Some(e) => json_response(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"error": e.message, "status": e.status, "proxies": done}),
        ),
    })
}

async fn proxy_show(
    State(app): State<App>,
    Path(proxy): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &app.registry.get(&proxy)?))
}

async fn proxy_update(
    State(app): State<App>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = app.registry.update(&proxy, &parse_body(&body)?)?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn proxy_delete(
    State(app): State<App>,
    Path(proxy): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.registry.delete(&proxy)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxic_index(
    State(app): State<App>,
    Path(proxy): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &app.registry.toxics(&proxy)?))
}

async fn toxic_create(
    State(app): State<App>,
    Path(proxy): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // 404 for an unknown proxy comes before any complaint about the body.
    app.registry.get(&proxy)?;
    let t = toxic::parse_new(&body)?;
    Ok(json_response(
        StatusCode::OK,
        &app.registry.add_toxic(&proxy, t)?,
    ))
}

async fn toxic_show(
    State(app): State<App>,
    Path((proxy, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &app.registry.toxic(&proxy, &name)?,
    ))
}

async fn toxic_update(
    State(app): State<App>,
    Path((proxy, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &app.registry.update_toxic(&proxy, &name, &body)?,
    ))
}

async fn toxic_delete(
    State(app): State<App>,
    Path((proxy, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app.registry.remove_toxic(&proxy, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(app): State<App>) -> Result<StatusCode, ApiError> {
    app.registry.reset()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn version() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!(
            "{}\n",
            json!({"version": VERSION, "server": "faultline-proxy"})
        ),
    )
        .into_response()
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (text, content_type) = app.registry.metrics().encode(accept);
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
}
