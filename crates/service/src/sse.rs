//! Server-Sent Events framing for `GET /stream`, written by hand.
//!
//! One body chunk carries a whole chunk of lines (`id: <pos>\ndata: <json>\n\n`
//! each), rather than one `Event` per line, so a 200 000-line backfill is ~100
//! writes. The body is pulled by hyper only as fast as the socket drains, and the
//! tail behind it reads the store only when pulled: a slow viewer costs reads later,
//! never a buffer now, and never slows a writer.
//!
//! What a viewer that stops reading holds: the chunk being written (at most
//! [`TAIL_CHUNK_BYTES`](crate::store::TAIL_CHUNK_BYTES) of lines, or one longer
//! line) and hyper's write buffer (it stops pulling the body at ≈ 400 KiB queued).
//! A line longer than [`INLINE_LINE_BYTES`] is not copied into the frame but sent
//! as the store's own bytes, so a stalled viewer of a memory stream of huge lines
//! holds references, not copies. A viewer whose socket takes nothing for the write
//! timeout is dropped by the connection (`runlog_edge::WriteTimeout`).

use crate::metrics::SubscriberGuard;
use crate::store::{StoreError, StoredLine, TailItem};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

/// The frame that ends a stream that was closed.
pub const EOF_FRAME: &[u8] = b"event: eof\ndata: eof\n\n";
/// The keep-alive comment.
pub const PING_FRAME: &[u8] = b": ping\n\n";

/// Lines longer than this go out as their own bytes, not copied into a frame.
pub const INLINE_LINE_BYTES: usize = 16 << 10;

/// Encodes lines as SSE events into one buffer.
pub fn encode_lines(lines: &[StoredLine]) -> Bytes {
    encode_frames(lines).into_iter().flatten().collect()
}

/// Encodes lines as SSE events: runs of short lines copied into one buffer, a
/// line longer than [`INLINE_LINE_BYTES`] as its own `Bytes` between them.
pub fn encode_frames(lines: &[StoredLine]) -> VecDeque<Bytes> {
    let mut frames = VecDeque::new();
    let inline: usize = lines
        .iter()
        .map(|l| {
            32 + if l.json.len() > INLINE_LINE_BYTES {
                0
            } else {
                l.json.len()
            }
        })
        .sum();
    let mut buf = Vec::with_capacity(inline);
    for l in lines {
        // Writing to a Vec cannot fail.
        let _ = write!(buf, "id: {}\ndata: ", l.pos);
        if l.json.len() > INLINE_LINE_BYTES {
            frames.push_back(Bytes::from(std::mem::take(&mut buf)));
            frames.push_back(l.json.clone());
        } else {
            buf.extend_from_slice(&l.json);
        }
        buf.extend_from_slice(b"\n\n");
    }
    frames.push_back(Bytes::from(buf));
    frames
}

fn error_frame(e: &StoreError) -> Bytes {
    let body = serde_json::json!({ "error_msg": e.to_string() });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

struct State {
    tail: BoxStream<'static, Result<TailItem, StoreError>>,
    /// Frames of the current chunk not handed to hyper yet.
    pending: VecDeque<Bytes>,
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
        pending: VecDeque::new(),
        ping,
        shutdown,
        done: false,
        _guard: guard,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if let Some(frame) = s.pending.pop_front() {
            return Some((Ok(frame), s));
        }
        if s.done {
            return None;
        }
        let frame = tokio::select! {
            biased;
            _ = s.shutdown.cancelled() => return None,
            item = s.tail.next() => match item {
                Some(Ok(TailItem::Lines(lines))) => {
                    s.ping.reset();
                    s.pending = encode_frames(&lines);
                    s.pending.pop_front().unwrap_or_default()
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

    #[test]
    fn a_long_line_is_sent_as_the_stores_bytes() {
        let long = Bytes::from(vec![b'x'; INLINE_LINE_BYTES + 1]);
        let lines = [
            StoredLine {
                pos: 1,
                json: Bytes::from_static(b"{}"),
            },
            StoredLine {
                pos: 2,
                json: long.clone(),
            },
            StoredLine {
                pos: 3,
                json: Bytes::from_static(b"{}"),
            },
        ];
        let frames = encode_frames(&lines);
        assert_eq!(frames.len(), 3);
        // The same allocation, not a copy.
        assert_eq!(frames[1].as_ptr(), long.as_ptr());
        assert_eq!(&frames[0][..], b"id: 1\ndata: {}\n\nid: 2\ndata: ");
        assert_eq!(&frames[2][..], b"\n\nid: 3\ndata: {}\n\n");
    }
}
