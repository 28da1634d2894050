//! Toxiproxy's HTTP API, as its clients call it: paths, JSON fields, status codes,
//! defaults and error shapes.

mod common;

use common::{echo_server, Api};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn proxies_are_created_listed_shown_updated_and_deleted_with_toxiproxys_codes() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    let (s, v) = api
        .call(
            "POST",
            "/proxies",
            Some(&format!(
                r#"{{"name":"db","listen":"127.0.0.1:0","upstream":"{up}"}}"#
            )),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["name"], "db");
    assert_eq!(v["enabled"], true, "enabled defaults to true");
    assert_eq!(v["toxics"], json!([]));
    assert_ne!(v["listen"], "127.0.0.1:0", "port 0 is resolved: {v}");

    let (s, v) = api
        .call(
            "POST",
            "/proxies",
            Some(&format!(r#"{{"name":"db","upstream":"{up}"}}"#)),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["status"], 409);
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("already exists"));

    let (s, v) = api.call("GET", "/proxies", None).await;
    assert_eq!(s, 200);
    assert!(
        v.is_object() && v["db"]["upstream"] == up.to_string(),
        "an object by name: {v}"
    );

    let (s, v) = api.call("GET", "/proxies/db", None).await;
    assert_eq!((s, v["name"].clone()), (200, json!("db")));

    let (s, v) = api
        .call("POST", "/proxies/db", Some(r#"{"enabled":false}"#))
        .await;
    assert_eq!((s, v["enabled"].clone()), (200, json!(false)));
    let (s, v) = api
        .call("PATCH", "/proxies/db", Some(r#"{"enabled":true}"#))
        .await;
    assert_eq!((s, v["enabled"].clone()), (200, json!(true)));

    let (s, _) = api.call("DELETE", "/proxies/db", None).await;
    assert_eq!(s, 204);
    let (s, v) = api.call("GET", "/proxies/db", None).await;
    assert_eq!(s, 404);
    assert_eq!(v["status"], 404);
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("proxy not found"));
}

#[tokio::test]
async fn populate_answers_201_with_a_proxies_object_and_keeps_unchanged_proxies() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    let body = format!(
        r#"[{{"name":"a","listen":"127.0.0.1:0","upstream":"{up}"}},{{"name":"b","listen":"127.0.0.1:0","upstream":"{up}","enabled":false}}]"#
    );
    let (s, v) = api.call("POST", "/populate", Some(&body)).await;
    assert_eq!(s, 201, "{v}");
    let proxies = v["proxies"]
        .as_array()
        .expect("an object with a proxies list, not a bare list");
    assert_eq!(proxies.len(), 2);
    assert_eq!(proxies[1]["enabled"], false);
    let a_listen = proxies[0]["listen"].clone();
    api.toxic("a", r#"{"type":"latency","attributes":{"latency":5}}"#)
        .await;
    // The same again: "a" is unchanged, so it keeps its address and toxics.
    let (s, v) = api.call("POST", "/populate", Some(&body)).await;
    assert_eq!(s, 201);
    assert_eq!(v["proxies"][0]["listen"], a_listen);
    assert_eq!(v["proxies"][0]["toxics"].as_array().map(Vec::len), Some(1));

    let (s, v) = api
        .call(
            "POST",
            "/populate",
            Some(r#"[{"name":"c","listen":"127.0.0.1:0"}]"#),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("upstream at proxy 1"),
        "{v}"
    );
}

#[tokio::test]
async fn toxics_are_added_shown_updated_and_deleted_with_defaults() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    api.proxy("p", up).await;
    let v = api
        .toxic("p", r#"{"type":"latency","attributes":{"latency":100}}"#)
        .await;
    assert_eq!(
        v,
        json!({"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1.0,
               "attributes":{"latency":100,"jitter":0}})
    );
    let (s, v) = api
        .call(
            "POST",
            "/proxies/p/toxics",
            Some(r#"{"type":"latency","attributes":{"latency":1}}"#),
        )
        .await;
    assert_eq!(s, 409, "same default name: {v}");
    let (s, v) = api.call("GET", "/proxies/p/toxics", None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = api
        .call(
            "PATCH",
            "/proxies/p/toxics/latency_downstream",
            Some(r#"{"attributes":{"latency":250},"toxicity":0.5}"#),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["attributes"]["latency"], 250);
    assert_eq!(v["toxicity"], 0.5);
    let (s, v) = api
        .call("GET", "/proxies/p/toxics/latency_downstream", None)
        .await;
    assert_eq!((s, v["attributes"]["jitter"].clone()), (200, json!(0)));
    let (s, _) = api
        .call("DELETE", "/proxies/p/toxics/latency_downstream", None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = api
        .call("DELETE", "/proxies/p/toxics/latency_downstream", None)
        .await;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("toxic not found"));
}

#[tokio::test]
async fn bad_requests_get_toxiproxys_status_and_name_the_field() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    api.proxy("p", up).await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/proxies",
            Some(r#"{"upstream":"x:1"}"#),
            400,
            "missing required field: name",
        ),
        (
            "POST",
            "/proxies",
            Some(r#"{"name":"q"}"#),
            400,
            "missing required field: upstream",
        ),
        (
            "POST",
            "/proxies",
            Some("not json"),
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            Some(r#"{"type":"nope"}"#),
            400,
            "invalid toxic type",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            Some(r#"{"type":"latency"}"#),
            400,
            "attributes.latency",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            Some(r#"{"type":"bandwidth","attributes":{"rate":-1}}"#),
            400,
            "attributes.rate",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            Some(r#"{"type":"latency","stream":"up","attributes":{"latency":1}}"#),
            400,
            "stream was invalid",
        ),
        (
            "POST",
            "/proxies/nope/toxics",
            Some(r#"{"type":"latency","attributes":{"latency":1}}"#),
            404,
            "proxy not found",
        ),
        (
            "GET",
            "/proxies/p/toxics/nope",
            None,
            404,
            "toxic not found",
        ),
        (
            "POST",
            "/proxies/nope",
            Some(r#"{"enabled":false}"#),
            404,
            "proxy not found",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let (s, v) = api.call(method, path, *body).await;
        assert_eq!(s, *status, "{method} {path} {body:?}: {v}");
        assert_eq!(v["status"], *status, "{v}");
        let msg = v["error"].as_str().expect("an error message");
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
    }
    // A listen address in use: 500, as Toxiproxy answers, naming the address.
    let taken = api.proxy("first", up).await;
    let (s, v) = api
        .call(
            "POST",
            "/proxies",
            Some(&format!(
                r#"{{"name":"second","listen":"{taken}","upstream":"{up}"}}"#
            )),
        )
        .await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains(&taken.to_string()),
        "{v}"
    );
}

#[tokio::test]
async fn reset_reenables_every_proxy_and_removes_every_toxic() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    let addr = api.proxy("p", up).await;
    api.toxic("p", r#"{"type":"timeout","attributes":{"timeout":0}}"#)
        .await;
    let (s, _) = api
        .call("POST", "/proxies/p", Some(r#"{"enabled":false}"#))
        .await;
    assert_eq!(s, 200);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a disabled proxy refuses connections"
    );
    let (s, v) = api.call("POST", "/reset", None).await;
    assert_eq!((s, v), (204, serde_json::Value::Null));
    let (_, v) = api.call("GET", "/proxies/p", None).await;
    assert_eq!(v["enabled"], true);
    assert_eq!(v["toxics"], json!([]));
    assert_eq!(api.registry.toxic_count(), 0);
    let mut c = TcpStream::connect(addr)
        .await
        .expect("enabled again, same address");
    c.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await.expect("echo");
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn version_browsers_tokens_and_unknown_routes() {
    let api = Api::start(1).await;
    let (s, v) = api.call("GET", "/version", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["version"],
        env!("CARGO_PKG_VERSION"),
        "a bare version, as Toxiproxy's"
    );
    assert_eq!(v["server"], "faultline-proxy");
    let r = reqwest::Client::new()
        .get(api.url("/proxies"))
        .header("user-agent", "Mozilla/5.0 (X11)")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 403, "browsers are refused, as in Toxiproxy");
    let (s, v) = api.call("GET", "/nope", None).await;
    assert_eq!((s, v["status"].clone()), (404, json!(404)));

    let locked = Api::start_with(
        1,
        proxy::ApiConfig {
            token: Some("s3cret".into()),
        },
    )
    .await;
    let (s, v) = locked.call("GET", "/proxies", None).await;
    assert_eq!(s, 401, "{v}");
    let r = reqwest::Client::new()
        .get(locked.url("/proxies"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn metrics_count_connections_bytes_and_fired_toxics() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    let addr = api.proxy("m", up).await;
    api.toxic("m", r#"{"type":"latency","attributes":{"latency":1}}"#)
        .await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"hello").await.expect("write");
    let mut got = [0u8; 5];
    c.read_exact(&mut got).await.expect("echo");
    drop(c);
    let text = reqwest::get(api.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        r#"faultline_proxy_connections_total{proxy="m"} 1"#,
        r#"faultline_proxy_received_bytes_total{proxy="m",direction="upstream"} 5"#,
        r#"faultline_proxy_sent_bytes_total{proxy="m",direction="downstream"} 5"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains(r#"faultline_proxy_toxic_fired_total{proxy="m",toxic="latency_downstream",type="latency"}"#),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "the classic format by default");
}

/// Toxiproxy closes the listener before its API answers a disable or a delete; clients
/// (`with proxy.down():` in toxiproxy-python) connect right after and expect a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_disable_or_delete_answers_a_connect_is_always_refused() {
    let api = Api::start(1).await;
    let up = echo_server().await;
    let addr = api.proxy("p", up).await;
    for round in 0..200 {
        let (s, v) = api
            .call("POST", "/proxies/p", Some(r#"{"enabled":false}"#))
            .await;
        assert_eq!(s, 200, "{v}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "round {round}: a connect right after the disable was accepted"
        );
        let (s, _) = api
            .call("POST", "/proxies/p", Some(r#"{"enabled":true}"#))
            .await;
        assert_eq!(s, 200);
    }
    let (s, _) = api.call("DELETE", "/proxies/p", None).await;
    assert_eq!(s, 204);
    assert!(TcpStream::connect(addr).await.is_err(), "deleted");
}
