//! An incremental `text/event-stream` parser: the WHATWG rules the log service's
//! tail uses (`field: value` lines, `:` comments, a blank line dispatches).
//!
//! Bytes may arrive split anywhere — inside a field name, between `\r` and `\n` —
//! and the events come out the same.
//!
//! ```
//! use runlog_client::sse::SseParser;
//! let mut parser = SseParser::default();
//! let mut events = Vec::new();
//! parser.push(b"id: 0\ndata: {\"pos\":0}\n", &mut events).unwrap();
//! assert!(events.is_empty(), "an event is dispatched by the blank line");
//! parser.push(b"\nevent: eof\ndata:\n\n", &mut events).unwrap();
//! assert_eq!(events[0].data, "{\"pos\":0}");
//! assert_eq!(events[1].event, "eof");
//! ```

/// A partial line longer than this means the peer is not speaking SSE; the service's
/// own lines are bounded far below it.
pub const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

/// One Server-Sent Event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name; empty for the default (`message`).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:`, if the event had one.
    pub id: Option<String>,
}

/// The peer sent a line longer than [`MAX_SSE_LINE`] without ending it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line exceeds {MAX_SSE_LINE} bytes")]
pub struct LineTooLong;

/// Parses an event stream fed in chunks of any size.
#[derive(Debug, Default)]
pub struct SseParser {
    partial: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds a chunk; every event it completes is pushed onto `out`. Refuses a
    /// partial line past [`MAX_SSE_LINE`] (memory stays bounded whatever the peer
    /// sends).
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                self.partial.extend_from_slice(line);
                let joined = std::mem::take(&mut self.partial);
                self.line(&joined, out);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_SSE_LINE {
            return Err(LineTooLong);
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            if self.has_data || !event.event.is_empty() {
                out.push(event);
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive ping)
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).expect("within limits");
        }
        out
    }

    #[test]
    fn sse_events_split_across_chunks_are_joined() {
        let events = parse_all(&[
            b"id: 4\nda",
            b"ta: {\"pos\":4}\r\n",
            b"\n: ping\n\nevent: eof\ndata:\n\n",
        ]);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].id.as_deref(), Some("4"));
        assert_eq!(events[0].data, "{\"pos\":4}");
        assert_eq!(events[1].event, "eof");
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream: &[u8] =
            b"id: 0\r\ndata: {\"pos\":0}\r\n\r\n: ping\n\nid: 1\ndata: a\ndata: b\n\nevent: eof\ndata:\n\n";
        let whole = parse_all(&[stream]);
        assert_eq!(whole.len(), 3, "{whole:?}");
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(parse_all(&[a, b]), whole, "split at {at}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytewise), whole);
    }

    #[test]
    fn data_lines_join_with_newlines_and_unknown_fields_are_ignored() {
        let events = parse_all(&[b"retry: 10\ndata: one\nfoo: bar\ndata:two\ndata\n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "one\ntwo\n");
        assert_eq!(events[0].event, "");
        assert_eq!(events[0].id, None);
    }

    #[test]
    fn a_named_event_without_data_is_dispatched_but_an_id_alone_is_not() {
        let events = parse_all(&[b"id: 3\n\nevent: eof\n\n"]);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].event, "eof");
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn comments_alone_dispatch_nothing() {
        assert!(parse_all(&[b": ping\n\n: ping\n\n"]).is_empty());
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched_yet() {
        assert!(parse_all(&[b"data: half\n"]).is_empty());
    }

    #[test]
    fn an_endless_sse_line_is_refused() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_SSE_LINE + 1];
        assert_eq!(p.push(&big, &mut out), Err(LineTooLong));
    }
}
