//! Sections in the web viewer: folded by how they ended, a finished failed stream
//! opened at its first failure, sections opening and folding while lines arrive,
//! search and `#L` links reaching into folded sections, and the completeness
//! ledger in the header; folding and the live tail on the Redis store too. A real
//! service on a loopback port and headless Chromium;
//! screenshots go to `$RUNLOG_TEST_ARTIFACTS`.
#![allow(clippy::unwrap_used)]

mod common;

use common::Api;
use common::viewer::{ACCOUNT, finish, page, setup};
use reqwest::StatusCode;
use runlog_protocol::Scope;
use runlog_service::store::BlobStore;
use runlog_service::store::redis::{RedisConfig, RedisStreamStore};
use runlog_testkit::browser::Browser;
use runlog_testkit::redis::RedisServer;
use runlog_testkit::service::TestService;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A line at `pos` written `secs` seconds after 10:00.
fn at(pos: u64, secs: u64, out: &str) -> Value {
    let time = format!("2026-11-20T10:{:02}:{:02}.000Z", secs / 60, secs % 60);
    json!({"level": "info", "pos": pos, "out": out, "time": time})
}

/// A build log of 2 000 lines: `build` (succeeds, 1–800), then `test` holding
/// `unit` (succeeds) and `e2e` (fails at "assertion failed" on line 1 601).
fn build_log() -> Vec<Value> {
    (0..2000u64)
        .map(|p| {
            let out = match p {
                0 => "starting\n".to_string(),
                1 => "::group::build\n".into(),
                800 => "::endgroup::\n".into(),
                801 => "::group::test\n".into(),
                802 => "::group::unit\n".into(),
                1200 => "::endgroup::\n".into(),
                1201 => "::group::e2e\n".into(),
                1600 => "assertion failed: expected 200, got 500\n".into(),
                1998 => "::endgroup outcome=failure::\n".into(),
                1999 => "::endgroup outcome=failure::\n".into(),
                _ => format!("line {p}\n"),
            };
            at(p, p / 10, &out)
        })
        .collect()
}

/// Like `setup`, over a Redis stream store (the server is returned to keep it up).
async fn setup_redis() -> (RedisServer, TestService, Api, String) {
    let redis = RedisServer::start_new().await;
    let config = RedisConfig {
        url: redis.url(),
        block: Duration::from_millis(500),
        ..RedisConfig::default()
    };
    let streams = RedisStreamStore::new(config, None).unwrap();
    let svc = TestService::start_with_stores(Arc::new(streams), BlobStore::memory()).await;
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    (redis, svc, api, read)
}

/// Closes `key` stating `query` (the writer's totals) to `DELETE /stream`.
async fn close_with(api: &Api, key: &str, query: &str) {
    let r = api
        .http
        .delete(format!("{}&{query}", api.url("/stream", key)))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// Writes [`build_log`] to stream `ci`, closes it with `close` (the writer's
/// totals), opens it in a browser and waits for the page to scroll to e2e's header
/// (not to test's around it).
async fn open_at_first_failure(svc: &TestService, api: &Api, read: &str, close: &str) -> Browser {
    api.open("ci").await;
    api.put_ok("ci", &build_log()).await;
    close_with(api, "ci", close).await;
    let browser = Browser::start().await;
    browser.goto(&page(svc, "ci", read, "")).await;
    let first = browser
        .wait_for(
            "the jump to the first failure",
            "return document.body.dataset.firstFailure",
        )
        .await;
    assert_eq!(first, json!("1202"), "e2e's header, not test's around it");
    browser
}

/// Each drawn section header: `{line, text, collapsed, outcome, summary}`.
const HEADERS: &str =
    "return [...document.querySelectorAll('.row.section-head:not([hidden])')].map(r => ({
    line: Number(r.dataset.line), text: r.querySelector('.tx').textContent,
    collapsed: r.dataset.collapsed === 'true', outcome: r.dataset.outcome,
    summary: r.querySelector('.sum').textContent }))";

/// Line numbers of the drawn rows.
const ROW_LINES: &str =
    "return [...document.querySelectorAll('.row:not([hidden])')].map(r => Number(r.dataset.line))";

#[tokio::test]
async fn a_failed_stream_opens_at_its_first_failure_with_successes_folded() {
    let (svc, api, read) = setup().await;
    first_failure_and_folds(svc, api, read, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_failed_stream_opens_at_its_first_failure_with_successes_folded() {
    let (_redis, svc, api, read) = setup_redis().await;
    first_failure_and_folds(svc, api, read, "-redis").await;
}

/// `backend`: a suffix of the screenshots' names.
async fn first_failure_and_folds(svc: TestService, api: Api, read: String, backend: &str) {
    let browser = open_at_first_failure(&svc, &api, &read, "lines=2000&outcome=failure").await;
    let headers = browser.eval(HEADERS, vec![]).await;
    let e2e = headers
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["text"] == "::group::e2e")
        .cloned()
        .unwrap_or_else(|| panic!("e2e's header is drawn: {headers}"));
    assert_eq!(e2e["collapsed"], json!(false), "a failed section is open");
    assert_eq!(e2e["outcome"], json!("failure"));
    // 1998 − 1201 + 1 lines, from 120 s to 199 s.
    assert_eq!(e2e["summary"], json!("✗ failed · 1m 19s · 798 lines"));
    let rows = browser.eval(ROW_LINES, vec![]).await;
    assert_eq!(rows[0], json!(1202), "the failure's header at the top");

    // From the top: `build` and `unit` folded (one header row each), `test` open.
    browser
        .eval(
            "document.getElementById('viewport').scrollTop = 0; return true",
            vec![],
        )
        .await;
    browser
        .wait_for(
            "the top drawn",
            "return document.querySelector('.row').dataset.line === '1'",
        )
        .await;
    let rows = browser.eval(ROW_LINES, vec![]).await;
    assert_eq!(
        rows.as_array().unwrap()[..6],
        [
            json!(1),
            json!(2),
            json!(802),
            json!(803),
            json!(1202),
            json!(1203)
        ],
        "build (2–801) and unit (803–1201) fold to their headers"
    );
    let headers = browser.eval(HEADERS, vec![]).await;
    assert_eq!(headers[0]["collapsed"], json!(true), "{headers}");
    assert_eq!(
        headers[0]["summary"],
        json!("✓ success · 1m 20s · 800 lines")
    );
    assert_eq!(headers[1]["outcome"], json!("failure"), "{headers}");
    // The header nests: unit's toggle is indented past test's.
    let indents = browser
        .eval(
            "return ['802', '803'].map(l => document.querySelector(`.row[data-line='${l}'] .fold`).getBoundingClientRect().width)",
            vec![],
        )
        .await;
    assert!(
        indents[1].as_f64().unwrap() > indents[0].as_f64().unwrap(),
        "{indents}"
    );

    // The ledger: complete, on the writer's totals.
    let ledger = browser
        .wait_for(
            "the ledger",
            "return document.body.dataset.ledger === 'complete' && document.getElementById('ledger').title",
        )
        .await;
    assert!(
        ledger
            .as_str()
            .unwrap()
            .starts_with("complete: lines 1–2,000, no gap"),
        "{ledger}"
    );
    // The slowest sections, longest first.
    let slowest = browser
        .eval(
            "return [...document.querySelectorAll('#slowest a')].map(a => a.textContent)",
            vec![],
        )
        .await;
    assert_eq!(slowest, json!(["test", "build", "e2e", "unit"]));
    browser
        .screenshot(&format!("viewer-sections-first-failure{backend}"))
        .await;

    // Expand all shows every line; collapse all (the `[` key) folds even the failures.
    browser
        .eval(
            "document.getElementById('expand-all').click(); return true",
            vec![],
        )
        .await;
    let count = browser
        .eval(
            "return document.getElementById('spacer').offsetHeight / 18",
            vec![],
        )
        .await;
    assert_eq!(count, json!(2000));
    browser
        .eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: '['})); document.getElementById('viewport').scrollTop = 0; return true", vec![])
        .await;
    browser
        .wait_for(
            "everything folded",
            "const l = [...document.querySelectorAll('.row:not([hidden])')].map(r => r.dataset.line); return l.join(',') === '1,2,802'",
        )
        .await;
    finish(browser, svc, &format!("viewer-sections-collapsed{backend}")).await;
}

#[tokio::test]
async fn an_archived_stream_folds_and_opens_at_its_failure_like_a_live_one() {
    let (svc, api, read) = setup().await;
    // snapshot=true: the lines become the archive and the live stream goes away; the
    // index and ledger are kept beside the archive.
    let browser = open_at_first_failure(
        &svc,
        &api,
        &read,
        "snapshot=true&lines=2000&outcome=failure",
    )
    .await;
    browser
        .wait_for(
            "the whole archive and its ledger",
            "const s = document.body.dataset.state;
             return (s === 'closed' || s === 'archived') && document.body.dataset.ledger === 'complete'",
        )
        .await;
    browser
        .eval(
            "document.getElementById('viewport').scrollTop = 0; return true",
            vec![],
        )
        .await;
    browser
        .wait_for(
            "build folded at the top",
            "const h = document.querySelector(`.row[data-line='2']:not([hidden])`);
             return h && h.dataset.collapsed === 'true' && h.nextElementSibling.dataset.line === '802'",
        )
        .await;
    finish(browser, svc, "viewer-sections-archive").await;
}

#[tokio::test]
async fn search_and_line_links_open_the_folded_sections_they_reach_into() {
    let (svc, api, read) = setup().await;
    api.open("s").await;
    let mut log = build_log();
    log[500] = at(500, 50, "needle in the build\n");
    api.put_ok("s", &log).await;
    close_with(&api, "s", "outcome=failure").await;

    // A link into the folded `build` section opens it.
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "s", &read, "#L300")).await;
    browser
        .wait_for(
            "line 300 highlighted",
            "const r = document.querySelector('.row.highlighted:not([hidden])'); return r && r.dataset.line === '300'",
        )
        .await;
    let build = browser
        .eval(
            "return document.querySelector(`.row[data-line='2']`)?.dataset.collapsed ?? 'not drawn'",
            vec![],
        )
        .await;
    assert_ne!(build, json!("true"), "build stays folded around line 300");
    assert!(
        browser
            .eval(
                "return document.body.dataset.firstFailure === undefined",
                vec![]
            )
            .await
            .as_bool()
            .unwrap(),
        "a link wins over the first failure"
    );

    // Search: fold everything, then find a line inside a folded section.
    browser
        .eval(
            "document.getElementById('collapse-all').click(); return true",
            vec![],
        )
        .await;
    browser.type_into("#search", "needle").await;
    browser
        .wait_for(
            "the match shown",
            "return document.body.dataset.currentMatch === '501' && [...document.querySelectorAll('.row:not([hidden])')].some(r => r.dataset.line === '501')",
        )
        .await;
    let text = browser
        .eval(
            "return document.querySelector(`.row[data-line='501'] .tx`).textContent",
            vec![],
        )
        .await;
    assert_eq!(text, json!("needle in the build"));
    finish(browser, svc, "viewer-sections-search").await;
}

#[tokio::test]
async fn live_sections_stay_open_while_running_and_fold_when_they_succeed() {
    let (svc, api, read) = setup().await;
    live_sections(svc, api, read, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_live_sections_stay_open_while_running_and_fold_when_they_succeed() {
    let (_redis, svc, api, read) = setup_redis().await;
    live_sections(svc, api, read, "-redis").await;
}

/// `backend`: a suffix of the screenshots' names.
async fn live_sections(svc: TestService, api: Api, read: String, backend: &str) {
    api.open("live").await;
    api.put_ok(
        "live",
        &[
            at(0, 0, "::group::compile\n"),
            at(1, 1, "compiling a\n"),
            at(2, 2, "compiling b\n"),
        ],
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "live", &read, "")).await;
    let running = browser
        .wait_for(
            "the running section",
            "const h = document.querySelector('.row.section-head'); return h && h.dataset.outcome === 'running' && h.dataset.collapsed",
        )
        .await;
    assert_eq!(running, json!("false"), "a running section is open");
    // The section ends well: it folds; the next one opens and its lines show as they come.
    api.put_ok(
        "live",
        &[
            at(3, 3, "::endgroup::\n"),
            at(4, 4, "::group::test\n"),
            at(5, 5, "testing\n"),
        ],
    )
    .await;
    browser
        .wait_for(
            "compile folded, test running",
            "const l = [...document.querySelectorAll('.row:not([hidden])')].map(r => r.dataset.line + ':' + (r.dataset.outcome || '') + ':' + (r.dataset.collapsed || ''));
             return l.join(' ') === '1:success:true 5:running:false 6::'",
        )
        .await;
    // Lines keep arriving inside the open section, followed at the tail.
    api.put_ok("live", &[at(6, 6, "::endgroup outcome=failure::\n")])
        .await;
    api.put_ok("live", &[at(7, 7, "after\n")]).await;
    browser
        .wait_for(
            "test failed and stays open",
            "const h = document.querySelector(`.row[data-line='5']`); return h && h.dataset.outcome === 'failure' && h.dataset.collapsed === 'false' && document.body.innerText.includes('after')",
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.body.dataset.state", vec![])
            .await,
        json!("live")
    );
    assert_eq!(
        browser
            .eval("return document.body.dataset.ledger", vec![])
            .await,
        json!("open"),
        "no ledger while the stream is written"
    );
    finish(browser, svc, &format!("viewer-sections-live{backend}")).await;
}

#[tokio::test]
async fn an_incomplete_stream_says_why_in_the_header() {
    let (svc, api, read) = setup().await;
    api.open("cut").await;
    let log: Vec<Value> = (0..10)
        .filter(|p| *p != 4)
        .map(|p| at(p, p, "x\n"))
        .collect();
    api.put_ok("cut", &log).await;
    close_with(&api, "cut", "lines=12").await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "cut", &read, "")).await;
    browser
        .wait_for(
            "the ledger",
            "return document.body.dataset.ledger === 'incomplete'",
        )
        .await;
    let shown = browser
        .eval(
            "const box = document.getElementById('ledger-box'); box.open = true;
             return {summary: document.getElementById('ledger').textContent,
                     reasons: [...document.querySelectorAll('#ledger-reasons li')].map(l => l.textContent)}",
            vec![],
        )
        .await;
    assert_eq!(shown["summary"], json!("⚠ incomplete"));
    assert_eq!(
        shown["reasons"],
        json!([
            "line 5 missing",
            "lines 11–12 missing",
            "the writer stated 12 lines, the service holds 9"
        ]),
        "{shown}"
    );
    browser.screenshot("viewer-ledger-incomplete").await;
    browser.quit().await;
    svc.shutdown().await;
}
