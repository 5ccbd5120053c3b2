//! [`RedisStreamStore`]: live streams in Redis, shared by every log-service replica.
//!
//! # Layout
//! Every key of an account carries the hash tag `{account}`, so one account's keys
//! live in one Redis Cluster slot and the Lua scripts below stay single-slot (with
//! [`RedisConfig::cluster`] the store runs on a Redis Cluster; accounts spread over
//! its shards):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `NS:{A}:s:K:meta` | hash | `open`, `lines`, `bytes`, `contig` (first `pos` not stored contiguously), `top` (highest `pos` in the stream + 1), `trimmed` (every `pos` below it moved to the overflow store), `activity` (ms) |
//! | `NS:{A}:s:K:lines` | stream | one entry per line, entry id `<pos>-1`, field `l` = the line JSON |
//! | `NS:{A}:s:K:late` | sorted set | lines that arrived after a higher `pos` (gap fills), score = `pos` |
//! | `NS:{A}:s:K:ctl` | stream | one entry `1-1` while the stream is closed: wakes blocked tails |
//! | `NS:{A}:index` | sorted set | every key of the account, score = last activity (ms), for `list` |
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
//!   serves every tail (`notify.rs`); a tail subscribes before its first read and
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

use super::{StoreError, StoredLine, StreamId, StreamMeta, StreamStore, TailItem};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue, Value};
use runlog_protocol::service::AppendAck;
use runlog_protocol::{AccountId, StreamKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        }
    }
}

/// Live streams in Redis Streams: see the module documentation for the layout and
/// its guarantees. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStreamStore {
    inner: Arc<Inner>,
}

/// Where tails wait for their streams' notifications.
enum Notify {
    /// One server: one pub/sub connection.
    Single(super::notify::Notifier),
    /// A cluster: see [`ClusterNotify`].
    Cluster(Box<ClusterNotify>),
}

/// A cluster node's address.
type Node = (String, u16);

/// `(first slot, last slot, primary)` of each slot range.
type SlotTable = Vec<(u16, u16, Node)>;

/// Notifications on a cluster. A `PUBLISH` reaches subscribers on its own node at once,
/// and other nodes through the cluster bus, which delays it by up to ~40 ms under
/// steady traffic (measured outside runlog too: `PUBLISH` every 2 ms on one node,
/// received on another at p50 17 ms). So a tail subscribes on the node that owns its
/// stream's slot — where the append script publishes — with one pub/sub connection per
/// node; when that node is unknown or down, on any node given (`any`).
struct ClusterNotify {
    any: super::notify::Notifier,
    /// The first node's connection settings (credentials, TCP), for the other nodes.
    template: redis::ConnectionInfo,
    certificates: Option<redis::TlsCertificates>,
    /// One notifier per node, created on first use.
    nodes: std::sync::Mutex<HashMap<Node, Arc<super::notify::Notifier>>>,
    /// `(first slot, last slot, node)` from `CLUSTER SLOTS`, fetched when a slot is
    /// missing (a cluster resharded since then still delivers, through `any`'s path).
    slots: std::sync::Mutex<SlotTable>,
}

impl ClusterNotify {
    /// The notifier of the node that owns `slot`, if it can be found.
    async fn for_slot(
        &self,
        cluster: &redis::cluster_async::ClusterConnection,
        slot: u16,
    ) -> Option<Arc<super::notify::Notifier>> {
        let find = |slots: &[(u16, u16, Node)]| {
            slots
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                .map(|(_, _, node)| node.clone())
        };
        let cached = find(&self.slots.lock().unwrap_or_else(|e| e.into_inner()));
        let node = match cached {
            Some(node) => node,
            None => {
                let table = slot_table(cluster.clone()).await.ok()?;
                let node = find(&table);
                *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = table;
                node?
            }
        };
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notifier) = nodes.get(&node) {
            return Some(notifier.clone());
        }
        let addr = match self.template.addr() {
            redis::ConnectionAddr::TcpTls { insecure, .. } => redis::ConnectionAddr::TcpTls {
                host: node.0.clone(),
                port: node.1,
                insecure: *insecure,
                tls_params: None,
            },
            _ => redis::ConnectionAddr::Tcp(node.0.clone(), node.1),
        };
        let info = self.template.clone().set_addr(addr);
        let client = match &self.certificates {
            None => Client::open(info),
            Some(certs) => Client::build_with_tls(info, certs.clone()),
        }
        .ok()?;
        let notifier = Arc::new(super::notify::Notifier::new(vec![client]));
        nodes.insert(node, notifier.clone());
        Some(notifier)
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag — the part between
/// the first `{` and the next `}`, when not empty — or of the whole key, mod 16 384.
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// The connection every command goes through.
#[derive(Clone)]
enum Conn {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster: the client routes each command to its key's node and
    /// follows `MOVED`/`ASK` when slots move.
    Cluster(redis::cluster_async::ClusterConnection),
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
        let certificates = match &config.ca_pem {
            Some(_)
                if !config
                    .url
                    .split(',')
                    .all(|u| u.trim().starts_with("rediss://")) =>
            {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a CA certificate for Redis needs a rediss:// (TLS) URL",
                )));
            }
            Some(ca) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            }),
            None => None,
        };
        let seeds: Vec<&str> = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if seeds.len() > 1 && !config.cluster {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "several Redis URLs are the nodes of a cluster: give one URL, or enable cluster mode",
            )));
        }
        // A client per node given: the first is the store's connection without
        // cluster mode; notifications fall back to any of them (a cluster passes every
        // PUBLISH to every node, so one node hears all of them).
        // TCP_NODELAY on every connection: requests from many tails and writers share
        // one connection per node, and a small command must not wait behind an
        // unacknowledged one (Nagle's algorithm).
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let infos = seeds
            .iter()
            .map(|url| {
                redis::IntoConnectionInfo::into_connection_info(*url)
                    .map(|info| info.set_tcp_settings(tcp.clone()))
            })
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let clients = infos
            .iter()
            .map(|info| match &certificates {
                None => Client::open(info.clone()),
                Some(certs) => Client::build_with_tls(info.clone(), certs.clone()),
            })
            .collect::<redis::RedisResult<Vec<Client>>>()?;
        let (Some(client), Some(template)) = (clients.first().cloned(), infos.first().cloned())
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis URL given",
            )));
        };
        let conn = if config.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(config.response_timeout)
                // Fail soon while nodes are down (the caller answers 503 and the
                // writer retries), but not before a failover has had its chance:
                // after one, a command may spend two tries on the failed primary's
                // address before a node redirects it to the promoted replica, and
                // with two tries that redirect was left unfollowed (tested).
                .retries(4)
                .max_retry_wait(500)
                .tcp_settings(tcp);
            if let Some(certs) = &certificates {
                builder = builder.certs(certs.clone());
            }
            // Connects in the background: like the single-server connection, the
            // service starts while Redis is down and answers 503 meanwhile.
            Conn::Cluster(
                builder.build()?.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(Duration::from_secs(2))
                        .set_response_timeout(config.response_timeout),
                ),
            )
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(config.response_timeout))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                // Fail fast while Redis is down (the caller answers 503 and the writer
                // retries); the manager keeps reconnecting on later calls.
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                manager_config,
            )?)
        };
        let notifier = if config.cluster {
            Notify::Cluster(Box::new(ClusterNotify {
                any: super::notify::Notifier::new(clients),
                template,
                certificates,
                nodes: std::sync::Mutex::new(HashMap::new()),
                slots: std::sync::Mutex::new(Vec::new()),
            }))
        } else {
            Notify::Single(super::notify::Notifier::new(clients))
        };
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
            .run(&mut inner.conn(), &keys.stream_keys(), |c| {
                c.arg(now_ms())
                    .arg(inner.ttl_ms())
                    .arg(id.key.as_str())
                    .arg(hard_limit)
                    .arg(hard_bytes);
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

/// A failed overflow-store call as callers see it: the kind of failure, never the
/// backend's message (it names the server's paths; it goes to the log instead).
fn overflow_failure(e: &object_store::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "overflow store: {}",
        super::blob::backend_failure("overflow store", e)
    ))
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
    trim_lock: String,
}

impl Keys {
    /// The keys every open/append/close script takes, in its `KEYS` order.
    fn stream_keys(&self) -> [&str; 5] {
        [&self.meta, &self.lines, &self.late, &self.ctl, &self.index]
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
            trim_lock: format!("{base}:trim"),
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

    /// One page of lines with `pos >= from` (overflow segments first, then Redis),
    /// and whether the stream is open — read atomically from Redis, so "closed and
    /// nothing more" is never wrong. At most `max` lines and `max_bytes` of line
    /// JSON, but always the first line found (a tail must move on).
    async fn read_page(
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

    fn segment_dir(id: &StreamId) -> ObjectPath {
        super::names::stream_dir(id)
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
            .map_err(|e| overflow_failure(&e))?;
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

    async fn read_overflow(
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
            let body = store
                .get(path)
                .await
                .map_err(|e| overflow_failure(&e))?
                .bytes()
                .await
                .map_err(|e| overflow_failure(&e))?;
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
    async fn move_overflow(&self, id: &StreamId) -> Result<(), StoreError> {
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
                let existing = store
                    .get(&path)
                    .await
                    .map_err(|e| overflow_failure(&e))?
                    .bytes()
                    .await
                    .map_err(|e| overflow_failure(&e))?;
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
                        .map_err(|e| overflow_failure(&e))?;
                    (target, moved_bytes)
                }
            }
            Err(e) => return Err(overflow_failure(&e)),
        };
        // -1: another mover advanced the mark first; what it moved is in its segments.
        let moved: i64 = self
            .scripts
            .trim
            .run(
                &mut self.conn(),
                &[&keys.meta, &keys.lines, &keys.late],
                |c| {
                    c.arg(trimmed).arg(target).arg(moved_bytes);
                },
            )
            .await
            .map_err(unavailable)?;
        tracing::debug!(account = %id.account, key = %id.key, from = trimmed, to = target, moved, "moved stream head to overflow store");
        Ok(())
    }

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

impl RedisStreamStore {
    /// Deletes the segments the head of `id` was moved to (its keys are gone).
    async fn remove_overflow(&self, id: &StreamId) -> Result<(), StoreError> {
        let inner = &self.inner;
        if let Some(store) = inner.overflow.as_deref() {
            for (_, path) in inner.segments(store, id).await? {
                store
                    .delete(&path)
                    .await
                    .map_err(|e| overflow_failure(&e))?;
            }
        }
        Ok(())
    }

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
        let inner = &self.inner;
        let keys = inner.keys(id);
        let _: i64 = inner
            .scripts
            .open
            .run(&mut inner.conn(), &keys.stream_keys(), |c| {
                c.arg(now_ms()).arg(inner.ttl_ms()).arg(id.key.as_str());
            })
            .await
            .map_err(unavailable)?;
        self.meta(id).await
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
            .run(&mut inner.conn(), &keys.stream_keys(), |c| {
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
        let existed: i64 = redis::pipe()
            .atomic()
            .del(&keys.meta)
            .del(&keys.lines)
            .ignore()
            .del(&keys.late)
            .ignore()
            .del(&keys.ctl)
            .ignore()
            .zrem(&keys.index, id.key.as_str())
            .ignore()
            // Tails re-read, find the stream gone and end.
            .cmd("PUBLISH")
            .arg(&keys.ctl)
            .arg(1)
            .ignore()
            .query_async::<(i64,)>(&mut inner.conn())
            .await
            .map_err(unavailable)?
            .0;
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

    async fn list_all(&self) -> Result<Vec<StreamMeta>, StoreError> {
        let inner = &self.inner;
        let pattern = format!("{}:{{*}}:index", inner.config.namespace);
        let mut indexes: Vec<String> = Vec::new();
        // Each node holds the indexes of its own slots: a cluster is scanned node by
        // node (one SCAN cursor belongs to one node).
        let nodes = match &inner.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(cluster) => primaries(cluster.clone())
                .await?
                .into_iter()
                .map(Some)
                .collect(),
        };
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                // SCAN, not KEYS: it never blocks Redis for long, however many accounts.
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, batch): (u64, Vec<String>) = match (&inner.conn, &node) {
                    (Conn::Cluster(cluster), Some((host, port))) => {
                        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            },
                        );
                        let reply = cluster
                            .clone()
                            .route_command(scan, routing)
                            .await
                            .map_err(unavailable)?;
                        redis::from_redis_value(reply)
                            .map_err(|e| StoreError::Corrupt(format!("SCAN reply: {e}")))?
                    }
                    _ => scan
                        .query_async(&mut inner.conn())
                        .await
                        .map_err(unavailable)?,
                };
                indexes.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        indexes.sort();
        indexes.dedup();
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

/// One tail's position and its subscription to the stream's notifications.
struct TailState {
    inner: Arc<Inner>,
    id: StreamId,
    next: u64,
    subscription: Option<super::notify::Subscription>,
    done: bool,
}

impl TailState {
    /// The next page of lines, `Eof`, or an error (after which the tail ends and the
    /// client resumes with `Last-Event-ID`).
    async fn next_item(&mut self) -> Result<TailItem, StoreError> {
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
                    self.inner.config.page_lines.min(super::TAIL_CHUNK_LINES),
                    super::TAIL_CHUNK_BYTES,
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

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis unavailable: {e}"))
}

/// The shared connection, sending a command a second time when the first attempt
/// found the connection broken (on a cluster too, see the failover note below). After a
/// Redis restart the manager only notices the
/// dead socket on the next command; without this, that command (one per replica)
/// would fail although Redis is back. Every command here is safe to repeat: appends
/// are idempotent per `pos`, and the other scripts check state before changing it.
struct Reconnecting(Conn);

fn is_broken_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// On a cluster, also the answers of a topology in motion (a failover, a slot moved):
/// the client has looked the topology up again when it gives up, so a second attempt
/// goes where the slot is now.
fn is_cluster_in_motion(e: &redis::RedisError) -> bool {
    is_broken_connection(e)
        || matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}

impl redis::aio::ConnectionLike for Reconnecting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.0 {
                Conn::Single(c) => match c.send_packed_command(cmd).await {
                    Err(e) if is_broken_connection(&e) => c.send_packed_command(cmd).await,
                    other => other,
                },
                // The cluster client retries a node itself, but after a failover it
                // retries the failed primary's address until it gives up, and only
                // then looks up who owns the slot now (a node whose view is older may
                // still answer MOVED meanwhile): the second attempt reaches the
                // promoted replica. Without it, the first command after a failover
                // failed (tested).
                Conn::Cluster(c) => match c.req_packed_command(cmd).await {
                    Err(e) if is_cluster_in_motion(&e) => c.req_packed_command(cmd).await,
                    other => other,
                },
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &mut self.0 {
                Conn::Single(c) => match c.send_packed_commands(cmd, offset, count).await {
                    Err(e) if is_broken_connection(&e) => {
                        c.send_packed_commands(cmd, offset, count).await
                    }
                    other => other,
                },
                Conn::Cluster(c) => match c.req_packed_commands(cmd, offset, count).await {
                    Err(e) if is_cluster_in_motion(&e) => {
                        c.req_packed_commands(cmd, offset, count).await
                    }
                    other => other,
                },
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `(host, port)` of every primary of a cluster, from `CLUSTER SLOTS`.
async fn primaries(
    cluster: redis::cluster_async::ClusterConnection,
) -> Result<Vec<Node>, StoreError> {
    let mut nodes: Vec<Node> = slot_table(cluster)
        .await?
        .into_iter()
        .map(|(_, _, node)| node)
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// `(first slot, last slot, primary's (host, port))` of every range, from
/// `CLUSTER SLOTS`.
async fn slot_table(
    mut cluster: redis::cluster_async::ClusterConnection,
) -> Result<SlotTable, StoreError> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut cluster)
        .await
        .map_err(unavailable)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("CLUSTER SLOTS {what}"));
    let mut table = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, …], replicas…]: the third entry is the primary.
        let Value::Array(fields) = range else {
            return Err(corrupt("entry"));
        };
        let mut fields = fields.into_iter();
        let (Some(first), Some(last), Some(Value::Array(primary))) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(corrupt("entry"));
        };
        let mut primary = primary.into_iter();
        let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
            return Err(corrupt("address"));
        };
        let first: u16 = redis::from_redis_value(first).map_err(|_| corrupt("slot"))?;
        let last: u16 = redis::from_redis_value(last).map_err(|_| corrupt("slot"))?;
        let host: String = redis::from_redis_value(host).map_err(|_| corrupt("host"))?;
        let port: u16 = redis::from_redis_value(port).map_err(|_| corrupt("port"))?;
        table.push((first, last, (host, port)));
    }
    Ok(table)
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

/// One Lua script, run with `EVALSHA` (the body crosses the network once, not on
/// every call) and loaded again when Redis answers `NOSCRIPT` (after a restart).
struct LuaScript {
    src: String,
    sha: std::sync::Mutex<Option<String>>,
}

impl LuaScript {
    fn new(src: String) -> Self {
        LuaScript {
            src,
            sha: std::sync::Mutex::new(None),
        }
    }

    /// Runs the script on `keys`; `args` appends the `ARGV` values to the command.
    ///
    /// By hash (`EVALSHA`) once the hash is known. A node that does not have the script
    /// — a replica promoted by a failover, a restarted node — gets it by source
    /// (`EVAL`, routed by the keys like `EVALSHA`, and cached there by Redis): a
    /// `SCRIPT LOAD` reaches only the nodes the client knows at that moment, which right
    /// after a failover may not include the new primary (tested).
    async fn run<T: FromRedisValue>(
        &self,
        conn: &mut Reconnecting,
        keys: &[&str],
        args: impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        let known = self.sha.lock().ok().and_then(|sha| sha.clone());
        match known {
            Some(sha) => match Self::call(conn, "EVALSHA", &sha, keys, &args).await {
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    Self::call(conn, "EVAL", &self.src, keys, &args).await
                }
                other => other,
            },
            None => {
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&self.src)
                    .query_async(conn)
                    .await?;
                if let Ok(mut slot) = self.sha.lock() {
                    *slot = Some(sha);
                }
                Self::call(conn, "EVAL", &self.src, keys, &args).await
            }
        }
    }

    /// `EVALSHA sha` or `EVAL source` on `keys` with the `ARGV` values of `args`.
    async fn call<T: FromRedisValue>(
        conn: &mut Reconnecting,
        verb: &str,
        script: &str,
        keys: &[&str],
        args: &impl Fn(&mut redis::Cmd),
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(keys.len()).arg(keys);
        args(&mut cmd);
        cmd.query_async(conn).await
    }
}

/// The Lua scripts; each runs atomically inside Redis.
struct Scripts {
    open: LuaScript,
    append: LuaScript,
    read: LuaScript,
    close: LuaScript,
    remove_if_unchanged: LuaScript,
    trim: LuaScript,
    unlock: LuaScript,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            open: LuaScript::new(format!("{TOUCH}{OPEN}")),
            append: LuaScript::new(format!("{TOUCH}{HAS}{APPEND}")),
            read: LuaScript::new(READ.to_owned()),
            close: LuaScript::new(format!("{TOUCH}{CLOSE}")),
            remove_if_unchanged: LuaScript::new(REMOVE_IF_UNCHANGED.to_owned()),
            trim: LuaScript::new(TRIM.to_owned()),
            unlock: LuaScript::new(UNLOCK.to_owned()),
        }
    }
}

/// KEYS: meta lines late ctl index; ARGV: now_ms ttl_ms key. Refreshes the TTL of
/// every key of the stream and its place in the account index.
const TOUCH: &str = r#"
local function touch()
  redis.call('HSET', KEYS[1], 'activity', ARGV[1])
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  redis.call('ZADD', KEYS[5], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
end
"#;

/// Whether `pos` (a number) is stored in the stream (KEYS[2]) or the late set (KEYS[3]).
const HAS: &str = r#"
local function has(pos)
  local id = string.format('%d-1', pos)
  if #redis.call('XRANGE', KEYS[2], id, id) > 0 then return true end
  return redis.call('ZCOUNT', KEYS[3], pos, pos) > 0
end
"#;

const OPEN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'open', 1, 'lines', 0, 'bytes', 0, 'contig', 0, 'top', 0, 'trimmed', 0, 'moved', 0, 'moved_bytes', 0)
else
  redis.call('HSET', KEYS[1], 'open', 1)
  redis.call('DEL', KEYS[4])
end
touch()
return 0
"#;

/// ARGV: now ttl key hard_line_limit hard_byte_limit, then pos json pairs in
/// ascending pos. Returns {status, appended, duplicates, contig, lines_in_redis,
/// bytes_in_redis};
/// status -1 not found, -2 closed, -3 over the hard limit.
const APPEND: &str = r#"
local open = redis.call('HGET', KEYS[1], 'open')
if not open then return {-1, 0, 0, 0, 0, 0} end
if open ~= '1' then return {-2, 0, 0, 0, 0, 0} end
local m = redis.call('HMGET', KEYS[1], 'contig', 'top', 'trimmed', 'lines', 'moved', 'bytes', 'moved_bytes')
local contig, top, trimmed = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
local in_redis = tonumber(m[4]) - tonumber(m[5])
local in_redis_bytes = tonumber(m[6]) - tonumber(m[7] or 0)
if #ARGV > 5 and (in_redis >= tonumber(ARGV[4]) or in_redis_bytes >= tonumber(ARGV[5])) then
  return {-3, 0, 0, contig, in_redis, in_redis_bytes}
end
local appended, dups, bytes = 0, 0, 0
for i = 6, #ARGV, 2 do
  local pos = tonumber(ARGV[i])
  local json = ARGV[i + 1]
  local stored
  if pos < contig or pos < trimmed then stored = true
  elseif pos >= top then stored = false
  else stored = has(pos) end
  if stored then
    dups = dups + 1
  else
    if pos >= top then
      redis.call('XADD', KEYS[2], string.format('%d-1', pos), 'l', json)
      top = pos + 1
    else
      redis.call('ZADD', KEYS[3], pos, json)
    end
    if pos == contig then contig = pos + 1 end
    appended = appended + 1
    bytes = bytes + #json
  end
end
while contig < top and has(contig) do contig = contig + 1 end
redis.call('HSET', KEYS[1], 'contig', string.format('%d', contig), 'top', string.format('%d', top))
redis.call('HINCRBY', KEYS[1], 'lines', appended)
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
touch()
if appended > 0 then redis.call('PUBLISH', KEYS[4], 1) end
return {0, appended, dups, contig, in_redis + appended, in_redis_bytes + bytes}
"#;

/// KEYS: meta lines late; ARGV: from max [max_bytes].
/// Returns {open (1/0, or -1 when absent), trimmed, pos, json, pos, json, ...}, merged in pos order;
/// with max_bytes, no more than that many bytes of json, but always the first line.
const READ: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'open', 'trimmed')
if not m[1] then return {-1} end
local from, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_bytes, bytes = tonumber(ARGV[3] or '') or math.huge, 0
local trimmed = tonumber(m[2])
if from < trimmed then from = trimmed end
local out = {m[1] == '1' and 1 or 0, trimmed}
local s = redis.call('XRANGE', KEYS[2], string.format('%d-0', from), '+', 'COUNT', max)
local z = redis.call('ZRANGEBYSCORE', KEYS[3], from, '+inf', 'WITHSCORES', 'LIMIT', 0, max)
local si, zi, n = 1, 1, 0
while n < max do
  local spos, zpos
  if s[si] then spos = tonumber(string.match(s[si][1], '^(%d+)')) end
  if z[zi] then zpos = tonumber(z[zi + 1]) end
  if not spos and not zpos then break end
  local pos, json
  if zpos and (not spos or zpos < spos) then
    pos, json = zpos, z[zi]; zi = zi + 2
  else
    pos, json = spos, s[si][2][2]; si = si + 1
  end
  if n > 0 and bytes + #json > max_bytes then break end
  bytes = bytes + #json
  out[#out + 1] = pos; out[#out + 1] = json
  n = n + 1
end
return out
"#;

/// ARGV[4], when given: close only if the stream's `activity` is not past it (ms).
/// Returns 0, -1 when the stream does not exist, -2 when it was active since ARGV[4].
const CLOSE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[4] and tonumber(redis.call('HGET', KEYS[1], 'activity') or '0') > tonumber(ARGV[4]) then
  return -2
end
redis.call('HSET', KEYS[1], 'open', 0)
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('XADD', KEYS[4], '1-1', 'closed', 1) end
touch()
redis.call('PUBLISH', KEYS[4], 1)
return 0
"#;

/// KEYS: meta lines late ctl index; ARGV: closed_at_ms key. Removes the stream's
/// keys if it is still closed with no activity past ARGV[1]. Returns 1 when removed,
/// 0 when it was reopened or written to since, -1 when it does not exist.
const REMOVE_IF_UNCHANGED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local open = redis.call('HGET', KEYS[1], 'open')
local activity = tonumber(redis.call('HGET', KEYS[1], 'activity') or '0')
if open == '1' or activity > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('PUBLISH', KEYS[4], 1)
return 1
"#;

/// KEYS: meta lines late; ARGV: expected trimmed, new trimmed, bytes of the moved
/// lines. Forgets lines below
/// the new mark (already in an overflow segment). Returns lines moved, or -1 when
/// another replica moved them first.
const TRIM: &str = r#"
local trimmed = redis.call('HGET', KEYS[1], 'trimmed')
if trimmed ~= ARGV[1] then return -1 end
local target = tonumber(ARGV[2])
local before = redis.call('XLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', target))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', target))
local moved = before - redis.call('XLEN', KEYS[2]) - redis.call('ZCARD', KEYS[3])
redis.call('HSET', KEYS[1], 'trimmed', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'moved', moved)
redis.call('HINCRBY', KEYS[1], 'moved_bytes', ARGV[3])
return moved
"#;

/// Releases a lock only if it is still ours.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values from `CLUSTER KEYSLOT` and the cluster specification.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        // The hash tag alone decides: every key of an account shares a slot.
        assert_eq!(
            key_slot(b"runlog:{acc}:s:a/b:ctl"),
            key_slot(b"runlog:{acc}:index")
        );
        assert_eq!(key_slot(b"runlog:{acc}:index"), key_slot(b"acc"));
        // An empty tag hashes the whole key; the first `{` opens the tag.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
