//! One direction of one proxied connection as a sans-IO state machine: bytes and the
//! peer's close go in with the time they arrived; out come writes, half-closes and
//! connection kills, each due at a time the toxics decided.
//!
//! The async shell (`link.rs`) only reads, asks [`Pipe::poll`] what is due, sleeps until
//! [`Pipe::next_deadline`], and tells the pipe when the proxy's toxics change. With no
//! toxic running, [`Pipe::is_passthrough`] lets the shell copy bytes straight through.
//!
//! Toxics act in the order they were added (Toxiproxy's chain). Every event keeps its
//! order: a later chunk never overtakes an earlier one, whatever the jitter. Toxics added
//! while a connection is open act on it from then on; removed ones stop acting, and what
//! they already scheduled is still delivered (Toxiproxy flushes the same way).

use crate::toxic::{Kind, Toxic};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes a pipe holds scheduled but not yet written; reading stops above it, so a
/// slow toxic pushes back on the sender instead of buffering without bound.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// How a connection is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Both sides closed normally (FIN).
    Fin,
    /// Both sides reset (RST: SO_LINGER 0, then close).
    Reset,
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the destination.
    Write(Vec<u8>),
    /// Half-close the destination (the source closed its sending side).
    Shutdown,
    /// End the whole connection, both directions.
    Kill(Close),
}

/// A toxic with the identity the registry gave it: a new id on every add or update, so a
/// pipe keeps a toxic's running state exactly as long as the toxic is unchanged.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub toxic: Toxic,
    /// HTTP toxics: messages acted on so far, across connections (what `count` bounds).
    pub acted: std::sync::atomic::AtomicU64,
}

impl Entry {
    pub fn new(id: u64, toxic: Toxic) -> Self {
        Self {
            id,
            toxic,
            acted: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Data(Instant, Vec<u8>),
    Eof(Instant),
    Kill(Instant, Close),
}

impl Ev {
    fn at(&self) -> Instant {
        match self {
            Ev::Data(t, _) | Ev::Eof(t) | Ev::Kill(t, _) => *t,
        }
    }
    fn set_at(&mut self, at: Instant) {
        match self {
            Ev::Data(t, _) | Ev::Eof(t) | Ev::Kill(t, _) => *t = at,
        }
    }
}

#[derive(Debug)]
struct Running {
    id: u64,
    kind: Kind,
    /// The toxicity draw for this connection: an inactive toxic passes everything.
    active: bool,
    started: Instant,
    /// Latency: when the last event leaves. Bandwidth: when the link is free again.
    clock: Option<Instant>,
    /// limit_data: bytes passed so far.
    passed: u64,
}

/// One direction of one connection.
#[derive(Debug)]
pub struct Pipe {
    running: Vec<Running>,
    queue: VecDeque<Ev>,
    queued_bytes: usize,
    rng: StdRng,
    /// Set once a kill or the half-close was handed out: nothing more comes.
    done: bool,
    /// Toxics fired (acted on at least one event or timer), by id, for the metrics.
    fired: Vec<u64>,
    /// A `timeout` or `blackhole` swallowed data or the close. Once none of them acts any
    /// more, the connection is reset rather than resumed: resuming would deliver the
    /// stream with a hole in it, which the peer could not tell from intact data.
    swallowed: bool,
}

impl Pipe {
    /// A pipe whose random choices (toxicity draws, jitter, slice sizes) come from `rng`.
    pub fn new(rng: StdRng) -> Self {
        Self {
            running: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            rng,
            done: false,
            fired: Vec::new(),
            swallowed: false,
        }
    }

    /// The toxics of this pipe's stream now, in chain order. Unchanged ones (same id) keep
    /// their state; new ones draw their toxicity and start their timers at `now`.
    pub fn set_toxics(&mut self, now: Instant, toxics: &[Arc<Entry>]) {
        let mut next = Vec::with_capacity(toxics.len());
        for e in toxics {
            if e.toxic.kind.is_http() {
                continue; // acted on by the HTTP layer, per message
            }
            if let Some(i) = self.running.iter().position(|r| r.id == e.id) {
                next.push(self.running.swap_remove(i));
                continue;
            }
            // rng.gen() is in [0, 1): toxicity 0 never acts, 1 always does.
            let active = self.rng.gen::<f32>() < e.toxic.toxicity;
            next.push(Running {
                id: e.id,
                kind: e.toxic.kind.clone(),
                active,
                started: now,
                clock: None,
                passed: 0,
            });
        }
        self.running = next;
        let swallowing = self
            .running
            .iter()
            .any(|r| r.active && matches!(r.kind, Kind::Timeout { .. } | Kind::Blackhole));
        if self.swallowed && !swallowing && !self.done {
            self.queue.push_back(Ev::Kill(now, Close::Reset));
            self.swallowed = false;
        }
    }

    /// No toxic is acting and nothing is scheduled: the shell may write what it reads at
    /// once, without handing it to the pipe.
    pub fn is_passthrough(&self) -> bool {
        self.queue.is_empty() && !self.running.iter().any(|r| r.active)
    }

    /// Whether the shell should read more from the source now.
    pub fn wants_read(&self) -> bool {
        !self.done && self.queued_bytes < MAX_QUEUED_BYTES
    }

    /// Bytes read from the source at `now`.
    pub fn on_data(&mut self, now: Instant, data: &[u8]) {
        if self.done || data.is_empty() {
            return;
        }
        self.push(Ev::Data(now, data.to_vec()));
    }

    /// The source closed its sending side at `now`.
    pub fn on_eof(&mut self, now: Instant) {
        if !self.done {
            self.push(Ev::Eof(now));
        }
    }

    /// Something above the pipe (the HTTP layer) ends the connection after what it handed
    /// in so far; the kill passes through the toxics like the data before it.
    pub fn on_kill(&mut self, now: Instant, close: Close) {
        if !self.done {
            self.push(Ev::Kill(now, close));
        }
    }

    /// When the next action falls due, if anything is scheduled or timed.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let timer = self.timers().map(|(at, _)| at).min();
        let head = self.queue.front().map(Ev::at);
        match (timer, head) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next action due at `now`, if any. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if self.done {
            return None;
        }
        if let Some((_, (close, id))) = self
            .timers()
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)
        {
            self.done = true;
            self.fired.push(id);
            return Some(Action::Kill(close));
        }
        if self.queue.front().is_some_and(|e| e.at() <= now) {
            let ev = self.queue.pop_front()?;
            return Some(match ev {
                Ev::Data(_, bytes) => {
                    self.queued_bytes -= bytes.len();
                    Action::Write(bytes)
                }
                Ev::Eof(_) => {
                    self.done = true;
                    Action::Shutdown
                }
                Ev::Kill(_, close) => {
                    self.done = true;
                    Action::Kill(close)
                }
            });
        }
        None
    }

    /// The ids of toxics that acted since the last call (each once per event).
    pub fn take_fired(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.fired)
    }

    /// Timed kills: a `timeout` toxic (timeout > 0) closes, a `reset_peer` resets.
    fn timers(&self) -> impl Iterator<Item = (Instant, (Close, u64))> + '_ {
        self.running
            .iter()
            .filter(|r| r.active)
            .filter_map(|r| match r.kind {
                Kind::Timeout { timeout_ms } if timeout_ms > 0 => Some((
                    r.started + Duration::from_millis(timeout_ms),
                    (Close::Fin, r.id),
                )),
                Kind::ResetPeer { timeout_ms } => Some((
                    r.started + Duration::from_millis(timeout_ms),
                    (Close::Reset, r.id),
                )),
                _ => None,
            })
    }

    fn push(&mut self, ev: Ev) {
        let mut evs = vec![ev];
        for i in 0..self.running.len() {
            if !self.running[i].active || evs.is_empty() {
                continue;
            }
            let had = evs.iter().filter(|e| !matches!(e, Ev::Kill(..))).count();
            let (out, acted) = apply(&mut self.running[i], evs, &mut self.rng);
            evs = out;
            if matches!(self.running[i].kind, Kind::Timeout { .. } | Kind::Blackhole)
                && evs.iter().filter(|e| !matches!(e, Ev::Kill(..))).count() < had
            {
                self.swallowed = true;
            }
            if acted {
                self.fired.push(self.running[i].id);
            }
        }
        // Order is kept: nothing leaves before what was scheduled ahead of it.
        let mut floor = self.queue.back().map(Ev::at);
        for mut ev in evs {
            if let Some(f) = floor {
                if ev.at() < f {
                    ev.set_at(f);
                }
            }
            floor = Some(ev.at());
            if let Ev::Data(_, b) = &ev {
                self.queued_bytes += b.len();
            }
            self.queue.push_back(ev);
        }
    }
}

/// One toxic's effect on a run of events, and whether it acted on them (for the fired
/// metric; counted from the events, never by copying them).
fn apply(t: &mut Running, evs: Vec<Ev>, rng: &mut StdRng) -> (Vec<Ev>, bool) {
    let count = |evs: &[Ev], f: fn(&Ev) -> bool| evs.iter().filter(|e| f(e)).count();
    let data = count(&evs, |e| matches!(e, Ev::Data(..)));
    let closes = count(&evs, |e| matches!(e, Ev::Eof(_) | Ev::Kill(_, Close::Fin)));
    let (n_in, kills_in) = (evs.len(), count(&evs, |e| matches!(e, Ev::Kill(..))));
    let kind = t.kind.clone();
    let out = transform(t, evs, rng);
    let acted = match kind {
        Kind::Latency { .. } | Kind::Bandwidth { .. } => n_in > 0,
        Kind::Slicer { .. } => data > 0,
        Kind::SlowClose { .. } => closes > 0,
        Kind::Timeout { .. } | Kind::Blackhole => out.len() < n_in,
        Kind::LimitData { .. } => count(&out, |e| matches!(e, Ev::Kill(..))) > kills_in,
        // Its timer fires in `poll`; the HTTP toxics act in the HTTP layer.
        Kind::ResetPeer { .. } | Kind::HttpError { .. } | Kind::HttpAbort { .. } => false,
    };
    (out, acted)
}

fn transform(t: &mut Running, evs: Vec<Ev>, rng: &mut StdRng) -> Vec<Ev> {
    match t.kind {
        Kind::Latency {
            latency_ms,
            jitter_ms,
        } => {
            let mut out = evs;
            for ev in &mut out {
                let base = latency_ms as i64 * 1000;
                let jitter = jitter_ms as i64 * 1000;
                let delay_us = if jitter > 0 {
                    (base + rng.gen_range(-jitter..=jitter)).max(0)
                } else {
                    base
                };
                let mut at = ev.at() + Duration::from_micros(delay_us as u64);
                if let Some(last) = t.clock {
                    at = at.max(last);
                }
                t.clock = Some(at);
                ev.set_at(at);
            }
            out
        }
        Kind::Bandwidth { rate_kbps } => {
            // Bytes leave in pieces of at most 10 ms of the rate, each when the link has
            // carried it: start at max(arrival, link free), leave at start + len / rate.
            let bytes_per_s = rate_kbps as f64 * 1000.0;
            let piece = ((bytes_per_s / 100.0) as usize).max(1);
            let mut out = Vec::with_capacity(evs.len());
            for ev in evs {
                let free = t.clock.unwrap_or(ev.at()).max(ev.at());
                match ev {
                    Ev::Data(_, bytes) => {
                        let mut at = free;
                        for chunk in bytes.chunks(piece) {
                            at += Duration::from_secs_f64(chunk.len() as f64 / bytes_per_s);
                            out.push(Ev::Data(at, chunk.to_vec()));
                        }
                        t.clock = Some(at);
                    }
                    mut other => {
                        other.set_at(free);
                        out.push(other);
                    }
                }
            }
            out
        }
        Kind::SlowClose { delay_ms } => evs
            .into_iter()
            .map(|mut ev| {
                if matches!(ev, Ev::Eof(_) | Ev::Kill(_, Close::Fin)) {
                    let at = ev.at() + Duration::from_millis(delay_ms);
                    ev.set_at(at);
                }
                ev
            })
            .collect(),
        // Data and the peer's close are dropped while a timeout toxic holds the stream;
        // kills still pass. A blackhole does the same and never times out itself.
        Kind::Timeout { .. } | Kind::Blackhole => evs
            .into_iter()
            .filter(|ev| matches!(ev, Ev::Kill(..)))
            .collect(),
        Kind::ResetPeer { .. } => evs,
        Kind::Slicer {
            average_size,
            size_variation,
            delay_us,
        } => {
            let mut out = Vec::with_capacity(evs.len());
            for ev in evs {
                let Ev::Data(at, bytes) = ev else {
                    out.push(ev);
                    continue;
                };
                let mut at = at;
                let mut rest = &bytes[..];
                let mut first = true;
                while !rest.is_empty() {
                    let size = if size_variation > 0 {
                        rng.gen_range(average_size - size_variation..=average_size + size_variation)
                    } else {
                        average_size
                    };
                    let n = (size as usize).clamp(1, rest.len());
                    if !first {
                        at += Duration::from_micros(delay_us);
                    }
                    first = false;
                    out.push(Ev::Data(at, rest[..n].to_vec()));
                    rest = &rest[n..];
                }
            }
            out
        }
        Kind::LimitData { bytes: limit } => {
            let mut out = Vec::with_capacity(evs.len());
            for ev in evs {
                if t.passed >= limit {
                    // Past the limit only the kill that ended it (already sent) matters.
                    continue;
                }
                match ev {
                    Ev::Data(at, mut bytes) => {
                        let room = limit - t.passed;
                        if (bytes.len() as u64) >= room {
                            bytes.truncate(room as usize);
                            t.passed = limit;
                            if !bytes.is_empty() {
                                out.push(Ev::Data(at, bytes));
                            }
                            out.push(Ev::Kill(at, Close::Fin));
                        } else {
                            t.passed += bytes.len() as u64;
                            out.push(Ev::Data(at, bytes));
                        }
                    }
                    other => out.push(other),
                }
            }
            out
        }
        Kind::HttpError { .. } | Kind::HttpAbort { .. } => evs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toxic::{parse_new, Stream};
    use rand::SeedableRng;

    fn entry(id: u64, json: &str) -> Arc<Entry> {
        Arc::new(Entry::new(
            id,
            parse_new(json.as_bytes()).expect("valid toxic"),
        ))
    }

    fn pipe(toxics: &[Arc<Entry>], t0: Instant) -> Pipe {
        let mut p = Pipe::new(StdRng::seed_from_u64(7));
        p.set_toxics(t0, toxics);
        p
    }

    /// Runs the pipe's clock forward, collecting (time since t0 in ms, action).
    fn drain(p: &mut Pipe, t0: Instant) -> Vec<(u64, Action)> {
        let mut out = Vec::new();
        while let Some(at) = p.next_deadline() {
            while let Some(a) = p.poll(at) {
                out.push(((at - t0).as_millis() as u64, a));
            }
        }
        out
    }

    #[test]
    fn without_toxics_bytes_pass_at_once_in_order() {
        let t0 = Instant::now();
        let mut p = pipe(&[], t0);
        assert!(p.is_passthrough());
        p.on_data(t0, b"ab");
        p.on_eof(t0);
        assert_eq!(
            drain(&mut p, t0),
            vec![(0, Action::Write(b"ab".to_vec())), (0, Action::Shutdown)]
        );
    }

    #[test]
    fn latency_delays_every_chunk_and_the_close_and_keeps_order_under_jitter() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"latency","attributes":{"latency":100,"jitter":50}}"#,
            )],
            t0,
        );
        assert!(!p.is_passthrough());
        let mut sent = Vec::new();
        for i in 0..50u8 {
            let at = t0 + Duration::from_millis(i as u64);
            p.on_data(at, &[i]);
            sent.push(i);
        }
        p.on_eof(t0 + Duration::from_millis(60));
        let out = drain(&mut p, t0);
        let bytes: Vec<u8> = out
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Write(b) => Some(b[0]),
                _ => None,
            })
            .collect();
        assert_eq!(bytes, sent, "order kept");
        assert!(out.iter().all(|(ms, _)| *ms >= 50), "{out:?}");
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(out.last().map(|x| &x.1), Some(&Action::Shutdown));
    }

    #[test]
    fn bandwidth_paces_bytes_at_the_rate() {
        let t0 = Instant::now();
        // 10 KB/s: 5,000 bytes take 500 ms.
        let mut p = pipe(
            &[entry(1, r#"{"type":"bandwidth","attributes":{"rate":10}}"#)],
            t0,
        );
        p.on_data(t0, &[7u8; 5000]);
        let out = drain(&mut p, t0);
        let total: usize = out
            .iter()
            .map(|(_, a)| match a {
                Action::Write(b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 5000);
        let last = out.last().expect("writes").0;
        assert!((499..=501).contains(&last), "{last} ms");
    }

    #[test]
    fn timeout_drops_data_then_closes_and_zero_holds_until_removed_then_resets() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"timeout","attributes":{"timeout":200}}"#,
            )],
            t0,
        );
        p.on_data(t0, b"lost");
        p.on_eof(t0);
        assert_eq!(drain(&mut p, t0), vec![(200, Action::Kill(Close::Fin))]);

        let hold = entry(2, r#"{"type":"timeout","attributes":{"timeout":0}}"#);
        let mut p = pipe(&[hold], t0);
        p.on_data(t0, b"lost");
        assert_eq!(p.next_deadline(), None, "held: nothing ever due");
        // Removed after it swallowed data: the stream would have a hole, so it is reset.
        p.set_toxics(t0 + Duration::from_millis(5), &[]);
        p.on_data(t0 + Duration::from_millis(6), b"after");
        assert_eq!(drain(&mut p, t0), vec![(5, Action::Kill(Close::Reset))]);

        // Removed before anything was swallowed: data flows on.
        let mut p = pipe(
            &[entry(3, r#"{"type":"timeout","attributes":{"timeout":0}}"#)],
            t0,
        );
        p.set_toxics(t0 + Duration::from_millis(5), &[]);
        p.on_data(t0 + Duration::from_millis(6), b"after");
        assert_eq!(
            drain(&mut p, t0),
            vec![(6, Action::Write(b"after".to_vec()))]
        );
    }

    #[test]
    fn reset_peer_resets_after_its_timeout_and_lets_data_through_before() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"reset_peer","attributes":{"timeout":50}}"#,
            )],
            t0,
        );
        p.on_data(t0, b"x");
        assert_eq!(
            drain(&mut p, t0),
            vec![
                (0, Action::Write(b"x".to_vec())),
                (50, Action::Kill(Close::Reset))
            ]
        );
    }

    #[test]
    fn limit_data_passes_exactly_the_limit_then_closes() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"limit_data","attributes":{"bytes":5}}"#,
            )],
            t0,
        );
        p.on_data(t0, b"abc");
        p.on_data(t0, b"defg");
        p.on_data(t0, b"h");
        assert_eq!(
            drain(&mut p, t0),
            vec![
                (0, Action::Write(b"abc".to_vec())),
                (0, Action::Write(b"de".to_vec())),
                (0, Action::Kill(Close::Fin))
            ]
        );
    }

    #[test]
    fn slicer_cuts_data_into_slices_delay_apart() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"slicer","attributes":{"average_size":4,"size_variation":2,"delay":1000}}"#,
            )],
            t0,
        );
        let data: Vec<u8> = (0..100).collect();
        p.on_data(t0, &data);
        let out = drain(&mut p, t0);
        let mut got = Vec::new();
        for (_, a) in &out {
            let Action::Write(b) = a else { panic!("{a:?}") };
            assert!((2..=6).contains(&b.len()) || got.len() + b.len() == 100);
            got.extend_from_slice(b);
        }
        assert_eq!(got, data);
        assert!(out.len() >= 17 && out.last().expect("slices").0 >= 16);
    }

    #[test]
    fn slow_close_delays_only_the_close() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"slow_close","attributes":{"delay":300}}"#,
            )],
            t0,
        );
        p.on_data(t0, b"x");
        p.on_eof(t0);
        assert_eq!(
            drain(&mut p, t0),
            vec![(0, Action::Write(b"x".to_vec())), (300, Action::Shutdown)]
        );
    }

    #[test]
    fn a_blackhole_swallows_data_and_the_close() {
        let t0 = Instant::now();
        let mut p = pipe(&[entry(1, r#"{"type":"blackhole"}"#)], t0);
        p.on_data(t0, b"x");
        p.on_eof(t0);
        assert_eq!(drain(&mut p, t0), vec![]);
        assert!(p.wants_read(), "it keeps reading (and dropping)");
    }

    #[test]
    fn toxicity_zero_never_acts_and_one_always_does() {
        let t0 = Instant::now();
        for seed in 0..200 {
            let mut p = Pipe::new(StdRng::seed_from_u64(seed));
            p.set_toxics(
                t0,
                &[entry(
                    1,
                    r#"{"type":"timeout","toxicity":0,"attributes":{"timeout":0}}"#,
                )],
            );
            assert!(p.is_passthrough());
            let mut p = Pipe::new(StdRng::seed_from_u64(seed));
            p.set_toxics(
                t0,
                &[entry(
                    1,
                    r#"{"type":"timeout","toxicity":1,"attributes":{"timeout":0}}"#,
                )],
            );
            assert!(!p.is_passthrough());
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_schedule() {
        let t0 = Instant::now();
        let run = || {
            let mut p = pipe(
                &[
                    entry(
                        1,
                        r#"{"type":"latency","toxicity":0.5,"attributes":{"latency":10,"jitter":9}}"#,
                    ),
                    entry(
                        2,
                        r#"{"type":"slicer","attributes":{"average_size":8,"size_variation":7,"delay":10}}"#,
                    ),
                ],
                t0,
            );
            p.on_data(t0, &[1u8; 300]);
            drain(&mut p, t0)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn removing_a_toxic_keeps_what_it_scheduled() {
        let t0 = Instant::now();
        let mut p = pipe(
            &[entry(
                1,
                r#"{"type":"latency","attributes":{"latency":100}}"#,
            )],
            t0,
        );
        p.on_data(t0, b"a");
        p.set_toxics(t0 + Duration::from_millis(1), &[]);
        p.on_data(t0 + Duration::from_millis(2), b"b");
        assert_eq!(
            drain(&mut p, t0),
            vec![
                (100, Action::Write(b"a".to_vec())),
                (100, Action::Write(b"b".to_vec()))
            ]
        );
        let _ = Stream::Upstream;
    }
}
