//! [`RedisIndexStore`]: each stream's section index kept in Redis beside the stream,
//! so every replica updates and answers one index, and Redis frees it with the
//! stream (the same TTL, refreshed by every update).
//!
//! The value is the hash `NS:{A}:s:K:sections`, under the account's hash tag like
//! the stream's other keys: `next` (the first `pos` not indexed), `head` (the
//! tracker's [`TrackerHead`] — the open sections and the counts — and the drop
//! markers, as JSON) and one field per section, its index in decimal, holding the
//! section as JSON. A lease reads `next` and `head` only (plus the sections an
//! answer lists), and its commit writes the sections the batch opened or changed:
//! a batch costs its own markers and the open sections (at most the nesting
//! depth), however many sections the stream has. A closed section's field is
//! never written again.
//!
//! A lease is the lock key `…:sections:lock`, taken with `SET NX PX` in the same
//! script that reads the value; `commit` writes back and releases the lock only
//! while the lock still holds this lease's token. A batch without marker lines
//! moves `next` with one small script and no lease ([`IndexStore::advance`]).
//!
//! An index an earlier version kept whole in the field `state` is read as it was,
//! and written back in this layout.

use super::Inner;
use super::reconnect::unavailable;
use crate::store::section_index::{IndexLease, IndexStore, StreamIndex};
use crate::store::{StoreError, StreamId};
use async_trait::async_trait;
use redis::Value;
use runlog_protocol::sections::{Section, SectionTracker, TrackerHead};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lease holds the lock at most: a holder that dies frees it after
/// this. Longer than the slowest update (a catch-up reads 4 096 lines a call).
const LEASE: Duration = Duration::from_secs(30);

/// How long `lock` waits for another replica's lease before answering 503.
const WAIT: Duration = Duration::from_secs(10);

/// Section fields read per `HMGET` when a lease holds a range of sections.
const READ_SECTIONS: u32 = 1_000;

/// The `head` field: the index without its sections and `next`.
#[derive(Serialize, Deserialize)]
struct Head {
    tracker: TrackerHead,
    drops: Vec<(u64, Option<u64>)>,
}

/// Section indexes in the Redis of a [`super::RedisStreamStore`].
pub(super) struct RedisIndexStore {
    inner: Arc<Inner>,
}

impl RedisIndexStore {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        RedisIndexStore { inner }
    }
}

/// A lease on one stream's index: the value read, the head it was read with (what
/// `commit` writes follows from it), and the token that proves the lock is still
/// ours.
struct RedisLease {
    inner: Arc<Inner>,
    sections: String,
    lock: String,
    token: String,
    index: StreamIndex,
    read: TrackerHead,
    released: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("stored section index: {what}"))
}

fn json<T: serde::de::DeserializeOwned>(v: Value) -> Result<Option<T>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(json) => serde_json::from_slice(&json).map(Some).map_err(corrupt),
        other => Err(corrupt(format!("unexpected {other:?}"))),
    }
}

/// The stored value without its sections: the index, holding none yet, and the
/// head it was read with. `next` wins over the `next` inside a whole `state`,
/// because [`IndexStore::advance`] moves the field alone. A whole `state` (the
/// earlier layout) is read with an empty head, so that the commit writes every
/// section.
fn decode(
    next: Value,
    head: Value,
    state: Value,
) -> Result<(StreamIndex, TrackerHead), StoreError> {
    let (mut index, read) = match (json::<Head>(head)?, json::<StreamIndex>(state)?) {
        (Some(head), _) => (
            StreamIndex {
                tracker: SectionTracker::resume(
                    head.tracker.clone(),
                    head.tracker.count(),
                    Vec::new(),
                ),
                next: 0,
                drops: head.drops,
            },
            head.tracker,
        ),
        (None, Some(whole)) => (whole, TrackerHead::default()),
        (None, None) => (StreamIndex::default(), TrackerHead::default()),
    };
    index.next = match next {
        Value::Nil => 0,
        v => u64::try_from(super::int(v)?).map_err(|_| corrupt("negative next"))?,
    };
    Ok((index, read))
}

impl RedisLease {
    /// Reads the stored sections from index `from` on into the lease's tracker
    /// (the ones it holds are the sections to answer with).
    async fn hold_from(&mut self, from: u32) -> Result<(), StoreError> {
        let t = &self.index.tracker;
        let count = t.count();
        if t.first_held() <= from.min(count) {
            // A whole `state` holds every section already.
            return Ok(());
        }
        let from = from.min(count);
        let mut sections = Vec::with_capacity((count - from) as usize);
        let mut at = from;
        while at < count {
            let upto = count.min(at.saturating_add(READ_SECTIONS));
            let fields: Vec<Value> = redis::cmd("HMGET")
                .arg(&self.sections)
                .arg((at..upto).collect::<Vec<u32>>())
                .query_async(&mut self.inner.conn())
                .await
                .map_err(unavailable)?;
            for (i, v) in (at..).zip(fields) {
                sections.push(
                    json::<Section>(v)?
                        .ok_or_else(|| corrupt(format!("section {i} is missing")))?,
                );
            }
            at = upto;
        }
        self.index.tracker = SectionTracker::resume(self.read.clone(), from, sections);
        Ok(())
    }
}

#[async_trait]
impl IndexStore for RedisIndexStore {
    async fn lock(
        &self,
        id: &StreamId,
        sections_from: Option<u32>,
    ) -> Result<Box<dyn IndexLease>, StoreError> {
        let keys = self.inner.keys(id);
        let token = format!("{:032x}", rand::random::<u128>());
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let got: Value = self
                .inner
                .scripts
                .index_lock
                .run(
                    &mut self.inner.conn(),
                    &[&keys.sections, &keys.sections_lock],
                    |c| {
                        c.arg(&token).arg(millis(LEASE));
                    },
                )
                .await
                .map_err(unavailable)?;
            if let Value::Array(mut fields) = got {
                let state = fields.pop().unwrap_or(Value::Nil);
                let head = fields.pop().unwrap_or(Value::Nil);
                let next = fields.pop().unwrap_or(Value::Nil);
                // A damaged value must not keep the lock until it expires: the
                // lease is built first, so dropping it releases the lock.
                let mut lease = RedisLease {
                    inner: self.inner.clone(),
                    sections: keys.sections.clone(),
                    lock: keys.sections_lock.clone(),
                    token,
                    index: StreamIndex::default(),
                    read: TrackerHead::default(),
                    released: false,
                };
                (lease.index, lease.read) = decode(next, head, state)?;
                if let Some(from) = sections_from {
                    lease.hold_from(from).await?;
                }
                return Ok(Box::new(lease));
            }
            if started.elapsed() > WAIT {
                return Err(StoreError::Unavailable(
                    "the stream's section index stayed locked by another request".into(),
                ));
            }
            // Another replica holds the lease for one batch: a few milliseconds.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn forget(&self, id: &StreamId) -> Result<(), StoreError> {
        let keys = self.inner.keys(id);
        redis::cmd("DEL")
            .arg(&keys.sections)
            .query_async::<()>(&mut self.inner.conn())
            .await
            .map_err(unavailable)
    }

    async fn advance(&self, id: &StreamId, first: u64, next: u64) -> Result<bool, StoreError> {
        let keys = self.inner.keys(id);
        let moved: i64 = self
            .inner
            .scripts
            .index_advance
            .run(&mut self.inner.conn(), &[&keys.sections], |c| {
                c.arg(first).arg(next).arg(self.inner.ttl_ms());
            })
            .await
            .map_err(unavailable)?;
        Ok(moved == 1)
    }
}

#[async_trait]
impl IndexLease for RedisLease {
    fn index(&mut self) -> &mut StreamIndex {
        &mut self.index
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.released = true;
        let encode = |e: serde_json::Error| StoreError::Corrupt(format!("section index: {e}"));
        let tracker = &self.index.tracker;
        let head = serde_json::to_vec(&Head {
            tracker: tracker.head(),
            drops: self.index.drops.clone(),
        })
        .map_err(encode)?;
        let changed = tracker
            .changed_since(&self.read)
            .map(|(i, s)| Ok((i, serde_json::to_vec(s).map_err(encode)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let kept: i64 = self
            .inner
            .scripts
            .index_commit
            .run(&mut self.inner.conn(), &[&self.sections, &self.lock], |c| {
                c.arg(&self.token)
                    .arg(self.inner.ttl_ms())
                    .arg(self.index.next)
                    .arg(&head);
                for (i, json) in &changed {
                    c.arg(i).arg(json);
                }
            })
            .await
            .map_err(unavailable)?;
        if kept == 1 {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the section index lease expired before its update was written".into(),
            ))
        }
    }
}

impl Drop for RedisLease {
    /// A lease dropped without `commit` (an error on the way) frees the lock now,
    /// not after [`LEASE`]: other replicas' batches wait on it.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        let lock = std::mem::take(&mut self.lock);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let _ = inner
                .scripts
                .unlock
                .run::<i64>(&mut inner.conn(), &[&lock], |c| {
                    c.arg(&token);
                })
                .await;
        });
    }
}
