//! Scale-out benchmark: the log service on Redis (1 and 2 replicas) and on a
//! three-node Redis Cluster (2 replicas) against the in-memory store, measured in
//! the same run over real HTTP on loopback.
//!
//! - Ingest: 16 writers, each on its own key of its own account (accounts are what a
//!   cluster spreads over its nodes), `PUT /stream` batches of 500 lines of 80 bytes;
//!   with 2 replicas the writers alternate between them. Lines/s.
//! - Tail latency: one writer sends single-line batches (each carrying its send
//!   time) every 2 ms while a `GET /stream` SSE tail — on the *other* replica when
//!   there are two — receives them. p50/p99 of send-to-receive.
//! - Redis memory per 1 000 open streams (empty, and with 100 lines of 80 bytes
//!   each), from `INFO memory`.
//!
//! Redis runs with `appendonly yes`, `appendfsync everysec`.
//!
//! Run with `bench/scale` (`cargo bench -p runlog-service --bench scale`). Needs
//! `redis-server` (`RUNLOG_TEST_REDIS_SERVER` or `PATH`).
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use futures_util::StreamExt;
use runlog_protocol::{AccountId, Scope};
use runlog_service::ServiceConfig;
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_service::store::{BlobStore, MemoryLimits, MemoryStreamStore, StreamStore};
use runlog_testkit::redis::{RedisCluster, RedisServer};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRITERS: u64 = 16;
const BATCH: u64 = 500;
const BATCHES_PER_WRITER: u64 = 50;
const TAIL_LINES: u64 = 1000;
const ROUNDS: usize = 3;

fn batch_body(first: u64, n: u64) -> Bytes {
    let text: String = "x".repeat(79) + "\n";
    let lines: Vec<serde_json::Value> = (first..first + n)
        .map(|pos| serde_json::json!({"level": "info", "pos": pos, "out": text, "time": "2026-11-20T10:00:00.123Z"}))
        .collect();
    Bytes::from(serde_json::to_vec(&lines).unwrap())
}

/// Replicas of one deployment, all in this process on their own runtime.
struct Deployment {
    name: &'static str,
    /// Key prefix: deployments share one Redis, so their keys must not meet.
    slug: &'static str,
    urls: Vec<String>,
    /// A write token for each writer's account (`bench-<writer>`).
    tokens: Vec<String>,
    http: reqwest::Client,
}

impl Deployment {
    /// The URL for `writer` (its account, and its replica: writers alternate).
    fn url(&self, writer: usize, path: &str, key: &str) -> String {
        format!(
            "{}{path}?accountID=bench-{writer}&key={key}",
            self.urls[writer % self.urls.len()]
        )
    }

    fn token(&self, writer: usize) -> &str {
        &self.tokens[writer]
    }

    async fn open(&self, writer: usize, key: &str) {
        let r = self
            .http
            .post(self.url(writer, "/stream", key))
            .bearer_auth(self.token(writer))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "open: {}", r.status());
    }

    /// Lines/s of `WRITERS` concurrent writers.
    async fn ingest(&self, round: usize) -> f64 {
        let keys: Vec<String> = (0..WRITERS)
            .map(|w| format!("{}/ingest/{round}/{w}", self.slug))
            .collect();
        for (w, k) in keys.iter().enumerate() {
            self.open(w, k).await;
        }
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            (0..BATCHES_PER_WRITER)
                .map(|b| batch_body(b * BATCH, BATCH))
                .collect(),
        );
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (w, k) in keys.iter().enumerate() {
            let (url, http, token, bodies) = (
                self.url(w, "/stream", k),
                self.http.clone(),
                self.token(w).to_owned(),
                bodies.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for body in bodies.iter() {
                    let r = http
                        .put(&url)
                        .bearer_auth(&token)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    let ack: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(ack["duplicates"], 0);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (WRITERS * BATCHES_PER_WRITER * BATCH) as f64 / start.elapsed().as_secs_f64()
    }

    /// Send-to-receive latencies (ms) of single-line batches, tail on the last replica.
    async fn tail_latency(&self, round: usize) -> Vec<f64> {
        let key = format!("{}/tail/{round}", self.slug);
        self.open(0, &key).await;
        // Account `bench-0`, tailed on the last replica (the other one when there are two).
        let reader = format!(
            "{}/stream?accountID=bench-0&key={key}",
            self.urls[self.urls.len() - 1]
        );
        let resp = self
            .http
            .get(reader)
            .bearer_auth(self.token(0))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let receiver = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut latencies = Vec::new();
            while (latencies.len() as u64) < TAIL_LINES {
                let chunk = body.next().await.unwrap().unwrap();
                let now = now_micros();
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..end + 2).collect();
                    let frame = String::from_utf8(frame).unwrap();
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                        let line: serde_json::Value = serde_json::from_str(data).unwrap();
                        if let Some(sent) = line["out"]
                            .as_str()
                            .and_then(|s| s.trim().parse::<u64>().ok())
                        {
                            latencies.push((now - sent) as f64 / 1000.0);
                        }
                    }
                }
            }
            latencies
        });
        let url = self.url(0, "/stream", &key);
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for pos in 0..TAIL_LINES {
            tick.tick().await;
            let line = serde_json::json!([{"level": "info", "pos": pos, "out": format!("{}\n", now_micros()), "time": "2026-11-20T10:00:00.123Z"}]);
            let r = self
                .http
                .put(&url)
                .bearer_auth(self.token(0))
                .json(&line)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .unwrap()
            .unwrap()
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts `stores.len()` replicas sharing one admin secret.
async fn deploy(
    name: &'static str,
    slug: &'static str,
    stores: Vec<Arc<dyn StreamStore>>,
    dir: &std::path::Path,
) -> Deployment {
    let secret = runlog_service::auth::generate_secret();
    let mut urls = Vec::new();
    for (i, streams) in stores.into_iter().enumerate() {
        let cfg = ServiceConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join(format!("{name}-{i}")),
            admin_secret: Some(secret.clone()),
            ..ServiceConfig::default()
        };
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        let state =
            runlog_service::ServiceState::new(cfg, streams, BlobStore::memory(), secret.clone());
        tokio::spawn(runlog_service::serve(
            listener,
            state,
            std::future::pending(),
        ));
    }
    let tokens = (0..WRITERS)
        .map(|w| {
            runlog_service::auth::mint_token(
                secret.as_bytes(),
                Some(&AccountId::new(format!("bench-{w}")).unwrap()),
                Scope::Write,
                Duration::from_secs(3600),
            )
            .unwrap()
        })
        .collect();
    Deployment {
        name,
        slug,
        urls,
        tokens,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    }
}

fn redis_store(url: String, cluster: bool) -> Arc<dyn StreamStore> {
    let config = RedisConfig {
        url,
        cluster,
        ..RedisConfig::default()
    };
    Arc::new(
        RedisStreamStore::new(
            config,
            Some(Arc::new(object_store::memory::InMemory::new())),
        )
        .unwrap(),
    )
}

async fn used_memory(server: &RedisServer) -> u64 {
    let info = server.raw_command("INFO memory").await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn redis_memory_per_1000_streams(server: &RedisServer, lines_each: u64) -> f64 {
    let store = RedisStreamStore::new(
        RedisConfig {
            url: server.url(),
            ..RedisConfig::default()
        },
        None,
    )
    .unwrap();
    let before = used_memory(server).await;
    for s in 0..1000 {
        let id = runlog_service::store::StreamId {
            account: AccountId::new("mem").unwrap(),
            key: runlog_protocol::StreamKey::new(format!("lines{lines_each}/stream-{s}")).unwrap(),
        };
        store.open(&id).await.unwrap();
        if lines_each > 0 {
            let text: String = "x".repeat(79) + "\n";
            let lines = (0..lines_each)
                .map(|pos| runlog_service::store::StoredLine {
                    pos,
                    json: Bytes::from(
                        serde_json::to_vec(&serde_json::json!({"level": "info", "pos": pos, "out": text, "time": "2026-11-20T10:00:00.123Z"}))
                            .unwrap(),
                    ),
                })
                .collect();
            store.append(&id, lines).await.unwrap();
        }
    }
    (used_memory(server).await - before) as f64
}

fn main() {
    // Servers and clients on separate runtimes, two workers each: the machine has two
    // cores, shared by the OS as between processes (Redis is a third process).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // As deployed: an fsync a second, not the tests' fsync per write.
    let deployed = ["--appendfsync", "everysec"];
    let redis = client_rt.block_on(RedisServer::start_new_with(&deployed));
    let cluster = client_rt.block_on(RedisCluster::start_new_with(&deployed));
    let deployments = server_rt.block_on(async {
        let memory: Arc<dyn StreamStore> =
            Arc::new(MemoryStreamStore::new(MemoryLimits::default()));
        vec![
            deploy("memory, 1 replica", "mem1", vec![memory], dir.path()).await,
            deploy(
                "redis, 1 replica",
                "redis1",
                vec![redis_store(redis.url(), false)],
                dir.path(),
            )
            .await,
            deploy(
                "redis, 2 replicas",
                "redis2",
                vec![
                    redis_store(redis.url(), false),
                    redis_store(redis.url(), false),
                ],
                dir.path(),
            )
            .await,
            deploy(
                "cluster, 2 replicas",
                "cluster2",
                vec![
                    redis_store(cluster.urls(), true),
                    redis_store(cluster.urls(), true),
                ],
                dir.path(),
            )
            .await,
        ]
    });
    println!(
        "scale benchmark: {WRITERS} writers x {BATCHES_PER_WRITER} batches x {BATCH} lines of 80 bytes; \
         tail: {TAIL_LINES} single-line batches every 2 ms; best of {ROUNDS} (ingest), all rounds pooled (latency)"
    );
    client_rt.block_on(async {
        for d in &deployments {
            d.ingest(99).await; // warm-up: connections, allocators, Lua script cache
        }
        let mut baseline = None;
        println!(
            "{:<20} {:>14} {:>10} {:>10} {:>10} {:>10}",
            "deployment", "ingest lines/s", "vs memory", "tail p50", "tail p99", "vs memory"
        );
        let mut baseline_p99 = None;
        for d in &deployments {
            let mut best = 0f64;
            let mut latencies = Vec::new();
            for round in 0..ROUNDS {
                best = best.max(d.ingest(round).await);
                latencies.extend(d.tail_latency(round).await);
            }
            latencies.sort_by(|a, b| a.total_cmp(b));
            let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
            let base = *baseline.get_or_insert(best);
            let base_p99 = *baseline_p99.get_or_insert(p99);
            println!(
                "{:<20} {best:>14.0} {:>9.2}x {p50:>8.2}ms {p99:>8.2}ms {:>9.2}x",
                d.name,
                best / base,
                p99 / base_p99
            );
        }
        // Where the Redis deployments spend their time: Redis' own CPU per command.
        let stats = redis.raw_command("INFO commandstats").await.unwrap();
        for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_publish")) {
            println!("redis {line}");
        }
        // A fresh Redis, so blocked tails and client buffers of the runs above do not
        // blur the figure.
        let quiet = RedisServer::start_new_with(&["--appendfsync", "everysec"]).await;
        let empty = redis_memory_per_1000_streams(&quiet, 0).await;
        let with_lines = redis_memory_per_1000_streams(&quiet, 100).await;
        println!(
            "redis memory per 1 000 open streams: {:.2} MiB empty ({:.0} B/stream), {:.2} MiB with 100 lines of 80 B each ({:.0} B/line)",
            empty / 1048576.0,
            empty / 1000.0,
            with_lines / 1048576.0,
            (with_lines - empty) / 100_000.0
        );
    });
    drop(client_rt);
    drop(server_rt);
}
