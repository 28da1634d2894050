//! The OpenAI-compatible API against the real `server` binary: chat completions, the
//! generation parameters (`n`, `stop`, `logprobs`, `echo`, `seed`, `top_p`,
//! `stream_options.include_usage`), UTF-8 assembly of byte tokens, refusals that name the
//! parameter, and the JSON content-type rule.

mod common;

use common::{client, sse_data, ServerProcess};
use serde_json::{json, Value};

async fn post(s: &ServerProcess, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// POSTs a streaming request; returns the parsed `data:` events before `[DONE]`, and
/// whether `[DONE]` ended the stream.
async fn post_stream(s: &ServerProcess, path: &str, body: &Value) -> (Vec<Value>, bool) {
    let r = client()
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("SSE body");
    let data = sse_data(&text);
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let events = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("each event is JSON"))
        .collect();
    (events, done)
}

fn lm() -> ServerProcess {
    ServerProcess::start(&["--model", "tiny-lm=lm"], &[])
}

#[tokio::test]
async fn chat_completion_answers_as_the_assistant_with_usage() {
    let s = lm();
    let body = json!({
        "model": "tiny-lm",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 12,
        "seed": 4
    });
    let (status, r) = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert!(r["id"].as_str().expect("id").starts_with("chatcmpl-"));
    let choice = &r["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 12);
    // The template's bytes: "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n".
    assert_eq!(r["usage"]["prompt_tokens"], 47);
    let (_, again) = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(
        again["choices"][0]["message"], choice["message"],
        "same seed"
    );
}

#[tokio::test]
async fn streamed_chat_opens_with_the_role_and_ends_with_usage_then_done() {
    let s = lm();
    let body = json!({
        "model": "tiny-lm",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 10, "seed": 4, "stream": true,
        "stream_options": {"include_usage": true}
    });
    let (events, done) = post_stream(&s, "/v1/chat/completions", &body).await;
    assert!(done, "stream ends with [DONE]");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let last = events.last().expect("events");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 10);
    let finish: Vec<&Value> = events
        .iter()
        .flat_map(|e| e["choices"].as_array().into_iter().flatten())
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["finish_reason"], "length");
    // The streamed text equals the non-streamed answer's.
    let streamed: String = events
        .iter()
        .flat_map(|e| e["choices"].as_array().into_iter().flatten())
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    plain
        .as_object_mut()
        .expect("object")
        .remove("stream_options");
    let (_, r) = post(&s, "/v1/chat/completions", &plain).await;
    assert_eq!(streamed, r["choices"][0]["message"]["content"]);
}

#[tokio::test]
async fn n_choices_are_seeded_apart_and_all_counted() {
    let s = lm();
    let (status, r) = post(
        &s,
        "/v1/completions",
        &json!({"model": "tiny-lm", "prompt": "Once", "max_tokens": 20, "n": 3,
                "temperature": 1.0, "seed": 11}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let choices = r["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    let indexes: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, vec![0, 1, 2]);
    assert_ne!(
        choices[0]["text"], choices[1]["text"],
        "choices use different seeds"
    );
    assert_eq!(r["usage"]["completion_tokens"], 60);
    assert_eq!(r["usage"]["prompt_tokens"], 4, "the prompt is counted once");
    // Two prompts × n = 2 → four choices, prompt-major.
    let (_, r) = post(
        &s,
        "/v1/completions",
        &json!({"model": "tiny-lm", "prompt": ["ab", "cd"], "max_tokens": 3, "n": 2, "echo": true}),
    )
    .await;
    let texts: Vec<&str> = r["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts.len(), 4);
    assert!(
        texts[0].starts_with("ab") && texts[1].starts_with("ab"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("cd") && texts[3].starts_with("cd"),
        "{texts:?}"
    );
}

#[tokio::test]
async fn a_stop_sequence_ends_the_text_before_it_streamed_or_not() {
    let s = lm();
    let base =
        json!({"model": "tiny-lm", "prompt": "Once upon a time", "max_tokens": 40, "seed": 2});
    let (_, full) = post(&s, "/v1/completions", &base).await;
    let text = full["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    // A stop sequence taken from the unstopped text (greedy: same tokens): the first two
    // ASCII letters in a row after the first three characters.
    let chars: Vec<char> = text.chars().collect();
    let at = (3..chars.len() - 1)
        .find(|&i| chars[i].is_ascii_alphabetic() && chars[i + 1].is_ascii_alphabetic())
        .expect("two ASCII letters in a row");
    let stop: String = chars[at..at + 2].iter().collect();
    let expected = &text[..text.find(&stop).expect("stop occurs")];
    let mut req = base.clone();
    req["stop"] = json!([stop]);
    let (_, r) = post(&s, "/v1/completions", &req).await;
    assert_eq!(r["choices"][0]["text"], expected);
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let used = r["usage"]["completion_tokens"].as_u64().expect("tokens");
    assert!(
        used < 40,
        "generation ended at the stop sequence, used {used}"
    );
    req["stream"] = json!(true);
    let (events, done) = post_stream(&s, "/v1/completions", &req).await;
    assert!(done);
    let streamed: String = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(streamed, expected);
    assert_eq!(
        events.last().expect("events")["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn logprobs_come_per_token_with_the_asked_alternatives() {
    let s = lm();
    let (_, r) = post(
        &s,
        "/v1/completions",
        &json!({"model": "tiny-lm", "prompt": "Once", "max_tokens": 8, "logprobs": 3}),
    )
    .await;
    let lp = &r["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 8);
    for (i, top) in lp["top_logprobs"]
        .as_array()
        .expect("top")
        .iter()
        .enumerate()
    {
        let top = top.as_object().expect("object");
        assert_eq!(top.len(), 3);
        // Greedy decoding picks the most likely token: it heads the alternatives.
        let best = top
            .values()
            .map(|v| v.as_f64().expect("f"))
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().expect("logprob");
        assert!(
            (best - chosen).abs() < 1e-6,
            "greedy token is the most likely"
        );
        assert!(chosen <= 0.0);
    }
    let (_, r) = post(
        &s,
        "/v1/chat/completions",
        &json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 4, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    let content = r["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content");
    assert_eq!(content.len(), 4);
    assert_eq!(content[0]["bytes"].as_array().expect("bytes").len(), 1);
    assert_eq!(content[0]["top_logprobs"].as_array().expect("top").len(), 2);
}

#[tokio::test]
async fn sampled_bytes_reach_clients_as_valid_utf8_with_the_same_text_streamed() {
    // At temperature 2 the untrained byte model emits many bytes ≥ 0x80, most of which do not
    // form UTF-8: they must arrive as U+FFFD or whole characters, never as Latin-1 letters,
    // and the stream must assemble to the same text.
    let s = lm();
    let mut non_ascii = 0;
    for seed in 0..12 {
        let body = json!({"model": "tiny-lm", "prompt": "é", "max_tokens": 48,
                          "temperature": 2.0, "seed": seed, "logprobs": 0});
        let (_, r) = post(&s, "/v1/completions", &body).await;
        let text = r["choices"][0]["text"].as_str().expect("text").to_string();
        let tokens = r["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .expect("tokens")
            .clone();
        non_ascii += tokens
            .iter()
            .filter(|t| t.as_str().is_some_and(|t| t.starts_with("<0x")))
            .count();
        // No byte ≥ 0x80 came through as the Latin-1 character with its code point unless
        // it really was part of that character's UTF-8 encoding.
        for c in text.chars() {
            if ('\u{80}'..='\u{FF}').contains(&c) {
                let mut buf = [0u8; 4];
                let enc = c.encode_utf8(&mut buf);
                assert_eq!(enc.len(), 2, "{c:?} is a real two-byte character");
            }
        }
        let mut streamed_req = body.clone();
        streamed_req["stream"] = json!(true);
        let (events, _) = post_stream(&s, "/v1/completions", &streamed_req).await;
        let streamed: String = events
            .iter()
            .map(|e| e["choices"][0]["text"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(streamed, text, "seed {seed}");
    }
    assert!(
        non_ascii > 20,
        "the test exercised non-ASCII bytes ({non_ascii})"
    );
}

#[tokio::test]
async fn unsupported_and_unknown_parameters_are_refused_by_name() {
    let s = lm();
    let cases = [
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "frobnicate": 1}),
            "frobnicate",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "best_of": 4}),
            "best_of",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "logprobs": 6}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "n": 17}),
            "n",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "stop": ["a","b","c","d","e"]}),
            "stop",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "stop": [""]}),
            "stop[0]",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "top_p": 0}),
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": [300]}),
            "prompt[0]",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "echo": true, "logprobs": 1}),
            "echo",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-lm", "prompt": "x", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}),
            "presence_penalty",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
            "tools",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": []}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}),
            "max_completion_tokens",
        ),
    ];
    for (path, body, param) in cases {
        let (status, r) = post(&s, path, &body).await;
        assert_eq!(status, 400, "{body}: {r}");
        assert_eq!(r["error"]["param"], param, "{body}: {r}");
        assert_eq!(r["error"]["type"], "invalid_request_error");
        assert!(
            r["error"]["message"]
                .as_str()
                .expect("message")
                .contains(param.split('[').next().expect("name")),
            "{r}"
        );
    }
    // Neutral values of parameters the server does not implement are accepted.
    let (status, r) = post(
        &s,
        "/v1/chat/completions",
        &json!({"model": "tiny-lm", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
                "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "user": "u1",
                "tool_choice": "none", "response_format": {"type": "text"}}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
}

#[tokio::test]
async fn bodies_that_are_not_json_get_415() {
    let s = lm();
    let body = r#"{"model":"tiny-lm","prompt":"x","max_tokens":2}"#;
    for (ct, enc) in [
        (Some("text/plain"), None),
        (Some("application/x-www-form-urlencoded"), None),
        (None, None),
        (Some("application/json"), Some("gzip")),
    ] {
        let mut req = client().post(s.url("/v1/completions")).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(enc) = enc {
            req = req.header("content-encoding", enc);
        }
        let r = req.send().await.expect("POST");
        assert_eq!(r.status(), 415, "{ct:?} {enc:?}");
        let v: Value = r.json().await.expect("JSON");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("message")
                .contains("application/json")
                || enc.is_some(),
            "{v}"
        );
    }
    let r = client()
        .post(s.url("/v1/completions"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn one_model_card_by_id_and_404_for_unknown() {
    let s = lm();
    let r: Value = client()
        .get(s.url("/v1/models/tiny-lm"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(r["id"], "tiny-lm");
    assert_eq!(r["object"], "model");
    assert!(r["version"].is_string());
    let r = client()
        .get(s.url("/v1/models/nope"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("JSON");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("nope"));
}
