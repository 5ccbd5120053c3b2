//! Where each stream's section index lives between requests: [`IndexStore`], kept
//! in memory by [`MemoryIndexStore`], or in Redis beside the stream
//! (`store/redis/index.rs`).
//!
//! The index of a stream is one [`StreamIndex`] value, read and changed under a
//! per-stream lock ([`IndexStore::lock`] → [`IndexLease`] → `commit`). A store
//! shared by replicas (Redis) keeps it under the stream's hash tag in parts (the
//! tracker's head, one record per section), reads the parts a lease needs, takes
//! the lock with `SET NX PX`, and writes back what changed on `commit` only while
//! the lease is still its own (ARCHITECTURE.md, "Sections").

use crate::store::{StoreError, StreamId};
use async_trait::async_trait;
use runlog_protocol::sections::SectionTracker;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Most drop markers remembered per stream (the ledger lists where lines were
/// dropped; a writer drops in a few places, not thousands).
pub const MAX_DROP_MARKERS: usize = 1_000;

/// One stream's section index and where it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIndex {
    /// The sections found so far.
    pub tracker: SectionTracker,
    /// The first `pos` not yet given to the tracker: every line below it was.
    pub next: u64,
    /// `pos` of the writer's drop markers seen so far, with the count of lines
    /// each one reports (when it says).
    pub drops: Vec<(u64, Option<u64>)>,
}

/// Per-stream section indexes.
#[async_trait]
pub trait IndexStore: Send + Sync + 'static {
    /// The stream's index (an empty one when none is held), locked against every
    /// other `lock` of the same stream until the lease is committed or dropped.
    ///
    /// Its tracker holds the open sections, and with `sections_from` every
    /// section from that index on (to answer with); a store that keeps sections
    /// apart (Redis) reads no others, so that a batch costs what it changes. A
    /// store may hold more ([`SectionTracker::first_held`] says from where).
    async fn lock(
        &self,
        id: &StreamId,
        sections_from: Option<u32>,
    ) -> Result<Box<dyn IndexLease>, StoreError>;

    /// Drops the stream's index (it was written beside the archive, or the stream
    /// is gone).
    async fn forget(&self, id: &StreamId) -> Result<(), StoreError>;

    /// The lines `first..next` were stored and hold no marker: if the index stands
    /// at `first`, it moves to `next` without the lease (on Redis one small
    /// script instead of the index's value crossing the network twice). Returns
    /// whether it moved; when not, the caller takes the lease and catches up.
    ///
    /// Safe beside a lease held elsewhere: the holder's commit writes its tracker
    /// with the `next` it reached, a pair that is consistent by itself (lines it
    /// did not read are read again later, and these hold no marker).
    async fn advance(&self, id: &StreamId, first: u64, next: u64) -> Result<bool, StoreError>;
}

/// A locked stream index.
#[async_trait]
pub trait IndexLease: Send {
    /// The index, to read and change.
    fn index(&mut self) -> &mut StreamIndex;

    /// Keeps the changes and releases the lock. Dropping the lease without it
    /// releases the lock; whether changes are kept then is up to the store (the
    /// memory store keeps them: they were made in place).
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Indexes in this process's memory: one async mutex per stream.
#[derive(Debug, Default)]
pub struct MemoryIndexStore {
    streams: std::sync::Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<StreamIndex>>>>,
}

struct MemoryLease(tokio::sync::OwnedMutexGuard<StreamIndex>);

#[async_trait]
impl IndexLease for MemoryLease {
    fn index(&mut self) -> &mut StreamIndex {
        &mut self.0
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl IndexStore for MemoryIndexStore {
    async fn lock(
        &self,
        id: &StreamId,
        _sections_from: Option<u32>,
    ) -> Result<Box<dyn IndexLease>, StoreError> {
        // Memory holds every section: the tracker is never resumed here. The id is
        // cloned only for a stream met the first time (every batch locks or
        // advances: two allocations a batch otherwise).
        let entry = {
            let mut map = self.map();
            match map.get(id) {
                Some(entry) => entry.clone(),
                None => map.entry(id.clone()).or_default().clone(),
            }
        };
        Ok(Box::new(MemoryLease(entry.lock_owned().await)))
    }

    async fn forget(&self, id: &StreamId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }

    async fn advance(&self, id: &StreamId, first: u64, next: u64) -> Result<bool, StoreError> {
        let mut lease = self.lock(id, None).await?;
        let ix = lease.index();
        let moved = ix.next == first;
        if moved {
            ix.next = next;
        }
        Ok(moved)
    }
}

impl MemoryIndexStore {
    /// The map; a panic elsewhere while it was held left it whole (every change
    /// to it is one insert or remove), so a poisoned lock is taken over.
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<tokio::sync::Mutex<StreamIndex>>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Streams with an index held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no index is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
