//! `runlog serve` and `runlog engine` with the real binary.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test]
async fn serve_prints_working_urls_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"))
        .args([
            "serve",
            "--service-addr",
            "127.0.0.1:0",
            "--engine-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = out.next_line().await.unwrap() {
            let done = line.contains("runlog run --engine");
            banner.push(line);
            if done {
                break;
            }
        }
    })
    .await
    .expect("banner printed");
    let field = |name: &str| {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{name} missing in {banner:#?}"))
    };
    let service = field("log service");
    let engine = field("engine");
    let write_token = field("write token");
    let client = reqwest::Client::new();
    assert!(
        client
            .get(format!("{service}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let health: serde_json::Value = client
        .get(format!("{engine}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true);

    // The printed example works: set up with the printed token, run a step, destroy.
    let setup = serde_json::json!({
        "le_log_key": "demo/engine",
        "log_config": {"url": service, "account_id": "default", "token": write_token, "indirect_upload": true},
    });
    assert!(
        client
            .post(format!("{engine}/setup"))
            .json(&setup)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let step: serde_json::Value = client
        .post(format!("{engine}/step"))
        .json(&serde_json::json!({"id": "hello", "script": "echo hi", "log_key": "demo/hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(step["exit_code"], 0);
    let destroyed: serde_json::Value = client
        .post(format!("{engine}/destroy"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(destroyed["streams"][0]["archived"], true, "{destroyed}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        dir.path().join("engine").is_dir(),
        "engine data lives under the data dir"
    );
}

#[tokio::test]
async fn engine_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"))
        .args(["engine", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUNLOG_ENGINE_TOKEN")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("exits")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}
