//! `runlog serve` and `runlog engine` with the real binary.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A `runlog serve` on free loopback ports with its data in `dir`, and the fields of
/// the banner it printed (`field("engine")`, `field("write token")`, …).
async fn serve(dir: &std::path::Path) -> (tokio::process::Child, impl Fn(&str) -> String) {
    serve_with(dir, &[]).await
}

/// [`serve`] with `extra` flags.
async fn serve_with(
    dir: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, impl Fn(&str) -> String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"))
        .args([
            "serve",
            "--service-addr",
            "127.0.0.1:0",
            "--engine-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
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
    // Whatever it prints later is read too: a closed pipe would fail its writes.
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let field = move |name: &str| {
        banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{name} missing in {banner:#?}"))
    };
    (child, field)
}

/// Sends SIGTERM to `child` and waits (at most `limit`) for it to exit.
async fn sigterm(child: &mut tokio::process::Child, limit: Duration) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn serve_prints_working_urls_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, field) = serve(dir.path()).await;
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

    let status = sigterm(&mut child, Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    assert!(
        dir.path().join("engine").is_dir(),
        "engine data lives under the data dir"
    );
}

/// What `command` printed and how it exited (it must exit within a minute).
async fn finished(mut command: tokio::process::Command) -> std::process::Output {
    let out = command.stdin(Stdio::null()).output();
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("exits")
        .unwrap()
}

/// The engine's flags, which `runlog engine` and `runlog serve` share.
const ENGINE_FLAGS: &[&str] = &[
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--allow-host",
    "--pass-env",
    "--max-steps",
    "--allow-apt",
    "--python-package",
    "--allow-host-paths",
    "--job-retention",
    "--job-queue",
    "--job-status-wait",
    "--close-deadline",
    "--destroy-deadline",
];

#[tokio::test]
async fn serve_and_engine_list_the_same_engine_flags() {
    for command in ["serve", "engine"] {
        let mut help = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"));
        help.args([command, "--help"]);
        let out = finished(help).await;
        assert!(out.status.success(), "runlog {command} --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ENGINE_FLAGS {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(flag)
                    || l.contains(&format!(" {flag} "))
                    || l.trim_end().ends_with(flag)),
                "runlog {command} --help lacks {flag}:\n{help}"
            );
        }
    }
}

/// The status of a raw `GET /healthz` to `addr` naming `host` in its `Host` header.
async fn healthz_status(addr: &str, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let status = answer.split_whitespace().nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {answer:?}"))
}

#[tokio::test]
async fn an_engine_flag_takes_effect_under_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, field) = serve_with(dir.path(), &["--allow-host", "builder.test"]).await;
    let engine = field("engine");
    let addr = engine.strip_prefix("http://").unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap();
    // A token-less engine answers only loopback names and the hosts it was told.
    assert_eq!(
        healthz_status(&addr, &format!("builder.test:{port}")).await,
        200
    );
    assert_eq!(
        healthz_status(&addr, &format!("elsewhere.test:{port}")).await,
        421
    );
    let status = sigterm(&mut child, Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn engine_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"));
    engine
        .args(["engine", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUNLOG_ENGINE_TOKEN");
    let out = finished(engine).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}

/// The archive file of `key` (account `default`) under `data_dir`, decompressed.
fn archive_in(data_dir: &std::path::Path, key: &str) -> Option<String> {
    use std::io::Read as _;
    let suffix = format!("default/{key}.ndjson.gz");
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(&suffix) {
                let mut text = String::new();
                flate2::read::GzDecoder::new(std::fs::File::open(&path).ok()?)
                    .read_to_string(&mut text)
                    .ok()?;
                return Some(text);
            }
        }
    }
    None
}

#[tokio::test]
async fn sigterm_during_a_step_archives_its_stream_before_the_service_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, field) = serve(dir.path()).await;
    let (service, engine) = (field("log service"), field("engine"));
    let (write_token, read_token) = (field("write token"), field("read token"));
    let client = reqwest::Client::new();
    let setup = serde_json::json!({
        "log_config": {"url": service, "account_id": "default", "token": write_token},
    });
    let r = client
        .post(format!("{engine}/setup"))
        .json(&setup)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // A step that would run for a minute, its request held open as a controller's.
    let step = tokio::spawn({
        let (client, engine) = (client.clone(), engine.clone());
        async move {
            client
                .post(format!("{engine}/step"))
                .json(&serde_json::json!({"id": "long", "log_key": "demo/long",
                    "script": "i=0; while [ $i -lt 1200 ]; do i=$((i+1)); echo line $i; sleep 0.05; done"}))
                .send()
                .await
        }
    });
    // Until the service has some of its lines live.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let streams: serde_json::Value = client
            .get(format!("{service}/streams?accountID=default"))
            .bearer_auth(&read_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let lines = streams
            .as_array()
            .and_then(|s| s.iter().find(|s| s["key"] == "demo/long"))
            .and_then(|s| s["lines"].as_u64())
            .unwrap_or(0);
        if lines >= 10 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step's lines never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stops without waiting for the step to end by itself.
    let status = sigterm(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    // The held request got its answer (the step was stopped) or its connection closed.
    let answered = step.await.unwrap();
    if let Ok(r) = answered {
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_ne!(
            body["exit_code"], 0,
            "the step cannot have finished: {body}"
        );
    }
    // The writer reached the service: the archive is its history, not a snapshot
    // missing the tail, and nothing waits in the outbox for the next start.
    let archive = archive_in(dir.path(), "demo/long").expect("no archive of the step");
    let rows: Vec<serde_json::Value> = archive
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 10, "{} rows", rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["pos"], i as u64, "{row}");
    }
    let outbox = dir.path().join("engine").join("outbox");
    let pending = std::fs::read_dir(&outbox).map_or(0, |d| d.count());
    assert_eq!(pending, 0, "histories left in {}", outbox.display());
}
