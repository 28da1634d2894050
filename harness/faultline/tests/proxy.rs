//! `faultline proxy` as a user runs it: a real process, real signals, the API over HTTP.
//! Whatever way it ends, its listeners are closed (a proxy cannot outlive it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Proxy {
    child: Child,
    api: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--seed", "7"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn faultline proxy");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(line.contains("(seed 7)"), "the seed is printed: {line}");
    // Keep draining stdout and stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::sink());
        });
    }
    Proxy {
        api: addr.parse().expect("API address"),
        child,
    }
}

fn http(api: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(api).expect("API connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text[9..12].parse().expect("status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Creates a proxy to a live upstream with a toxic; returns the proxy's address.
fn proxy_with_a_toxic(p: &Proxy) -> SocketAddr {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("upstream");
    let up = upstream.local_addr().expect("addr");
    std::thread::spawn(move || for _ in upstream.incoming() {});
    let (s, body) = http(
        p.api,
        "POST",
        "/proxies",
        &format!(r#"{{"name":"p","listen":"127.0.0.1:0","upstream":"{up}"}}"#),
    );
    assert_eq!(s, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let (s, body) = http(
        p.api,
        "POST",
        "/proxies/p/toxics",
        r#"{"type":"timeout","attributes":{"timeout":0}}"#,
    );
    assert_eq!(s, 200, "{body}");
    v["listen"].as_str().expect("listen").parse().expect("addr")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "faultline proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_closed(addr: SocketAddr) {
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{addr} still accepts connections"
    );
}

#[test]
fn ctrl_c_and_sigterm_close_every_listener_and_exit_zero() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let mut p = start(&[]);
        let addr = proxy_with_a_toxic(&p);
        let held = TcpStream::connect(addr).expect("the proxy accepts");
        kill(Pid::from_raw(p.child.id() as i32), sig).expect("signal");
        let status = wait_exit(&mut p.child);
        assert_eq!(status.code(), Some(0), "{sig}: {status:?}");
        assert_closed(addr);
        assert_closed(p.api);
        drop(held);
    }
}

#[test]
fn sigkill_leaves_no_listener_behind() {
    let mut p = start(&[]);
    let addr = proxy_with_a_toxic(&p);
    kill(Pid::from_raw(p.child.id() as i32), Signal::SIGKILL).expect("signal");
    let _ = wait_exit(&mut p.child);
    assert_closed(addr);
    assert_closed(p.api);
}

#[test]
fn off_loopback_without_a_token_is_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["proxy", "--listen", "0.0.0.0:0"])
        .env_remove("FAULTLINE_PROXY_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0") && err.contains("--token"),
        "{err}"
    );
}

#[test]
fn a_config_file_populates_proxies_at_start_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"[{"name":"web","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}]"#,
    )
    .expect("write");
    let p = start(&["--config", good.to_str().expect("utf-8")]);
    let (s, body) = http(p.api, "GET", "/proxies/web", "");
    assert_eq!(s, 200, "{body}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"name":"web"}]"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("upstream at proxy 1"),
        "{err}"
    );
}
