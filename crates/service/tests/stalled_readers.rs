//! Readers that never read: raw TCP peers that send `GET /stream` and then take
//! nothing, against a live stream of large lines and against an archived stream.
//!
//! The service runs in this process, so its resident memory is this process's
//! (`/proc/self/status`). Every test here takes [`SERIAL`]: another test running
//! at the same time would move the figures.
//!
//! `measure_stalled_readers` (ignored) prints the figures recorded in
//! `bench/RESULTS.md` ("Stalled readers"); `bench/stalled-readers.sh` runs it.
#![allow(clippy::unwrap_used)]

mod common;

use common::Api;
use runlog_protocol::Scope;
use runlog_testkit::service::{TestService, test_config};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// One test at a time: they all measure this process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stalled readers per scenario.
const READERS: usize = 8;
/// Size of each line's `out` text.
const LINE_BYTES: usize = 1 << 20;
/// Lines of the live stream (32 MiB).
const LIVE_LINES: u64 = 32;
/// Lines of the archive (64 MiB inflated, ≈ 64 KiB of gzip).
const ARCHIVE_LINES: u64 = 64;

/// A line whose `out` is `LINE_BYTES` of one letter (compresses ≈ 1000:1).
fn big_line(pos: u64) -> serde_json::Value {
    serde_json::json!({
        "level": "info",
        "pos": pos,
        "out": "x".repeat(LINE_BYTES),
        "time": "2026-11-20T10:00:00.000Z",
    })
}

/// A value of this process's `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn rss() -> u64 {
    status_bytes("VmRSS:")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Opens `key` and stores `lines` lines of `LINE_BYTES` each (8 per request, below
/// the default 16 MiB body limit). The stream stays open: its tails stay live.
async fn live_stream(api: &Api, key: &str, lines: u64) {
    api.open(key).await;
    let mut pos = 0;
    while pos < lines {
        let batch: Vec<_> = (pos..(pos + 8).min(lines)).map(big_line).collect();
        api.put_ok(key, &batch).await;
        pos += batch.len() as u64;
    }
}

/// Uploads an archive of `lines` lines of `LINE_BYTES` each as gzip; no live stream.
async fn archived_stream(api: &Api, key: &str, lines: u64) -> usize {
    let mut ndjson = Vec::new();
    for pos in 0..lines {
        serde_json::to_writer(&mut ndjson, &big_line(pos)).unwrap();
        ndjson.push(b'\n');
    }
    let gz = runlog_service::archive::gzip(&ndjson);
    let r = api
        .req(reqwest::Method::POST, "/blob", key)
        .header("content-encoding", "gzip")
        .body(gz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::OK,
        "{}",
        r.text().await.unwrap()
    );
    gz.len()
}

/// A peer that sends `GET /stream` and never reads a byte, on a socket with a
/// small receive buffer (so the service's writes stall early).
async fn stalled_tail(
    addr: SocketAddr,
    api: &Api,
    key: &str,
    last_event_id: Option<u64>,
) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /stream?accountID={}&key={key} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{resume}\r\n",
        api.account, api.token
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    conn
}

/// Samples this process's RSS every 50 ms for `window` and answers the highest seen.
async fn peak_rss_over(window: Duration) -> u64 {
    let mut peak = rss();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        peak = peak.max(rss());
    }
    peak
}

/// RSS before and while `READERS` peers stall on `key`, printed for
/// `bench/RESULTS.md` ("Stalled readers"). Uses only what the service had before
/// readers were bounded, so the same test measures both versions; a 10 s window,
/// inside the default 30 s write timeout.
async fn measure(key: &str) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start_with(test_config(dir.path())).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    if key == "live" {
        live_stream(&api, key, LIVE_LINES).await;
        println!(
            "live stream: {LIVE_LINES} lines of {} KiB",
            LINE_BYTES >> 10
        );
    } else {
        let gz = archived_stream(&api, key, ARCHIVE_LINES).await;
        println!(
            "archive: {ARCHIVE_LINES} lines of {} KiB, {gz} bytes of gzip",
            LINE_BYTES >> 10
        );
    }
    let before = peak_rss_over(Duration::from_secs(1)).await;
    let mut peers = Vec::new();
    for _ in 0..READERS {
        peers.push(stalled_tail(svc.addr(), &api, key, None).await);
    }
    let during = peak_rss_over(Duration::from_secs(10)).await;
    println!(
        "{key}: RSS {:.1} MiB before, peak {:.1} MiB with {READERS} stalled tails (+{:.1} MiB, {:.2} MiB a tail)",
        mib(before),
        mib(during),
        mib(during.saturating_sub(before)),
        mib(during.saturating_sub(before)) / READERS as f64
    );
    drop(peers);
    svc.shutdown().await;
}

/// `measure` on a live stream of 1 MiB lines (run alone: `--exact`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --exact --nocapture (bench/stalled-readers.sh)"]
async fn measure_stalled_live_tails() {
    measure("live").await;
}

/// `measure` on an archived stream of 64 MiB inflated (run alone: `--exact`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --exact --nocapture (bench/stalled-readers.sh)"]
async fn measure_stalled_archive_tails() {
    measure("archived").await;
}
