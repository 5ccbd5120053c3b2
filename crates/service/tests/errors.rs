//! Every error status with its JSON body; bad input never crashes or writes anything.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, assert_error, line, lines};
use reqwest::{Method, StatusCode};
use runlog_protocol::Scope;
use runlog_service::ServiceConfig;
use runlog_testkit::service::{TestService, test_config};

#[tokio::test]
async fn missing_forged_and_expired_tokens_get_401() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let http = reqwest::Client::new();
    let r = http.post(api.url("/stream", "k")).send().await.unwrap();
    assert!(
        assert_error(r, StatusCode::UNAUTHORIZED)
            .await
            .contains("missing token")
    );
    let r = http
        .post(api.url("/stream", "k"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    let other = runlog_service::auth::mint_token(
        b"another secret",
        Some(&"acc".parse().unwrap()),
        Scope::Write,
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let r = http
        .post(api.url("/stream", "k"))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED).await;
    let expired = runlog_service::auth::sign_claims(
        svc.admin_secret().as_bytes(),
        &runlog_service::auth::Claims {
            account: Some("acc".parse().unwrap()),
            scope: Scope::Write,
            exp: 1,
        },
    );
    let r = http
        .post(api.url("/stream", "k"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert!(
        assert_error(r, StatusCode::UNAUTHORIZED)
            .await
            .contains("expired")
    );
}

#[tokio::test]
async fn harness_token_header_is_accepted() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let r = api
        .http
        .post(api.url("/stream", "k"))
        .header("X-Harness-Token", &api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_for_account_a_can_neither_read_nor_write_b() {
    let svc = TestService::start().await;
    let b = Api::new(&svc, "bob", Scope::Write);
    b.open("secret-job").await;
    b.put_ok("secret-job", &lines(0..3)).await;
    b.close("secret-job", true).await;

    let mut a = Api::new(&svc, "alice", Scope::Admin);
    a.token = svc.token("alice", Scope::Write);
    a.account = "bob".into();
    for (method, path) in [
        (Method::GET, "/stream"),
        (Method::PUT, "/stream"),
        (Method::POST, "/stream"),
        (Method::DELETE, "/stream"),
        (Method::GET, "/blob"),
        (Method::POST, "/blob"),
        (Method::POST, "/blob/link/upload"),
    ] {
        let r = a
            .req(method.clone(), path, "secret-job")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::FORBIDDEN).await;
    }
    let r = a
        .http
        .get(format!("{}/streams?accountID=bob", a.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN).await;
    // Nothing changed for bob.
    let blob = b.archive("secret-job").await;
    assert_eq!(blob.lines().count(), 3);
}

#[tokio::test]
async fn read_token_cannot_write_and_only_admin_mints_tokens() {
    let svc = TestService::start().await;
    let reader = Api::new(&svc, "acc", Scope::Read);
    let r = reader
        .req(Method::POST, "/stream", "k")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN).await;
    let r = reader
        .http
        .post(format!("{}/token?accountID=acc", reader.base))
        .bearer_auth(svc.token("acc", Scope::Write))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN).await;
    let r = reader
        .http
        .post(format!("{}/token?accountID=acc", reader.base))
        .bearer_auth(svc.admin_token())
        .json(&serde_json::json!({"scope": "read", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let minted: runlog_protocol::service::TokenResponse = r.json().await.unwrap();
    assert_eq!(minted.scope, Scope::Read);
    let r = reader
        .http
        .get(format!("{}/streams?accountID=acc", reader.base))
        .bearer_auth(&minted.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reader
        .http
        .post(format!("{}/token?accountID=acc", reader.base))
        .bearer_auth(svc.admin_token())
        .body("{\"ttl\": \"forever\"}")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn closed_streams_refuse_lines_with_409_and_unknown_ones_take_them() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    // A stream never opened is opened by its first lines (lite-engine writes on after
    // a failed open); only a closed one refuses them.
    assert_eq!(api.put_ok("never-opened", &lines(0..1)).await.next_pos, 1);
    api.open("k").await;
    api.close("k", false).await;
    assert_error(api.put("k", &lines(0..1)).await, StatusCode::CONFLICT).await;
    let r = api
        .req(Method::GET, "/blob", "no-archive")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND).await;
    let r = api
        .req(Method::GET, "/stream", "nothing-here")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND).await;
    let r = api
        .http
        .get(format!("{}/no/such/route", api.base))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn malformed_bodies_get_400_and_store_nothing() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let bad: [&[u8]; 7] = [
        b"not json",
        b"{\"pos\":0}",
        b"[{\"pos\":0,\"out\":\"\xff\xfe\"}]",
        b"[{\"pos\":\"zero\",\"out\":\"x\"}]",
        b"[{\"pos\":0}]",
        b"[{\"pos\":0,\"out\":\"ok\"}, 7]",
        b"[{\"pos\":0,\"out\":\"x\"",
    ];
    for body in bad {
        let r = api
            .req(Method::PUT, "/stream", "k")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::BAD_REQUEST).await;
    }
    let r = api
        .req(Method::POST, "/blob", "k")
        .body(b"{\"pos\":0}\nnot json\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = api
        .req(Method::POST, "/blob", "k")
        .header("Content-Encoding", "gzip")
        .body(b"\x1f\x8bbroken".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let r = api
        .req(Method::GET, "/stream", "k")
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let ack = api.put_ok("k", &[]).await;
    assert_eq!(ack.next_pos, 0, "no line of a refused batch was stored");
}

#[tokio::test]
async fn traversal_keys_are_refused_and_nothing_is_written_outside_the_data_dir() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let svc = TestService::start_with(test_config(&data)).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let ndjson = format!("{}\n", line(0));
    for key in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "..%2F..%2Fescape",
        "%2E%2E/escape",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "a%2F..%2F..%2Fb",
        "",
        "a//b",
        "a\\b",
    ] {
        for (method, path) in [
            (Method::POST, "/stream"),
            (Method::POST, "/blob"),
            (Method::GET, "/blob"),
            (Method::GET, "/stream"),
        ] {
            let url = format!("{}{path}?accountID=acc&key={key}", api.base);
            let r = api
                .http
                .request(method.clone(), url)
                .bearer_auth(&api.token)
                .body(ndjson.clone())
                .send()
                .await
                .unwrap();
            assert_error(r, StatusCode::BAD_REQUEST).await;
        }
    }
    let url = format!("{}/blob?accountID=..&key=x", api.base);
    let r = api
        .http
        .post(url)
        .bearer_auth(svc.admin_token())
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
    // The only entries next to the data dir are the data dir itself.
    let siblings: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("data")]);
    let archives = data.join("archives");
    let archived: Vec<_> = std::fs::read_dir(&archives)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert_eq!(archived, vec![0], "no archive was written");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        max_body: 64 * 1024,
        max_append_body: 64 * 1024,
        max_blob_body: 128 * 1024,
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let big = lines(0..2_000);
    assert!(serde_json::to_vec(&big).unwrap().len() > 64 * 1024);
    assert_error(api.put("k", &big).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    // The same body sent chunked (no Content-Length) is cut off while it is read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = serde_json::to_vec(&big)
        .unwrap()
        .chunks(4096)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = api
        .req(Method::PUT, "/stream", "k")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    let r = api
        .req(Method::POST, "/blob", "k")
        .body(vec![b'x'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        api.put_ok("k", &lines(0..10)).await.next_pos,
        10,
        "the service still works, and stored nothing of the refused bodies"
    );
}

#[tokio::test]
async fn gzip_bomb_archive_gets_413() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        max_archive_bytes: 1 << 20,
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &vec![b' '; 8 << 20]).unwrap();
    let bomb = e.finish().unwrap();
    let r = api
        .req(Method::POST, "/blob", "k")
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
}

/// A service whose memory limits `set` adjusts (keep the directory alive with it).
async fn service_with_limits(
    set: impl FnOnce(&mut runlog_service::store::MemoryLimits),
) -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    set(&mut cfg.limits);
    let svc = TestService::start_with(cfg).await;
    (dir, svc)
}

/// The body of a `GET` of `url`.
async fn get_text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn per_stream_line_limit_refuses_with_413() {
    let (_dir, svc) = service_with_limits(|l| l.max_lines_per_stream = 100).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..100)).await;
    assert_error(
        api.put("k", &lines(100..101)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
}

#[tokio::test]
async fn errors_are_counted_by_kind_in_metrics() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    let r = api
        .req(Method::GET, "/blob", "no-archive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let text = get_text(format!("{}/metrics", api.base)).await;
    assert!(
        text.contains("runlog_errors_total{kind=\"not_found\"} 1"),
        "{text}"
    );
    api.open("k").await;
    api.put_ok("k", &lines(0..7)).await;
    let text = get_text(format!("{}/metrics", api.base)).await;
    assert!(text.contains("runlog_lines_in_total 7"), "{text}");
    assert!(text.contains("runlog_streams_open 1"), "{text}");
    let health: runlog_protocol::service::Health = reqwest::get(format!("{}/healthz", api.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(health.ok);
}

#[tokio::test]
async fn total_line_limit_across_streams_refuses_with_413() {
    let (_dir, svc) = service_with_limits(|l| l.max_total_lines = 150).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("a").await;
    api.open("b").await;
    api.put_ok("a", &lines(0..100)).await;
    assert_error(
        api.put("b", &lines(0..100)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // The refused batch stored nothing; a batch that fits still goes in.
    assert_eq!(api.put_ok("b", &lines(0..50)).await.next_pos, 50);
}

#[tokio::test]
async fn failing_archive_backend_gets_503_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let archives = dir.path().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&archives).unwrap();
    let blobs = runlog_service::store::BlobStore::new(std::sync::Arc::new(fs), None);
    let streams = std::sync::Arc::new(runlog_service::store::MemoryStreamStore::new(
        Default::default(),
    ));
    let svc =
        TestService::start_with_config_and_stores(test_config(dir.path()), streams, blobs).await;
    // The backend breaks under the running service: its root is now a file.
    std::fs::remove_dir_all(&archives).unwrap();
    std::fs::write(&archives, b"not a directory").unwrap();
    let api = Api::new(&svc, "acc", Scope::Write);
    let r = api
        .req(Method::POST, "/blob", "k")
        .body(format!("{}\n", line(0)))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
    let r = reqwest::get(format!("{}/healthz", api.base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: runlog_protocol::service::Health = r.json().await.unwrap();
    assert!(!health.ok);
    assert_ne!(health.backends["blobs"], "ok");
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_dir_and_its_archives_are_for_the_services_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("runlog-data");
    let cfg = ServiceConfig {
        admin_secret: None,
        ..test_config(&data)
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &lines(0..3)).await;
    api.close("k", true).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(mode(&data.join("archives")), 0o700, "the archives");
    assert_eq!(
        mode(&data.join(runlog_service::auth::SECRET_FILE)),
        0o600,
        "the admin secret"
    );
    svc.shutdown().await;
}

/// Sends the head of an upload and 1 KiB of a body announced as 100 MB, then waits
/// for the answer without sending the rest.
async fn answer_to_a_stalled_upload(addr: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    conn.write_all(&[b'x'; 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("no answer before the body was sent: the service waits to buffer it")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn uploads_without_valid_credentials_are_refused_before_their_body_is_read() {
    let svc = TestService::start().await;
    let signed = answer_to_a_stalled_upload(
        svc.addr(),
        "PUT /blob/upload?accountID=acc&key=k&expires=99999999999&n=x&sig=AAAA HTTP/1.1",
    )
    .await;
    assert!(signed.starts_with("HTTP/1.1 401"), "{signed}");
    assert!(signed.contains("upload link refused"), "{signed}");
    let tokenless =
        answer_to_a_stalled_upload(svc.addr(), "POST /blob?accountID=acc&key=k HTTP/1.1").await;
    assert!(tokenless.starts_with("HTTP/1.1 401"), "{tokenless}");
    assert!(tokenless.contains("error_msg"), "{tokenless}");
}
