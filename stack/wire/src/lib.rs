//! Wire types shared by the reference stack (inference server, trainer) and the faultline
//! harness.
//!
//! Plain serde data, no behaviour. The families:
//!
//! * [`kserve`]: the KServe v2 / Triton JSON inference protocol used for the classifier
//!   (`POST /v2/models/{name}/infer`, `GET /v2/models/{name}`).
//! * [`openai`]: the OpenAI-compatible completions API as vLLM serves it
//!   (`POST /v1/completions`, `GET /v1/models`), including SSE stream chunks.
//! * [`error`]: the error body every non-2xx answer carries,
//!   `{"error":{"message","type","code","param"}}`.
//! * [`trainer`]: the reference trainer's contract: its JSON-line events on stdout
//!   (`EventLine`, `Event`), its control endpoint's `GET /status` body (`Status`) and
//!   `POST /faults` body (`FaultRequest`), and `EccMode`, which the scenario format
//!   re-exports. Feature `schemars` derives `JsonSchema` for `EccMode`.
//!
//! This crate is not a client: it does not know URLs or do I/O.

pub mod error;
pub mod health;
pub mod kserve;
pub mod openai;
pub mod trainer;

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
        assert_eq!(r.params.stream, None);
    }
}
