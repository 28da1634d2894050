//! Integrity under random toxic schedules: whatever toxics come and go while bytes flow,
//! every byte either arrives intact and in order, or the connection fails visibly (ends
//! before all bytes came): nothing silently corrupted, reordered, duplicated or skipped.
//! Afterwards no toxic and no listener is left.
//!
//! `FAULTLINE_PROXY_SCHEDULES` sets how many schedules run (default 50;
//! `benches/scripts/proxy-integrity.sh` runs 1,000); `FAULTLINE_TEST_SEED` the first
//! seed (printed).

mod common;

use common::{echo_server, eventually, Api, PATIENCE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn random_toxic(rng: &mut StdRng, name: &str) -> String {
    let stream = if rng.gen_bool(0.5) {
        "upstream"
    } else {
        "downstream"
    };
    let toxicity = [0.0, 0.5, 1.0][rng.gen_range(0..3)];
    let (kind, attrs) = match rng.gen_range(0..9) {
        0 => (
            "latency",
            format!(
                r#"{{"latency":{},"jitter":{}}}"#,
                rng.gen_range(0..20),
                rng.gen_range(0..20)
            ),
        ),
        1 => (
            "bandwidth",
            format!(r#"{{"rate":{}}}"#, rng.gen_range(50..5000)),
        ),
        2 => (
            "slow_close",
            format!(r#"{{"delay":{}}}"#, rng.gen_range(0..50)),
        ),
        3 => (
            "timeout",
            format!(r#"{{"timeout":{}}}"#, [0, 0, 20, 100][rng.gen_range(0..4)]),
        ),
        4 => (
            "reset_peer",
            format!(r#"{{"timeout":{}}}"#, rng.gen_range(0..200)),
        ),
        5 => {
            let avg = rng.gen_range(1..64);
            (
                "slicer",
                format!(
                    r#"{{"average_size":{avg},"size_variation":{},"delay":{}}}"#,
                    rng.gen_range(0..avg),
                    rng.gen_range(0..500)
                ),
            )
        }
        6 => (
            "limit_data",
            format!(r#"{{"bytes":{}}}"#, rng.gen_range(0..200_000)),
        ),
        7 => ("blackhole", "{}".to_owned()),
        _ => (
            "latency",
            format!(r#"{{"latency":{}}}"#, rng.gen_range(0..5)),
        ),
    };
    format!(
        r#"{{"name":"{name}","type":"{kind}","stream":"{stream}","toxicity":{toxicity},"attributes":{attrs}}}"#
    )
}

/// One schedule: a connection echoes `len` seeded random bytes while toxics are added,
/// changed and removed at random moments; then everything is reset.
async fn schedule(seed: u64) -> (usize, usize, &'static str) {
    let mut rng = StdRng::seed_from_u64(seed);
    let api = Api::start(seed).await;
    let addr = api.proxy("p", echo_server().await).await;
    let len = rng.gen_range(1..300_000usize);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    // Half the schedules have a toxic in place before the connection opens.
    let mut names: Vec<String> = Vec::new();
    if rng.gen_bool(0.5) {
        let body = random_toxic(&mut rng, "t_first");
        let (s, v) = api.call("POST", "/proxies/p/toxics", Some(&body)).await;
        assert_eq!(s, 200, "seed {seed}: {body}: {v}");
        names.push("t_first".to_owned());
    }
    let c = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = c.into_split();
    let to_send = data.clone();
    let mut wrng = StdRng::seed_from_u64(seed ^ 0x5752);
    let writer = tokio::spawn(async move {
        let mut at = 0;
        while at < to_send.len() {
            let n = wrng.gen_range(1..20_000).min(to_send.len() - at);
            if w.write_all(&to_send[at..at + n]).await.is_err() {
                return;
            }
            at += n;
            if wrng.gen_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(wrng.gen_range(0..10))).await;
            }
        }
        let _ = w.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = loop {
            match r.read(&mut buf).await {
                Ok(0) => break "eof",
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break "error",
            }
        };
        (got, end)
    });
    // The schedule: up to 12 changes, a few milliseconds apart.
    for step in 0..rng.gen_range(1..12) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
        if !names.is_empty() && rng.gen_bool(0.4) {
            let i = rng.gen_range(0..names.len());
            let name = names.swap_remove(i);
            let (s, v) = api
                .call("DELETE", &format!("/proxies/p/toxics/{name}"), None)
                .await;
            assert_eq!(s, 204, "seed {seed}: {v}");
        } else if !names.is_empty() && rng.gen_bool(0.2) {
            let name = &names[rng.gen_range(0..names.len())];
            let t = rng.gen_range(0.0..=1.0f64);
            let (s, v) = api
                .call(
                    "PATCH",
                    &format!("/proxies/p/toxics/{name}"),
                    Some(&format!(r#"{{"toxicity":{t}}}"#)),
                )
                .await;
            assert_eq!(s, 200, "seed {seed}: {v}");
        } else {
            let name = format!("t{step}");
            let body = random_toxic(&mut rng, &name);
            let (s, v) = api.call("POST", "/proxies/p/toxics", Some(&body)).await;
            assert_eq!(s, 200, "seed {seed}: {body}: {v}");
            names.push(name);
        }
    }
    let (s, _) = api.call("POST", "/reset", None).await;
    assert_eq!(s, 204);
    let (got, end) = tokio::time::timeout(PATIENCE, reader)
        .await
        .unwrap_or_else(|_| {
            panic!("seed {seed}: the connection neither finished nor failed after the reset")
        })
        .expect("reader");
    writer.abort();
    assert!(
        got.len() <= data.len() && got[..] == data[..got.len()],
        "seed {seed}: {} bytes received are not a prefix of the {} sent (first difference at {:?})",
        got.len(),
        data.len(),
        got.iter().zip(&data).position(|(a, b)| a != b)
    );
    // A short stream must have ended visibly (it did: the reader saw eof or an error).
    assert_eq!(api.registry.toxic_count(), 0, "seed {seed}: toxics left");
    let (s, _) = api.call("DELETE", "/proxies/p", None).await;
    assert_eq!(s, 204);
    eventually("the listener is closed", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
    })
    .await;
    (got.len(), data.len(), end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_toxic_schedules_never_corrupt_reorder_or_duplicate_bytes() {
    let first: u64 = std::env::var("FAULTLINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count: u64 = std::env::var("FAULTLINE_PROXY_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    println!("seeds {first}..{} (FAULTLINE_TEST_SEED)", first + count);
    let (mut whole, mut cut) = (0, 0);
    for seed in first..first + count {
        let (got, sent, end) = schedule(seed).await;
        if got == sent {
            whole += 1;
        } else {
            cut += 1;
            println!("seed {seed}: {got} of {sent} bytes, then {end}");
        }
    }
    println!("{whole} whole, {cut} cut short visibly");
    // The schedules must exercise both outcomes, or the test proves little.
    assert!(whole > 0 && cut > 0, "{whole} whole, {cut} cut");
}
