//! KServe v2 / Triton JSON protocol: `POST /v2/models/{m}/infer` and metadata.

use super::*;
use axum::routing::{get, post};
use wire::kserve::{self as v2, InferRequest, InferResponse, ModelMetadata, TensorMetadata};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}", get(model_metadata))
}

/// `POST /v{1,2}/models/{name}/infer`.
async fn infer(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(request_label): Extension<RequestLabel>,
    uri: axum::http::Uri,
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
        Err(e) => e
            .with_shape(ErrorShape::for_path(uri.path()))
            .into_response(),
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
    if input.datatype != v2::DATATYPE_FP32 {
        return Err(ApiError::bad_request(
            "inputs[0].datatype",
            format!(
                "expected \"{}\", got \"{}\"",
                v2::DATATYPE_FP32,
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
    let shape = if batched {
        vec![samples as i64, c]
    } else {
        vec![c]
    };
    Ok(InferResponse {
        model_name: name.to_string(),
        id,
        outputs: vec![v2::InferOutputTensor {
            name: "logits".into(),
            shape,
            datatype: v2::DATATYPE_FP32.into(),
            data: logits,
        }],
    })
}

/// `GET /v2/models/{name}`.
async fn model_metadata(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let engine = lookup(&app, &name).map_err(|e| e.with_shape(ErrorShape::KServe))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_validation_names_the_field_and_expectation() {
        let req = |shape: Vec<i64>, datatype: &str, n: usize| InferRequest {
            id: None,
            inputs: vec![v2::InferInputTensor {
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
