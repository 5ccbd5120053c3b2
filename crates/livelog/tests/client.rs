//! `HttpLogClient` headers and the signed-link upload, against a small stub that
//! records what it receives (the real protocol is covered in `service.rs`).
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{post, put};
use livelog::{HttpLogClient, LogClient};
use runlog_protocol::engine::LogConfig;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// One received request: path, authorization, x-harness-token, content-encoding, body.
type Received = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<u8>,
);

#[derive(Default)]
struct Seen {
    requests: Vec<Received>,
    base: String,
}

type Shared = Arc<Mutex<Seen>>;

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn record(seen: &Shared, path: &str, h: &HeaderMap, body: &[u8]) {
    seen.lock().unwrap().requests.push((
        path.to_owned(),
        header(h, "authorization"),
        header(h, "x-harness-token"),
        header(h, "content-encoding"),
        body.to_vec(),
    ));
}

async fn stub() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/blob/link/upload",
            post(|State(s): State<Shared>, h: HeaderMap| async move {
                record(&s, "/blob/link/upload", &h, b"");
                let base = s.lock().unwrap().base.clone();
                axum::Json(serde_json::json!({"link": format!("{base}/signed-target?sig=abc"), "expires": "2099-01-01T00:00:00.000Z"}))
            }),
        )
        .route(
            "/signed-target",
            put(|State(s): State<Shared>, h: HeaderMap, body: Bytes| async move {
                record(&s, "/signed-target", &h, &body);
                "ok"
            }),
        )
        .route(
            "/stream",
            post(|State(s): State<Shared>, h: HeaderMap| async move {
                record(&s, "/stream", &h, b"");
                "{}"
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    seen.lock().unwrap().base = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn client(base: &str) -> HttpLogClient {
    HttpLogClient::new(&LogConfig {
        url: base.to_owned(),
        account_id: "acc".into(),
        token: "tok-123".into(),
        ..LogConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn the_token_goes_in_both_headers_to_the_service() {
    let (base, seen) = stub().await;
    client(&base).open("k").await.unwrap();
    let s = seen.lock().unwrap();
    let (_, auth, harness, _, _) = &s.requests[0];
    assert_eq!(auth.as_deref(), Some("Bearer tok-123"));
    assert_eq!(harness.as_deref(), Some("tok-123"));
}

#[tokio::test]
async fn the_token_is_never_sent_to_the_signed_link_and_the_archive_is_gzipped() {
    let (base, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.ndjson");
    let content = b"{\"pos\":0,\"out\":\"hello\\n\",\"level\":\"info\",\"time\":\"\"}\n";
    std::fs::write(&archive, content).unwrap();
    client(&base).upload_link("k", &archive).await.unwrap();
    let s = seen.lock().unwrap();
    let (path, auth, harness, enc, body) = &s.requests[1];
    assert_eq!(path, "/signed-target");
    assert_eq!(
        (auth, harness),
        (&None, &None),
        "no account token to the link host"
    );
    assert_eq!(enc.as_deref(), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, content);
    // The link itself was asked for with the token.
    assert_eq!(s.requests[0].1.as_deref(), Some("Bearer tok-123"));
}

#[tokio::test]
async fn an_unreachable_service_is_a_retryable_transport_error() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let err = client(&dead).open("k").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, livelog::ClientError::Transport(_)));
}
