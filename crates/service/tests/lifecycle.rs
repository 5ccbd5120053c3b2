//! Slow viewers, expiry, restart and shutdown: the service's behaviour over time.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, SseReader, lines};
use reqwest::{Method, StatusCode};
use runlog_protocol::Scope;
use runlog_service::store::StreamId;
use runlog_testkit::service::{TestService, test_config};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn id(key: &str) -> StreamId {
    StreamId {
        account: "acc".parse().unwrap(),
        key: key.parse().unwrap(),
    }
}

/// Polls `cond` until it holds, failing after `deadline`.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stalled_sse_reader_does_not_block_a_writer_and_catches_up_later() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    // Connected, but not reading: its socket buffers fill and stay full.
    let stalled = api.tail("k", None).await;
    let writer = async {
        for start in (0..200_000u64).step_by(2_000) {
            api.put_ok("k", &lines(start..start + 2_000)).await;
        }
    };
    tokio::time::timeout(WAIT, writer)
        .await
        .expect("writer finished while the viewer was stalled");
    api.close("k", false).await;
    assert_every_line_then_eof(stalled, 200_000, "the stalled viewer").await;
}

/// Reads the SSE response to its end: exactly lines `0..n` in order, then `eof`.
async fn assert_every_line_then_eof(resp: reqwest::Response, n: u64, what: &str) {
    let mut sse = SseReader::new(resp);
    sse.read_to_end(WAIT).await;
    let got = sse.line_positions();
    assert_eq!(got.len() as u64, n, "{what}: wrong number of lines");
    assert!(
        got.iter().enumerate().all(|(i, &p)| p == i as u64),
        "{what}: lines out of order"
    );
    assert!(sse.saw_eof(), "{what}: no eof");
}

/// Waits until the service's sweep has removed stream `key`.
async fn wait_removed(svc: &TestService, key: &str) {
    let streams = svc.state().streams().clone();
    eventually(WAIT, &format!("stream {key} removed"), || {
        let streams = streams.clone();
        async move { streams.meta(&id(key)).await.is_err() }
    })
    .await;
}

#[tokio::test]
async fn a_viewer_behind_when_its_stream_expires_still_gets_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = runlog_service::ServiceConfig {
        closed_retention: Duration::from_millis(100),
        sweep_interval: Duration::from_millis(50),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("expiring").await;
    for start in (0..200_000u64).step_by(2_000) {
        api.put_ok("expiring", &lines(start..start + 2_000)).await;
    }
    // Connected, not reading yet: far more is left to send than socket buffers hold.
    let behind = api.tail("expiring", None).await;
    api.close("expiring", false).await;
    wait_removed(&svc, "expiring").await;
    assert_every_line_then_eof(behind, 200_000, "the viewer behind at the expiry").await;
}

#[tokio::test]
async fn idle_stream_expires_into_its_archive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = runlog_service::ServiceConfig {
        idle_timeout: Duration::from_millis(200),
        sweep_interval: Duration::from_millis(50),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("idle").await;
    api.put_ok("idle", &lines(0..25)).await;
    wait_removed(&svc, "idle").await;
    let archive = api.archive("idle").await;
    assert_eq!(archive.lines().count(), 25);
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("runlog_streams_expired_total 1"), "{text}");
}

#[tokio::test]
async fn restart_keeps_archives_and_tokens() {
    let mut svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..40)).await;
    api.close("k", true).await;
    let token = api.token.clone();

    let url = svc.restart().await;
    let api = Api {
        base: url,
        token,
        ..api
    };
    // A token minted before the restart still works.
    assert_eq!(api.archive("k").await.lines().count(), 40);
    // A viewer arriving after the restart replays the archive.
    let mut sse = SseReader::new(api.tail("k", None).await);
    sse.read_to_end(WAIT).await;
    assert_eq!(sse.line_positions(), (0..40).collect::<Vec<_>>());
    let list: Vec<runlog_protocol::service::StreamInfo> = api
        .http
        .get(format!("{}/streams?accountID=acc", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].archived && !list[0].open);
}

#[tokio::test]
async fn restart_archives_lines_that_were_only_in_memory() {
    let mut svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("live").await;
    api.put_ok("live", &lines(0..30)).await;
    let url = svc.restart().await;
    let api = Api { base: url, ..api };
    assert_eq!(api.archive("live").await.lines().count(), 30);
}

#[tokio::test]
async fn idle_viewer_gets_ping_comments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = runlog_service::ServiceConfig {
        ping_interval: Duration::from_millis(50),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("quiet").await;
    let mut sse = SseReader::new(api.tail("quiet", None).await);
    sse.read_until(WAIT, |s| s.comments >= 2).await;
    assert!(sse.events.is_empty());
}

#[tokio::test]
async fn shutdown_ends_open_sse_streams() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..3)).await;
    let mut sse = SseReader::new(api.tail("k", None).await);
    sse.read_until(WAIT, |s| s.line_positions().len() == 3)
        .await;
    // Would hang (and the fixture panic after 30 s) if the open tail kept the
    // server alive.
    svc.shutdown().await;
    sse.read_to_end(WAIT).await;
    assert!(sse.ended);
}

#[tokio::test]
async fn streams_list_is_newest_first_and_per_account() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    for key in ["first", "second", "third"] {
        api.open(key).await;
        api.put_ok(key, &lines(0..2)).await;
    }
    Api::new(&svc, "other", Scope::Write)
        .open("elsewhere")
        .await;
    let list: Vec<runlog_protocol::service::StreamInfo> = api
        .http
        .get(format!("{}/streams?accountID=acc", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = list.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec!["third", "second", "first"]);
    assert!(list.iter().all(|s| s.open && s.lines == 2));
}

/// `POST /stream` says where a writer continues a stream: 0 for a new one, past the
/// lines held once a first writer closed it (a reused key).
#[tokio::test]
async fn open_answers_the_next_pos_of_a_stream_that_holds_lines() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let next_pos = async |key: &str| -> serde_json::Value {
        let r = api.req(Method::POST, "/stream", key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<serde_json::Value>().await.unwrap()["next_pos"].clone()
    };
    assert_eq!(next_pos("reused").await, serde_json::json!(0));
    api.put_ok("reused", &lines(0..3)).await;
    api.close("reused", false).await;
    assert_eq!(next_pos("reused").await, serde_json::json!(3));
}
