//! S3-only promises, against a real misbehaving S3 peer: a large archive goes up
//! as a multipart upload, and when a part or the completion fails the upload is
//! aborted (so no orphaned parts stay in the bucket) and the caller gets an error.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use runlog_protocol::{AccountId, StreamKey};
use runlog_service::store::StreamId;
use runlog_service::store::s3::{MULTIPART_THRESHOLD, S3Settings};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake S3 does wrong.
#[derive(Clone, Copy)]
enum Fault {
    /// Every `UploadPart` answers 500.
    FailParts,
    /// Parts are accepted, `CompleteMultipartUpload` answers 500.
    FailComplete,
}

#[derive(Clone)]
struct Peer {
    fault: Fault,
    seen: Arc<Mutex<Vec<String>>>,
}

/// A minimal S3 endpoint: records every request as "METHOD path?query".
async fn s3_like(State(peer): State<Peer>, method: Method, uri: Uri, _body: Bytes) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    peer.seen
        .lock()
        .unwrap()
        .push(format!("{method} {}?{query}", uri.path()));
    let error = || {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<Error><Code>InternalError</Code></Error>",
        )
            .into_response()
    };
    match (method, query.as_str()) {
        (Method::POST, q) if q.starts_with("uploads") => (
            StatusCode::OK,
            "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>",
        )
            .into_response(),
        (Method::PUT, q) if q.contains("partNumber=") => match peer.fault {
            Fault::FailParts => error(),
            Fault::FailComplete => (StatusCode::OK, [("ETag", "\"etag\"")], "").into_response(),
        },
        (Method::DELETE, q) if q.contains("uploadId=up-1") => StatusCode::NO_CONTENT.into_response(),
        _ => error(),
    }
}

async fn start_peer(fault: Fault) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .fallback(s3_like)
        .layer(DefaultBodyLimit::disable())
        .with_state(Peer {
            fault,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn upload_large_archive(
    endpoint: String,
) -> Result<(), runlog_service::store::blob::BlobError> {
    let blobs = S3Settings {
        bucket: "b".to_owned(),
        prefix: "p".to_owned(),
        endpoint: Some(endpoint),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some("k".to_owned()),
        secret_access_key: Some("s".to_owned()),
        allow_http: true,
        retry_timeout: Duration::from_secs(3),
        ..S3Settings::default()
    }
    .blob_store()
    .unwrap();
    let id = StreamId {
        account: AccountId::new("acc").unwrap(),
        key: StreamKey::new("big").unwrap(),
    };
    blobs
        .put(&id, Bytes::from(vec![7u8; MULTIPART_THRESHOLD + 1024]))
        .await
}

fn count(seen: &[String], prefix: &str, contains: &str) -> usize {
    seen.iter()
        .filter(|r| r.starts_with(prefix) && r.contains(contains))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_part_aborts_the_multipart_upload() {
    let (endpoint, seen) = start_peer(Fault::FailParts).await;
    let result = upload_large_archive(endpoint).await;
    assert!(result.is_err(), "a failed part fails the upload");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        count(&seen, "POST /b/p/acc/big.ndjson.gz", "?uploads"),
        1,
        "{seen:#?}"
    );
    assert!(
        count(&seen, "PUT /b/p/acc/big.ndjson.gz", "partNumber=") >= 1,
        "{seen:#?}"
    );
    assert_eq!(
        count(&seen, "DELETE /b/p/acc/big.ndjson.gz", "uploadId=up-1"),
        1,
        "aborted once: {seen:#?}"
    );
    assert_eq!(
        count(&seen, "POST", "uploadId="),
        0,
        "never completed: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_completion_aborts_the_multipart_upload() {
    let (endpoint, seen) = start_peer(Fault::FailComplete).await;
    let result = upload_large_archive(endpoint).await;
    assert!(result.is_err(), "a failed completion fails the upload");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        count(&seen, "PUT", "partNumber="),
        3,
        "16 MiB + 1 KiB in 8 MiB parts: {seen:#?}"
    );
    assert!(
        count(&seen, "POST", "uploadId=up-1") >= 1,
        "completion attempted: {seen:#?}"
    );
    assert_eq!(
        count(&seen, "DELETE", "uploadId=up-1"),
        1,
        "then aborted: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_archive_is_a_single_put() {
    let (endpoint, seen) = start_peer(Fault::FailParts).await;
    let blobs = S3Settings {
        bucket: "b".to_owned(),
        endpoint: Some(endpoint),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some("k".to_owned()),
        secret_access_key: Some("s".to_owned()),
        allow_http: true,
        retry_timeout: Duration::from_secs(1),
        ..S3Settings::default()
    }
    .blob_store()
    .unwrap();
    let id = StreamId {
        account: AccountId::new("acc").unwrap(),
        key: StreamKey::new("small").unwrap(),
    };
    // The peer answers 500 to a plain PUT too; what matters is the request shape.
    let _ = blobs.put(&id, Bytes::from_static(b"small")).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|r| r.starts_with("PUT /b/acc/small.ndjson.gz?")),
        "{seen:#?}"
    );
    assert_eq!(count(&seen, "POST", ""), 0, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_from_aws_variables_keep_endpoint_and_allow_http() {
    let moto = runlog_testkit::s3::S3Server::start_new().await;
    moto.create_bucket("env-bucket").await;
    // Exactly what `AmazonS3Builder::from_env` does with AWS_* variables (the CLI's
    // path), without touching this process's environment.
    let mut builder = object_store::aws::AmazonS3Builder::new();
    for (var, value) in [
        ("aws_endpoint", moto.endpoint()),
        ("aws_allow_http", "true".to_owned()),
        ("aws_region", runlog_testkit::s3::REGION.to_owned()),
        (
            "aws_access_key_id",
            runlog_testkit::s3::ACCESS_KEY_ID.to_owned(),
        ),
        (
            "aws_secret_access_key",
            runlog_testkit::s3::SECRET_ACCESS_KEY.to_owned(),
        ),
    ] {
        builder = builder.with_config(var.parse().unwrap(), value);
    }
    let blobs = S3Settings::from_url("s3://env-bucket/logs")
        .unwrap()
        .blob_store_with(builder)
        .unwrap();
    let id = StreamId {
        account: AccountId::new("acc").unwrap(),
        key: StreamKey::new("from-env").unwrap(),
    };
    blobs
        .put(&id, Bytes::from_static(b"archived"))
        .await
        .unwrap();
    assert_eq!(
        blobs.get(&id).await.unwrap(),
        Bytes::from_static(b"archived")
    );
}
