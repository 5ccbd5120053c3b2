//! Overflow segments: the oldest lines of a long stream moved out of Redis into
//! NDJSON objects `A/K/+<first pos>.ndjson` of the overflow store, and read back.

use super::reconnect::unavailable;
use super::{Inner, Keys, RedisStreamStore, field};
use crate::store::{StoreError, StoredLine, StreamId};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// A failed overflow-store call as callers see it: the kind of failure, never the
/// backend's message (it names the server's paths; it goes to the log instead).
fn overflow_failure(e: object_store::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "overflow store: {}",
        crate::store::blob::backend_failure("overflow store", &e)
    ))
}

/// The whole body of the segment at `path`.
async fn get_segment(store: &dyn ObjectStore, path: &ObjectPath) -> Result<Bytes, StoreError> {
    store
        .get(path)
        .await
        .map_err(overflow_failure)?
        .bytes()
        .await
        .map_err(overflow_failure)
}

/// The `pos` of one stored line JSON.
fn line_pos(json: &[u8]) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct Pos {
        pos: u64,
    }
    serde_json::from_slice::<Pos>(json)
        .map(|p| p.pos)
        .map_err(|e| StoreError::Corrupt(format!("overflow segment line: {e}")))
}

impl Inner {
    fn segment_dir(id: &StreamId) -> ObjectPath {
        crate::store::names::stream_dir(id)
    }

    fn segment_path(id: &StreamId, first: u64) -> ObjectPath {
        // No part of a stream's directory starts with `+` (`names`), so a segment
        // name never is, or is inside, another stream's directory.
        Self::segment_dir(id).join(format!("+{first:020}.ndjson"))
    }

    /// First `pos` of every overflow segment of a stream, ascending.
    async fn segments(
        &self,
        store: &dyn ObjectStore,
        id: &StreamId,
    ) -> Result<Vec<(u64, ObjectPath)>, StoreError> {
        let listing = store
            .list_with_delimiter(Some(&Self::segment_dir(id)))
            .await
            .map_err(overflow_failure)?;
        let mut segments: Vec<(u64, ObjectPath)> = listing
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                let first = name
                    .strip_prefix('+')?
                    .strip_suffix(".ndjson")?
                    .parse()
                    .ok()?;
                Some((first, o.location))
            })
            .collect();
        segments.sort_by_key(|(first, _)| *first);
        Ok(segments)
    }

    pub(super) async fn read_overflow(
        &self,
        id: &StreamId,
        from: u64,
        below: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let Some(store) = self.overflow.as_deref() else {
            return Err(StoreError::Corrupt(
                "lines were moved to an overflow store that is not configured".into(),
            ));
        };
        let segments = self.segments(store, id).await?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (i, (first, path)) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(below, |(next, _)| *next);
            if end <= from || *first >= below {
                continue;
            }
            let body = get_segment(store, path).await?;
            for row in body.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
                let pos = line_pos(row)?;
                // Bounded by where the next segment starts too: no line is served
                // twice, whatever a segment holds past it.
                if pos >= from && pos < end {
                    if !out.is_empty() && bytes.saturating_add(row.len()) > max_bytes {
                        return Ok(out);
                    }
                    bytes = bytes.saturating_add(row.len());
                    // A copy when the page is capped: a slice would keep the whole
                    // segment alive for as long as a (stalled) tail holds the page.
                    let json = if max_bytes == usize::MAX {
                        body.slice_ref(row)
                    } else {
                        Bytes::copy_from_slice(row)
                    };
                    out.push(StoredLine { pos, json });
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Moves the oldest contiguous half of a long stream to the overflow store.
    /// Runs under a short Redis lock so two replicas never move the same lines.
    pub(super) async fn move_overflow(&self, id: &StreamId) -> Result<(), StoreError> {
        let Some(store) = self.overflow.clone() else {
            return Ok(());
        };
        let keys = self.keys(id);
        let token = rand::random::<u64>().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(&keys.trim_lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(()); // another replica is moving this stream's head right now
        }
        let result = self.move_overflow_locked(store.as_ref(), id, &keys).await;
        let _: Result<i64, _> = self
            .scripts
            .unlock
            .run(&mut self.conn(), &[&keys.trim_lock], |c| {
                c.arg(&token);
            })
            .await;
        result
    }

    async fn move_overflow_locked(
        &self,
        store: &dyn ObjectStore,
        id: &StreamId,
        keys: &Keys,
    ) -> Result<(), StoreError> {
        let fields = self.meta_fields(keys).await?;
        let trimmed = field(&fields, "trimmed");
        let contig = field(&fields, "contig");
        let in_redis = field(&fields, "lines").saturating_sub(field(&fields, "moved"));
        let in_redis_bytes = field(&fields, "bytes").saturating_sub(field(&fields, "moved_bytes"));
        // Keep the newest half of the line cap; when bytes are the problem (long
        // lines), keep half of what is there, which roughly halves the bytes.
        let keep = if in_redis_bytes > self.config.max_bytes {
            (in_redis / 2).min(self.config.max_lines / 2)
        } else {
            self.config.max_lines / 2
        };
        let target = trimmed
            .saturating_add(in_redis.saturating_sub(keep))
            .min(contig);
        if target <= trimmed {
            return Ok(());
        }
        let count = usize::try_from(target - trimmed).unwrap_or(usize::MAX);
        let (_, lines) = self.read_page(id, trimmed, count, usize::MAX).await?;
        let lines: Vec<StoredLine> = lines.into_iter().filter(|l| l.pos < target).collect();
        if lines.len() as u64 != target - trimmed {
            return Err(StoreError::Corrupt(format!(
                "expected {} contiguous lines from {trimmed}, read {}",
                target - trimmed,
                lines.len()
            )));
        }
        let moved_bytes: usize = lines.iter().map(|l| l.json.len()).sum();
        let mut body = Vec::with_capacity(moved_bytes + lines.len());
        for line in &lines {
            body.extend_from_slice(&line.json);
            body.push(b'\n');
        }
        // Written before Redis forgets the lines, and only if no segment starts
        // here yet: one does when a mover crashed between its write and its trim, or
        // when this mover outlived its lock and another one moved these lines (and
        // more) already. Overwriting it could drop the lines only it holds.
        let path = Self::segment_path(id, trimmed);
        let body = bytes::Bytes::from(body);
        let put = store
            .put_opts(
                &path,
                body.clone().into(),
                object_store::PutOptions {
                    mode: object_store::PutMode::Create,
                    ..object_store::PutOptions::default()
                },
            )
            .await;
        let (target, moved_bytes) = match put {
            Ok(_) => (target, moved_bytes),
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Read again: what was read above is as old as this mover's lock.
                let now = self.meta_fields(keys).await?;
                if field(&now, "trimmed") != trimmed {
                    // Another mover moved these lines (and its segment holds them).
                    return Ok(());
                }
                let contig = field(&now, "contig");
                // Its lines are a contiguous run from `trimmed`, still in Redis
                // unless the trim below finds the mark moved: finish that move.
                let existing = get_segment(store, &path).await?;
                // Taken over only if it is what a mover of these lines writes: a
                // contiguous run from `trimmed`, not past `contig`. Anything else
                // (left by an earlier stream of the same key whose removal failed
                // half-way) is replaced.
                let mut end = trimmed;
                let mut run = true;
                for row in existing.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
                    run &= line_pos(row).ok() == Some(end);
                    end = end.saturating_add(1);
                }
                if run && end > trimmed && end <= contig {
                    (end, existing.len().saturating_sub((end - trimmed) as usize))
                } else {
                    store
                        .put(&path, body.into())
                        .await
                        .map_err(overflow_failure)?;
                    (target, moved_bytes)
                }
            }
            Err(e) => return Err(overflow_failure(e)),
        };
        // -1: another mover advanced the mark first; what it moved is in its segments.
        let moved: i64 = self
            .scripts
            .trim
            .run(
                &mut self.conn(),
                &[&keys.meta, &keys.lines, &keys.late, &keys.usage],
                |c| {
                    c.arg(trimmed).arg(target).arg(moved_bytes);
                },
            )
            .await
            .map_err(unavailable)?;
        tracing::debug!(account = %id.account, key = %id.key, from = trimmed, to = target, moved, "moved stream head to overflow store");
        Ok(())
    }
}

impl RedisStreamStore {
    /// Deletes the segments the head of `id` was moved to (its keys are gone).
    pub(super) async fn remove_overflow(&self, id: &StreamId) -> Result<(), StoreError> {
        let inner = &self.inner;
        if let Some(store) = inner.overflow.as_deref() {
            for (_, path) in inner.segments(store, id).await? {
                store.delete(&path).await.map_err(overflow_failure)?;
            }
        }
        Ok(())
    }
}
