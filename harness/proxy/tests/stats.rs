//! `Registry::stats`, which the runner reads for every proxy at the end of a run (the
//! per-link table): an idle proxy once deadlocked it.

mod common;

use std::time::Duration;

use common::echo_server;
use proxy::registry::{ProxySpec, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `stats` on a thread of its own, failing the test instead of hanging it.
fn stats(reg: &std::sync::Arc<Registry>, name: &str) -> proxy::registry::ProxyStats {
    let (reg, owned) = (reg.clone(), name.to_owned());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(reg.stats(&owned));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(stats) => stats.expect("a known proxy"),
        Err(_) => {
            // A deadlocked thread holds the metrics' lock: unwinding would hang in the
            // runtime's shutdown (its tasks touch the metrics), so end the test process.
            eprintln!("FAILED: Registry::stats({name:?}) did not answer within 5 s (deadlock)");
            std::process::exit(101);
        }
    }
}

#[tokio::test]
async fn stats_of_idle_and_busy_proxies_answer_and_count_both_ways() {
    let reg = Registry::new(1);
    let up = echo_server().await;
    for name in ["idle", "busy"] {
        reg.create(ProxySpec {
            name: name.to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            upstream: up.to_string(),
            enabled: true,
            seed: None,
        })
        .expect("create");
    }
    let idle = stats(&reg, "idle");
    assert_eq!(
        (idle.connections, idle.bytes_upstream, idle.bytes_downstream),
        (0, 0, 0)
    );
    assert!(reg.stats("nope").is_none());

    let addr = reg.listen_addr("busy").expect("listen address");
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"hello").await.expect("write");
    let mut back = [0u8; 5];
    c.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"hello");
    let busy = stats(&reg, "busy");
    assert_eq!(busy.connections, 1);
    assert_eq!((busy.bytes_upstream, busy.bytes_downstream), (5, 5));
    // Still answers for the idle one after the busy one created its series.
    assert_eq!(stats(&reg, "idle").bytes_downstream, 0);
    reg.shutdown();
}
