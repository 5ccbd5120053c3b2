//! Reading a stream: pages merged from the overflow segments and Redis, and the
//! tail that reads them page by page, waiting for a notification in between.

use super::reconnect::unavailable;
use super::{Inner, bulk, int};
use crate::store::notify::Subscription;
use crate::store::{StoreError, StoredLine, StreamId, TailItem};
use bytes::Bytes;
use redis::Value;
use std::sync::Arc;

impl Inner {
    /// One page of lines with `pos >= from` (overflow segments first, then Redis),
    /// and whether the stream is open — read atomically from Redis, so "closed and
    /// nothing more" is never wrong. At most `max` lines and `max_bytes` of line
    /// JSON, but always the first line found (a tail must move on).
    pub(super) async fn read_page(
        &self,
        id: &StreamId,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<(bool, Vec<StoredLine>), StoreError> {
        let keys = self.keys(id);
        let reply: Vec<Value> = self
            .scripts
            .read
            .run(
                &mut self.conn(),
                &[&keys.meta, &keys.lines, &keys.late],
                |c| {
                    c.arg(from).arg(max).arg(max_bytes);
                },
            )
            .await
            .map_err(unavailable)?;
        let mut it = reply.into_iter();
        let open = match it.next().map(int) {
            Some(Ok(-1)) => return Err(StoreError::NotFound),
            Some(Ok(flag)) => flag == 1,
            _ => return Err(StoreError::Corrupt("read script reply".into())),
        };
        let trimmed = it
            .next()
            .map(int)
            .transpose()?
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0);
        let mut redis_lines = Vec::new();
        while let (Some(pos), Some(json)) = (it.next(), it.next()) {
            let pos =
                u64::try_from(int(pos)?).map_err(|_| StoreError::Corrupt("negative pos".into()))?;
            redis_lines.push(StoredLine {
                pos,
                json: Bytes::from(bulk(json)?),
            });
        }
        if from >= trimmed {
            return Ok((open, redis_lines));
        }
        // Segments hold every pos in [.., trimmed); they were written before
        // `trimmed` advanced, so reading them after Redis is consistent.
        let mut lines = self
            .read_overflow(id, from, trimmed, max, max_bytes)
            .await?;
        if lines
            .last()
            .is_some_and(|l| l.pos.saturating_add(1) < trimmed)
        {
            // The page ended inside the segments (full): Redis's lines come after
            // the segments' rest, on a later page.
            return Ok((open, lines));
        }
        let mut bytes: usize = lines.iter().map(|l| l.json.len()).sum();
        for line in redis_lines
            .into_iter()
            .take(max.saturating_sub(lines.len()))
        {
            if !lines.is_empty() && bytes.saturating_add(line.json.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(line.json.len());
            lines.push(line);
        }
        Ok((open, lines))
    }
}

/// One tail's position and its subscription to the stream's notifications.
pub(super) struct TailState {
    pub(super) inner: Arc<Inner>,
    pub(super) id: StreamId,
    pub(super) next: u64,
    pub(super) subscription: Option<Subscription>,
    pub(super) done: bool,
}

impl TailState {
    /// The next page of lines, `Eof`, or an error (after which the tail ends and the
    /// client resumes with `Last-Event-ID`).
    pub(super) async fn next_item(&mut self) -> Result<TailItem, StoreError> {
        let subscription = match self.subscription.as_mut() {
            Some(subscription) => subscription,
            None => {
                let channel = self.inner.keys(&self.id).ctl;
                self.subscription
                    .insert(self.inner.subscribe(channel).await?)
            }
        };
        loop {
            // Before reading: a line stored after this read wakes the wait below.
            subscription.mark_seen();
            let (open, lines) = self
                .inner
                .read_page(
                    &self.id,
                    self.next,
                    self.inner
                        .config
                        .page_lines
                        .min(crate::store::TAIL_CHUNK_LINES),
                    crate::store::TAIL_CHUNK_BYTES,
                )
                .await?;
            if let Some(last) = lines.last() {
                // Cannot overflow: ingest refuses a `pos` above `MAX_POS`.
                self.next = last.pos + 1;
                return Ok(TailItem::Lines(lines));
            }
            if !open {
                return Ok(TailItem::Eof);
            }
            subscription.wait(self.inner.config.block).await;
        }
    }
}
