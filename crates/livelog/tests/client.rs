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
use runlog_protocol::service::ACCEPT_ARCHIVE_ENCODING;
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
    /// What `POST /blob/link/upload` answers for `expires`.
    expires: Option<serde_json::Value>,
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
                let (base, expires) = {
                    let g = s.lock().unwrap();
                    let expires = g.expires.clone();
                    (g.base.clone(), expires.unwrap_or_else(|| "2099-01-01T00:00:00.000Z".into()))
                };
                axum::Json(serde_json::json!({"link": format!("{base}/signed-target?sig=abc"), "expires": expires}))
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
            "/blob",
            post(|State(s): State<Shared>, h: HeaderMap, body: Bytes| async move {
                record(&s, "/blob", &h, &body);
                // As a Harness log service: no body.
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/stream",
            post(|State(s): State<Shared>, h: HeaderMap| async move {
                record(&s, "/stream", &h, b"");
                // As runlog's service: archives may be uploaded gzip'd.
                ([(ACCEPT_ARCHIVE_ENCODING, "gzip")], "{}")
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

const ROW: &[u8] = b"{\"pos\":0,\"out\":\"hello\\n\",\"level\":\"info\",\"time\":\"\"}\n";

#[tokio::test]
async fn the_token_is_never_sent_to_the_signed_link_and_the_archive_is_gzipped_once_announced() {
    let (base, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.ndjson");
    let content = ROW;
    std::fs::write(&archive, content).unwrap();
    let c = client(&base);
    c.open("k").await.unwrap();
    assert!(c.gzip_archives(), "the open answer announced gzip");
    c.upload_link("k", &archive).await.unwrap();
    let mut s = seen.lock().unwrap();
    s.requests.remove(0); // the open
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

#[tokio::test]
async fn archives_go_plain_to_a_service_that_did_not_announce_gzip() {
    let (base, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.ndjson");
    std::fs::write(&archive, ROW).unwrap();
    // No open (skip_opening_stream, or a Harness service): nothing was announced.
    let c = client(&base);
    assert!(!c.gzip_archives());
    c.upload_blob("k", &archive).await.unwrap();
    c.upload_link("k", &archive).await.unwrap();
    let s = seen.lock().unwrap();
    let sent: Vec<_> = s
        .requests
        .iter()
        .filter(|r| r.0 == "/blob" || r.0 == "/signed-target")
        .collect();
    assert_eq!(sent.len(), 2);
    for (path, _, _, enc, body) in sent {
        assert_eq!(enc, &None, "{path}: plain");
        assert_eq!(body, ROW, "{path}: the NDJSON as is");
    }
}

#[tokio::test]
async fn an_upload_links_expires_is_read_as_nanoseconds_or_rfc3339() {
    let (base, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.ndjson");
    std::fs::write(&archive, ROW).unwrap();
    let c = client(&base);
    let puts = || {
        seen.lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.0 == "/signed-target")
            .count()
    };
    for good in [
        serde_json::json!(3_600_000_000_000u64),
        serde_json::json!("2099-01-01T00:00:00.000Z"),
    ] {
        seen.lock().unwrap().expires = Some(good.clone());
        let before = puts();
        c.upload_link("k", &archive)
            .await
            .unwrap_or_else(|e| panic!("expires {good}: {e}"));
        assert_eq!(puts(), before + 1, "expires {good}: uploaded");
    }
    // A link that had expired when it arrived is not used; asking again may help.
    for gone in [
        serde_json::json!(0),
        serde_json::json!("2001-01-01T00:00:00Z"),
    ] {
        seen.lock().unwrap().expires = Some(gone.clone());
        let before = puts();
        let err = c.upload_link("k", &archive).await.unwrap_err();
        assert!(err.is_retryable(), "expires {gone}: {err}");
        assert_eq!(puts(), before, "expires {gone}: not uploaded");
    }
}

/// runlog's own service answers in the forms a Harness client reads: `expires` as a
/// Go duration (nanoseconds), and it announces that archives may be gzip'd.
#[tokio::test]
async fn runlog_service_answers_integer_expires_and_announces_gzip_archives() {
    let svc = runlog_testkit::service::TestService::start().await;
    let token = svc.token("acc", runlog_protocol::Scope::Write);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}/{path}?accountID=acc&key=k", svc.url());
    let open = http
        .post(url("stream"))
        .header("X-Harness-Token", &token)
        .send()
        .await
        .unwrap();
    assert!(open.status().is_success());
    assert_eq!(
        open.headers()
            .get(ACCEPT_ARCHIVE_ENCODING)
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    let link: serde_json::Value = http
        .post(url("blob/link/upload"))
        .header("X-Harness-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nanos = link["expires"].as_u64().expect("expires is an integer");
    assert!(nanos > 60 * 1_000_000_000, "{link}");
    // And the writer's client learns it from the open.
    let c = HttpLogClient::new(&LogConfig {
        url: svc.url(),
        account_id: "acc".into(),
        token: token.clone(),
        ..LogConfig::default()
    })
    .unwrap();
    c.open("k2").await.unwrap();
    assert!(c.gzip_archives());

    // A writer that reopens streams itself gets a 404 for a stream that is not open
    // (it resends its history from pos 0); a plain append opens it (lite-engine).
    let batch = livelog::Batch {
        first_pos: 5,
        lines: 1,
        body: r#"[{"level":"info","pos":5,"out":"x\n","time":"2026-01-01T00:00:00Z"}]"#.into(),
    };
    let err = c.write_opened("never-opened", &batch).await.unwrap_err();
    assert!(
        matches!(err, livelog::ClientError::Status { status: 404, .. }),
        "{err}"
    );
    let ack = c.write("opened-by-put", &batch).await.unwrap();
    assert_eq!(ack.appended, 1, "{ack:?}");
}

/// A client that never saw the announcement (a writer with `skip_opening_stream`, an
/// outbox delivered by a new process) uploads plain NDJSON; runlog's service stores it
/// as the archive through both routes.
#[tokio::test]
async fn runlog_service_takes_plain_ndjson_archives_by_blob_and_by_link() {
    let svc = runlog_testkit::service::TestService::start().await;
    let token = svc.token("acc", runlog_protocol::Scope::Write);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.ndjson");
    std::fs::write(&archive, ROW).unwrap();
    let c = HttpLogClient::new(&LogConfig {
        url: svc.url(),
        account_id: "acc".into(),
        token: token.clone(),
        ..LogConfig::default()
    })
    .unwrap();
    assert!(!c.gzip_archives());
    c.upload_blob("plain/blob", &archive).await.unwrap();
    c.upload_link("plain/link", &archive).await.unwrap();
    for key in ["plain/blob", "plain/link"] {
        let got = reqwest::Client::new()
            .get(format!("{}/blob?accountID=acc&key={key}", svc.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{key}");
        assert_eq!(&got.bytes().await.unwrap()[..], ROW, "{key}");
    }
}
