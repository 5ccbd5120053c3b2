//! Helpers for the `runlog tail` / `logs` / `ls` tests: write lines over HTTP to a
//! real service, run the real binary against it.
#![allow(dead_code, clippy::unwrap_used)]

use reqwest::StatusCode;
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ACCOUNT: &str = "acc";
/// Longest any CLI run may take in these tests.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Writes to one account of a service.
pub struct Writer {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Writer {
    pub fn new(svc: &TestService) -> Writer {
        Writer {
            base: svc.url(),
            token: svc.token(ACCOUNT, Scope::Write),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, key: &str, extra: &str, body: Option<Value>) {
        let url = format!("{}/stream?accountID={ACCOUNT}&key={key}{extra}", self.base);
        let mut req = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{method} {key}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn open(&self, key: &str) {
        self.call(reqwest::Method::POST, key, "", None).await;
    }

    pub async fn put(&self, key: &str, lines: &[Value]) {
        self.call(
            reqwest::Method::PUT,
            key,
            "",
            Some(Value::from(lines.to_vec())),
        )
        .await;
    }

    pub async fn close(&self, key: &str, snapshot: bool) {
        let extra = if snapshot { "&snapshot=true" } else { "" };
        self.call(reqwest::Method::DELETE, key, extra, None).await;
    }
}

pub fn line(pos: u64) -> Value {
    text_line(pos, &format!("line {pos}\n"))
}

pub fn text_line(pos: u64, out: &str) -> Value {
    json!({"level": "info", "pos": pos, "out": out, "time": "2026-11-20T10:00:00.000Z"})
}

pub fn lines(range: std::ops::Range<u64>) -> Vec<Value> {
    range.map(line).collect()
}

/// `line a\n … line b-1\n`: what the CLI prints for those lines.
pub fn expected_text(range: std::ops::Range<u64>) -> String {
    range.map(|p| format!("line {p}\n")).collect()
}

/// The `runlog` binary with service flags; configuration from the environment is
/// removed so the test's own flags are the only input.
pub fn runlog(base: &str, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.args(args)
        .arg("--url")
        .arg(base)
        .arg("--token")
        .arg(token)
        .arg("--account")
        .arg(ACCOUNT)
        .env_remove("RUNLOG_URL")
        .env_remove("RUNLOG_TOKEN")
        .env_remove("RUNLOG_ACCOUNT")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// What a finished run printed.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs to completion within [`RUN_LIMIT`].
pub async fn run(mut cmd: Command) -> Output {
    let child = cmd.spawn().expect("spawn runlog");
    finish(child).await
}

/// Waits for a spawned run to end within [`RUN_LIMIT`].
pub async fn finish(child: Child) -> Output {
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("runlog finished in time")
        .expect("runlog ran");
    Output {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads a child's stdout line by line until `want` lines were read.
pub async fn read_lines(
    reader: &mut BufReader<tokio::process::ChildStdout>,
    want: usize,
) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < want {
        let mut l = String::new();
        let n = tokio::time::timeout(RUN_LIMIT, reader.read_line(&mut l))
            .await
            .expect("a line in time")
            .expect("read stdout");
        assert!(n > 0, "stdout ended after {got:?}");
        got.push(l);
    }
    got
}
