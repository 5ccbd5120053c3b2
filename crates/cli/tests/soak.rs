//! Soak: the real engine and log service (the `runlog` binary on 127.0.0.1), with a
//! fault-injecting proxy between them, carry at least 200 streams for a fixed time.
//! At the end every stream is complete (each `pos` once, in order, text intact, live
//! and archived) and neither process's resident memory nor open file descriptors
//! have grown past a small allowance over their warmed-up level.
//!
//! Long, so not part of the default run: `scripts/soak` runs it (2 minutes), and
//! `RUNLOG_SOAK_SECONDS=1800 scripts/soak` is the 30-minute version.
#![allow(clippy::unwrap_used)]

use runlog_protocol::{AccountId, Scope};
use runlog_testkit::chaos::{
    RunlogBinary, archive_lines, check_exactly_once_in_order, free_loopback_port, open_fds,
    rss_kib, sse_lines,
};
use runlog_testkit::proxy::{FaultProxy, Faults};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "soak";
/// Streams at least, whatever the duration.
const MIN_STREAMS: usize = 200;
/// Steps (streams) running at once.
const PARALLEL: usize = 10;
/// Lines per stream.
const LINES: usize = 300;
/// Rounds per stage: a long-lived engine runs many stages, each a bounded number of
/// steps (a stage keeps every step's result until `/destroy`).
const STAGE_ROUNDS: usize = 20;

/// Resident memory (KiB) and open descriptors of one process.
#[derive(Debug, Clone, Copy)]
struct Probe {
    rss_kib: u64,
    fds: usize,
}

fn probe(pid: u32) -> Probe {
    Probe {
        rss_kib: rss_kib(pid).unwrap(),
        fds: open_fds(pid).unwrap(),
    }
}

/// Flat: at most 16 more descriptors, and memory within 25 % + 24 MiB of the
/// warmed-up level (allocator arenas and caches settle in steps, not smoothly).
fn assert_flat(what: &str, warm: Probe, end: Probe) {
    assert!(
        end.fds <= warm.fds + 16,
        "{what}: open descriptors grew from {} to {}",
        warm.fds,
        end.fds
    );
    assert!(
        end.rss_kib <= warm.rss_kib + warm.rss_kib / 4 + 24 * 1024,
        "{what}: resident memory grew from {} KiB to {} KiB",
        warm.rss_kib,
        end.rss_kib
    );
}

fn expected(stream: usize) -> Vec<String> {
    (0..LINES)
        .map(|i| format!("soak stream {stream} line {i} the quick brown fox\n"))
        .collect()
}

async fn post(url: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

fn soak_seconds() -> u64 {
    // Read, never set: the duration is the script's choice.
    std::env::var("RUNLOG_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak (2 minutes or more): run by scripts/soak"]
async fn soak_200_streams_under_faults_keeps_memory_and_fds_flat() {
    let runlog = RunlogBinary::new(env!("CARGO_BIN_EXE_runlog"));
    let data = tempfile::tempdir().unwrap();
    let secret = runlog_service::auth::generate_secret();
    let port = free_loopback_port().unwrap();
    let service_url = format!("http://127.0.0.1:{port}");
    // Closed streams leave memory after 10 s (their archives remain), so a long soak
    // measures leaks, not retention.
    let service = runlog.service_with(
        port,
        data.path(),
        &secret,
        &["--closed-retention".to_owned(), "10s".to_owned()],
    );
    let faults = Faults {
        delay_ms: 200,
        ..Faults::mixed(0.1)
    };
    let proxy = FaultProxy::start(&service_url, faults, 11).await;
    let acc = AccountId::new(ACCOUNT).unwrap();
    let mint = |scope| {
        runlog_service::auth::mint_token(
            secret.as_bytes(),
            Some(&acc),
            scope,
            Duration::from_secs(7200),
        )
        .unwrap()
    };
    let (w, r) = (mint(Scope::Write), mint(Scope::Read));
    let dir = tempfile::tempdir().unwrap();
    let (engine_proc, engine) = runlog.engine(dir.path());
    let setup = json!({"log_config": {"url": proxy.url(), "account_id": ACCOUNT, "token": w}});
    post(&format!("{engine}/setup"), setup.clone()).await;

    let duration = Duration::from_secs(soak_seconds());
    let started = Instant::now();
    let mut streams = 0usize;
    let mut warm: Option<(Probe, Probe)> = None;
    let mut last: Option<(Probe, Probe)> = None;
    let mut rounds = 0;
    let warm_up = Duration::from_secs(40).min(duration / 3);
    let mut next_report = Duration::from_secs(10);
    while started.elapsed() < duration || streams < MIN_STREAMS || rounds % STAGE_ROUNDS != 0 {
        let ids: Vec<usize> = (streams..streams + PARALLEL).collect();
        for &s in &ids {
            let script = format!(
                "i=0; while [ $i -lt {LINES} ]; do if [ $((i % 50)) -eq 0 ]; then sleep 0.05; fi; \
                 echo \"soak stream {s} line $i the quick brown fox\"; i=$((i+1)); done"
            );
            post(
                &format!("{engine}/step"),
                json!({"id": format!("s{s}"), "script": script, "log_key": format!("soak/{s}"), "detach": true}),
            )
            .await;
        }
        for &s in &ids {
            let result = post(
                &format!("{engine}/poll_step"),
                json!({"id": format!("s{s}")}),
            )
            .await;
            assert_eq!(result["exit_code"], 0, "stream {s}: {result}");
        }
        streams += PARALLEL;
        rounds += 1;
        if rounds % STAGE_ROUNDS != 0 {
            continue;
        }
        // Next stage; probes are taken here, at the same point of every cycle.
        let report = post(&format!("{engine}/destroy"), json!({})).await;
        for rep in report["streams"].as_array().into_iter().flatten() {
            assert_eq!(rep["dropped_lines"], 0, "{rep}");
        }
        post(&format!("{engine}/setup"), setup.clone()).await;
        last = Some((probe(engine_proc.pid()), probe(service.pid())));
        // Warmed up once closed streams have started to retire (10 s retention plus a
        // 10 s sweep): from then on the service holds a steady window of streams, and
        // pools, caches and allocator arenas have their size.
        if warm.is_none() && started.elapsed() >= warm_up {
            warm = last;
        }
        if started.elapsed() >= next_report {
            let (e, s) = (probe(engine_proc.pid()), probe(service.pid()));
            eprintln!(
                "soak: {:>4} s {streams:>5} streams; engine {} KiB {} fds; service {} KiB {} fds",
                started.elapsed().as_secs(),
                e.rss_kib,
                e.fds,
                s.rss_kib,
                s.fds
            );
            next_report += Duration::from_secs(10);
        }
    }
    let report = post(&format!("{engine}/destroy"), json!({})).await;
    let end = last.unwrap();
    let elapsed = started.elapsed();
    let stats = proxy.stats();
    let (warm_engine, warm_service) = warm.unwrap();
    eprintln!(
        "soak: {streams} streams x {LINES} lines in {:.0} s ({rounds} rounds of {PARALLEL}); \
         engine RSS {} -> {} KiB, fds {} -> {}; service RSS {} -> {} KiB, fds {} -> {}; proxy {stats:?}",
        elapsed.as_secs_f64(),
        warm_engine.rss_kib,
        end.0.rss_kib,
        warm_engine.fds,
        end.0.fds,
        warm_service.rss_kib,
        end.1.rss_kib,
        warm_service.fds,
        end.1.fds,
    );
    let reports = report["streams"].as_array().cloned().unwrap_or_default();
    for rep in &reports {
        assert_eq!(rep["dropped_lines"], 0, "{rep}");
    }
    for s in 0..streams {
        let key = format!("soak/{s}");
        let want = expected(s);
        let archived = archive_lines(&service_url, ACCOUNT, &key, &r)
            .await
            .unwrap();
        if let Err(e) = check_exactly_once_in_order(&archived, &want) {
            panic!("archive of {key}: {e}");
        }
        // The live view of a stream: its SSE replay (from the archive once retired).
        let live = sse_lines(&service_url, ACCOUNT, &key, &r, Duration::from_secs(60))
            .await
            .unwrap();
        if let Err(e) = check_exactly_once_in_order(&live, &want) {
            panic!("live stream of {key}: {e}");
        }
    }
    assert!(
        stats.requests > stats.forwarded,
        "no fault was injected: {stats:?}"
    );
    assert_flat("engine", warm_engine, end.0);
    assert_flat("log service", warm_service, end.1);
}
