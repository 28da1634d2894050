//! OpenAI-compatible API: `POST /v1/completions` and `POST /v1/chat/completions` (streamed
//! over SSE or not), `GET /v1/models` and `GET /v1/models/{id}`.
//!
//! Both generation endpoints validate their body into one [`Plan`] (the chat endpoint first
//! renders its messages with the documented chat template, [`chat_prompt`]), submit one engine
//! sequence per choice (`n` per prompt, all admitted together or refused together), and read
//! each choice's tokens through a [`crate::text::TextStream`], which assembles bytes into valid
//! UTF-8 and cuts at `stop` sequences. Every parameter OpenAI defines is honoured or refused
//! with a 400 naming it ([`check_extra`]); unknown fields are refused too.

use super::*;
use crate::engine::{GenToken, LmJob, TokenLogprob};
use crate::text::{Emit, TextStream};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use futures_util::stream::{SelectAll, Stream, StreamExt};
use models::sampling::Sampling;
use std::collections::VecDeque;
use std::pin::Pin;
use wire::openai::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatContent, ChatDelta, ChatLogprobs, ChatMessage, ChatResponseMessage,
    ChatTokenLogprob, ChatTopLogprob, CompletionChoice, CompletionChunk, CompletionLogprobs,
    CompletionRequest, CompletionResponse, Extra, GenerationParams, ModelCard, ModelList, Prompt,
    TopLogprobs, Usage, STREAM_DONE,
};

/// Most choices one request may ask for: prompts × `n`.
pub const MAX_CHOICES: u32 = 16;
/// Most `stop` sequences, as OpenAI allows.
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest `stop` sequence, bytes.
pub const MAX_STOP_BYTES: usize = 64;
/// Most alternatives per token for completions' `logprobs`, as OpenAI allows.
pub const MAX_COMPLETION_LOGPROBS: u32 = 5;
/// Most alternatives per token for chat's `top_logprobs`, as OpenAI allows.
pub const MAX_CHAT_TOP_LOGPROBS: u32 = 20;
/// `max_completion_tokens` when a chat request gives none (the byte model has no end token).
pub const DEFAULT_CHAT_MAX_TOKENS: u32 = 64;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/completions", post(generation_route::<false>))
        .route("/v1/chat/completions", post(generation_route::<true>))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
}

fn model_card(app: &AppState, name: &str, e: &Engine) -> ModelCard {
    ModelCard {
        id: name.to_string(),
        object: "model".into(),
        created: app.created_unix_s,
        owned_by: "faultline".into(),
        kind: Some(e.kind().as_str().into()),
        version: Some(e.version().to_string()),
    }
}

/// `GET /v1/models`.
async fn list_models(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: app
            .models
            .iter()
            .map(|(name, e)| model_card(&app, name, e))
            .collect(),
    })
}

/// `GET /v1/models/{id}`.
async fn get_model(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let e = lookup(&app, &id)?;
    Ok(Json(model_card(&app, &id, e)))
}

/// Which endpoint a generation request came through: it decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Completion,
    Chat,
}

/// A validated generation request.
#[derive(Debug)]
struct Plan {
    flavor: Flavor,
    model: String,
    /// Prompt bytes; choices `p * n .. (p + 1) * n` continue prompt `p`.
    prompts: Vec<Vec<u8>>,
    /// Completions with `echo`: each prompt's text, shown before its choices' text.
    echo: Option<Vec<String>>,
    n: u32,
    max_tokens: u32,
    sampling: Sampling,
    seed: u64,
    stops: Vec<Vec<u8>>,
    logprobs: Option<usize>,
    stream: bool,
    include_usage: bool,
}

/// A 400 naming `param`; the message starts with it unless it already names it.
fn bad(param: &str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    if message.contains(param) {
        ApiError::bad_request(param, message)
    } else {
        ApiError::bad_request(param, format!("`{param}`: {message}"))
    }
}

/// Whether `v` is JSON null, `0`, `{}` or `[]`.
fn neutral(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::Object(o) => o.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Refuses every field in `extra` the server does not honour, naming it. OpenAI parameters
/// whose value changes nothing here (a zero penalty, an empty `logit_bias`, no tools) are
/// accepted; any other value is a 400 saying what is supported.
fn check_extra(extra: &Extra, prefix: &str, n: u32) -> Result<(), ApiError> {
    use serde_json::Value;
    for (name, v) in extra {
        let param = format!("{prefix}{name}");
        let ok = match name.as_str() {
            // An end-user id for abuse monitoring: recorded in the request's log line.
            "user" => v.is_string() || v.is_null(),
            "presence_penalty" | "frequency_penalty" | "logit_bias" | "tools" | "functions"
            | "metadata" | "suffix" | "prediction" | "audio" | "web_search_options" => {
                neutral(v)
            }
            "best_of" => v.is_null() || v.as_u64() == Some(u64::from(n)),
            "tool_choice" | "function_call" => {
                v.is_null() || v == "none" || v == "auto"
            }
            "parallel_tool_calls" => v.is_boolean() || v.is_null(),
            "store" => v.is_null() || *v == Value::Bool(false),
            "response_format" => v.is_null() || v.get("type").and_then(Value::as_str) == Some("text"),
            "modalities" => v.is_null() || *v == serde_json::json!(["text"]),
            "service_tier" => v.is_null() || v == "auto" || v == "default",
            _ => {
                return Err(bad(
                    &param,
                    format!("unknown parameter `{param}`; see GET /v1/models and docs/server.md for what this server supports"),
                ))
            }
        };
        if !ok {
            return Err(bad(
                &param,
                format!("`{param}` = {v} is not supported by this server; omit it or send its neutral value (0, null, empty, or none)"),
            ));
        }
    }
    Ok(())
}

fn check_lm(app: &AppState, model: &str) -> Result<(), ApiError> {
    match lookup(app, model)? {
        Engine::Lm(_) => Ok(()),
        Engine::Mlp(_) => Err(bad(
            "model",
            format!("model `{model}` is a classifier: use POST /v2/models/{model}/infer"),
        )),
    }
}

/// Checked common parameters: `(n, sampling, stops, seed, stream, include_usage)`.
type CommonChecked = (u32, Sampling, Vec<Vec<u8>>, u64, bool, bool);

/// The request's number: its id (`cmpl-N`, `chatcmpl-N`) and, without a `seed`, its seed.
type RequestNumber = u64;

fn check_common(
    app: &AppState,
    number: RequestNumber,
    c: GenerationParams,
    max_tokens: u32,
    max_tokens_param: &str,
) -> Result<CommonChecked, ApiError> {
    if max_tokens == 0 || max_tokens > app.max_tokens_limit {
        return Err(bad(
            max_tokens_param,
            format!(
                "expected 1..={} (--max-tokens-limit), got {}",
                app.max_tokens_limit, max_tokens
            ),
        ));
    }
    let n = c.n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(bad("n", format!("expected 1..={MAX_CHOICES}, got {n}")));
    }
    let temperature = c.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || !(0.0..=2.0).contains(&temperature) {
        return Err(bad(
            "temperature",
            format!("expected a number in 0..=2, got {temperature}"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !top_p.is_finite() || top_p <= 0.0 || top_p > 1.0 {
        return Err(bad(
            "top_p",
            format!("expected a number in (0, 1], got {top_p}"),
        ));
    }
    let stops: Vec<Vec<u8>> = match &c.stop {
        None => Vec::new(),
        Some(stop) => {
            let seqs = stop.sequences();
            if seqs.len() > MAX_STOP_SEQUENCES {
                return Err(bad(
                    "stop",
                    format!(
                        "expected at most {MAX_STOP_SEQUENCES} stop sequences, got {}",
                        seqs.len()
                    ),
                ));
            }
            for (i, s) in seqs.iter().enumerate() {
                if s.is_empty() || s.len() > MAX_STOP_BYTES {
                    return Err(bad(
                        &format!("stop[{i}]"),
                        format!(
                            "expected a non-empty string of at most {MAX_STOP_BYTES} bytes, got {} bytes",
                            s.len()
                        ),
                    ));
                }
            }
            seqs.iter().map(|s| s.as_bytes().to_vec()).collect()
        }
    };
    let stream = c.stream.unwrap_or(false);
    let include_usage = match &c.stream_options {
        None => false,
        Some(o) => {
            if !stream {
                return Err(bad(
                    "stream_options",
                    "stream_options is only allowed with stream: true",
                ));
            }
            check_extra(&o.extra, "stream_options.", n)?;
            o.include_usage.unwrap_or(false)
        }
    };
    let sampling = Sampling { temperature, top_p };
    let seed = c
        .seed
        .unwrap_or_else(|| app.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    Ok((n, sampling, stops, seed, stream, include_usage))
}

fn check_prompt_bytes(app: &AppState, param: &str, bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(bad(param, "expected a non-empty prompt"));
    }
    if bytes.len() > app.max_prompt_bytes {
        return Err(bad(
            param,
            format!(
                "prompt is {} bytes; expected at most {} (--max-prompt-bytes)",
                bytes.len(),
                app.max_prompt_bytes
            ),
        ));
    }
    Ok(())
}

fn token_ids_to_bytes(param: &str, ids: &[i64]) -> Result<Vec<u8>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, &t)| {
            u8::try_from(t).map_err(|_| {
                bad(
                    &format!("{param}[{i}]"),
                    format!("token id {t} is outside the byte-level vocabulary 0..=255"),
                )
            })
        })
        .collect()
}

fn plan_completion(
    app: &AppState,
    number: RequestNumber,
    req: CompletionRequest,
) -> Result<Plan, ApiError> {
    check_lm(app, &req.model)?;
    let prompts: Vec<Vec<u8>> = match &req.prompt {
        Prompt::Text(s) => vec![s.as_bytes().to_vec()],
        Prompt::Texts(v) => v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        Prompt::Tokens(ids) => vec![token_ids_to_bytes("prompt", ids)?],
        Prompt::TokenLists(lists) => lists
            .iter()
            .enumerate()
            .map(|(i, ids)| token_ids_to_bytes(&format!("prompt[{i}]"), ids))
            .collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(bad("prompt", "expected at least one prompt"));
    }
    for (i, p) in prompts.iter().enumerate() {
        let param =
            if prompts.len() == 1 && matches!(req.prompt, Prompt::Text(_) | Prompt::Tokens(_)) {
                "prompt".to_string()
            } else {
                format!("prompt[{i}]")
            };
        check_prompt_bytes(app, &param, p)?;
    }
    let n = req.params.n.unwrap_or(1);
    check_extra(&req.extra, "", n)?;
    let choices = prompts.len() as u64 * u64::from(n);
    if choices > u64::from(MAX_CHOICES) {
        return Err(bad(
            "n",
            format!(
                "{} prompts × n = {n} is {choices} choices; expected at most {MAX_CHOICES}",
                prompts.len()
            ),
        ));
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(k) if k <= MAX_COMPLETION_LOGPROBS => Some(k as usize),
        Some(k) => {
            return Err(bad(
                "logprobs",
                format!("expected 0..={MAX_COMPLETION_LOGPROBS}, got {k}"),
            ))
        }
    };
    let echo = req.echo.unwrap_or(false);
    if echo && logprobs.is_some() {
        return Err(bad(
            "echo",
            "echo together with logprobs (log-probabilities of the prompt) is not supported; drop one of them",
        ));
    }
    let (n, sampling, stops, seed, stream, include_usage) = check_common(
        app,
        number,
        req.params,
        req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "max_tokens",
    )?;
    Ok(Plan {
        flavor: Flavor::Completion,
        model: req.model,
        echo: echo.then(|| {
            prompts
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        }),
        prompts,
        n,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        sampling,
        seed,
        stops,
        logprobs,
        stream,
        include_usage,
    })
}

/// The chat template of the byte-level model: each message as
/// `<|ROLE|>\nCONTENT\n` (`<|ROLE:NAME|>` when the message has a `name`), then
/// `<|assistant|>\n`, after which the model writes the answer. Text parts of a multi-part
/// content are joined with `\n`.
pub fn chat_prompt(messages: &[ChatMessage]) -> Result<Vec<u8>, ApiError> {
    if messages.is_empty() {
        return Err(bad("messages", "expected at least one message"));
    }
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        match m.role.as_str() {
            "system" | "developer" | "user" | "assistant" => {}
            other => {
                return Err(bad(
                    &format!("{at}.role"),
                    format!("role `{other}` is not supported; expected system, developer, user or assistant"),
                ))
            }
        }
        for (name, v) in &m.extra {
            if !neutral(v) {
                return Err(bad(
                    &format!("{at}.{name}"),
                    format!("`{name}` on a message is not supported (this model has no tools)"),
                ));
            }
        }
        let content = match &m.content {
            None => String::new(),
            Some(ChatContent::Text(t)) => t.clone(),
            Some(ChatContent::Parts(parts)) => {
                let mut texts = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) if p.extra.is_empty() => texts.push(t.as_str()),
                        ("text", _) => {
                            return Err(bad(&pat, "expected {\"type\": \"text\", \"text\": \"…\"}"))
                        }
                        (other, _) => {
                            return Err(bad(
                                &format!("{pat}.type"),
                                format!(
                                    "content part type `{other}` is not supported; expected text"
                                ),
                            ))
                        }
                    }
                }
                texts.join("\n")
            }
        };
        match &m.name {
            Some(name) => out.push_str(&format!("<|{}:{name}|>\n{content}\n", m.role)),
            None => out.push_str(&format!("<|{}|>\n{content}\n", m.role)),
        }
    }
    out.push_str("<|assistant|>\n");
    Ok(out.into_bytes())
}

fn plan_chat(
    app: &AppState,
    number: RequestNumber,
    req: ChatCompletionRequest,
) -> Result<Plan, ApiError> {
    check_lm(app, &req.model)?;
    let prompt = chat_prompt(&req.messages)?;
    check_prompt_bytes(app, "messages", &prompt)?;
    check_extra(&req.extra, "", req.params.n.unwrap_or(1))?;
    let (max_tokens, param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => (m, "max_completion_tokens"),
        (None, Some(m)) => (m, "max_tokens"),
        (None, None) => (
            DEFAULT_CHAT_MAX_TOKENS.min(app.max_tokens_limit),
            "max_completion_tokens",
        ),
    };
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (false, None) => None,
        (false, Some(_)) => return Err(bad("top_logprobs", "top_logprobs needs logprobs: true")),
        (true, k) => {
            let k = k.unwrap_or(0);
            if k > MAX_CHAT_TOP_LOGPROBS {
                return Err(bad(
                    "top_logprobs",
                    format!("expected 0..={MAX_CHAT_TOP_LOGPROBS}, got {k}"),
                ));
            }
            Some(k as usize)
        }
    };
    let (n, sampling, stops, seed, stream, include_usage) =
        check_common(app, number, req.params, max_tokens, param)?;
    Ok(Plan {
        flavor: Flavor::Chat,
        model: req.model,
        prompts: vec![prompt],
        echo: None,
        n,
        max_tokens,
        sampling,
        seed,
        stops,
        logprobs,
        stream,
        include_usage,
    })
}

/// `POST /v1/completions` (`CHAT = false`) and `POST /v1/chat/completions` (`CHAT = true`).
async fn generation_route<const CHAT: bool>(
    State(app): State<Arc<AppState>>,
    Extension(request_label): Extension<RequestLabel>,
    Extension(Deadline(deadline)): Extension<Deadline>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ctx = GenCtx {
        arrived: Instant::now(),
        deadline,
        in_flight: app.enter(),
        request_label: &request_label,
    };
    let flavor = if CHAT {
        Flavor::Chat
    } else {
        Flavor::Completion
    };
    generate(&app, ctx, &headers, body, flavor).await
}

/// What a generation handler carries besides its body.
struct GenCtx<'a> {
    arrived: Instant,
    deadline: tokio::time::Instant,
    in_flight: InFlight,
    request_label: &'a RequestLabel,
}

/// Runs one generation request and counts it once in `faultline_requests_total`.
async fn generate(
    app: &Arc<AppState>,
    ctx: GenCtx<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    flavor: Flavor,
) -> Response {
    let mut label = UNKNOWN_MODEL_LABEL.to_string();
    ctx.request_label.set(&label);
    let result = generate_inner(app, ctx, headers, body, flavor, &mut label).await;
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

async fn generate_inner(
    app: &Arc<AppState>,
    ctx: GenCtx<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    flavor: Flavor,
    label: &mut String,
) -> Result<Response, ApiError> {
    if app.draining.load(Ordering::Acquire) {
        app.metrics.request_shed(UNKNOWN_MODEL_LABEL, "draining");
        return Err(ApiError::draining());
    }
    require_json(headers)?;
    let number = app.next_id();
    let plan = match flavor {
        Flavor::Completion => {
            let req: CompletionRequest = parse_json(body, app.max_body_bytes)?;
            *label = label_for(app, &req.model);
            ctx.request_label.set(label);
            plan_completion(app, number, req)?
        }
        Flavor::Chat => {
            let req: ChatCompletionRequest = parse_json(body, app.max_body_bytes)?;
            *label = label_for(app, &req.model);
            ctx.request_label.set(label);
            plan_chat(app, number, req)?
        }
    };
    let Some(Engine::Lm(engine)) = app.models.get(&plan.model) else {
        return Err(ApiError::not_found(format!(
            "model `{}` is not loaded",
            plan.model
        )));
    };
    let mut jobs = Vec::new();
    let mut choices = Vec::new();
    for (p, prompt) in plan.prompts.iter().enumerate() {
        for j in 0..plan.n {
            let index = p as u32 * plan.n + j;
            let (tx, rx) = mpsc::unbounded_channel();
            jobs.push(LmJob {
                prompt: prompt.clone(),
                max_tokens: plan.max_tokens as usize,
                sampling: plan.sampling,
                seed: plan.seed.wrapping_add(u64::from(index)),
                logprobs: plan.logprobs,
                stops: plan.stops.clone(),
                tokens: tx,
                arrived: ctx.arrived,
            });
            let echo = plan
                .echo
                .as_ref()
                .and_then(|e| e.get(p))
                .cloned()
                .unwrap_or_default();
            choices.push(ChoiceGen {
                index,
                rx,
                text: TextStream::new(plan.stops.clone()),
                pending: VecDeque::new(),
                received: 0,
                max_tokens: plan.max_tokens,
                shown: echo.len(),
                echo,
                deadline: ctx.deadline,
                timeout: app.request_timeout,
                model: plan.model.clone(),
                done: false,
            });
        }
    }
    engine
        .submit(jobs)
        .map_err(|e| ApiError::from_submit(e, &plan.model, ModelKind::Lm, &app.metrics))?;
    let id = match plan.flavor {
        Flavor::Completion => format!("cmpl-{number}"),
        Flavor::Chat => format!("chatcmpl-{number}"),
    };
    let head = Head {
        flavor: plan.flavor,
        id,
        created: unix_now_s(),
        model: plan.model.clone(),
        want_logprobs: plan.logprobs.is_some(),
        prompt_tokens: plan.prompts.iter().map(|p| p.len() as u32).sum(),
    };
    if plan.stream {
        return Ok(stream_response(
            head,
            choices,
            plan.include_usage,
            app,
            ctx.in_flight,
        ));
    }
    collect_response(head, choices).await
}

/// One choice being generated: its token channel and text assembly.
struct ChoiceGen {
    index: u32,
    rx: mpsc::UnboundedReceiver<GenToken>,
    text: TextStream,
    /// Tokens pushed into `text` and not yet shown, with their log-probabilities.
    pending: VecDeque<(u8, Option<TokenLogprob>)>,
    received: u32,
    max_tokens: u32,
    /// Completions with `echo`: the prompt, shown first.
    echo: String,
    /// Bytes of text this choice has shown (the echo included), for `text_offset`.
    shown: usize,
    deadline: tokio::time::Instant,
    /// `--request-timeout-s` and the model, for the error a failed choice shows.
    timeout: Duration,
    model: String,
    done: bool,
}

/// A token shown in a delta, with its log-probability and where its character starts in
/// the choice's whole text.
struct ShownToken {
    byte: u8,
    logprob: TokenLogprob,
    offset: usize,
}

/// What one choice produced next.
enum ChoiceEvent {
    Delta {
        index: u32,
        text: String,
        tokens: u32,
        logprobs: Vec<ShownToken>,
        finish: Option<&'static str>,
    },
    /// The choice cannot finish: the error to answer with and the metric reason.
    Failed(ApiError, &'static str),
}

impl ChoiceGen {
    async fn next(&mut self) -> Option<ChoiceEvent> {
        if self.done {
            return None;
        }
        loop {
            match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Ok(Some(tok)) => {
                    self.received += 1;
                    let byte = u8::try_from(tok.id).unwrap_or(u8::MAX);
                    self.pending.push_back((byte, tok.logprob));
                    let mut emit = self.text.push(byte);
                    let finish = if self.text.stopped() {
                        Some("stop")
                    } else if self.received >= self.max_tokens {
                        emit.append(self.text.finish());
                        Some("length")
                    } else {
                        None
                    };
                    if emit.tokens() == 0 && finish.is_none() {
                        continue;
                    }
                    if finish.is_some() {
                        self.done = true;
                        self.rx.close();
                    }
                    return Some(self.delta(emit, finish));
                }
                Ok(None) => {
                    self.done = true;
                    return Some(ChoiceEvent::Failed(
                        ApiError::unavailable(format!(
                            "model `{}`: engine stopped after {} of {} tokens",
                            self.model, self.received, self.max_tokens
                        )),
                        "engine_stopped",
                    ));
                }
                Err(_) => {
                    // Closing the channel stops generation at the engine's next step.
                    self.done = true;
                    self.rx.close();
                    return Some(ChoiceEvent::Failed(
                        ApiError::deadline_passed(self.timeout),
                        "deadline",
                    ));
                }
            }
        }
    }

    fn delta(&mut self, emit: Emit, finish: Option<&'static str>) -> ChoiceEvent {
        let base = self.shown;
        let shown_len = emit.text.len();
        let mut logprobs = Vec::new();
        for &offset in &emit.offsets {
            let Some((byte, lp)) = self.pending.pop_front() else {
                break;
            };
            // Stop-sequence bytes sit at the end of the text and show nothing.
            if offset < shown_len {
                if let Some(logprob) = lp {
                    logprobs.push(ShownToken {
                        byte,
                        logprob,
                        offset: base + offset,
                    });
                }
            }
        }
        self.shown += shown_len;
        ChoiceEvent::Delta {
            index: self.index,
            text: emit.text,
            tokens: emit.offsets.len() as u32,
            logprobs,
            finish,
        }
    }

    fn events(self) -> Pin<Box<dyn Stream<Item = ChoiceEvent> + Send>> {
        Box::pin(futures_util::stream::unfold(self, |mut c| async move {
            let e = c.next().await?;
            Some((e, c))
        }))
    }
}

/// The token as text: the character for an ASCII byte, `<0xNN>` for any other byte (which
/// is only part of a character).
fn token_string(byte: u8) -> String {
    if byte.is_ascii() {
        char::from(byte).to_string()
    } else {
        format!("<0x{byte:02X}>")
    }
}

/// What every answer to one request repeats.
struct Head {
    flavor: Flavor,
    id: String,
    created: u64,
    model: String,
    want_logprobs: bool,
    prompt_tokens: u32,
}

impl Head {
    fn usage(&self, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }

    fn completion_logprobs(&self, shown: &[ShownToken]) -> Option<CompletionLogprobs> {
        self.want_logprobs.then(|| {
            let mut lp = CompletionLogprobs::default();
            for t in shown {
                lp.tokens.push(token_string(t.byte));
                lp.token_logprobs.push(Some(t.logprob.logprob));
                lp.top_logprobs.push(Some(TopLogprobs(
                    t.logprob
                        .top
                        .iter()
                        .map(|&(id, l)| (token_string(u8::try_from(id).unwrap_or(u8::MAX)), l))
                        .collect(),
                )));
                lp.text_offset.push(t.offset);
            }
            lp
        })
    }

    fn chat_logprobs(&self, shown: &[ShownToken]) -> Option<ChatLogprobs> {
        self.want_logprobs.then(|| ChatLogprobs {
            content: shown
                .iter()
                .map(|t| ChatTokenLogprob {
                    token: token_string(t.byte),
                    logprob: t.logprob.logprob,
                    bytes: vec![t.byte],
                    top_logprobs: t
                        .logprob
                        .top
                        .iter()
                        .map(|&(id, l)| {
                            let b = u8::try_from(id).unwrap_or(u8::MAX);
                            ChatTopLogprob {
                                token: token_string(b),
                                logprob: l,
                                bytes: vec![b],
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// A completions stream chunk.
    fn completion_chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Event {
        sse_json(&CompletionChunk {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    /// A chat stream chunk.
    fn chat_chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        sse_json(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    /// One stream chunk for one choice.
    fn chunk(&self, index: u32, text: String, shown: &[ShownToken], finish: Option<&str>) -> Event {
        let finish_reason = finish.map(str::to_string);
        match self.flavor {
            Flavor::Completion => self.completion_chunk(
                vec![CompletionChoice {
                    index,
                    text,
                    logprobs: self.completion_logprobs(shown),
                    finish_reason,
                }],
                None,
            ),
            Flavor::Chat => self.chat_chunk(
                vec![ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: None,
                        content: (!text.is_empty()).then_some(text),
                    },
                    logprobs: self.chat_logprobs(shown),
                    finish_reason,
                }],
                None,
            ),
        }
    }

    /// A chat stream's first chunk for a choice: the assistant role; or a completion's echo.
    fn opening(&self, index: u32, echo: &str) -> Option<Event> {
        match self.flavor {
            Flavor::Chat => Some(self.chat_chunk(
                vec![ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: Some("assistant".into()),
                        content: Some(String::new()),
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            )),
            Flavor::Completion if !echo.is_empty() => {
                Some(self.chunk(index, echo.to_string(), &[], None))
            }
            Flavor::Completion => None,
        }
    }

    /// The last chunk before `[DONE]` with `stream_options.include_usage`: no choices.
    fn usage_chunk(&self, completion_tokens: u32) -> Event {
        let usage = Some(self.usage(completion_tokens));
        match self.flavor {
            Flavor::Completion => self.completion_chunk(vec![], usage),
            Flavor::Chat => self.chat_chunk(vec![], usage),
        }
    }
}

/// An SSE `data:` event holding `value` as JSON (a comment if it cannot be encoded).
fn sse_json<T: serde::Serialize>(value: &T) -> Event {
    Event::default()
        .json_data(value)
        .unwrap_or_else(|e| Event::default().comment(format!("encode error: {e}")))
}

/// Every choice's events, merged as they come.
type Merged = SelectAll<Pin<Box<dyn Stream<Item = ChoiceEvent> + Send>>>;

/// A non-streamed answer: every choice run to its end.
async fn collect_response(head: Head, choices: Vec<ChoiceGen>) -> Result<Response, ApiError> {
    struct Acc {
        text: String,
        shown: Vec<ShownToken>,
        finish: Option<&'static str>,
    }
    let mut acc: Vec<Acc> = choices
        .iter()
        .map(|c| Acc {
            text: c.echo.clone(),
            shown: Vec::new(),
            finish: None,
        })
        .collect();
    let mut merged: Merged =
        futures_util::stream::select_all(choices.into_iter().map(ChoiceGen::events));
    let mut completion_tokens = 0u32;
    while let Some(event) = merged.next().await {
        match event {
            ChoiceEvent::Delta {
                index,
                text,
                tokens,
                logprobs,
                finish,
            } => {
                completion_tokens += tokens;
                if let Some(a) = acc.get_mut(index as usize) {
                    a.text.push_str(&text);
                    a.shown.extend(logprobs);
                    a.finish = finish.or(a.finish);
                }
            }
            ChoiceEvent::Failed(err, _) => return Err(err),
        }
    }
    let usage = head.usage(completion_tokens);
    let response = match head.flavor {
        Flavor::Completion => Json(CompletionResponse {
            id: head.id.clone(),
            object: "text_completion".into(),
            created: head.created,
            model: head.model.clone(),
            choices: acc
                .iter()
                .enumerate()
                .map(|(i, a)| CompletionChoice {
                    index: i as u32,
                    text: a.text.clone(),
                    logprobs: head.completion_logprobs(&a.shown),
                    finish_reason: a.finish.map(str::to_string),
                })
                .collect(),
            usage,
        })
        .into_response(),
        Flavor::Chat => Json(ChatCompletionResponse {
            id: head.id.clone(),
            object: "chat.completion".into(),
            created: head.created,
            model: head.model.clone(),
            choices: acc
                .iter()
                .enumerate()
                .map(|(i, a)| ChatChoice {
                    index: i as u32,
                    message: ChatResponseMessage {
                        role: "assistant".into(),
                        content: a.text.clone(),
                    },
                    logprobs: head.chat_logprobs(&a.shown),
                    finish_reason: a.finish.map(str::to_string),
                })
                .collect(),
            usage,
        })
        .into_response(),
    };
    Ok(response)
}

/// One SSE stream's state. Dropped before `finished` means the client went away.
struct StreamState {
    head: Head,
    merged: Merged,
    /// Events ready to send, in order.
    queue: VecDeque<Event>,
    include_usage: bool,
    completion_tokens: u32,
    /// `[DONE]` is queued: nothing more is generated.
    finished: bool,
    metrics: Arc<Metrics>,
    _in_flight: InFlight,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics
                .stream_ended_early(&self.head.model, "client_gone");
        }
    }
}

/// SSE: chunks as text becomes valid UTF-8 (one per token, mostly), then `data: [DONE]`.
/// If the engine stops early or the deadline passes, a `data: {"error":…}` event precedes
/// `[DONE]`, as vLLM does.
fn stream_response(
    head: Head,
    choices: Vec<ChoiceGen>,
    include_usage: bool,
    app: &Arc<AppState>,
    in_flight: InFlight,
) -> Response {
    let queue: VecDeque<Event> = choices
        .iter()
        .filter_map(|c| head.opening(c.index, &c.echo))
        .collect();
    let state = StreamState {
        head,
        merged: futures_util::stream::select_all(choices.into_iter().map(ChoiceGen::events)),
        queue,
        include_usage,
        completion_tokens: 0,
        finished: false,
        metrics: app.metrics.clone(),
        _in_flight: in_flight,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.queue.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(e), s));
            }
            if s.finished {
                return None;
            }
            match s.merged.next().await {
                Some(ChoiceEvent::Delta {
                    index,
                    text,
                    tokens,
                    logprobs,
                    finish,
                }) => {
                    s.completion_tokens += tokens;
                    let chunk = s.head.chunk(index, text, &logprobs, finish);
                    s.queue.push_back(chunk);
                }
                Some(ChoiceEvent::Failed(err, reason)) => {
                    s.metrics.stream_ended_early(&s.head.model, reason);
                    s.queue.push_back(sse_json(&err.body()));
                    s.queue.push_back(Event::default().data(STREAM_DONE));
                    // Dropping the other choices closes their channels: the engine stops them.
                    s.merged = futures_util::stream::select_all(Vec::new());
                    s.finished = true;
                }
                None => {
                    if s.include_usage {
                        let chunk = s.head.usage_chunk(s.completion_tokens);
                        s.queue.push_back(chunk);
                    }
                    s.queue.push_back(Event::default().data(STREAM_DONE));
                    s.finished = true;
                }
            }
        }
    });
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Some(ChatContent::Text(content.into())),
            name: None,
            extra: Extra::new(),
        }
    }

    #[test]
    fn chat_template_renders_roles_then_the_assistant_cue() {
        let p = chat_prompt(&[msg("system", "Be brief."), msg("user", "Hi")]).expect("valid");
        assert_eq!(
            String::from_utf8(p).expect("utf8"),
            "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
        );
    }

    #[test]
    fn chat_template_refuses_what_it_cannot_render() {
        let mut tool = msg("tool", "x");
        let e = chat_prompt(&[tool.clone()]).expect_err("tool role");
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        tool.role = "user".into();
        tool.content = Some(ChatContent::Parts(vec![wire::openai::ContentPart {
            kind: "image_url".into(),
            text: None,
            extra: Extra::new(),
        }]));
        let e = chat_prompt(&[tool]).expect_err("image part");
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        assert!(chat_prompt(&[]).is_err());
    }

    #[test]
    fn neutral_values_of_unsupported_parameters_pass_and_others_are_named() {
        let extra = |k: &str, v: serde_json::Value| Extra::from([(k.to_string(), v)]);
        for ok in [
            extra("presence_penalty", serde_json::json!(0)),
            extra("logit_bias", serde_json::json!({})),
            extra("user", serde_json::json!("alice")),
            extra("tool_choice", serde_json::json!("none")),
            extra("best_of", serde_json::json!(1)),
        ] {
            check_extra(&ok, "", 1).expect("neutral");
        }
        for (bad_extra, param) in [
            (
                extra("presence_penalty", serde_json::json!(0.5)),
                "presence_penalty",
            ),
            (extra("best_of", serde_json::json!(3)), "best_of"),
            (extra("frobnicate", serde_json::json!(true)), "frobnicate"),
        ] {
            let e = check_extra(&bad_extra, "", 1).expect_err(param);
            assert_eq!(e.param.as_deref(), Some(param));
            assert!(e.message.contains(param), "{}", e.message);
        }
    }

    #[test]
    fn non_ascii_byte_tokens_are_shown_as_hex() {
        assert_eq!(token_string(b'a'), "a");
        assert_eq!(token_string(0xC3), "<0xC3>");
    }
}
