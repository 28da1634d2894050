//! The generator out of file descriptors: its own failure, told apart from the target's.
//! A test binary of its own: it lowers the process's open-file limit, which would starve
//! other tests running beside it.

use std::time::Duration;

use http::Uri;
use loadgen::{run_open_loop, ErrorKind, LoadError, OpenLoopSpec, RequestTemplate};
use nix::sys::resource::{setrlimit, Resource};
use tokio_util::sync::CancellationToken;

/// The most descriptors the test process may hold: enough for the runtime and a few dozen
/// connections, far fewer than the tests ask for.
const FD_LIMIT: u64 = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_generator_fails_at_start_or_stops_growing_never_blaming_the_target()
{
    // A listener that never accepts: the kernel completes each connect into its backlog,
    // so only the generator holds descriptors for them, and no request is ever answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let uri: Uri = format!("http://{}/", listener.local_addr().expect("addr"))
        .parse()
        .expect("uri");
    setrlimit(Resource::RLIMIT_NOFILE, FD_LIMIT, FD_LIMIT).expect("lower the open-file limit");

    // More connections than descriptors: a startup error that says why, before any load.
    let mut s = OpenLoopSpec::new(vec![uri.clone()], vec![RequestTemplate::get("/")], 10.0);
    s.load.connections = 2 * FD_LIMIT as usize;
    s.load.duration = Duration::from_millis(200);
    let err = run_open_loop(&s, CancellationToken::new(), None)
        .await
        .expect_err("cannot open the connections");
    assert!(matches!(err, LoadError::Resources(_)), "{err}");
    assert!(err.to_string().contains("ulimit -n"), "{err}");

    // A pool that may grow past the limit: it stops growing when the descriptors run out,
    // and no request is failed by a connection the generator could not open.
    let mut s = OpenLoopSpec::new(vec![uri], vec![RequestTemplate::get("/")], 200.0);
    s.load.connections = 2;
    s.load.duration = Duration::from_millis(1_000);
    s.load.timeout = Duration::from_millis(500);
    s.max_connections = Some(1_000);
    let r = run_open_loop(&s, CancellationToken::new(), None)
        .await
        .expect("starts");
    assert!(r.balanced(), "{:?}", r.accounting);
    assert_eq!(
        r.accounting.errors.get(&ErrorKind::GeneratorResources),
        None,
        "{:?}",
        r.accounting
    );
    assert!(
        r.connections.added > 0 && r.connections.added < FD_LIMIT,
        "{:?}",
        r.connections
    );
    assert_eq!(r.accounting.ok, 0);
    drop(listener);
}
