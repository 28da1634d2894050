//! The reference stack end to end, outside any scenario: weights the trainer publishes are
//! served by the inference server.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{drain, first_line, Reaped};

#[test]
fn weights_published_by_the_trainer_are_served_by_the_server() {
    let bin = common::bin_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let rendezvous = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let _coordinator = Reaped(
        Command::new(bin.join("trainer"))
            .args([
                "rendezvous",
                "--listen",
                &rendezvous.to_string(),
                "--max-workers",
                "1",
                "--exit-when-done",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rendezvous"),
    );
    let worker = Command::new(bin.join("trainer"))
        .args([
            "worker",
            "--rank",
            "0",
            "--world-size",
            "1",
            "--rendezvous",
            &rendezvous.to_string(),
        ])
        .args(["--run-dir"])
        .arg(dir.path())
        .args([
            "--model",
            "mlp",
            "--mlp-hidden",
            "64,64",
            "--steps",
            "20",
            "--checkpoint-every",
            "10",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run worker");
    assert!(
        worker.status.success(),
        "worker failed: {:?}",
        worker.status
    );
    let published = String::from_utf8_lossy(&worker.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "publish")
        .and_then(|v| v["server_model"].as_str().map(str::to_owned))
        .expect("the worker published its final weights");

    let (_server, mut server_out) = Reaped::spawn(Command::new(bin.join("server")).args([
        "--listen",
        "127.0.0.1:0",
        "--model",
        &published,
    ]));
    let addr = first_line(&mut server_out, "the server listened", |l| {
        l.strip_prefix("listening on ").map(str::to_owned)
    });
    drain(server_out);
    let name = published.split('=').next().expect("NAME=KIND:PATH");

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let meta: serde_json::Value = client
        .get(format!("http://{addr}/v2/models/{name}"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("metadata of the trained model");
    let dim = meta["inputs"][0]["shape"][1].as_i64().expect("input dim");
    let body = serde_json::json!({"inputs": [{"name": meta["inputs"][0]["name"], "shape": [1, dim],
        "datatype": "FP32", "data": vec![0.5_f32; dim as usize]}]});
    let out: serde_json::Value = client
        .post(format!("http://{addr}/v1/models/{name}/infer"))
        .json(&body)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("inference on the trained weights");
    let logits = out["outputs"][0]["data"].as_array().expect("logits");
    assert_eq!(logits.len(), 10, "the teacher task has 10 classes");
    assert!(logits
        .iter()
        .all(|x| x.as_f64().is_some_and(f64::is_finite)));
}
