//! `runlog service`: run the log service until SIGINT/SIGTERM.

use crate::credentials::AdminSecret;
use anyhow::Context;
use clap::Args;
use runlog_service::ServiceConfig;
use runlog_service::config::{
    BlobBackend, DEFAULT_ADDR, DEFAULT_DATA_DIR, DEFAULT_MAX_APPEND_BODY,
    DEFAULT_MAX_BODIES_IN_FLIGHT, DEFAULT_MAX_BODY,
};
use runlog_service::quota::AccountLimits;
use runlog_service::store::MemoryLimits;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `runlog service` (each also read from its `RUNLOG_*` variable).
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Address to listen on.
    #[arg(long, env = "RUNLOG_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Directory for archives and the generated admin secret.
    #[arg(long, env = "RUNLOG_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Secret that signs tokens; generated and saved in the data dir when absent.
    #[command(flatten)]
    pub admin: AdminSecret,
    /// Largest request body in bytes (413 above it), `PUT /stream` and archive
    /// uploads aside.
    #[arg(long, env = "RUNLOG_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Largest `PUT /stream` body in bytes (413 above it; at most 4 GiB - 1).
    /// lite-engine sends all lines of a second in one request, however many.
    #[arg(long, env = "RUNLOG_MAX_APPEND_BYTES", default_value_t = DEFAULT_MAX_APPEND_BODY)]
    pub max_append_bytes: usize,
    /// Bytes of `PUT /stream` bodies read at once by all requests together (never
    /// below `--max-append-bytes`); a body that finds no room within 10 s gets 429.
    #[arg(long, env = "RUNLOG_MAX_BODIES_IN_FLIGHT", default_value_t = DEFAULT_MAX_BODIES_IN_FLIGHT)]
    pub max_bodies_in_flight: usize,
    /// Largest archive upload in bytes, as sent.
    #[arg(long, env = "RUNLOG_MAX_BLOB_BODY", default_value_t = 256 << 20)]
    pub max_blob_body: usize,
    /// Most lines one live stream may hold.
    #[arg(long, env = "RUNLOG_MAX_STREAM_LINES", default_value_t = MemoryLimits::default().max_lines_per_stream)]
    pub max_stream_lines: u64,
    /// Most bytes one live stream may hold.
    #[arg(long, env = "RUNLOG_MAX_STREAM_BYTES", default_value_t = MemoryLimits::default().max_bytes_per_stream)]
    pub max_stream_bytes: u64,
    /// Most lines all live streams may hold together.
    #[arg(long, env = "RUNLOG_MAX_TOTAL_LINES", default_value_t = MemoryLimits::default().max_total_lines)]
    pub max_total_lines: u64,
    /// Most bytes all live streams may hold together.
    #[arg(long, env = "RUNLOG_MAX_TOTAL_BYTES", default_value_t = MemoryLimits::default().max_total_bytes)]
    pub max_total_bytes: u64,
    /// Most streams one account may hold at once (429 above it); counted in Redis
    /// with `--redis`, so across replicas.
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_STREAMS", default_value_t = AccountLimits::default().max_streams)]
    pub account_max_streams: u64,
    /// Most bytes of lines one account's live streams may hold (413 above it).
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_BYTES", default_value_t = AccountLimits::default().max_bytes)]
    pub account_max_bytes: u64,
    /// Most tails (viewers) one account may have open on one replica (429 above it).
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_TAILS", default_value_t = AccountLimits::default().max_tails)]
    pub account_max_tails: u64,
    /// Most `/stream` requests and archive uploads one account may make in a second
    /// (429 above it).
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_RPS", default_value_t = AccountLimits::default().max_requests_per_sec)]
    pub account_max_rps: u64,
    /// Most `/stream` requests and archive uploads of one account served at once on
    /// one replica; more wait, in order, for a slot.
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_IN_FLIGHT", default_value_t = AccountLimits::default().max_in_flight)]
    pub account_max_in_flight: u32,
    /// New streams one account may open in a second, sustained (429 above it);
    /// counted in Redis with `--redis`, so across replicas.
    #[arg(long, env = "RUNLOG_ACCOUNT_MAX_NEW_STREAMS", default_value_t = AccountLimits::default().max_new_streams_per_sec)]
    pub account_max_new_streams: u64,
    /// New streams one account may open at once before that pace applies.
    #[arg(long, env = "RUNLOG_ACCOUNT_NEW_STREAMS_BURST", default_value_t = AccountLimits::default().new_streams_burst)]
    pub account_new_streams_burst: u64,
    /// Longest an account's open past that burst waits for its turn (e.g. `5s`);
    /// 429 beyond it.
    #[arg(long, env = "RUNLOG_ACCOUNT_NEW_STREAMS_MAX_WAIT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub account_new_streams_max_wait: Duration,
    /// An open stream idle this long is archived and dropped (e.g. `1h`).
    #[arg(long, env = "RUNLOG_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// A closed stream stays tailable this long before only its archive remains.
    #[arg(long, env = "RUNLOG_CLOSED_RETENTION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub closed_retention: Duration,
    /// A connection whose peer takes no byte of a pending answer for this long is
    /// dropped (a viewer that stopped reading; it resumes where it was).
    #[arg(long, env = "RUNLOG_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Base URL written into upload links (default: from the request's Host).
    #[arg(long, env = "RUNLOG_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Keep archives in memory only (lost on exit).
    #[arg(long, env = "RUNLOG_MEMORY_BLOBS")]
    pub memory_blobs: bool,
    /// Keep live streams in Redis (`redis://host:6379/0`, or `rediss://` for TLS),
    /// shared by every replica.
    #[arg(long, env = "RUNLOG_REDIS")]
    pub redis: Option<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for a
    /// `rediss://` URL whose server a private CA signed (otherwise the system's CAs).
    #[arg(long, env = "RUNLOG_REDIS_CA_FILE", requires = "redis")]
    pub redis_ca_file: Option<PathBuf>,
    /// `--redis` names nodes of a Redis Cluster (one URL or several, comma-separated;
    /// the other nodes are discovered from them).
    #[arg(long, env = "RUNLOG_REDIS_CLUSTER", requires = "redis")]
    pub redis_cluster: bool,
    /// Keep archives in S3 or an S3-compatible server (`s3://bucket/prefix`);
    /// credentials, region and endpoint from the usual `AWS_*` variables.
    #[arg(long, env = "RUNLOG_BLOB_STORE", conflicts_with = "memory_blobs")]
    pub blob_store: Option<String>,
    /// Mount `PUT /bench/discard` for the ingest benchmark.
    #[arg(long, hide = true)]
    pub bench_discard: bool,
}

impl ServiceArgs {
    /// The service configuration these flags describe.
    pub fn config(&self) -> ServiceConfig {
        ServiceConfig {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            admin_secret: self.admin.admin_secret.clone(),
            max_body: self.max_body,
            max_append_body: self.max_append_bytes,
            max_bodies_in_flight: self.max_bodies_in_flight,
            max_blob_body: self.max_blob_body,
            limits: MemoryLimits {
                max_lines_per_stream: self.max_stream_lines,
                max_bytes_per_stream: self.max_stream_bytes,
                max_total_lines: self.max_total_lines,
                max_total_bytes: self.max_total_bytes,
                ..MemoryLimits::default()
            },
            account_limits: AccountLimits {
                max_streams: self.account_max_streams,
                max_bytes: self.account_max_bytes,
                max_tails: self.account_max_tails,
                max_requests_per_sec: self.account_max_rps,
                max_in_flight: self.account_max_in_flight,
                max_new_streams_per_sec: self.account_max_new_streams,
                new_streams_burst: self.account_new_streams_burst,
                new_streams_max_wait: self.account_new_streams_max_wait,
            },
            idle_timeout: self.idle_timeout,
            closed_retention: self.closed_retention,
            write_timeout: self.write_timeout,
            public_url: self.public_url.clone(),
            bench_discard: self.bench_discard,
            blob_backend: match (&self.blob_store, self.memory_blobs) {
                (Some(url), _) => BlobBackend::S3(url.clone()),
                (None, true) => BlobBackend::Memory,
                (None, false) => BlobBackend::Local,
            },
            redis_url: self.redis.clone(),
            redis_ca_file: self.redis_ca_file.clone(),
            redis_cluster: self.redis_cluster,
            ..ServiceConfig::default()
        }
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    init_logging();
    run_until(args, shutdown_signal(), |_| {}).await
}

/// Runs the service until `shutdown` resolves; `on_listen` gets the bound address.
pub async fn run_until(
    args: ServiceArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let cfg = args.config();
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.addr))?;
    let addr = listener.local_addr()?;
    let data_dir = cfg.data_dir.clone();
    let state = runlog_service::backend::build_state(cfg).await?;
    tracing::info!(%addr, data_dir = %data_dir.display(), "log service listening");
    on_listen(addr);
    runlog_service::serve(listener, state, shutdown).await?;
    tracing::info!("log service stopped");
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM after the call. The handlers are in place
/// from the call on, not from the first poll: a signal that comes before the future
/// is awaited (`runlog run` starting its embedded stack) still counts, rather than
/// killing the process by the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            let handler = signal(kind);
            async move {
                match handler {
                    Ok(mut s) => drop(s.recv().await),
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        let (int, term) = (
            listen(SignalKind::interrupt()),
            listen(SignalKind::terminate()),
        );
        async move {
            tokio::select! {
                () = int => {},
                () = term => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(flags: &[&str]) -> Result<ServiceArgs, clap::Error> {
        crate::cmd::parse_flags(flags)
    }

    #[test]
    fn flags_become_config() {
        let args = parse(&[
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/d",
            "--max-body",
            "1024",
            "--max-append-bytes",
            "2048",
            "--idle-timeout",
            "30s",
            "--write-timeout",
            "5s",
        ])
        .unwrap();
        let cfg = args.config();
        assert_eq!(cfg.max_body, 1024);
        assert_eq!(cfg.max_append_body, 2048);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(30));
        assert_eq!(cfg.write_timeout, Duration::from_secs(5));
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/d"));
        assert!(parse(&["--idle-timeout", "soon"]).is_err());
    }

    #[test]
    fn a_redis_ca_file_goes_with_a_redis_url() {
        let args = parse(&[
            "--redis",
            "rediss://redis.internal:6380/0",
            "--redis-ca-file",
            "/etc/runlog/redis-ca.pem",
        ])
        .unwrap();
        let cfg = args.config();
        assert_eq!(
            cfg.redis_url.as_deref(),
            Some("rediss://redis.internal:6380/0")
        );
        assert_eq!(
            cfg.redis_ca_file,
            Some(PathBuf::from("/etc/runlog/redis-ca.pem"))
        );
        // Alone it configures nothing, so it is refused rather than ignored.
        assert!(parse(&["--redis-ca-file", "/etc/ca.pem"]).is_err());
    }

    #[test]
    fn redis_cluster_mode_takes_the_seed_nodes_in_the_redis_url() {
        let args = parse(&[
            "--redis",
            "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
            "--redis-cluster",
        ])
        .unwrap();
        let cfg = args.config();
        assert!(cfg.redis_cluster);
        assert_eq!(
            cfg.redis_url.as_deref(),
            Some("redis://10.0.0.1:7000,redis://10.0.0.2:7000")
        );
        let single = parse(&["--redis", "redis://10.0.0.1:6379"]).unwrap();
        assert!(!single.config().redis_cluster);
        assert!(parse(&["--redis-cluster"]).is_err());
    }

    #[tokio::test]
    async fn service_answers_then_stops_on_shutdown_keeping_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let args = parse(&[
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(run_until(
            args,
            async move {
                let _ = stopped.await;
            },
            move |a| {
                let _ = addr_tx.send(a);
            },
        ));
        let addr = addr_rx.await.unwrap();
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            runlog_service::auth::read_saved_secret(dir.path())
                .unwrap()
                .is_some(),
            "secret generated and saved"
        );
    }
}
