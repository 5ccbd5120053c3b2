//! RunPod's real SDKs (`runpod`, `runpod-flash` from PyPI) against a real engine: the
//! scenarios of `fixtures/sdk/sdk_client.py`, each run by the SDKs' own request
//! building, `runpod.Endpoint`'s `run` + `status` transport pointed at the engine with
//! `RUNPOD_ENDPOINT_BASE_URL`, and flash's own response handling.
//!
//! `tetra-rp` (runpod-flash's predecessor) gets a function, an async function and a
//! raising function through its own stub (`fixtures/sdk/tetra_client.py`).
//!
//! The SDKs' interpreter: `RUNLOG_TEST_SDK_PYTHON`, else the test-tools virtualenv
//! `scripts/test` builds (`target/test-tools/venv/bin/python`, with `runpod-flash` and
//! `tetra-rp`).
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

use function_engine::TestEngine;
use std::path::{Path, PathBuf};

fn sdk_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNLOG_TEST_SDK_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/venv/bin/python");
    assert!(
        venv.exists(),
        "these tests need RunPod's SDKs: run scripts/test once (it installs runpod-flash into \
         target/test-tools/venv), or set RUNLOG_TEST_SDK_PYTHON to a Python with runpod-flash"
    );
    venv
}

/// Runs one scenario of `sdk_client.py` against a fresh engine; it must print `OK`.
async fn scenario(name: &str) {
    run_script("sdk_client.py", name).await;
}

/// Runs `script` (under `fixtures/sdk/`) with `arg` against a fresh engine; it must
/// print `OK <arg>`.
async fn run_script(script: &str, name: &str) {
    run_script_with_token(script, name, None).await;
}

/// [`run_script`] against an engine that requires `token`, which the script gets as
/// its `RUNPOD_API_KEY`.
async fn run_script_with_token(script: &str, name: &str, token: Option<&str>) {
    let engine = TestEngine::start_with_token(None, token, |_, _| {}).await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdk");
    let out = tokio::process::Command::new(sdk_python())
        .arg(fixtures.join(script))
        .arg(name)
        .current_dir(&fixtures)
        .env("RUNPOD_ENDPOINT_BASE_URL", format!("{}/v2", engine.url()))
        .env(
            "RUNPOD_API_KEY",
            token.unwrap_or("any-key-a-token-less-engine-ignores"),
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("OK {name}")),
        "scenario {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

#[tokio::test]
async fn sdk_calls_a_function() {
    scenario("function").await;
}

#[tokio::test]
async fn sdk_calls_an_async_function() {
    scenario("async_function").await;
}

#[tokio::test]
async fn sdk_keeps_a_class_instance_across_calls() {
    scenario("class").await;
}

#[tokio::test]
async fn sdk_raises_the_remote_error() {
    scenario("raising_function").await;
}

#[tokio::test]
async fn sdk_json_serialization_reads_json_result() {
    scenario("json").await;
}

#[tokio::test]
async fn sdk_ships_local_modules() {
    scenario("modules").await;
}

#[tokio::test]
async fn sdk_twenty_concurrent_jobs_keep_their_own_output() {
    scenario("concurrent").await;
}

#[tokio::test]
async fn sdk_streams_cancels_and_reads_health() {
    scenario("job_controls").await;
}

#[tokio::test]
async fn tetra_rp_calls_functions_and_raises_the_remote_error() {
    run_script("tetra_client.py", "tetra").await;
}

#[tokio::test]
async fn sdk_uses_the_engine_token_as_its_api_key() {
    run_script_with_token("sdk_client.py", "token", Some("engine-token-4f1c")).await;
}
