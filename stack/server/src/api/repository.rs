//! Triton's model repository extension, for swapping versions in without dropping requests:
//!
//! * `POST /v2/repository/index`: every repository model version and every loaded model,
//!   as `[{"name", "version", "state", "reason"}]` (`state` `READY` for the version being
//!   served, `UNAVAILABLE` otherwise).
//! * `POST /v2/repository/models/{name}/load`: loads a version of an already loaded model from
//!   `--model-repository` (body optional; `{"parameters": {"version": "V"}}` picks one, else
//!   the latest by [`crate::repository::latest`]), starts its engine, swaps it in, and lets the
//!   old version's engine finish every request it holds. `200` with an empty body once the new
//!   version serves, as Triton answers.
//!
//! Errors are KServe's `{"error": "..."}`. Loads are one at a time.

use super::*;
use crate::repository::{latest, scan, weights_path};
use axum::routing::post;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{name}/load", post(load))
}

fn kserve_err(status: StatusCode, message: String) -> ApiError {
    ApiError {
        status,
        kind: "repository_error",
        message,
        param: None,
        shape: ErrorShape::KServe,
    }
}

/// One row of the repository index.
#[derive(Debug, serde::Serialize)]
struct IndexEntry {
    name: String,
    version: String,
    state: &'static str,
    reason: String,
}

/// `POST /v2/repository/index`.
async fn index(State(app): State<Arc<AppState>>) -> Result<Json<Vec<IndexEntry>>, ApiError> {
    let mut rows = Vec::new();
    let repo = match app.loader.repository() {
        Some(dir) => scan(dir).map_err(|e| kserve_err(StatusCode::INTERNAL_SERVER_ERROR, e))?,
        None => Vec::new(),
    };
    for m in &repo {
        let served = app.models.get(&m.name).map(Engine::version);
        for v in &m.versions {
            let ready = served.as_deref() == Some(v.as_str());
            rows.push(IndexEntry {
                name: m.name.clone(),
                version: v.clone(),
                state: if ready { "READY" } else { "UNAVAILABLE" },
                reason: if ready {
                    String::new()
                } else {
                    "not loaded".into()
                },
            });
        }
    }
    for (name, e) in &app.models {
        let v = e.version();
        if !rows.iter().any(|r| &r.name == name && r.version == v) {
            rows.push(IndexEntry {
                name: name.clone(),
                version: v,
                state: "READY",
                reason: String::new(),
            });
        }
    }
    Ok(Json(rows))
}

/// `POST /v2/repository/models/{name}/load`.
async fn load(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let bad = |m: String| kserve_err(StatusCode::BAD_REQUEST, m);
    let Some(dir) = app.loader.repository().map(std::path::Path::to_path_buf) else {
        return Err(bad(
            "no model repository: start the server with --model-repository DIR".into(),
        ));
    };
    let engine = app.models.get(&name).ok_or_else(|| {
        bad(format!(
            "model `{name}` is not loaded; a load swaps in another version of a model given with --model (loaded: {})",
            app.models.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let bytes = body.map_err(|r| {
        ApiError::from_body_rejection(r, app.max_body_bytes).with_shape(ErrorShape::KServe)
    })?;
    let wanted = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("body: invalid JSON: {e}")))?;
        match v.pointer("/parameters/version") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(bad(format!(
                    "parameters.version: expected a string, got {other}"
                )))
            }
        }
    };
    let _one_at_a_time = app.loading.lock().await;
    let repo = scan(&dir).map_err(|e| kserve_err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let versions = repo
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.versions.clone())
        .unwrap_or_default();
    let version = match &wanted {
        Some(v) if versions.contains(v) => v.clone(),
        Some(v) => {
            return Err(bad(format!(
                "parameters.version: `{v}` is not in {}; versions there: [{}]",
                dir.join(&name).display(),
                versions.join(", ")
            )))
        }
        None => latest(&versions)
            .ok_or_else(|| {
                bad(format!(
                    "no version of `{name}` in {}: expected {}/VERSION/{}",
                    dir.display(),
                    dir.join(&name).display(),
                    crate::repository::WEIGHTS_FILE
                ))
            })?
            .to_string(),
    };
    let path = weights_path(&dir, &name, &version);
    let loader = app.loader.clone();
    let kind = engine.kind();
    let (n, v) = (name.clone(), version.clone());
    let started =
        tokio::task::spawn_blocking(move || loader.start(&n, kind, Some(&path), Some(&v)))
            .await
            .map_err(|e| kserve_err(StatusCode::INTERNAL_SERVER_ERROR, format!("load task: {e}")))?
            .map_err(|e| bad(format!("loading version `{version}` of `{name}`: {e:#}")))?;
    // The engine thread runs detached: it exits when replaced or at shutdown.
    let (next, _thread) = started;
    match (engine, next) {
        (Engine::Mlp(cur), Engine::Mlp(next)) => {
            if (next.input_dim(), next.num_classes()) != (cur.input_dim(), cur.num_classes()) {
                let msg = format!(
                    "version `{version}` of `{name}` takes {} features and gives {} classes; the served version takes {} and gives {}: a new version must keep the model's interface",
                    next.input_dim(), next.num_classes(), cur.input_dim(), cur.num_classes()
                );
                next.shutdown();
                return Err(bad(msg));
            }
            cur.replace(next);
        }
        (Engine::Lm(cur), Engine::Lm(next)) => cur.replace(next),
        (_, other) => {
            match other {
                Engine::Mlp(e) => e.shutdown(),
                Engine::Lm(e) => e.shutdown(),
            }
            return Err(kserve_err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the loaded engine's kind differs from the served one".into(),
            ));
        }
    }
    tracing::info!(model = %name, %version, "version swapped in");
    Ok(StatusCode::OK)
}
