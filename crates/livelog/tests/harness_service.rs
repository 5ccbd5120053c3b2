//! runlog's writer against a log service with Harness semantics
//! (`runlog_testkit::harness`): 204 answers without a body, an upload link's `expires`
//! in integer nanoseconds, upload bodies stored raw, lite-engine's meanings of
//! `skip_opening_stream` and `skip_closing_stream`. Every test checks what the fake
//! stored — live lines and archive — exactly, and what was sent.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::{HttpLogClient, LogClient, Writer, WriterConfig};
use runlog_protocol::LogLine;
use runlog_protocol::engine::LogConfig;
use runlog_testkit::harness::{HarnessService, Recorded};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::{ACCOUNT, assert_exactly_once_in_order, wait_until};

const TOKEN: &str = "harness-token-1";
const SECRET: &str = "s3cr3t-value";

fn harness_client(url: &str, indirect: bool) -> Arc<dyn LogClient> {
    Arc::new(
        HttpLogClient::new(&LogConfig {
            url: url.to_owned(),
            account_id: ACCOUNT.to_owned(),
            token: TOKEN.to_owned(),
            indirect_upload: indirect,
            ..LogConfig::default()
        })
        .unwrap(),
    )
}

fn writer_config(key: &str, spool: &Path, indirect: bool) -> WriterConfig {
    WriterConfig {
        spool_dir: spool.to_path_buf(),
        close_deadline: Duration::from_secs(60),
        indirect_upload: indirect,
        secrets: vec![SECRET.to_owned()],
        ..WriterConfig::new(key)
    }
}

/// Line `i` as written: every seventh carries the secret.
fn written(i: u64) -> String {
    if i % 7 == 0 {
        format!("line {i} token={SECRET}\n")
    } else {
        format!("line {i}\n")
    }
}

/// Line `i` as it must arrive: the secret masked.
fn expected(i: u64) -> String {
    written(i).replace(SECRET, "**************")
}

async fn write_lines(w: &Writer, range: std::ops::Range<u64>) {
    for i in range {
        w.write_line("info", &written(i)).await;
    }
}

/// Parses a stored archive, which must be plain NDJSON (never gzip bytes).
fn plain_ndjson(what: &str, body: &[u8]) -> Vec<LogLine> {
    assert!(
        !body.starts_with(&[0x1f, 0x8b]),
        "{what}: the stored archive is gzip bytes, not NDJSON"
    );
    std::str::from_utf8(body)
        .unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: bad row {l:?}: {e}")))
        .collect()
}

fn live_lines(svc: &HarnessService, key: &str) -> Vec<LogLine> {
    svc.lines(key)
        .unwrap_or_default()
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn requests_to(svc: &HarnessService, method: &str, path: &str) -> Vec<Recorded> {
    svc.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path() == path)
        .collect()
}

/// No request carried the secret unmasked, and every request to the service (not to
/// a link) carried the token.
fn assert_sent_cleanly(svc: &HarnessService) {
    for r in svc.requests() {
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "{} {} sent the secret",
            r.method,
            r.path_and_query
        );
        if !r.path().starts_with("/link/") {
            assert_eq!(r.header("x-harness-token"), Some(TOKEN), "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indirect_upload_stores_plain_ndjson_with_every_line_masked_in_order() {
    const N: u64 = 3_000;
    let svc = HarnessService::start(TOKEN).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "harness/indirect";
    let w = Writer::new(
        harness_client(&svc.url(), true),
        writer_config(key, spool.path(), true),
    );
    write_lines(&w, 0..N).await;
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(report.error, None, "{report:?}");
    assert_eq!(report.streamed_lines, N, "204 answers count as stored");

    assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
    let blob = svc.blob(key).expect("an archive");
    assert_exactly_once_in_order("archive", &plain_ndjson("archive", &blob), N, expected);

    let uploads = requests_to(&svc, "POST", "/blob");
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].header("content-encoding"), None, "plain NDJSON");
    assert_eq!(requests_to(&svc, "POST", "/stream").len(), 1);
    let closes = requests_to(&svc, "DELETE", "/stream");
    assert_eq!(closes.len(), 1);
    assert!(!closes[0].has_query("snapshot", "true"), "{closes:?}");
    assert_eq!(svc.closed(), vec![key.to_owned()]);
    assert_sent_cleanly(&svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_upload_reads_integer_expires_and_puts_plain_ndjson_without_the_token() {
    const N: u64 = 500;
    let svc = HarnessService::start(TOKEN).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "harness/link";
    let w = Writer::new(
        harness_client(&svc.url(), false),
        writer_config(key, spool.path(), false),
    );
    write_lines(&w, 0..N).await;
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(report.error, None, "{report:?}");

    assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
    let blob = svc.blob(key).expect("an archive");
    assert_exactly_once_in_order("archive", &plain_ndjson("archive", &blob), N, expected);

    assert_eq!(requests_to(&svc, "POST", "/blob/link/upload").len(), 1);
    assert!(requests_to(&svc, "POST", "/blob").is_empty());
    let puts: Vec<Recorded> = svc
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path().starts_with("/link/"))
        .collect();
    assert_eq!(puts.len(), 1);
    let put = &puts[0];
    assert_eq!(
        put.header("x-harness-token"),
        None,
        "token sent to the link"
    );
    assert_eq!(put.header("authorization"), None, "token sent to the link");
    assert_eq!(put.header("content-encoding"), None, "plain NDJSON");
    assert_eq!(put.body, blob);
    assert_sent_cleanly(&svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_opening_stream_never_opens_or_uploads_and_closes_with_a_snapshot() {
    const N: u64 = 800;
    for indirect in [true, false] {
        let svc = HarnessService::start(TOKEN).await;
        let spool = tempfile::tempdir().unwrap();
        let key = "harness/skip-opening";
        // The controller opened the stream.
        svc.open(key);
        let mut cfg = writer_config(key, spool.path(), indirect);
        cfg.skip_opening_stream = true;
        let w = Writer::new(harness_client(&svc.url(), indirect), cfg);
        write_lines(&w, 0..N).await;
        let report = w.close().await;
        assert_eq!(report.error, None, "indirect {indirect}: {report:?}");
        assert!(!report.archived, "no archive upload: {report:?}");
        assert!(!report.outboxed, "{report:?}");

        let sent = svc.requests();
        assert!(
            !sent.iter().any(|r| r.method == "POST"),
            "indirect {indirect}: no open, no upload, no link: {sent:?}"
        );
        let closes = requests_to(&svc, "DELETE", "/stream");
        assert_eq!(closes.len(), 1);
        assert!(closes[0].has_query("snapshot", "true"), "{closes:?}");
        assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
        // The archive is the service's snapshot of the stream.
        let blob = svc.blob(key).expect("a snapshot");
        assert_exactly_once_in_order("snapshot", &plain_ndjson("snapshot", &blob), N, expected);
        assert_sent_cleanly(&svc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_closing_stream_only_flushes() {
    const N: u64 = 800;
    for (indirect, skip_opening) in [(true, false), (false, false), (true, true)] {
        let svc = HarnessService::start(TOKEN).await;
        let spool = tempfile::tempdir().unwrap();
        let key = "harness/skip-closing";
        if skip_opening {
            svc.open(key);
        }
        let mut cfg = writer_config(key, spool.path(), indirect);
        cfg.skip_closing_stream = true;
        cfg.skip_opening_stream = skip_opening;
        let w = Writer::new(harness_client(&svc.url(), indirect), cfg);
        write_lines(&w, 0..N).await;
        let report = w.close().await;
        let case = format!("indirect {indirect}, skip_opening {skip_opening}");
        assert_eq!(report.error, None, "{case}: {report:?}");
        assert!(!report.archived && !report.outboxed, "{case}: {report:?}");

        let sent = svc.requests();
        assert_eq!(
            sent.iter().filter(|r| r.method == "POST").count(),
            usize::from(!skip_opening),
            "{case}: only the open: {sent:?}"
        );
        assert!(requests_to(&svc, "DELETE", "/stream").is_empty(), "{case}");
        assert!(svc.blob(key).is_none(), "{case}: no archive");
        assert!(svc.is_open(key), "{case}: the stream stays open");
        assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
        assert_sent_cleanly(&svc);
    }
}

/// A Harness service down at close: the lines the live stream lacks are sent from
/// the outbox once it is back — each once, in order — and only then the stream is
/// closed with a snapshot; nothing is uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_opening_stream_sends_missing_lines_from_the_outbox_then_snapshots() {
    const N: u64 = 400;
    let svc = HarnessService::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = "harness/outbox-skip";
    svc.open(key);
    let mut cfg = writer_config(key, dir.path(), true);
    cfg.skip_opening_stream = true;
    cfg.outbox_dir = Some(outbox.clone());
    cfg.close_deadline = Duration::from_secs(2);
    cfg.max_retry_delay = Duration::from_millis(100);
    let w = Writer::new(harness_client(&svc.url(), true), cfg);
    write_lines(&w, 0..N / 2).await;
    wait_until("the first half live", Duration::from_secs(10), || {
        svc.lines(key).is_some_and(|l| l.len() as u64 == N / 2)
    })
    .await;
    svc.set_down(true);
    write_lines(&w, N / 2..N).await;
    let report = w.close().await;
    assert!(report.outboxed && !report.archived, "{report:?}");
    svc.set_down(false);
    wait_until("the stream closed", Duration::from_secs(30), || {
        svc.closed() == vec![key.to_owned()]
    })
    .await;

    assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
    let blob = svc.blob(key).expect("a snapshot");
    assert_exactly_once_in_order("snapshot", &plain_ndjson("snapshot", &blob), N, expected);
    let sent = svc.requests();
    assert!(!sent.iter().any(|r| r.method == "POST"), "{sent:?}");
    let closes = requests_to(&svc, "DELETE", "/stream");
    assert!(closes.iter().all(|r| r.has_query("snapshot", "true")));
    wait_until("the outbox emptied", Duration::from_secs(10), || {
        std::fs::read_dir(&outbox).is_ok_and(|d| d.count() == 0)
    })
    .await;
    assert_sent_cleanly(&svc);
}

/// A Harness service down at close for a writer that owns its stream: the archive
/// the outbox delivers later is plain NDJSON too, with every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outboxed_archive_reaches_a_harness_service_as_plain_ndjson() {
    const N: u64 = 300;
    for indirect in [true, false] {
        let svc = HarnessService::start(TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let key = "harness/outbox-archive";
        let mut cfg = writer_config(key, dir.path(), indirect);
        cfg.outbox_dir = Some(outbox.clone());
        cfg.close_deadline = Duration::from_secs(2);
        cfg.max_retry_delay = Duration::from_millis(100);
        let w = Writer::new(harness_client(&svc.url(), indirect), cfg);
        write_lines(&w, 0..N).await;
        wait_until("every line live", Duration::from_secs(10), || {
            svc.lines(key).is_some_and(|l| l.len() as u64 == N)
        })
        .await;
        svc.set_down(true);
        let report = w.close().await;
        assert!(report.outboxed && !report.archived, "{report:?}");
        svc.set_down(false);
        wait_until("the archive stored", Duration::from_secs(30), || {
            svc.blob(key).is_some() && svc.closed() == vec![key.to_owned()]
        })
        .await;
        let blob = svc.blob(key).unwrap();
        assert_exactly_once_in_order("archive", &plain_ndjson("archive", &blob), N, expected);
        assert_exactly_once_in_order("live", &live_lines(&svc, key), N, expected);
        let closes = requests_to(&svc, "DELETE", "/stream");
        assert!(closes.iter().all(|r| !r.has_query("snapshot", "true")));
        assert_sent_cleanly(&svc);
    }
}
