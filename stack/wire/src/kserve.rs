//! KServe v2 / Triton inference protocol, HTTP/REST flavour.
//!
//! Two request types, one for each side of the wire:
//!
//! * [`InferRequest`]: the flat FP32 request a client builds (faultline's harness sends it).
//! * [`InferenceRequest`]: everything the spec lets a client send, as a server parses it:
//!   `data` flat or nested as the shape ([`TensorData`]), `parameters`, requested
//!   `outputs`, and Triton's binary tensor data extension (`binary_data_size`,
//!   `binary_data_output`, `binary_data`). It is only deserialised: checking it against a
//!   model (shape, datatype, value range) is the server's job.
//!
//! Responses ([`InferResponse`], [`ModelMetadata`], [`ServerMetadata`]) and the error body
//! ([`ErrorResponse`]) are shared. Spec: kserve `docs/predict-api/v2/required_api.md`;
//! binary data: triton `docs/protocol/extension_binary_data.md`.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The only tensor datatype the reference server accepts and produces.
pub const DATATYPE_FP32: &str = "FP32";

/// The HTTP header giving the length of the JSON part of a body that carries binary tensor
/// data after it (Triton's binary tensor data extension).
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// `parameters` of a request, input, output or response: name → string, number or boolean.
pub type Parameters = BTreeMap<String, serde_json::Value>;

/// A flat FP32 `POST /v2/models/{name}/infer` request, as a client builds it.
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

/// A `POST /v2/models/{name}/infer` request as the spec allows it (`$inference_request`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InferenceRequest {
    /// Optional client-chosen id, echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters; `binary_data_output: true` asks for every output as binary data.
    #[serde(default)]
    pub parameters: Parameters,
    /// The input tensors.
    pub inputs: Vec<RequestInput>,
    /// The outputs wanted; absent (or empty) means every output, as JSON unless
    /// `binary_data_output` says otherwise.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input of an [`InferenceRequest`] (`$request_input`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestInput {
    pub name: String,
    /// Dimensions of the whole (batched) tensor.
    pub shape: Vec<i64>,
    pub datatype: String,
    /// `binary_data_size`: the tensor's bytes follow the JSON header instead of `data`.
    #[serde(default)]
    pub parameters: Parameters,
    /// The values as JSON; absent when they are sent as binary data.
    #[serde(default)]
    pub data: Option<TensorData>,
}

/// One requested output of an [`InferenceRequest`] (`$request_output`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    /// `binary_data: true` asks for this output as binary data.
    #[serde(default)]
    pub parameters: Parameters,
}

/// The `data` of a request input as sent: a JSON array, flat or nested.
///
/// Deserialising never fails on the elements' types or on ragged nesting: those are
/// recorded ([`TensorData::non_number`], [`TensorData::nesting`]) so the server can name
/// the tensor and the element in its answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorData {
    /// Every element in row-major order; an element that is not a number is `NaN` here
    /// and recorded in `non_number`.
    pub values: Vec<f64>,
    /// The array lengths at each depth (`[n]` for flat data, `[2, 3]` for
    /// `[[1, 2, 3], [4, 5, 6]]`), or where the nesting stops being rectangular.
    pub nesting: Nesting,
    /// The first element that is not a number: its row-major index and its JSON type.
    pub non_number: Option<(usize, &'static str)>,
}

/// How [`TensorData`] is nested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nesting {
    /// Every array at a depth has the same length, and all scalars are at the last depth.
    Rectangular(Vec<usize>),
    /// The element at this path (e.g. `data[1][0]`) differs from its siblings in kind or
    /// length.
    Ragged(String),
}

impl Default for Nesting {
    fn default() -> Self {
        Nesting::Rectangular(Vec::new())
    }
}

/// What the elements at one depth of a [`TensorData`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Array(usize),
    Scalar,
}

/// The walk state while deserialising a [`TensorData`].
#[derive(Debug, Default)]
struct Walk {
    values: Vec<f64>,
    /// What the elements at each depth are, once one has been read.
    levels: Vec<Option<Level>>,
    /// Index of the element being read at each depth.
    path: Vec<usize>,
    ragged: Option<String>,
    non_number: Option<(usize, &'static str)>,
}

impl Walk {
    /// Records that the element at `depth` is `level`; the first difference is ragged.
    fn see(&mut self, depth: usize, level: Level) {
        if self.levels.len() <= depth {
            self.levels.resize(depth + 1, None);
        }
        match self.levels[depth] {
            None => self.levels[depth] = Some(level),
            Some(seen) if seen == level => {}
            Some(_) => {
                if self.ragged.is_none() {
                    let at: String = self.path[..depth]
                        .iter()
                        .map(|i| format!("[{i}]"))
                        .collect();
                    self.ragged = Some(format!("data{at}"));
                }
            }
        }
    }

    fn scalar(&mut self, depth: usize, value: Option<f64>, kind: &'static str) {
        self.see(depth, Level::Scalar);
        if value.is_none() && self.non_number.is_none() {
            self.non_number = Some((self.values.len(), kind));
        }
        self.values.push(value.unwrap_or(f64::NAN));
    }
}

/// Reads one element (scalar or array) at `depth` into the [`Walk`].
struct Element<'a> {
    walk: &'a mut Walk,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.walk.scalar(self.depth, Some(v), "number");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.walk.scalar(self.depth, None, "boolean");
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.walk.scalar(self.depth, None, "string");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.walk.scalar(self.depth, None, "null");
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.walk.scalar(self.depth, None, "object");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        if self.walk.path.len() <= depth {
            self.walk.path.resize(depth + 1, 0);
        }
        let mut n = 0;
        loop {
            self.walk.path[depth] = n;
            let element = Element {
                walk: &mut *self.walk,
                depth: depth + 1,
            };
            if seq.next_element_seed(element)?.is_none() {
                break;
            }
            n += 1;
        }
        self.walk.see(depth, Level::Array(n));
        Ok(())
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = TensorData;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of tensor elements, flat or nested as the shape")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TensorData, A::Error> {
                let mut walk = Walk::default();
                Element {
                    walk: &mut walk,
                    depth: 0,
                }
                .visit_seq(seq)?;
                let nesting = match walk.ragged {
                    Some(at) => Nesting::Ragged(at),
                    None => Nesting::Rectangular(
                        walk.levels
                            .iter()
                            .map_while(|l| match l {
                                Some(Level::Array(n)) => Some(*n),
                                _ => None,
                            })
                            .collect(),
                    ),
                };
                Ok(TensorData {
                    values: walk.values,
                    nesting,
                    non_number: walk.non_number,
                })
            }
        }
        d.deserialize_seq(Top)
    }
}

/// `POST /v2/models/{name}/infer` response body (`$inference_response`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// The version that answered: the one the model serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Echo of the request id, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// One output tensor, `logits`, shaped `[k, C]` (or `[C]` when the input was `[D]`).
    pub outputs: Vec<InferOutputTensor>,
}

/// One output tensor of an [`InferResponse`] (`$response_output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferOutputTensor {
    /// Tensor name (`logits`).
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<i64>,
    /// Always `"FP32"`.
    pub datatype: String,
    /// `binary_data_size` (bytes) when the values follow the JSON header as binary data.
    #[serde(default, skip_serializing_if = "Parameters::is_empty")]
    pub parameters: Parameters,
    /// Row-major values; absent when sent as binary data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// `GET /v2` response body (`$metadata_server_response`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// Protocol extensions supported, e.g. `binary_tensor_data`.
    pub extensions: Vec<String>,
}

/// `GET /v2/models/{name}` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model name as routed.
    pub name: String,
    /// Versions that may be asked for: the one being served (the server keeps one).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> TensorData {
        serde_json::from_str(json).expect("valid JSON array")
    }

    #[test]
    fn flat_data_has_one_level() {
        let d = data("[1, 2.5, -3]");
        assert_eq!(d.values, vec![1.0, 2.5, -3.0]);
        assert_eq!(d.nesting, Nesting::Rectangular(vec![3]));
        assert_eq!(d.non_number, None);
    }

    #[test]
    fn nested_data_records_each_depth_and_keeps_row_major_order() {
        let d = data("[[1, 2, 3], [4, 5, 6]]");
        assert_eq!(d.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(d.nesting, Nesting::Rectangular(vec![2, 3]));
        let d = data("[[[1], [2]]]");
        assert_eq!(d.nesting, Nesting::Rectangular(vec![1, 2, 1]));
    }

    #[test]
    fn ragged_data_names_the_first_odd_element() {
        assert_eq!(
            data("[[1, 2], [3]]").nesting,
            Nesting::Ragged("data[1]".into())
        );
        assert_eq!(
            data("[[1, 2], 3]").nesting,
            Nesting::Ragged("data[1]".into())
        );
        assert_eq!(data("[1, [2]]").nesting, Nesting::Ragged("data[1]".into()));
        assert_eq!(
            data("[[[1], [2]], [[3], [4, 5]]]").nesting,
            Nesting::Ragged("data[1][1]".into())
        );
    }

    #[test]
    fn non_numbers_are_recorded_not_refused() {
        let d = data(r#"[[1, "x"], [null, true]]"#);
        assert_eq!(d.non_number, Some((1, "string")));
        assert_eq!(d.values.len(), 4);
        assert_eq!(data(r#"[{"a": 1}]"#).non_number, Some((0, "object")));
    }

    #[test]
    fn data_that_is_not_an_array_is_a_parse_error() {
        assert!(serde_json::from_str::<TensorData>("5").is_err());
        assert!(serde_json::from_str::<TensorData>(r#""abc""#).is_err());
    }

    #[test]
    fn inference_request_reads_parameters_and_binary_inputs() {
        let r: InferenceRequest = serde_json::from_str(
            r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32",
                "parameters":{"binary_data_size":12}}],
                "parameters":{"binary_data_output":true}}"#,
        )
        .expect("valid");
        assert_eq!(r.inputs[0].data, None);
        assert_eq!(
            r.inputs[0].parameters["binary_data_size"],
            serde_json::json!(12)
        );
        assert_eq!(r.parameters["binary_data_output"], serde_json::json!(true));
        assert_eq!(r.outputs, None);
    }

    #[test]
    fn binary_output_omits_data_and_json_output_omits_parameters() {
        let t = |parameters: Parameters, data| InferOutputTensor {
            name: "logits".into(),
            shape: vec![1, 2],
            datatype: DATATYPE_FP32.into(),
            parameters,
            data,
        };
        let json = serde_json::to_value(t(Parameters::new(), Some(vec![1.0, 2.0]))).expect("ok");
        assert_eq!(
            json,
            serde_json::json!({"name":"logits","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]})
        );
        let bin = serde_json::to_value(t(
            Parameters::from([("binary_data_size".into(), 8.into())]),
            None,
        ))
        .expect("ok");
        assert_eq!(
            bin,
            serde_json::json!({"name":"logits","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}})
        );
    }
}
