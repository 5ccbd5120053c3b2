//! `POST /setup` with `dependencies`: installed through the engine's Python runtime,
//! the installer's lines in the engine log stream, the packages usable by steps.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

mod engine_support;

use engine_support::{TestEngine, archive};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::path::Path;

const ACCOUNT: &str = "account-deps";

/// A real engine whose `/setup` installs through a Python runtime on the shared test
/// virtualenv, with `wheels` as the only package source.
async fn engine_with_runtime(wheels: Option<&Path>) -> TestEngine {
    // Steps run as the engine's own user here: they run the runtime's virtualenv, whose
    // base Python on a test machine may sit in root's private home (pyenv), out of reach
    // of an unprivileged step user (SECURITY.md says the base Python must be readable
    // by the step user). Steps as another user: `tests/step_user.rs`.
    TestEngine::launch(
        |cfg| cfg.step_user = None,
        |fcfg| fcfg.python = support::config(wheels),
    )
    .await
}

/// Entries left under the engine's stages directory.
fn stage_dirs(engine: &TestEngine) -> Vec<String> {
    match std::fs::read_dir(engine.state.config().stages_dir()) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn engine_archive(svc: &TestService, key: &str) -> Vec<String> {
    let reader = svc.token(ACCOUNT, Scope::Read);
    archive(&svc.url(), &reader, ACCOUNT, key)
        .await
        .unwrap_or_else(|| panic!("no archive for {key}"))
        .into_iter()
        .map(|l| l.out.trim_end_matches('\n').to_owned())
        .collect()
}

/// A service, and an engine whose `/setup` (logging to `log_key`) installed this
/// run's fixture wheel; also the wheel's directory (kept alive), version and spec.
async fn set_up_with_fixture(
    log_key: &str,
) -> (TestService, TestEngine, tempfile::TempDir, String, String) {
    let svc = TestService::start().await;
    let (wheels, version) = support::build_fixture_wheel();
    let engine = engine_with_runtime(Some(wheels.path())).await;
    let spec = format!("runlog-fixture-pkg=={version}");
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": log_key,
                "log_config": svc.log_config(ACCOUNT),
                "dependencies": {"python": [spec]},
            }),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    (svc, engine, wheels, version, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dependency_is_installed_streamed_and_importable_by_steps() {
    let (svc, engine, _wheels, version, spec) = set_up_with_fixture("deps-1/engine").await;

    // A bare `python` in a step is the virtualenv's, and it has this run's version.
    let (status, body) = engine
        .post(
            "/step",
            json!({
                "id": "use-it",
                "script": "python -c \"import runlog_fixture_pkg; print(runlog_fixture_pkg.greet('step'))\" > greeting.txt && echo GREETING=\"$(cat greeting.txt)\" >> \"$RUNLOG_OUTPUT\"",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(
        body["outputs"]["GREETING"],
        format!("hello step from runlog_fixture_pkg {version}"),
        "{body}"
    );

    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    let lines = engine_archive(&svc, "deps-1/engine").await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("installing Python packages: {spec}"))),
        "install start missing: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("pip | ")),
        "installer output missing: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("dependencies installed")),
        "install end missing: {lines:#?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_does_not_reinstall_what_setup_installed() {
    let (_svc, engine, _wheels, version, spec) = set_up_with_fixture("deps-shared/engine").await;

    // Clients send their dependencies with every call: setup's install counts.
    let (status, resp) = engine
        .post(
            "/execute",
            json!({
                "function_name": "f",
                "function_code": "def f():\n    import runlog_fixture_pkg\n    return runlog_fixture_pkg.VERSION",
                "dependencies": [spec],
                "serialization": "json",
            }),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["json_result"], json!(version), "{resp}");
    let stdout = resp["stdout"].as_str().unwrap();
    assert!(!stdout.contains("pip | "), "installer ran again: {stdout}");
    assert!(
        stdout.contains("dependencies already installed"),
        "{stdout}"
    );
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dependency_fails_setup_with_its_cause_and_leaves_no_stage() {
    let svc = TestService::start().await;
    let (wheels, _) = support::build_fixture_wheel();
    let engine = engine_with_runtime(Some(wheels.path())).await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": "deps-2/engine",
                "log_config": svc.log_config(ACCOUNT),
                "files": [{"path": "kept.txt", "data": "x"}],
                "dependencies": {"python": ["runlog-no-such-package==9.9.9"]},
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error_msg"].as_str().unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("dependency installation failed"), "{error}");
    assert!(error.contains("runlog-no-such-package"), "{error}");
    assert!(stage_dirs(&engine).is_empty(), "{:?}", stage_dirs(&engine));

    // The failed setup's engine stream was closed and archived with the cause.
    let lines = engine_archive(&svc, "deps-2/engine").await;
    assert!(
        lines.iter().any(|l| l.contains("pip | ERROR")),
        "installer output missing: {lines:#?}"
    );

    // No stage is left behind: a step is refused and a second setup works.
    let (status, body) = engine
        .post("/step", json!({"id": "s", "script": "true"}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = engine.post("/setup", json!({})).await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) = engine
        .post("/step", json!({"id": "s", "script": "true"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    let (status, _) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200);
    engine.shutdown().await;
}

#[tokio::test]
async fn system_dependency_is_refused_when_apt_is_not_allowed() {
    let engine = engine_with_runtime(None).await;
    let (status, body) = engine
        .post("/setup", json!({"dependencies": {"system": ["cowsay"]}}))
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error_msg"].as_str().unwrap();
    assert!(error.contains("does not allow apt"), "{error}");
    assert!(error.contains("cowsay"), "{error}");
    assert!(stage_dirs(&engine).is_empty(), "{:?}", stage_dirs(&engine));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_secret_quoted_in_an_install_error_is_masked_in_the_answer() {
    let engine = engine_with_runtime(None).await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({"secrets": ["tok-8d1f2a"], "dependencies": {"system": ["pkg-tok-8d1f2a"]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error_msg"].as_str().unwrap();
    assert!(error.contains("does not allow apt"), "{error}");
    assert!(!body.to_string().contains("tok-8d1f2a"), "{body}");
    assert!(error.contains(livelog::mask::MASK), "{error}");
    engine.shutdown().await;
}

#[tokio::test]
async fn option_like_dependency_is_refused() {
    let engine = engine_with_runtime(None).await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({"dependencies": {"python": ["--index-url=http://evil.invalid"]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error_msg"].as_str().unwrap();
    assert!(error.contains("must not start with '-'"), "{error}");
    engine.shutdown().await;
}

#[tokio::test]
async fn every_engine_has_its_python_runtime_and_function_routes() {
    // Built with the state: no engine can come up whose `/setup` has nothing to
    // install dependencies with, or that lacks `/execute`.
    let engine = TestEngine::start().await;
    let venv = engine.state.functions().runtime().config().venv_dir.clone();
    let data_dir = engine.dir.path().canonicalize().unwrap();
    assert!(
        venv.starts_with(engine.dir.path()) || venv.starts_with(&data_dir),
        "{} under {}",
        venv.display(),
        data_dir.display()
    );
    assert_eq!(engine.get_json("/ping").await, json!({"status": "healthy"}));
    let (status, body) = engine.post("/execute", json!({"args": 1})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("malformed JSON body"),
        "{body}"
    );
    // Empty dependencies need no install.
    let (status, body) = engine
        .post(
            "/setup",
            json!({"dependencies": {"python": [], "system": []}}),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_whose_controller_hangs_up_during_the_install_leaves_no_stage_behind() {
    let (wheels, version) = support::build_fixture_wheel();
    let engine = engine_with_runtime(Some(wheels.path())).await;
    // Another process installing into the same virtualenv: setup waits for its lock.
    let held = support::hold_install_lock(&engine.state.functions().runtime().config().venv_dir);
    let request = tokio::spawn({
        let url = engine.url("/setup");
        let body = json!({"dependencies": {"python": [format!("runlog-fixture-pkg=={version}")]}});
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stage_dirs(&engine).is_empty() {
        assert!(std::time::Instant::now() < deadline, "setup never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The controller goes away: its connection closes.
    request.abort();
    let _ = request.await;
    while !stage_dirs(&engine).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {:?}",
            stage_dirs(&engine)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(held);
    // And the engine takes the next setup.
    let (status, body) = engine.post("/setup", json!({})).await;
    assert_eq!((status, &body), (200, &json!({})));
    engine.shutdown().await;
}
