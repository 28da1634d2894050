//! OpenAI-compatible completions, as vLLM serves them.

use serde::{Deserialize, Serialize};

/// `POST /v1/completions` request body. Unknown fields are ignored, as vLLM does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Name of a loaded language model.
    pub model: String,
    /// Non-empty prompt text; the byte-level model consumes its UTF-8 bytes.
    pub prompt: String,
    /// Tokens (bytes) to generate: `1..=server limit`; the server's default is 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `0` (default) = greedy; `> 0` = seeded sampling from softmax(logits / temperature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// `true` = answer as SSE chunks, one per token, then `data: [DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling seed; without it the server derives one from its `--seed` and a counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Non-streaming `POST /v1/completions` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    /// Always `"text_completion"`.
    pub object: String,
    /// Unix time, seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

/// One choice of a completion or of a stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    /// Generated text (a chunk carries one token's text).
    pub text: String,
    /// Always `null`: the server does not compute log-probabilities.
    pub logprobs: Option<serde_json::Value>,
    /// `"length"` when `max_tokens` was reached; `null` on intermediate stream chunks.
    pub finish_reason: Option<String>,
}

/// Token accounting of a completion (tokens are bytes for the byte-level model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// One SSE `data:` event of a streaming completion; the stream ends with `data: [DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    pub id: String,
    /// Always `"text_completion"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
}

/// The SSE payload that terminates a stream.
pub const STREAM_DONE: &str = "[DONE]";

/// `GET /v1/models` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One entry of [`ModelList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix time the server loaded the model, seconds.
    pub created: u64,
    pub owned_by: String,
    /// Model kind: `"mlp"` (KServe infer) or `"lm"` (completions). A faultline extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}
