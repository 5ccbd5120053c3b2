//! The writer against the real log service, directly and through the fault proxy.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::{Batch, ClientError, HttpLogClient, HttpTimeouts, LogClient, Nudge, Writer};
use runlog_protocol::Scope;
use runlog_protocol::service::AppendAck;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::sync::Arc;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_30_percent_faults_100k_lines_arrive_exactly_once_in_order_live_and_archived() {
    const N: u64 = 100_000;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::mixed(0.3), 7).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "faults/100k";
    let text = |i: u64| format!("line {i:06} {}\n", "x".repeat(66));

    open_stream(&svc.url(), &token, key).await;
    let live = tokio::spawn({
        let (url, token) = (svc.url(), token.clone());
        async move { tail_until_eof(&url, &token, key, Duration::from_secs(240)).await }
    });

    let mut cfg = config(key, spool.path());
    cfg.close_deadline = Duration::from_secs(180);
    cfg.max_retry_delay = Duration::from_millis(200);
    // Batches of at most 64 KiB: a few hundred requests, so every kind of fault is
    // drawn many times whatever the timing.
    cfg.max_batch_bytes = 64 * 1024;
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    // Odd-sized chunks, so lines are split across writes.
    let all: Vec<u8> = (0..N).flat_map(|i| text(i).into_bytes()).collect();
    for chunk in all.chunks(4093) {
        w.write(chunk);
        tokio::task::yield_now().await;
    }
    let report = w.close().await;

    assert_eq!(report.lines, N);
    assert!(report.archived, "{report:?}");
    assert_eq!(report.streamed_lines, N, "{report:?}");
    assert!(
        report.retries > 0,
        "30 % faults must cause retries: {report:?}"
    );
    assert_eq!(report.dropped_lines, 0);
    let stats = proxy.stats();
    assert!(
        stats.drop_response > 0 && stats.close_mid_body > 0 && stats.status_500 > 0,
        "{stats:?}"
    );

    let live = live.await.unwrap();
    assert_exactly_once_in_order("live", &live, N, text);
    let archive = fetch_archive(&svc.url(), &token, key)
        .await
        .expect("an archive");
    assert_exactly_once_in_order("archive", &archive, N, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_for_the_whole_run_close_meets_its_deadline_and_the_outbox_delivers_later() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    proxy.set_down(true);
    let spool = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let key = "outage/run";
    let mut cfg = config(key, spool.path());
    cfg.close_deadline = Duration::from_secs(2);
    cfg.max_retry_delay = Duration::from_millis(300);
    cfg.outbox_dir = Some(outbox.path().to_path_buf());
    let w = Writer::new(client(&proxy.url(), &token), cfg);
    for i in 0..500 {
        w.write(format!("during the outage {i}\n").as_bytes());
    }
    let started = std::time::Instant::now();
    let report = w.close().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "close took {took:?} with a 2 s deadline"
    );
    assert!(!report.archived && report.outboxed, "{report:?}");
    assert_eq!(report.lines, 500);
    assert!(fetch_archive(&svc.url(), &token, key).await.is_none());

    proxy.set_down(false);
    let archive = archive_within(&svc.url(), &token, key, Duration::from_secs(30)).await;
    assert_exactly_once_in_order("archive", &archive, 500, |i| {
        format!("during the outage {i}\n")
    });
    // The entry is removed once delivered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(outbox.path()).unwrap().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox entry was not removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_left_by_an_earlier_run_is_delivered_at_start() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let key = "outbox/next-start";
    // An address nothing listens on: the service is unreachable for this run.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cfg = config(key, spool.path());
    cfg.close_deadline = Duration::from_millis(500);
    cfg.outbox_dir = Some(outbox.path().to_path_buf());
    let mut lc = log_config(&dead, &token);
    lc.url = dead.clone();
    let w = Writer::new(Arc::new(HttpLogClient::new(&lc).unwrap()), cfg);
    w.write(b"kept for later\n");
    let report = w.close().await;
    assert!(report.outboxed, "{report:?}");

    // The next start knows the service's new address (same account and token).
    let r = livelog::deliver_outbox_with(outbox.path(), client(&svc.url(), &token)).await;
    assert_eq!(r.delivered, 1, "{r:?}");
    let archive = fetch_archive(&svc.url(), &token, key)
        .await
        .expect("delivered");
    assert_exactly_once_in_order("archive", &archive, 1, |_| "kept for later\n".to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_live_and_in_the_archive_even_split_across_writes() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "mask/split";
    let mut cfg = config(key, spool.path());
    cfg.secrets = vec!["hunter2-very-secret".to_owned()];
    let tapped = Arc::new(std::sync::Mutex::new(Vec::new()));
    cfg.tap = Some(Arc::new({
        let t = tapped.clone();
        move |l: &runlog_protocol::LogLine| t.lock().unwrap().push(l.out.clone())
    }));
    open_stream(&svc.url(), &token, key).await;
    let live = tokio::spawn({
        let (url, token) = (svc.url(), token.clone());
        async move { tail_until_eof(&url, &token, key, Duration::from_secs(30)).await }
    });
    let w = Writer::new(client(&svc.url(), &token), cfg);
    w.write(b"password is hunter2-ve");
    w.write(b"ry-secret, ok\n");
    let report = w.close().await;
    assert!(report.archived);
    let expected = "password is **************, ok\n";
    let live = live.await.unwrap();
    assert_exactly_once_in_order("live", &live, 1, |_| expected.to_owned());
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive", &archive, 1, |_| expected.to_owned());
    assert_eq!(*tapped.lock().unwrap(), vec![expected.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_line_and_an_idle_partial_line_show_up_live_before_close() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "live/partial";
    let mut cfg = config(key, spool.path());
    cfg.partial_line_flush = Duration::from_millis(50);
    open_stream(&svc.url(), &token, key).await;
    let w = Writer::new(client(&svc.url(), &token), cfg);
    w.write(b"starting\n");
    w.write(b"Downloading 45%");
    let live = tail_n(&svc.url(), &token, key, 2, Duration::from_secs(10)).await;
    let texts: Vec<&str> = live.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(texts, vec!["starting\n", "Downloading 45%"]);
    w.write(b"\rdone\n");
    let report = w.close().await;
    assert_eq!(report.lines, 3);
}

/// A producer that pauses mid-secret for longer than `partial_line_flush`: what was
/// written before the secret shows up live, the start of the secret does not, and the
/// line's pieces read as the whole line masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partial_line_shows_up_live_without_the_start_of_a_secret() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "live/partial-secret";
    let mut cfg = config(key, spool.path());
    cfg.partial_line_flush = Duration::from_millis(50);
    cfg.secrets = vec!["hunter2-secret".into()];
    open_stream(&svc.url(), &token, key).await;
    let w = Writer::new(client(&svc.url(), &token), cfg);
    w.write(b"Logging in with hunter2-");
    let live = tail_n(&svc.url(), &token, key, 1, Duration::from_secs(10)).await;
    assert_eq!(live[0].out, "Logging in with ");
    w.write(b"secret ok\n");
    let live = tail_n(&svc.url(), &token, key, 2, Duration::from_secs(10)).await;
    let joined: String = live.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(joined, "Logging in with ************** ok\n");
    let report = w.close().await;
    assert_eq!(report.lines, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_stops_live_streaming_but_the_archive_is_still_uploaded() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "refused/live";
    let cfg = config(key, spool.path());
    // Every append is refused with a 4xx (say, the service's policy refuses the lines);
    // open, upload and close go through.
    let w = Writer::new(Arc::new(RefusingWrites(client(&svc.url(), &token))), cfg);
    for i in 0..100 {
        w.write_line("info", &format!("line {i}")).await;
    }
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("live streaming stopped")),
        "{report:?}"
    );
    assert_eq!(report.streamed_lines, 0);
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive", &archive, 100, |i| format!("line {i}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_nudges_and_the_signed_link_upload_works() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "nudge/oom";
    let mut cfg = config(key, spool.path());
    cfg.indirect_upload = false;
    cfg.nudges = Nudge::defaults();
    let w = Writer::new(client(&svc.url(), &token), cfg);
    w.write(b"allocating\nKilled\n");
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert!(
        report.hints.iter().any(|h| h.contains("out of memory")),
        "{report:?}"
    );
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_eq!(archive.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_clear_error_and_nothing_is_lost() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let key = "auth/wrong";
    let mut cfg = config(key, spool.path());
    cfg.outbox_dir = Some(outbox.path().to_path_buf());
    let w = Writer::new(client(&svc.url(), "not-a-token"), cfg);
    w.write(b"x\n");
    let report = w.close().await;
    assert!(!report.archived);
    assert!(
        report.error.as_deref().is_some_and(|e| e.contains("401")),
        "{report:?}"
    );
    // Refused uploads are kept too: a later run with a valid token can deliver them.
    assert!(report.outboxed, "{report:?}");
    let r = livelog::deliver_outbox_with(outbox.path(), client(&svc.url(), &token)).await;
    assert_eq!(r.delivered, 1, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_time_out_against_a_stalled_service_and_close_keeps_its_deadline() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::stalled(), 3).await;
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = config("stall/deadline", spool.path());
    cfg.close_deadline = Duration::from_secs(1);
    let c = HttpLogClient::with_timeouts(
        &log_config(&proxy.url(), &token),
        HttpTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(60),
        },
    )
    .unwrap();
    let w = Writer::new(Arc::new(c), cfg);
    w.write(b"stuck\n");
    let started = std::time::Instant::now();
    let report = w.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.archived);
    assert!(proxy.stats().stall > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_clone_without_close_still_archives_the_history() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "drop/no-close";
    let w = Writer::new(client(&svc.url(), &token), config(key, spool.path()));
    let other = w.clone();
    w.write(b"first\n");
    other.write(b"second\n");
    drop(w);
    drop(other);
    let archive = archive_within(&svc.url(), &token, key, Duration::from_secs(30)).await;
    let texts: Vec<&str> = archive.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(texts, vec!["first\n", "second\n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restart_mid_run_loses_no_line_from_the_archive_and_live_streaming_resumes() {
    const N: u64 = 2_000;
    let mut svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 2).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "restart/mid-run";
    let text = |i: u64| format!("around the restart {i}\n");
    let w = Writer::new(client(&proxy.url(), &token), config(key, spool.path()));
    for i in 0..N / 2 {
        w.write(text(i).as_bytes());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.progress().streamed_lines < N / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "first half not streamed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // In-memory streams are lost with the process; the token stays valid (same secret).
    let new_url = svc.restart().await;
    proxy.set_upstream(&new_url);
    for i in N / 2..N {
        w.write(text(i).as_bytes());
    }
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(
        report.streamed_lines, N,
        "live streaming resumed after the restart: {report:?}"
    );
    assert!(report.error.is_none(), "{report:?}");
    let archive = fetch_archive(&new_url, &token, key).await.unwrap();
    assert_exactly_once_in_order("archive", &archive, N, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_write_and_writeln_feed_the_same_stream_from_any_thread() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Writer>();
    use std::io::Write as _;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "io/write";
    let w = Writer::new(client(&svc.url(), &token), config(key, spool.path()));
    let mut owned = w.clone();
    std::thread::spawn(move || {
        owned.write_all(b"from a thread, ").unwrap();
        writeln!(owned, "split").unwrap();
    })
    .join()
    .unwrap();
    writeln!(&w, "via a reference").unwrap();
    let report = w.close().await;
    assert!(report.archived);
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    let texts: Vec<&str> = archive.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(texts, vec!["from a thread, split\n", "via a reference\n"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_file_reused_by_the_next_writer_gives_it_only_its_own_history() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let files = |dir: &std::path::Path| -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().ino())
            })
            .collect();
        v.sort();
        v
    };
    // A long history first, so the file the second writer gets holds more than it writes.
    let first = Writer::new(
        client(&svc.url(), &token),
        config("reuse/first", spool.path()),
    );
    for i in 0..5000 {
        first.write(format!("first writer, line {i}\n").as_bytes());
    }
    assert!(first.close().await.archived);
    let kept = files(spool.path());
    assert_eq!(kept.len(), 1, "the archived spool was not kept: {kept:?}");
    assert!(kept[0].0.starts_with("livelog-free-"), "{kept:?}");

    let second = Writer::new(
        client(&svc.url(), &token),
        config("reuse/second", spool.path()),
    );
    let taken = files(spool.path());
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].1, kept[0].1,
        "the second writer did not reuse the file"
    );
    for i in 0..3 {
        second.write(format!("second writer, line {i}\n").as_bytes());
    }
    let report = second.close().await;
    assert!(report.archived, "{report:?}");
    let archive = fetch_archive(&svc.url(), &token, "reuse/second")
        .await
        .expect("an archive");
    assert_exactly_once_in_order("the second archive", &archive, 3, |i| {
        format!("second writer, line {i}\n")
    });
    let first_archive = fetch_archive(&svc.url(), &token, "reuse/first")
        .await
        .expect("an archive");
    assert_exactly_once_in_order("the first archive", &first_archive, 5000, |i| {
        format!("first writer, line {i}\n")
    });
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_that_takes_longer_than_the_request_timeout_to_send_is_still_archived() {
    const N: u64 = 12_000;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 4).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "slow-link/archive";
    // Lines that gzip cannot shrink much (hex of a pseudo-random sequence): the
    // history is ~1.2 MB, ~0.6 MB on the wire.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = |i: u64| {
        let hex: String = (0..6)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                format!("{x:016x}")
            })
            .collect();
        format!("{i:06} {hex}\n")
    };
    let mut log = log_config(&proxy.url(), &token);
    // Through the proxy (a signed link would name the service itself).
    log.indirect_upload = false;
    let request = Duration::from_secs(1);
    let c = HttpLogClient::with_timeouts(
        &log,
        HttpTimeouts {
            connect: Duration::from_secs(5),
            request,
        },
    )
    .unwrap();
    // Never asks the service to archive its own lines: this is about the upload.
    let c = CountingUploads::new(Arc::new(c), false);
    let w = Writer::new(Arc::new(c), config(key, spool.path()));
    let lines: Vec<String> = (0..N).map(&mut text).collect();
    for l in &lines {
        w.write(l.as_bytes());
    }
    wait_until("every line streamed", Duration::from_secs(60), || {
        w.progress().streamed_lines == N
    })
    .await;
    // Now a slow uplink: sending the archive takes ~2 s, twice the request timeout.
    proxy.set_request_rate(Some(300 * 1024));
    let started = std::time::Instant::now();
    let report = w.close().await;
    let took = started.elapsed();
    assert!(report.archived, "{report:?}");
    assert_eq!(report.retries, 0, "{report:?}");
    assert!(
        took > request,
        "the upload took {took:?}: the link was not slow"
    );
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    let texts: Vec<&str> = archive.iter().map(|l| l.out.as_str()).collect();
    assert_eq!(texts, lines);
}

/// A client whose appends are all refused with 403; everything else goes through.
struct RefusingWrites(Arc<dyn LogClient>);

#[async_trait::async_trait]
impl LogClient for RefusingWrites {
    async fn open(&self, key: &str) -> Result<(), ClientError> {
        self.0.open(key).await
    }
    async fn write(&self, _: &str, _: &Batch) -> Result<AppendAck, ClientError> {
        Err(ClientError::Status {
            status: 403,
            message: "refused".into(),
        })
    }
    async fn close(&self, key: &str, snapshot: bool) -> Result<(), ClientError> {
        self.0.close(key, snapshot).await
    }
    async fn upload_blob(&self, key: &str, ndjson: &std::path::Path) -> Result<(), ClientError> {
        self.0.upload_blob(key, ndjson).await
    }
    async fn upload_link(&self, key: &str, ndjson: &std::path::Path) -> Result<(), ClientError> {
        self.0.upload_link(key, ndjson).await
    }
}
