//! Rendezvous and failure detection: a coordinator process (like torchrun's c10d store) that
//! workers join, that assigns ranks per *membership epoch*, and that watches heartbeats.
//!
//! * [`Coordinator`]: the sans-IO core. Inputs: joins, heartbeats, "done", disconnects and a
//!   clock; outputs: messages to workers, connections to close, events.
//! * [`serve`]: the TCP shell (JSON lines, one thread per connection).
//! * [`LineReader`]: how both sides read those lines: at most [`MAX_LINE_BYTES`] (64 KiB)
//!   each, so a peer that never sends a newline is dropped (with an error logged) instead of
//!   growing the reader's memory without bound.
//! * [`Client`]: the worker side: joins, heartbeats from its own thread (so a worker busy in
//!   a long step still beats, and a SIGSTOPped one stops), and aborts the worker's ring when
//!   the coordinator says the epoch is over, unblocking a collective stuck on a dead peer.
//!
//! Policy ([`Policy`], like torchrun's `--nnodes=MIN:MAX`): the first epoch forms when
//! `max_workers` have joined (or `min_workers` after `startup_timeout`). When a member dies
//! (connection closed: at once; no heartbeat for `heartbeat_timeout`: hung or stopped), the
//! survivors are told to abort, and the next epoch forms as soon as `max_workers` are
//! available again (a replacement joined) or after `replace_timeout` with at least
//! `min_workers`. A worker that joins while the job runs below `max_workers` triggers a new
//! epoch that admits it. If fewer than `min_workers` remain for `startup_timeout`, everyone
//! is told to shut down.

use crate::comm::AbortHandle;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use wire::trainer::{Event, FaultEvent, JobDone, Rendezvous, RendezvousJoin, Shutdown};

/// Membership policy and timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_workers: usize,
    pub max_workers: usize,
    pub startup_timeout: Duration,
    pub replace_timeout: Duration,
    pub heartbeat_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_workers: 1,
            max_workers: 1,
            startup_timeout: Duration::from_secs(60),
            replace_timeout: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(1),
        }
    }
}

/// Worker → coordinator.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Join {
        rank_hint: Option<usize>,
        data_addr: String,
        control_addr: Option<String>,
        pid: u32,
    },
    Heartbeat {
        step: u64,
    },
    Done {
        step: u64,
    },
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// You are `rank` of `world` in `epoch`; `peers[i]` is rank i's ring address.
    Membership {
        epoch: u64,
        rank: usize,
        world: usize,
        peers: Vec<String>,
        /// When the failure that ended the previous epoch was detected (if one did).
        detected_unix_s: Option<f64>,
    },
    /// `epoch` is over: stop collectives and wait for the next membership.
    Abort {
        epoch: u64,
        reason: String,
        detected_unix_s: f64,
    },
    /// The job cannot continue (fewer than `min_workers` for too long).
    Shutdown { reason: String },
}

/// Connection id assigned by the server.
pub type MemberId = u64;

/// What the coordinator wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(MemberId, ToWorker),
    Close(MemberId),
    Event(Event),
}

#[derive(Debug, Clone)]
struct Worker {
    rank_hint: Option<usize>,
    data_addr: String,
    pid: u32,
    last_seen: Instant,
}

/// The sans-IO rendezvous state machine.
#[derive(Debug)]
pub struct Coordinator {
    policy: Policy,
    epoch: u64,
    alive: BTreeMap<MemberId, Worker>,
    members: Vec<MemberId>,
    done: BTreeSet<MemberId>,
    gathering_since: Option<Instant>,
    detected_unix_s: Option<f64>,
    formed_once: bool,
    finished: bool,
    shut_down: bool,
}

impl Coordinator {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            epoch: 0,
            alive: BTreeMap::new(),
            members: Vec::new(),
            done: BTreeSet::new(),
            gathering_since: Some(now),
            detected_unix_s: None,
            formed_once: false,
            finished: false,
            shut_down: false,
        }
    }

    /// Every member of the job reported done.
    pub fn finished(&self) -> bool {
        self.finished || self.shut_down
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn on_message(
        &mut self,
        id: MemberId,
        msg: FromWorker,
        now: Instant,
        unix_s: f64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        match msg {
            FromWorker::Join {
                rank_hint,
                data_addr,
                pid,
                ..
            } => {
                self.alive.insert(
                    id,
                    Worker {
                        rank_hint,
                        data_addr,
                        pid,
                        last_seen: now,
                    },
                );
                out.push(Output::Event(Event::RendezvousJoin(RendezvousJoin {
                    worker: id,
                    pid,
                    rank_hint,
                })));
                let running = self.gathering_since.is_none() && !self.members.is_empty();
                if running && self.members.len() < self.policy.max_workers && !self.finished {
                    self.end_epoch("a worker joined below max_workers", now, unix_s, &mut out);
                }
            }
            FromWorker::Heartbeat { .. } => {
                if let Some(w) = self.alive.get_mut(&id) {
                    w.last_seen = now;
                }
            }
            FromWorker::Done { step } => {
                self.done.insert(id);
                if !self.members.is_empty() && self.members.iter().all(|m| self.done.contains(m)) {
                    self.finished = true;
                    out.push(Output::Event(Event::JobDone(JobDone {
                        epoch: self.epoch,
                        step,
                    })));
                }
            }
        }
        out
    }

    pub fn on_disconnect(&mut self, id: MemberId, now: Instant, unix_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        if self.alive.remove(&id).is_some() && !self.done.contains(&id) {
            self.lost(id, "connection closed", now, unix_s, &mut out);
        }
        out
    }

    pub fn tick(&mut self, now: Instant, unix_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        let hung: Vec<MemberId> = self
            .alive
            .iter()
            .filter(|(id, w)| {
                !self.done.contains(id)
                    && now.saturating_duration_since(w.last_seen) > self.policy.heartbeat_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in hung {
            self.alive.remove(&id);
            out.push(Output::Close(id));
            self.lost(id, "heartbeat timeout", now, unix_s, &mut out);
        }
        if let Some(since) = self.gathering_since {
            if self.finished || self.shut_down {
                return out;
            }
            let available = self
                .alive
                .keys()
                .filter(|id| !self.done.contains(id))
                .count();
            let waited = now.saturating_duration_since(since);
            let timeout = if self.formed_once {
                self.policy.replace_timeout
            } else {
                self.policy.startup_timeout
            };
            if available >= self.policy.max_workers
                || (available >= self.policy.min_workers && waited >= timeout)
            {
                self.form(now, &mut out);
            } else if self.formed_once && waited >= self.policy.startup_timeout {
                self.shut_down = true;
                let reason = format!(
                    "only {available} workers for {:.0} s; min_workers is {}",
                    waited.as_secs_f64(),
                    self.policy.min_workers
                );
                for id in self.alive.keys() {
                    out.push(Output::Send(
                        *id,
                        ToWorker::Shutdown {
                            reason: reason.clone(),
                        },
                    ));
                }
                out.push(Output::Event(Event::Shutdown(Shutdown { reason })));
            }
        }
        out
    }

    fn lost(
        &mut self,
        id: MemberId,
        reason: &str,
        now: Instant,
        unix_s: f64,
        out: &mut Vec<Output>,
    ) {
        let rank = self.members.iter().position(|m| *m == id);
        out.push(Output::Event(Event::Fault(FaultEvent::WorkerLost {
            worker: id,
            rank,
            epoch: self.epoch,
            reason: reason.to_owned(),
            detected_unix_s: unix_s,
        })));
        if rank.is_some() && self.gathering_since.is_none() && !self.finished {
            self.end_epoch(reason, now, unix_s, out);
        }
    }

    fn end_epoch(&mut self, reason: &str, now: Instant, unix_s: f64, out: &mut Vec<Output>) {
        for id in &self.members {
            if self.alive.contains_key(id) {
                out.push(Output::Send(
                    *id,
                    ToWorker::Abort {
                        epoch: self.epoch,
                        reason: reason.to_string(),
                        detected_unix_s: unix_s,
                    },
                ));
            }
        }
        self.members.clear();
        self.gathering_since = Some(now);
        self.detected_unix_s = Some(unix_s);
    }

    fn form(&mut self, _now: Instant, out: &mut Vec<Output>) {
        let mut candidates: Vec<(usize, MemberId)> = self
            .alive
            .iter()
            .filter(|(id, _)| !self.done.contains(id))
            .map(|(id, w)| (w.rank_hint.unwrap_or(usize::MAX), *id))
            .collect();
        candidates.sort();
        candidates.truncate(self.policy.max_workers);
        self.epoch += 1;
        self.members = candidates.iter().map(|(_, id)| *id).collect();
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|id| self.alive[id].data_addr.clone())
            .collect();
        for (rank, id) in self.members.iter().enumerate() {
            out.push(Output::Send(
                *id,
                ToWorker::Membership {
                    epoch: self.epoch,
                    rank,
                    world: self.members.len(),
                    peers: peers.clone(),
                    detected_unix_s: self.detected_unix_s,
                },
            ));
        }
        out.push(Output::Event(Event::Rendezvous(Rendezvous::Coordinator {
            epoch: self.epoch,
            world: self.members.len(),
            pids: self.members.iter().map(|id| self.alive[id].pid).collect(),
            detected_unix_s: self.detected_unix_s,
        })));
        self.gathering_since = None;
        self.formed_once = true;
    }
}

/// Longest line either side of the rendezvous reads, newline included: 64 KiB. A message
/// is a few hundred bytes (a membership lists one address per rank: about 25 bytes each);
/// a longer line ends the connection.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why [`LineReader::next_line`] gave up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("the peer sent more than {max} bytes without a newline (the limit of a line); closing the connection")]
    TooLong { max: usize },
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// Newline-delimited lines from a stream, each at most `max` bytes (newline included), read
/// through one reused buffer that never holds more than `max` bytes, whatever the peer
/// sends.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    max: usize,
}

impl<R: Read> LineReader<R> {
    /// Lines of at most [`MAX_LINE_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE_BYTES)
    }

    /// Lines of at most `max` bytes, newline included.
    pub fn with_max(inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::new(inner),
            line: Vec::new(),
            max,
        }
    }

    /// The next line without its newline; `Ok(None)` at the end of the stream. A last line
    /// without a newline is returned as a line. After an error the stream is not to be read
    /// again (a too-long line's rest is unread).
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        self.line.clear();
        let limit = u64::try_from(self.max).unwrap_or(u64::MAX);
        let n = (&mut self.inner)
            .take(limit)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        match self.line.last() {
            Some(b'\n') => {
                self.line.pop();
            }
            // `take` stopped at the limit, not at the end of the stream.
            _ if n == self.max => return Err(LineError::TooLong { max: self.max }),
            _ => {}
        }
        Ok(Some(&self.line))
    }
}

enum ServerEvent {
    Connected(MemberId, TcpStream),
    Message(MemberId, FromWorker),
    Disconnected(MemberId),
}

/// Runs the coordinator on `listener` until the job is done (every member reported done, or
/// shut down for lack of workers) when `exit_when_done`, else forever. Events go to stdout as
/// JSON lines.
pub fn serve(listener: TcpListener, policy: Policy, exit_when_done: bool) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<ServerEvent>();
    let accept_tx = tx.clone();
    std::thread::Builder::new()
        .name("rendezvous-accept".into())
        .spawn(move || {
            for (id, stream) in (1..).zip(listener.incoming().flatten()) {
                let id: MemberId = id;
                let _ = stream.set_nodelay(true);
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                if accept_tx.send(ServerEvent::Connected(id, writer)).is_err() {
                    return;
                }
                let tx = accept_tx.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("rendezvous-conn-{id}"))
                    .spawn(move || {
                        let mut lines = LineReader::new(&stream);
                        loop {
                            let line = match lines.next_line() {
                                Ok(Some(line)) => line,
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::error!(worker = id, error = %e, "dropping the peer");
                                    let _ = stream.shutdown(std::net::Shutdown::Both);
                                    break;
                                }
                            };
                            match serde_json::from_slice::<FromWorker>(line) {
                                Ok(msg) => {
                                    if tx.send(ServerEvent::Message(id, msg)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => tracing::warn!(worker = id, error = %e, "bad message"),
                            }
                        }
                        let _ = tx.send(ServerEvent::Disconnected(id));
                    });
            }
        })?;
    drop(tx);
    let mut coord = Coordinator::new(policy, Instant::now());
    let mut conns: BTreeMap<MemberId, TcpStream> = BTreeMap::new();
    loop {
        let received = rx.recv_timeout(Duration::from_millis(50));
        // The clock is read after the wait, so detection times are when it happened.
        let now = Instant::now();
        let unix = crate::events::unix_s();
        let outputs = match received {
            Ok(ServerEvent::Connected(id, s)) => {
                conns.insert(id, s);
                Vec::new()
            }
            Ok(ServerEvent::Message(id, msg)) => coord.on_message(id, msg, now, unix),
            Ok(ServerEvent::Disconnected(id)) => {
                conns.remove(&id);
                coord.on_disconnect(id, now, unix)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let outputs = outputs.into_iter().chain(coord.tick(now, unix));
        for o in outputs {
            match o {
                Output::Send(id, msg) => {
                    if let Some(s) = conns.get_mut(&id) {
                        let mut line = serde_json::to_string(&msg).unwrap_or_default();
                        line.push('\n');
                        let _ = s.write_all(line.as_bytes());
                    }
                }
                Output::Close(id) => {
                    if let Some(s) = conns.remove(&id) {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                Output::Event(e) => crate::events::emit(e),
            }
        }
        if exit_when_done && coord.finished() {
            // Let the last messages drain before exiting.
            std::thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
    }
}

/// What a worker's [`Client`] receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Message(ToWorker),
    /// The connection to the coordinator is gone (coordinator died, or it evicted us after
    /// a heartbeat timeout, e.g. while we were stopped).
    Lost(String),
}

/// The worker's side of the rendezvous.
#[derive(Debug)]
pub struct Client {
    writer: Arc<Mutex<TcpStream>>,
    rx: mpsc::Receiver<Notice>,
    /// Epoch the worker currently trains in.
    pub epoch: Arc<AtomicU64>,
    /// Highest epoch the coordinator aborted.
    pub aborted: Arc<AtomicU64>,
    /// The current ring's abort handle, fired when its epoch is aborted.
    pub ring_abort: Arc<Mutex<Option<AbortHandle>>>,
    /// Step reported in heartbeats.
    pub step: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Client {
    /// Connects (retrying until `timeout`), joins, and starts the heartbeat thread.
    pub fn connect(
        addr: &str,
        join: FromWorker,
        heartbeat_interval: Duration,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("rendezvous {addr}: {e}"),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_nodelay(true)?;
        let reader = stream.try_clone()?;
        let writer = Arc::new(Mutex::new(stream));
        let (tx, rx) = mpsc::channel();
        let epoch = Arc::new(AtomicU64::new(0));
        let aborted = Arc::new(AtomicU64::new(0));
        let ring_abort: Arc<Mutex<Option<AbortHandle>>> = Arc::new(Mutex::new(None));
        let step = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client = Self {
            writer,
            rx,
            epoch: epoch.clone(),
            aborted: aborted.clone(),
            ring_abort: ring_abort.clone(),
            step: step.clone(),
            stop: stop.clone(),
        };
        client.send(&join)?;
        std::thread::Builder::new()
            .name("rendezvous-reader".into())
            .spawn(move || {
                let abort_ring = || {
                    if let Some(h) = ring_abort
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                    {
                        h.abort();
                    }
                };
                let mut lines = LineReader::new(&reader);
                let lost = loop {
                    let line = match lines.next_line() {
                        Ok(Some(line)) => line,
                        Ok(None) => break "connection to the rendezvous closed".to_string(),
                        Err(LineError::Io(e)) => {
                            break format!("connection to the rendezvous closed: {e}")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "dropping the rendezvous connection");
                            let _ = reader.shutdown(std::net::Shutdown::Both);
                            break format!("rendezvous: {e}");
                        }
                    };
                    let Ok(msg) = serde_json::from_slice::<ToWorker>(line) else {
                        continue;
                    };
                    if let ToWorker::Abort { epoch: e, .. } = &msg {
                        aborted.fetch_max(*e, Ordering::SeqCst);
                        if *e == epoch.load(Ordering::SeqCst) {
                            abort_ring();
                        }
                    }
                    if tx.send(Notice::Message(msg)).is_err() {
                        return;
                    }
                };
                abort_ring();
                let _ = tx.send(Notice::Lost(lost));
            })?;
        let hb_writer = client.writer.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let msg = FromWorker::Heartbeat {
                        step: step.load(Ordering::Relaxed),
                    };
                    let mut line = serde_json::to_string(&msg).unwrap_or_default();
                    line.push('\n');
                    let ok = hb_writer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write_all(line.as_bytes())
                        .is_ok();
                    if !ok {
                        return;
                    }
                    std::thread::sleep(heartbeat_interval);
                }
            })?;
        Ok(client)
    }

    /// Sends one message.
    pub fn send(&self, msg: &FromWorker) -> std::io::Result<()> {
        let mut line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
        line.push('\n');
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes())
    }

    /// Blocks for the next notice.
    pub fn next(&self) -> Notice {
        self.rx
            .recv()
            .unwrap_or_else(|_| Notice::Lost("rendezvous reader stopped".into()))
    }

    /// Installs the ring of `epoch` so an abort of that epoch unblocks it. Returns `false`
    /// if the epoch was already aborted.
    pub fn install_ring(&self, epoch: u64, handle: Option<AbortHandle>) -> bool {
        *self.ring_abort.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        self.epoch.store(epoch, Ordering::SeqCst);
        self.aborted.load(Ordering::SeqCst) < epoch
    }

    /// Whether the current epoch has been aborted.
    pub fn epoch_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst) >= self.epoch.load(Ordering::SeqCst)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Parses `peers` from a membership message.
pub fn parse_peers(peers: &[String]) -> Result<Vec<SocketAddr>, String> {
    peers
        .iter()
        .map(|p| p.parse().map_err(|e| format!("peer address {p:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(rank: usize) -> FromWorker {
        FromWorker::Join {
            rank_hint: Some(rank),
            data_addr: format!("127.0.0.1:{}", 9000 + rank),
            control_addr: None,
            pid: 100 + rank as u32,
        }
    }

    fn memberships(out: &[Output]) -> Vec<(MemberId, u64, usize, usize)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(
                    id,
                    ToWorker::Membership {
                        epoch, rank, world, ..
                    },
                ) => Some((*id, *epoch, *rank, *world)),
                _ => None,
            })
            .collect()
    }

    fn aborts(out: &[Output]) -> Vec<MemberId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(id, ToWorker::Abort { .. }) => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            min_workers: 2,
            max_workers: 3,
            startup_timeout: Duration::from_secs(30),
            replace_timeout: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(1),
        }
    }

    fn formed(c: &mut Coordinator, t0: Instant) {
        for id in 1..=3 {
            c.on_message(id, join(id as usize - 1), t0, 0.0);
        }
        let out = c.tick(t0, 0.0);
        assert_eq!(
            memberships(&out),
            vec![(1, 1, 0, 3), (2, 1, 1, 3), (3, 1, 2, 3)]
        );
    }

    #[test]
    fn lines_up_to_the_bound_are_read_and_a_longer_one_ends_the_stream() {
        let mut r = LineReader::with_max(&b"ab\ncdef\nxyz"[..], 5);
        assert_eq!(r.next_line().expect("ab"), Some(&b"ab"[..]));
        // "cdef\n" is exactly the bound, newline included.
        assert_eq!(r.next_line().expect("cdef"), Some(&b"cdef"[..]));
        assert_eq!(
            r.next_line().expect("last"),
            Some(&b"xyz"[..]),
            "unterminated last"
        );
        assert_eq!(r.next_line().expect("end"), None);

        let endless = vec![b'x'; 1 << 20];
        let mut r = LineReader::new(&endless[..]);
        let e = r.next_line().expect_err("no newline in 1 MiB");
        assert!(
            matches!(
                e,
                LineError::TooLong {
                    max: MAX_LINE_BYTES
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("65536 bytes without a newline"),
            "{e}"
        );
        let mut r = LineReader::with_max(&b"abcdef\n"[..], 5);
        assert!(matches!(r.next_line(), Err(LineError::TooLong { .. })));
    }

    #[test]
    fn first_epoch_forms_when_max_workers_join_with_ranks_in_hint_order() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(policy(), t0);
        c.on_message(3, join(2), t0, 0.0);
        c.on_message(1, join(0), t0, 0.0);
        assert!(memberships(&c.tick(t0, 0.0)).is_empty(), "waits for max");
        c.on_message(2, join(1), t0, 0.0);
        let out = c.tick(t0, 0.0);
        assert_eq!(
            memberships(&out),
            vec![(1, 1, 0, 3), (2, 1, 1, 3), (3, 1, 2, 3)]
        );
    }

    #[test]
    fn killed_worker_aborts_survivors_who_continue_at_min_after_the_replace_timeout() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(policy(), t0);
        formed(&mut c, t0);
        let out = c.on_disconnect(2, t0, 5.0);
        assert_eq!(aborts(&out), vec![1, 3]);
        let t1 = t0 + Duration::from_secs(1);
        for id in [1, 3] {
            c.on_message(id, FromWorker::Heartbeat { step: 1 }, t1, 0.0);
        }
        assert!(
            memberships(&c.tick(t1, 0.0)).is_empty(),
            "waits for a replacement"
        );
        let t2 = t0 + Duration::from_millis(2100);
        for id in [1, 3] {
            c.on_message(id, FromWorker::Heartbeat { step: 1 }, t2, 0.0);
        }
        assert_eq!(
            memberships(&c.tick(t2, 0.0)),
            vec![(1, 2, 0, 2), (3, 2, 1, 2)]
        );
    }

    #[test]
    fn a_replacement_within_the_timeout_restores_the_full_world() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(policy(), t0);
        formed(&mut c, t0);
        c.on_disconnect(1, t0, 0.0);
        c.on_message(4, join(0), t0, 0.0);
        let m = memberships(&c.tick(t0, 0.0));
        assert_eq!(m, vec![(4, 2, 0, 3), (2, 2, 1, 3), (3, 2, 2, 3)]);
    }

    #[test]
    fn a_silent_worker_is_evicted_after_the_heartbeat_timeout() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(policy(), t0);
        formed(&mut c, t0);
        let t1 = t0 + Duration::from_millis(1200);
        for id in [1, 2] {
            c.on_message(id, FromWorker::Heartbeat { step: 3 }, t1, 0.0);
        }
        let out = c.tick(t1, 0.0);
        assert!(out.contains(&Output::Close(3)));
        assert_eq!(aborts(&out), vec![1, 2]);
    }

    #[test]
    fn below_min_for_too_long_shuts_the_job_down_and_done_workers_are_not_failures() {
        let t0 = Instant::now();
        let mut c = Coordinator::new(policy(), t0);
        formed(&mut c, t0);
        c.on_disconnect(1, t0, 0.0);
        c.on_disconnect(2, t0, 0.0);
        let late = t0 + Duration::from_secs(31);
        c.on_message(3, FromWorker::Heartbeat { step: 0 }, late, 0.0);
        let out = c.tick(late, 0.0);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Send(3, ToWorker::Shutdown { .. }))));

        let mut c = Coordinator::new(policy(), t0);
        formed(&mut c, t0);
        for id in 1..=3 {
            c.on_message(id, FromWorker::Done { step: 9 }, t0, 0.0);
        }
        assert!(c.finished());
        assert!(aborts(&c.on_disconnect(1, t0, 0.0)).is_empty());
    }
}
