//! Large `PUT /stream` bodies are bounded together: the bytes of every body being
//! read count against one service-wide budget, so writers that all flush a big
//! batch at once (or a peer that sends the headers of a big body and then stalls)
//! cannot make the service hold more than that budget.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, assert_error};
use reqwest::StatusCode;
use runlog_protocol::Scope;
use runlog_service::ServiceConfig;
use runlog_testkit::service::{TestService, test_config};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_BODY: usize = 1 << 20;

/// A JSON array of lines just under `MAX_BODY` bytes.
fn big_batch() -> Vec<u8> {
    let out = "x".repeat(900);
    let lines: Vec<_> = (0..1000)
        .map(|pos| serde_json::json!({"level": "info", "pos": pos, "out": out, "time": "2026-11-20T10:00:00.000Z", "args": {}}))
        .collect();
    let body = serde_json::to_vec(&lines).unwrap();
    assert!(body.len() > MAX_BODY * 9 / 10 && body.len() < MAX_BODY);
    body
}

/// A peer that sends a `PUT /stream` with the whole `Content-Length` declared but
/// only the first half of the body, and holds the rest back.
async fn start_stalled_put(svc: &TestService, api: &Api, key: &str, body: &[u8]) -> TcpStream {
    let mut conn = TcpStream::connect(svc.addr()).await.unwrap();
    let head = format!(
        "PUT /stream?accountID={}&key={key} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.account,
        svc.addr(),
        api.token,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..body.len() / 2]).await.unwrap();
    conn
}

/// The service's `runlog_body_bytes_in_flight` gauge.
async fn bytes_in_flight(svc: &TestService) -> usize {
    let text = reqwest::get(format!("{}/metrics", svc.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("runlog_body_bytes_in_flight "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn big_bodies_read_at_once_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        max_append_body: MAX_BODY,
        max_bodies_in_flight: 2 * MAX_BODY,
        body_budget_wait: Duration::from_millis(300),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let body = big_batch();

    let mut first = start_stalled_put(&svc, &api, "one", &body).await;
    let _second = start_stalled_put(&svc, &api, "two", &body).await;
    // Both bodies reserve their whole length before their first byte is read.
    let reserved = 2 * body.len().div_ceil(1024) * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bytes_in_flight(&svc).await < reserved {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two stalled bodies never reserved their bytes"
        );
        tokio::task::yield_now().await;
    }

    // A third big body finds no room: 429 with Retry-After, after its wait.
    let r = api.put_bytes("three", body.clone()).await;
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let msg = assert_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(msg.contains("request bodies"), "{msg}");
    assert!(bytes_in_flight(&svc).await <= 2 * MAX_BODY);

    // The first peer finishes its body: stored, and its bytes are given back.
    first.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = first.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Now the third fits.
    let r = api.put_bytes("three", body.clone()).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let ack: runlog_protocol::service::AppendAck = r.json().await.unwrap();
    assert_eq!(ack.next_pos, 1000);
    assert!(bytes_in_flight(&svc).await <= reserved / 2);
}

#[tokio::test]
async fn a_budget_below_one_body_is_raised_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        max_append_body: MAX_BODY,
        max_bodies_in_flight: 1024,
        ..test_config(dir.path())
    };
    assert_eq!(cfg.body_budget_bytes(), MAX_BODY);
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let r = api.put_bytes("k", big_batch()).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the largest body still gets through"
    );
    assert_eq!(bytes_in_flight(&svc).await, 0, "and gives its bytes back");
}
