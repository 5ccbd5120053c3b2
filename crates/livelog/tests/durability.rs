//! Durability against a service that lost a stream and a process that was killed:
//! the live stream gets every line again after a restart, and a spool left behind
//! by a dead writer is delivered at the next start.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::{HttpLogClient, LogClient, Writer, WriterConfig};
use runlog_protocol::Scope;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn client(url: &str, token: &str) -> Arc<dyn LogClient> {
    Arc::new(HttpLogClient::new(&log_config(url, token)).unwrap())
}

fn text(i: u64) -> String {
    format!("line {i:05} of the resumed stream\n")
}

/// Polls `done` until it holds or `limit` passes.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `before` lines, restarts the (in-memory) service, writes `after` more; the
/// new service's live stream must then hold every line once, in order.
async fn restart_mid_stream(queue_max_bytes: usize, before: u64, after: u64) {
    let mut svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    // The writer talks to the service through a proxy, so the restarted service (on
    // a new port) is reached at the same address.
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "durability/restart";
    let cfg = WriterConfig {
        spool_dir: spool.path().to_path_buf(),
        close_deadline: Duration::from_secs(60),
        max_retry_delay: Duration::from_millis(100),
        queue_max_bytes,
        max_batch_lines: 50,
        ..WriterConfig::new(key)
    };
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    for i in 0..before {
        w.write(text(i).as_bytes());
    }
    wait_until(
        "lines before the restart acknowledged",
        Duration::from_secs(30),
        || w.progress().streamed_lines == before,
    )
    .await;

    let url = svc.restart().await;
    proxy.set_upstream(&url);
    for i in before..before + after {
        w.write(text(i).as_bytes());
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let n = before + after;
    let live = tail_n(&url, &token, key, n as usize, Duration::from_secs(60)).await;
    assert_exactly_once_in_order("live stream after the restart", &live, n, text);

    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(
        report.streamed_lines, n,
        "resent lines are counted once: {report:?}"
    );
    let archive = fetch_archive(&url, &token, key).await.unwrap();
    assert_exactly_once_in_order("archive", &archive, n, text);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_a_restarted_service_lost_are_sent_again_once_in_order() {
    restart_mid_stream(8 * 1024 * 1024, 500, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lines_are_sent_again_while_the_queue_overflows_to_the_spool() {
    // A queue of 2 KiB: most lines are read back from the spool anyway.
    restart_mid_stream(2 * 1024, 2000, 3000).await;
}
