//! OpenAI-compatible completions and chat completions, as vLLM serves them.
//!
//! Request types keep every field a client may send: the ones the server honours are typed;
//! anything else lands in `extra`, which the server refuses with a 400 naming the field
//! (nothing a client sends is silently ignored).

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Fields not typed in a request, by name.
pub type Extra = BTreeMap<String, serde_json::Value>;

/// A completion prompt: text, several texts, token ids, or several token-id lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The sequences, in order.
    pub fn sequences(&self) -> Vec<&str> {
        match self {
            Stop::One(s) => vec![s.as_str()],
            Stop::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `choices: []` and the request's `usage` before `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The parameters completions and chat completions share. Flattened into both request
/// bodies: its fields are taken out before the rest lands in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// `0` (default) = greedy; `> 0` = seeded sampling from softmax(logits / temperature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, `(0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Choices per prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// `true` = answer as SSE chunks, then `data: [DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Sampling seed; without it the server derives one from its `--seed` and a counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// `POST /v1/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Name of a loaded language model.
    pub model: String,
    /// The byte-level model consumes a text's UTF-8 bytes; token ids must be bytes (0..=255).
    pub prompt: Prompt,
    /// Tokens (bytes) to generate: `1..=server limit`; the server's default is 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Return this many most likely alternatives per token with its log-probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Prefix the prompt to the generated text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Sampling and streaming parameters both endpoints share.
    #[serde(flatten)]
    pub params: GenerationParams,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a completion or of a stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    /// Generated text (a chunk carries the text that became valid UTF-8 since the last).
    pub text: String,
    /// `null` unless the request set `logprobs`.
    pub logprobs: Option<CompletionLogprobs>,
    /// `"length"` (`max_tokens` reached) or `"stop"` (a stop sequence); `null` on
    /// intermediate stream chunks.
    pub finish_reason: Option<String>,
}

/// Legacy completions log-probabilities: parallel arrays, one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobs>>,
    /// Byte offset in the choice's `text` of the character each token belongs to.
    pub text_offset: Vec<usize>,
}

/// `{token: logprob}` in order of probability (a JSON object, ordered as written).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobs(pub Vec<(String, f32)>);

impl Serialize for TopLogprobs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLogprobs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of token → logprob")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, f32>()? {
                    out.push((k, v));
                }
                Ok(TopLogprobs(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Token accounting of a request (tokens are bytes for the byte-level model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
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

/// One SSE `data:` event of a streaming completion; the stream ends with `data: [DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    pub id: String,
    /// Always `"text_completion"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// Only on the last chunk, when `stream_options.include_usage` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The SSE payload that terminates a stream.
pub const STREAM_DONE: &str = "[DONE]";

/// `content` of a chat message: text, or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message; only `{"type": "text", "text": …}` is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    #[serde(default)]
    pub content: Option<ChatContent>,
    /// Optional participant name, shown in the chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; either is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Return each token's log-probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`: this many most likely alternatives per token (0..=20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Sampling and streaming parameters both endpoints share.
    #[serde(flatten)]
    pub params: GenerationParams,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The assistant's message in a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponseMessage {
    /// Always `"assistant"`.
    pub role: String,
    pub content: String,
}

/// One choice of a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

/// Chat log-probabilities: one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// One token's log-probability in a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    /// The token as text: the character for an ASCII byte, `<0xNN>` for any other byte.
    pub token: String,
    pub logprob: f32,
    /// The token's bytes (one, for the byte-level model).
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// One alternative in [`ChatTokenLogprob::top_logprobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// Non-streaming `POST /v1/chat/completions` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    /// Always `"chat.completion"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// What a chat stream chunk adds to a choice's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// `"assistant"` on each choice's first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

/// One SSE `data:` event of a streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `GET /v1/models` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One entry of [`ModelList`], and the body of `GET /v1/models/{id}`.
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
    /// The loaded version of the weights. A faultline extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_accepts_text_texts_and_token_ids() {
        for (json, want) in [
            (r#""hi""#, Prompt::Text("hi".into())),
            (r#"["a","b"]"#, Prompt::Texts(vec!["a".into(), "b".into()])),
            (r#"[104,105]"#, Prompt::Tokens(vec![104, 105])),
            (
                r#"[[104],[105]]"#,
                Prompt::TokenLists(vec![vec![104], vec![105]]),
            ),
        ] {
            assert_eq!(serde_json::from_str::<Prompt>(json).expect(json), want);
        }
    }

    #[test]
    fn unknown_fields_are_kept_for_the_server_to_refuse() {
        let r: CompletionRequest = serde_json::from_str(
            r#"{"model":"m","prompt":"p","best_of":3,"n":2,"temperature":0.5,"stop":"x"}"#,
        )
        .expect("valid");
        assert_eq!(r.extra.keys().collect::<Vec<_>>(), vec!["best_of"]);
        assert_eq!(r.params.n, Some(2));
        assert_eq!(r.params.temperature, Some(0.5));
        assert_eq!(r.params.stop, Some(Stop::One("x".into())));
        let c: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[],"seed":7,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .expect("valid");
        assert!(c.extra.is_empty(), "{:?}", c.extra);
        assert_eq!(c.params.seed, Some(7));
        assert_eq!(
            c.params.stream_options.and_then(|o| o.include_usage),
            Some(true)
        );
    }

    #[test]
    fn top_logprobs_serialise_as_an_object_in_probability_order() {
        let t = TopLogprobs(vec![("b".into(), -0.5), ("a".into(), -1.0)]);
        assert_eq!(
            serde_json::to_string(&t).expect("serializable"),
            r#"{"b":-0.5,"a":-1.0}"#
        );
        let back: TopLogprobs = serde_json::from_str(r#"{"b":-0.5,"a":-1.0}"#).expect("valid");
        assert_eq!(back, t);
    }
}
