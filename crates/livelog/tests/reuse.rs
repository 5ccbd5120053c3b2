//! A key written by one writer after another (a later step, stage or engine reusing
//! it): the later writer continues after the lines the stream holds, so the live
//! stream and the archive keep both histories, and a writer that could not learn
//! where to continue reports the lines the service kept from the earlier one.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::Writer;
use runlog_protocol::Scope;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::time::Duration;
use support::*;

fn texts(lines: &[runlog_protocol::LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.out.trim_end_matches('\n')).collect()
}

/// The earlier writer of `key`: three lines, `FIRST-1` to `FIRST-3`, written and
/// closed through `url`; its report.
async fn write_first(
    url: &str,
    token: &str,
    key: &str,
    spool: &std::path::Path,
) -> livelog::WriterReport {
    let first = Writer::open(client(url, token), config(key, spool)).await;
    first.write(b"FIRST-1\nFIRST-2\nFIRST-3\n");
    first.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_opening_a_stream_that_holds_lines_continues_after_them() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "reuse/continued";
    let a = write_first(&svc.url(), &token, key, spool.path()).await;
    let second = Writer::open(client(&svc.url(), &token), config(key, spool.path())).await;
    second.write(b"SECOND-4\nSECOND-5\n");
    let b = second.close().await;
    for r in [&a, &b] {
        assert!(
            r.archived && r.dropped_lines == 0 && r.error.is_none(),
            "{r:?}"
        );
    }
    assert_eq!((a.lines, b.lines, b.streamed_lines), (3, 2, 2), "{b:?}");
    let want = ["FIRST-1", "FIRST-2", "FIRST-3", "SECOND-4", "SECOND-5"];
    let live = tail_until_eof(&svc.url(), &token, key, Duration::from_secs(20)).await;
    assert_eq!(texts(&live), want, "live stream");
    assert_eq!(
        live.iter().map(|l| l.pos).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_eq!(texts(&archive), want, "archive");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_numbered_before_a_late_open_showed_the_stream_held_lines_are_reported_dropped() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "reuse/late-open";
    assert!(
        write_first(&svc.url(), &token, key, spool.path())
            .await
            .archived
    );
    // The second writer cannot reach the service when it starts: it numbers from 0
    // and opens in the background once the service is back.
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 7).await;
    proxy.set_down(true);
    let cfg = livelog::WriterConfig {
        max_retry_delay: Duration::from_millis(50),
        ..config(key, spool.path())
    };
    let second = Writer::open(client(&proxy.url(), &token), cfg).await;
    second.write(b"SECOND-1\nSECOND-2\nSECOND-3\nSECOND-4\nSECOND-5\n");
    proxy.set_down(false);
    let report = second.close().await;
    assert_eq!(report.lines, 5, "{report:?}");
    assert_eq!(
        report.dropped_lines, 3,
        "the three lines the service kept from the first writer are reported: {report:?}"
    );
    let error = report.error.unwrap_or_default();
    assert!(error.contains("already held lines up to pos 3"), "{error}");
    svc.shutdown().await;
}

/// A writer that continued a stream resends its own lines, once each and from its
/// first `pos`, when the service lost the stream (a restart of the memory store);
/// the earlier writer's lines went with the service and are not its to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuing_writer_resends_only_its_own_lines_once_after_a_service_restart() {
    let mut svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 3).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "reuse/restart";
    assert!(
        write_first(&proxy.url(), &token, key, spool.path())
            .await
            .archived
    );
    let cfg = livelog::WriterConfig {
        max_retry_delay: Duration::from_millis(100),
        ..config(key, spool.path())
    };
    let second = Writer::open(client(&proxy.url(), &token), cfg).await;
    let text = |i: u64| format!("SECOND-{i}\n");
    for i in 0..50 {
        second.write(text(i).as_bytes());
    }
    wait_until("the first 50 acknowledged", Duration::from_secs(30), || {
        second.progress().streamed_lines == 50
    })
    .await;
    let url = svc.restart().await;
    proxy.set_upstream(&url);
    for i in 50..100 {
        second.write(text(i).as_bytes());
    }
    let report = second.close().await;
    assert_eq!(
        (report.lines, report.dropped_lines, report.streamed_lines),
        (100, 0, 100),
        "resent lines are counted once: {report:?}"
    );
    assert!(report.archived, "{report:?}");
    let live = tail_until_eof(&url, &token, key, Duration::from_secs(20)).await;
    let want: Vec<String> = (0..100).map(text).collect();
    assert_eq!(
        live.iter().map(|l| l.out.clone()).collect::<Vec<_>>(),
        want,
        "the live stream holds each of the writer's lines once, in order"
    );
    assert_eq!(
        live.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (3..103).collect::<Vec<_>>(),
        "numbered after the earlier writer's lines, as when they were first sent"
    );
    svc.shutdown().await;
}

/// Two writers of one key at once both number from the same `pos`: the service keeps
/// the first line of each, and the other writer's report counts its lines as
/// dropped rather than saying 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_lines_another_writer_numbered_first_reports_them_dropped() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "reuse/at-once";
    let a = Writer::open(client(&svc.url(), &token), config(key, spool.path())).await;
    let b = Writer::open(client(&svc.url(), &token), config(key, spool.path())).await;
    a.write(b"A-0\nA-1\nA-2\nA-3\nA-4\n");
    wait_until(
        "the first writer's lines stored",
        Duration::from_secs(20),
        || a.progress().streamed_lines == 5,
    )
    .await;
    b.write(b"B-0\nB-1\nB-2\n");
    let report = b.close().await;
    assert_eq!(report.dropped_lines, 3, "{report:?}");
    let error = report.error.unwrap_or_default();
    assert!(error.contains("another writer of the key"), "{error}");
    let report = a.close().await;
    assert_eq!(report.dropped_lines, 0, "{report:?}");
    svc.shutdown().await;
}

/// A writer that continued a stream and could not deliver its lines before its close
/// deadline hands them to the outbox, which sends them to the live stream and has the
/// service archive every line it holds: its spool holds only its own part, and an
/// upload of that as the archive would replace the earlier writer's lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuing_writer_whose_close_fails_keeps_the_earlier_lines_in_the_archive() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let data = tempfile::tempdir().unwrap();
    let (spool, outbox) = (data.path().join("spool"), data.path().join("outbox"));
    let key = "reuse/outboxed";
    assert!(write_first(&svc.url(), &token, key, &spool).await.archived);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 11).await;
    let cfg = livelog::WriterConfig {
        outbox_dir: Some(outbox.clone()),
        close_deadline: Duration::from_millis(500),
        max_retry_delay: Duration::from_millis(50),
        ..config(key, &spool)
    };
    let second = Writer::open(client(&proxy.url(), &token), cfg).await;
    // The service becomes unreachable after the open: nothing of the second writer
    // lands before its close gives up.
    proxy.set_down(true);
    second.write(b"SECOND-4\nSECOND-5\n");
    let report = second.close().await;
    assert!(report.outboxed && !report.archived, "{report:?}");
    proxy.set_down(false);
    let delivered = livelog::deliver_outbox(&outbox).await;
    assert!(delivered.failed.is_empty(), "{delivered:?}");
    let want = ["FIRST-1", "FIRST-2", "FIRST-3", "SECOND-4", "SECOND-5"];
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_eq!(texts(&archive), want, "archive");
    assert_eq!(
        archive.iter().map(|l| l.pos).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    svc.shutdown().await;
}
