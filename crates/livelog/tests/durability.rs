//! Durability against a service that lost a stream and a process that was killed:
//! the live stream gets every line again after a restart, and a spool left behind
//! by a dead writer is delivered at the next start.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::{Writer, WriterConfig};
use runlog_protocol::Scope;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::time::Duration;
use support::*;

fn text(i: u64) -> String {
    format!("line {i:05} of the resumed stream\n")
}

/// Polls `done` until it holds or `limit` passes.
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
        max_retry_delay: Duration::from_millis(100),
        queue_max_bytes,
        max_batch_lines: 50,
        ..config(key, spool.path())
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
    // The old service archived the stream when it shut down, and a tail of a key with
    // no live stream replays that archive (0..before) and ends: tail only once the
    // writer has opened the stream again on the new service.
    let listed = format!("{url}/streams?accountID={ACCOUNT}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let streams: Vec<serde_json::Value> = reqwest::Client::new()
            .get(&listed)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if streams.iter().any(|s| s["key"] == key && s["open"] == true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer did not reopen the stream: {streams:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

fn files_named(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_spool_is_delivered_by_the_next_start() {
    const N: u64 = 400;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let data = tempfile::tempdir().unwrap();
    let (spool, outbox) = (data.path().join("spool"), data.path().join("outbox"));
    let key = "durability/killed";

    // The "process" that dies: its own runtime, dropped without close(), so the
    // writer's tasks vanish mid-stream and nothing runs the close path.
    let dead = std::thread::spawn({
        let (url, token, spool, outbox) = (svc.url(), token.clone(), spool.clone(), outbox.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let w = rt.block_on(async {
                let cfg = WriterConfig {
                    spool_dir: spool,
                    outbox_dir: Some(outbox),
                    ..WriterConfig::new(key)
                };
                let w = Writer::new(client(&url, &token), cfg);
                for i in 0..N {
                    w.write(text(i).as_bytes());
                }
                wait_until("lines streamed", Duration::from_secs(30), || {
                    w.progress().streamed_lines == N
                })
                .await;
                w
            });
            drop(rt);
            // Outside any runtime: no background close; the lock goes with the writer.
            drop(w);
        }
    });
    dead.join().unwrap();
    assert_eq!(
        files_named(&spool, ".ndjson").len(),
        1,
        "the spool is left behind"
    );
    assert_eq!(files_named(&outbox, ".recover.json").len(), 1);
    assert!(fetch_archive(&svc.url(), &token, key).await.is_none());

    let report = livelog::deliver_outbox(&outbox).await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive of the dead writer", &archive, N, text);
    // The stream was closed for it: a tail ends.
    let live = tail_until_eof(&svc.url(), &token, key, Duration::from_secs(30)).await;
    assert_eq!(live.len() as u64, N);
    assert!(files_named(&spool, ".ndjson").is_empty());
    assert!(files_named(&outbox, ".recover.json").is_empty());
    assert_eq!(
        livelog::deliver_outbox(&outbox).await.delivered,
        0,
        "delivered once"
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_writers_spool_is_never_picked_up() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let data = tempfile::tempdir().unwrap();
    let (spool, outbox) = (data.path().join("spool"), data.path().join("outbox"));
    let key = "durability/alive";
    let cfg = WriterConfig {
        spool_dir: spool.clone(),
        outbox_dir: Some(outbox.clone()),
        ..WriterConfig::new(key)
    };
    let w = Writer::new(client(&svc.url(), &token), cfg);
    for i in 0..100 {
        w.write(text(i).as_bytes());
    }
    // A start-up pass while the writer lives (same process: the lock still counts).
    let report = livelog::deliver_outbox(&outbox).await;
    assert_eq!(report, livelog::OutboxReport::default());
    assert_eq!(
        files_named(&spool, ".ndjson").len(),
        1,
        "the live spool was taken"
    );
    assert!(fetch_archive(&svc.url(), &token, key).await.is_none());

    for i in 100..200 {
        w.write(text(i).as_bytes());
    }
    let closed = w.close().await;
    assert!(closed.archived, "{closed:?}");
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive of the live writer", &archive, 200, text);
    assert!(
        files_named(&outbox, ".recover.json").is_empty(),
        "record left after close"
    );
    svc.shutdown().await;
}

/// A writer with `skip_closing_stream` uploads no archive, so a spool its dead process
/// left is delivered as lines: the whole history again (what reached the live stream
/// is not recorded), which runlog's service keeps once per `pos`; nothing is uploaded
/// and the stream stays open for whoever closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_skip_closing_writers_lines_are_sent_again_and_nothing_is_uploaded() {
    const N: u64 = 400;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    // The writer goes through a proxy, so the service can become unreachable for it
    // half-way: the second half never reaches the live stream before the "kill".
    let proxy = std::sync::Arc::new(FaultProxy::start(&svc.url(), Faults::none(), 1).await);
    let dead_end = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let data = tempfile::tempdir().unwrap();
    let (spool, outbox) = (data.path().join("spool"), data.path().join("outbox"));
    let key = "durability/killed-skip-closing";

    // The "process" that dies, as in the test above.
    let dead = std::thread::spawn({
        let (url, token, spool, outbox) =
            (proxy.url(), token.clone(), spool.clone(), outbox.clone());
        let proxy = proxy.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let w = rt.block_on(async {
                let cfg = WriterConfig {
                    spool_dir: spool,
                    outbox_dir: Some(outbox),
                    skip_closing_stream: true,
                    max_retry_delay: Duration::from_millis(50),
                    ..WriterConfig::new(key)
                };
                let w = Writer::new(client(&url, &token), cfg);
                for i in 0..N / 2 {
                    w.write(text(i).as_bytes());
                }
                wait_until("first half streamed", Duration::from_secs(30), || {
                    w.progress().streamed_lines == N / 2
                })
                .await;
                proxy.set_upstream(&dead_end);
                for i in N / 2..N {
                    w.write(text(i).as_bytes());
                }
                // The sender tries (and fails) to send the second half for a while.
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(w.progress().streamed_lines, N / 2);
                w
            });
            drop(rt);
            // Outside any runtime: no background close; the lock goes with the writer.
            drop(w);
        }
    });
    dead.join().unwrap();
    proxy.set_upstream(&svc.url());

    let report = livelog::deliver_outbox(&outbox).await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let live = tail_n(&svc.url(), &token, key, N as usize, Duration::from_secs(30)).await;
    assert_exactly_once_in_order("live stream of the dead writer", &live, N, text);
    assert!(
        fetch_archive(&svc.url(), &token, key).await.is_none(),
        "no archive upload with skip_closing_stream"
    );
    let listed: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/streams?accountID={ACCOUNT}", svc.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed.iter().any(|s| s["key"] == key && s["open"] == true),
        "the stream stays open: {listed:?}"
    );
    assert!(files_named(&outbox, ".recover.json").is_empty());
    svc.shutdown().await;
}
