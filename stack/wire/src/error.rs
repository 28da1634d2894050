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
