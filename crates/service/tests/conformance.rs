//! One contract, every backend: the same `StreamStore` promises checked against the
//! memory store and the Redis store, and the same `BlobStore` promises against
//! memory, a local directory and S3 (moto). Each promise is one function taking a
//! fixture; a macro instantiates every promise for every backend, so a backend
//! cannot silently skip one.
//!
//! Redis and S3 tests start their own `redis-server` / `moto_server` on a free
//! loopback port (from `RUNLOG_TEST_REDIS_SERVER` / `RUNLOG_TEST_MOTO_SERVER`, else
//! `PATH`), and fail when the tool is missing.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::StreamExt;
use runlog_protocol::{AccountId, StreamKey};
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_service::store::s3::S3Settings;
use runlog_service::store::{
    BlobStore, MemoryLimits, MemoryStreamStore, StoreError, StoredLine, StreamId, StreamStore,
    TailItem,
};
use runlog_testkit::redis::{RedisCluster, RedisServer};
use runlog_testkit::s3::S3Server;
use std::sync::Arc;
use std::time::Duration;

/// A store under test, a way to get a second handle on the same data (another
/// replica), and whatever server must outlive it.
struct StreamFixture {
    store: Arc<dyn StreamStore>,
    replica: Box<dyn Fn() -> Arc<dyn StreamStore> + Send + Sync>,
    _server: Option<Box<dyn std::any::Any + Send>>,
}

async fn memory_streams() -> StreamFixture {
    let store: Arc<dyn StreamStore> = Arc::new(MemoryStreamStore::new(MemoryLimits::default()));
    let same = store.clone();
    StreamFixture {
        store,
        replica: Box::new(move || same.clone()),
        _server: None,
    }
}

async fn redis_streams() -> StreamFixture {
    let server = RedisServer::start_new().await;
    redis_fixture(server.url(), false, Box::new(server))
}

async fn redis_cluster_streams() -> StreamFixture {
    let cluster = RedisCluster::start_new().await;
    redis_fixture(cluster.urls(), true, Box::new(cluster))
}

fn redis_fixture(
    url: String,
    cluster: bool,
    server: Box<dyn std::any::Any + Send>,
) -> StreamFixture {
    let config = RedisConfig {
        url,
        cluster,
        block: Duration::from_millis(500),
        ..RedisConfig::default()
    };
    let store: Arc<dyn StreamStore> =
        Arc::new(RedisStreamStore::new(config.clone(), None).unwrap());
    StreamFixture {
        store,
        // A separate store on the same Redis: what a second service replica has.
        replica: Box::new(move || Arc::new(RedisStreamStore::new(config.clone(), None).unwrap())),
        _server: Some(server),
    }
}

fn sid(account: &str, key: &str) -> StreamId {
    StreamId {
        account: AccountId::new(account).unwrap(),
        key: StreamKey::new(key).unwrap(),
    }
}

fn line(pos: u64) -> StoredLine {
    StoredLine {
        pos,
        json: Bytes::from(format!(
            r#"{{"level":"info","pos":{pos},"out":"line {pos}\n","time":"2026-11-20T10:00:00.000Z"}}"#
        )),
    }
}

fn lines(range: std::ops::Range<u64>) -> Vec<StoredLine> {
    range.map(line).collect()
}

fn positions(lines: &[StoredLine]) -> Vec<u64> {
    lines.iter().map(|l| l.pos).collect()
}

/// Pulls tail items until `want` lines were seen or `Eof`, with a deadline.
async fn collect_tail(
    tail: &mut futures_util::stream::BoxStream<'static, Result<TailItem, StoreError>>,
    want: usize,
) -> (Vec<StoredLine>, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, tail.next()).await {
            Ok(Some(Ok(TailItem::Lines(batch)))) => seen.extend(batch),
            Ok(Some(Ok(TailItem::Eof))) => return (seen, true),
            Ok(Some(Err(e))) => panic!("tail failed: {e}"),
            Ok(None) => return (seen, false),
            Err(_) => panic!(
                "tail produced {} of {want} lines before the deadline",
                seen.len()
            ),
        }
    }
    (seen, false)
}

// ---------------------------------------------------------------- stream promises

async fn open_is_idempotent_and_starts_empty(f: StreamFixture) {
    let id = sid("acc", "build/1");
    let first = f.store.open(&id).await.unwrap();
    let again = f.store.open(&id).await.unwrap();
    assert!(first.open && again.open);
    assert_eq!(
        (again.lines, again.bytes, again.last_contiguous_pos),
        (0, 0, None)
    );
    assert_eq!(again.id, id);
}

async fn append_to_unopened_stream_is_not_found(f: StreamFixture) {
    let err = f
        .store
        .append(&sid("acc", "never-opened"), lines(0..2))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound);
    assert_eq!(
        f.store.meta(&sid("acc", "never-opened")).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn retried_batch_is_stored_once(f: StreamFixture) {
    let id = sid("acc", "retry");
    f.store.open(&id).await.unwrap();
    let ack = f.store.append(&id, lines(0..5)).await.unwrap();
    assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (5, 0, 5));
    let retry = f.store.append(&id, lines(0..5)).await.unwrap();
    assert_eq!(
        (retry.appended, retry.duplicates, retry.next_pos),
        (0, 5, 5)
    );
    assert_eq!(retry.last_contiguous_pos, Some(4));
    let stored = f.store.read(&id, 0, 100).await.unwrap();
    assert_eq!(positions(&stored), vec![0, 1, 2, 3, 4]);
    let meta = f.store.meta(&id).await.unwrap();
    assert_eq!(meta.lines, 5);
    assert_eq!(
        meta.bytes,
        lines(0..5).iter().map(|l| l.json.len() as u64).sum::<u64>()
    );
}

async fn same_batch_through_two_replicas_is_stored_once(f: StreamFixture) {
    let id = sid("acc", "two-replicas");
    let (a, b) = (f.store.clone(), (f.replica)());
    a.open(&id).await.unwrap();
    let batch = lines(0..200);
    let (ra, rb) = tokio::join!(a.append(&id, batch.clone()), b.append(&id, batch.clone()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.appended + rb.appended, 200, "{ra:?} {rb:?}");
    assert_eq!(ra.duplicates + rb.duplicates, 200, "{ra:?} {rb:?}");
    let stored = b.read(&id, 0, 1000).await.unwrap();
    assert_eq!(positions(&stored), (0..200).collect::<Vec<_>>());
    assert_eq!(a.meta(&id).await.unwrap().lines, 200);
}

async fn overlapping_batches_store_each_pos_once(f: StreamFixture) {
    let id = sid("acc", "overlap");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..10)).await.unwrap();
    let ack = f.store.append(&id, lines(5..15)).await.unwrap();
    assert_eq!((ack.appended, ack.duplicates), (5, 5));
    let mut twice = lines(15..17);
    twice.push(line(15));
    let ack = f.store.append(&id, twice).await.unwrap();
    assert_eq!((ack.appended, ack.duplicates, ack.next_pos), (2, 1, 17));
    assert_eq!(
        positions(&f.store.read(&id, 0, 100).await.unwrap()),
        (0..17).collect::<Vec<_>>()
    );
}

async fn gap_stays_a_gap_until_filled(f: StreamFixture) {
    let id = sid("acc", "gap");
    f.store.open(&id).await.unwrap();
    let ack = f
        .store
        .append(&id, vec![line(0), line(1), line(4), line(5)])
        .await
        .unwrap();
    assert_eq!((ack.last_contiguous_pos, ack.next_pos), (Some(1), 2));
    assert_eq!(
        positions(&f.store.read(&id, 0, 100).await.unwrap()),
        vec![0, 1, 4, 5]
    );
    let ack = f.store.append(&id, vec![line(3)]).await.unwrap();
    assert_eq!(ack.next_pos, 2, "3 alone does not close the gap at 2");
    let ack = f.store.append(&id, vec![line(2)]).await.unwrap();
    assert_eq!((ack.last_contiguous_pos, ack.next_pos), (Some(5), 6));
    assert_eq!(
        positions(&f.store.read(&id, 0, 100).await.unwrap()),
        vec![0, 1, 2, 3, 4, 5]
    );
    let retry = f.store.append(&id, vec![line(3), line(4)]).await.unwrap();
    assert_eq!(
        (retry.appended, retry.duplicates),
        (0, 2),
        "filled gap lines are duplicates on retry"
    );
}

async fn out_of_order_batch_is_read_in_pos_order(f: StreamFixture) {
    let id = sid("acc", "shuffled");
    f.store.open(&id).await.unwrap();
    f.store
        .append(&id, vec![line(3), line(0), line(2), line(1)])
        .await
        .unwrap();
    let stored = f.store.read(&id, 0, 10).await.unwrap();
    assert_eq!(positions(&stored), vec![0, 1, 2, 3]);
    assert_eq!(
        stored[2],
        line(2),
        "the stored JSON is served byte for byte"
    );
}

async fn read_honours_from_and_max(f: StreamFixture) {
    let id = sid("acc", "paging");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..50)).await.unwrap();
    assert_eq!(
        positions(&f.store.read(&id, 10, 5).await.unwrap()),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(
        positions(&f.store.read(&id, 48, 100).await.unwrap()),
        vec![48, 49]
    );
    assert!(f.store.read(&id, 50, 100).await.unwrap().is_empty());
    assert!(f.store.read(&id, 0, 0).await.unwrap().is_empty());
}

async fn closed_stream_refuses_lines_and_reopen_keeps_them(f: StreamFixture) {
    let id = sid("acc", "closing");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..3)).await.unwrap();
    let closed = f.store.close(&id).await.unwrap();
    assert!(!closed.open);
    assert_eq!(closed.lines, 3);
    assert_eq!(
        f.store.append(&id, lines(3..4)).await.unwrap_err(),
        StoreError::Closed
    );
    let reopened = f.store.open(&id).await.unwrap();
    assert!(reopened.open);
    f.store.append(&id, lines(3..4)).await.unwrap();
    assert_eq!(
        positions(&f.store.read(&id, 0, 10).await.unwrap()),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        f.store.close(&sid("acc", "nope")).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn close_if_idle_leaves_a_stream_active_since_open(f: StreamFixture) {
    let id = sid("acc", "idle");
    f.store.open(&id).await.unwrap();
    // What an expiry sweep saw a little before this write (Redis keeps the time of
    // the last activity in milliseconds).
    let seen = f.store.meta(&id).await.unwrap().last_activity - Duration::from_millis(5);
    f.store.append(&id, lines(0..1)).await.unwrap();
    assert_eq!(f.store.close_if_idle(&id, seen).await.unwrap(), None);
    f.store.append(&id, lines(1..2)).await.unwrap();
    let idle = f.store.meta(&id).await.unwrap().last_activity;
    let closed = f.store.close_if_idle(&id, idle).await.unwrap().unwrap();
    assert!(!closed.open);
    assert_eq!(closed.lines, 2);
    assert_eq!(
        f.store.append(&id, lines(2..3)).await.unwrap_err(),
        StoreError::Closed
    );
    assert_eq!(
        f.store
            .close_if_idle(&sid("acc", "nope"), idle)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn remove_if_unchanged_keeps_a_stream_reopened_since_its_close(f: StreamFixture) {
    let id = sid("acc", "reopened");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..2)).await.unwrap();
    let closed = f.store.close(&id).await.unwrap();
    // Another replica reopens it and stores a line while it is being archived.
    let other = (f.replica)();
    other.open(&id).await.unwrap();
    other.append(&id, lines(2..3)).await.unwrap();
    assert!(
        !f.store
            .remove_if_unchanged(&id, closed.last_activity)
            .await
            .unwrap()
    );
    assert_eq!(
        positions(&f.store.read(&id, 0, 10).await.unwrap()),
        vec![0, 1, 2]
    );
    let closed = f.store.close(&id).await.unwrap();
    assert!(
        f.store
            .remove_if_unchanged(&id, closed.last_activity)
            .await
            .unwrap()
    );
    assert_eq!(f.store.meta(&id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(
        f.store
            .remove_if_unchanged(&id, closed.last_activity)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn tail_backfills_follows_live_lines_and_ends_at_close(f: StreamFixture) {
    let id = sid("acc", "tail");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..3)).await.unwrap();
    let mut tail = f.store.tail(&id, 0).await.unwrap();
    let (backfill, eof) = collect_tail(&mut tail, 3).await;
    assert_eq!((positions(&backfill), eof), (vec![0, 1, 2], false));
    // Written through another handle (replica) while the tail waits.
    let writer = (f.replica)();
    let id2 = id.clone();
    let write = tokio::spawn(async move {
        writer.append(&id2, lines(3..6)).await.unwrap();
        writer.close(&id2).await.unwrap();
    });
    let (live, _) = collect_tail(&mut tail, 3).await;
    assert_eq!(positions(&live), vec![3, 4, 5]);
    write.await.unwrap();
    let (rest, eof) = collect_tail(&mut tail, usize::MAX).await;
    assert!(
        rest.is_empty() && eof,
        "after the last line comes Eof, got {:?}",
        positions(&rest)
    );
    assert!(tail.next().await.is_none(), "nothing after Eof");
}

async fn tail_resumes_from_a_position(f: StreamFixture) {
    let id = sid("acc", "resume");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..10)).await.unwrap();
    f.store.close(&id).await.unwrap();
    let mut tail = f.store.tail(&id, 7).await.unwrap();
    let (seen, eof) = collect_tail(&mut tail, usize::MAX).await;
    assert_eq!(positions(&seen), vec![7, 8, 9]);
    assert!(eof);
}

async fn tail_past_a_gap_is_not_rewound(f: StreamFixture) {
    let id = sid("acc", "tail-gap");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, vec![line(0), line(2)]).await.unwrap();
    let mut tail = f.store.tail(&id, 0).await.unwrap();
    let (seen, _) = collect_tail(&mut tail, 2).await;
    assert_eq!(positions(&seen), vec![0, 2]);
    f.store.append(&id, vec![line(1), line(3)]).await.unwrap();
    let (next, _) = collect_tail(&mut tail, 1).await;
    assert_eq!(
        positions(&next),
        vec![3],
        "the gap fill is stored but the tail moves on"
    );
    assert_eq!(
        positions(&f.store.read(&id, 0, 10).await.unwrap()),
        vec![0, 1, 2, 3],
        "backfill sees the fill"
    );
}

async fn tail_of_unknown_stream_is_not_found(f: StreamFixture) {
    assert!(matches!(
        f.store.tail(&sid("acc", "ghost"), 0).await,
        Err(StoreError::NotFound)
    ));
}

async fn remove_forgets_the_stream(f: StreamFixture) {
    let id = sid("acc", "gone");
    f.store.open(&id).await.unwrap();
    f.store.append(&id, lines(0..3)).await.unwrap();
    f.store.remove(&id).await.unwrap();
    assert_eq!(f.store.meta(&id).await.unwrap_err(), StoreError::NotFound);
    assert_eq!(
        f.store.read(&id, 0, 10).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(f.store.remove(&id).await.unwrap_err(), StoreError::NotFound);
    let fresh = f.store.open(&id).await.unwrap();
    assert_eq!(fresh.lines, 0, "a removed key opens empty");
}

async fn list_shows_one_accounts_streams_only(f: StreamFixture) {
    for key in ["b", "a/1", "a/2"] {
        f.store.open(&sid("mine", key)).await.unwrap();
    }
    f.store.open(&sid("other", "secret")).await.unwrap();
    f.store
        .append(&sid("mine", "a/1"), lines(0..4))
        .await
        .unwrap();
    let mut listed = f
        .store
        .list(&AccountId::new("mine").unwrap())
        .await
        .unwrap();
    listed.sort_by(|x, y| x.id.key.cmp(&y.id.key));
    let keys: Vec<&str> = listed.iter().map(|m| m.id.key.as_str()).collect();
    assert_eq!(keys, vec!["a/1", "a/2", "b"]);
    assert_eq!(listed[0].lines, 4);
    assert!(
        f.store
            .list(&AccountId::new("nobody").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn list_all_shows_every_accounts_streams(f: StreamFixture) {
    // Enough accounts that, on a cluster, their keys sit on every node.
    let accounts: Vec<String> = (0..12).map(|i| format!("account-{i}")).collect();
    for (i, account) in accounts.iter().enumerate() {
        let id = sid(account, "build/log");
        f.store.open(&id).await.unwrap();
        f.store.append(&id, lines(0..i as u64 + 1)).await.unwrap();
    }
    let mut listed: Vec<(String, u64)> = f
        .store
        .list_all()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id.account.to_string(), m.lines))
        .collect();
    listed.sort();
    let mut want: Vec<(String, u64)> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), i as u64 + 1))
        .collect();
    want.sort();
    assert_eq!(listed, want);
}

async fn keys_that_differ_only_by_segments_do_not_alias(f: StreamFixture) {
    let (a, b) = (sid("acc", "x/y"), sid("acc", "x"));
    f.store.open(&a).await.unwrap();
    f.store.open(&b).await.unwrap();
    f.store.append(&a, lines(0..2)).await.unwrap();
    assert!(f.store.read(&b, 0, 10).await.unwrap().is_empty());
    assert_eq!(f.store.meta(&sid("acc", "x/y")).await.unwrap().lines, 2);
    assert_eq!(
        f.store.meta(&sid("acc2", "x/y")).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn large_batch_is_stored_whole_and_its_retry_once(f: StreamFixture) {
    let id = sid("acc", "large-batch");
    f.store.open(&id).await.unwrap();
    let mut batch = lines(0..5000);
    batch.reverse(); // order within a batch does not matter
    let ack = f.store.append(&id, batch).await.unwrap();
    assert_eq!(
        (ack.appended, ack.duplicates, ack.next_pos),
        (5000, 0, 5000)
    );
    let ack = f.store.append(&id, lines(2500..7500)).await.unwrap();
    assert_eq!(
        (ack.appended, ack.duplicates, ack.next_pos),
        (2500, 2500, 7500)
    );
    let stored = f.store.read(&id, 0, 10_000).await.unwrap();
    assert_eq!(positions(&stored), (0..7500).collect::<Vec<_>>());
}

async fn health_is_ok_when_the_backend_answers(f: StreamFixture) {
    f.store.health().await.unwrap();
}

macro_rules! stream_conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;
            stream_conformance!(@tests $fixture;
                open_is_idempotent_and_starts_empty,
                append_to_unopened_stream_is_not_found,
                retried_batch_is_stored_once,
                same_batch_through_two_replicas_is_stored_once,
                overlapping_batches_store_each_pos_once,
                gap_stays_a_gap_until_filled,
                out_of_order_batch_is_read_in_pos_order,
                read_honours_from_and_max,
                closed_stream_refuses_lines_and_reopen_keeps_them,
                close_if_idle_leaves_a_stream_active_since_open,
                remove_if_unchanged_keeps_a_stream_reopened_since_its_close,
                tail_backfills_follows_live_lines_and_ends_at_close,
                tail_resumes_from_a_position,
                tail_past_a_gap_is_not_rewound,
                tail_of_unknown_stream_is_not_found,
                remove_forgets_the_stream,
                list_shows_one_accounts_streams_only,
                list_all_shows_every_accounts_streams,
                keys_that_differ_only_by_segments_do_not_alias,
                health_is_ok_when_the_backend_answers,
                large_batch_is_stored_whole_and_its_retry_once,
            );
        }
    };
    (@tests $fixture:path; $($promise:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $promise() {
                super::$promise($fixture().await).await;
            }
        )*
    };
}

stream_conformance!(memory_stream, memory_streams);
stream_conformance!(redis_stream, redis_streams);
stream_conformance!(redis_cluster_stream, redis_cluster_streams);

// ------------------------------------------------------------------ blob promises

struct BlobFixture {
    blobs: BlobStore,
    _dir: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
}

async fn memory_blobs() -> BlobFixture {
    BlobFixture {
        blobs: BlobStore::memory(),
        _dir: None,
        _server: None,
    }
}

async fn local_blobs() -> BlobFixture {
    let dir = tempfile::tempdir().unwrap();
    BlobFixture {
        blobs: BlobStore::local(dir.path().join("archives")).unwrap(),
        _dir: Some(dir),
        _server: None,
    }
}

/// S3 settings for a moto server and bucket, as a deployment would pass them.
pub fn moto_settings(server: &S3Server, bucket: &str, prefix: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(server.endpoint()),
        region: Some(runlog_testkit::s3::REGION.to_owned()),
        access_key_id: Some(runlog_testkit::s3::ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(runlog_testkit::s3::SECRET_ACCESS_KEY.to_owned()),
        allow_http: true,
        retry_timeout: Duration::from_secs(5),
        ..S3Settings::default()
    }
}

async fn s3_blobs() -> BlobFixture {
    let server = S3Server::start_new().await;
    server.create_bucket("archives").await;
    BlobFixture {
        blobs: moto_settings(&server, "archives", "runlog/test")
            .blob_store()
            .unwrap(),
        _dir: None,
        _server: Some(server),
    }
}

async fn archive_round_trips_byte_for_byte(f: BlobFixture) {
    let id = sid("acc", "stage/step.log");
    assert!(!f.blobs.exists(&id).await.unwrap());
    let body = Bytes::from_static(b"\x1f\x8b pretend gzip \x00\xff");
    f.blobs.put(&id, body.clone()).await.unwrap();
    assert!(f.blobs.exists(&id).await.unwrap());
    assert_eq!(f.blobs.get(&id).await.unwrap(), body);
    let replaced = Bytes::from_static(b"second version");
    f.blobs.put(&id, replaced.clone()).await.unwrap();
    assert_eq!(
        f.blobs.get(&id).await.unwrap(),
        replaced,
        "a re-upload replaces the archive"
    );
}

async fn missing_archive_is_not_found(f: BlobFixture) {
    let err = f.blobs.get(&sid("acc", "absent")).await.unwrap_err();
    assert!(
        matches!(err, runlog_service::store::blob::BlobError::NotFound),
        "{err:?}"
    );
}

async fn archives_are_listed_per_account(f: BlobFixture) {
    for (account, key) in [("a1", "x"), ("a1", "y/z"), ("a2", "x")] {
        f.blobs
            .put(&sid(account, key), Bytes::from_static(b"data"))
            .await
            .unwrap();
    }
    let mut keys: Vec<String> = f
        .blobs
        .list(&AccountId::new("a1").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.key.as_str().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["x", "y/z"]);
    assert!(
        f.blobs
            .list(&AccountId::new("a3").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn large_archive_round_trips(f: BlobFixture) {
    // Above the multipart threshold, with a part boundary inside a chunk.
    let size = runlog_service::store::s3::MULTIPART_THRESHOLD + 3 * 1024 * 1024 + 17;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let id = sid("acc", "big");
    f.blobs.put(&id, Bytes::from(body.clone())).await.unwrap();
    let got = f.blobs.get(&id).await.unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "large archive content differs");
}

async fn health_is_ok_when_storage_answers(f: BlobFixture) {
    f.blobs.health().await.unwrap();
}

macro_rules! blob_conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;
            blob_conformance!(@tests $fixture;
                archive_round_trips_byte_for_byte,
                missing_archive_is_not_found,
                archives_are_listed_per_account,
                large_archive_round_trips,
                health_is_ok_when_storage_answers,
            );
        }
    };
    (@tests $fixture:path; $($promise:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $promise() {
                super::$promise($fixture().await).await;
            }
        )*
    };
}

blob_conformance!(memory_blob, memory_blobs);
blob_conformance!(local_blob, local_blobs);
blob_conformance!(s3_blob, s3_blobs);
