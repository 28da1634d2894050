//! Wire types shared by the reference inference server and the faultline harness.
//!
//! Plain serde data, no behaviour. Three families:
//!
//! * [`kserve`]: the KServe v2 / Triton JSON inference protocol used for the classifier
//!   (`POST /v2/models/{name}/infer`, `GET /v2/models/{name}`).
//! * [`openai`]: the OpenAI-compatible completions API as vLLM serves it
//!   (`POST /v1/completions`, `GET /v1/models`), including SSE stream chunks.
//! * [`error`]: the error body every non-2xx answer carries,
//!   `{"error":{"message","type","code","param"}}`.
//!
//! This crate is not a client: it does not know URLs or do I/O.

pub mod kserve {
    //! KServe v2 inference protocol (JSON flavour), restricted to what the server speaks:
    //! `FP32` tensors with flat, row-major `data`.

    use serde::{Deserialize, Serialize};

    /// The only tensor datatype the reference server accepts and produces.
    pub const DATATYPE_FP32: &str = "FP32";

    /// `POST /v2/models/{name}/infer` request body.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InferRequest {
        /// Optional client-chosen id, echoed in the response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub id: Option<String>,
        /// Exactly one input tensor for the reference classifier.
        pub inputs: Vec<InferInputTensor>,
    }

    /// One input tensor of an [`InferRequest`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InferInputTensor {
        /// Tensor name; the classifier's metadata calls it `input`, but any name is accepted.
        pub name: String,
        /// `[k, D]` for a batch of `k` samples or `[D]` for one sample.
        pub shape: Vec<i64>,
        /// Must be `"FP32"`.
        pub datatype: String,
        /// Row-major values; its length must equal the product of `shape`.
        pub data: Vec<f32>,
    }

    /// `POST /v2/models/{name}/infer` response body.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InferResponse {
        /// The model that answered.
        pub model_name: String,
        /// Echo of the request id, if one was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub id: Option<String>,
        /// One output tensor, `logits`, shaped `[k, C]` (or `[C]` when the input was `[D]`).
        pub outputs: Vec<InferOutputTensor>,
    }

    /// One output tensor of an [`InferResponse`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InferOutputTensor {
        /// Tensor name (`logits`).
        pub name: String,
        /// Shape of `data`.
        pub shape: Vec<i64>,
        /// Always `"FP32"`.
        pub datatype: String,
        /// Row-major values.
        pub data: Vec<f32>,
    }

    /// `GET /v2/models/{name}` response body.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ModelMetadata {
        /// Model name as routed.
        pub name: String,
        /// Available versions (the server has only `"1"`).
        pub versions: Vec<String>,
        /// Backend description, e.g. `candle_cpu`.
        pub platform: String,
        /// Input tensors; the classifier has one, shaped `[-1, D]` (`-1` = any batch size).
        pub inputs: Vec<TensorMetadata>,
        /// Output tensors; the classifier has one, shaped `[-1, C]`.
        pub outputs: Vec<TensorMetadata>,
    }

    /// Name, datatype and shape of one tensor in [`ModelMetadata`]; `-1` means variable.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct TensorMetadata {
        pub name: String,
        pub datatype: String,
        pub shape: Vec<i64>,
    }
}

pub mod openai {
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
}

pub mod error {
    //! The error body of every non-2xx response.

    use serde::{Deserialize, Serialize};

    /// `{"error": {...}}`, as OpenAI and vLLM answer errors.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ErrorBody {
        pub error: ErrorDetail,
    }

    /// What went wrong and what was expected.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ErrorDetail {
        /// Human-readable: names the field and what was expected.
        pub message: String,
        /// Error class, e.g. `invalid_request_error`, `not_found_error`, `queue_full`,
        /// `service_unavailable`, `payload_too_large`.
        #[serde(rename = "type")]
        pub kind: String,
        /// The HTTP status code, as a number.
        pub code: u16,
        /// The offending request field (JSON path such as `inputs[0].shape`), when one is to blame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub param: Option<String>,
    }
}

pub mod health {
    //! `GET /healthz` and `GET /readyz` bodies.

    use serde::{Deserialize, Serialize};

    /// Health or readiness verdict; `reasons` is empty when `ok`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct HealthStatus {
        /// `"ok"`, `"unhealthy"`, `"draining"` or `"loading"`.
        pub status: String,
        /// One line per failing engine, naming the model and the symptom.
        #[serde(default)]
        pub reasons: Vec<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_uses_openai_field_names() {
        let body = error::ErrorBody {
            error: error::ErrorDetail {
                message: "m".into(),
                kind: "queue_full".into(),
                code: 429,
                param: None,
            },
        };
        let v = serde_json::to_value(&body).expect("serializable");
        assert_eq!(
            v,
            serde_json::json!({"error":{"message":"m","type":"queue_full","code":429}})
        );
    }

    #[test]
    fn kserve_request_parses_the_documented_shape() {
        let r: kserve::InferRequest = serde_json::from_str(
            r#"{"inputs":[{"name":"input","shape":[2,2],"datatype":"FP32","data":[1,2,3,4.5]}]}"#,
        )
        .expect("valid");
        assert_eq!(r.inputs[0].shape, vec![2, 2]);
        assert_eq!(r.inputs[0].data, vec![1.0, 2.0, 3.0, 4.5]);
    }

    #[test]
    fn completion_request_accepts_minimal_body() {
        let r: openai::CompletionRequest =
            serde_json::from_str(r#"{"model":"tiny-lm","prompt":"hi"}"#).expect("valid");
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.stream, None);
    }
}
