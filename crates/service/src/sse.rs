//! Server-Sent Events framing for `GET /stream`, written by hand.
//!
//! One body chunk carries a whole chunk of lines (`id: <pos>\ndata: <json>\n\n`
//! each), rather than one `Event` per line, so a 200 000-line backfill is ~100
//! writes. The body is pulled by hyper only as fast as the socket drains, and the
//! tail behind it reads the store only when pulled: a slow viewer costs reads later,
//! never a buffer now, and never slows a writer.

use crate::metrics::SubscriberGuard;
use crate::store::{StoreError, StoredLine, TailItem};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use std::io::Write;
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

/// The frame that ends a stream that was closed.
pub const EOF_FRAME: &[u8] = b"event: eof\ndata: eof\n\n";
/// The keep-alive comment.
pub const PING_FRAME: &[u8] = b": ping\n\n";

/// Encodes lines as SSE events into one buffer.
pub fn encode_lines(lines: &[StoredLine]) -> Bytes {
    let size: usize = lines.iter().map(|l| l.json.len() + 32).sum();
    let mut buf = Vec::with_capacity(size);
    for l in lines {
        // Writing to a Vec cannot fail.
        let _ = write!(buf, "id: {}\ndata: ", l.pos);
        buf.extend_from_slice(&l.json);
        buf.extend_from_slice(b"\n\n");
    }
    Bytes::from(buf)
}

fn error_frame(e: &StoreError) -> Bytes {
    let body = serde_json::json!({ "error_msg": e.to_string() });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

struct State {
    tail: BoxStream<'static, Result<TailItem, StoreError>>,
    ping: Interval,
    shutdown: CancellationToken,
    done: bool,
    _guard: SubscriberGuard,
}

/// The SSE body over a tail: lines, pings while idle, `eof` at the end; ends early
/// (without `eof`) when the service shuts down.
pub fn body(
    tail: BoxStream<'static, Result<TailItem, StoreError>>,
    ping_every: Duration,
    shutdown: CancellationToken,
    guard: SubscriberGuard,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = State {
        tail,
        ping,
        shutdown,
        done: false,
        _guard: guard,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let frame = tokio::select! {
            biased;
            _ = s.shutdown.cancelled() => return None,
            item = s.tail.next() => match item {
                Some(Ok(TailItem::Lines(lines))) => {
                    s.ping.reset();
                    encode_lines(&lines)
                }
                Some(Ok(TailItem::Eof)) | None => {
                    s.done = true;
                    Bytes::from_static(EOF_FRAME)
                }
                Some(Err(e)) => {
                    s.done = true;
                    error_frame(&e)
                }
            },
            _ = s.ping.tick() => Bytes::from_static(PING_FRAME),
        };
        Some((Ok(frame), s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_pos_as_id() {
        let lines = [StoredLine {
            pos: 7,
            json: Bytes::from_static(b"{\"pos\":7}"),
        }];
        assert_eq!(&encode_lines(&lines)[..], b"id: 7\ndata: {\"pos\":7}\n\n");
    }
}
