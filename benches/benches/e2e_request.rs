//! One KServe v2 infer request (one sample, default 256→1024→1024→10 classifier) to a real
//! in-process `server` over loopback HTTP: JSON encode, TCP, axum, batcher, candle, reply.
//!
//! Two variants: `--max-queue-delay-ms 0` (pure service time) and the default 2 ms (a lone
//! request waits the full delay for company, as in Triton).

use criterion::{criterion_group, criterion_main, Criterion};
use server::ServerConfig;
use std::time::Duration;

fn bench_with_delay(c: &mut Criterion, label: &str, delay: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut config = ServerConfig::with_defaults("127.0.0.1:0".parse().expect("addr"));
    config.models.retain(|m| m.name == "mlp");
    config.max_queue_delay = delay;
    let server = rt
        .block_on(server::Server::bind(config))
        .expect("server binds");
    let url = format!("http://{}/v2/models/mlp/infer", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = rt.spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let body = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32",
                    "data": (0..256).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>()}]
    }))
    .expect("json");
    c.bench_function(label, |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("sent");
                assert!(r.status().is_success());
                r.bytes().await.expect("body")
            })
        });
    });
    let _ = stop_tx.send(());
    let _ = rt.block_on(serving);
}

fn e2e(c: &mut Criterion) {
    bench_with_delay(c, "e2e_infer_1_sample_delay_0ms", Duration::ZERO);
    bench_with_delay(c, "e2e_infer_1_sample_delay_2ms", Duration::from_millis(2));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = e2e
}
criterion_main!(benches);
