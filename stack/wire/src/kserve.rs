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

/// The body of every non-2xx answer on a `/v2` route: `{"error": "message"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Human-readable: names the field and what was expected.
    pub error: String,
}

/// Name, datatype and shape of one tensor in [`ModelMetadata`]; `-1` means variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}
