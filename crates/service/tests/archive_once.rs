//! `DELETE /stream?…&archive=if_complete` over real HTTP: the service builds the
//! archive from its own lines only when the writer's totals prove them complete, and
//! its answer's `archived` tells the writer whether it must still upload.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, assert_error, lines};
use reqwest::{Method, StatusCode};
use runlog_protocol::Scope;
use runlog_protocol::ledger::LineDigest;
use runlog_protocol::service::StreamInfo;
use runlog_testkit::service::TestService;

fn digest_of(lines: &[serde_json::Value]) -> String {
    let mut d = LineDigest::default();
    for l in lines {
        d.line(l["out"].as_str().unwrap());
    }
    d.finish()
}

async fn close_if_complete(api: &Api, key: &str, totals: &str) -> reqwest::Response {
    let url = format!("{}&archive=if_complete&{totals}", api.url("/stream", key));
    reqwest::Client::new()
        .delete(url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
}

async fn archive_status(api: &Api, key: &str) -> StatusCode {
    api.req(Method::GET, "/blob", key)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_stream_proven_complete_is_archived_from_the_held_lines() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let all = lines(0..50);
    api.put_ok("k", &all).await;
    let r = close_if_complete(&api, "k", &format!("lines=50&digest={}", digest_of(&all))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let info: StreamInfo = r.json().await.unwrap();
    assert!(info.archived && !info.open, "{info:?}");
    let archive = api.archive("k").await;
    assert_eq!(archive.lines().count(), 50);
}

#[tokio::test]
async fn a_stream_short_of_the_writers_totals_is_left_to_the_upload() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let all = lines(0..50);
    // Lines the service lost after acknowledging them: it holds 40 of 50.
    api.open("short").await;
    api.put_ok("short", &all[..40]).await;
    let r = close_if_complete(
        &api,
        "short",
        &format!("lines=50&digest={}", digest_of(&all)),
    )
    .await;
    let info: StreamInfo = r.json().await.unwrap();
    assert!(!info.archived && !info.open, "{info:?}");
    assert_eq!(archive_status(&api, "short").await, StatusCode::NOT_FOUND);

    // Every line held, but another text under the same numbers.
    api.open("other").await;
    api.put_ok("other", &all).await;
    let mut wrong = all.clone();
    wrong[7]["out"] = "not what the service holds\n".into();
    let r = close_if_complete(
        &api,
        "other",
        &format!("lines=50&digest={}", digest_of(&wrong)),
    )
    .await;
    let info: StreamInfo = r.json().await.unwrap();
    assert!(!info.archived, "{info:?}");
    assert_eq!(archive_status(&api, "other").await, StatusCode::NOT_FOUND);

    // A count alone proves no text.
    api.open("count").await;
    api.put_ok("count", &all).await;
    let info: StreamInfo = close_if_complete(&api, "count", "lines=50")
        .await
        .json()
        .await
        .unwrap();
    assert!(!info.archived, "{info:?}");
}

#[tokio::test]
async fn an_unknown_archive_mode_is_refused() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let url = format!("{}&archive=always", api.url("/stream", "k"));
    let r = reqwest::Client::new()
        .delete(url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let msg = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("if_complete"), "{msg}");
}

#[tokio::test]
async fn uploads_are_counted_apart_from_the_archives_the_service_builds() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let all = lines(0..20);
    api.open("built").await;
    api.put_ok("built", &all).await;
    let info: StreamInfo = close_if_complete(
        &api,
        "built",
        &format!("lines=20&digest={}", digest_of(&all)),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(info.archived, "{info:?}");
    assert_eq!(api.metric("runlog_archives_written_total").await, 1);
    assert_eq!(api.metric("runlog_archives_uploaded_total").await, 0);

    let body: String = all.iter().map(|l| format!("{l}\n")).collect();
    let r = api
        .req(Method::POST, "/blob", "sent")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(api.metric("runlog_archives_written_total").await, 2);
    assert_eq!(api.metric("runlog_archives_uploaded_total").await, 1);
}
