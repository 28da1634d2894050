//! Request accounting: every scheduled request ends in exactly one bucket.
//!
//! `sent = ok + errors(kind…) + timeouts + dropped_by_generator` (metrics.md, "Accounting").

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a request failed (a timeout and a generator drop are counted separately in [`Counts`]).
///
/// Displays and serialises as a bounded snake_case label: `connect_refused`,
/// `connection_reset`, `connect`, `http_429`, `body`, `decode`, `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect was refused (nothing listening).
    ConnectRefused,
    /// The peer reset or closed the connection before the response was complete.
    ConnectionReset,
    /// Any other connect failure (unreachable, handshake error, …).
    Connect,
    /// The load generator itself ran out of a local resource before the request reached
    /// the target: file descriptors (`EMFILE`, `ENFILE`: raise `ulimit -n` or lower the
    /// connections) or local ports and buffers (`EADDRNOTAVAIL`, `ENOBUFS`). The
    /// generator's failure, not the target's: `faultline run` fails the run on it and
    /// `faultline load` warns.
    GeneratorResources,
    /// The response status was not 2xx.
    HttpStatus(u16),
    /// Reading the response body failed.
    Body,
    /// The response was not valid HTTP/1.1, or the streaming body was not valid SSE,
    /// or its JSON payload did not parse.
    Decode,
    /// Anything else (protocol errors, …).
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::ConnectRefused => f.write_str("connect_refused"),
            ErrorKind::ConnectionReset => f.write_str("connection_reset"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::GeneratorResources => f.write_str("generator_resources"),
            ErrorKind::HttpStatus(code) => write!(f, "http_{code}"),
            ErrorKind::Body => f.write_str("body"),
            ErrorKind::Decode => f.write_str("decode"),
            ErrorKind::Other => f.write_str("other"),
        }
    }
}

/// The label was not one of the [`ErrorKind`] labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind {0:?}: expected connect_refused, connection_reset, connect, generator_resources, http_<code>, body, decode or other")]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "connect_refused" => ErrorKind::ConnectRefused,
            "connection_reset" => ErrorKind::ConnectionReset,
            "connect" => ErrorKind::Connect,
            "generator_resources" => ErrorKind::GeneratorResources,
            "body" => ErrorKind::Body,
            "decode" => ErrorKind::Decode,
            "other" => ErrorKind::Other,
            _ => match s.strip_prefix("http_").map(str::parse::<u16>) {
                Some(Ok(code)) => ErrorKind::HttpStatus(code),
                _ => return Err(UnknownErrorKind(s.to_owned())),
            },
        })
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Above this share of generator drops (`dropped_by_generator / sent`, 1 %) the figures
/// describe the generator's backlog more than the target: `faultline load` and the
/// faultline summary warn. (`report::summary` holds the same bound for the runner.)
pub const DROP_SHARE_WARN_ABOVE: f64 = 0.01;

/// Request counts for a window, a phase or a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests scheduled (open loop) or started (closed loop) in the span.
    pub sent: u64,
    /// Requests answered 2xx with a complete body.
    pub ok: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Requests that did not complete within the request timeout.
    pub timeouts: u64,
    /// Requests the generator never put on the wire (open loop only): a request waits
    /// in its target's queue from its intended send until a connection of that target is
    /// free; when one takes it, it is dropped instead of sent if it has already waited
    /// longer than the request timeout, or if the run was cancelled (Ctrl-C, the
    /// runner's stop). A closed loop never drops.
    pub dropped_by_generator: u64,
}

impl Counts {
    /// Requests that did not succeed: errors + timeouts + generator drops.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.timeouts + self.dropped_by_generator
    }

    /// `dropped_by_generator / sent`: the share of requests the generator never put on
    /// the wire (see [`Counts::dropped_by_generator`]); `None` when nothing was sent.
    pub fn drop_share(&self) -> Option<f64> {
        (self.sent > 0).then(|| self.dropped_by_generator as f64 / self.sent as f64)
    }

    /// Whether `sent == ok + errors + timeouts + dropped_by_generator`.
    pub fn balanced(&self) -> bool {
        self.sent == self.ok + self.failed()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_insert(0) += n;
        }
        self.timeouts += other.timeouts;
        self.dropped_by_generator += other.dropped_by_generator;
    }

    /// Counts one finished request (which is also counted as sent).
    pub(crate) fn record(&mut self, result: &Completion) {
        self.sent += 1;
        match result {
            Completion::Ok => self.ok += 1,
            Completion::Error(kind) => *self.errors.entry(*kind).or_insert(0) += 1,
            Completion::Timeout => self.timeouts += 1,
            Completion::Dropped => self.dropped_by_generator += 1,
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    Ok,
    Error(ErrorKind),
    Timeout,
    Dropped,
}

impl Completion {
    /// Whether a whole response arrived, 2xx or not (wrk's "requests"): `Ok` or an
    /// `http_<status>` error. A malformed response, a reset or a timeout is not one.
    pub(crate) fn is_response(&self) -> bool {
        matches!(
            self,
            Completion::Ok | Completion::Error(ErrorKind::HttpStatus(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kind_labels_round_trip() {
        for kind in [
            ErrorKind::ConnectRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::Connect,
            ErrorKind::GeneratorResources,
            ErrorKind::HttpStatus(429),
            ErrorKind::Body,
            ErrorKind::Decode,
            ErrorKind::Other,
        ] {
            let label = kind.to_string();
            assert_eq!(label.parse::<ErrorKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{label}\""));
        }
        assert_eq!(ErrorKind::HttpStatus(503).to_string(), "http_503");
        assert!("http_x".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn counts_with_error_kinds_serialise_as_a_label_map() {
        let mut c = Counts::default();
        c.record(&Completion::Error(ErrorKind::HttpStatus(500)));
        c.record(&Completion::Ok);
        let json = serde_json::to_value(&c).expect("serialises");
        assert_eq!(json["errors"]["http_500"], 1);
        assert!(c.balanced());
        assert_eq!(c.failed(), 1);
    }
}
