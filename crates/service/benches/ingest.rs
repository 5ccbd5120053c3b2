//! End-to-end ingest throughput: `PUT /stream` over real HTTP on loopback, against
//! the same bytes `PUT` to `/bench/discard` on the same server in the same run (the
//! ceiling: HTTP and body transfer alone).
//!
//! 80-byte lines, batches of 1 000, 1 and 100 concurrent writers (each on its own
//! key). Prints lines/s and the ratio to the ceiling. Run with
//! `cargo bench -p runlog-service --bench ingest` (or `bench/ingest`).
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use runlog_protocol::{AccountId, Scope, StreamKey};
use runlog_service::store::StreamId;
use runlog_service::{ServiceConfig, ServiceState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator of the `runlog` binary, so the in-process service allocates as it
/// does in production.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 1_000;
const LINES_PER_RUN: u64 = 2_000_000;
/// Rounds of (discard, ingest) per writer count; each round's ratio compares two runs
/// taken back to back, and the median of the rounds is the figure to quote. With the
/// best of three runs of each side (an earlier version), one peak of the ceiling
/// decided the ratio: on this shared VM single runs moved by ±15 %.
const ROUNDS: usize = 9;

/// Batch `b` of a stream: lines `b*1000 .. b*1000+1000`, each with 80 bytes of text,
/// in the compact shape writers send (written directly: building `serde_json::Value`s
/// for a million lines would dominate a profile of the run).
fn batch_body(b: u64) -> Bytes {
    let text = "x".repeat(79) + "\\n";
    let lines: Vec<String> = (b * BATCH..(b + 1) * BATCH)
        .map(|pos| {
            format!(
                r#"{{"level":"info","pos":{pos},"out":"{text}","time":"2026-11-20T10:00:00.123Z"}}"#
            )
        })
        .collect();
    Bytes::from(format!("[{}]", lines.join(",")))
}

struct Bench {
    base: String,
    token: String,
    http: reqwest::Client,
    state: ServiceState,
    bodies: Vec<Bytes>,
}

impl Bench {
    /// Lines per second for `writers` concurrent writers, each sending
    /// `LINES_PER_RUN / writers` lines, to `/stream` (or to the discard endpoint).
    async fn run(&self, writers: u64, round: usize, discard: bool) -> f64 {
        let batches_each = LINES_PER_RUN / BATCH / writers;
        let keys: Vec<String> = (0..writers)
            .map(|w| format!("bench/r{round}/{writers}/{w}"))
            .collect();
        if !discard {
            for k in &keys {
                let r = self
                    .http
                    .post(self.url("/stream", k))
                    .bearer_auth(&self.token)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for k in &keys {
            let url = if discard {
                format!("{}/bench/discard", self.base)
            } else {
                self.url("/stream", k)
            };
            let http = self.http.clone();
            let token = self.token.clone();
            let bodies: Vec<Bytes> = self.bodies[..batches_each as usize].to_vec();
            tasks.push(tokio::spawn(async move {
                for body in bodies {
                    let r = http
                        .put(&url)
                        .bearer_auth(&token)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let lines = (batches_each * BATCH * writers) as f64;
        if !discard {
            // Check the work was real, then free the memory for the next run.
            for k in &keys {
                let id = StreamId {
                    account: AccountId::new("bench").unwrap(),
                    key: StreamKey::new(k.as_str()).unwrap(),
                };
                let meta = self.state.streams().meta(&id).await.unwrap();
                assert_eq!(meta.lines, batches_each * BATCH);
                self.state.streams().remove(&id).await.unwrap();
            }
        }
        lines / secs
    }

    fn url(&self, path: &str, key: &str) -> String {
        format!("{}{path}?accountID=bench&key={key}", self.base)
    }
}

/// The `q` quantile of `v` (0.5: the median, 0 and 1: the extremes), by rank.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let at = ((v.len().saturating_sub(1)) as f64 * q).round() as usize;
    v.get(at).copied().unwrap_or(0.0)
}

fn main() {
    // Server and client on separate runtimes, two workers each: the machine has two
    // cores, and the OS shares them as it would between two processes.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Named apart from the client's workers, so a profile splits the two sides.
        .thread_name("service")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = runlog_service::auth::generate_secret();
    let cfg = ServiceConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        admin_secret: Some(secret.clone()),
        bench_discard: true,
        ..ServiceConfig::default()
    };
    let (state, addr) = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = runlog_service::backend::build_state(cfg).await.unwrap();
        tokio::spawn(runlog_service::serve(
            listener,
            state.clone(),
            std::future::pending(),
        ));
        (state, addr)
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap();
    let token = runlog_service::auth::mint_token(
        secret.as_bytes(),
        Some(&AccountId::new("bench").unwrap()),
        Scope::Write,
        Duration::from_secs(3600),
    )
    .unwrap();
    let bodies: Vec<Bytes> = (0..LINES_PER_RUN / BATCH).map(batch_body).collect();
    println!(
        "ingest benchmark: {LINES_PER_RUN} lines per run, {BATCH} lines per batch, {} body bytes per batch, {ROUNDS} rounds",
        bodies[0].len()
    );
    let bench = Arc::new(Bench {
        base: format!("http://{addr}"),
        token,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(200)
            .build()
            .unwrap(),
        state,
        bodies,
    });
    // `INGEST_PROFILE=ingest|discard` runs only that side, 100 writers,
    // `INGEST_ROUNDS` rounds (default 10): a steady load to attach `perf` to, with
    // the two sides' profiles comparable (0 rounds profiles the set-up alone).
    if let Ok(side) = std::env::var("INGEST_PROFILE") {
        let rounds: usize = std::env::var("INGEST_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        client_rt.block_on(async {
            for round in 0..rounds {
                let rate = bench.run(100, round, side == "discard").await;
                println!("{side} round {round}: {rate:.0} lines/s");
            }
        });
        return;
    }
    client_rt.block_on(async {
        // Warm up connections and allocators.
        bench.run(100, 99, true).await;
        bench.run(100, 99, false).await;
        for writers in [1u64, 100] {
            let (mut ingest, mut discard, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let d = bench.run(writers, round, true).await;
                let i = bench.run(writers, round, false).await;
                println!(
                    "{writers:>3} writers, round {round}: ingest {i:>11.0} lines/s, discard {d:>11.0} lines/s, {:>3.0} %",
                    100.0 * i / d
                );
                ingest.push(i);
                discard.push(d);
                ratio.push(i / d);
            }
            let (lo, hi) = (quantile(&mut ratio.clone(), 0.0), quantile(&mut ratio.clone(), 1.0));
            println!(
                "{writers:>3} writers, median of {ROUNDS}: ingest {:.0} lines/s, discard {:.0} lines/s, ingest / discard {:.0} % (rounds {:.0}–{:.0} %)",
                quantile(&mut ingest, 0.5),
                quantile(&mut discard, 0.5),
                100.0 * quantile(&mut ratio, 0.5),
                100.0 * lo,
                100.0 * hi
            );
        }
    });
    drop(client_rt);
    drop(server_rt);
}
