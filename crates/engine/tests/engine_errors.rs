#![allow(clippy::unwrap_used)]
//! Bad requests get a clear JSON error and a fitting status; never a panic or a hang.

mod engine_support;

use engine_support::TestEngine;
use serde_json::json;

async fn raw(engine: &TestEngine, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(engine.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("errors are JSON"))
}

fn has_message(body: &serde_json::Value) -> bool {
    body["error_msg"].as_str().is_some_and(|m| !m.is_empty())
}

#[tokio::test]
async fn malformed_bodies_of_every_endpoint_get_400_with_a_message() {
    let engine = TestEngine::start().await;
    let wrong_types: [(&str, &[u8]); 4] = [
        ("/setup", b"{\"envs\": 5}"),
        ("/step", b"{\"id\": 5}"),
        ("/poll_step", b"{\"id\": [\"x\"]}"),
        ("/destroy", b"\"destroy\""),
    ];
    for (path, wrong_type) in wrong_types {
        for body in [
            &b"{"[..],
            b"[1,2]",
            b"\xff\xfe{}",
            b"null",
            b"{\"a\":1}}",
            wrong_type,
        ] {
            let (status, answer) = raw(&engine, path, body.to_vec()).await;
            assert_eq!(status, 400, "{path} {body:?}: {answer}");
            assert!(has_message(&answer), "{path}: {answer}");
        }
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn incomplete_or_unsafe_requests_get_400() {
    let engine = TestEngine::start().await;
    for bad in [
        json!({"files": [{"path": "../escape", "data": "x"}]}),
        json!({"files": [{"path": "/etc/evil", "data": "x"}]}),
        json!({"le_log_key": "../../k"}),
        json!({"working_dir": "../.."}),
        json!({"envs": "not a map"}),
    ] {
        let (status, answer) = engine.post("/setup", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(has_message(&answer));
    }
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    for bad in [
        json!({"script": "true"}),
        json!({"id": "", "script": "true"}),
        json!({"id": "../x", "script": "true"}),
        json!({"id": "a"}),
        json!({"id": "a", "script": "true", "command": "true"}),
        json!({"id": "a", "command": []}),
        json!({"id": "a", "script": "true", "log_key": "/abs"}),
        json!({"id": "a", "script": "true", "working_dir": "../../.."}),
        json!({"id": "a", "script": "true", "timeout": "soon"}),
    ] {
        let (status, answer) = engine.post("/step", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(has_message(&answer));
    }
    let (status, answer) = engine.post("/poll_step", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    engine.shutdown().await;
}

#[tokio::test]
async fn conflicts_get_409_and_unknown_steps_400() {
    let engine = TestEngine::start().await;
    let (status, answer) = engine
        .post("/step", json!({"id": "a", "script": "true"}))
        .await;
    assert_eq!(status, 409, "no stage yet: {answer}");
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    // The same setup again is a retry, answered as the first; another is a conflict.
    assert_eq!(engine.post("/setup", json!({})).await, (200, json!({})));
    let (status, answer) = engine.post("/setup", json!({"envs": {"A": "1"}})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(has_message(&answer));
    assert_eq!(
        engine
            .post("/step", json!({"id": "a", "command": ["true"]}))
            .await
            .0,
        200
    );
    let (status, answer) = engine
        .post("/step", json!({"id": "a", "script": "true"}))
        .await;
    assert_eq!(status, 409, "{answer}");
    // lite-engine's status for a step that has not started.
    let (status, answer) = engine.post("/poll_step", json!({"id": "nope"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(has_message(&answer));
    let resp = reqwest::get(engine.url("/no/such/path")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_huge_body_is_refused_with_413() {
    let engine = TestEngine::start_with(|c| c.max_body = 1024).await;
    let big = format!(
        "{{\"files\":[{{\"path\":\"a\",\"data\":\"{}\"}}]}}",
        "x".repeat(4096)
    );
    let (status, answer) = raw(&engine, "/setup", big.into_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(has_message(&answer));
    engine.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_request_must_carry_it() {
    let engine = TestEngine::start_with(|c| c.token = Some("engine-token".into())).await;
    let client = reqwest::Client::new();
    let no = client.get(engine.url("/healthz")).send().await.unwrap();
    assert_eq!(no.status().as_u16(), 401);
    let body: serde_json::Value = no.json().await.unwrap();
    assert!(has_message(&body));
    let wrong = client
        .post(engine.url("/setup"))
        .bearer_auth("nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(
        engine.state.stage().is_none(),
        "a refused setup changes nothing"
    );
    let right = client
        .get(engine.url("/healthz"))
        .bearer_auth("engine-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    let health: serde_json::Value = right.json().await.unwrap();
    assert_eq!(health["ok"], true);
    // Read as the log service reads it: the scheme in any case; another scheme, or a
    // header the engine does not take, is a JSON 401.
    let lower = client
        .get(engine.url("/healthz"))
        .header("authorization", "bearer engine-token")
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);
    for (name, value) in [
        ("authorization", "Basic ZW5naW5lLXRva2Vu"),
        ("x-harness-token", "engine-token"),
    ] {
        let refused = client
            .get(engine.url("/healthz"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{name}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(has_message(&body), "{body}");
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = engine_support::test_config(dir.path());
    config.addr = "0.0.0.0:0".parse().unwrap();
    let err = runlog_engine::bind(&config).await.expect_err("must refuse");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("token"), "{err}");
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let engine = TestEngine::start().await;
    let health: serde_json::Value = reqwest::get(engine.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    engine.post("/setup", json!({})).await;
    engine
        .post("/step", json!({"id": "x", "script": "exit 1"}))
        .await;
    let text = reqwest::get(engine.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("runlog_engine_steps_started_total 1"),
        "{text}"
    );
    assert!(
        text.contains("runlog_engine_steps_failed_total 1"),
        "{text}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_request_is_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let engine = TestEngine::start_with(|c| {
        c.connection_limits.header_read_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut idle = tokio::net::TcpStream::connect(engine.addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(engine.addr).await.unwrap();
    half.write_all(b"POST /step HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    for conn in [&mut idle, &mut half] {
        let mut got = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            conn.read_to_end(&mut got),
        )
        .await;
        assert!(closed.is_ok(), "the engine kept a silent connection open");
    }
    // The engine still answers everyone else.
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    engine.shutdown().await;
}

#[tokio::test]
async fn steps_past_the_cap_are_refused_with_429_until_one_ends() {
    let engine = TestEngine::start_with(|c| c.max_steps = 2).await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let marker = engine.scratch.path().join("release");
    let wait = format!("while [ ! -e '{}' ]; do sleep 0.05; done", marker.display());
    for id in ["a", "b"] {
        let (status, answer) = engine
            .post("/step", json!({"id": id, "script": wait, "detach": true}))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = engine
        .post("/step", json!({"id": "c", "script": "true"}))
        .await;
    assert_eq!(status, 429, "{answer}");
    assert!(has_message(&answer) && answer["error_msg"].as_str().unwrap().contains("2 steps"));
    std::fs::write(&marker, b"").unwrap();
    for id in ["a", "b"] {
        let (status, answer) = engine.post("/poll_step", json!({"id": id})).await;
        assert_eq!((status, &answer["exit_code"]), (200, &json!(0)), "{answer}");
    }
    // A slot is free once a step's stream is closed: poll answers before that, so the
    // next step may need a moment.
    let ran = engine_support::eventually(std::time::Duration::from_secs(10), async || {
        engine
            .post("/step", json!({"id": "c", "script": "true"}))
            .await
            .0
            == 200
    })
    .await;
    assert!(ran, "a step was still refused after the others ended");
    engine.shutdown().await;
}

/// 100 steps at once open many connections to the log service; once they ended the
/// stage's client keeps at most 16 of them idle, and drops those after 20 s idle
/// (`livelog::HttpLogClient`). Counted by a TCP forwarder in front of the service.
#[tokio::test]
async fn after_100_concurrent_steps_at_most_16_idle_connections_stay_and_then_none() {
    use runlog_protocol::Scope;
    use runlog_testkit::{forward::Forwarder, service::TestService};
    use std::time::Duration;

    let svc = TestService::start().await;
    let fwd = Forwarder::start(svc.addr()).await;
    let engine = TestEngine::start().await;
    let log_config = json!({
        "url": fwd.url(),
        "account_id": "acc",
        "token": svc.token("acc", Scope::Write),
    });
    let (status, answer) = engine
        .post("/setup", json!({"log_config": log_config}))
        .await;
    assert_eq!(status, 200, "{answer}");
    // Every step holds its stream open until all have started, so their writers'
    // requests overlap.
    let marker = engine.scratch.path().join("release");
    let script = format!(
        "echo started; while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
        marker.display()
    );
    for i in 0..100 {
        let (status, answer) = engine
            .post(
                "/step",
                json!({"id": format!("s{i}"), "script": script, "detach": true, "log_key": format!("idle/s{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    std::fs::write(&marker, b"").unwrap();
    let polls = (0..100).map(|i| engine.post("/poll_step", json!({"id": format!("s{i}")})));
    for (status, answer) in futures_util::future::join_all(polls).await {
        assert_eq!((status, &answer["exit_code"]), (200, &json!(0)), "{answer}");
    }
    // The stage (and its client) lives on; once the service lists every stream
    // closed and archived, no writer has a request in flight.
    let read = svc.token("acc", Scope::Read);
    let all_closed = engine_support::eventually(Duration::from_secs(20), async || {
        let list: Vec<serde_json::Value> = reqwest::Client::new()
            .get(format!("{}/streams?accountID=acc", svc.url()))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list.len() == 100
            && list
                .iter()
                .all(|s| s["open"] == false && s["archived"] == true)
    })
    .await;
    assert!(
        all_closed,
        "the steps' streams were not all closed and archived"
    );
    assert!(
        fwd.connections() > 16,
        "the steps never needed more than 16 connections ({}), so the cap was not exercised",
        fwd.connections()
    );
    let capped = engine_support::eventually(Duration::from_secs(5), async || {
        fwd.open_connections() <= 16
    })
    .await;
    assert!(
        capped,
        "{} connections stayed open after the steps ended",
        fwd.open_connections()
    );
    let dropped = engine_support::eventually(Duration::from_secs(30), async || {
        fwd.open_connections() == 0
    })
    .await;
    assert!(
        dropped,
        "{} idle connections outlived the idle timeout",
        fwd.open_connections()
    );
    engine.shutdown().await;
}
