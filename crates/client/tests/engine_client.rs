#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `EngineClient` against a server on 127.0.0.1 that answers what a test tells it:
//! what each call sends, and how each kind of failure is reported.

use runlog_client::{EngineClient, EngineError};
use runlog_protocol::engine::{LogConfig, SetupRequest, StepCommand, StepRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the server read it.
struct Seen {
    head: String,
    body: serde_json::Value,
}

/// Serves one connection: reads one request, answers `status` with `body`, and
/// hands back what it read.
async fn answer_once(status: &str, body: &str) -> (String, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut r = BufReader::new(tcp);
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
        r.get_mut().write_all(reply.as_bytes()).await.unwrap();
        Seen {
            head,
            body: serde_json::from_slice(&body).unwrap(),
        }
    });
    (url, task)
}

#[tokio::test]
async fn setup_and_step_send_the_protocol_types_with_the_engine_token() {
    let (url, seen) = answer_once("200 OK", "{}").await;
    let engine = EngineClient::new(&url, Some("engine-token".into()));
    engine
        .setup(&SetupRequest {
            le_log_key: Some("run/engine".into()),
            log_config: LogConfig {
                url: "http://logs".into(),
                account_id: "acme".into(),
                token: "t".into(),
                indirect_upload: true,
                ..LogConfig::default()
            },
            ..SetupRequest::default()
        })
        .await
        .unwrap();
    let seen = seen.await.unwrap();
    assert!(
        seen.head.starts_with("POST /setup HTTP/1.1"),
        "{}",
        seen.head
    );
    assert!(
        seen.head
            .to_ascii_lowercase()
            .contains("authorization: bearer engine-token"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body["le_log_key"], "run/engine");
    assert_eq!(seen.body["log_config"]["account_id"], "acme");
    assert_eq!(seen.body["log_config"]["indirect_upload"], true);

    let (url, seen) = answer_once("200 OK", "{}").await;
    EngineClient::new(&url, None)
        .start_step(&StepRequest {
            id: "run".into(),
            command: Some(StepCommand::Argv(vec!["echo".into(), "hi".into()])),
            log_key: Some("run/step".into()),
            ..StepRequest::default()
        })
        .await
        .unwrap();
    let seen = seen.await.unwrap();
    assert!(
        seen.head.starts_with("POST /step HTTP/1.1"),
        "{}",
        seen.head
    );
    assert!(!seen.head.to_ascii_lowercase().contains("authorization"));
    assert_eq!(seen.body["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(seen.body["detach"], true, "start_step detaches");
}

#[tokio::test]
async fn a_step_result_is_read_into_its_type() {
    let (url, seen) = answer_once(
        "200 OK",
        r#"{"exit_code":3,"exited":true,"outputs":{"A":"1"}}"#,
    )
    .await;
    let result = EngineClient::new(&url, None)
        .poll_step("run")
        .await
        .unwrap();
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.outputs["A"], "1");
    let seen = seen.await.unwrap();
    assert!(seen.head.starts_with("POST /poll_step"), "{}", seen.head);
    assert_eq!(seen.body, serde_json::json!({"id": "run"}));
}

#[tokio::test]
async fn failures_say_which_kind_they_are() {
    let (url, _) = answer_once("409 Conflict", r#"{"error_msg":"step run exists"}"#).await;
    let err = EngineClient::new(&url, None)
        .step(&StepRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused { status, msg } if status.as_u16() == 409 && msg == "step run exists"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the engine refused (409 Conflict): step run exists"
    );

    let (url, _) = answer_once("200 OK", r#"{"exit_code":"not a number"}"#).await;
    let err = EngineClient::new(&url, None)
        .poll_step("run")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Malformed(_)), "{err:?}");

    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = EngineClient::new(&format!("http://127.0.0.1:{port}"), None)
        .destroy()
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NoAnswer(_)), "{err:?}");
}
