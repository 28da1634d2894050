//! Test support: start the real `server` binary on port 0 and wait on conditions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to print `listening on ADDR`.
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// A running `server` process; killed on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `server --listen 127.0.0.1:0 ARGS…` with extra environment variables and waits
    /// for its `listening on ADDR` line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the server binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        // One thread reads stdout to its end: the first line comes back on a channel, the
        // rest goes to the test's output, so the server never writes into a full or closed
        // pipe.
        let (first_line, first) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first_line.send(lines.next());
            for line in lines.map_while(Result::ok) {
                eprintln!("server stdout: {line}");
            }
        });
        // Killed on drop from here on, a failed start included.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let line = match first.recv_timeout(STARTUP_PATIENCE) {
            Ok(Some(line)) => line.expect("read the server's first stdout line"),
            Ok(None) => panic!(
                "the server closed stdout before `listening on ADDR`: {:?}",
                server.child.try_wait()
            ),
            Err(e) => panic!("no `listening on ADDR` within {STARTUP_PATIENCE:?}: {e}"),
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
            .parse()
            .expect("a socket address");
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM)
            .expect("send SIGTERM");
    }

    /// Waits (at most `patience`) for the process to exit.
    pub async fn wait_exit(&mut self, patience: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually(patience, "server process exits", || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Polls `check` until it returns `Some`, failing the test after `patience`.
pub async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {patience:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `series` (e.g. `faultline_batch_size_count{model="mlp"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub async fn metrics_text(server: &ServerProcess) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// A KServe v2 body with `k` samples of `d` features (shape `[k, d]`).
pub fn infer_body(k: usize, d: usize) -> serde_json::Value {
    serde_json::json!({
        "inputs": [{
            "name": "input",
            "shape": [k, d],
            "datatype": "FP32",
            "data": (0..k * d).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>(),
        }]
    })
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
        })
        .collect()
}
