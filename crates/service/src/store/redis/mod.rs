//! [`RedisStreamStore`]: live streams in Redis, shared by every log-service replica.
//!
//! # Layout
//! Every key of an account carries the hash tag `{account}`, so one account's keys
//! live in one Redis Cluster slot and the Lua scripts stay single-slot (with
//! [`RedisConfig::cluster`] the store runs on a Redis Cluster; accounts spread over
//! its shards):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `NS:{A}:s:K:meta` | hash | `open`, `lines`, `bytes`, `contig` (first `pos` not stored contiguously), `top` (highest `pos` in the stream + 1), `trimmed` (every `pos` below it moved to the overflow store), `activity` (ms) |
//! | `NS:{A}:s:K:lines` | stream | one entry per line, entry id `<pos>-1`, field `l` = the line JSON |
//! | `NS:{A}:s:K:late` | sorted set | lines that arrived after a higher `pos` (gap fills), score = `pos` |
//! | `NS:{A}:s:K:ctl` | stream | one entry `1-1` while the stream is closed: wakes blocked tails |
//! | `NS:{A}:s:K:sections` | hash | the section index (`index.rs`): `next` (first `pos` not indexed), `head` (open sections and counts, JSON), one field per section (its index → the section as JSON); `…:sections:lock` is its lease |
//! | `NS:{A}:index` | sorted set | every key of the account, score = last activity (ms), for `list` |
//! | `NS:{A}:pace` | string | when the account's bucket of new streams is full again (µs, Redis's clock; `open.lua`), expiring then |
//!
//! # Why this shape
//! - **Idempotent across replicas.** Stream entry ids must grow, so the `pos` *is*
//!   the id (`<pos>-1`; `0-0` is not a valid id). One Lua script per batch decides
//!   per line, atomically in Redis, whether its `pos` is new: above `top` → `XADD`;
//!   below `contig` or `trimmed` → duplicate; in between (a gap) → looked up in the
//!   stream and in `late`. Two replicas applying the same retried batch therefore
//!   store it once, whatever the interleaving.
//! - **Gaps stay gaps.** A line filling a gap cannot be `XADD`ed below `top`; it goes
//!   to `late`. Reads merge both in `pos` order; an in-order writer never touches
//!   `late`.
//! - **Tails wait for a notification, not in a poll loop, and share one connection.**
//!   A tail reads pages with the read script; when it has seen everything it waits
//!   for the stream's channel, on which the append and close scripts `PUBLISH` (the
//!   `ctl` key's name) in the same atomic step. One pub/sub connection per store
//!   serves every tail (`store/notify.rs`); a tail subscribes before its first read and
//!   marks notifications seen before each read, so an append between a read and the
//!   wait still wakes it. Without a notification a tail reads again after
//!   [`RedisConfig::block`], so a lost one delays a line, never loses it.
//! - **Abandoned streams expire.** Every open/append/close refreshes a TTL on all of
//!   the stream's keys; a stream nobody touches for that long disappears, and
//!   `list` drops its index entry when it finds the metadata gone.
//! - **Bounded length, overflow to object storage.** When more than
//!   [`RedisConfig::max_lines`] lines (or [`RedisConfig::max_bytes`] bytes) of a
//!   stream sit in Redis, the oldest contiguous half is written as one NDJSON
//!   segment object `A/K/+<first pos>.ndjson` (`A/K` the stream's directory from
//!   [`super::names::stream_dir`]) to the overflow [`ObjectStore`] and
//!   only then trimmed from Redis (`trimmed` advances in the same script that
//!   trims). Reads below `trimmed` come from the segments, so
//!   backfill, snapshots and archives still see every line. Only the contiguous
//!   prefix is moved, because a gap fill below `trimmed` could not be placed; a
//!   stream whose in-Redis part exceeds twice a cap (a huge gap, or no overflow
//!   store configured) refuses appends with [`StoreError::LimitExceeded`] rather
//!   than grow without bound.
//! - **Outages are errors, not crashes.** The shared connection is created lazily,
//!   so the service starts while Redis is down; every Redis error maps to
//!   [`StoreError::Unavailable`] (503), and the connection manager reconnects by
//!   itself once Redis is back. Scripts are loaded again after a Redis restart
//!   (`EVALSHA` answered with `NOSCRIPT` triggers `SCRIPT LOAD` and one retry).
//!
//! # Modules
//! | module | job |
//! |---|---|
//! | this file | the store: key names, the [`StreamStore`] calls, appends in chunks |
//! | `connection` | URLs and TLS → the command connection and the notifier |
//! | `reconnect` | `Reconnecting`: one more attempt on a broken connection or a cluster in motion |
//! | `cluster` | slots, a notifier per node, `SCAN` over every primary |
//! | `overflow` | moving a stream's head to segments of the overflow store, reading them back |
//! | `tail` | pages merged from segments and Redis; the tail that waits between pages |
//! | `index` | the section index kept beside each stream ([`crate::store::section_index::IndexStore`]) |
//! | `scripts` | the Lua scripts (`scripts/*.lua`, each atomic in Redis) and `EVALSHA` |
//!
//! Just over 700 lines, none of them tests (those are in `tests/`): the key layout above
//! and the `StreamStore` calls, one per trait method; every other job is a module above.

mod cluster;
mod connection;
mod index;
mod overflow;
mod reconnect;
mod scripts;
mod tail;

use super::{StoreError, StoredLine, StreamId, StreamMeta, StreamStore, TailItem};
use crate::store::account_limits::{self, AccountLimits};
use async_trait::async_trait;
use cluster::{Notify, key_slot};
use connection::Conn;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::ObjectStore;
use reconnect::{Reconnecting, unavailable};
use redis::Value;
use runlog_protocol::service::AppendAck;
use runlog_protocol::{AccountId, StreamKey};
use scripts::Scripts;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tail::TailState;

/// Settings of a [`RedisStreamStore`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://…` for TLS (the server's
    /// certificate checked against the system's CAs, or [`ca_pem`](Self::ca_pem)).
    /// With [`cluster`](Self::cluster): one or more such URLs, comma-separated, of
    /// nodes of the cluster (the rest is discovered from them).
    pub url: String,
    /// The URL names nodes of a Redis Cluster: each command goes to the node that
    /// holds its key's slot (every key of an account shares one slot).
    pub cluster: bool,
    /// PEM of the CA that signed the server's certificate, when it is not one the
    /// system trusts (a private CA). Only with a `rediss://` URL.
    pub ca_pem: Option<Vec<u8>>,
    /// Prefix of every key, so several deployments can share one Redis.
    pub namespace: String,
    /// A stream with no open, append or close for this long is removed by Redis.
    pub ttl: Duration,
    /// Lines a stream may keep in Redis before its oldest half moves to the overflow
    /// store (twice this with no overflow store is a hard limit).
    pub max_lines: u64,
    /// Bytes of line JSON a stream may keep in Redis before its oldest half moves to
    /// the overflow store (twice this with no overflow store is a hard limit).
    pub max_bytes: u64,
    /// How long a tail with nothing new waits for a notification before it reads
    /// again anyway (the safety net should a notification be lost).
    pub block: Duration,
    /// Reply deadline for ordinary commands; a Redis slower than this is "unavailable".
    pub response_timeout: Duration,
    /// Lines a tail reads per page.
    pub page_lines: usize,
    /// What each account may hold (its streams and its bytes in Redis are counted in
    /// Redis, so the limits hold across replicas).
    pub account_limits: AccountLimits,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".to_owned(),
            cluster: false,
            ca_pem: None,
            namespace: "runlog".to_owned(),
            ttl: Duration::from_secs(24 * 3600),
            max_lines: 100_000,
            max_bytes: 64 << 20,
            block: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            page_lines: 1000,
            account_limits: AccountLimits::default(),
        }
    }
}

/// Live streams in Redis Streams: see the module documentation for the layout and
/// its guarantees. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStreamStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    notifier: Notify,
    config: RedisConfig,
    overflow: Option<Arc<dyn ObjectStore>>,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamStore")
            .field("namespace", &self.inner.config.namespace)
            .field("overflow", &self.inner.overflow.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisStreamStore {
    /// A store on the Redis at `config.url`. Does not connect yet (the first call
    /// does), so a service can start while Redis is down and answer 503 meanwhile.
    ///
    /// `overflow` receives the oldest lines of streams longer than
    /// [`RedisConfig::max_lines`]; give it a namespace of its own (objects are named
    /// `account/key/+<pos>.ndjson`). Without it, such streams refuse more lines.
    pub fn new(
        config: RedisConfig,
        overflow: Option<Arc<dyn ObjectStore>>,
    ) -> redis::RedisResult<Self> {
        let (conn, notifier) = connection::connect(&config)?;
        Ok(RedisStreamStore {
            inner: Arc::new(Inner {
                notifier,
                conn,
                config,
                overflow,
                scripts: Scripts::new(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Runs the append script on one chunk (ascending `pos`); returns lines appended,
    /// duplicates, and the first `pos` not stored contiguously.
    async fn append_chunk(
        &self,
        id: &StreamId,
        keys: &Keys,
        lines: &[StoredLine],
    ) -> Result<(u64, u64, u64), StoreError> {
        let inner = &self.inner;
        let hard_limit = inner.config.max_lines.saturating_mul(2);
        let hard_bytes = inner.config.max_bytes.saturating_mul(2);
        let reply: Vec<i64> = inner
            .scripts
            .append
            .run(&mut inner.conn(), &keys.with_usage(), |c| {
                c.arg(now_ms())
                    .arg(inner.ttl_ms())
                    .arg(id.key.as_str())
                    .arg(hard_limit)
                    .arg(hard_bytes)
                    .arg(inner.config.account_limits.max_bytes);
                for line in lines {
                    c.arg(line.pos).arg(line.json.as_ref());
                }
            })
            .await
            .map_err(unavailable)?;
        let [
            status,
            appended,
            duplicates,
            contig,
            in_redis,
            in_redis_bytes,
        ] = reply[..]
        else {
            return Err(StoreError::Corrupt(format!(
                "append script reply {reply:?}"
            )));
        };
        match status {
            -1 => return Err(StoreError::NotFound),
            -2 => return Err(StoreError::Closed),
            -3 => {
                return Err(StoreError::LimitExceeded(format!(
                    "stream holds {in_redis} lines ({in_redis_bytes} bytes) in Redis and cannot move more to the archive (limits {hard_limit} lines, {hard_bytes} bytes)"
                )));
            }
            -4 => {
                return Err(StoreError::LimitExceeded(format!(
                    "account {} holds {in_redis} bytes of lines, its limit of {} bytes",
                    id.account, inner.config.account_limits.max_bytes
                )));
            }
            _ => {}
        }
        let over_lines = u64::try_from(in_redis).unwrap_or(0) > inner.config.max_lines;
        let over_bytes = u64::try_from(in_redis_bytes).unwrap_or(0) > inner.config.max_bytes;
        if (over_lines || over_bytes)
            && let Err(e) = inner.move_overflow(id).await
        {
            // The chunk itself is stored; moving the head is retried by the next append.
            tracing::warn!(account = %id.account, key = %id.key, error = %e, "could not move stream head to overflow store");
        }
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok((as_u64(appended), as_u64(duplicates), as_u64(contig)))
    }
}

/// Lines per append script call (see `append`).
const SCRIPT_LINES: usize = 1000;

/// Redis key names of one stream.
struct Keys {
    meta: String,
    lines: String,
    late: String,
    ctl: String,
    index: String,
    /// The account's usage hash: `bytes` of line JSON its streams hold in Redis.
    usage: String,
    /// The account's pace of new streams: when its bucket is full again (µs).
    pace: String,
    trim_lock: String,
    /// The stream's section index (`index.rs`) and the lock of its lease.
    sections: String,
    sections_lock: String,
}

impl Keys {
    /// The keys every open/append/close script takes, in its `KEYS` order.
    fn stream_keys(&self) -> [&str; 5] {
        [&self.meta, &self.lines, &self.late, &self.ctl, &self.index]
    }

    /// [`stream_keys`](Self::stream_keys) and the account's usage: what the append
    /// and remove scripts take.
    fn with_usage(&self) -> [&str; 6] {
        [
            &self.meta,
            &self.lines,
            &self.late,
            &self.ctl,
            &self.index,
            &self.usage,
        ]
    }
}

impl Inner {
    fn keys(&self, id: &StreamId) -> Keys {
        let ns = &self.config.namespace;
        let base = format!("{ns}:{{{}}}:s:{}", id.account, id.key);
        Keys {
            meta: format!("{base}:meta"),
            lines: format!("{base}:lines"),
            late: format!("{base}:late"),
            ctl: format!("{base}:ctl"),
            index: format!("{ns}:{{{}}}:index", id.account),
            usage: format!("{ns}:{{{}}}:usage", id.account),
            pace: format!("{ns}:{{{}}}:pace", id.account),
            trim_lock: format!("{base}:trim"),
            sections: format!("{base}:sections"),
            sections_lock: format!("{base}:sections:lock"),
        }
    }

    fn conn(&self) -> Reconnecting {
        Reconnecting(self.conn.clone())
    }

    /// Subscribes a tail to its stream's notifications (see [`Notify`]).
    async fn subscribe(&self, channel: String) -> Result<super::notify::Subscription, StoreError> {
        match (&self.notifier, &self.conn) {
            (Notify::Cluster(notify), Conn::Cluster(cluster)) => {
                let slot = key_slot(channel.as_bytes());
                if let Some(node) = notify.for_slot(cluster, slot).await
                    && let Ok(subscription) = node.subscribe(channel.clone()).await
                {
                    return Ok(subscription);
                }
                notify.any.subscribe(channel).await
            }
            (Notify::Single(notifier), _) => notifier.subscribe(channel).await,
            (Notify::Cluster(notify), _) => notify.any.subscribe(channel).await,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

impl Inner {
    async fn meta_fields(&self, keys: &Keys) -> Result<HashMap<String, String>, StoreError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.meta)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if fields.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(fields)
    }
}

/// `open.lua`'s `interval_us` for an account that may open no new stream.
const PACE_CLOSED: i64 = -1;
/// `open.lua`'s `interval_us` for an open whose turn in the pace is already taken.
const PACE_TAKEN: i64 = -2;

impl RedisStreamStore {
    /// Runs `open.lua` on `id` with the pace's `interval_us`; returns its status and
    /// wait (see the script).
    async fn open_script(&self, id: &StreamId, interval_us: i64) -> Result<(i64, u64), StoreError> {
        let inner = &self.inner;
        let keys = inner.keys(id);
        let limits = &inner.config.account_limits;
        let [meta, lines, late, ctl, index] = keys.stream_keys();
        inner
            .scripts
            .open
            .run(
                &mut inner.conn(),
                &[meta, lines, late, ctl, index, &keys.pace],
                |c| {
                    c.arg(now_ms())
                        .arg(inner.ttl_ms())
                        .arg(id.key.as_str())
                        .arg(limits.max_streams)
                        .arg(interval_us)
                        .arg(limits.new_streams_burst)
                        .arg(account_limits::max_wait_us(limits));
                },
            )
            .await
            .map_err(unavailable)
    }
}

impl RedisStreamStore {
    /// Closes `id` in one script, unless its `activity` (ms) is past `idle_since_ms`:
    /// then `None`, the stream left as it is.
    async fn close_unless_active_after(
        &self,
        id: &StreamId,
        idle_since_ms: Option<u64>,
    ) -> Result<Option<StreamMeta>, StoreError> {
        let inner = &self.inner;
        let keys = inner.keys(id);
        let status: i64 = inner
            .scripts
            .close
            .run(&mut inner.conn(), &keys.stream_keys(), |c| {
                c.arg(now_ms()).arg(inner.ttl_ms()).arg(id.key.as_str());
                if let Some(ms) = idle_since_ms {
                    c.arg(ms);
                }
            })
            .await
            .map_err(unavailable)?;
        match status {
            -1 => Err(StoreError::NotFound),
            -2 => Ok(None),
            _ => self.meta(id).await.map(Some),
        }
    }
}

#[async_trait]
impl StreamStore for RedisStreamStore {
    async fn open(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        let limits = &self.inner.config.account_limits;
        let mut interval = account_limits::pace_interval_us(limits.max_new_streams_per_sec)
            .map_or(PACE_CLOSED, |us| i64::try_from(us).unwrap_or(i64::MAX));
        loop {
            let (status, wait_us) = self.open_script(id, interval).await?;
            match status {
                -4 => {
                    return Err(account_limits::streams_held_refused(
                        &id.account,
                        limits.max_streams,
                    ));
                }
                // No new stream at all: the script has no wait to say.
                -5 if interval == PACE_CLOSED => {
                    return Err(account_limits::pace_refused(
                        &id.account,
                        limits,
                        account_limits::PACE_CLOSED_WAIT_US,
                    ));
                }
                -5 => return Err(account_limits::pace_refused(&id.account, limits, wait_us)),
                // Its turn is reserved: open again then, without taking another.
                -6 if interval != PACE_TAKEN => {
                    tokio::time::sleep(Duration::from_micros(wait_us)).await;
                    interval = PACE_TAKEN;
                }
                _ => return self.meta(id).await,
            }
        }
    }

    async fn append(
        &self,
        id: &StreamId,
        mut lines: Vec<StoredLine>,
    ) -> Result<AppendAck, StoreError> {
        let inner = &self.inner;
        let keys = inner.keys(id);
        // Ascending order lets the script advance `contig` as it goes, and makes a
        // duplicate inside one batch a plain "already stored".
        lines.sort_by_key(|l| l.pos);
        let mut ack = AppendAck {
            appended: 0,
            duplicates: 0,
            last_contiguous_pos: None,
            next_pos: 0,
        };
        // One script call per chunk: a script blocks Redis for every replica while it
        // runs, so a huge batch must not become one long script. Chunks are applied
        // in order; if a later one fails, the client's retry finds the earlier ones
        // stored (duplicates), so nothing is stored twice.
        let chunks: Vec<&[StoredLine]> = if lines.is_empty() {
            vec![&[]]
        } else {
            lines.chunks(SCRIPT_LINES).collect()
        };
        for chunk in chunks {
            let (appended, duplicates, contig) = self.append_chunk(id, &keys, chunk).await?;
            ack.appended += appended;
            ack.duplicates += duplicates;
            ack.next_pos = contig;
            ack.last_contiguous_pos = contig.checked_sub(1);
        }
        Ok(ack)
    }

    async fn read(
        &self,
        id: &StreamId,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredLine>, StoreError> {
        if max == 0 {
            self.meta(id).await?;
            return Ok(Vec::new());
        }
        Ok(self.inner.read_page(id, from, max, usize::MAX).await?.1)
    }

    async fn tail(
        &self,
        id: &StreamId,
        from: u64,
    ) -> Result<BoxStream<'static, Result<TailItem, StoreError>>, StoreError> {
        self.meta(id).await?;
        let state = TailState {
            inner: self.inner.clone(),
            id: id.clone(),
            next: from,
            subscription: None,
            done: false,
        };
        Ok(futures_util::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let item = state.next_item().await;
            if !matches!(item, Ok(TailItem::Lines(_))) {
                state.done = true;
            }
            Some((item, state))
        })
        .boxed())
    }

    async fn close(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        self.close_unless_active_after(id, None)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn close_if_idle(
        &self,
        id: &StreamId,
        idle_since: SystemTime,
    ) -> Result<Option<StreamMeta>, StoreError> {
        self.close_unless_active_after(id, Some(unix_ms(idle_since)))
            .await
    }

    async fn remove_if_unchanged(
        &self,
        id: &StreamId,
        closed_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let keys = inner.keys(id);
        let ms = unix_ms(closed_at);
        let status: i64 = inner
            .scripts
            .remove_if_unchanged
            .run(&mut inner.conn(), &keys.with_usage(), |c| {
                c.arg(ms).arg(id.key.as_str());
            })
            .await
            .map_err(unavailable)?;
        match status {
            -1 => Err(StoreError::NotFound),
            0 => Ok(false),
            _ => {
                self.remove_overflow(id).await?;
                Ok(true)
            }
        }
    }

    async fn remove(&self, id: &StreamId) -> Result<(), StoreError> {
        let inner = &self.inner;
        let keys = inner.keys(id);
        let existed: i64 = inner
            .scripts
            .remove
            .run(&mut inner.conn(), &keys.with_usage(), |c| {
                c.arg(id.key.as_str());
            })
            .await
            .map_err(unavailable)?;
        self.remove_overflow(id).await?;
        if existed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn meta(&self, id: &StreamId) -> Result<StreamMeta, StoreError> {
        let fields = self.inner.meta_fields(&self.inner.keys(id)).await?;
        Ok(meta_from_fields(id.clone(), &fields))
    }

    async fn list(&self, account: &AccountId) -> Result<Vec<StreamMeta>, StoreError> {
        let inner = &self.inner;
        let ns = &inner.config.namespace;
        let index = format!("{ns}:{{{account}}}:index");
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut inner.conn())
            .await
            .map_err(unavailable)?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for member in &members {
            pipe.hgetall(format!("{ns}:{{{account}}}:s:{member}:meta"));
        }
        let all: Vec<HashMap<String, String>> = pipe
            .query_async(&mut inner.conn())
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (member, fields) in members.into_iter().zip(all) {
            match StreamKey::new(member.clone()) {
                Ok(key) if !fields.is_empty() => out.push(meta_from_fields(
                    StreamId {
                        account: account.clone(),
                        key,
                    },
                    &fields,
                )),
                _ => expired.push(member),
            }
        }
        if !expired.is_empty() {
            // The stream's keys expired (abandoned); forget it in the index too.
            let _: Result<i64, _> = redis::cmd("ZREM")
                .arg(&index)
                .arg(&expired)
                .query_async(&mut inner.conn())
                .await;
        }
        out.sort_by(|a, b| a.id.key.cmp(&b.id.key));
        Ok(out)
    }

    fn section_indexes(&self) -> Arc<dyn crate::store::section_index::IndexStore> {
        Arc::new(index::RedisIndexStore::new(self.inner.clone()))
    }

    async fn list_all(&self) -> Result<Vec<StreamMeta>, StoreError> {
        let inner = &self.inner;
        let pattern = format!("{}:{{*}}:index", inner.config.namespace);
        let indexes = cluster::scan_all(&inner.conn, &pattern).await?;
        let prefix = format!("{}:{{", inner.config.namespace);
        let mut out = Vec::new();
        for index in indexes {
            let account = index
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("}:index"))
                .and_then(|a| AccountId::new(a).ok());
            if let Some(account) = account {
                out.extend(self.list(&account).await?);
            }
        }
        Ok(out)
    }

    async fn count_request(&self, account: &AccountId) -> Result<u64, StoreError> {
        // A counter per account and second, shared by every replica; it outlives its
        // second briefly and then expires by itself.
        let second = crate::store::account_limits::current_second();
        let key = format!(
            "{}:{{{account}}}:rate:{second}",
            self.inner.config.namespace
        );
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .pexpire(&key, 2_000)
            .ignore()
            .query_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        Ok(count)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let pong: String = redis::cmd("PING")
            .query_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }
}

fn int(v: Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::BulkString(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("expected an integer".into())),
        other => Err(StoreError::Corrupt(format!(
            "expected an integer, got {other:?}"
        ))),
    }
}

fn bulk(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        other => Err(StoreError::Corrupt(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn field(fields: &HashMap<String, String>, name: &str) -> u64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn meta_from_fields(id: StreamId, fields: &HashMap<String, String>) -> StreamMeta {
    let contig = field(fields, "contig");
    StreamMeta {
        id,
        open: fields.get("open").is_some_and(|v| v == "1"),
        lines: field(fields, "lines"),
        bytes: field(fields, "bytes"),
        last_contiguous_pos: contig.checked_sub(1),
        last_activity: UNIX_EPOCH + Duration::from_millis(field(fields, "activity")),
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `t` in milliseconds since the Unix epoch, as stream activity is kept in Redis.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
