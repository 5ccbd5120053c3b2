//! Archive once: a runlog service that holds every line builds the archive from its
//! own lines at close, and the writer uploads its history only when the service
//! lacks some of it — also when it lost lines after acknowledging them.
#![allow(clippy::unwrap_used)]

mod support;

use livelog::{LogClient, Writer, WriterConfig};
use runlog_protocol::Scope;
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::*;

fn text(i: u64) -> String {
    format!("line {i:05} of a stream archived once\n")
}

fn counting(url: &str, token: &str) -> (Arc<dyn LogClient>, Arc<AtomicU64>) {
    let c = CountingUploads::new(client(url, token), true);
    let uploads = c.uploads.clone();
    (Arc::new(c), uploads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_service_holds_whole_is_archived_without_an_upload() {
    const N: u64 = 3_000;
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let spool = tempfile::tempdir().unwrap();
    let key = "once/whole";
    let (c, uploads) = counting(&svc.url(), &token);
    let w = Writer::new(c, config(key, spool.path()));
    for i in 0..N {
        w.write(text(i).as_bytes());
    }
    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(uploads.load(Ordering::SeqCst), 0, "no upload was needed");
    let archive = fetch_archive(&svc.url(), &token, key).await.unwrap();
    assert_exactly_once_in_order("archive built by the service", &archive, N, text);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_service_lost_after_acknowledging_them_are_uploaded_at_close() {
    const N: u64 = 2_000;
    const KEPT: u64 = 10;
    let mut svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    // Through a proxy, so the restarted service (on a new port) is reached at the
    // same address.
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "once/lost";
    let (c, uploads) = counting(&proxy.url(), &token);
    let w = Writer::new(c, config(key, spool.path()));
    for i in 0..N {
        w.write(text(i).as_bytes());
    }
    wait_until("every line acknowledged", Duration::from_secs(30), || {
        w.progress().streamed_lines == N
    })
    .await;

    // The embedded memory store restarts and comes back holding only the stream's
    // first lines (as a Redis replica promoted before the rest reached it would):
    // every line was acknowledged, most are gone.
    let url = svc.restart().await;
    proxy.set_upstream(&url);
    open_stream(&url, &token, key).await;
    let first: Vec<serde_json::Value> = (0..KEPT)
        .map(|i| serde_json::json!({"level": "info", "pos": i, "out": text(i), "time": "2026-01-01T00:00:00Z"}))
        .collect();
    let put = reqwest::Client::new()
        .put(format!("{url}/stream?accountID={ACCOUNT}&key={key}"))
        .bearer_auth(&token)
        .json(&first)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(
        uploads.load(Ordering::SeqCst),
        1,
        "the writer saw the service's ledger fall short and uploaded"
    );
    let archive = fetch_archive(&url, &token, key).await.unwrap();
    assert_exactly_once_in_order("archive after the loss", &archive, N, text);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_lost_the_whole_stream_gets_the_upload() {
    const N: u64 = 500;
    let mut svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    let spool = tempfile::tempdir().unwrap();
    let key = "once/gone";
    let (c, uploads) = counting(&proxy.url(), &token);
    let cfg = WriterConfig {
        max_retry_delay: Duration::from_millis(100),
        ..config(key, spool.path())
    };
    let w = Writer::new(c, cfg);
    for i in 0..N {
        w.write(text(i).as_bytes());
    }
    wait_until("every line acknowledged", Duration::from_secs(30), || {
        w.progress().streamed_lines == N
    })
    .await;
    let url = svc.restart().await;
    proxy.set_upstream(&url);

    let report = w.close().await;
    assert!(report.archived, "{report:?}");
    assert_eq!(uploads.load(Ordering::SeqCst), 1);
    let archive = fetch_archive(&url, &token, key).await.unwrap();
    assert_exactly_once_in_order("archive after the restart", &archive, N, text);
    svc.shutdown().await;
}
