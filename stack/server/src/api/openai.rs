//! OpenAI-compatible API: completions (streamed over SSE or not) and the model list.

use super::*;
use axum::routing::{get, post};
use wire::openai::{
    CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse, ModelCard, ModelList,
    Usage, STREAM_DONE,
};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
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
