//! Builds the load generator's request templates from the scenario's request mix.
//! `infer` bodies are shaped from the model's KServe v2 metadata, read from the live server.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use loadgen::RequestTemplate;
use rand::{Rng, SeedableRng};
use scenario::RequestSpec;

/// Why a request template could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "workload.requests[{index}]: cannot read metadata of model {model:?} from {url}: {reason}"
    )]
    Metadata {
        index: usize,
        model: String,
        url: String,
        reason: String,
    },
    #[error("workload.requests[{index}]: method {method:?} is not an HTTP method")]
    Method { index: usize, method: String },
    #[error("workload.requests[{index}].headers.{name}: not a valid HTTP header")]
    Header { index: usize, name: String },
}

fn json_header() -> Vec<(HeaderName, HeaderValue)> {
    vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]
}

/// One template per mix entry, in order. `base` is `http://host:port` of one target replica.
pub async fn build(
    specs: &[RequestSpec],
    base: &str,
    seed: u64,
) -> Result<Vec<RequestTemplate>, TemplateError> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        out.push(match spec {
            RequestSpec::Infer { model, weight } => {
                let url = format!("{base}/v2/models/{model}");
                let meta_err = |reason: String| TemplateError::Metadata {
                    index,
                    model: model.clone(),
                    url: url.clone(),
                    reason,
                };
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| meta_err(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(meta_err(format!("HTTP {}", resp.status())));
                }
                let meta: wire::kserve::ModelMetadata =
                    resp.json().await.map_err(|e| meta_err(e.to_string()))?;
                let input = meta
                    .inputs
                    .first()
                    .ok_or_else(|| meta_err("the model declares no input".into()))?;
                let dim = input
                    .shape
                    .last()
                    .copied()
                    .filter(|&d| d > 0)
                    .ok_or_else(|| {
                        meta_err(format!(
                            "input shape {:?} has no fixed last dimension",
                            input.shape
                        ))
                    })?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ index as u64);
                let data: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let body = wire::kserve::InferRequest {
                    id: None,
                    inputs: vec![wire::kserve::InferInputTensor {
                        name: input.name.clone(),
                        shape: vec![1, dim],
                        datatype: input.datatype.clone(),
                        data,
                    }],
                };
                RequestTemplate {
                    name: format!("infer {model}"),
                    method: Method::POST,
                    path: format!("/v1/models/{model}/infer"),
                    headers: json_header(),
                    body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                    streaming: false,
                    weight: *weight,
                }
            }
            RequestSpec::Completion {
                model,
                prompt,
                max_tokens,
                stream,
                weight,
            } => {
                let body = wire::openai::CompletionRequest {
                    model: model.clone(),
                    prompt: wire::openai::Prompt::Text(prompt.clone()),
                    max_tokens: Some(*max_tokens),
                    params: wire::openai::GenerationParams {
                        temperature: Some(0.0),
                        stream: Some(*stream),
                        seed: Some(seed),
                        // Exact token counts for TPOT: a chunk carries the text of one or
                        // more tokens (bytes of one UTF-8 character travel together).
                        stream_options: stream.then(|| wire::openai::StreamOptions {
                            include_usage: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                RequestTemplate {
                    name: format!(
                        "completion {model}{}",
                        if *stream { " (stream)" } else { "" }
                    ),
                    method: Method::POST,
                    path: "/v1/completions".to_owned(),
                    headers: json_header(),
                    body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                    streaming: *stream,
                    weight: *weight,
                }
            }
            RequestSpec::Http {
                method,
                path,
                body,
                headers,
                weight,
            } => RequestTemplate {
                name: format!("{method} {path}"),
                method: Method::from_bytes(method.as_bytes()).map_err(|_| {
                    TemplateError::Method {
                        index,
                        method: method.clone(),
                    }
                })?,
                path: path.clone(),
                headers: {
                    let mut out = if body.is_empty()
                        || headers
                            .keys()
                            .any(|k| k.eq_ignore_ascii_case("content-type"))
                    {
                        vec![]
                    } else {
                        json_header()
                    };
                    for (name, value) in headers {
                        out.push((
                            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                                TemplateError::Header {
                                    index,
                                    name: name.clone(),
                                }
                            })?,
                            HeaderValue::from_str(value).map_err(|_| TemplateError::Header {
                                index,
                                name: name.clone(),
                            })?,
                        ));
                    }
                    out
                },
                body: Bytes::from(body.clone()),
                streaming: false,
                weight: *weight,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn http(body: &str, headers: &[(&str, &str)]) -> RequestSpec {
        RequestSpec::Http {
            method: "POST".into(),
            path: "/v1/x".into(),
            body: body.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            weight: 1.0,
        }
    }

    fn names(t: &RequestTemplate) -> Vec<(String, String)> {
        t.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn http_requests_carry_their_headers_and_a_json_type_only_when_none_is_given() {
        let specs = [
            http("{}", &[("Authorization", "Bearer t"), ("x-trace", "1")]),
            http(
                "a=1",
                &[("content-type", "application/x-www-form-urlencoded")],
            ),
        ];
        let t = build(&specs, "http://127.0.0.1:1", 1).await.expect("built");
        assert_eq!(
            names(&t[0]),
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("authorization".to_owned(), "Bearer t".to_owned()),
                ("x-trace".to_owned(), "1".to_owned()),
            ]
        );
        assert_eq!(
            names(&t[1]),
            [(
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned()
            )]
        );
    }
}
