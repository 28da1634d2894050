//! The trainer's rendezvous: the sans-IO `Coordinator` fed arbitrary worker lines,
//! disconnects and clock ticks, the way `rendezvous::serve` feeds it.
//!
//! Input: text lines.
//!
//! * `policy MIN MAX STARTUP_MS REPLACE_MS HEARTBEAT_MS` (first line only; otherwise
//!   min 2, max 3, 30 s, 2 s, 1 s), clamped as `trainer rendezvous` clamps its flags.
//! * `ID JSON`: a line from connection `ID` (1..=16), parsed as `FromWorker` like the
//!   server's reader (a line that does not parse is ignored, as there).
//! * `ID close`: connection `ID` closed.
//! * `+MS`: the clock moves on `MS` milliseconds (at most an hour a line).
//!
//! As in the server, `tick` runs after every line, a `Close` output ends the connection
//! (its disconnect follows) and a closed connection's id is never reused. Checked besides
//! "never panics": every message reaches a connected worker and reads back as itself (the
//! client's parse), every event reads back as the stdout line the harness parses, and each
//! formation is a valid ring: one epoch higher than the last, ranks 0..world once each,
//! `min_workers ≤ world ≤ max_workers`, peers that are the members' addresses, none once
//! the coordinator said it finished, and aborts only for the current epoch.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use trainer::rendezvous::{Coordinator, FromWorker, MemberId, Output, Policy, ToWorker};
use wire::trainer::EventLine;

const MAX_ID: MemberId = 16;
const MAX_STEP_MS: u64 = 3_600_000;

/// What the test harness knows about the connections (the server's `conns` map).
#[derive(Default)]
struct World {
    /// Connected ids and their last joined data address.
    connected: BTreeMap<MemberId, Option<String>>,
    closed: BTreeSet<MemberId>,
    /// Members of the last epoch formed, in rank order.
    members: Vec<MemberId>,
    epoch: u64,
    /// The coordinator said it was finished (done or shut down): `serve` stops there.
    finished: bool,
}

fn policy(line: &str) -> Option<Policy> {
    let mut n = line.strip_prefix("policy ")?.split_whitespace();
    let mut next = || n.next().and_then(|v| v.parse::<u64>().ok());
    let (min, max) = (next()?.min(64) as usize, next()?.min(64) as usize);
    let mut ms = || next().map(|v| Duration::from_millis(v.min(MAX_STEP_MS)));
    let (startup, replace, heartbeat) = (ms()?, ms()?, ms()?);
    // As `trainer rendezvous` builds it from its flags.
    Some(Policy {
        min_workers: min.min(max).max(1),
        max_workers: max.max(1),
        startup_timeout: startup,
        replace_timeout: replace,
        heartbeat_timeout: heartbeat,
    })
}

fn check(
    outputs: Vec<Output>,
    policy: &Policy,
    world: &mut World,
    coord: &Coordinator,
) -> Vec<MemberId> {
    let mut closes = Vec::new();
    let mut formed: Vec<(usize, usize, Vec<String>, MemberId)> = Vec::new();
    for o in outputs {
        match o {
            Output::Send(id, msg) => {
                assert!(
                    world.connected.contains_key(&id),
                    "{msg:?} sent to {id}, which is not connected"
                );
                let line = serde_json::to_string(&msg).expect("a message serializes");
                let back: ToWorker = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{line} does not read back: {e}"));
                assert_eq!(back, msg, "{line} reads back as another message");
                match msg {
                    ToWorker::Membership {
                        epoch,
                        rank,
                        world: size,
                        peers,
                        ..
                    } => {
                        assert_eq!(epoch, coord.epoch(), "membership of an old epoch");
                        assert_eq!(peers.len(), size, "{size} members, {} peers", peers.len());
                        formed.push((rank, size, peers, id));
                    }
                    ToWorker::Abort { epoch, .. } => {
                        assert_eq!(
                            epoch, world.epoch,
                            "abort of epoch {epoch}, not the current"
                        );
                        assert!(
                            world.members.contains(&id),
                            "abort sent to a non-member {id}"
                        );
                    }
                    ToWorker::Shutdown { .. } => {}
                }
            }
            Output::Close(id) => closes.push(id),
            Output::Event(event) => {
                let line = EventLine {
                    t_unix_s: 1.0,
                    event,
                };
                let text = serde_json::to_string(&line).expect("an event serializes");
                let back: EventLine = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{text} does not read back: {e}"));
                assert_eq!(back, line, "{text} reads back as another event");
            }
        }
    }
    if !formed.is_empty() {
        assert!(!world.finished, "a ring formed after the job finished");
        let size = formed[0].1;
        assert_eq!(coord.epoch(), world.epoch + 1, "an epoch was skipped");
        assert!(
            (policy.min_workers..=policy.max_workers).contains(&size),
            "a ring of {size} with policy {policy:?}"
        );
        assert_eq!(
            formed.len(),
            size,
            "{} memberships for a ring of {size}",
            formed.len()
        );
        formed.sort_by_key(|f| f.0);
        for (rank, f) in formed.iter().enumerate() {
            assert_eq!(
                (f.0, f.1),
                (rank, size),
                "ranks are not 0..{size} once each"
            );
            assert_eq!(f.2, formed[0].2, "members disagree on the peers");
            let addr = world.connected[&f.3].as_ref().expect("a member has joined");
            assert_eq!(&f.2[rank], addr, "peer {rank} is not its member's address");
        }
        world.epoch = coord.epoch();
        world.members = formed.iter().map(|f| f.3).collect();
    }
    world.finished |= coord.finished();
    closes
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines().peekable();
    let given = lines.peek().and_then(|l| policy(l));
    if given.is_some() {
        lines.next();
    }
    let policy = given.unwrap_or(Policy {
        min_workers: 2,
        max_workers: 3,
        startup_timeout: Duration::from_secs(30),
        replace_timeout: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(1),
    });
    let t0 = Instant::now();
    let mut elapsed = Duration::ZERO;
    let mut coord = Coordinator::new(policy, t0);
    let mut world = World::default();
    let mut disconnects: VecDeque<MemberId> = VecDeque::new();
    for line in lines {
        let now = t0 + elapsed;
        let unix_s = 1.7e9 + elapsed.as_secs_f64();
        let mut outputs = Vec::new();
        if let Some(ms) = line.strip_prefix('+') {
            let ms = ms.trim().parse::<u64>().unwrap_or(0).min(MAX_STEP_MS);
            elapsed += Duration::from_millis(ms);
        } else if let Some((id, rest)) = line.split_once(' ') {
            let Some(id) = id
                .parse::<MemberId>()
                .ok()
                .filter(|id| (1..=MAX_ID).contains(id))
            else {
                continue;
            };
            if world.closed.contains(&id) {
                continue;
            }
            if rest.trim() == "close" {
                disconnects.push_back(id);
            } else if let Ok(msg) = serde_json::from_str::<FromWorker>(rest) {
                let addr = world.connected.entry(id).or_default();
                if let FromWorker::Join { data_addr, .. } = &msg {
                    *addr = Some(data_addr.clone());
                }
                outputs = coord.on_message(id, msg, now, unix_s);
            }
        }
        let now = t0 + elapsed;
        let unix_s = 1.7e9 + elapsed.as_secs_f64();
        loop {
            outputs.extend(coord.tick(now, unix_s));
            for id in check(std::mem::take(&mut outputs), &policy, &mut world, &coord) {
                // The server shuts the socket; its reader then reports the disconnect.
                world.connected.remove(&id);
                world.closed.insert(id);
                disconnects.push_back(id);
            }
            let Some(id) = disconnects.pop_front() else {
                break;
            };
            world.connected.remove(&id);
            world.closed.insert(id);
            outputs = coord.on_disconnect(id, now, unix_s);
        }
    }
});
