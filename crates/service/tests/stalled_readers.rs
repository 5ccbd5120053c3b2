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

use common::{Api, status_bytes};
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
    stalled_get(addr, api, "/stream", key, last_event_id).await
}

/// A peer that sends `GET path` and never reads a byte (see [`stalled_tail`]).
async fn stalled_get(
    addr: SocketAddr,
    api: &Api,
    path: &str,
    key: &str,
    last_event_id: Option<u64>,
) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET {path}?accountID={}&key={key} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{resume}\r\n",
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

/// The write timeout the asserting tests run with: short, so a test waits for it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Most a stalled tail may add to the service's resident memory: one chunk of the
/// tail (256 KiB, or one 1 MiB line), hyper's write buffer (≈ 400 KiB) and the
/// archive decoder's text and window, with room for allocator noise.
const PER_TAIL_BOUND: u64 = 4 << 20;

/// Resets this process's peak RSS (`VmHWM`) to its current RSS, so the peak seen
/// afterwards is the peak of what follows.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Waits until the service resets `conn` (its write timeout), without reading:
/// a reset is an error condition on the socket.
async fn closed_by_service(conn: &TcpStream) {
    let ready = conn.ready(tokio::io::Interest::ERROR).await.unwrap();
    assert!(ready.is_error());
}

/// `READERS` stalled peers sending `GET path` of `key`: each is reset by the
/// service after the write timeout, and the service's peak RSS meanwhile stays
/// within `READERS × PER_TAIL_BOUND` of where it was. Answers the peers (reset).
async fn assert_stalled_tails_bounded(
    svc: &TestService,
    api: &Api,
    path: &str,
    key: &str,
) -> Vec<TcpStream> {
    let before = rss();
    reset_peak_rss();
    let started = tokio::time::Instant::now();
    let mut peers = Vec::new();
    for _ in 0..READERS {
        peers.push(stalled_get(svc.addr(), api, path, key, None).await);
    }
    for peer in &peers {
        tokio::time::timeout(Duration::from_secs(60), closed_by_service(peer))
            .await
            .unwrap_or_else(|_| panic!("{path} {key}: a stalled peer was not dropped within 60 s"));
    }
    let waited = started.elapsed();
    let peak = status_bytes("VmHWM:");
    let grew = peak.saturating_sub(before);
    println!(
        "{path} {key}: RSS {:.1} MiB before, peak {:.1} MiB with {READERS} stalled tails (+{:.1} MiB); all dropped after {waited:?}",
        mib(before),
        mib(peak),
        mib(grew)
    );
    assert!(
        waited >= WRITE_TIMEOUT,
        "{path} {key}: dropped after {waited:?}, before the write timeout"
    );
    assert!(
        grew < READERS as u64 * PER_TAIL_BOUND,
        "{path} {key}: {READERS} stalled peers grew RSS by {:.1} MiB (bound {:.1} MiB)",
        mib(grew),
        mib(READERS as u64 * PER_TAIL_BOUND)
    );
    peers
}

/// A live stream of 1 MiB lines and an archived stream of 64 MiB (inflated),
/// tailed and downloaded: 8 peers that never read cost the service a bounded
/// amount each, and each is dropped after the write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tails_hold_bounded_memory_and_are_dropped_after_the_write_timeout() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start_with(runlog_service::ServiceConfig {
        write_timeout: WRITE_TIMEOUT,
        ..test_config(dir.path())
    })
    .await;
    let api = Api::new(&svc, "acc", Scope::Write);
    live_stream(&api, "live", LIVE_LINES).await;
    assert_stalled_tails_bounded(&svc, &api, "/stream", "live").await;
    archived_stream(&api, "archived", ARCHIVE_LINES).await;
    assert_stalled_tails_bounded(&svc, &api, "/stream", "archived").await;
    // The archive downloaded by clients that do not take gzip: inflated as it goes.
    assert_stalled_tails_bounded(&svc, &api, "/blob", "archived").await;
    svc.shutdown().await;
}

/// Reads what reached a peer before the service reset it: the buffered bytes,
/// then the reset.
async fn read_what_arrived(mut conn: TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The `id` of the last complete SSE event in `body` (headers included).
fn last_complete_id(body: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(body);
    let complete = &text[..text.rfind("\n\n")?];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|id| id.trim().parse().ok())
        .next_back()
}

/// A tail dropped for not reading resumes after the last event it received, with
/// `Last-Event-ID`, and gets every later line once, then `eof`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_dropped_by_the_write_timeout_resumes_with_last_event_id() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start_with(runlog_service::ServiceConfig {
        write_timeout: WRITE_TIMEOUT,
        ..test_config(dir.path())
    })
    .await;
    let api = Api::new(&svc, "acc", Scope::Write);
    // 24 MiB: more than the kernel's send buffer can absorb (4 MiB at most here),
    // so the service's writes to a peer that reads nothing stall.
    const LINES: u64 = 24 * 1024;
    api.open("resume").await;
    let text = "y".repeat(1000);
    for first in (0..LINES).step_by(4096) {
        let batch: Vec<_> = (first..(first + 4096).min(LINES))
            .map(|pos| serde_json::json!({"level": "info", "pos": pos, "out": text, "time": "2026-11-20T10:00:00.000Z"}))
            .collect();
        api.put_ok("resume", &batch).await;
    }
    let peer = stalled_tail(svc.addr(), &api, "resume", None).await;
    tokio::time::timeout(Duration::from_secs(60), closed_by_service(&peer))
        .await
        .expect("the stalled tail is dropped");
    let arrived = read_what_arrived(peer).await;
    assert!(
        !String::from_utf8_lossy(&arrived).contains("event: eof"),
        "the dropped tail did not end normally"
    );
    let last = last_complete_id(&arrived);
    assert!(last.is_none_or(|l| l < LINES - 1), "dropped before the end");
    api.close("resume", false).await;
    let mut resumed = common::SseReader::new(api.tail("resume", last).await);
    resumed.read_to_end(Duration::from_secs(60)).await;
    let first = last.map_or(0, |l| l + 1);
    assert_eq!(resumed.line_positions(), (first..LINES).collect::<Vec<_>>());
    assert!(resumed.saw_eof());
    svc.shutdown().await;
}
