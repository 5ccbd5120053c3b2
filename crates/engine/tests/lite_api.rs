#![allow(clippy::unwrap_used)]
//! lite-engine's routes at their edges: host paths, trailing slashes, detached steps,
//! a step's own log service, requests that cannot run.

mod engine_support;

use engine_support::{TestEngine, archive};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;

const ACCOUNT: &str = "account-123";

fn run(id: &str, script: &str) -> serde_json::Value {
    json!({"id": id, "run": {"commands": [script], "entrypoint": ["sh", "-c"]}})
}

#[tokio::test]
async fn host_paths_are_refused_unless_the_engine_allows_them() {
    let engine = TestEngine::start().await;
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f.txt").display().to_string();
    let (status, answer) = engine
        .post("/setup", json!({"files": [{"path": file, "data": "x"}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error_msg"]
            .as_str()
            .unwrap()
            .contains("--allow-host-paths"),
        "{answer}"
    );
    let vol = host.path().join("vol").display().to_string();
    let (status, answer) = engine
        .post("/setup", json!({"volumes": [{"host": {"path": vol}}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(!host.path().join("f.txt").exists() && !host.path().join("vol").exists());

    // A step's absolute files fail the step, with the reason in its result.
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let mut step = run("s", "true");
    step["files"] = json!([{"path": file, "data": "x"}]);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (_, polled) = engine.post("/poll_step", json!({"id": "s"})).await;
    assert_eq!(polled["exit_code"], 255, "{polled}");
    assert!(
        polled["error"]
            .as_str()
            .unwrap()
            .contains("--allow-host-paths")
    );
    assert!(!host.path().join("f.txt").exists());
    engine.shutdown().await;
}

#[tokio::test]
async fn every_route_also_answers_with_a_trailing_slash() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.get_json("/healthz/").await["ok"], true);
    assert_eq!(engine.post("/setup/", json!({})).await, (200, json!({})));
    assert_eq!(
        engine.post("/start_step/", run("a", "echo hi")).await,
        (200, json!({}))
    );
    let (status, polled) = engine.post("/poll_step/", json!({"id": "a"})).await;
    assert_eq!((status, &polled["exit_code"]), (200, &json!(0)), "{polled}");
    let resp = reqwest::Client::new()
        .post(engine.url("/stream_output/"))
        .body("{\"id\":\"a\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().ends_with("\nhi\n"));
    assert_eq!(engine.post("/suspend/", json!({})).await, (200, json!({})));
    let (status, destroyed) = engine.post("/destroy/", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    assert!(destroyed["os_stats"].is_object());
    engine.shutdown().await;
}

#[tokio::test]
async fn requests_that_cannot_be_served_get_clear_errors() {
    let engine = TestEngine::start().await;
    let (status, answer) = engine.post("/start_step", run("a", "true")).await;
    assert_eq!(status, 409, "no stage yet: {answer}");
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let (status, answer) = engine.post("/start_step", json!({"run": {}})).await;
    assert_eq!(status, 400, "no id: {answer}");
    let (status, answer) = engine
        .post("/start_step", json!({"id": "a", "run": "not an object"}))
        .await;
    assert_eq!(status, 400, "{answer}");

    // Steps the engine cannot run start, and fail with the reason.
    let cases = [
        (
            json!({"id": "e", "run": {"commands": ["true"]}}),
            "entrypoint",
        ),
        (
            json!({"id": "t", "kind": "RunTest", "run": {"commands": ["true"], "entrypoint": ["sh", "-c"]}}),
            "Test Intelligence",
        ),
        (
            {
                let mut s = run("o", "X=1");
                s["output_vars"] = json!(["X; rm -rf /"]);
                s
            },
            "not a shell variable name",
        ),
        (
            {
                let mut s = run("w", "true");
                s["working_dir"] = json!("/nonexistent/dir");
                s
            },
            "not a directory",
        ),
    ];
    for (step, words) in cases {
        let id = step["id"].as_str().unwrap().to_owned();
        assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
        let (_, polled) = engine.post("/poll_step", json!({"id": id})).await;
        assert_eq!(polled["exit_code"], 255, "{id}: {polled}");
        assert!(
            polled["error"].as_str().unwrap().contains(words),
            "{id}: {polled}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_detached_step_is_polled_at_once_and_stopped_by_destroy() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let mut step = run("svc", "echo up; exec sleep 60");
    step["detach"] = json!(true);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (status, polled) = engine.post("/poll_step", json!({"id": "svc"})).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["exited"], false, "{polled}");
    let started = std::time::Instant::now();
    let (status, _) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_its_own_log_config_streams_there() {
    let stage_svc = TestService::start().await;
    let step_svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let config = |svc: &TestService| json!({"url": svc.url(), "account_id": ACCOUNT, "token": svc.token(ACCOUNT, Scope::Write), "indirect_upload": true});
    let setup = json!({"log_config": config(&stage_svc)});
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let mut step = run("own", "echo elsewhere");
    step["log_key"] = json!("stage/own");
    step["log_config"] = config(&step_svc);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (_, polled) = engine.post("/poll_step", json!({"id": "own"})).await;
    assert_eq!(polled["exit_code"], 0, "{polled}");
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    let read = |svc: &TestService| svc.token(ACCOUNT, Scope::Read);
    let lines = archive(&step_svc.url(), &read(&step_svc), ACCOUNT, "stage/own")
        .await
        .expect("archived in the step's log service");
    assert_eq!(lines.last().unwrap().out.trim_end(), "elsewhere");
    assert!(
        archive(&stage_svc.url(), &read(&stage_svc), ACCOUNT, "stage/own")
            .await
            .is_none()
    );
    stage_svc.shutdown().await;
    step_svc.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test]
async fn stream_output_of_a_step_that_never_starts_is_400() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let (status, answer) = engine.post("/stream_output", json!({"id": "nope"})).await;
    assert_eq!(status, 400, "{answer}");
    engine.shutdown().await;
}
