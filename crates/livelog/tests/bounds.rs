//! The writer's bounds: memory queue overflow to the spool, the spool's disk cap,
//! backpressure, line limits — against the real log service.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::assemble::CUT_MARKER;
use livelog::{Writer, WriterConfig};
use runlog_protocol::Scope;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::time::Duration;
use support::*;

/// [`support::config`] with short retry delays: these tests stall the service on
/// purpose and must not wait out long backoffs once it answers again.
fn config(key: &str, spool: &std::path::Path) -> WriterConfig {
    WriterConfig {
        max_retry_delay: Duration::from_millis(200),
        ..support::config(key, spool)
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_over_the_queue_cap_are_read_back_from_the_spool_exactly_once_in_order() {
    const N: u64 = 20_000;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::mixed(0.3), 11).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "spill/readback";
    let text = |i: u64| format!("spilled line {i}\n");
    open_stream(&svc.url(), &token, key).await;
    let live = tokio::spawn({
        let (url, token) = (svc.url(), token.clone());
        async move { tail_until_eof(&url, &token, key, Duration::from_secs(120)).await }
    });
    let mut cfg = config(key, spool.path());
    cfg.queue_max_bytes = 8 * 1024;
    cfg.max_batch_bytes = 16 * 1024;
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    for i in 0..N {
        w.write(text(i).as_bytes());
    }
    let spills = w.progress().spills;
    let report = w.close().await;
    assert!(spills > 0, "the queue cap must have been exceeded");
    assert_eq!(report.streamed_lines, N, "{report:?}");
    assert!(report.archived);
    assert_exactly_once_in_order("live", &live.await.unwrap(), N, text);
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive", &archive, N, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_writing_flat_out_against_a_stalled_service_keeps_rss_bounded() {
    const TOTAL: usize = 128 << 20;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::stalled(), 5).await;
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = config("stall/rss", spool.path());
    cfg.queue_max_bytes = 4 << 20;
    cfg.close_deadline = Duration::from_millis(500);
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    let line = format!("{}\n", "r".repeat(79));
    let chunk = line.repeat(800); // 64 000 bytes per write
    let before = rss_bytes();
    let mut peak = before;
    let mut written = 0;
    while written < TOTAL {
        w.write(chunk.as_bytes());
        written += chunk.len();
        if written % (8 << 20) < chunk.len() {
            peak = peak.max(rss_bytes());
        }
    }
    peak = peak.max(rss_bytes());
    let p = w.progress();
    assert_eq!(p.lines, (written / 80) as u64);
    assert!(
        p.spool_bytes > TOTAL as u64,
        "the history is on disk: {p:?}"
    );
    assert!(p.queued_bytes <= 4 << 20, "{p:?}");
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 64 << 20,
        "RSS grew by {} MiB while writing {} MiB",
        grew >> 20,
        TOTAL >> 20
    );
    let report = w.close().await;
    assert!(!report.archived);
    assert!(proxy.stats().stall > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_disk_cap_drops_lines_with_a_marker_saying_how_many_and_where() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "cap/marker";
    let mut cfg = config(key, spool.path());
    cfg.spool_max_bytes = 20_000;
    let w = Writer::new(client(&svc.url(), &token), cfg);
    for i in 0..1000 {
        w.write(format!("capped line {i:04}\n").as_bytes());
    }
    let report = w.close().await;
    assert!(report.dropped_lines > 0, "{report:?}");
    assert!(report.archived, "{report:?}");
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    let kept = archive
        .iter()
        .filter(|l| l.out.starts_with("capped line"))
        .count() as u64;
    assert_eq!(
        kept + report.dropped_lines,
        1000,
        "every line is either kept or counted"
    );
    let last = &archive.last().unwrap().out;
    let first_dropped = kept - 1;
    assert!(
        last.contains(&format!("{} lines", report.dropped_lines))
            && last.contains(&format!("after line {first_dropped}")),
        "{last}"
    );
    // Kept lines are the first ones, contiguous and in order.
    for (i, l) in archive.iter().enumerate().take(kept as usize) {
        assert_eq!(l.out, format!("capped line {i:04}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_async_waits_while_the_queue_is_full_and_resumes_when_it_drains() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::stalled(), 9).await;
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = config("backpressure/wait", spool.path());
    cfg.queue_max_bytes = 4096;
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    for i in 0..200 {
        w.write(format!("filling the queue {i}\n").as_bytes());
    }
    let waiting = tokio::spawn({
        let w = w.clone();
        async move { w.write_async(b"after the stall\n").await }
    });
    // Nothing can drain while the service is stalled.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await
            }
        })
        .await
        .is_err()
    );
    proxy.set_faults(Faults::none());
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("write_async resumes")
        .unwrap();
    let report = w.close().await;
    assert_eq!(report.lines, 201);
    assert_eq!(report.streamed_lines, 201, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_cut_with_a_marker_and_trim_new_line_suffix_is_honoured() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "cut/trim";
    let mut cfg = config(key, spool.path());
    cfg.max_line_bytes = 100;
    cfg.trim_new_line_suffix = true;
    let w = Writer::new(client(&svc.url(), &token), cfg);
    w.write(format!("{}\nshort\r\n", "é".repeat(120)).as_bytes());
    let report = w.close().await;
    assert!(report.archived);
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    let texts: Vec<&str> = archive.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[0], format!("{}{CUT_MARKER}", "é".repeat(50)));
    assert_eq!(texts[2], "é".repeat(20));
    assert_eq!(texts[3], "short");
}
