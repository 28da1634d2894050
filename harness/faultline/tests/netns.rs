//! `[network] mode = "netns"` on the real kernel: each region a network namespace, the
//! runner's ends of the veth pairs, what can reach what, and that nothing is left behind.
//! Needs root and iproute2 (CI runs as root); elsewhere each test says it is skipped.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use faultline::addrs::RunBlock;
use faultline::netns::RegionNets;
use scenario::NetworkMode;

/// Runs `f` on a thread that has joined the namespace `fd` (sockets it makes stay there).
fn in_ns<T: Send + 'static>(fd: i32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // The caller's RegionNets keeps `fd` open while this runs.
        let ns = reopen(fd);
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// The namespace behind a descriptor the caller keeps open (std's `BorrowedFd::borrow_raw`
/// is unsafe; reopening through /proc keeps the test free of `unsafe`).
fn reopen(fd: i32) -> std::fs::File {
    std::fs::File::open(format!("/proc/self/fd/{fd}")).expect("reopen the namespace")
}

fn connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&to, Duration::from_secs(5))
}

#[test]
fn regions_reach_each_other_only_through_the_runner_and_their_pairs_go_with_them() {
    if let Some(why) = common::netns_unavailable() {
        eprintln!("skipped: network namespaces need root and iproute2 ({why})");
        return;
    }
    let block = RunBlock::claim_for(NetworkMode::Netns).expect("a block");
    let nets =
        RegionNets::create(&block, &["us".to_owned(), "eu".to_owned()]).expect("two namespaces");
    let us = nets.get("us").expect("us").clone();
    let eu = nets.get("eu").expect("eu").clone();
    assert!(common::link_exists(&us.host_if) && common::link_exists(&eu.host_if));

    // A replica in eu, listening on its address inside eu's namespace.
    let replica = block.replica(2, 0).expect("eu replica address");
    let listener = in_ns(eu.fd(), move || {
        TcpListener::bind(replica).expect("bind in eu")
    });
    // The runner (load generator, probes, proxies) reaches it over eu's pair.
    connect(replica).expect("the runner reaches a replica in eu");
    // A neighbour in eu reaches it inside the namespace.
    in_ns(eu.fd(), move || connect(replica)).expect("eu reaches eu");
    // us cannot reach it directly: the runner does not forward between regions ...
    // (A second is ample: inside the machine a connection is accepted in microseconds.)
    let direct = in_ns(us.fd(), move || {
        TcpStream::connect_timeout(&replica, Duration::from_secs(1))
    });
    assert!(
        direct.is_err(),
        "us reached eu's replica {replica} without crossing a link"
    );
    // ... only through the link proxy's address on the runner's side.
    let link = block.linked(2, 0, 1).expect("link address");
    let proxy = TcpListener::bind(link).expect("the link proxy's address is the runner's");
    in_ns(us.fd(), move || connect(link)).expect("us reaches the link proxy");
    drop(proxy);
    drop(listener);

    let names = [us.host_if.clone(), eu.host_if.clone()];
    drop((us, eu));
    drop(nets);
    for name in names {
        assert!(
            common::eventually(Duration::from_secs(5), || !common::link_exists(&name)),
            "{name} outlived the run's namespaces"
        );
    }
}

#[test]
fn without_privileges_the_run_stops_before_anything_starts_and_says_why() {
    if let Some(why) = common::netns_unavailable() {
        eprintln!("skipped: needs root to drop to an unprivileged user ({why})");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let scenario = dir.path().join("netns.toml");
    std::fs::write(
        &scenario,
        "[network]\nmode = \"netns\"\n[[components]]\nname = \"server\"\nkind = \"server\"\n[workload]\ntarget = \"server\"\nrate_per_s = 5\nduration = \"1s\"\n[[workload.requests]]\nkind = \"infer\"\nmodel = \"mlp\"\n",
    )
    .expect("write scenario");
    // As the unprivileged user `nobody`, with no capabilities.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "--quiet", "--reports"])
        .arg(dir.path().join("reports"))
        .arg("--bin-dir")
        .arg(common::bin_dir())
        .arg(&scenario)
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an unprivileged netns run failed: {stderr}"
    );
    assert!(
        stderr.contains("netns.toml")
            && stderr.contains("needs root")
            && stderr.contains("mode = \"loopback\""),
        "the error names the file, the need and the way out: {stderr}"
    );
    assert!(
        !dir.path().join("reports").exists(),
        "the run stopped before it made its report folder: {stderr}"
    );
}
