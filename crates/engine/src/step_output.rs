//! [`StepOutputLog`]: a step's raw output kept in memory for `/stream_output`, which
//! answers what a step printed so far and then follows it live until it ends.
//!
//! The log keeps the newest [`MAX_KEPT`] bytes while the step runs and the newest
//! [`KEPT_AFTER_END`] once it has ended (a stage may run many steps, and each log
//! lives as long as the stage): `/stream_output` is a live view for a runner, the
//! complete output is the step's stream in the log service. Offsets count every byte
//! the step wrote, dropped ones included, so a reader's offset stays meaningful when
//! the start of the output is gone.
//!
//! The kept bytes are a ring ([`VecDeque`]): dropping the oldest moves the ring's
//! head instead of the bytes. A `Vec` drained at its front moved all 8 MiB on every
//! append once a step had printed that much — 47 % of the engine's CPU for a step
//! printing 200 MB (`bench/RESULTS.md`, "Where a 100-byte line's time goes").

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// Bytes of output kept per running step.
pub const MAX_KEPT: usize = 8 << 20;
/// Bytes of output kept per ended step.
pub const KEPT_AFTER_END: usize = 64 << 10;

/// One step's output; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct StepOutputLog {
    inner: Arc<Mutex<Kept>>,
    /// Bumped on every change (bytes appended, the step ended).
    changed: watch::Sender<u64>,
}

struct Kept {
    bytes: VecDeque<u8>,
    /// Offset of `bytes[0]` in the whole output.
    start: u64,
    ended: bool,
}

impl Kept {
    fn keep_last(&mut self, limit: usize) {
        if self.bytes.len() > limit {
            let excess = self.bytes.len() - limit;
            self.bytes.drain(..excess);
            self.start += excess as u64;
        }
    }

    /// Appends `data`, dropping the oldest bytes first so that at most `limit` are
    /// kept: the ring never holds more than `limit` (trimming after the append let
    /// its capacity double to 16 MiB, fresh pages the kernel zeroes for every step).
    fn push(&mut self, data: &[u8], limit: usize) {
        // The part of `data` that could not be kept even alone.
        let skip = data.len().saturating_sub(limit);
        let data = &data[skip..];
        self.keep_last(limit - data.len());
        self.start += skip as u64;
        self.bytes.extend(data);
    }

    /// The kept bytes from index `skip` on, in one `Vec` (the ring may hold them in
    /// two pieces).
    fn copy_from(&self, skip: usize) -> Vec<u8> {
        let (front, back) = self.bytes.as_slices();
        let mut out = Vec::with_capacity(self.bytes.len().saturating_sub(skip));
        match front.get(skip..) {
            Some(rest) => {
                out.extend_from_slice(rest);
                out.extend_from_slice(back);
            }
            None => out.extend_from_slice(back.get(skip - front.len()..).unwrap_or_default()),
        }
        out
    }
}

/// What a reader gets for its offset.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes from the offset on (those still kept).
    pub bytes: Vec<u8>,
    /// The offset after `bytes`.
    pub next: u64,
    /// Whether the step has ended (nothing more will come after `next`).
    pub ended: bool,
}

impl Default for StepOutputLog {
    fn default() -> Self {
        StepOutputLog {
            inner: Arc::new(Mutex::new(Kept {
                bytes: VecDeque::new(),
                start: 0,
                ended: false,
            })),
            changed: watch::Sender::new(0),
        }
    }
}

impl StepOutputLog {
    /// Appends output, dropping the oldest bytes beyond [`MAX_KEPT`].
    pub fn append(&self, data: &[u8]) {
        {
            let mut k = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            k.push(data, MAX_KEPT);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Marks the output complete: readers return once they have read everything.
    /// Only the newest [`KEPT_AFTER_END`] bytes are kept from here on.
    pub fn end(&self) {
        {
            let mut k = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            k.ended = true;
            k.keep_last(KEPT_AFTER_END);
            k.bytes.shrink_to_fit();
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The bytes from `offset` on, now.
    pub fn read_from(&self, offset: u64) -> Chunk {
        let k = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let end = k.start + k.bytes.len() as u64;
        let from = offset.clamp(k.start, end);
        let skip = usize::try_from(from - k.start).unwrap_or(usize::MAX);
        Chunk {
            bytes: k.copy_from(skip),
            next: end.max(offset),
            ended: k.ended,
        }
    }

    /// A receiver that changes whenever output is appended or the step ends.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The output from `offset` on as a stream of chunks that ends with the step.
    pub fn follow(
        &self,
        offset: u64,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static
    {
        let log = self.clone();
        let changes = self.subscribe();
        futures_util::stream::unfold(
            (log, changes, offset, false),
            |(log, mut changes, offset, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // Marked seen before reading: a change after the read wakes us.
                    changes.borrow_and_update();
                    let chunk = log.read_from(offset);
                    if !chunk.bytes.is_empty() || chunk.ended {
                        let ended = chunk.ended;
                        return Some((
                            Ok(bytes::Bytes::from(chunk.bytes)),
                            (log, changes, chunk.next, ended),
                        ));
                    }
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[test]
    fn offsets_count_dropped_bytes() {
        let log = StepOutputLog::default();
        log.append(&vec![b'a'; MAX_KEPT]);
        log.append(b"bc");
        let c = log.read_from(0);
        assert_eq!(c.bytes.len(), MAX_KEPT);
        assert_eq!(c.next, MAX_KEPT as u64 + 2);
        assert_eq!(log.read_from(MAX_KEPT as u64 + 1).bytes, b"c");
        assert!(log.read_from(99 << 20).bytes.is_empty());
        log.end();
        let c = log.read_from(0);
        assert_eq!(c.bytes.len(), KEPT_AFTER_END);
        assert!(c.bytes.ends_with(b"abc") && c.ended);
    }

    #[test]
    fn the_newest_bytes_are_kept_in_order_across_many_appends() {
        let log = StepOutputLog::default();
        let mut all = Vec::new();
        // Writes of an odd size, so the ring's two pieces split inside a write.
        for i in 0..40u32 {
            let write: Vec<u8> = (0..(512 << 10) + 7).map(|j| (i + j) as u8).collect();
            log.append(&write);
            all.extend_from_slice(&write);
        }
        let kept = &all[all.len() - MAX_KEPT..];
        let c = log.read_from(0);
        assert_eq!(c.next, all.len() as u64);
        assert!(c.bytes == kept, "the newest MAX_KEPT bytes, in order");
        for from in [1usize, 4099, MAX_KEPT / 2, MAX_KEPT - 1] {
            let offset = (all.len() - MAX_KEPT + from) as u64;
            assert!(log.read_from(offset).bytes == kept[from..], "from {from}");
        }
    }

    #[test]
    fn a_write_larger_than_the_kept_bytes_keeps_its_end() {
        let log = StepOutputLog::default();
        log.append(b"old");
        let write: Vec<u8> = (0..MAX_KEPT + 5).map(|j| j as u8).collect();
        log.append(&write);
        let c = log.read_from(0);
        assert_eq!(c.next, 3 + write.len() as u64);
        assert!(c.bytes == write[5..]);
        assert_eq!(log.read_from(9).bytes.len(), MAX_KEPT - 1);
    }

    #[tokio::test]
    async fn a_follower_gets_old_and_new_output_and_stops_at_the_end() {
        let log = StepOutputLog::default();
        log.append(b"one\n");
        let mut s = Box::pin(log.follow(1));
        let first = s.next().await.expect("chunk").expect("ok");
        assert_eq!(&first[..], b"ne\n");
        let writer = log.clone();
        tokio::spawn(async move {
            writer.append(b"two\n");
            writer.end();
        });
        let mut rest = Vec::new();
        while let Some(chunk) = s.next().await {
            rest.extend_from_slice(&chunk.expect("ok"));
        }
        assert_eq!(rest, b"two\n");
    }
}
