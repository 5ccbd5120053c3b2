//! Open → write → tail → close → archive, against a real service over HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, SseReader, line, lines};
use reqwest::StatusCode;
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use std::io::{Read, Write};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn written_lines_are_tailed_live_and_archived_on_snapshot_close() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("job/step-1").await;
    api.put_ok("job/step-1", &lines(0..3)).await;

    let resp = api.tail("job/step-1", None).await;
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut sse = SseReader::new(resp);
    sse.read_until(WAIT, |s| s.line_positions().len() == 3)
        .await;
    // Live: lines written after the viewer connected arrive too.
    api.put_ok("job/step-1", &lines(3..5)).await;
    sse.read_until(WAIT, |s| s.line_positions().len() == 5)
        .await;
    api.close("job/step-1", true).await;
    sse.read_to_end(WAIT).await;
    assert_eq!(sse.line_positions(), vec![0, 1, 2, 3, 4]);
    assert!(sse.saw_eof(), "stream ends with an eof event");
    let first: serde_json::Value = serde_json::from_str(&sse.events[0].data).unwrap();
    assert_eq!(first, line(0));

    let blob = api
        .req(reqwest::Method::GET, "/blob", "job/step-1")
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), StatusCode::OK);
    let text = blob.text().await.unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows, lines(0..5));
}

#[tokio::test]
async fn retried_batch_is_stored_once_and_gaps_fill_in_order() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let ack = api.put_ok("k", &lines(0..10)).await;
    assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (10, 0, 10));
    let ack = api.put_ok("k", &lines(0..10)).await;
    assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (0, 10, 10));
    // Out of order with a gap: 15 and 12 arrive before 10, 11, 13, 14.
    let ack = api.put_ok("k", &[line(15), line(12)]).await;
    assert_eq!((ack.appended, ack.last_contiguous_pos), (2, Some(9)));
    let ack = api
        .put_ok("k", &[line(14), line(10), line(13), line(11), line(12)])
        .await;
    assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (4, 1, 16));

    // A resent pos never replaces what was stored first.
    let mut changed = line(3);
    changed["out"] = "changed\n".into();
    assert_eq!(api.put_ok("k", &[changed]).await.duplicates, 1);

    api.close("k", true).await;
    let mut sse = SseReader::new(api.tail("k", None).await);
    sse.read_to_end(WAIT).await;
    assert_eq!(sse.line_positions(), (0..16).collect::<Vec<_>>());
    let third: serde_json::Value = serde_json::from_str(&sse.events[3].data).unwrap();
    assert_eq!(third, line(3));
}

#[tokio::test]
async fn late_viewer_gets_all_200_000_lines_from_line_0() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("big").await;
    for start in (0..200_000u64).step_by(5_000) {
        api.put_ok("big", &lines(start..start + 5_000)).await;
    }
    api.close("big", false).await;
    let mut sse = SseReader::new(api.tail("big", None).await);
    sse.read_to_end(Duration::from_secs(120)).await;
    let got = sse.line_positions();
    assert_eq!(got.len(), 200_000);
    assert!(
        got.iter().enumerate().all(|(i, &p)| p == i as u64),
        "lines in pos order from 0"
    );
    assert!(sse.saw_eof());
}

#[tokio::test]
async fn last_event_id_resumes_after_that_line() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..50)).await;
    let mut sse = SseReader::new(api.tail("k", Some(41)).await);
    sse.read_until(WAIT, |s| s.line_positions().len() == 8)
        .await;
    assert_eq!(sse.line_positions(), (42..50).collect::<Vec<_>>());
    api.put_ok("k", &lines(50..52)).await;
    sse.read_until(WAIT, |s| s.line_positions().len() == 10)
        .await;
    assert_eq!(sse.line_positions().last(), Some(&51));
}

#[tokio::test]
async fn closed_and_removed_stream_is_replayed_from_its_archive() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..20)).await;
    api.close("k", true).await;
    let id = runlog_service::store::StreamId {
        account: "acc".parse().unwrap(),
        key: "k".parse().unwrap(),
    };
    svc.state().streams().remove(&id).await.unwrap();
    let mut sse = SseReader::new(api.tail("k", Some(9)).await);
    sse.read_to_end(WAIT).await;
    assert_eq!(sse.line_positions(), (10..20).collect::<Vec<_>>());
    assert!(sse.saw_eof());
}

#[tokio::test]
async fn hundred_concurrent_writers_on_hundred_keys_lose_nothing() {
    let svc = TestService::start().await;
    let api = std::sync::Arc::new(Api::new(&svc, "acc", Scope::Write));
    let mut tasks = Vec::new();
    for w in 0..100 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("w/{w}");
            api.open(&key).await;
            for start in (0..1_000u64).step_by(100) {
                api.put_ok(&key, &lines(start..start + 100)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for w in 0..100 {
        let id = runlog_service::store::StreamId {
            account: "acc".parse().unwrap(),
            key: format!("w/{w}").parse().unwrap(),
        };
        let meta = svc.state().streams().meta(&id).await.unwrap();
        assert_eq!(
            (meta.lines, meta.last_contiguous_pos),
            (1_000, Some(999)),
            "key w/{w}"
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_archive_in_and_out() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let ndjson: String = lines(0..100).iter().map(|l| format!("{l}\n")).collect();
    let r = api
        .req(reqwest::Method::POST, "/blob", "gz")
        .header("Content-Encoding", "gzip")
        .body(gzip(ndjson.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .req(reqwest::Method::POST, "/blob", "plain")
        .body(ndjson.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    for key in ["gz", "plain"] {
        let r = api
            .req(reqwest::Method::GET, "/blob", key)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        let gz = r.bytes().await.unwrap();
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, ndjson, "gzip download of {key}");
        let r = api
            .req(reqwest::Method::GET, "/blob", key)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(r.text().await.unwrap(), ndjson, "plain download of {key}");
    }
    // Stored compressed on disk.
    let on_disk = std::fs::read(svc.data_dir().join("archives/acc/plain.ndjson.gz")).unwrap();
    assert_eq!(&on_disk[..2], &[0x1f, 0x8b]);
    assert!(on_disk.len() < ndjson.len());
}

#[tokio::test]
async fn upload_link_accepts_a_put_of_the_archive_without_a_token() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let r = api
        .req(reqwest::Method::POST, "/blob/link/upload", "linked")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let link: runlog_protocol::service::LinkResponse = r.json().await.unwrap();
    let ndjson = format!("{}\n", line(0));
    let r = api
        .http
        .put(&link.link)
        .body(ndjson.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = archive_text(&api, "linked").await;
    assert_eq!(got, ndjson);
    // The link is bound to its key: pointing it at another key is refused.
    let forged = link.link.replace("key=linked", "key=other");
    let r = api
        .http
        .put(&forged)
        .body(ndjson.clone())
        .send()
        .await
        .unwrap();
    common::assert_error(r, StatusCode::UNAUTHORIZED).await;
    // It accepts one archive: a second PUT is refused and the archive stays.
    let r = api
        .http
        .put(&link.link)
        .body(format!("{}\n", line(7)))
        .send()
        .await
        .unwrap();
    assert!(
        common::assert_error(r, StatusCode::CONFLICT)
            .await
            .contains("used already")
    );
    let kept = archive_text(&api, "linked").await;
    assert_eq!(kept, ndjson);
}

/// The archive of `key`, as text.
async fn archive_text(api: &Api, key: &str) -> String {
    api.req(reqwest::Method::GET, "/blob", key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A new upload link for `key`.
async fn new_link(api: &Api, key: &str) -> runlog_protocol::service::LinkResponse {
    api.req(reqwest::Method::POST, "/blob/link/upload", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_link_whose_body_was_refused_can_be_used_again() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let link = new_link(&api, "retried").await;
    let r = api
        .http
        .put(&link.link)
        .body("not ndjson\n")
        .send()
        .await
        .unwrap();
    common::assert_error(r, StatusCode::BAD_REQUEST).await;
    let ndjson = format!("{}\n", line(0));
    let r = api.http.put(&link.link).body(ndjson).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Two links for the same key are two links: each takes its one archive.
    let other = new_link(&api, "retried").await;
    assert_ne!(other.link, link.link);
    let r = api
        .http
        .put(&other.link)
        .body(format!("{}\n", line(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
