//! Keys reach storage through one mapping (`store::names`): every key a Harness
//! pipeline produces is stored, read back and listed, on the local directory and on
//! S3 (moto); no two keys share a file; file names stay short enough for the local
//! file system; archives stored under their earlier names are still found; and no
//! error answer names a path on the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use runlog_protocol::Scope;
use runlog_protocol::key::MAX_KEY_LEN;
use runlog_service::store::{MemoryLimits, MemoryStreamStore};
use runlog_testkit::service::TestService;
use std::path::Path;
use std::sync::Arc;

const ACCOUNT: &str = "acc";

/// One row per key, so each archive's content names its key.
fn archive_for(key: &str) -> String {
    format!(
        "{}\n{}\n",
        serde_json::json!({"pos": 0, "out": format!("archive of {key}")}),
        serde_json::json!({"pos": 1, "out": "second row"})
    )
}

async fn upload(svc: &TestService, key: &str, ndjson: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/blob", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", key)])
        .bearer_auth(svc.token(ACCOUNT, Scope::Write))
        .body(ndjson.to_owned())
        .send()
        .await
        .unwrap()
}

async fn download(svc: &TestService, key: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/blob", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", key)])
        .bearer_auth(svc.token(ACCOUNT, Scope::Read))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn listed_keys(svc: &TestService) -> Vec<String> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/streams?accountID={ACCOUNT}", svc.url()))
        .bearer_auth(svc.token(ACCOUNT, Scope::Read))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut keys: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// Keys that broke or clashed under the earlier naming, and Harness's shapes; the
/// longest is `longest` bytes.
fn hard_keys(longest: usize) -> Vec<String> {
    let harness = "accountId:abc/orgId:default/projectId:p/pipelineId:x/runSequence:1/level0:pipeline/level1:stages/level2:s1/addon:20004";
    let long_segment = format!("level0:{}", "s$".repeat(300));
    let full_length = {
        let mut k = format!("accountId:abc/{}", "x".repeat(400));
        while k.len() < longest {
            k.push('/');
            k.push_str(&"y:".repeat(((longest - k.len()) / 2).clamp(1, 120)));
        }
        k.truncate(longest);
        k.trim_end_matches('/').to_owned()
    };
    vec![
        harness.to_owned(),
        format!("{harness}/step$1"),
        long_segment,
        "a".repeat(244),
        full_length,
        "p".to_owned(),
        "p.ndjson.gz/q".to_owned(),
        "p/q".to_owned(),
        "p.ndjson.gz".to_owned(),
        format!("{}./x", "d".repeat(200)),
        "..a/b..".to_owned(),
    ]
}

async fn store_and_read_back_every_key(svc: &TestService, longest: usize) {
    let keys = hard_keys(longest);
    for key in &keys {
        let r = upload(svc, key, &archive_for(key)).await;
        assert_eq!(r.status(), 200, "{key}: {}", r.text().await.unwrap());
    }
    for key in &keys {
        assert_eq!(
            download(svc, key).await,
            (200, archive_for(key)),
            "{key} reads back its own archive"
        );
    }
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed_keys(svc).await, expected);
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[tokio::test]
async fn every_key_is_stored_read_back_and_listed_on_the_local_store() {
    let svc = TestService::start().await;
    store_and_read_back_every_key(&svc, MAX_KEY_LEN).await;
    let mut paths = Vec::new();
    walk(&svc.config().archive_dir(), &mut paths);
    for p in &paths {
        let name = p.file_name().unwrap().len();
        assert!(name <= 255, "{} is {name} bytes", p.display());
    }
    assert!(
        paths.iter().filter(|p| p.is_file()).count() >= hard_keys(MAX_KEY_LEN).len(),
        "one file per key"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn every_key_is_stored_read_back_and_listed_on_s3() {
    let server = runlog_testkit::s3::S3Server::start_new().await;
    server.create_bucket("archives").await;
    let blobs = runlog_service::store::s3::S3Settings {
        bucket: "archives".to_owned(),
        prefix: "runlog".to_owned(),
        endpoint: Some(server.endpoint()),
        region: Some(runlog_testkit::s3::REGION.to_owned()),
        access_key_id: Some(runlog_testkit::s3::ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(runlog_testkit::s3::SECRET_ACCESS_KEY.to_owned()),
        allow_http: true,
        retry_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    }
    .blob_store()
    .unwrap();
    let svc = TestService::start_with_stores(
        Arc::new(MemoryStreamStore::new(MemoryLimits::default())),
        blobs,
    )
    .await;
    // S3 caps a whole object name at 1024 bytes: keys whose name would pass
    // `store::names::MAX_NAME` are stored under their digest, so keys of every
    // length are stored, read back and listed.
    store_and_read_back_every_key(&svc, MAX_KEY_LEN).await;

    // A presigned link for a Harness key (`:` and `$` in the signed path) works,
    // and so does one for a key stored under its digest.
    let long = format!("accountId:abc/{}", "l$".repeat((MAX_KEY_LEN - 14) / 2));
    for key in [
        "accountId:abc/pipelineId:p$1/level0:pipeline",
        long.as_str(),
    ] {
        upload_through_a_presigned_link(&svc, key).await;
    }
    assert!(listed_keys(&svc).await.contains(&long));
    svc.shutdown().await;
}

async fn upload_through_a_presigned_link(svc: &TestService, key: &str) {
    let link: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/blob/link/upload", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", key)])
        .bearer_auth(svc.token(ACCOUNT, Scope::Write))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["link"].as_str().unwrap();
    let put = reqwest::Client::new()
        .put(url)
        .body(archive_for(key))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    assert_eq!(download(svc, key).await, (200, archive_for(key)));
}

#[tokio::test]
async fn archives_under_their_earlier_names_are_still_read_and_listed() {
    let svc = TestService::start().await;
    let dir = svc.config().archive_dir().join(ACCOUNT);
    // Names the service gave these keys before the current mapping: a long segment
    // whole, and a directory ending in the archive suffix.
    let long = "l".repeat(230);
    std::fs::create_dir_all(dir.join("p.ndjson.gz")).unwrap();
    for (key, path) in [
        (long.as_str(), dir.join(format!("{long}.ndjson.gz"))),
        ("p.ndjson.gz/q", dir.join("p.ndjson.gz/q.ndjson.gz")),
    ] {
        std::fs::write(
            path,
            runlog_service::archive::gzip(archive_for(key).as_bytes()),
        )
        .unwrap();
    }
    assert_eq!(download(&svc, &long).await, (200, archive_for(&long)));
    assert_eq!(
        download(&svc, "p.ndjson.gz/q").await,
        (200, archive_for("p.ndjson.gz/q"))
    );
    let mut expected = vec![long.clone(), "p.ndjson.gz/q".to_owned()];
    expected.sort();
    assert_eq!(listed_keys(&svc).await, expected);

    // A new archive goes under the current name and is the one read from then on.
    let newer = archive_for("newer");
    assert_eq!(upload(&svc, &long, &newer).await.status(), 200);
    assert_eq!(download(&svc, &long).await, (200, newer));
    assert_eq!(listed_keys(&svc).await, expected);
    svc.shutdown().await;
}

#[tokio::test]
async fn no_error_answer_names_a_path_on_the_server() {
    let svc = TestService::start().await;
    let data_dir = svc.data_dir();
    let data_dir = data_dir.to_str().unwrap();
    let dir = svc.config().archive_dir().join(ACCOUNT);
    std::fs::create_dir_all(&dir).unwrap();
    // A file where a key's directory must go: every write under it fails.
    std::fs::write(dir.join("blocked"), b"x").unwrap();
    let http = reqwest::Client::new();
    let write = svc.token(ACCOUNT, Scope::Write);
    let mut answers = Vec::new();
    let r = upload(&svc, "blocked/x", &archive_for("blocked/x")).await;
    answers.push((r.status().as_u16(), r.text().await.unwrap()));
    // The same through a close with snapshot, and a link upload.
    let q = [("accountID", ACCOUNT), ("key", "blocked/y")];
    let url = format!("{}/stream", svc.url());
    assert_eq!(
        http.post(&url)
            .query(&q)
            .bearer_auth(&write)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .put(&url)
        .query(&q)
        .bearer_auth(&write)
        .body(r#"[{"pos":0,"out":"x"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(&url)
        .query(&[
            ("accountID", ACCOUNT),
            ("key", "blocked/y"),
            ("snapshot", "true"),
        ])
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    answers.push((r.status().as_u16(), r.text().await.unwrap()));
    let link: serde_json::Value = http
        .post(format!("{}/blob/link/upload", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", "blocked/z")])
        .bearer_auth(&write)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .put(link["link"].as_str().unwrap())
        .body(archive_for("blocked/z"))
        .send()
        .await
        .unwrap();
    answers.push((r.status().as_u16(), r.text().await.unwrap()));
    // Reading below the file fails too.
    let (status, text) = download(&svc, "blocked/x").await;
    answers.push((status, text));

    for (status, text) in &answers {
        assert!(*status >= 400, "{status} {text}");
        assert!(
            !text.contains(data_dir),
            "{status} names the data dir: {text}"
        );
        assert!(!text.contains("/tmp"), "{status} names a path: {text}");
        assert!(!text.contains("archives/"), "{status} names a path: {text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(v["error_msg"].is_string(), "{text}");
    }
    assert!(
        answers.iter().any(|(s, _)| *s == 503),
        "a storage failure was provoked: {answers:?}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn keys_that_are_still_refused_never_reach_storage() {
    let svc = TestService::start().await;
    for bad in [
        "",
        "/abs",
        "a/../b",
        "a/./b",
        "a//b",
        "a\\b",
        "a%2fb",
        "a\u{1}b",
        &"k".repeat(MAX_KEY_LEN + 1),
    ] {
        let r = upload(&svc, bad, &archive_for("x")).await;
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    assert!(listed_keys(&svc).await.is_empty());
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_overflow_segments_of_long_and_nested_keys_stay_apart_and_read_back() {
    use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
    use runlog_service::store::{StoredLine, StreamId, StreamStore};
    let server = runlog_testkit::redis::RedisServer::start_new().await;
    let dir = tempfile::tempdir().unwrap();
    let overflow =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let store = RedisStreamStore::new(
        RedisConfig {
            url: server.url(),
            max_lines: 100,
            block: std::time::Duration::from_millis(300),
            ..RedisConfig::default()
        },
        Some(overflow),
    )
    .unwrap();
    let keys = [
        format!("accountId:abc/level0:{}", "s$".repeat(300)),
        "k".to_owned(),
        "k/x".to_owned(),
        "k.ndjson.gz".to_owned(),
    ];
    let row = |key: &str, pos: u64| {
        Bytes::from(format!(
            r#"{{"pos":{pos},"out":"{} {pos}"}}"#,
            &key[..key.len().min(20)]
        ))
    };
    for key in &keys {
        let id = StreamId {
            account: ACCOUNT.parse().unwrap(),
            key: key.parse().unwrap(),
        };
        store.open(&id).await.unwrap();
        for start in (0..600).step_by(50) {
            let batch: Vec<StoredLine> = (start..start + 50)
                .map(|pos| StoredLine {
                    pos,
                    json: row(key, pos),
                })
                .collect();
            store.append(&id, batch).await.unwrap();
        }
    }
    for key in &keys {
        let id = StreamId {
            account: ACCOUNT.parse().unwrap(),
            key: key.parse().unwrap(),
        };
        let all = store.read(&id, 0, 10_000).await.unwrap();
        let expected: Vec<Bytes> = (0..600).map(|pos| row(key, pos)).collect();
        assert_eq!(
            all.into_iter().map(|l| l.json).collect::<Vec<_>>(),
            expected,
            "{key} reads back its own lines"
        );
    }
    let mut paths = Vec::new();
    walk(dir.path(), &mut paths);
    assert!(
        paths.iter().any(|p| p.to_string_lossy().contains("/+")),
        "segments were written: {paths:?}"
    );
    for p in &paths {
        assert!(p.file_name().unwrap().len() <= 255, "{}", p.display());
    }
}
