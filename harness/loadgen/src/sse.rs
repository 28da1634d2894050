//! Server-sent events, parsed for token timing (TTFT, ITL, TPOT as in metrics.md).
//!
//! Sans-IO: feed body chunks with their arrival time, read the timings at the end.
//! A *content event* is a `data:` event other than `[DONE]` and other than an
//! OpenAI-style usage-only chunk (`"choices": []`). `[DONE]` ends the stream; later
//! bytes are ignored. If an event carries `usage.completion_tokens`, that is the token
//! count; otherwise the number of content events is.

use std::time::Duration;

use crate::record::StreamTimes;

/// The stream was not valid SSE (invalid UTF-8 in a data line) or its JSON did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed server-sent event stream: {0}")]
pub struct DecodeError(pub &'static str);

/// Incremental SSE parser that records when each content event arrived.
#[derive(Debug, Default)]
pub struct StreamTracker {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    done: bool,
    events: u64,
    usage_tokens: Option<u64>,
    first: Option<Duration>,
    last: Option<Duration>,
    itl_us: Vec<u64>,
}

impl StreamTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `data: [DONE]` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Content events seen so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Feeds a body chunk that arrived at `now` (any clock, as an offset).
    pub fn feed(&mut self, now: Duration, chunk: &[u8]) -> Result<(), DecodeError> {
        let mut rest = chunk;
        while !self.done {
            let Some(pos) = rest.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(rest);
                break;
            };
            self.line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.on_line(now, &line)?;
            line.clear();
            self.line = line;
        }
        Ok(())
    }

    /// The body ended at `now`; a final event without its blank line still counts.
    pub fn finish(mut self, now: Duration) -> Result<StreamTimes, DecodeError> {
        if !self.done {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.on_line(now, &line)?;
            }
            self.dispatch(now)?;
        }
        Ok(StreamTimes {
            first_token: self.first,
            itl_us: self.itl_us,
            tokens: self.usage_tokens.unwrap_or(self.events),
        })
    }

    fn on_line(&mut self, now: Duration, line: &[u8]) -> Result<(), DecodeError> {
        if line.is_empty() {
            return self.dispatch(now);
        }
        if let Some(value) = line.strip_prefix(b"data") {
            let value = match value {
                [b':', b' ', v @ ..] | [b':', v @ ..] => v,
                [] => &[][..],
                _ => return Ok(()), // a field named e.g. "database"
            };
            if std::str::from_utf8(value).is_err() {
                return Err(DecodeError("data line is not UTF-8"));
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        // Comments (":…") and other fields (event, id, retry) do not affect timing.
        Ok(())
    }

    fn dispatch(&mut self, now: Duration) -> Result<(), DecodeError> {
        if !self.has_data {
            return Ok(());
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        let trimmed = data.trim_ascii();
        let content = if trimmed == b"[DONE]" {
            self.done = true;
            false
        } else if contains(trimmed, b"\"usage\"") {
            let v: serde_json::Value = serde_json::from_slice(trimmed)
                .map_err(|_| DecodeError("event with \"usage\" is not valid JSON"))?;
            if let Some(n) = v
                .get("usage")
                .and_then(|u| u.get("completion_tokens"))
                .and_then(serde_json::Value::as_u64)
            {
                self.usage_tokens = Some(n);
            }
            !matches!(v.get("choices").and_then(|c| c.as_array()), Some(c) if c.is_empty())
        } else {
            true
        };
        if content {
            self.events += 1;
            if self.first.is_none() {
                self.first = Some(now);
            }
            if let Some(last) = self.last {
                self.itl_us
                    .push(u64::try_from(now.saturating_sub(last).as_micros()).unwrap_or(u64::MAX));
            }
            self.last = Some(now);
        }
        self.data = data;
        self.data.clear();
        Ok(())
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn events_split_across_chunks_are_timed_when_complete() {
        let mut t = StreamTracker::new();
        t.feed(ms(10), b"data: {\"choices\":[{\"text\":\"a\"}]}\n")
            .expect("ok");
        assert_eq!(t.events(), 0, "no blank line yet");
        t.feed(ms(11), b"\ndata: b\r\n\r\n: keep-alive\n\nda")
            .expect("ok");
        t.feed(ms(20), b"ta: c\n\ndata: [DONE]\n\ndata: ignored\n\n")
            .expect("ok");
        assert!(t.is_done());
        let s = t.finish(ms(25)).expect("ok");
        assert_eq!(s.first_token, Some(ms(11)));
        assert_eq!(s.tokens, 3);
        assert_eq!(s.itl_us, vec![0, 9_000]);
    }

    #[test]
    fn usage_overrides_token_count_and_usage_only_chunk_is_not_content() {
        let mut t = StreamTracker::new();
        t.feed(ms(1), b"data: x\n\ndata: y\n\n").expect("ok");
        t.feed(
            ms(5),
            b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":7}}\n\ndata: [DONE]\n\n",
        )
        .expect("ok");
        let s = t.finish(ms(6)).expect("ok");
        assert_eq!(s.tokens, 7);
        assert_eq!(s.itl_us.len(), 1);
    }

    #[test]
    fn multi_line_data_is_one_event_and_unterminated_last_event_counts() {
        let mut t = StreamTracker::new();
        t.feed(ms(1), b"data: a\ndata: b\n\ndata: c").expect("ok");
        let s = t.finish(ms(2)).expect("ok");
        assert_eq!(s.tokens, 2);
        assert_eq!(s.first_token, Some(ms(1)));
    }

    #[test]
    fn bad_usage_json_and_non_utf8_are_decode_errors() {
        let mut t = StreamTracker::new();
        assert!(t.feed(ms(1), b"data: {\"usage\": nope\n\n").is_err());
        let mut t = StreamTracker::new();
        assert!(t.feed(ms(1), b"data: \xff\xfe\n\n").is_err());
    }
}
