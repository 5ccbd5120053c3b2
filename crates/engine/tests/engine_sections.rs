//! The sections the engine writes: setup, each dependency install and each step in
//! the engine log, each function call in its stream, every one ended with its
//! outcome; a failed step's stream closes failed. Read back through the log
//! service's `GET /stream/sections`.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

mod engine_support;

use engine_support::{TestEngine, eventually};
use runlog_protocol::Scope;
use runlog_protocol::sections::{Outcome, Section, SectionsAnswer};
use runlog_testkit::service::TestService;
use serde_json::json;
use std::time::Duration;

const ACCOUNT: &str = "account-sections";

/// `GET /stream/sections` of `key`, which must answer 200.
async fn sections(svc: &TestService, key: &str) -> SectionsAnswer {
    match sections_once_open(svc, key).await {
        Some(answer) => answer,
        None => panic!("sections of {key}: 404, the stream does not exist"),
    }
}

/// [`sections`], or `None` while the stream does not exist yet (a job's stream is
/// opened when the job starts, after `run` has answered).
async fn sections_once_open(svc: &TestService, key: &str) -> Option<SectionsAnswer> {
    let resp = reqwest::Client::new()
        .get(format!("{}/stream/sections", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", key)])
        .bearer_auth(svc.token(ACCOUNT, Scope::Read))
        .send()
        .await
        .unwrap();
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200, "sections of {key}");
    Some(resp.json().await.unwrap())
}

/// The one section titled `title`.
fn titled<'a>(answer: &'a SectionsAnswer, title: &str) -> &'a Section {
    let found: Vec<_> = answer
        .sections
        .iter()
        .filter(|s| s.title.as_deref() == Some(title))
        .collect();
    assert_eq!(found.len(), 1, "one section {title:?} in {answer:#?}");
    found[0]
}

/// The index of `section` in the answer (what a child's `parent` names).
fn index_of(answer: &SectionsAnswer, section: &Section) -> u32 {
    let i = answer
        .sections
        .iter()
        .position(|s| std::ptr::eq(s, section))
        .unwrap();
    u32::try_from(i).unwrap()
}

/// An engine with a Python runtime whose only package source is an empty directory:
/// an install fails at once, offline. Keep the directory while the engine runs.
async fn engine_without_packages() -> (TestEngine, tempfile::TempDir) {
    let no_wheels = tempfile::tempdir().unwrap();
    let dir = no_wheels.path().to_owned();
    let engine =
        TestEngine::start_with_functions(|fcfg| fcfg.python = support::config(Some(&dir))).await;
    (engine, no_wheels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_steps_are_sections_of_the_engine_log_with_their_outcomes() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({"le_log_key": "sec-1/engine", "log_config": svc.log_config(ACCOUNT)}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) = engine
        .post(
            "/step",
            json!({"id": "a", "name": "build", "script": "echo built"}),
        )
        .await;
    assert_eq!((status, &body["exit_code"]), (200, &json!(0)), "{body}");
    // The step opens a section of its own and fails inside it.
    let (status, body) = engine
        .post(
            "/step",
            json!({
                "id": "b",
                "name": "test",
                "log_key": "sec-1/test",
                "script": "echo '::group::unit tests'; echo 'FAILED: 1 of 3'; exit 3",
            }),
        )
        .await;
    assert_eq!((status, &body["exit_code"]), (200, &json!(3)), "{body}");
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");

    let log = sections(&svc, "sec-1/engine").await;
    assert!(!log.open, "{log:#?}");
    let setup = log
        .sections
        .iter()
        .find(|s| {
            s.title
                .as_deref()
                .is_some_and(|t| t.starts_with("setup stage-"))
        })
        .unwrap_or_else(|| panic!("no setup section: {log:#?}"));
    let build = titled(&log, "step build");
    let test = titled(&log, "step test");
    assert_eq!(setup.outcome, Some(Outcome::Success), "{log:#?}");
    assert_eq!(build.outcome, Some(Outcome::Success), "{log:#?}");
    assert_eq!(test.outcome, Some(Outcome::Failure), "{log:#?}");
    // One after the other, none inside another; each holds its own lines.
    for s in [setup, build, test] {
        assert_eq!((s.depth, s.parent), (0, None), "{s:#?}");
        assert!(s.lines.unwrap() >= 3, "start, a line, end: {s:#?}");
    }
    assert!(setup.last_pos.unwrap() < build.first_pos, "{log:#?}");
    assert!(build.last_pos.unwrap() < test.first_pos, "{log:#?}");

    // The failing step's own group was never closed: the stream's outcome ends it.
    let steps = sections(&svc, "sec-1/test").await;
    assert_eq!(steps.sections.len(), 1, "{steps:#?}");
    assert_eq!(steps.sections[0].name, "unit tests");
    assert_eq!(
        steps.sections[0].outcome,
        Some(Outcome::Failure),
        "{steps:#?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_with_a_failing_install_shows_the_failed_install_inside_the_call() {
    let svc = TestService::start().await;
    let (engine, _no_wheels) = engine_without_packages().await;
    let (status, resp) = engine
        .post(
            "/execute",
            json!({
                "function_name": "f",
                "function_code": "def f():\n    return 1",
                "dependencies": ["runlog-no-such-package==9.9.9"],
                "serialization": "json",
                "log_key": "sec-2/call",
                "log_config": svc.log_config(ACCOUNT),
            }),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["success"], json!(false), "{resp}");
    // Markers are for the stream's reader, not the SDK's console.
    let stdout = resp["stdout"].as_str().unwrap();
    assert!(!stdout.contains("section_"), "{stdout}");

    let call = sections(&svc, "sec-2/call").await;
    assert!(!call.open, "{call:#?}");
    let outer = titled(&call, "call function f");
    let install = titled(
        &call,
        "install dependencies: python runlog-no-such-package==9.9.9",
    );
    assert_eq!(outer.outcome, Some(Outcome::Failure), "{call:#?}");
    assert_eq!(install.outcome, Some(Outcome::Failure), "{call:#?}");
    assert_eq!(install.parent, Some(index_of(&call, outer)), "{call:#?}");
    assert_eq!(install.depth, 1, "{call:#?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_install_in_setup_fails_its_section_and_setup_s() {
    let svc = TestService::start().await;
    let (engine, _no_wheels) = engine_without_packages().await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": "sec-3/engine",
                "log_config": svc.log_config(ACCOUNT),
                "dependencies": {"python": ["runlog-no-such-package==9.9.9"]},
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let log = sections(&svc, "sec-3/engine").await;
    assert!(!log.open, "{log:#?}");
    let setup = &log.sections[0];
    assert!(
        setup.title.as_deref().unwrap().starts_with("setup stage-"),
        "{log:#?}"
    );
    let install = titled(
        &log,
        "install dependencies: python runlog-no-such-package==9.9.9",
    );
    assert_eq!(setup.outcome, Some(Outcome::Failure), "{log:#?}");
    assert_eq!(install.outcome, Some(Outcome::Failure), "{log:#?}");
    assert_eq!(install.parent, Some(0), "{log:#?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_stopped_by_destroy_ends_its_sections_cancelled() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({"le_log_key": "sec-4/engine", "log_config": svc.log_config(ACCOUNT)}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) = engine
        .post(
            "/step",
            json!({
                "id": "forever",
                "log_key": "sec-4/forever",
                "script": "echo '::group::waiting'; sleep 1000",
                "detach": true,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Destroy once the step's group is open, not before its shell wrote it.
    let opened = eventually(Duration::from_secs(10), async || {
        sections_once_open(&svc, "sec-4/forever")
            .await
            .is_some_and(|a| !a.sections.is_empty())
    })
    .await;
    assert!(opened, "the step's group never opened");
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    assert_eq!(destroyed["killed_steps"], json!(["forever"]), "{destroyed}");

    let log = sections(&svc, "sec-4/engine").await;
    let step = titled(&log, "step forever");
    assert_eq!(step.outcome, Some(Outcome::Cancelled), "{log:#?}");
    let own = sections(&svc, "sec-4/forever").await;
    assert_eq!(own.sections.len(), 1, "{own:#?}");
    assert_eq!(
        own.sections[0].outcome,
        Some(Outcome::Cancelled),
        "{own:#?}"
    );
    engine.shutdown().await;
}

/// Submits a job (RunPod's `run`) of `code`'s `f`, streamed to `key`; its id.
async fn submit_job(engine: &TestEngine, svc: &TestService, key: &str, code: &str) -> String {
    let (status, ans) = engine
        .post(
            "/run",
            json!({"input": {
                "function_name": "f",
                "function_code": code,
                "serialization": "json",
                "log_key": key,
                "log_config": svc.log_config(ACCOUNT),
            }}),
        )
        .await;
    assert_eq!(status, 200, "{ans}");
    ans["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_s_stream_has_the_job_s_section_around_its_call_with_the_job_s_outcome() {
    let svc = TestService::start().await;
    let (engine, _no_wheels) = engine_without_packages().await;
    let id = submit_job(
        &engine,
        &svc,
        "sec-5/job",
        "def f():\n    print('working', flush=True)\n    return 1",
    )
    .await;
    // `status` holds its answer until the job ends; the stream is closed by then.
    let rec = engine.get_json(&format!("/status/{id}?wait=120000")).await;
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    let log = sections(&svc, "sec-5/job").await;
    assert!(!log.open, "{log:#?}");
    let job = titled(&log, &format!("job {id}"));
    let call = titled(&log, "call function f");
    assert_eq!(job.outcome, Some(Outcome::Success), "{log:#?}");
    assert_eq!(call.outcome, Some(Outcome::Success), "{log:#?}");
    assert_eq!(call.parent, Some(index_of(&log, job)), "{log:#?}");
    assert_eq!(job.depth, 0, "{log:#?}");

    // A job cancelled while its call runs: both sections end cancelled.
    let id = submit_job(
        &engine,
        &svc,
        "sec-5/cancelled",
        "import time\ndef f():\n    print('started', flush=True)\n    time.sleep(60)",
    )
    .await;
    let running = eventually(Duration::from_secs(60), async || {
        sections_once_open(&svc, "sec-5/cancelled")
            .await
            .is_some_and(|a| a.sections.len() == 2)
    })
    .await;
    assert!(running, "the job's call never started");
    let (status, rec) = engine.post(&format!("/cancel/{id}"), json!({})).await;
    assert_eq!(
        (status, &rec["status"]),
        (200, &json!("CANCELLED")),
        "{rec}"
    );
    let closed = eventually(Duration::from_secs(30), async || {
        !sections(&svc, "sec-5/cancelled").await.open
    })
    .await;
    assert!(closed, "the cancelled job's stream was never closed");
    let log = sections(&svc, "sec-5/cancelled").await;
    let job = titled(&log, &format!("job {id}"));
    assert_eq!(job.outcome, Some(Outcome::Cancelled), "{log:#?}");
    assert_eq!(
        titled(&log, "call function f").outcome,
        Some(Outcome::Cancelled),
        "{log:#?}"
    );
    engine.shutdown().await;
}
