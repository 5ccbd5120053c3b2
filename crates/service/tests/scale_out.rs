//! Two log-service replicas sharing one Redis and one S3 bucket, spoken to over real
//! HTTP on loopback: a line written through replica A is tailed through replica B,
//! retries through either replica store once, archives cross replicas, upload links
//! point at S3 itself, and Redis or S3 outages cost 503s and retries, never lines.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, SseReader, assert_error, lines};
use livelog::{HttpLogClient, LogClient, Writer, WriterConfig};
use reqwest::{Method, StatusCode};
use runlog_protocol::engine::LogConfig;
use runlog_protocol::service::{AppendAck, Health, LinkResponse};
use runlog_protocol::{LogLine, Scope};
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_service::store::s3::S3Settings;
use runlog_service::store::{BlobStore, StreamStore};
use runlog_testkit::redis::{RedisCluster, RedisServer};
use runlog_testkit::s3::S3Server;
use runlog_testkit::service::{TestService, test_config};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

const ACCOUNT: &str = "acc";
const BUCKET: &str = "runlog-archives";

/// Redis, S3 and two replicas over them. Each replica builds its own store
/// clients, as two processes would.
struct Cluster {
    redis: RedisServer,
    s3: S3Server,
    a: TestService,
    b: TestService,
    _dir: tempfile::TempDir,
}

fn s3_settings(s3: &S3Server) -> S3Settings {
    S3Settings {
        bucket: BUCKET.to_owned(),
        prefix: "runlog".to_owned(),
        endpoint: Some(s3.endpoint()),
        region: Some(runlog_testkit::s3::REGION.to_owned()),
        access_key_id: Some(runlog_testkit::s3::ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(runlog_testkit::s3::SECRET_ACCESS_KEY.to_owned()),
        allow_http: true,
        retry_timeout: Duration::from_secs(2),
        ..S3Settings::default()
    }
}

fn replica_stores(redis: &RedisServer, s3: &S3Server) -> (Arc<dyn StreamStore>, BlobStore) {
    let settings = s3_settings(s3);
    let overflow = settings.overflow().object_store().unwrap();
    let config = RedisConfig {
        url: redis.url(),
        block: Duration::from_millis(500),
        response_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    let streams = RedisStreamStore::new(config, Some(overflow)).unwrap();
    (Arc::new(streams), settings.blob_store().unwrap())
}

async fn cluster() -> Cluster {
    let (redis, s3) = tokio::join!(RedisServer::start_new(), S3Server::start_new());
    s3.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    // One admin secret for both replicas: a token minted by one is honoured by the other.
    let config = test_config(dir.path());
    let replica = |name: &str| {
        let mut c = config.clone();
        c.data_dir = dir.path().join(name);
        c
    };
    let (streams, blobs) = replica_stores(&redis, &s3);
    let a = TestService::start_with_config_and_stores(replica("a"), streams, blobs).await;
    let (streams, blobs) = replica_stores(&redis, &s3);
    let b = TestService::start_with_config_and_stores(replica("b"), streams, blobs).await;
    Cluster {
        redis,
        s3,
        a,
        b,
        _dir: dir,
    }
}

impl Cluster {
    /// A writer on replica A and a reader on replica B, the shape of most tests here.
    fn write_a_read_b(&self) -> (Api, Api) {
        (
            Api::new(&self.a, ACCOUNT, Scope::Write),
            Api::new(&self.b, ACCOUNT, Scope::Read),
        )
    }
}

fn writer_client(svc: &TestService, indirect_upload: bool) -> Arc<dyn LogClient> {
    let cfg = LogConfig {
        url: svc.url(),
        account_id: ACCOUNT.to_owned(),
        token: svc.token(ACCOUNT, Scope::Write),
        indirect_upload,
        ..LogConfig::default()
    };
    Arc::new(HttpLogClient::new(&cfg).unwrap())
}

/// The archive as lines, through `api`'s replica.
async fn archive(api: &Api, key: &str) -> Option<Vec<LogLine>> {
    let r = api.req(Method::GET, "/blob", key).send().await.unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    Some(
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

fn assert_exactly_once_in_order(what: &str, got: &[u64], n: u64) {
    let want: Vec<u64> = (0..n).collect();
    if got != want {
        let dups = got.windows(2).filter(|w| w[0] >= w[1]).count();
        panic!(
            "{what}: {} positions, {dups} out of order or repeated; expected 0..{n}",
            got.len()
        );
    }
}

async fn poll<F, Fut>(what: &str, limit: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !ok().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_written_through_a_is_tailed_through_b_with_backfill_then_live() {
    let c = cluster().await;
    let (a, b) = c.write_a_read_b();
    let key = "job/1/step";
    a.open(key).await;
    a.put_ok(key, &lines(0..5)).await;

    let mut tail = SseReader::new(b.tail(key, None).await);
    tail.read_until(Duration::from_secs(10), |t| t.line_positions().len() >= 5)
        .await;
    assert_eq!(
        tail.line_positions(),
        vec![0, 1, 2, 3, 4],
        "backfill through B"
    );

    a.put_ok(key, &lines(5..10)).await;
    tail.read_until(Duration::from_secs(10), |t| t.line_positions().len() >= 10)
        .await;
    a.close(key, false).await;
    tail.read_to_end(Duration::from_secs(10)).await;
    assert_eq!(
        tail.line_positions(),
        (0..10).collect::<Vec<_>>(),
        "live through B"
    );
    assert!(tail.saw_eof(), "B's tail ends when A closes the stream");

    let first: LogLine = serde_json::from_str(&tail.events[0].data).unwrap();
    assert_eq!(first.out, "line 0\n");

    let mut resumed = SseReader::new(b.tail(key, Some(6)).await);
    resumed.read_to_end(Duration::from_secs(10)).await;
    assert_eq!(
        resumed.line_positions(),
        vec![7, 8, 9],
        "Last-Event-ID resumes across replicas"
    );
    // An id past every possible line resumes after all of them (Redis's XRANGE
    // refused the position it made of it: a 503).
    let mut past = SseReader::new(b.tail(key, Some(u64::MAX - 1)).await);
    past.read_to_end(Duration::from_secs(10)).await;
    assert!(past.line_positions().is_empty());
    assert!(past.saw_eof(), "the tail past the end still ends with eof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_b_behind_when_a_expires_the_stream_still_gets_every_line() {
    let c = cluster().await;
    let (a, b) = c.write_a_read_b();
    let key = "job/expiring";
    a.open(key).await;
    for start in (0..100_000u64).step_by(2_000) {
        a.put_ok(key, &lines(start..start + 2_000)).await;
    }
    // Connected through B, not reading yet: far more is left than socket buffers hold.
    let behind = b.tail(key, None).await;
    a.close(key, false).await;
    // What A's expiry sweep does: the lines become the archive (in S3), then leave Redis.
    let id = runlog_service::store::StreamId {
        account: ACCOUNT.parse().unwrap(),
        key: key.parse().unwrap(),
    };
    runlog_service::snapshot::snapshot_stream(c.a.state(), &id)
        .await
        .unwrap();
    c.a.state().streams().remove(&id).await.unwrap();
    let mut sse = SseReader::new(behind);
    sse.read_to_end(Duration::from_secs(60)).await;
    assert_exactly_once_in_order("B's viewer", &sse.line_positions(), 100_000);
    assert!(sse.saw_eof());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_batch_retried_against_a_and_b_is_stored_once() {
    let c = cluster().await;
    let (a, b) = (
        Api::new(&c.a, ACCOUNT, Scope::Write),
        Api::new(&c.b, ACCOUNT, Scope::Write),
    );
    let key = "retry/both";
    a.open(key).await;
    let batch = lines(0..500);
    let (ra, rb) = tokio::join!(a.put(key, &batch), b.put(key, &batch));
    let ra: AppendAck = ra.json().await.unwrap();
    let rb: AppendAck = rb.json().await.unwrap();
    assert_eq!(ra.appended + rb.appended, 500, "{ra:?} {rb:?}");
    assert_eq!(ra.duplicates + rb.duplicates, 500, "{ra:?} {rb:?}");
    // And once more, late, through B.
    let again = b.put_ok(key, &batch[100..200]).await;
    assert_eq!(
        (again.appended, again.duplicates, again.next_pos),
        (0, 100, 500)
    );

    b.close(key, true).await;
    let archived = archive(&a, key).await.expect("the snapshot archive");
    let positions: Vec<u64> = archived.iter().map(|l| l.pos).collect();
    assert_exactly_once_in_order("archive", &positions, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_uploaded_via_a_is_read_via_b() {
    let c = cluster().await;
    let (a, b) = c.write_a_read_b();
    let key = "archived/run";
    let ndjson: String = lines(0..300).iter().map(|l| format!("{l}\n")).collect();
    let r = a
        .req(Method::POST, "/blob", key)
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let got = archive(&b, key).await.expect("B serves A's archive");
    let positions: Vec<u64> = got.iter().map(|l| l.pos).collect();
    assert_exactly_once_in_order("archive via B", &positions, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_link_is_an_s3_presigned_url_that_bypasses_the_service() {
    let c = cluster().await;
    let (a, b) = c.write_a_read_b();
    let key = "direct/upload";
    let r = a
        .req(Method::POST, "/blob/link/upload", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let link: LinkResponse = r.json().await.unwrap();
    assert!(
        link.link.starts_with(&c.s3.endpoint()),
        "link points at S3, not the service: {}",
        link.link
    );
    assert!(
        link.link.contains("X-Amz-Signature="),
        "a SigV4 presigned URL: {}",
        link.link
    );
    assert!(
        link.link.contains("/runlog/acc/direct/upload.ndjson.gz"),
        "under the configured prefix: {}",
        link.link
    );

    let ndjson: String = lines(0..50).iter().map(|l| format!("{l}\n")).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(ndjson.as_bytes()).unwrap();
    // No account token: the URL is its own authorisation.
    let put = reqwest::Client::new()
        .put(&link.link)
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_success(),
        "S3 accepted the PUT: {}",
        put.status()
    );

    let got = archive(&b, key)
        .await
        .expect("the directly uploaded archive");
    let positions: Vec<u64> = got.iter().map(|l| l.pos).collect();
    assert_exactly_once_in_order("direct upload", &positions, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_stream_loses_and_duplicates_nothing() {
    const N: u64 = 20_000;
    let mut c = cluster().await;
    let key = "outage/redis";
    let spool = tempfile::tempdir().unwrap();
    let reader = Api::new(&c.b, ACCOUNT, Scope::Read);
    let cfg = WriterConfig {
        spool_dir: spool.path().to_path_buf(),
        close_deadline: Duration::from_secs(60),
        max_retry_delay: Duration::from_millis(200),
        max_batch_lines: 500,
        ..WriterConfig::new(key)
    };
    // Archive through a presigned link: straight from the writer to S3.
    let w = Writer::new(writer_client(&c.a, false), cfg);
    let text = |i: u64| format!("line {i:06}\n");
    for i in 0..N / 2 {
        w.write(text(i).as_bytes());
    }
    // Some lines must have reached Redis before it goes away.
    poll("first half streamed", Duration::from_secs(20), || {
        let p = w.progress();
        async move { p.streamed_lines > 0 }
    })
    .await;
    c.redis.stop().await;
    let unavailable = || {
        c.a.state()
            .metrics()
            .errors(StatusCode::SERVICE_UNAVAILABLE)
    };
    let before = unavailable();
    for i in N / 2..N {
        w.write(text(i).as_bytes());
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let status = reqwest::get(format!("{}/healthz", c.a.url()))
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "health reports Redis down"
    );
    // Bring Redis back only once the writer has hit the outage: a 503 answered to
    // one of its batches (the health check above is the one other 503).
    poll("a batch refused with 503", Duration::from_secs(20), || {
        let hit = unavailable() >= before + 2;
        async move { hit }
    })
    .await;
    c.redis.start().await;
    let report = w.close().await;

    assert_eq!(report.lines, N, "{report:?}");
    assert_eq!(report.streamed_lines, N, "{report:?}");
    assert!(
        report.retries > 0,
        "the outage must have cost retries: {report:?}"
    );
    assert!(report.archived, "{report:?}");

    let mut tail = SseReader::new(reader.tail(key, None).await);
    tail.read_to_end(Duration::from_secs(60)).await;
    assert_exactly_once_in_order("live via B", &tail.line_positions(), N);
    let archived = archive(&reader, key).await.expect("archive in S3");
    let positions: Vec<u64> = archived.iter().map(|l| l.pos).collect();
    assert_exactly_once_in_order("archive", &positions, N);
    assert!(
        archived.iter().all(|l| l.out == text(l.pos)),
        "archive text intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_at_close_the_writers_outbox_delivers_the_archive_later() {
    let mut c = cluster().await;
    let key = "outage/s3";
    let (spool, outbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = WriterConfig {
        spool_dir: spool.path().to_path_buf(),
        outbox_dir: Some(outbox.path().to_path_buf()),
        close_deadline: Duration::from_secs(4),
        max_retry_delay: Duration::from_millis(200),
        ..WriterConfig::new(key)
    };
    let w = Writer::new(writer_client(&c.a, true), cfg);
    for i in 0..1000 {
        w.write(format!("before close {i}\n").as_bytes());
    }
    c.s3.stop().await;
    let report = w.close().await;
    assert_eq!(
        report.streamed_lines, 1000,
        "live lines do not need S3: {report:?}"
    );
    assert!(!report.archived && report.outboxed, "{report:?}");

    let reader = Api::new(&c.b, ACCOUNT, Scope::Read);
    let r = reader.req(Method::GET, "/blob", key).send().await.unwrap();
    let msg = assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(msg.contains("archive"), "{msg}");

    c.s3.start().await;
    c.s3.create_bucket(BUCKET).await; // moto forgets everything on restart
    // The closed writer's background task retries too: whichever of it and this pass
    // gets the entry's lock first delivers it; after this pass, it is delivered.
    let delivered = livelog::deliver_outbox_with(outbox.path(), writer_client(&c.b, true)).await;
    assert!(
        delivered.delivered <= 1 && delivered.pending == 0 && delivered.failed.is_empty(),
        "{delivered:?}"
    );
    let left = std::fs::read_dir(outbox.path()).unwrap().count();
    assert_eq!(left, 0, "the outbox is empty once delivered");
    let archived = archive(&reader, key)
        .await
        .expect("archive delivered from the outbox");
    let positions: Vec<u64> = archived.iter().map(|l| l.pos).collect();
    assert_exactly_once_in_order("outbox archive", &positions, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_503_while_redis_is_down_and_recover_by_themselves() {
    let mut c = cluster().await;
    let api = Api::new(&c.a, ACCOUNT, Scope::Write);
    let key = "flaky/redis";
    api.open(key).await;
    c.redis.stop().await;

    let health = reqwest::get(format!("{}/healthz", c.a.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Health = health.json().await.unwrap();
    assert!(!health.ok);
    assert_ne!(health.backends["streams"], "ok", "{health:?}");
    assert_eq!(health.backends["blobs"], "ok", "{health:?}");
    let msg = assert_error(
        api.put(key, &lines(0..3)).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(msg.contains("redis unavailable"), "{msg}");
    let r = api.req(Method::GET, "/stream", key).send().await.unwrap();
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
    // The archive side keeps working without Redis.
    let r = api
        .req(Method::POST, "/blob", key)
        .body(format!("{}\n", common::line(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    c.redis.start().await;
    poll(
        "appends succeed again after Redis is back",
        Duration::from_secs(15),
        || async { api.put(key, &lines(0..3)).await.status() == StatusCode::OK },
    )
    .await;
    let health = reqwest::get(format!("{}/healthz", c.b.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_starts_while_redis_and_s3_are_down_and_heals_when_they_come_up() {
    let (mut redis, mut s3) = tokio::join!(RedisServer::start_new(), S3Server::start_new());
    redis.stop().await;
    s3.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let (streams, blobs) = replica_stores(&redis, &s3);
    let svc =
        TestService::start_with_config_and_stores(test_config(dir.path()), streams, blobs).await;

    let health: Health = reqwest::get(format!("{}/healthz", svc.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!health.ok);
    assert_ne!(health.backends["streams"], "ok");
    assert_ne!(health.backends["blobs"], "ok");
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    let r = api.req(Method::POST, "/stream", "k").send().await.unwrap();
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;

    redis.start().await;
    s3.start().await;
    s3.create_bucket(BUCKET).await;
    poll("health turns OK", Duration::from_secs(20), || async {
        reqwest::get(format!("{}/healthz", svc.url()))
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
    api.open("k").await;
    assert_eq!(api.put_ok("k", &lines(0..2)).await.next_pos, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_configured_with_a_redis_url_keeps_its_streams_in_redis() {
    let redis = RedisServer::start_new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = runlog_service::ServiceConfig {
        redis_url: Some(redis.url()),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(config.clone()).await;
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    api.open("cfg/key").await;
    api.put_ok("cfg/key", &lines(0..3)).await;
    let xlen = redis
        .raw_command("XLEN runlog:{acc}:s:cfg/key:lines")
        .await
        .unwrap();
    assert!(xlen.starts_with(":3"), "the lines are in Redis: {xlen:?}");

    // A second service on the same configuration sees them: nothing is process-local.
    let other = TestService::start_with(config).await;
    let reader = Api {
        base: other.url(),
        ..Api::new(&svc, ACCOUNT, Scope::Read)
    };
    let mut tail = SseReader::new(reader.tail("cfg/key", None).await);
    tail.read_until(Duration::from_secs(10), |t| t.line_positions().len() >= 3)
        .await;
    assert_eq!(tail.line_positions(), vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_accounts_spread_over_the_nodes_and_replicas_share_every_stream() {
    let redis = RedisCluster::start_new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = runlog_service::ServiceConfig {
        redis_url: Some(redis.urls()),
        redis_cluster: true,
        ..test_config(dir.path())
    };
    let a = TestService::start_with(config.clone()).await;
    let b = TestService::start_with(config).await;
    let accounts: Vec<String> = (0..12).map(|i| format!("team-{i}")).collect();
    for account in &accounts {
        let api = Api::new(&a, account, Scope::Write);
        api.open("spread/log").await;
        assert_eq!(api.put_ok("spread/log", &lines(0..3)).await.next_pos, 3);
    }
    // Each account's keys share a slot; different accounts land on different nodes.
    let mut nodes_used = 0;
    for node in redis.nodes() {
        let keys = node.int_command("DBSIZE").await;
        if keys > 0 {
            nodes_used += 1;
        }
    }
    assert!(
        nodes_used >= 2,
        "12 accounts should not all hash to one node of 3: {nodes_used}"
    );
    // Every stream is visible through the other replica, backfill then live.
    for account in &accounts {
        let reader = Api {
            base: b.url(),
            ..Api::new(&a, account, Scope::Read)
        };
        let mut tail = SseReader::new(reader.tail("spread/log", None).await);
        tail.read_until(Duration::from_secs(10), |t| t.line_positions().len() >= 3)
            .await;
        assert_eq!(tail.line_positions(), vec![0, 1, 2], "{account}");
    }
    let writer = Api::new(&a, &accounts[0], Scope::Write);
    let reader = Api {
        base: b.url(),
        ..Api::new(&a, &accounts[0], Scope::Read)
    };
    let mut tail = SseReader::new(reader.tail("spread/log", Some(2)).await);
    writer.put_ok("spread/log", &lines(3..5)).await;
    writer.close("spread/log", false).await;
    tail.read_until(Duration::from_secs(10), |t| t.saw_eof())
        .await;
    assert_eq!(tail.line_positions(), vec![3, 4]);
    // The open-streams gauge lists every node's accounts (one stream was closed).
    let metrics = reqwest::get(format!("{}/metrics", b.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runlog_streams_open "))
        .unwrap_or_default();
    assert_eq!(open, (accounts.len() - 1).to_string(), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_url_keeps_streams_in_redis_over_tls_checked_against_the_given_ca() {
    let redis = RedisServer::start_new_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let config = runlog_service::ServiceConfig {
        redis_url: Some(redis.tls_url()),
        redis_ca_file: Some(redis.tls_ca_file()),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(config).await;
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    api.open("tls/key").await;
    assert_eq!(api.put_ok("tls/key", &lines(0..3)).await.next_pos, 3);
    // The lines went through the TLS port into the same Redis (read on the plain one).
    let xlen = redis
        .raw_command("XLEN runlog:{acc}:s:tls/key:lines")
        .await
        .unwrap();
    assert!(xlen.starts_with(":3"), "the lines are in Redis: {xlen:?}");
    // A tail reads over its own TLS connection.
    let reader = Api::new(&svc, ACCOUNT, Scope::Read);
    let mut tail = SseReader::new(reader.tail("tls/key", None).await);
    tail.read_until(Duration::from_secs(10), |t| t.line_positions().len() >= 3)
        .await;
    assert_eq!(tail.line_positions(), vec![0, 1, 2]);

    // A service that does not trust the CA refuses the server's certificate: Redis is
    // unavailable to it (503), it never falls back to plain text.
    let other_dir = tempfile::tempdir().unwrap();
    let untrusting = TestService::start_with(runlog_service::ServiceConfig {
        redis_url: Some(redis.tls_url()),
        ..test_config(other_dir.path())
    })
    .await;
    let api = Api::new(&untrusting, ACCOUNT, Scope::Write);
    let r = api
        .req(Method::POST, "/stream", "tls/other")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_ca_file_needs_a_tls_url_and_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read before the URL is checked").unwrap();
    for (url, ca_file, says) in [
        ("redis://127.0.0.1:1/", ca, "rediss://"),
        (
            "rediss://127.0.0.1:1/",
            dir.path().join("absent.pem"),
            "absent.pem",
        ),
    ] {
        let config = runlog_service::ServiceConfig {
            redis_url: Some(url.to_owned()),
            redis_ca_file: Some(ca_file),
            ..test_config(dir.path())
        };
        let err = runlog_service::backend::stream_store(&config)
            .await
            .err()
            .expect("refused at startup");
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_blob_store_url_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["http://bucket/prefix", "s3://", "bucket"] {
        let config = runlog_service::ServiceConfig {
            blob_backend: runlog_service::config::BlobBackend::S3(bad.to_owned()),
            ..test_config(dir.path())
        };
        let err = runlog_service::backend::blob_store(&config)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid S3 URL"), "{bad}: {err}");
    }
    let config = runlog_service::ServiceConfig {
        redis_url: Some("mysql://nope".to_owned()),
        ..test_config(dir.path())
    };
    let err = runlog_service::backend::stream_store(&config)
        .await
        .err()
        .expect("a bad Redis URL is refused");
    assert!(err.to_string().contains("redis"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_segment_left_at_the_mark_by_a_crashed_mover_is_taken_over() {
    use object_store::ObjectStoreExt as _;
    let (redis, s3) = tokio::join!(RedisServer::start_new(), S3Server::start_new());
    s3.create_bucket(BUCKET).await;
    let overflow = s3_settings(&s3).overflow().object_store().unwrap();
    let store = RedisStreamStore::new(
        RedisConfig {
            url: redis.url(),
            max_lines: 10,
            ..RedisConfig::default()
        },
        Some(overflow.clone()),
    )
    .unwrap();
    let id = runlog_service::store::StreamId {
        account: ACCOUNT.parse().unwrap(),
        key: "crashed/mover".parse().unwrap(),
    };
    let stored = |range: std::ops::Range<u64>| -> Vec<runlog_service::store::StoredLine> {
        range
            .map(|pos| runlog_service::store::StoredLine {
                pos,
                json: format!(r#"{{"pos":{pos},"out":"line {pos}\n"}}"#).into(),
            })
            .collect()
    };
    // What a mover that died between its write and its trim leaves: lines 0..5
    // (marked, to tell which copy is served).
    let leftover: String = (0..5)
        .map(|pos| format!("{{\"pos\":{pos},\"out\":\"line {pos} (moved)\\n\"}}\n"))
        .collect();
    overflow
        .put(
            &format!("{ACCOUNT}/crashed/mover/+{:020}.ndjson", 0).into(),
            leftover.into_bytes().into(),
        )
        .await
        .unwrap();
    store.open(&id).await.unwrap();
    for start in (0..200).step_by(20) {
        store.append(&id, stored(start..start + 20)).await.unwrap();
    }
    let all = store.read(&id, 0, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.pos).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    // Lines 0..5 come from the segment taken over, the rest as written.
    assert_eq!(&all[3].json[..], br#"{"pos":3,"out":"line 3 (moved)\n"}"#);
    assert_eq!(all[7].json, stored(7..8)[0].json);
    let segments = overflow
        .list_with_delimiter(Some(&format!("{ACCOUNT}/crashed/mover").into()))
        .await
        .unwrap()
        .objects
        .len();
    assert!(segments > 1, "the head kept moving after the takeover");
}
