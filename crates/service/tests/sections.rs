//! `GET /stream/sections` and the completeness ledger over real HTTP: sections found
//! as lines arrive, finished at close, kept beside the archive, and the ledger's
//! verdict for complete, gapped, lying and abandoned streams.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Api, assert_error};
use reqwest::{Method, StatusCode};
use runlog_protocol::Scope;
use runlog_protocol::ledger::{Basis, Incomplete, LineDigest};
use runlog_protocol::sections::{Outcome, SectionsAnswer};
use runlog_service::store::StreamId;
use runlog_testkit::service::{TestService, test_config};
use serde_json::{Value, json};
use std::time::Duration;

fn at(pos: u64, out: &str) -> Value {
    let time = format!("2026-11-20T10:00:{:02}.000Z", pos % 60);
    json!({"level": "info", "pos": pos, "out": out, "time": time})
}

/// Lines `range` of a log whose text is given by `text(pos)`.
fn log(range: std::ops::Range<u64>, text: impl Fn(u64) -> String) -> Vec<Value> {
    range.map(|p| at(p, &text(p))).collect()
}

fn text(pos: u64) -> String {
    match pos {
        1 => "::group::Build\n".into(),
        2 => {
            "\u{1b}[0Ksection_start:1732096800:compile[collapsed=true]\r\u{1b}[0KCompiling\n".into()
        }
        5 => "\u{1b}[0Ksection_end:1732096805:compile\r\u{1b}[0K\n".into(),
        7 => "::endgroup::\n".into(),
        8 => "--- :test_tube: Test\n".into(),
        _ => format!("line {pos}\n"),
    }
}

async fn sections(api: &Api, key: &str) -> SectionsAnswer {
    let r = api
        .req(Method::GET, "/stream/sections", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn sections_since(api: &Api, key: &str, since: &str) -> reqwest::Response {
    let url = format!("{}&since={since}", api.url("/stream/sections", key));
    api.http
        .get(url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
}

async fn close_with(api: &Api, key: &str, query: &str) -> reqwest::Response {
    let url = format!("{}&{query}", api.url("/stream", key));
    api.http
        .delete(url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
}

fn digest_of(lines: &[Value]) -> String {
    let mut d = LineDigest::default();
    lines
        .iter()
        .for_each(|l| d.line(l["out"].as_str().unwrap()));
    d.finish()
}

fn id(key: &str) -> StreamId {
    StreamId {
        account: "acc".parse().unwrap(),
        key: key.parse().unwrap(),
    }
}

#[tokio::test]
async fn sections_grow_live_and_are_kept_beside_the_archive_with_a_complete_ledger() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let all = log(0..12, text);
    api.put_ok("k", &all[..4]).await;

    let live = sections(&api, "k").await;
    assert!(live.open);
    assert_eq!(live.sections.len(), 2);
    assert_eq!(live.sections[1].parent, Some(0));
    assert_eq!(live.sections[1].title.as_deref(), Some("Compiling"));
    assert!(
        live.sections
            .iter()
            .all(|s| s.last_pos.is_none() && s.outcome.is_none())
    );
    assert!(live.ledger.is_none());

    api.put_ok("k", &all[4..]).await;
    let bytes: usize = all.iter().map(|l| l["out"].as_str().unwrap().len()).sum();
    let query = format!(
        "lines=12&bytes={bytes}&digest={}&outcome=failure",
        digest_of(&all)
    );
    let r = close_with(&api, "k", &query).await;
    assert_eq!(r.status(), StatusCode::OK);

    let done = sections(&api, "k").await;
    assert!(!done.open);
    let names: Vec<&str> = done.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Build", "compile", ":test_tube: Test"]);
    let build = &done.sections[0];
    assert_eq!(
        (build.first_pos, build.last_pos, build.lines),
        (1, Some(7), Some(7))
    );
    assert_eq!(build.outcome, Some(Outcome::Success));
    assert_eq!(build.duration_ms, Some(6000));
    let test = &done.sections[2];
    assert_eq!(
        test.last_pos,
        Some(11),
        "open at the end: ends at the last line"
    );
    assert_eq!(test.outcome, Some(Outcome::Failure), "the stream failed");
    let ledger = done.ledger.clone().unwrap();
    assert!(ledger.complete, "{ledger:?}");
    assert_eq!(ledger.basis, Basis::WriterTotals);
    assert_eq!(
        (ledger.lines, ledger.first_pos, ledger.last_pos),
        (12, Some(0), Some(11))
    );

    // Gone from the live store: answered from what was stored beside the archive.
    svc.state().streams().remove(&id("k")).await.unwrap();
    assert_eq!(sections(&api, "k").await, done);
}

#[tokio::test]
async fn lines_that_arrive_after_a_gap_are_indexed_once_it_fills() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let all = log(0..12, text);
    api.put_ok("k", &all[..2]).await;
    api.put_ok("k", &all[6..]).await;
    let before = sections(&api, "k").await;
    assert_eq!(
        before.sections.len(),
        1,
        "only what is contiguous: {before:?}"
    );
    // Fills 2..6, out of order within the batch too.
    let mut middle = all[2..6].to_vec();
    middle.reverse();
    api.put_ok("k", &middle).await;
    let after = sections(&api, "k").await;
    let closed: Vec<Option<u64>> = after.sections.iter().map(|s| s.last_pos).collect();
    assert_eq!(closed, [Some(7), Some(5), None]);
}

#[tokio::test]
async fn the_ledger_names_every_gap_mismatch_and_drop() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let mut all = log(0..12, |p| format!("line {p}\n"));
    all[3] = at(
        3,
        "[livelog] 40 lines (3200 bytes) were dropped starting after line 2: disk full\n",
    );
    api.put_ok("k", &all[..5]).await;
    api.put_ok("k", &all[8..10]).await;
    let query = format!("lines=12&bytes=1&digest={}", digest_of(&all));
    assert_eq!(close_with(&api, "k", &query).await.status(), StatusCode::OK);
    let ledger = sections(&api, "k").await.ledger.unwrap();
    assert!(!ledger.complete);
    let reasons = &ledger.reasons;
    assert!(
        reasons.contains(&Incomplete::Gap { from: 5, to: 7 }),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&Incomplete::Gap { from: 10, to: 11 }),
        "{reasons:?}"
    );
    assert!(reasons.contains(&Incomplete::Lines {
        stated: 12,
        held: 7
    }));
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, Incomplete::Bytes { stated: 1, .. }))
    );
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, Incomplete::Digest { .. }))
    );
    assert!(reasons.contains(&Incomplete::Dropped {
        lines: 40,
        at: vec![3]
    }));
}

#[tokio::test]
async fn without_totals_the_ledger_proves_contiguity_and_says_so() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &log(0..50, |p| format!("{p}\n"))).await;
    api.close("k", true).await;
    let ledger = sections(&api, "k").await.ledger.unwrap();
    assert!(ledger.complete);
    assert_eq!(ledger.basis, Basis::Contiguity);
    assert_eq!(ledger.last_pos, Some(49));
    assert!(ledger.stated.is_none());
}

#[tokio::test]
async fn a_stream_its_writer_never_closed_is_marked_so_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = runlog_service::ServiceConfig {
        idle_timeout: Duration::from_millis(200),
        sweep_interval: Duration::from_millis(50),
        ..test_config(dir.path())
    };
    let svc = TestService::start_with(cfg).await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok(
        "k",
        &log(0..3, |p| {
            if p == 1 {
                "::group::g\n".into()
            } else {
                "x\n".into()
            }
        }),
    )
    .await;
    let streams = svc.state().streams().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while streams.meta(&id("k")).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "not expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = sections(&api, "k").await;
    assert_eq!(done.sections[0].outcome, Some(Outcome::Unknown));
    let ledger = done.ledger.unwrap();
    assert_eq!(ledger.reasons, [Incomplete::NeverClosed]);
}

#[tokio::test]
async fn bad_requests_are_refused_with_json_errors() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let r = close_with(&api, "k", "digest=md5:abc").await;
    let msg = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("sha256:"), "{msg}");
    let r = close_with(&api, "k", "lines=many").await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    for bad in ["-1", "first", "4294967296"] {
        let r = sections_since(&api, "k", bad).await;
        let msg = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert!(msg.contains("since"), "{msg}");
    }

    let r = api
        .req(Method::GET, "/stream/sections", "nothing")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::NOT_FOUND).await;
    let other = Api::new(&svc, "other", Scope::Read);
    let r = other
        .http
        .get(format!("{}/stream/sections?accountID=acc&key=k", svc.url()))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::FORBIDDEN).await;
}

/// Two replicas over one Redis and one S3 bucket, as two processes would run.
async fn replicas() -> (
    runlog_testkit::redis::RedisServer,
    runlog_testkit::s3::S3Server,
    TestService,
    TestService,
    tempfile::TempDir,
) {
    use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
    use runlog_service::store::s3::S3Settings;
    let (redis, s3) = tokio::join!(
        runlog_testkit::redis::RedisServer::start_new(),
        runlog_testkit::s3::S3Server::start_new()
    );
    s3.create_bucket("archives").await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let settings = S3Settings {
            bucket: "archives".to_owned(),
            endpoint: Some(s3.endpoint()),
            region: Some(runlog_testkit::s3::REGION.to_owned()),
            access_key_id: Some(runlog_testkit::s3::ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(runlog_testkit::s3::SECRET_ACCESS_KEY.to_owned()),
            allow_http: true,
            ..S3Settings::default()
        };
        let streams = RedisStreamStore::new(
            RedisConfig {
                url: redis.url(),
                block: Duration::from_millis(300),
                ..RedisConfig::default()
            },
            Some(settings.overflow().object_store().unwrap()),
        )
        .unwrap();
        let mut c = config.clone();
        c.data_dir = dir.path().join(name);
        replicas.push(
            TestService::start_with_config_and_stores(
                c,
                std::sync::Arc::new(streams),
                settings.blob_store().unwrap(),
            )
            .await,
        );
    }
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    (redis, s3, a, b, dir)
}

/// Writers on replicas `a` and `b` of the account `acc`, with the stream `k` opened.
async fn writers_of_k(a: &TestService, b: &TestService) -> (Api, Api) {
    let (on_a, on_b) = (
        Api::new(a, "acc", Scope::Write),
        Api::new(b, "acc", Scope::Write),
    );
    on_a.open("k").await;
    (on_a, on_b)
}

/// A connection of the test's own to the replicas' Redis.
async fn redis_conn(
    redis: &runlog_testkit::redis::RedisServer,
) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_and_s3_a_replica_catches_up_what_another_took_and_the_index_is_kept_in_s3() {
    let (_redis, _s3, a, b, _dir) = replicas().await;
    let (on_a, on_b) = writers_of_k(&a, &b).await;
    let all = log(0..12, text);
    // Batches alternate between the replicas, as a load balancer sends them.
    on_a.put_ok("k", &all[..3]).await;
    on_b.put_ok("k", &all[3..6]).await;
    on_a.put_ok("k", &all[6..]).await;
    for api in [&on_a, &on_b] {
        let live = sections(api, "k").await;
        let ends: Vec<Option<u64>> = live.sections.iter().map(|s| s.last_pos).collect();
        assert_eq!(ends, [Some(7), Some(5), None], "{live:?}");
    }
    let query = format!("lines=12&digest={}", digest_of(&all));
    assert_eq!(
        close_with(&on_b, "k", &query).await.status(),
        StatusCode::OK
    );
    // Replica A answers from the index B stored in S3.
    let done = sections(&on_a, "k").await;
    assert_eq!(done.sections.len(), 3);
    assert!(done.ledger.unwrap().complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_replicas_share_one_index_that_expires_with_its_stream() {
    let (redis, _s3, a, b, _dir) = replicas().await;
    let (on_a, on_b) = writers_of_k(&a, &b).await;
    let all = log(0..12, text);
    on_a.put_ok("k", &all[..6]).await;
    // No marker in this batch: it moves the shared index without its lease.
    on_a.put_ok("k", &all[6..7]).await;
    let mut conn = redis_conn(&redis).await;
    let key = "runlog:{acc}:s:k:sections";
    let (next, ttl): (u64, i64) = redis::pipe()
        .hget(key, "next")
        .pttl(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next, 7, "every line written through A is indexed in Redis");
    assert!(ttl > 0, "the index expires like its stream (PTTL {ttl})");
    // B took no batch: the live index it answers is the one A left in Redis.
    let live = sections(&on_b, "k").await;
    let names: Vec<&str> = live.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Build", "compile"], "{live:?}");
    assert_eq!(live.sections[1].last_pos, Some(5));
    assert!(live.open);
    on_b.put_ok("k", &all[7..]).await;
    let live = sections(&on_a, "k").await;
    assert_eq!(live.sections.len(), 3, "{live:?}");
    assert_eq!(live.sections[0].last_pos, Some(7));
    let query = format!("lines=12&digest={}", digest_of(&all));
    assert_eq!(
        close_with(&on_a, "k", &query).await.status(),
        StatusCode::OK
    );
    let left: bool = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !left,
        "the finished index lives beside the archive, not in Redis"
    );
    assert!(sections(&on_b, "k").await.ledger.unwrap().complete);
}

#[tokio::test]
async fn since_lists_only_the_sections_that_may_have_changed_live_and_archived() {
    let svc = TestService::start().await;
    let api = Api::new(&svc, "acc", Scope::Write);
    api.open("k").await;
    let all = log(0..12, text);
    // Build (0) open, compile (1) closed at 5.
    api.put_ok("k", &all[..7]).await;
    let whole = sections(&api, "k").await;
    assert_eq!(whole.from, 0);
    let raw: Value = sections_since(&api, "k", "0").await.json().await.unwrap();
    assert!(
        raw.get("from").is_none(),
        "the whole list keeps its old shape: {raw}"
    );
    // A reader holding the whole list asks from its first open section: Build.
    api.put_ok("k", &all[7..]).await;
    let update: SectionsAnswer = sections_since(&api, "k", "1").await.json().await.unwrap();
    assert_eq!(update.from, 1);
    let names: Vec<&str> = update.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["compile", ":test_tube: Test"]);
    assert_eq!(
        update.sections[1].parent, None,
        "parents stay indexes of the whole list"
    );
    let past: SectionsAnswer = sections_since(&api, "k", "99").await.json().await.unwrap();
    assert_eq!((past.from, past.sections.len()), (3, 0));

    assert_eq!(
        close_with(&api, "k", "lines=12").await.status(),
        StatusCode::OK
    );
    let done: SectionsAnswer = sections_since(&api, "k", "2").await.json().await.unwrap();
    assert_eq!((done.from, done.sections.len()), (2, 1));
    assert_eq!(done.sections[0].last_pos, Some(11));
    assert!(
        done.ledger.unwrap().complete,
        "the ledger is always answered"
    );
}

/// Bytes Redis has received and sent so far (`INFO stats`).
async fn redis_traffic(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        field("total_net_input_bytes"),
        field("total_net_output_bytes"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_marker_batch_costs_its_own_sections_not_the_streams() {
    let (redis, _s3, a, b, _dir) = replicas().await;
    let (on_a, on_b) = writers_of_k(&a, &b).await;
    // One outer group open throughout, 3 000 closed groups inside it: the shape of
    // a call's section around a test suite's.
    let group = |p: u64| match p {
        0 => "::group::outer\n".to_owned(),
        p if p % 2 == 1 => format!("::group::test {p}\n"),
        _ => "::endgroup::\n".to_owned(),
    };
    let all = log(0..6_001, group);
    for (i, batch) in all.chunks(1_000).enumerate() {
        let api = if i % 2 == 0 { &on_a } else { &on_b };
        api.put_ok("k", batch).await;
    }
    let mut conn = redis_conn(&redis).await;
    let key = "runlog:{acc}:s:k:sections";
    let (fields, head): (u64, u64) = redis::pipe()
        .hlen(key)
        .cmd("HSTRLEN")
        .arg(key)
        .arg("head")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields, 2 + 3_001, "next, head and one field per section");
    assert!(
        head < 1_000,
        "the head holds the open sections only: {head} bytes"
    );

    // One more section: what crosses to and from Redis is a few kilobytes, where
    // the whole index is over 400.
    let before = redis_traffic(&mut conn).await;
    on_b.put_ok(
        "k",
        &[at(6_001, "::group::last\n"), at(6_002, "::endgroup::\n")],
    )
    .await;
    let after = redis_traffic(&mut conn).await;
    let (sent, read) = (after.0 - before.0, after.1 - before.1);
    assert!(sent < 8_000, "{sent} bytes sent to Redis for one section");
    assert!(read < 8_000, "{read} bytes read from Redis for one section");

    // Both replicas answer the whole list, and the part asked for.
    for api in [&on_a, &on_b] {
        let live = sections(api, "k").await;
        assert_eq!(live.sections.len(), 3_002);
        assert_eq!(live.sections[0].last_pos, None, "outer is still open");
        assert_eq!(live.sections[3_001].name, "last");
        assert_eq!(live.sections[3_001].parent, Some(0));
        assert_eq!(live.sections[3_000].last_pos, Some(6_000));
        let tail: SectionsAnswer = sections_since(api, "k", "3000").await.json().await.unwrap();
        assert_eq!((tail.from, tail.sections.len()), (3_000, 2));
        assert_eq!(tail.sections[..], live.sections[3_000..]);
    }
    assert_eq!(
        close_with(&on_a, "k", "lines=6003").await.status(),
        StatusCode::OK
    );
    let done = sections(&on_b, "k").await;
    assert_eq!(done.sections.len(), 3_002);
    assert_eq!(done.sections[0].last_pos, Some(6_002));
    assert_eq!(done.sections[0].outcome, Some(Outcome::Unknown));
    assert!(done.ledger.unwrap().complete);
}

/// Closes `k` (12 lines of [`text`]) and deletes its archive on `svc`: the section
/// index stored with it goes too, and a second delete finds nothing.
async fn deleting_the_archive_deletes_its_index(svc: &TestService) {
    use runlog_service::sections::SIDECAR;
    let api = Api::new(svc, "acc", Scope::Write);
    api.open("k").await;
    api.put_ok("k", &log(0..12, text)).await;
    assert_eq!(
        close_with(&api, "k", "lines=12").await.status(),
        StatusCode::OK
    );
    let blobs = svc.state().blobs();
    assert!(blobs.get_beside(&id("k"), SIDECAR).await.is_ok());
    let delete = || async { api.req(Method::DELETE, "/blob", "k").send().await.unwrap() };
    assert_eq!(delete().await.status(), StatusCode::NO_CONTENT);
    assert!(
        matches!(
            blobs.get_beside(&id("k"), SIDECAR).await,
            Err(runlog_service::store::blob::BlobError::NotFound)
        ),
        "the index went with the archive"
    );
    // The closed stream is still held until it expires: its index is read from
    // its lines again, and no stored ledger answers for the deleted archive.
    let held = sections(&api, "k").await;
    assert_eq!((held.sections.len(), held.ledger), (3, None));
    assert_error(delete().await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn deleting_an_archive_deletes_its_section_index() {
    deleting_the_archive_deletes_its_index(&TestService::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_and_s3_deleting_an_archive_deletes_its_section_index() {
    let (_redis, _s3, a, _b, _dir) = replicas().await;
    deleting_the_archive_deletes_its_index(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_index_kept_whole_by_an_earlier_version_is_taken_over() {
    let (redis, _s3, a, b, _dir) = replicas().await;
    let (on_a, on_b) = writers_of_k(&a, &b).await;
    let all = log(0..12, text);
    on_a.put_ok("k", &all[..3]).await;
    let before = sections(&on_a, "k").await;
    // The layout an earlier version wrote: the whole index as one JSON value.
    let whole = json!({
        "tracker": {
            "sections": before.sections,
            "stack": [
                {"index": 0, "dialect": "github", "name": "Build"},
                {"index": 1, "dialect": "gitlab", "name": "compile"},
            ],
            "ignored_markers": 0,
            "sections_dropped": 0,
        },
        "next": 3,
        "drops": [],
    });
    let mut conn = redis_conn(&redis).await;
    let key = "runlog:{acc}:s:k:sections";
    let () = redis::pipe()
        .del(key)
        .hset(key, "next", 3)
        .hset(key, "state", whole.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    on_b.put_ok("k", &all[3..]).await;
    let after = sections(&on_a, "k").await;
    let ends: Vec<Option<u64>> = after.sections.iter().map(|s| s.last_pos).collect();
    assert_eq!(ends, [Some(7), Some(5), None], "{after:?}");
    let (state, head): (bool, bool) = redis::pipe()
        .hexists(key, "state")
        .hexists(key, "head")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!state && head, "written back in the current layout");
}
