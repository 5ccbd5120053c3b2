//! `runlog logs` against a real log service.
#![allow(clippy::unwrap_used)]

mod tail_common;

use runlog_protocol::{LogLine, Scope};
use runlog_testkit::service::TestService;
use tail_common::*;

#[tokio::test]
async fn logs_prints_the_archive_text() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("a").await;
    w.put("a", &lines(0..1000)).await;
    w.close("a", true).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["logs", "a"])).await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..1000));
    // stderr is a pipe here: no progress bar, no link, nothing.
    assert_eq!(done.stderr, "");
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_json_prints_the_ndjson_lines() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("j").await;
    w.put("j", &[text_line(0, "\u{1b}[1mbold\u{1b}[0m\n"), line(1)])
        .await;
    w.close("j", true).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["logs", "--json", "j"])).await;
    assert!(done.success, "{}", done.stderr);
    let rows: Vec<LogLine> = done
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.iter().map(|l| l.pos).collect::<Vec<_>>(), [0, 1]);
    // --json is the data as stored: escape codes included.
    assert_eq!(rows[0].out, "\u{1b}[1mbold\u{1b}[0m\n");
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_of_a_stream_not_yet_archived_prints_its_lines_so_far() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("live").await;
    w.put("live", &lines(0..20)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["logs", "live"])).await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..20));
    let json = run(runlog(&svc.url(), &read, &["logs", "--json", "live"])).await;
    assert_eq!(json.stdout.lines().count(), 20, "{}", json.stdout);
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_of_an_unknown_key_fails_with_a_clear_message() {
    let svc = TestService::start().await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["logs", "missing"])).await;
    assert!(!done.success);
    assert!(
        done.stderr.contains("no archive or stream missing"),
        "{}",
        done.stderr
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_with_a_service_that_is_down_fails_quickly_and_clearly() {
    // A port nothing listens on: bind and drop.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let done = run(runlog(
        &format!("http://127.0.0.1:{port}"),
        "t",
        &["logs", "k"],
    ))
    .await;
    assert!(!done.success);
    assert!(
        done.stderr.to_lowercase().contains("connect"),
        "{}",
        done.stderr
    );
}

/// A log with a GitHub group holding lines 1–3 and a Buildkite section after it.
fn sectioned() -> Vec<serde_json::Value> {
    vec![
        text_line(0, "start\n"),
        text_line(1, "::group::Build\n"),
        text_line(2, "compiling\n"),
        text_line(3, "::endgroup::\n"),
        text_line(4, "--- Test\n"),
        text_line(5, "testing\n"),
    ]
}

#[tokio::test]
async fn logs_sections_lists_the_index_and_section_prints_one() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("s").await;
    w.put("s", &sectioned()).await;
    w.close("s", true).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let table = run(runlog(&svc.url(), &read, &["logs", "--sections", "s"])).await;
    assert!(table.success, "{}", table.stderr);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows[1].starts_with("success") && rows[1].ends_with("  Build"),
        "{}",
        table.stdout
    );
    assert!(rows[1].contains("1-3"), "{}", table.stdout);
    assert!(
        rows[2].starts_with("unknown") && rows[2].ends_with("  Test"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("ledger: complete, lines 0-5, no gap"),
        "{}",
        table.stdout
    );
    let json = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--sections", "--json", "s"],
    ))
    .await;
    let index: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(index["sections"][0]["lines"], 3);

    let one = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--section", "Build", "s"],
    ))
    .await;
    assert!(one.success, "{}", one.stderr);
    assert_eq!(one.stdout, "::group::Build\ncompiling\n::endgroup::\n");
    let none = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--section", "Nope", "s"],
    ))
    .await;
    assert!(!none.success);
    assert!(
        none.stderr.contains("no section named \"Nope\""),
        "{}",
        none.stderr
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_require_complete_fails_with_the_reasons_for_a_log_with_a_gap() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("whole").await;
    w.put("whole", &lines(0..10)).await;
    w.close("whole", true).await;
    w.open("holed").await;
    w.put("holed", &lines(0..4)).await;
    w.put("holed", &lines(7..10)).await;
    w.close("holed", true).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let ok = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--require-complete", "whole"],
    ))
    .await;
    assert!(ok.success, "{}", ok.stderr);
    assert_eq!(ok.stdout, expected_text(0..10));
    let bad = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--require-complete", "holed"],
    ))
    .await;
    assert_eq!(bad.code, Some(3), "{}", bad.stderr);
    assert!(bad.stderr.contains("lines 4-6 missing"), "{}", bad.stderr);
    svc.shutdown().await;
}

#[tokio::test]
async fn logs_and_tail_print_times_absolute_relative_to_the_start_or_as_deltas() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("t").await;
    let at = |pos: u64, time: &str| serde_json::json!({"level": "info", "pos": pos, "out": format!("line {pos}\n"), "time": time});
    w.put(
        "t",
        &[
            at(0, "2026-11-20T10:00:00.000Z"),
            at(1, "2026-11-20T10:00:01.250Z"),
            at(2, "2026-11-20T11:30:00.000+01:00"),
        ],
    )
    .await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let stamps = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    // Live first (tail prints what is stored), then from the archive.
    let tail = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--no-follow", "--time", "delta", "t"],
    ))
    .await;
    assert!(tail.success, "{}", tail.stderr);
    assert_eq!(
        stamps(&tail.stdout),
        ["+0:00:00.000", "+0:00:01.250", "+0:29:58.750"]
    );
    w.close("t", true).await;
    for (form, want) in [
        (
            "utc",
            [
                "2026-11-20T10:00:00.000Z",
                "2026-11-20T10:00:01.250Z",
                "2026-11-20T10:30:00.000Z",
            ],
        ),
        (
            "local",
            [
                "2026-11-20T15:30:00.000+05:30",
                "2026-11-20T15:30:01.250+05:30",
                "2026-11-20T16:00:00.000+05:30",
            ],
        ),
        (
            "since-start",
            ["+0:00:00.000", "+0:00:01.250", "+0:30:00.000"],
        ),
        ("delta", ["+0:00:00.000", "+0:00:01.250", "+0:29:58.750"]),
    ] {
        let mut cmd = runlog(&svc.url(), &read, &["logs", "--time", form, "t"]);
        cmd.env("TZ", "Asia/Kolkata");
        let done = run(cmd).await;
        assert!(done.success, "{form}: {}", done.stderr);
        assert_eq!(stamps(&done.stdout), want, "{form}");
        assert!(done.stdout.ends_with(" line 2\n"), "{}", done.stdout);
    }
    let both = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--timestamps", "--time", "utc", "t"],
    ))
    .await;
    assert!(!both.success);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
    let bad = run(runlog(
        &svc.url(),
        &read,
        &["logs", "--time", "martian", "t"],
    ))
    .await;
    assert!(!bad.success);
    assert!(bad.stderr.contains("since-start"), "{}", bad.stderr);
    svc.shutdown().await;
}
