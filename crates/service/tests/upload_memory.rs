//! The service's memory while a large plain NDJSON archive is uploaded (what
//! lite-engine sends: `POST /blob`, no gzip): the body is checked while it arrives
//! and only its compressed form is kept, so resident memory grows by a fraction of
//! the body, not by the body.
//!
//! The service runs in this process, so its resident memory is this process's
//! (`/proc/self/status`); the body is generated as it is sent, never held.
//! `measure_200_mb_plain_upload` (ignored) prints the figure recorded in
//! `bench/RESULTS.md` ("Archive uploads"); `bench/upload-memory.sh` runs it.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Api, status_bytes};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;

/// One test at a time: they all measure this process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rows generated per piece of the body.
const ROWS_PER_PIECE: u64 = 2_000;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// One archive row of ~150 bytes (its `out` ~100), varied like build output so that
/// it compresses as logs do, not 1000:1.
fn row(pos: u64, out: &mut Vec<u8>) {
    let h = pos.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let text = format!(
        "{pos:08} compiling module_{} ({:016x}) in {} ms, {} warnings, target/{:x}\\n",
        h % 977,
        h,
        h % 3_000,
        h % 7,
        h >> 40
    );
    out.extend_from_slice(
        format!(
            "{{\"level\":\"info\",\"pos\":{pos},\"out\":\"{text}\",\"time\":\"2026-11-20T10:00:00.000Z\"}}\n"
        )
        .as_bytes(),
    );
}

/// Uploads `rows` generated rows as plain NDJSON; answers the body's size and the
/// service's peak RSS growth over its RSS before.
async fn upload_plain(rows: u64) -> (u64, u64) {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let pieces =
        futures_util::stream::iter((0..rows).step_by(ROWS_PER_PIECE as usize)).map(move |first| {
            let mut buf = Vec::with_capacity(ROWS_PER_PIECE as usize * 160);
            for pos in first..(first + ROWS_PER_PIECE).min(rows) {
                row(pos, &mut buf);
            }
            counted.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::io::Error>(Bytes::from(buf))
        });
    // Settle what starting the service allocated, then measure from here.
    tokio::task::yield_now().await;
    let before = status_bytes("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let r = api
        .req(reqwest::Method::POST, "/blob", "big")
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert_eq!(answer["lines"], rows, "{answer}");
    let peak = status_bytes("VmHWM:");
    svc.shutdown().await;
    (
        sent.load(std::sync::atomic::Ordering::Relaxed),
        peak.saturating_sub(before),
    )
}

use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_upload_is_never_held_whole() {
    let _one = SERIAL.lock().await;
    // ~48 MB of body: held whole, it alone would exceed the bound.
    let (body, grew) = upload_plain(320_000).await;
    assert!(body > 40 << 20, "body {body}");
    assert!(
        grew < 32 << 20,
        "a {:.0} MiB plain upload grew RSS by {:.1} MiB",
        mib(body),
        mib(grew)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: bench/upload-memory.sh"]
async fn measure_200_mb_plain_upload() {
    let _one = SERIAL.lock().await;
    let (body, grew) = upload_plain(1_350_000).await;
    println!(
        "plain upload: {:.0} MiB body, peak RSS +{:.1} MiB above idle",
        mib(body),
        mib(grew)
    );
}
