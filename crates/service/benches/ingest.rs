//! End-to-end ingest throughput: `PUT /stream` over real HTTP on loopback, against
//! the same bytes `PUT` to `/bench/discard` on the same server in the same run (the
//! ceiling: HTTP and body transfer alone).
//!
//! 80-byte lines, batches of 1 000, 1 and 100 concurrent writers (each on its own
//! key). Prints lines/s and the ratio to the ceiling. Run with
//! `cargo bench -p runlog-service --bench ingest` (or `bench/ingest`).
//!
//! `INGEST_SECTIONS=compare` measures the section index instead: ingest with the
//! index off and on, back to back in each round, over a plain log and over one with
//! every 100th line a section marker (10 000 sections per million lines), and the
//! throughput ratio's median over the rounds with a confidence interval;
//! `INGEST_HOLD=N` runs it on a service already holding `N` earlier closed streams.
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use reqwest::Method;
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

/// Lines each run sends: `INGEST_LINES` (at most [`LINES_PER_RUN`], the bodies
/// built), or all of them. Shorter runs give more rounds in the same time.
fn lines_per_run() -> u64 {
    static LINES: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::env::var("INGEST_LINES")
            .ok()
            .and_then(|n| n.parse().ok())
            .map_or(LINES_PER_RUN, |n: u64| n.clamp(BATCH * 100, LINES_PER_RUN))
    });
    *LINES
}
/// Rounds of (discard, ingest) per writer count; each round's ratio compares two runs
/// taken back to back, and the median of the rounds is the figure to quote. With the
/// best of three runs of each side (an earlier version), one peak of the ceiling
/// decided the ratio: on this shared VM single runs moved by ±15 %.
const ROUNDS: usize = 9;

/// Batch `b` of a stream: lines `b*1000 .. b*1000+1000`, each with 80 bytes of text,
/// in the compact shape writers send (written directly: building `serde_json::Value`s
/// for a million lines would dominate a profile of the run).
fn batch_body(b: u64) -> Bytes {
    body_with(b, |_| "x".repeat(79) + "\\n")
}

/// [`batch_body`] with every 100th line a GitHub group marker (opening and closing
/// in turn), padded to the same 80 bytes.
fn marked_body(b: u64) -> Bytes {
    body_with(b, |pos| match pos % 200 {
        0 => format!("::group::section {pos:<60}\\n"),
        100 => format!("::endgroup::{:<67}\\n", ""),
        _ => "x".repeat(79) + "\\n",
    })
}

fn body_with(b: u64, text: impl Fn(u64) -> String) -> Bytes {
    let lines: Vec<String> = (b * BATCH..(b + 1) * BATCH)
        .map(|pos| {
            let text = text(pos);
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
    /// Built only for `INGEST_SECTIONS=compare`.
    marked: Vec<Bytes>,
}

impl Bench {
    /// Lines per second for `writers` concurrent writers, each sending
    /// `LINES_PER_RUN / writers` lines, to `/stream` (or to the discard endpoint).
    async fn run(&self, writers: u64, round: usize, discard: bool) -> f64 {
        self.run_bodies(writers, round, discard, &self.bodies).await
    }

    async fn run_bodies(&self, writers: u64, round: usize, discard: bool, all: &[Bytes]) -> f64 {
        let batches_each = lines_per_run() / BATCH / writers;
        let keys: Vec<String> = (0..writers)
            .map(|w| format!("bench/r{round}/{writers}/{w}"))
            .collect();
        if !discard {
            for k in &keys {
                self.stream_request(Method::POST, k, None).await;
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
            let bodies: Vec<Bytes> = all[..batches_each as usize].to_vec();
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
                self.state.sections().forget(&id).await.unwrap();
            }
        }
        lines / secs
    }

    /// `method` on `/stream` of `key`, sent with the bench's token; asserts a 2xx.
    async fn stream_request(&self, method: Method, key: &str, body: Option<Bytes>) {
        let mut req = self
            .http
            .request(method, self.url("/stream", key))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.body(body);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    fn url(&self, path: &str, key: &str) -> String {
        format!("{}{path}?accountID=bench&key={key}", self.base)
    }
}

/// CPU time the service's runtime threads (named `service`) have used so far.
fn service_cpu() -> Duration {
    runlog_testkit::cpu::threads_cpu(Some("service"))
}

/// A run's lines/s and the service's CPU time per 1 000 lines, in µs.
async fn measured(bench: &Bench, writers: u64, round: usize, bodies: &[Bytes]) -> (f64, f64) {
    let before = service_cpu();
    let rate = bench.run_bodies(writers, round, false, bodies).await;
    let cpu = service_cpu().saturating_sub(before);
    let lines = (lines_per_run() / BATCH / writers * BATCH * writers) as f64;
    (rate, cpu.as_secs_f64() * 1e6 / (lines / 1000.0))
}

/// Ingest with the section index off and on, over a plain log and over one with
/// 10 000 sections per million lines: `INGEST_ROUNDS` rounds (default 5) for 1 and
/// 100 writers (`INGEST_WRITERS`, e.g. `100`, to run one of them), the two runs of
/// a round back to back (off and on alternating which goes first).
///
/// What it answers is the throughput cost: each round's ratio of lines/s on to off
/// (two runs seconds apart, so a slow spell of the machine mostly hits both), their
/// median with a 95 % confidence interval (distribution-free, by ranks), and the
/// ratio of the sums of the runs' times. The service's CPU time per line is read
/// beside it: it moves less with other load, and says where the cost is.
///
/// Run it with `MIMALLOC_PURGE_DELAY=-1`: each run stores and frees hundreds of MB,
/// and pages handed back to the system are faulted in again by the next run on the
/// service's threads, which moved single rounds by ±20–40 % (bench/RESULTS.md).
async fn compare_sections(bench: &Bench) {
    let rounds: usize = std::env::var("INGEST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let writer_counts: Vec<u64> = std::env::var("INGEST_WRITERS")
        .ok()
        .map(|w| w.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100]);
    let sections = bench.state.sections();
    sections.set_enabled(true);
    hold_earlier_streams(bench).await;
    bench.run(100, 99, false).await;
    for &writers in &writer_counts {
        for (log, bodies) in [("plain", &bench.bodies), ("1 % markers", &bench.marked)] {
            let (mut off, mut on) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                // Which of the two goes first alternates, so neither always runs on
                // the warmer (or colder) machine.
                let off_first = round % 2 == 0;
                let (mut o, mut i) = ((0.0, 0.0), (0.0, 0.0));
                for off in [off_first, !off_first] {
                    sections.set_enabled(!off);
                    let run = round + if off { 0 } else { 1000 };
                    let r = measured(bench, writers, run, bodies).await;
                    *(if off { &mut o } else { &mut i }) = r;
                }
                println!(
                    "{writers:>3} writers, {log:<11}, round {round:>2}: lines/s off {:>9.0}, on {:>9.0} ({:+.1} %); service CPU µs/1000 lines off {:>6.1}, on {:>6.1} ({:+.1} %)",
                    o.0,
                    i.0,
                    100.0 * (i.0 / o.0 - 1.0),
                    o.1,
                    i.1,
                    100.0 * (i.1 / o.1 - 1.0)
                );
                off.push(o);
                on.push(i);
            }
            sections.set_enabled(true);
            report(writers, log, &off, &on);
        }
    }
}

/// `INGEST_HOLD=N`: before the comparison, `N` earlier streams of a run's lines
/// each are written and closed (index on) and stay held, as a service holds its
/// closed streams for their retention time: the comparison then runs on a service
/// that already holds them, where the writer's end-to-end bench saw later rounds
/// slow down.
async fn hold_earlier_streams(bench: &Bench) {
    let held: usize = std::env::var("INGEST_HOLD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for n in 0..held {
        let key = format!("bench/held/{n}");
        bench.stream_request(Method::POST, &key, None).await;
        for body in &bench.bodies[..(lines_per_run() / BATCH) as usize] {
            bench
                .stream_request(Method::PUT, &key, Some(body.clone()))
                .await;
        }
        bench.stream_request(Method::DELETE, &key, None).await;
    }
    if held > 0 {
        println!(
            "holding {held} earlier closed streams of {} lines each",
            lines_per_run()
        );
    }
}

/// Prints one case's summary over the rounds' (lines/s, CPU µs per 1 000 lines)
/// with the index off and on.
fn report(writers: u64, log: &str, off: &[(f64, f64)], on: &[(f64, f64)]) {
    let n = off.len();
    let pct = |r: f64| 100.0 * (r - 1.0);
    let rate: Vec<f64> = off.iter().zip(on).map(|(o, i)| i.0 / o.0).collect();
    let cpu: Vec<f64> = off.iter().zip(on).map(|(o, i)| i.1 / o.1).collect();
    let (rate_lo, rate_mid, rate_hi) = median_ci(&rate);
    let (cpu_lo, cpu_mid, cpu_hi) = median_ci(&cpu);
    // Time is lines / rate, and every run sends the same lines.
    let time = |v: &[(f64, f64)]| v.iter().map(|p| 1.0 / p.0).sum::<f64>();
    let median = |v: Vec<f64>| quantile(&mut v.clone(), 0.5);
    println!(
        "{writers:>3} writers, {log:<11}, {n} rounds: lines/s off {:.0}, on {:.0}; \
         throughput on/off {:+.1} % (95 % CI {:+.1} … {:+.1} %; sum of times {:+.1} %); \
         service CPU µs/1000 lines off {:.1}, on {:.1}, on/off {:+.1} % (95 % CI {:+.1} … {:+.1} %)",
        median(off.iter().map(|p| p.0).collect()),
        median(on.iter().map(|p| p.0).collect()),
        pct(rate_mid),
        pct(rate_lo),
        pct(rate_hi),
        pct(time(off) / time(on)),
        median(off.iter().map(|p| p.1).collect()),
        median(on.iter().map(|p| p.1).collect()),
        pct(cpu_mid),
        pct(cpu_lo),
        pct(cpu_hi),
    );
}

/// The median of `v` and a confidence interval of at least 95 % around it, by
/// ranks: the `k`-th smallest and largest values, for the largest `k` with
/// P(Binomial(n, ½) < k) ≤ 2.5 % (for 5 or fewer values, the extremes).
fn median_ci(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    // P(X < k) for X ~ Binomial(n, ½), growing with k.
    let below = |k: usize| -> f64 {
        let mut c = 1.0f64;
        let mut sum = 0.0;
        for i in 0..k {
            sum += c;
            c = c * (n - i) as f64 / (i + 1) as f64;
        }
        sum / 2f64.powi(n as i32)
    };
    let k = (1..=n / 2)
        .take_while(|&k| below(k) <= 0.025)
        .last()
        .unwrap_or(1);
    (v[k - 1], quantile(&mut v.clone(), 0.5), v[n - k])
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
        // One account sends every batch: at 10 M lines/s that is 10 000 requests a
        // second, the default quota's bound, and a run would end in a 429. The
        // streams held by `INGEST_HOLD` would cross its 1 GiB of bytes.
        account_limits: runlog_service::quota::AccountLimits {
            max_requests_per_sec: u64::MAX,
            max_bytes: u64::MAX,
            ..Default::default()
        },
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
        "ingest benchmark: {} lines per run, {BATCH} lines per batch, {} body bytes per batch, {ROUNDS} rounds",
        lines_per_run(),
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
        marked: if std::env::var("INGEST_SECTIONS").is_ok() {
            (0..LINES_PER_RUN / BATCH).map(marked_body).collect()
        } else {
            Vec::new()
        },
    });
    if std::env::var("INGEST_SECTIONS").is_ok() {
        client_rt.block_on(compare_sections(&bench));
        return;
    }
    // `INGEST_PROFILE=ingest|discard` runs only that side, 100 writers,
    // `INGEST_ROUNDS` rounds (default 10): a steady load to attach `perf` to, with
    // the two sides' profiles comparable (0 rounds profiles the set-up alone).
    // `marked` and `marked-off` send the log with 1 % marker lines, with the
    // section index on and off; `INGEST_WRITERS` changes the 100.
    if let Ok(side) = std::env::var("INGEST_PROFILE") {
        let rounds: usize = std::env::var("INGEST_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        let writers: u64 = std::env::var("INGEST_WRITERS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(100);
        let marked: Vec<Bytes> = (0..LINES_PER_RUN / BATCH).map(marked_body).collect();
        bench.state.sections().set_enabled(side != "marked-off");
        let bodies = if side.starts_with("marked") {
            &marked
        } else {
            &bench.bodies
        };
        client_rt.block_on(async {
            for round in 0..rounds {
                let rate = bench
                    .run_bodies(writers, round, side == "discard", bodies)
                    .await;
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
