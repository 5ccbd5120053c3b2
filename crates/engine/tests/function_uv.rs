//! Calls' pip dependencies installed through `uv`, with the installer chosen by
//! configuration (`PythonConfig::uv`) rather than by `PATH`.
//!
//! Each test has a virtualenv of its own (without `cloudpickle`: the calls use JSON),
//! so its installs never race other test processes' installs of the fixture package
//! into the shared one.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

use function_engine::{TestEngine, split_stdout};
use runlog_engine::python::{FunctionOutput, PythonConfig, PythonRuntime};
use runlog_protocol::function::{FunctionRequest, Serialization};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `uv` the tests install with: `RUNLOG_TEST_UV`, else `uv` on `PATH`.
fn uv() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNLOG_TEST_UV").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RUNLOG_TEST_UV={} is not a file", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("uv"))
        .find(|p| p.is_file())
        .expect("these tests need uv: set RUNLOG_TEST_UV or put uv on PATH (pip install uv)")
}

/// A runtime with its own virtualenv under `dir`, the fixture wheels of `wheels` as
/// the only package source, installing through the `uv` program `uv`.
fn uv_config(dir: &Path, wheels: &Path, uv: PathBuf) -> PythonConfig {
    let mut cfg = PythonConfig::new(dir);
    cfg.base_python = support::python();
    // Nothing from the network: the venv is made by `python -m venv` alone.
    cfg.bootstrap_packages = Vec::new();
    cfg.pip_args = vec![
        "--no-index".into(),
        "--find-links".into(),
        wheels.display().to_string(),
    ];
    cfg.prefer_uv = true;
    cfg.uv = Some(uv);
    cfg.install_timeout = Duration::from_secs(120);
    cfg.warm_workers = 1;
    cfg
}

#[tokio::test]
async fn uv_installs_the_dependency_and_its_output_is_in_stdout() {
    let uv = uv();
    let (wheels, version) = support::build_fixture_wheel();
    let engine = TestEngine::start_with(None, |c, dir| {
        c.python = uv_config(dir, wheels.path(), uv);
    })
    .await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f(name):\n    import runlog_fixture_pkg\n    return [runlog_fixture_pkg.VERSION, runlog_fixture_pkg.greet(name)]",
            "args": ["uv"],
            "dependencies": [format!("runlog-fixture-pkg=={version}")],
            "serialization": "json",
        }))
        .await;
    assert_eq!(
        resp.json_result,
        Some(json!([
            version,
            format!("hello uv from runlog_fixture_pkg {version}")
        ])),
        "{resp:?}"
    );
    let stdout = resp.stdout.unwrap();
    let (system, _) = split_stdout(&stdout);
    // Lines only uv prints: its resolver summary and its `+ name==version` list.
    assert!(
        system.iter().any(|l| l.contains("uv | Resolved 1 package")),
        "uv's resolver output missing: {system:?}"
    );
    assert!(
        system
            .iter()
            .any(|l| l.contains("uv | ") && l.contains(&format!("+ runlog-fixture-pkg=={version}"))),
        "uv's install list missing: {system:?}"
    );
    // And nothing of pip's.
    assert!(
        !system
            .iter()
            .any(|l| l.contains("pip | ") || l.contains("Successfully installed")),
        "pip ran: {system:?}"
    );
}

#[tokio::test]
async fn failing_uv_install_reports_its_one_line_cause() {
    let uv = uv();
    let (wheels, _) = support::build_fixture_wheel();
    let engine = TestEngine::start_with(None, |c, dir| {
        c.python = uv_config(dir, wheels.path(), uv);
    })
    .await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f():\n    print('must not run')",
            "dependencies": ["runlog-no-such-package==9.9.9"],
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success, "{resp:?}");
    let error = resp.error.unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("uv failed ("), "{error}");
    // uv's headline, then the `cause:` line under it that names the package.
    assert!(
        error.contains("No solution found when resolving dependencies: "),
        "{error}"
    );
    assert!(error.contains("runlog-no-such-package"), "{error}");
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    assert!(output.is_empty(), "the function ran: {output:?}");
    assert!(
        system.iter().any(|l| l.contains("uv | error:")),
        "uv's own error line missing: {system:?}"
    );
}

async fn run(rt: &PythonRuntime, req: &FunctionRequest) -> runlog_engine::python::CallOutcome {
    let sink: FunctionOutput = Arc::new(|_| {});
    rt.execute(req, &sink).await
}

fn fixture_call(version: &str) -> FunctionRequest {
    FunctionRequest {
        function_name: Some("f".into()),
        function_code: Some(
            "def f():\n    import runlog_fixture_pkg\n    return runlog_fixture_pkg.VERSION".into(),
        ),
        dependencies: vec![format!("runlog-fixture-pkg=={version}")],
        serialization: Serialization::Json,
        ..FunctionRequest::default()
    }
}

#[tokio::test]
async fn configured_uv_that_does_not_exist_fails_instead_of_falling_back_to_pip() {
    let (wheels, version) = support::build_fixture_wheel();
    let dir = tempfile::tempdir().unwrap();
    let missing = wheels.path().join("no-such-uv");
    let rt = PythonRuntime::new(uv_config(dir.path(), wheels.path(), missing));
    let outcome = run(&rt, &fixture_call(&version)).await;
    assert!(!outcome.success, "{outcome:?}");
    let error = outcome.error.unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("uv could not be started"), "{error}");
}

#[tokio::test]
async fn prefer_uv_off_installs_with_pip_even_when_uv_is_configured() {
    let (wheels, version) = support::build_fixture_wheel();
    let dir = tempfile::tempdir().unwrap();
    // A uv that cannot run: the install only succeeds if pip does it.
    let mut cfg = uv_config(dir.path(), wheels.path(), wheels.path().join("no-such-uv"));
    cfg.prefer_uv = false;
    let rt = PythonRuntime::new(cfg);
    let outcome = run(&rt, &fixture_call(&version)).await;
    assert_eq!(outcome.result, Some(json!(version)), "{outcome:?}");
}
