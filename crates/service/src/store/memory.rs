//! [`MemoryStreamStore`]: live streams held in this process's memory.
//!
//! The embedded default. One mutex per stream (never one global lock on the
//! append path). A stream keeps the request bodies its lines arrived in and, per
//! line, where its JSON sits in one of them (see [`LineBatch`]): storing a batch
//! copies no line and takes one reference count.
//!
//! Memory is bounded by [`MemoryLimits`]: lines and bytes per stream, lines and bytes
//! in total, and the number of streams; and per account by [`AccountLimits`]: streams
//! and bytes held, and the pace of new streams. An append that would cross a bound
//! is refused whole with [`StoreError::LimitExceeded`] (the client sees 413 and keeps
//! its spool), never silently truncated; an open over the account's streams or its pace of new
//! streams, with [`StoreError::TooMany`] (429).
//!
//! Over 700 lines with its tests (about 200); the code is one backend's store calls
//! and the bounds they keep, which change together.

use super::{
    BatchLine, LineBatch, StoreError, StoredLine, StreamId, StreamMeta, StreamStore,
    TAIL_CHUNK_BYTES, TAIL_CHUNK_LINES, TailItem,
};
use crate::store::account_limits::{AccountLimits, NewStreamPace, RateWindows};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use runlog_protocol::AccountId;
use runlog_protocol::service::AppendAck;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;
use tokio::sync::watch;

/// Bounds of a [`MemoryStreamStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Most lines one stream may hold.
    pub max_lines_per_stream: u64,
    /// Most bytes of line JSON one stream may hold.
    pub max_bytes_per_stream: u64,
    /// Most lines all streams together may hold.
    pub max_total_lines: u64,
    /// Most bytes of line JSON all streams together may hold.
    pub max_total_bytes: u64,
    /// Most streams held at once (open or closed but not yet removed).
    pub max_streams: u64,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_lines_per_stream: 5_000_000,
            max_bytes_per_stream: 1 << 30,
            max_total_lines: 50_000_000,
            max_total_bytes: 4 << 30,
            max_streams: 100_000,
        }
    }
}

/// Live streams in memory; see the module documentation.
#[derive(Debug)]
pub struct MemoryStreamStore {
    limits: MemoryLimits,
    streams: RwLock<HashMap<StreamId, Arc<Entry>>>,
    total_lines: AtomicU64,
    total_bytes: AtomicU64,
    account_limits: AccountLimits,
    /// Streams and bytes each account holds (accounts holding nothing are absent).
    accounts: Mutex<HashMap<AccountId, AccountUsage>>,
    rate: RateWindows,
    new_streams: NewStreamPace,
}

/// What one account holds in a [`MemoryStreamStore`].
#[derive(Debug, Default, Clone, Copy)]
struct AccountUsage {
    streams: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    id: StreamId,
    lines: Mutex<Lines>,
    /// Bumped after every append, close and removal; tails wait on it when caught up.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct Lines {
    open: bool,
    removed: bool,
    /// The contiguous prefix, lines `0..prefix`, as runs of consecutive lines that sit
    /// in one buffer each; `first` ascending. Usually one request body per batch, so
    /// storing a batch costs one reference count, not one per line.
    chunks: Vec<Chunk>,
    /// How many lines the prefix holds.
    prefix: u64,
    /// Lines above a gap, keyed by `pos`; moved into the prefix as the gap fills.
    ahead: BTreeMap<u64, Bytes>,
    bytes: u64,
    last_activity: SystemTime,
}

/// A buffer holding consecutive prefix lines from `first` on, and where each sits in
/// it. Spans live per chunk, sized once per batch: one vector for the whole stream
/// grew by doubling, so a long stream's appends copied tens of MiB under the stream's
/// lock now and then, and its spare half was never used.
#[derive(Debug)]
struct Chunk {
    first: u64,
    buf: Bytes,
    spans: Vec<(u32, u32)>,
}

impl Lines {
    fn new() -> Self {
        Lines {
            open: true,
            removed: false,
            chunks: Vec::new(),
            prefix: 0,
            ahead: BTreeMap::new(),
            bytes: 0,
            last_activity: SystemTime::now(),
        }
    }

    fn prefix_len(&self) -> u64 {
        self.prefix
    }

    fn count(&self) -> u64 {
        self.prefix_len() + self.ahead.len() as u64
    }

    fn has(&self, pos: u64) -> bool {
        pos < self.prefix_len() || self.ahead.contains_key(&pos)
    }

    fn last_contiguous(&self) -> Option<u64> {
        self.prefix_len().checked_sub(1)
    }

    /// Appends one line to the prefix, from `buf` (which must be the last chunk's
    /// buffer or is made a new chunk).
    fn push_prefix(&mut self, buf: &Bytes, span: (u32, u32), new_chunk: bool) {
        match self.chunks.last_mut() {
            Some(last) if !new_chunk => last.spans.push(span),
            _ => self.chunks.push(Chunk {
                first: self.prefix,
                buf: buf.clone(),
                spans: vec![span],
            }),
        }
        self.prefix += 1;
    }

    /// The lines and bytes [`Lines::insert`] would store of `batch`: each `pos` not
    /// taken, once (a misbehaving client may repeat a `pos` within one batch; the
    /// first wins, and counting the others would refuse a batch that fits).
    fn new_in(&self, batch: &LineBatch) -> (u64, u64) {
        let lines = batch.lines();
        let count = |(n, b): (u64, u64), line: &BatchLine| (n + 1, b + line.len() as u64);
        // What writers send: strictly increasing, so no `pos` repeats.
        if lines.is_sorted_by(|a, b| a.pos < b.pos) {
            return lines
                .iter()
                .filter(|l| !self.has(l.pos))
                .fold((0, 0), count);
        }
        let mut seen = std::collections::HashSet::with_capacity(lines.len());
        lines
            .iter()
            .filter(|l| !self.has(l.pos) && seen.insert(l.pos))
            .fold((0, 0), count)
    }

    /// Stores the lines of `batch` whose `pos` is not taken (the first of equal
    /// `pos` within the batch wins); returns how many lines and bytes were stored.
    fn insert(&mut self, batch: &LineBatch) -> (u64, u64) {
        let buf = batch.buffer();
        // The common case: the batch continues the prefix exactly and nothing waits
        // above a gap. One chunk, the spans copied in one go.
        let next = self.prefix_len();
        let lines = batch.lines();
        if self.ahead.is_empty()
            && !lines.is_empty()
            && lines.iter().zip(next..).all(|(l, pos)| l.pos == pos)
        {
            let spans = lines
                .iter()
                .map(|l| {
                    let span = l.span();
                    // `LineBatch` guarantees its offsets fit `u32`.
                    (span.start as u32, span.end as u32)
                })
                .collect();
            self.chunks.push(Chunk {
                first: next,
                buf: buf.clone(),
                spans,
            });
            self.prefix += lines.len() as u64;
            let bytes = batch.line_bytes();
            self.bytes += bytes;
            return (lines.len() as u64, bytes);
        }
        let (mut appended, mut bytes) = (0u64, 0u64);
        // Whether the last chunk is this batch's buffer.
        let mut in_chunk = false;
        for line in batch.lines() {
            let next = self.prefix_len();
            if line.pos < next {
                continue;
            }
            let len = line.len() as u64;
            if line.pos > next {
                if let std::collections::btree_map::Entry::Vacant(v) = self.ahead.entry(line.pos) {
                    v.insert(buf.slice(line.span()));
                    appended += 1;
                    bytes += len;
                }
                continue;
            }
            let span = line.span();
            // `LineBatch` guarantees its offsets fit `u32`.
            self.push_prefix(buf, (span.start as u32, span.end as u32), !in_chunk);
            in_chunk = true;
            appended += 1;
            bytes += len;
            // A gap just closed: pull every line now contiguous into the prefix.
            loop {
                let next = self.prefix_len();
                let Some(entry) = self.ahead.first_entry() else {
                    break;
                };
                if *entry.key() != next {
                    break;
                }
                let json = entry.remove();
                let end = json.len() as u32;
                self.push_prefix(&json, (0, end), true);
                in_chunk = false;
            }
        }
        self.bytes += bytes;
        (appended, bytes)
    }

    /// Up to `max` lines from `from`, and no more than `max_bytes` of line JSON
    /// (but always the first line found, whatever its size: a tail must move on).
    fn read(&self, from: u64, max: usize, max_bytes: usize) -> Vec<StoredLine> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Whether `json` still fits the chunk; counts it when it does.
        let mut fits = |out: &Vec<StoredLine>, len: usize| {
            if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
                return false;
            }
            bytes = bytes.saturating_add(len);
            true
        };
        let plen = self.prefix_len();
        if from < plen {
            let end = (from + max as u64).min(plen);
            out.reserve(((end - from) as usize).min(1024));
            // The chunk holding `from`: the last one starting at or before it.
            let mut c = self.chunks.partition_point(|c| c.first <= from) - 1;
            for pos in from..end {
                while self.chunks.get(c + 1).is_some_and(|n| n.first <= pos) {
                    c += 1;
                }
                let chunk = &self.chunks[c];
                let (start, end) = chunk.spans[(pos - chunk.first) as usize];
                if !fits(&out, (end - start) as usize) {
                    return out;
                }
                out.push(StoredLine {
                    pos,
                    json: chunk.buf.slice(start as usize..end as usize),
                });
            }
        }
        if out.len() < max {
            let left = max - out.len();
            for (&pos, json) in self.ahead.range(from.max(plen)..).take(left) {
                if !fits(&out, json.len()) {
                    break;
                }
                out.push(StoredLine {
                    pos,
                    json: json.clone(),
                });
            }
        }
        out
    }
}

/// Closes the stream of `entry`, unless it saw activity after `idle_since` (then
/// `None`, the stream left as it is); wakes its tails.
fn close_entry(entry: &Entry, idle_since: Option<SystemTime>) -> Option<StreamMeta> {
    {
        let mut l = lock(&entry.lines);
        if idle_since.is_some_and(|since| l.last_activity > since) {
            return None;
        }
        l.open = false;
        l.last_activity = SystemTime::now();
    }
    entry.notify();
    Some(entry.meta())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave `Lines` half-updated in a way that
    // breaks later readers (every mutation is a single push/insert), so keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Entry {
    fn meta(&self) -> StreamMeta {
        let l = lock(&self.lines);
        StreamMeta {
            id: self.id.clone(),
            open: l.open,
            lines: l.count(),
            bytes: l.bytes,
            last_contiguous_pos: l.last_contiguous(),
            last_activity: l.last_activity,
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl MemoryStreamStore {
    /// An empty store with the given bounds.
    pub fn new(limits: MemoryLimits) -> Self {
        MemoryStreamStore {
            limits,
            streams: RwLock::new(HashMap::new()),
            total_lines: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            account_limits: AccountLimits::default(),
            accounts: Mutex::new(HashMap::new()),
            rate: RateWindows::default(),
            new_streams: NewStreamPace::default(),
        }
    }

    /// This store with `limits` for each account instead of the defaults.
    pub fn with_account_limits(mut self, limits: AccountLimits) -> Self {
        self.account_limits = limits;
        self
    }

    /// Refuses a new stream when the service or `account` already holds its limit of
    /// streams, changing nothing (the count is taken by [`Self::add_account_stream`]).
    fn room_for_a_stream(&self, account: &AccountId) -> Result<(), StoreError> {
        let count = self
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64;
        if count >= self.limits.max_streams {
            return Err(service_full(count));
        }
        let held = lock(&self.accounts).get(account).map_or(0, |u| u.streams);
        if held >= self.account_limits.max_streams {
            return Err(crate::store::account_limits::streams_held_refused(
                account, held,
            ));
        }
        Ok(())
    }

    /// Counts a new stream of `account`, or refuses when it holds its limit.
    fn add_account_stream(&self, account: &AccountId) -> Result<(), StoreError> {
        let mut accounts = lock(&self.accounts);
        let usage = accounts.entry(account.clone()).or_default();
        if usage.streams >= self.account_limits.max_streams {
            let held = usage.streams;
            if held == 0 {
                accounts.remove(account);
            }
            return Err(crate::store::account_limits::streams_held_refused(
                account, held,
            ));
        }
        usage.streams += 1;
        Ok(())
    }

    /// Reserves `bytes` more for `account`, or refuses without reserving.
    fn reserve_account_bytes(&self, account: &AccountId, bytes: u64) -> Result<(), StoreError> {
        let mut accounts = lock(&self.accounts);
        let usage = accounts.entry(account.clone()).or_default();
        if usage.bytes.saturating_add(bytes) > self.account_limits.max_bytes {
            return Err(StoreError::LimitExceeded(format!(
                "account {account} holds {} bytes of lines, and {bytes} more would pass its limit of {} bytes",
                usage.bytes, self.account_limits.max_bytes
            )));
        }
        usage.bytes += bytes;
        Ok(())
    }

    /// Gives back `streams` and `bytes` of `account`'s usage.
    fn release_account(&self, account: &AccountId, streams: u64, bytes: u64) {
        let mut accounts = lock(&self.accounts);
        if let Some(usage) = accounts.get_mut(account) {
            usage.streams = usage.streams.saturating_sub(streams);
            usage.bytes = usage.bytes.saturating_sub(bytes);
            if usage.streams == 0 && usage.bytes == 0 {
                accounts.remove(account);
            }
        }
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> MemoryLimits {
        self.limits
    }

    fn entry(&self, id: &StreamId) -> Result<Arc<Entry>, StoreError> {
        let map = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        map.get(id).cloned().ok_or(StoreError::NotFound)
    }

    /// Reserves room for `lines`/`bytes` in the totals, or refuses without reserving.
    fn reserve_total(&self, lines: u64, bytes: u64) -> Result<(), StoreError> {
        let new_lines = self.total_lines.fetch_add(lines, Ordering::Relaxed) + lines;
        let new_bytes = self.total_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if new_lines > self.limits.max_total_lines || new_bytes > self.limits.max_total_bytes {
            self.release_total(lines, bytes);
            return Err(StoreError::LimitExceeded(format!(
                "the service holds too many lines in memory (limits: {} lines, {} bytes in total)",
                self.limits.max_total_lines, self.limits.max_total_bytes
            )));
        }
        Ok(())
    }

    fn release_total(&self, lines: u64, bytes: u64) {
        self.total_lines.fetch_sub(lines, Ordering::Relaxed);
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Empties a stream taken out of the map (its memory is given back to the totals)
    /// and ends its tails.
    fn retire(&self, entry: &Entry) {
        {
            let mut l = lock(&entry.lines);
            l.open = false;
            l.removed = true;
            self.release_total(l.count(), l.bytes);
            self.release_account(&entry.id.account, 1, l.bytes);
            l.chunks = Vec::new();
            l.prefix = 0;
            l.ahead = BTreeMap::new();
            l.bytes = 0;
        }
        entry.notify();
    }

    /// Lines and bytes held by all streams together.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.total_lines.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }
}

/// The refusal of a new stream when the service holds `count`, its limit.
fn service_full(count: u64) -> StoreError {
    StoreError::LimitExceeded(format!("the service holds {count} streams, its limit"))
}

#[async_trait]
impl StreamStore for MemoryStreamStore {
    async fn open(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        if let Ok(entry) = self.entry(id) {
            {
                let mut l = lock(&entry.lines);
                l.open = true;
                l.last_activity = SystemTime::now();
            }
            return Ok(entry.meta());
        }
        // A new stream. The bounds on streams held come first, as in `open.lua`: an
        // open they refuse must not use up a turn of the account's pace.
        self.room_for_a_stream(&id.account)?;
        // Then its turn in the pace, waited for with no lock held (should another
        // open create it meanwhile, this one reopens it; the bounds are checked
        // again under the lock below, where they are decided).
        let now = crate::store::account_limits::now_us();
        match self
            .new_streams
            .take(&id.account, now, &self.account_limits)
        {
            Ok(0) => {}
            Ok(wait) => tokio::time::sleep(std::time::Duration::from_micros(wait)).await,
            Err(wait) => {
                return Err(crate::store::account_limits::pace_refused(
                    &id.account,
                    &self.account_limits,
                    wait,
                ));
            }
        }
        let mut map = self.streams.write().unwrap_or_else(PoisonError::into_inner);
        let count = map.len() as u64;
        let entry = match map.entry(id.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.get().clone(),
            std::collections::hash_map::Entry::Vacant(v) => {
                if count >= self.limits.max_streams {
                    return Err(service_full(count));
                }
                self.add_account_stream(&id.account)?;
                v.insert(Arc::new(Entry {
                    id: id.clone(),
                    lines: Mutex::new(Lines::new()),
                    changed: watch::Sender::new(0),
                }))
                .clone()
            }
        };
        drop(map);
        {
            let mut l = lock(&entry.lines);
            l.open = true;
            // A reopened stream is not idle: the sweep must not expire it at once.
            l.last_activity = SystemTime::now();
        }
        Ok(entry.meta())
    }

    async fn append(&self, id: &StreamId, lines: Vec<StoredLine>) -> Result<AppendAck, StoreError> {
        self.append_batch(id, LineBatch::from_stored(&lines)).await
    }

    async fn append_batch(
        &self,
        id: &StreamId,
        mut batch: LineBatch,
    ) -> Result<AppendAck, StoreError> {
        let entry = self.entry(id)?;
        let total = batch.len() as u64;
        let mut l = lock(&entry.lines);
        if !l.open || l.removed {
            return Err(StoreError::Closed);
        }
        // Count what is new first, so a retried batch at the limit is not refused
        // for lines it already stored, and a refused batch stores nothing.
        let (new_lines, new_bytes) = l.new_in(&batch);
        if l.count() + new_lines > self.limits.max_lines_per_stream
            || l.bytes + new_bytes > self.limits.max_bytes_per_stream
        {
            return Err(StoreError::LimitExceeded(format!(
                "stream would exceed {} lines or {} bytes",
                self.limits.max_lines_per_stream, self.limits.max_bytes_per_stream
            )));
        }
        self.reserve_account_bytes(&id.account, new_bytes)?;
        if let Err(e) = self.reserve_total(new_lines, new_bytes) {
            self.release_account(&id.account, 0, new_bytes);
            return Err(e);
        }
        // A retried batch shares one request buffer between its new lines and its
        // duplicates; copy the new ones so the duplicates' bytes (not counted by any
        // limit) are not kept alive by them.
        if new_lines < total {
            batch = LineBatch::copied(batch.iter().filter(|line| !l.has(line.pos)));
        }
        let (appended, appended_bytes) = l.insert(&batch);
        debug_assert_eq!((appended, appended_bytes), (new_lines, new_bytes));
        // Nothing in a correct count; should the two ever disagree, the totals
        // must still match what is kept, or the service-wide limit drifts.
        self.release_total(
            new_lines.saturating_sub(appended),
            new_bytes.saturating_sub(appended_bytes),
        );
        self.release_account(&id.account, 0, new_bytes.saturating_sub(appended_bytes));
        l.last_activity = SystemTime::now();
        let last = l.last_contiguous();
        drop(l);
        if appended > 0 {
            entry.notify();
        }
        Ok(AppendAck {
            appended,
            duplicates: total - appended,
            last_contiguous_pos: last,
            next_pos: last.map_or(0, |p| p + 1),
        })
    }

    async fn read(
        &self,
        id: &StreamId,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        let entry = self.entry(id)?;
        let l = lock(&entry.lines);
        Ok(l.read(from, max, usize::MAX))
    }

    async fn tail(
        &self,
        id: &StreamId,
        from: u64,
    ) -> Result<BoxStream<'static, Result<TailItem, StoreError>>, StoreError> {
        let entry = self.entry(id)?;
        let rx = entry.changed.subscribe();
        let state = TailState {
            entry,
            rx,
            next: from,
            done: false,
        };
        Ok(stream::unfold(state, next_tail_item).boxed())
    }

    async fn close(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        let entry = self.entry(id)?;
        Ok(close_entry(&entry, None).unwrap_or_else(|| entry.meta()))
    }

    async fn close_if_idle(
        &self,
        id: &StreamId,
        idle_since: SystemTime,
    ) -> Result<Option<StreamMeta>, StoreError> {
        let entry = self.entry(id)?;
        Ok(close_entry(&entry, Some(idle_since)))
    }

    async fn remove(&self, id: &StreamId) -> Result<(), StoreError> {
        let entry = {
            let mut map = self.streams.write().unwrap_or_else(PoisonError::into_inner);
            map.remove(id).ok_or(StoreError::NotFound)?
        };
        self.retire(&entry);
        Ok(())
    }

    async fn remove_if_unchanged(
        &self,
        id: &StreamId,
        closed_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let entry = {
            // Under the map's lock no `open` can come in between the look and the
            // removal, and an `append` finds the stream closed.
            let mut map = self.streams.write().unwrap_or_else(PoisonError::into_inner);
            let entry = map.get(id).cloned().ok_or(StoreError::NotFound)?;
            let changed = {
                let l = lock(&entry.lines);
                l.open || l.last_activity > closed_at
            };
            if changed {
                return Ok(false);
            }
            map.remove(id);
            entry
        };
        self.retire(&entry);
        Ok(true)
    }

    async fn meta(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        Ok(self.entry(id)?.meta())
    }

    async fn list(&self, account: &AccountId) -> Result<Vec<StreamMeta>, StoreError> {
        let entries: Vec<Arc<Entry>> = {
            let map = self.streams.read().unwrap_or_else(PoisonError::into_inner);
            map.values()
                .filter(|e| &e.id.account == account)
                .cloned()
                .collect()
        };
        Ok(entries.iter().map(|e| e.meta()).collect())
    }

    async fn list_all(&self) -> Result<Vec<StreamMeta>, StoreError> {
        let entries: Vec<Arc<Entry>> = {
            let map = self.streams.read().unwrap_or_else(PoisonError::into_inner);
            map.values().cloned().collect()
        };
        Ok(entries.iter().map(|e| e.meta()).collect())
    }

    async fn count_request(&self, account: &AccountId) -> Result<u64, StoreError> {
        Ok(self
            .rate
            .count(account, crate::store::account_limits::current_second()))
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct TailState {
    entry: Arc<Entry>,
    rx: watch::Receiver<u64>,
    next: u64,
    done: bool,
}

/// One step of a tail: the next chunk from `next`, or `Eof`, or wait for a change.
async fn next_tail_item(mut s: TailState) -> Option<(Result<TailItem, StoreError>, TailState)> {
    if s.done {
        return None;
    }
    loop {
        // Mark the current version seen *before* reading, so an append that lands
        // between the read and the wait still wakes us.
        s.rx.borrow_and_update();
        let (chunk, open) = {
            let l = lock(&s.entry.lines);
            (
                l.read(s.next, TAIL_CHUNK_LINES, TAIL_CHUNK_BYTES),
                l.open && !l.removed,
            )
        };
        if let Some(last) = chunk.last() {
            // Cannot overflow: ingest refuses a `pos` above `MAX_POS`.
            s.next = last.pos + 1;
            return Some((Ok(TailItem::Lines(chunk)), s));
        }
        if !open {
            s.done = true;
            return Some((Ok(TailItem::Eof), s));
        }
        if s.rx.changed().await.is_err() {
            s.done = true;
            return Some((Ok(TailItem::Eof), s));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use runlog_protocol::StreamKey;

    fn id(key: &str) -> StreamId {
        StreamId {
            account: AccountId::new("acc").unwrap(),
            key: StreamKey::new(key).unwrap(),
        }
    }

    fn line(pos: u64) -> StoredLine {
        StoredLine {
            pos,
            json: Bytes::from(format!(r#"{{"pos":{pos},"out":"x"}}"#)),
        }
    }

    #[tokio::test]
    async fn an_open_refused_for_the_streams_held_keeps_the_account_s_turn() {
        // One stream at most; two new ones at once, then one a second, no waiting.
        let s =
            MemoryStreamStore::new(MemoryLimits::default()).with_account_limits(AccountLimits {
                max_streams: 1,
                max_new_streams_per_sec: 1,
                new_streams_burst: 2,
                new_streams_max_wait: std::time::Duration::ZERO,
                ..AccountLimits::default()
            });
        s.open(&id("a")).await.unwrap();
        for _ in 0..5 {
            let refused = s.open(&id("b")).await.unwrap_err();
            assert!(
                matches!(&refused, StoreError::TooMany(m) if m.contains("holds 1 streams")),
                "{refused:?}"
            );
        }
        s.remove(&id("a")).await.unwrap();
        // The burst's second turn is still there: the refusals above took none.
        s.open(&id("b")).await.unwrap();
    }

    #[tokio::test]
    async fn gap_is_kept_and_filled_in_order() {
        let s = MemoryStreamStore::new(MemoryLimits::default());
        s.open(&id("k")).await.unwrap();
        let ack = s
            .append(&id("k"), vec![line(0), line(2), line(3)])
            .await
            .unwrap();
        assert_eq!(ack.last_contiguous_pos, Some(0));
        let ack = s.append(&id("k"), vec![line(1), line(2)]).await.unwrap();
        assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (1, 1, 4));
        let got: Vec<u64> = s
            .read(&id("k"), 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|l| l.pos)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_pos_repeated_within_a_batch_counts_once_against_the_limits() {
        let limits = MemoryLimits {
            max_lines_per_stream: 3,
            ..MemoryLimits::default()
        };
        let s = MemoryStreamStore::new(limits);
        s.open(&id("k")).await.unwrap();
        s.append(&id("k"), vec![line(0), line(1)]).await.unwrap();
        // Fits: one new line, given twice (and a gap line given twice after it).
        let ack = s.append(&id("k"), vec![line(2), line(2)]).await.unwrap();
        assert_eq!((ack.appended, ack.duplicates), (1, 1));
        assert_eq!(s.meta(&id("k")).await.unwrap().lines, 3);
        assert_eq!(s.totals().0, 3);
        let err = s
            .append(&id("k"), vec![line(5), line(5)])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
        let t = MemoryStreamStore::new(MemoryLimits::default());
        t.open(&id("k")).await.unwrap();
        let ack = t
            .append(&id("k"), vec![line(4), line(0), line(4), line(0)])
            .await
            .unwrap();
        assert_eq!((ack.appended, ack.duplicates), (2, 2));
        assert_eq!(t.totals(), (2, 2 * line(0).json.len() as u64));
    }

    #[tokio::test]
    async fn per_stream_limit_refuses_whole_batch_but_not_a_retry() {
        let limits = MemoryLimits {
            max_lines_per_stream: 3,
            ..MemoryLimits::default()
        };
        let s = MemoryStreamStore::new(limits);
        s.open(&id("k")).await.unwrap();
        s.append(&id("k"), vec![line(0), line(1), line(2)])
            .await
            .unwrap();
        let retry = s.append(&id("k"), vec![line(1), line(2)]).await.unwrap();
        assert_eq!(retry.duplicates, 2);
        let err = s.append(&id("k"), vec![line(3)]).await.unwrap_err();
        assert!(matches!(err, StoreError::LimitExceeded(_)));
        assert_eq!(s.meta(&id("k")).await.unwrap().lines, 3);
    }

    #[tokio::test]
    async fn new_lines_of_a_retried_batch_do_not_pin_its_buffer() {
        let s = MemoryStreamStore::new(MemoryLimits::default());
        s.open(&id("k")).await.unwrap();
        s.append(&id("k"), vec![line(0)]).await.unwrap();
        let buffer = Bytes::from(format!(
            "{}{}",
            r#"{"pos":0,"out":"x"}"#, r#"{"pos":1,"out":"y"}"#
        ));
        let half = buffer.len() / 2;
        // As parsed from one request: both lines are spans of its body.
        let batch =
            LineBatch::new(buffer.clone(), [(0, 0..half), (1, half..buffer.len())]).unwrap();
        let ack = s.append_batch(&id("k"), batch).await.unwrap();
        assert_eq!((ack.appended, ack.duplicates), (1, 1));
        let stored = s.read(&id("k"), 1, 1).await.unwrap();
        assert_eq!(&stored[0].json[..], br#"{"pos":1,"out":"y"}"#);
        assert!(
            !buffer.as_ptr_range().contains(&stored[0].json.as_ptr()),
            "copied out of the request buffer"
        );
    }

    proptest::proptest! {
        /// Batches of any positions (gaps, duplicates, out of order, repeated
        /// `pos` inside a batch) read back as a model where the first line of each
        /// `pos` is kept: from any `pos`, in any chunk size.
        #[test]
        fn reads_match_a_first_write_wins_model(
            batches in proptest::collection::vec(proptest::collection::vec(0u64..40, 0..12), 0..12),
            from in 0u64..45,
            max in 1usize..50,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let s = MemoryStreamStore::new(MemoryLimits::default());
                s.open(&id("k")).await.unwrap();
                let mut model = std::collections::BTreeMap::new();
                for (b, positions) in batches.iter().enumerate() {
                    let batch: Vec<StoredLine> = positions
                        .iter()
                        .map(|&pos| StoredLine { pos, json: Bytes::from(format!("{pos}/{b}")) })
                        .collect();
                    for line in &batch {
                        model.entry(line.pos).or_insert_with(|| line.json.clone());
                    }
                    let ack = s.append(&id("k"), batch).await.unwrap();
                    let contiguous = (0..).take_while(|p| model.contains_key(p)).last();
                    assert_eq!(ack.last_contiguous_pos, contiguous);
                }
                let got = s.read(&id("k"), from, max).await.unwrap();
                let want: Vec<StoredLine> = model
                    .range(from..)
                    .take(max)
                    .map(|(&pos, json)| StoredLine { pos, json: json.clone() })
                    .collect();
                assert_eq!(got, want);
                assert_eq!(s.meta(&id("k")).await.unwrap().lines, model.len() as u64);
            });
        }
    }

    #[tokio::test]
    async fn a_batch_is_stored_as_one_buffer() {
        let s = MemoryStreamStore::new(MemoryLimits::default());
        s.open(&id("k")).await.unwrap();
        let body = Bytes::from_static(b"[{\"pos\":0,\"out\":\"a\"},{\"pos\":1,\"out\":\"b\"}]");
        let batch = crate::ingest::parse_batch(&body).unwrap();
        s.append_batch(&id("k"), batch).await.unwrap();
        let stored = s.read(&id("k"), 0, 10).await.unwrap();
        assert_eq!(&stored[1].json[..], br#"{"pos":1,"out":"b"}"#);
        for line in &stored {
            assert!(
                body.as_ptr_range().contains(&line.json.as_ptr()),
                "a slice of the body"
            );
        }
    }

    #[tokio::test]
    async fn totals_are_released_on_remove() {
        let s = MemoryStreamStore::new(MemoryLimits::default());
        s.open(&id("k")).await.unwrap();
        s.append(&id("k"), vec![line(0), line(0), line(1)])
            .await
            .unwrap();
        assert_eq!(s.totals().0, 2);
        s.remove(&id("k")).await.unwrap();
        assert_eq!(s.totals(), (0, 0));
    }
}
