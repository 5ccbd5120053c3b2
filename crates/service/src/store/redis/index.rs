//! [`RedisIndexStore`]: each stream's section index kept in Redis beside the stream,
//! so every replica updates and answers one index, and Redis frees it with the
//! stream (the same TTL, refreshed by every update).
//!
//! The value is `NS:{A}:s:K:sections` (a hash: `next`, `state` = the
//! [`StreamIndex`] as JSON), under the account's hash tag like the stream's other
//! keys. A lease is the lock key `…:sections:lock`, taken with `SET NX PX` in the
//! same script that reads the value; `commit` writes it back and releases the lock
//! only while the lock still holds this lease's token. A batch without marker
//! lines moves `next` with one small script and no lease
//! ([`IndexStore::advance`]), so only batches that hold markers move the value.

use super::Inner;
use super::reconnect::unavailable;
use crate::sections::state::{IndexLease, IndexStore, StreamIndex};
use crate::store::{StoreError, StreamId};
use async_trait::async_trait;
use redis::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lease holds the lock at most: a holder that dies frees it after
/// this. Longer than the slowest update (a catch-up reads 4 096 lines a call).
const LEASE: Duration = Duration::from_secs(30);

/// How long `lock` waits for another replica's lease before answering 503.
const WAIT: Duration = Duration::from_secs(10);

/// Section indexes in the Redis of a [`super::RedisStreamStore`].
pub(super) struct RedisIndexStore {
    inner: Arc<Inner>,
}

impl RedisIndexStore {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        RedisIndexStore { inner }
    }
}

/// A lease on one stream's index: the value read, and the token that proves the
/// lock is still ours.
struct RedisLease {
    inner: Arc<Inner>,
    sections: String,
    lock: String,
    token: String,
    index: StreamIndex,
    released: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The stored value: `next` wins over the `next` inside `state`, because
/// [`IndexStore::advance`] moves the field alone.
fn decode(next: Value, state: Value) -> Result<StreamIndex, StoreError> {
    let mut index = match state {
        Value::Nil => StreamIndex::default(),
        Value::BulkString(json) => serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("stored section index: {e}")))?,
        other => {
            return Err(StoreError::Corrupt(format!(
                "stored section index: unexpected {other:?}"
            )));
        }
    };
    index.next = match next {
        Value::Nil => 0,
        v => u64::try_from(super::int(v)?)
            .map_err(|_| StoreError::Corrupt("stored section index: negative next".into()))?,
    };
    Ok(index)
}

#[async_trait]
impl IndexStore for RedisIndexStore {
    async fn lock(&self, id: &StreamId) -> Result<Box<dyn IndexLease>, StoreError> {
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
                let next = fields.pop().unwrap_or(Value::Nil);
                // A damaged value must not keep the lock until it expires: the
                // lease is built first, so dropping it releases the lock.
                let mut lease = RedisLease {
                    inner: self.inner.clone(),
                    sections: keys.sections.clone(),
                    lock: keys.sections_lock.clone(),
                    token,
                    index: StreamIndex::default(),
                    released: false,
                };
                lease.index = decode(next, state)?;
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
        let state = serde_json::to_vec(&self.index)
            .map_err(|e| StoreError::Corrupt(format!("section index: {e}")))?;
        let kept: i64 = self
            .inner
            .scripts
            .index_commit
            .run(&mut self.inner.conn(), &[&self.sections, &self.lock], |c| {
                c.arg(&self.token)
                    .arg(self.inner.ttl_ms())
                    .arg(self.index.next)
                    .arg(&state);
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
