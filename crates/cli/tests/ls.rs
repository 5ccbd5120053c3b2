//! `runlog ls` against a real log service.
#![allow(clippy::unwrap_used)]

mod tail_common;

use runlog_protocol::Scope;
use runlog_protocol::service::StreamInfo;
use runlog_testkit::service::TestService;
use std::time::Duration;
use tail_common::*;

#[tokio::test]
async fn ls_lists_the_accounts_streams_newest_first() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("older").await;
    w.put("older", &lines(0..4)).await;
    w.close("older", true).await;
    // Activity times have millisecond resolution; make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.open("newer").await;
    w.put("newer", &lines(0..2)).await;
    let read = svc.token(ACCOUNT, Scope::Read);

    let table = run(runlog(&svc.url(), &read, &["ls"])).await;
    assert!(table.success, "{}", table.stderr);
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..4], ["KEY", "STATE", "LEDGER", "LINES"]);
    assert_eq!(rows[1][..4], ["newer", "open", "-", "2"]);
    assert_eq!(rows[2][..3], ["older", "archived", "complete"]);
    assert_eq!(rows.len(), 3, "{}", table.stdout);

    let json = run(runlog(&svc.url(), &read, &["ls", "--json"])).await;
    let infos: Vec<StreamInfo> = serde_json::from_str(&json.stdout).unwrap();
    let keys: Vec<&str> = infos.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["newer", "older"]);
    assert!(infos[1].archived && !infos[1].open);
    assert_eq!((infos[0].complete, infos[1].complete), (None, Some(true)));
    svc.shutdown().await;
}

#[tokio::test]
async fn ls_says_which_closed_streams_the_ledger_proves_incomplete() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("holed").await;
    w.put("holed", &lines(0..4)).await;
    w.put("holed", &lines(7..10)).await;
    w.close("holed", true).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let table = run(runlog(&svc.url(), &read, &["ls"])).await;
    assert!(table.success, "{}", table.stderr);
    let row: Vec<&str> = table
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        ["holed", "archived", "incomplete"],
        "{}",
        table.stdout
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn ls_of_another_account_is_refused() {
    let svc = TestService::start().await;
    let foreign = svc.token("other", Scope::Read);
    let done = run(runlog(&svc.url(), &foreign, &["ls"])).await;
    assert!(!done.success);
    assert!(
        done.stderr.contains("403") || done.stderr.contains("401"),
        "{}",
        done.stderr
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn ls_of_an_empty_account_prints_only_the_header() {
    let svc = TestService::start().await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["ls"])).await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout.lines().count(), 1, "{}", done.stdout);
}

#[tokio::test]
async fn ls_without_an_account_uses_the_tokens_account() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("mine").await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.args(["ls", "--json", "--url", &svc.url()])
        .env("RUNLOG_TOKEN", &read)
        .env_remove("RUNLOG_ACCOUNT")
        .env_remove("RUNLOG_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let done = run(cmd).await;
    assert!(done.success, "{}", done.stderr);
    let infos: Vec<StreamInfo> = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].key.as_str(), "mine");
    svc.shutdown().await;
}
