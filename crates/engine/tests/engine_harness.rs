#![allow(clippy::unwrap_used)]
//! The engine against a log service with Harness semantics
//! (`runlog_testkit::harness`): a stage set up with lite-engine's `log_config`, a
//! step run through `/step`, and what reached the service checked exactly — the
//! step's live lines, its archive as plain NDJSON, and how the archive got there in
//! each upload mode.

mod engine_support;

use engine_support::TestEngine;
use runlog_testkit::harness::{HarnessService, Recorded};
use serde_json::json;

const TOKEN: &str = "harness-account-token";
const ACCOUNT: &str = "kmpySmUISimoRrJL6NL73w";
const STAGE_KEY: &str =
    "accountId:kmpySmUISimoRrJL6NL73w/orgId:default/projectId:p$1/pipelineId:ci/runSequence:4";

/// The step's key, as Harness builds it under the stage.
fn step_key() -> String {
    format!("{STAGE_KEY}/level0:pipeline/level1:stages/level2:build/level3:steps/level4:run_1")
}

/// Runs one stage with one step against `svc` and destroys it; returns the step's
/// `/step` answer.
async fn run_stage(svc: &HarnessService, indirect_upload: bool) -> serde_json::Value {
    let engine = TestEngine::start().await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": format!("{STAGE_KEY}/lite-engine"),
                "log_config": {
                    "url": svc.url(),
                    "account_id": ACCOUNT,
                    "token": TOKEN,
                    "indirect_upload": indirect_upload,
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, step) = engine
        .post(
            "/step",
            json!({
                "id": "run_1",
                "name": "run",
                "script": "i=0; while [ $i -lt 200 ]; do echo \"out $i <&>\"; i=$((i+1)); done; echo done",
                "log_key": step_key(),
            }),
        )
        .await;
    assert_eq!(status, 200, "{step}");
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    engine.shutdown().await;
    step
}

/// The step's output as it must arrive, line by line.
fn expected_outs() -> Vec<String> {
    (0..200)
        .map(|i| format!("out {i} <&>\n"))
        .chain(["done\n".to_owned()])
        .collect()
}

/// The rows of an NDJSON body, which must be plain (never gzip bytes).
fn ndjson_rows(body: &[u8]) -> Vec<serde_json::Value> {
    assert!(
        !body.starts_with(&[0x1f, 0x8b]),
        "a Harness service stores uploads as they arrive: gzip bytes would be its archive"
    );
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks rows are Harness's shape — `level`, `pos` 0.., `out`, an RFC 3339 `time`
/// — and hold exactly the step's output.
fn assert_harness_rows(what: &str, rows: &[serde_json::Value]) {
    let outs: Vec<&str> = rows.iter().map(|r| r["out"].as_str().unwrap()).collect();
    assert_eq!(outs, expected_outs(), "{what}: every line, in order");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["pos"].as_u64(), Some(i as u64), "{what}: {r}");
        assert_eq!(r["level"], "info", "{what}: {r}");
        let time = r["time"].as_str().unwrap_or_default();
        assert!(
            is_rfc3339_utc(time),
            "{what}: time {time:?} is not RFC 3339"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as Go's `time.RFC3339Nano` writes UTC.
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && t.ends_with('Z')
}

/// The requests made for `key` (the query's `key`, decoded).
fn for_key<'a>(requests: &'a [Recorded], key: &str) -> Vec<&'a Recorded> {
    requests
        .iter()
        .filter(|r| r.has_query("key", key))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reaches_a_harness_log_service_in_link_mode_as_lite_engine_sends_it() {
    let svc = HarnessService::start(TOKEN).await;
    let step = run_stage(&svc, false).await;
    assert_eq!(step["exit_code"], 0, "{step}");
    let key = step_key();

    assert_harness_rows("live lines", &svc.lines(&key).unwrap());
    assert_harness_rows("archive", &ndjson_rows(&svc.blob(&key).unwrap()));
    assert!(svc.closed().contains(&key), "{:?}", svc.closed());

    // lite-engine's sequence for the key: open, writes, a link, the archive `PUT`
    // to the link, close. Every call to the service carries the token in
    // `X-Harness-Token`; the link's `PUT` carries none.
    let requests = svc.requests();
    let calls: Vec<(&str, &str)> = for_key(&requests, &key)
        .iter()
        .map(|r| (r.method.as_str(), r.path()))
        .collect();
    assert_eq!(calls.first(), Some(&("POST", "/stream")), "{calls:?}");
    assert_eq!(calls.last(), Some(&("DELETE", "/stream")), "{calls:?}");
    assert!(calls.contains(&("POST", "/blob/link/upload")), "{calls:?}");
    assert!(!calls.contains(&("POST", "/blob")), "{calls:?}");
    for r in for_key(&requests, &key) {
        assert!(r.has_query("accountID", ACCOUNT), "{}", r.path_and_query);
        assert_eq!(
            r.header("x-harness-token"),
            Some(TOKEN),
            "{}",
            r.path_and_query
        );
    }
    let link_puts: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.path().starts_with("/link/"))
        .collect();
    assert_eq!(
        link_puts.len(),
        2,
        "the step's archive and the engine's own"
    );
    for r in link_puts {
        assert_eq!(r.method, "PUT");
        assert_eq!(r.header("x-harness-token"), None);
        assert_eq!(r.header("authorization"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reaches_a_harness_log_service_with_indirect_upload() {
    let svc = HarnessService::start(TOKEN).await;
    let step = run_stage(&svc, true).await;
    assert_eq!(step["exit_code"], 0, "{step}");
    let key = step_key();

    assert_harness_rows("live lines", &svc.lines(&key).unwrap());
    assert_harness_rows("archive", &ndjson_rows(&svc.blob(&key).unwrap()));
    let requests = svc.requests();
    let uploads: Vec<&Recorded> = for_key(&requests, &key)
        .into_iter()
        .filter(|r| r.method == "POST" && r.path() == "/blob")
        .collect();
    assert_eq!(uploads.len(), 1, "one upload of the whole history");
    assert_eq!(uploads[0].header("content-encoding"), None);
    assert!(requests.iter().all(|r| !r.path().starts_with("/link/")));
    // The engine's own stream is archived the same way, under its key.
    let engine_rows = ndjson_rows(&svc.blob(&format!("{STAGE_KEY}/lite-engine")).unwrap());
    assert!(
        engine_rows
            .iter()
            .any(|r| r["out"].as_str().unwrap().contains("starting step")),
        "{engine_rows:?}"
    );
}
