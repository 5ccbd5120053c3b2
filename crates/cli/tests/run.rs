//! `runlog run` with the real binary: embedded, and against an engine elsewhere.
#![allow(clippy::unwrap_used)]

use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use std::process::Stdio;
use std::time::Duration;

fn runlog(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("runlog run finishes")
        .expect("runlog runs")
}

#[tokio::test]
async fn embedded_run_prints_every_line_in_order_and_exits_with_the_command_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = runlog(&[
        "run",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done; pwd; exit 7",
    ]);
    cmd.current_dir(dir.path());
    let out = output(cmd).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
    assert_eq!(lines[..500], expected[..]);
    // It runs where the caller is.
    let here = dir.path().canonicalize().unwrap();
    assert_eq!(
        std::path::Path::new(lines[500]).canonicalize().unwrap(),
        here
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_with_a_message() {
    let out = output(runlog(&[
        "run",
        "--",
        "/nonexistent/runlog-no-such-command",
    ]))
    .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not start"), "{stderr}");
}

#[tokio::test]
async fn run_against_a_remote_engine_shows_the_output_from_the_log_service() {
    runlog_capture::init(runlog_capture::InitOptions::default());
    let svc = TestService::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = runlog_engine::EngineConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        token: Some("engine-secret".into()),
        ..runlog_engine::EngineConfig::default()
    };
    let listener = runlog_engine::bind(&config).await.unwrap();
    let engine_url = format!("http://{}", listener.local_addr().unwrap());
    let state = runlog_engine::EngineState::new(config);
    let server = tokio::spawn(runlog_engine::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let token = svc.token("acc", Scope::Write);
    let url = svc.url();
    // The command runs in the engine (this test process), not under `runlog run`:
    // its output can only reach the CLI through the log service.
    let out = output(runlog(&[
        "run",
        "--engine",
        &engine_url,
        "--engine-token",
        "engine-secret",
        "--service-url",
        &url,
        "--token",
        &token,
        "--account",
        "acc",
        "--key",
        "remote/run",
        "--admin-secret",
        svc.admin_secret(),
        "--",
        "sh",
        "-c",
        "echo first; echo second >&2; echo third; exit 3",
    ]))
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["first", "second", "third"]);
    // The printed viewer link points at the run's stream and carries a read-only token.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{url}/ui/stream?accountID=acc&key=remote%2Frun&token=");
    let link_token = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no viewer link with a token in: {stderr}"));
    let http = reqwest::Client::new();
    let listed = http
        .get(format!("{url}/streams"))
        .query(&[("accountID", "acc")])
        .bearer_auth(link_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the link's token reads the account");
    let write = http
        .post(format!("{url}/stream"))
        .query(&[("accountID", "acc"), ("key", "other")])
        .bearer_auth(link_token)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403, "the link's token cannot write");
    let archive = reqwest::Client::new()
        .get(format!("{url}/blob"))
        .query(&[("accountID", "acc"), ("key", "remote/run")])
        .bearer_auth(svc.token("acc", Scope::Read))
        .send()
        .await
        .unwrap();
    assert!(
        archive.status().is_success(),
        "the run's output is archived under its key"
    );
    let engine_log = reqwest::Client::new()
        .get(format!("{url}/blob"))
        .query(&[("accountID", "acc"), ("key", "remote/run.engine")])
        .bearer_auth(svc.token("acc", Scope::Read))
        .send()
        .await
        .unwrap();
    assert!(
        engine_log
            .text()
            .await
            .unwrap()
            .contains("destroying stage")
    );
    server.abort();
    svc.shutdown().await;
}

#[tokio::test]
async fn run_without_a_command_is_a_usage_error() {
    let out = output(runlog(&["run"])).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_command_stopped_by_its_timeout_never_exits_0() {
    // It answers SIGTERM with a clean exit: the step still did not succeed.
    let out = output(runlog(&[
        "run",
        "--timeout",
        "1s",
        "--",
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 30 & wait",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "stderr: {stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
}

/// Starts `cmd`, sends it SIGINT once `started` holds, and checks that it exits 130;
/// returns its output.
async fn interrupted_once(
    mut cmd: tokio::process::Command,
    what: &str,
    started: impl Fn() -> bool,
) -> std::process::Output {
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !started() {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("stops well before the command would have ended")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn an_interrupted_run_stops_the_command_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    // Written by the step, which a root engine runs as another user.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::Permissions::from_mode(0o1777);
        std::fs::set_permissions(dir.path(), mode).unwrap();
    }
    let marker = dir.path().join("started");
    let script = format!("touch {}; sleep 60; echo finished", marker.display());
    let cmd = runlog(&["run", "--", "sh", "-c", &script]);
    let out = interrupted_once(cmd, "the command started", || marker.exists()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("finished"), "{stdout}");
}

#[tokio::test]
async fn a_run_interrupted_while_it_starts_exits_130_and_leaves_no_data_behind() {
    // The embedded stack keeps its data in a temporary directory: under this one.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = runlog(&["run", "--", "sleep", "60"]);
    cmd.env("TMPDIR", tmp.path());
    let has_data = || std::fs::read_dir(tmp.path()).unwrap().next().is_some();
    interrupted_once(cmd, "a data directory appeared", has_data).await;
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
