//! Toxics as the API speaks them: their JSON shape (Toxiproxy's, field for field), the
//! typed form the data path runs, and the validation that names every bad field.
//!
//! Toxiproxy's toxics keep their names and attributes; faultline's own (`blackhole`,
//! `http_error`, `http_abort`) are new `type`s in the same shape. Every count, size and
//! duration has an upper bound ([`limits`]), checked here, where it enters.

use serde::Serialize;
use serde_json::{Map, Value};

/// Upper bounds on what the API accepts.
pub mod limits {
    /// Longest delay any time attribute may ask for (`latency`, `jitter`, `delay`,
    /// `timeout`), milliseconds: one hour.
    pub const MAX_MS: u64 = 3_600_000;
    /// Longest slicer delay between slices, microseconds: one second.
    pub const MAX_SLICER_DELAY_US: u64 = 1_000_000;
    /// Largest slicer slice, bytes.
    pub const MAX_SLICE_BYTES: u64 = 1 << 20;
    /// Highest bandwidth rate, KB/s (1 KB = 1000 bytes): 100 GB/s, far above any link.
    pub const MAX_RATE_KBPS: u64 = 100_000_000;
    /// Largest `limit_data` / `http_abort` byte count: 1 TiB.
    pub const MAX_BYTES: u64 = 1 << 40;
    /// Longest name of a proxy or toxic, bytes.
    pub const MAX_NAME_BYTES: usize = 256;
    /// Most toxics on one proxy (both streams together).
    pub const MAX_TOXICS_PER_PROXY: usize = 64;
    /// Longest `http_error` body, bytes.
    pub const MAX_HTTP_BODY_BYTES: usize = 64 * 1024;
}

/// Which way the bytes a toxic acts on flow, in Toxiproxy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to upstream server (requests).
    Upstream,
    /// Upstream server to client (responses); Toxiproxy's default.
    Downstream,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }
}

/// What a toxic does, with its attributes in their units.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Every chunk (and the close) is delayed by `latency_ms` ± up to `jitter_ms`, order kept.
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// At most `rate_kbps` KB/s (1 KB = 1000 bytes).
    Bandwidth { rate_kbps: u64 },
    /// The close is delayed by `delay_ms`.
    SlowClose { delay_ms: u64 },
    /// No data gets through; the connection is closed `timeout_ms` after the toxic starts,
    /// or held open until the toxic is removed when 0.
    Timeout { timeout_ms: u64 },
    /// The connection is reset (TCP RST) `timeout_ms` after the toxic starts.
    ResetPeer { timeout_ms: u64 },
    /// Data is cut into slices of `average_size` ± `size_variation` bytes, `delay_us`
    /// apart.
    Slicer {
        average_size: u64,
        size_variation: u64,
        delay_us: u64,
    },
    /// The connection is closed once `bytes` have passed.
    LimitData { bytes: u64 },
    /// faultline: data and the close are swallowed, nothing is answered, nothing closes:
    /// only the peer's own timeout reveals it.
    Blackhole,
    /// faultline: chosen HTTP/1.1 requests are answered by the proxy with `status` and
    /// `body` and never reach the server; `count` > 0 limits it to the first `count`
    /// chosen requests.
    HttpError {
        status: u16,
        body: String,
        count: u64,
    },
    /// faultline: chosen HTTP/1.1 responses are cut after their head and `after_bytes` of
    /// body: the connection is closed (reset when `reset`); `count` > 0 limits it to the
    /// first `count` chosen responses.
    HttpAbort {
        after_bytes: u64,
        reset: bool,
        count: u64,
    },
}

/// Every toxic type the API accepts, Toxiproxy's first.
pub const TYPES: [&str; 10] = [
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "blackhole",
    "http_error",
    "http_abort",
];

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Latency { .. } => "latency",
            Self::Bandwidth { .. } => "bandwidth",
            Self::SlowClose { .. } => "slow_close",
            Self::Timeout { .. } => "timeout",
            Self::ResetPeer { .. } => "reset_peer",
            Self::Slicer { .. } => "slicer",
            Self::LimitData { .. } => "limit_data",
            Self::Blackhole => "blackhole",
            Self::HttpError { .. } => "http_error",
            Self::HttpAbort { .. } => "http_abort",
        }
    }

    /// Whether the toxic acts on HTTP messages (both streams of a connection) rather than
    /// on the bytes of its own stream.
    pub fn is_http(&self) -> bool {
        matches!(self, Self::HttpError { .. } | Self::HttpAbort { .. })
    }

    /// The attributes as the API shows them (Toxiproxy's names and units).
    pub fn attributes(&self) -> Value {
        match self {
            Self::Latency {
                latency_ms,
                jitter_ms,
            } => serde_json::json!({"latency": latency_ms, "jitter": jitter_ms}),
            Self::Bandwidth { rate_kbps } => serde_json::json!({"rate": rate_kbps}),
            Self::SlowClose { delay_ms } => serde_json::json!({"delay": delay_ms}),
            Self::Timeout { timeout_ms } | Self::ResetPeer { timeout_ms } => {
                serde_json::json!({"timeout": timeout_ms})
            }
            Self::Slicer {
                average_size,
                size_variation,
                delay_us,
            } => serde_json::json!({
                "average_size": average_size,
                "size_variation": size_variation,
                "delay": delay_us,
            }),
            Self::LimitData { bytes } => serde_json::json!({"bytes": bytes}),
            Self::Blackhole => serde_json::json!({}),
            Self::HttpError {
                status,
                body,
                count,
            } => serde_json::json!({"status": status, "body": body, "count": count}),
            Self::HttpAbort {
                after_bytes,
                reset,
                count,
            } => serde_json::json!({"after_bytes": after_bytes, "reset": reset, "count": count}),
        }
    }
}

/// A toxic on a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Toxic {
    pub name: String,
    pub kind: Kind,
    pub stream: Stream,
    /// Probability in [0, 1] that the toxic acts on a connection (per request or response
    /// for the HTTP toxics). 0 never acts, 1 always does.
    pub toxicity: f32,
}

impl Toxic {
    /// The API's JSON for this toxic (Toxiproxy's shape).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "type": self.kind.type_name(),
            "stream": self.stream.as_str(),
            "toxicity": self.toxicity,
            "attributes": self.kind.attributes(),
        })
    }
}

/// A request the API refuses, with Toxiproxy's status code and a message naming the field
/// and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            message: message.into(),
        }
    }
    /// Toxiproxy answers 500 when a listen address cannot be bound; so do we.
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            message: message.into(),
        }
    }
}

/// Checks a proxy or toxic name: non-empty, bounded, printable, no '/' (it is a path
/// segment of the API).
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "missing required field: {field}"
        )));
    }
    if name.len() > limits::MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field}: {} bytes long; at most {} allowed",
            name.len(),
            limits::MAX_NAME_BYTES
        )));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "{field}: {name:?} contains '/' or a control character; a name is a URL path segment"
        )));
    }
    Ok(())
}

/// Parses a toxic from the body of `POST /proxies/{p}/toxics`, with Toxiproxy's defaults:
/// `stream` downstream, `toxicity` 1, `name` `{type}_{stream}`.
pub fn parse_new(body: &[u8]) -> Result<Toxic, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "bad request body: expected a JSON object {\"type\": …, \"attributes\": {…}}",
        ));
    };
    for key in obj.keys() {
        if !["name", "type", "stream", "toxicity", "attributes"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown field {key:?}; a toxic has name, type, stream, toxicity and attributes"
            )));
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => Stream::Downstream,
        Some(Value::String(s)) if s == "downstream" => Stream::Downstream,
        Some(Value::String(s)) if s == "upstream" => Stream::Upstream,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "stream was invalid, can be either upstream or downstream (got {other})"
            )))
        }
    };
    let type_name = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(format!(
                "missing required field: type (one of {})",
                TYPES.join(", ")
            )))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "type: expected a string, one of {}; got {other}",
                TYPES.join(", ")
            )))
        }
    };
    let toxicity = match obj.get("toxicity") {
        None | Some(Value::Null) => 1.0,
        Some(v) => parse_toxicity(v)?,
    };
    let empty = Map::new();
    let attrs = match obj.get("attributes") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "attributes: expected an object, got {other}"
            )))
        }
    };
    let kind = parse_kind(type_name, attrs, None)?;
    let name = match obj.get("name") {
        None | Some(Value::Null) => format!("{type_name}_{}", stream.as_str()),
        Some(Value::String(n)) => {
            check_name("name", n)?;
            n.clone()
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "name: expected a string, got {other}"
            )))
        }
    };
    Ok(Toxic {
        name,
        kind,
        stream,
        toxicity,
    })
}

/// Applies the body of `PATCH /proxies/{p}/toxics/{t}` (attributes and toxicity; missing
/// ones keep their values, as in Toxiproxy).
pub fn apply_update(toxic: &Toxic, body: &[u8]) -> Result<Toxic, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "bad request body: expected a JSON object {\"attributes\": {…}, \"toxicity\": …}",
        ));
    };
    let mut out = toxic.clone();
    for (key, value) in &obj {
        match key.as_str() {
            "toxicity" => out.toxicity = parse_toxicity(value)?,
            "attributes" => {
                let Value::Object(attrs) = value else {
                    return Err(ApiError::bad_request(format!(
                        "attributes: expected an object, got {value}"
                    )));
                };
                out.kind = parse_kind(toxic.kind.type_name(), attrs, Some(&toxic.kind))?;
            }
            // Toxiproxy's clients send the whole toxic back; unchanged identity is fine.
            "name" if value.as_str() == Some(toxic.name.as_str()) => {}
            "type" if value.as_str() == Some(toxic.kind.type_name()) => {}
            "stream" if value.as_str() == Some(toxic.stream.as_str()) => {}
            "name" | "type" | "stream" => {
                return Err(ApiError::bad_request(format!(
                "{key}: a toxic's {key} cannot change (delete it and add a new one); got {value}"
            )))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field {other:?}; an update has attributes and toxicity"
                )))
            }
        }
    }
    Ok(out)
}

fn parse_toxicity(v: &Value) -> Result<f32, ApiError> {
    match v.as_f64() {
        Some(t) if (0.0..=1.0).contains(&t) => Ok(t as f32),
        _ => Err(ApiError::bad_request(format!(
            "toxicity: expected a number from 0 to 1 (the probability the toxic acts), got {v}"
        ))),
    }
}

/// Reads the attributes of a `type_name` toxic. With `previous`, missing attributes keep
/// the previous values (an update); without, required ones must be present.
fn parse_kind(
    type_name: &str,
    attrs: &Map<String, Value>,
    previous: Option<&Kind>,
) -> Result<Kind, ApiError> {
    let known: &[&str] = match type_name {
        "latency" => &["latency", "jitter"],
        "bandwidth" => &["rate"],
        "slow_close" => &["delay"],
        "timeout" | "reset_peer" => &["timeout"],
        "slicer" => &["average_size", "size_variation", "delay"],
        "limit_data" => &["bytes"],
        "blackhole" => &[],
        "http_error" => &["status", "body", "count"],
        "http_abort" => &["after_bytes", "reset", "count"],
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid toxic type: {other:?}; expected one of {}",
                TYPES.join(", ")
            )))
        }
    };
    for key in attrs.keys() {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "attributes.{key}: not an attribute of a {type_name} toxic (it has {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let prev = previous.map(Kind::attributes);
    // An attribute: given, else the previous value, else the default (None = required).
    let num = |key: &str, default: Option<u64>, max: u64, what: &str| -> Result<u64, ApiError> {
        let v = attrs
            .get(key)
            .or_else(|| prev.as_ref().and_then(|p| p.get(key)));
        let Some(v) = v else {
            return default.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "missing required field: attributes.{key} ({type_name}: {what})"
                ))
            });
        };
        let n = v.as_u64().or_else(|| {
            // Whole floats (500.0) as some clients send them.
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64)
        });
        match n {
            Some(n) if n <= max => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "attributes.{key}: expected an integer from 0 to {max} ({type_name}: {what}), got {v}"
            ))),
        }
    };
    Ok(match type_name {
        "latency" => Kind::Latency {
            latency_ms: num("latency", None, limits::MAX_MS, "delay in milliseconds")?,
            jitter_ms: num("jitter", Some(0), limits::MAX_MS, "± milliseconds around latency")?,
        },
        "bandwidth" => {
            let rate = num("rate", None, limits::MAX_RATE_KBPS, "KB/s, 1 KB = 1000 bytes")?;
            if rate == 0 {
                return Err(ApiError::bad_request(
                    "attributes.rate: expected at least 1 KB/s (to stop data, use a timeout toxic with timeout 0)",
                ));
            }
            Kind::Bandwidth { rate_kbps: rate }
        }
        "slow_close" => Kind::SlowClose {
            delay_ms: num("delay", None, limits::MAX_MS, "milliseconds the close is delayed")?,
        },
        "timeout" => Kind::Timeout {
            timeout_ms: num(
                "timeout",
                None,
                limits::MAX_MS,
                "milliseconds until the connection is closed; 0 holds it until the toxic is removed",
            )?,
        },
        "reset_peer" => Kind::ResetPeer {
            timeout_ms: num("timeout", None, limits::MAX_MS, "milliseconds until the reset")?,
        },
        "slicer" => {
            let average_size = num(
                "average_size",
                None,
                limits::MAX_SLICE_BYTES,
                "bytes per slice",
            )?;
            let size_variation = num(
                "size_variation",
                Some(0),
                limits::MAX_SLICE_BYTES,
                "± bytes around average_size",
            )?;
            if average_size == 0 {
                return Err(ApiError::bad_request(
                    "attributes.average_size: expected at least 1 byte per slice",
                ));
            }
            if size_variation >= average_size {
                return Err(ApiError::bad_request(format!(
                    "attributes.size_variation: {size_variation} must be below average_size ({average_size})"
                )));
            }
            Kind::Slicer {
                average_size,
                size_variation,
                delay_us: num(
                    "delay",
                    Some(0),
                    limits::MAX_SLICER_DELAY_US,
                    "microseconds between slices",
                )?,
            }
        }
        "limit_data" => Kind::LimitData {
            bytes: num("bytes", None, limits::MAX_BYTES, "bytes before the connection is closed")?,
        },
        "blackhole" => Kind::Blackhole,
        "http_error" => {
            let status = num("status", Some(503), 599, "the HTTP status answered")?;
            if status < 200 {
                return Err(ApiError::bad_request(format!(
                    "attributes.status: expected a final status from 200 to 599, got {status}"
                )));
            }
            let body = match attrs
                .get("body")
                .or_else(|| prev.as_ref().and_then(|p| p.get("body")))
            {
                None => "faultline proxy: http_error toxic\n".to_owned(),
                Some(Value::String(s)) if s.len() <= limits::MAX_HTTP_BODY_BYTES => s.clone(),
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "attributes.body: expected a string of at most {} bytes, got {}",
                        limits::MAX_HTTP_BODY_BYTES,
                        truncate(&other.to_string())
                    )))
                }
            };
            Kind::HttpError {
                status: status as u16,
                body,
                count: num("count", Some(0), limits::MAX_BYTES, "how many requests at most; 0 = no limit")?,
            }
        }
        "http_abort" => {
            let reset = match attrs
                .get("reset")
                .or_else(|| prev.as_ref().and_then(|p| p.get("reset")))
            {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "attributes.reset: expected true (TCP reset) or false (close), got {other}"
                    )))
                }
            };
            Kind::HttpAbort {
                after_bytes: num(
                    "after_bytes",
                    Some(0),
                    limits::MAX_BYTES,
                    "body bytes passed before the cut",
                )?,
                reset,
                count: num("count", Some(0), limits::MAX_BYTES, "how many responses at most; 0 = no limit")?,
            }
        }
        _ => unreachable!("type names are checked above"),
    })
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse_new(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn defaults_are_toxiproxys() {
        let t = parse_new(br#"{"type":"latency","attributes":{"latency":100}}"#).expect("valid");
        assert_eq!(t.name, "latency_downstream");
        assert_eq!(t.stream, Stream::Downstream);
        assert_eq!(t.toxicity, 1.0);
        assert_eq!(
            t.kind,
            Kind::Latency {
                latency_ms: 100,
                jitter_ms: 0
            }
        );
        assert_eq!(
            t.to_json(),
            serde_json::json!({"name":"latency_downstream","type":"latency","stream":"downstream",
                "toxicity":1.0,"attributes":{"latency":100,"jitter":0}})
        );
    }

    #[test]
    fn bad_toxics_name_the_field_and_what_was_expected() {
        let e = err(r#"{"type":"latency","attributes":{"latency":-5}}"#);
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("attributes.latency") && e.message.contains("integer"),
            "{}",
            e.message
        );
        let e = err(r#"{"type":"latency","attributes":{}}"#);
        assert!(
            e.message
                .contains("missing required field: attributes.latency"),
            "{}",
            e.message
        );
        let e = err(r#"{"type":"latancy"}"#);
        assert!(
            e.message.contains("invalid toxic type") && e.message.contains("latency, bandwidth"),
            "{}",
            e.message
        );
        let e = err(r#"{"type":"latency","stream":"sideways","attributes":{"latency":1}}"#);
        assert!(e.message.starts_with("stream was invalid"), "{}", e.message);
        let e = err(r#"{"type":"latency","toxicity":1.5,"attributes":{"latency":1}}"#);
        assert!(e.message.starts_with("toxicity:"), "{}", e.message);
        let e = err(r#"{"type":"latency","attributes":{"latency":1,"jiter":2}}"#);
        assert!(
            e.message.contains("attributes.jiter") && e.message.contains("latency, jitter"),
            "{}",
            e.message
        );
        let e = err(r#"{"type":"bandwidth","attributes":{"rate":0}}"#);
        assert!(e.message.contains("attributes.rate"), "{}", e.message);
        let e = err(r#"{"type":"slicer","attributes":{"average_size":10,"size_variation":10}}"#);
        assert!(e.message.contains("size_variation"), "{}", e.message);
        let e = err(r#"{"type":"http_error","attributes":{"status":99}}"#);
        assert!(e.message.contains("attributes.status"), "{}", e.message);
        let e = err(r#"{"type":"latency","name":"a/b","attributes":{"latency":1}}"#);
        assert!(e.message.contains("name"), "{}", e.message);
        let e = err(r#"[1]"#);
        assert!(e.message.starts_with("bad request body"), "{}", e.message);
        let e = err(r#"{"type":"latency","attributes":{"latency":3600001}}"#);
        assert!(e.message.contains("3600000"), "{}", e.message);
    }

    #[test]
    fn whole_floats_are_accepted_as_clients_send_them() {
        let t = parse_new(br#"{"type":"latency","attributes":{"latency":500.0}}"#).expect("valid");
        assert_eq!(t.kind.attributes()["latency"], 500);
        assert!(parse_new(br#"{"type":"latency","attributes":{"latency":0.5}}"#).is_err());
    }

    #[test]
    fn updates_keep_what_they_do_not_name() {
        let t = parse_new(
            br#"{"type":"latency","toxicity":0.5,"attributes":{"latency":100,"jitter":10}}"#,
        )
        .expect("valid");
        let u = apply_update(&t, br#"{"attributes":{"latency":200}}"#).expect("valid");
        assert_eq!(
            u.kind,
            Kind::Latency {
                latency_ms: 200,
                jitter_ms: 10
            }
        );
        assert_eq!(u.toxicity, 0.5);
        let u = apply_update(&t, br#"{"toxicity":0}"#).expect("valid");
        assert_eq!(u.toxicity, 0.0);
        assert!(apply_update(&t, br#"{"type":"bandwidth"}"#).is_err());
        let whole = t.to_json().to_string();
        assert_eq!(
            apply_update(&t, whole.as_bytes()).expect("the whole toxic back"),
            t
        );
    }
}
