//! [`ServiceConfig`]: everything a log service instance is started with.

use crate::quota::AccountLimits;
use crate::store::MemoryLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8079";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./runlog-data";
/// Default limit on a request body (16 MiB), `PUT /stream` aside.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
/// Default limit on a `PUT /stream` body (128 MiB). lite-engine's writer sends every
/// line pending since its last flush in one request, with no cap: one second of a
/// chatty step (100 000 lines) made one 17.8 MB request, which 16 MiB refused.
pub const DEFAULT_MAX_APPEND_BODY: usize = 128 << 20;
/// Default bytes of request bodies read at once, service-wide (four of the
/// largest `PUT /stream` bodies); see [`crate::body_budget`].
pub const DEFAULT_MAX_BODIES_IN_FLIGHT: usize = 4 * DEFAULT_MAX_APPEND_BODY;
/// Largest `max_append_body` that takes effect: a batch's line offsets are 32-bit.
pub const MAX_APPEND_BODY_CEILING: usize = u32::MAX as usize;

/// Where archives are kept when no other backend is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobBackend {
    /// Files under `<data-dir>/archives`.
    Local,
    /// In memory (tests): lost on restart.
    Memory,
    /// S3 or an S3-compatible server: `s3://bucket/prefix`, credentials, region and
    /// endpoint from the `AWS_*` environment variables.
    S3(String),
}

/// Configuration of one log service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Holds the saved admin secret and (local backend) the archives.
    pub data_dir: PathBuf,
    /// Admin secret; when `None`, read from or generated into `data_dir`.
    pub admin_secret: Option<String>,
    /// Largest request body accepted on stream and token routes other than
    /// `PUT /stream` (413 above it).
    pub max_body: usize,
    /// Largest `PUT /stream` body (413 above it, after the body was read to its end
    /// so the client gets the answer; at most [`MAX_APPEND_BODY_CEILING`]).
    pub max_append_body: usize,
    /// Bytes of `PUT /stream` bodies the service reads at once, all requests
    /// together (raised to the largest single body it accepts).
    pub max_bodies_in_flight: usize,
    /// How long a body waits for room in that budget before it is answered 429
    /// (10 s: lite-engine does not retry a failed `PUT` and gives one 15 s).
    pub body_budget_wait: Duration,
    /// Largest archive upload accepted, as sent (possibly gzip).
    pub max_blob_body: usize,
    /// Largest archive after decompression.
    pub max_archive_bytes: u64,
    /// Bounds of the in-memory stream store (service-wide: the last line behind
    /// [`account_limits`](Self::account_limits)).
    pub limits: MemoryLimits,
    /// What each account may hold and ask (streams, bytes, tails, request rate), on
    /// every backend; see [`crate::quota`].
    pub account_limits: AccountLimits,
    /// An open stream without activity for this long is snapshotted and removed.
    pub idle_timeout: Duration,
    /// A closed stream stays tailable this long, then its lines are dropped (its
    /// archive remains).
    pub closed_retention: Duration,
    /// How often the expiry sweep runs.
    pub sweep_interval: Duration,
    /// Interval of SSE `: ping` comments.
    pub ping_interval: Duration,
    /// A connection whose peer takes no byte of a pending write for this long is
    /// dropped (a viewer that stopped reading, a stalled download); the viewer
    /// resumes with `Last-Event-ID`. See `runlog_edge::WriteTimeout`.
    pub write_timeout: Duration,
    /// Lifetime of upload links.
    pub link_ttl: Duration,
    /// Base URL put into self-signed upload links; derived from `Host` when `None`.
    pub public_url: Option<String>,
    /// Mount `PUT /bench/discard` (reads a body, stores nothing): the benchmark's ceiling.
    pub bench_discard: bool,
    /// Where archives go.
    pub blob_backend: BlobBackend,
    /// `redis://…`: live streams in Redis, shared by every replica; `None` keeps
    /// them in this process's memory.
    pub redis_url: Option<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for a
    /// `rediss://` URL whose server is not signed by a CA in the system's store.
    pub redis_ca_file: Option<PathBuf>,
    /// `redis_url` names nodes of a Redis Cluster (comma-separated when several).
    pub redis_cluster: bool,
    /// On shutdown, archive every held stream that has no archive yet, so lines
    /// held only in this process's memory survive a restart. Skipped with
    /// `redis_url`: other replicas keep serving those streams.
    pub snapshot_on_shutdown: bool,
}

impl ServiceConfig {
    /// What one connection may hold and for how long: the edge's defaults (connection
    /// cap, header and body read timeouts) with this service's `write_timeout`.
    pub fn connection_limits(&self) -> runlog_edge::Limits {
        runlog_edge::Limits {
            write_timeout: self.write_timeout,
            ..runlog_edge::Limits::default()
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8079)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            admin_secret: None,
            max_body: DEFAULT_MAX_BODY,
            max_append_body: DEFAULT_MAX_APPEND_BODY,
            max_bodies_in_flight: DEFAULT_MAX_BODIES_IN_FLIGHT,
            body_budget_wait: Duration::from_secs(10),
            max_blob_body: 256 << 20,
            max_archive_bytes: 4 << 30,
            limits: MemoryLimits::default(),
            account_limits: AccountLimits::default(),
            idle_timeout: Duration::from_secs(3600),
            closed_retention: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            link_ttl: Duration::from_secs(3600),
            public_url: None,
            bench_discard: false,
            blob_backend: BlobBackend::Local,
            redis_url: None,
            redis_ca_file: None,
            redis_cluster: false,
            snapshot_on_shutdown: true,
        }
    }
}

impl ServiceConfig {
    /// The service-wide body budget in bytes: `max_bodies_in_flight`, but never
    /// below one largest body, which must always be able to get through.
    pub fn body_budget_bytes(&self) -> usize {
        let largest = self.max_append_body.min(MAX_APPEND_BODY_CEILING);
        self.max_bodies_in_flight.max(largest)
    }

    /// Directory of local archives.
    pub fn archive_dir(&self) -> PathBuf {
        self.data_dir.join("archives")
    }
}
