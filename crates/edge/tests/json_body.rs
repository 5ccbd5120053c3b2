//! The answers both servers share, over a raw TCP client against a real server on
//! 127.0.0.1: a body that is not JSON, not the expected shape or too large, and a
//! token in the wrong form, are each `{"error_msg": …}` with their status.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use runlog_edge::{HttpError, JsonBody, Limits, bearer_token, serve};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(serde::Deserialize)]
struct Shape {
    n: u32,
}

async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new()
        .route(
            "/shape",
            post(|JsonBody(s): JsonBody<Shape>| async move { s.n.to_string() }),
        )
        .route(
            "/token",
            post(|headers: http::HeaderMap| async move {
                bearer_token(&headers).map(|t| t.unwrap_or("none").to_owned())
            }),
        )
        .fallback(|| async { HttpError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(64));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, Limits::default(), async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Sends `head` (without its blank line) and `body`; the status and the body.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn error_msg(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["error_msg"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_bodies_get_json_errors_with_their_status() {
    let (addr, _stop) = start().await;
    assert_eq!(
        raw(addr, "POST /shape HTTP/1.1", br#"{"n":7}"#).await,
        (200, "7".into())
    );
    let (status, body) = raw(addr, "POST /shape HTTP/1.1", b"{not json").await;
    assert_eq!(status, 400);
    assert!(
        error_msg(&body).starts_with("malformed JSON body"),
        "{body}"
    );
    let (status, body) = raw(addr, "POST /shape HTTP/1.1", br#"{"n":"seven"}"#).await;
    assert_eq!(status, 400);
    assert!(error_msg(&body).contains("invalid type"), "{body}");
    let (status, body) = raw(addr, "POST /shape HTTP/1.1", b"\xff\xfe").await;
    assert_eq!(status, 400);
    assert!(
        error_msg(&body).starts_with("malformed JSON body"),
        "{body}"
    );
    let (status, body) = raw(addr, "POST /shape HTTP/1.1", &[b' '; 65]).await;
    assert_eq!(status, 413);
    assert!(error_msg(&body).contains("too large"), "{body}");
    let (status, body) = raw(addr, "POST /nowhere HTTP/1.1", b"").await;
    assert_eq!((status, error_msg(&body)), (404, "no such route".into()));
}

#[tokio::test]
async fn a_token_in_the_wrong_form_is_a_json_401() {
    let (addr, _stop) = start().await;
    let ok = raw(
        addr,
        "POST /token HTTP/1.1\r\nAuthorization: bearer t0k",
        b"",
    )
    .await;
    assert_eq!(ok, (200, "t0k".into()));
    let (status, body) = raw(
        addr,
        "POST /token HTTP/1.1\r\nAuthorization: Basic dTpw",
        b"",
    )
    .await;
    assert_eq!(status, 401);
    assert!(error_msg(&body).contains("Bearer <token>"), "{body}");
}

#[tokio::test]
async fn protocol_errors_hyper_answers_itself_close_the_connection() {
    // A bad Content-Length never reaches a route: hyper answers it with a bare status
    // (no body: it offers no hook for one) and closes the connection.
    let (addr, _stop) = start().await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /shape HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
