//! The async shell around [`Pipe`]: one task per proxied connection moves bytes both ways,
//! sleeps until the pipes' deadlines, follows toxic changes, and closes or resets both
//! sockets when a toxic or the proxy says so.
//!
//! With no toxic acting, a direction copies what it reads straight to the other socket
//! (one read, one write, no queue), which is what keeps the proxy's overhead near a plain
//! TCP relay's.

use crate::http_toxics::HttpLayer;
use crate::metrics::{DirectionLabels, Metrics, ToxicLabels};
use crate::pipe::{Action, Close, Entry, Pipe};
use crate::toxic::Stream;
use prometheus_client::metrics::counter::Counter;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Reads between two checks of the connection's kill signal while bytes keep coming.
const KILL_CHECK_TURNS: u32 = 64;

/// Bytes read per `read` call (one buffer per direction of each connection: 64 KiB per
/// connection in all).
pub const READ_BUFFER_BYTES: usize = 32 * 1024;

/// A proxy's toxics now, by stream, in chain order, as every open connection sees them.
#[derive(Debug, Default)]
pub struct Chain {
    pub upstream: Vec<Arc<Entry>>,
    pub downstream: Vec<Arc<Entry>>,
    /// The HTTP-aware toxics (whatever their `stream`): they act on whole messages.
    pub http: Vec<Arc<Entry>>,
}

impl Chain {
    pub fn from_entries(entries: &[Arc<Entry>]) -> Self {
        let mut c = Self::default();
        for e in entries {
            if e.toxic.kind.is_http() {
                c.http.push(e.clone());
            } else if e.toxic.stream == Stream::Upstream {
                c.upstream.push(e.clone());
            } else {
                c.downstream.push(e.clone());
            }
        }
        c
    }
    fn stream(&self, s: Stream) -> &[Arc<Entry>] {
        match s {
            Stream::Upstream => &self.upstream,
            Stream::Downstream => &self.downstream,
        }
    }
}

/// What a connection task needs from its proxy.
#[derive(Clone)]
pub struct LinkContext {
    pub proxy: String,
    pub chain: watch::Receiver<Arc<Chain>>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the proxy is disabled, deleted or the server stops.
    pub stop: CancellationToken,
    /// Toxic names by id, for the fired metric.
    pub names: Arc<Mutex<HashMap<u64, (String, &'static str)>>>,
}

/// State both directions of one connection share.
struct Shared {
    /// Cancelled when the connection must end (a kill, the proxy stopping).
    kill: CancellationToken,
    reset: AtomicBool,
    /// Sources that reached end of stream; at 2 nothing more can come from either peer.
    eofs: AtomicU8,
    both_eof: CancellationToken,
    http: HttpLayer,
}

impl Shared {
    fn kill(&self, close: Close) {
        if close == Close::Reset {
            self.reset.store(true, Ordering::SeqCst);
        }
        self.kill.cancel();
    }
}

/// Proxies one accepted connection to `upstream` until both sides are done or a toxic or
/// the proxy ends it. `seed` fixes every random choice of this connection.
pub async fn run(client: TcpStream, upstream: String, seed: u64, ctx: LinkContext) {
    let server = tokio::select! {
        r = TcpStream::connect(upstream.as_str()) => r,
        () = ctx.stop.cancelled() => return,
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(proxy = %ctx.proxy, %upstream, error = %e, "upstream connect failed");
            ctx.metrics
                .connect_errors
                .get_or_create(&crate::metrics::ProxyLabels {
                    proxy: ctx.proxy.clone(),
                })
                .inc();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let shared = Arc::new(Shared {
        kill: ctx.stop.child_token(),
        reset: AtomicBool::new(false),
        eofs: AtomicU8::new(0),
        both_eof: CancellationToken::new(),
        http: HttpLayer::new(StdRng::seed_from_u64(seed ^ 0x4854_5450)),
    });
    let up = direction(
        cr,
        sw,
        Stream::Upstream,
        StdRng::seed_from_u64(seed),
        shared.clone(),
        ctx.clone(),
    );
    // Each direction is its own task, so a wake-up polls only the side that is ready.
    let down = tokio::spawn(direction(
        sr,
        cw,
        Stream::Downstream,
        StdRng::seed_from_u64(seed.rotate_left(32) ^ 1),
        shared.clone(),
        ctx.clone(),
    ));
    let (cr, sw) = up.await;
    let Ok((sr, cw)) = down.await else {
        // The downstream task panicked: its halves are gone (and closed).
        return;
    };
    if shared.reset.load(Ordering::SeqCst) {
        // RST, not FIN: linger 0, and the write halves must not send a FIN first.
        let _ = cr.as_ref().set_zero_linger();
        let _ = sr.as_ref().set_zero_linger();
        sw.forget();
        cw.forget();
    }
}

fn counter(ctx: &LinkContext, stream: Stream, sent: bool) -> Counter {
    let labels = DirectionLabels {
        proxy: ctx.proxy.clone(),
        direction: stream.as_str().to_owned(),
    };
    if sent {
        ctx.metrics.sent.get_or_create(&labels).clone()
    } else {
        ctx.metrics.received.get_or_create(&labels).clone()
    }
}

fn record_fired(ctx: &LinkContext, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    let names = ctx.names.lock().unwrap_or_else(|p| p.into_inner());
    for id in ids {
        if let Some((name, kind)) = names.get(&id) {
            ctx.metrics
                .fired
                .get_or_create(&ToxicLabels {
                    proxy: ctx.proxy.clone(),
                    toxic: name.clone(),
                    r#type: (*kind).to_owned(),
                })
                .inc();
        }
    }
}

/// One direction: `src` to `dst` through the stream's toxics (and the HTTP layer).
/// Returns the halves so the caller decides between FIN and RST.
async fn direction(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    stream: Stream,
    rng: StdRng,
    shared: Arc<Shared>,
    mut ctx: LinkContext,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let received = counter(&ctx, stream, false);
    let sent = counter(&ctx, stream, true);
    let mut pipe = Pipe::new(rng);
    let mut chain = ctx.chain.borrow_and_update().clone();
    pipe.set_toxics(Instant::now(), chain.stream(stream));
    let http = &shared.http;
    http.set_toxics(&chain.http, true);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut eof = false;
    // The toxics' deadlines need microseconds (a latency toxic must land within ±1 ms;
    // tokio's wheel is ~1 ms late): a timerfd, made the first time one is needed.
    let mut timer: Option<timerfd::Timer> = None;
    let killed = shared.kill.cancelled();
    tokio::pin!(killed);
    // Waits for the proxy's next toxic change on a receiver of its own, so the loop does
    // not register a new waiter on every turn.
    async fn next_change(
        mut rx: watch::Receiver<Arc<Chain>>,
    ) -> (bool, watch::Receiver<Arc<Chain>>) {
        let open = rx.changed().await.is_ok();
        (open, rx)
    }
    let mut changes = Box::pin(next_change(ctx.chain.clone()));
    let mut turns: u32 = 0;
    'outer: loop {
        // Everything due now (the clock is read only when a toxic scheduled something).
        if pipe.next_deadline().is_some() {
            let now = Instant::now();
            while let Some(action) = pipe.poll(now) {
                match action {
                    Action::Write(bytes) => {
                        if dst.write_all(&bytes).await.is_err() {
                            shared.kill(Close::Fin);
                            break 'outer;
                        }
                        sent.inc_by(bytes.len() as u64);
                    }
                    Action::Shutdown => {
                        let _ = dst.shutdown().await;
                        break 'outer;
                    }
                    Action::Kill(close) => {
                        record_fired(&ctx, pipe.take_fired());
                        shared.kill(close);
                        break 'outer;
                    }
                }
            }
        }
        record_fired(&ctx, pipe.take_fired());
        record_fired(&ctx, http.take_fired());
        if eof && shared.both_eof.is_cancelled() && pipe.next_deadline().is_none() {
            // Both peers are done sending and a toxic swallowed this side's close:
            // nothing more can come, so the connection ends.
            break;
        }
        let deadline = pipe.next_deadline();
        let answers = async {
            if stream == Stream::Downstream && http.may_answer() {
                http.answers_ready().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        // Reading comes first: while bytes keep coming, nothing else is polled (each poll of
        // a waiter costs a lock). A kill is still seen within `KILL_CHECK_TURNS` reads.
        turns = turns.wrapping_add(1);
        if turns % KILL_CHECK_TURNS == 0 && shared.kill.is_cancelled() {
            break;
        }
        tokio::select! {
            biased;
            r = src.read(&mut buf), if !eof && pipe.wants_read() => {
                match r {
                    Ok(0) => {
                        eof = true;
                        if shared.eofs.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                            shared.both_eof.cancel();
                        }
                        let owed = http.incoming_eof(stream);
                        if !deliver(&mut pipe, &mut dst, &sent, &shared, &owed, None).await {
                            break;
                        }
                        pipe.on_eof(Instant::now());
                    }
                    Ok(n) => {
                        received.inc_by(n as u64);
                        let (data, kill) = http.incoming(stream, &buf[..n]);
                        if !deliver(&mut pipe, &mut dst, &sent, &shared, &data, kill).await {
                            break;
                        }
                    }
                    Err(e) => {
                        // A reset from this peer resets the other side too.
                        let close = if e.kind() == std::io::ErrorKind::ConnectionReset {
                            Close::Reset
                        } else {
                            Close::Fin
                        };
                        shared.kill(close);
                        break;
                    }
                }
            }
            () = &mut killed => break,
            (open, mut rx) = &mut changes => {
                if !open {
                    break; // the proxy is gone
                }
                chain = rx.borrow_and_update().clone();
                changes = Box::pin(next_change(rx));
                pipe.set_toxics(Instant::now(), chain.stream(stream));
                http.set_toxics(&chain.http, false);
            }
            () = async {
                match deadline {
                    Some(d) => precise_sleep(&mut timer, d).await,
                    None => std::future::pending().await,
                }
            } => {}
            () = answers => {
                // Answers for requests the HTTP layer kept from the server, now their turn.
                let (data, kill) = http.incoming(stream, &[]);
                if !deliver(&mut pipe, &mut dst, &sent, &shared, &data, kill).await {
                    break;
                }
            }
            () = shared.both_eof.cancelled(), if eof && !shared.both_eof.is_cancelled() => {}
        }
    }
    (src, dst)
}

/// Hands bytes read (after the HTTP layer) to the pipe, or writes them at once when no
/// toxic acts. `kill` (from the HTTP layer) ends the connection after those bytes.
/// Returns false when the connection is over.
async fn deliver(
    pipe: &mut Pipe,
    dst: &mut OwnedWriteHalf,
    sent: &Counter,
    shared: &Shared,
    data: &[u8],
    kill: Option<Close>,
) -> bool {
    if pipe.is_passthrough() {
        if !data.is_empty() {
            if dst.write_all(data).await.is_err() {
                shared.kill(Close::Fin);
                return false;
            }
            sent.inc_by(data.len() as u64);
        }
        if let Some(close) = kill {
            shared.kill(close);
            return false;
        }
        return true;
    }
    let now = Instant::now();
    pipe.on_data(now, data);
    if let Some(close) = kill {
        pipe.on_kill(now, close);
    }
    true
}

/// Sleeps until `due` on the direction's timerfd (made on first use); tokio's timer if a
/// timerfd cannot be had (then up to ~1 ms late).
async fn precise_sleep(timer: &mut Option<timerfd::Timer>, due: Instant) {
    if timer.is_none() {
        *timer = timerfd::Timer::new().ok();
    }
    match timer {
        Some(t) => {
            if t.sleep_until(due).await.is_err() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        None => tokio::time::sleep_until(due.into()).await,
    }
}
