//! `runlog tail` against a real log service.
#![allow(clippy::unwrap_used)]

mod tail_common;

use runlog_protocol::Scope;
use runlog_testkit::forward::Forwarder;
use runlog_testkit::service::{TestService, test_config};
use tail_common::*;
use tokio::io::BufReader;

#[tokio::test]
async fn tail_backfills_then_follows_until_the_stream_closes() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("build").await;
    w.put("build", &lines(0..3)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let mut child = runlog(&svc.url(), &read, &["tail", "build"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The backfill arrives before anything new is written…
    assert_eq!(read_lines(&mut out, 3).await.concat(), expected_text(0..3));
    // …then live lines, until the close.
    w.put("build", &lines(3..6)).await;
    assert_eq!(read_lines(&mut out, 3).await.concat(), expected_text(3..6));
    w.close("build", false).await;
    let done = finish(child).await;
    assert!(done.success, "tail failed: {}", done.stderr);
    assert_eq!(done.stdout, "", "nothing after the close");
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_resumes_after_a_service_restart_without_loss_or_repeats() {
    // Stores that outlive the server process, as Redis would.
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let streams = runlog_service::backend::stream_store(&cfg).await.unwrap();
    let blobs = runlog_service::backend::blob_store(&cfg).await.unwrap();
    let mut svc = TestService::start_with_stores(streams, blobs).await;
    let forwarder = Forwarder::start(svc.addr()).await;
    let w = Writer::new(&svc);
    w.open("job").await;
    w.put("job", &lines(0..100)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let mut child = runlog(&forwarder.url(), &read, &["tail", "job"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = read_lines(&mut out, 100).await.concat();
    let before = forwarder.connections();

    svc.restart().await;
    forwarder.switch_to(svc.addr());
    let w = Writer::new(&svc);
    w.put("job", &lines(100..150)).await;
    seen.push_str(&read_lines(&mut out, 50).await.concat());
    w.close("job", false).await;
    let done = finish(child).await;
    assert!(done.success, "tail failed: {}", done.stderr);
    seen.push_str(&done.stdout);
    assert_eq!(seen, expected_text(0..150));
    assert!(forwarder.connections() > before, "tail never reconnected");
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_no_follow_prints_what_is_stored_and_exits() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("open-stream").await;
    w.put("open-stream", &lines(0..5)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--no-follow", "open-stream"],
    ))
    .await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..5));
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_since_line_starts_at_that_line() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("s").await;
    w.put("s", &lines(0..10)).await;
    w.close("s", false).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--since-line", "7", "s"],
    ))
    .await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(7..10));
    svc.shutdown().await;
}

#[tokio::test]
async fn colours_are_stripped_on_a_pipe_and_kept_when_forced() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("c").await;
    w.put(
        "c",
        &[text_line(
            0,
            "\u{1b}[31mred\u{1b}[0m \u{1b}[2Jclear \u{1b}]0;title\u{7}done\n",
        )],
    )
    .await;
    w.close("c", false).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let piped = run(runlog(&svc.url(), &read, &["tail", "c"])).await;
    assert!(piped.success, "{}", piped.stderr);
    assert_eq!(piped.stdout, "red clear done\n");
    let forced = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--color", "always", "c"],
    ))
    .await;
    // Colours survive; screen clears and title changes never reach a terminal.
    assert_eq!(forced.stdout, "\u{1b}[31mred\u{1b}[0m clear done\n");
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_of_an_unknown_stream_fails_with_a_clear_message() {
    let svc = TestService::start().await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(&svc.url(), &read, &["tail", "nope"])).await;
    assert!(!done.success);
    assert!(done.stderr.contains("not found"), "{}", done.stderr);
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_with_a_token_of_another_account_is_refused() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("private").await;
    w.put("private", &lines(0..2)).await;
    let foreign = svc.token("other", Scope::Read);
    let done = run(runlog(&svc.url(), &foreign, &["tail", "private"])).await;
    assert!(!done.success);
    assert_eq!(done.stdout, "", "no line leaks");
    assert!(done.stderr.contains("refused"), "{}", done.stderr);
    let garbage = run(runlog(&svc.url(), "garbage", &["tail", "private"])).await;
    assert!(!garbage.success);
    assert!(garbage.stderr.contains("401"), "{}", garbage.stderr);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_path_like_key_is_refused_before_any_request() {
    // No service at all: the key is rejected while parsing flags.
    let done = run(runlog(
        "http://127.0.0.1:9",
        "t",
        &["tail", "../etc/passwd"],
    ))
    .await;
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("forbidden segment"), "{}", done.stderr);
}

#[tokio::test]
async fn tail_through_a_faulty_network_prints_every_line_once_in_order() {
    use runlog_testkit::proxy::{FaultProxy, Faults};
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("flaky").await;
    w.put("flaky", &lines(0..500)).await;
    // 60 % of requests fail: 500s, 429s, resets, dropped answers, bodies cut midway.
    let proxy = FaultProxy::start(&svc.url(), Faults::mixed(0.6), 7).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let child = runlog(
        &proxy.url(),
        &read,
        &["tail", "--reconnect-for", "30s", "flaky"],
    )
    .spawn()
    .unwrap();
    for start in (500..1000).step_by(100) {
        w.put("flaky", &lines(start..start + 100)).await;
    }
    w.close("flaky", false).await;
    let done = finish(child).await;
    assert!(done.success, "tail failed: {}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..1000));
    // The faults really happened: the tail had to reconnect through them.
    let stats = proxy.stats();
    let failed = stats.status_500
        + stats.status_429
        + stats.reset
        + stats.drop_response
        + stats.close_mid_body;
    assert!(failed > 0 && stats.requests > 1, "{stats:?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn no_follow_past_the_end_prints_nothing_and_returns_at_once() {
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    w.open("short").await;
    w.put("short", &lines(0..5)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    // `run` fails the test if the command outlives RUN_LIMIT, well below the 90 s
    // stall timeout a wrong wait would sit out.
    let done = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--no-follow", "--since-line", "100", "short"],
    ))
    .await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, "");
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_wait_follows_a_stream_opened_after_it_started() {
    use runlog_testkit::proxy::{FaultProxy, Faults};
    let svc = TestService::start().await;
    let w = Writer::new(&svc);
    let read = svc.token(ACCOUNT, Scope::Read);
    // A plain proxy, to see the tail's requests.
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    let child = runlog(&proxy.url(), &read, &["tail", "--wait", "50s", "later"])
        .spawn()
        .unwrap();
    // Open the stream only after the tail has asked for it (and not found it) twice.
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    while proxy.stats().requests < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tail never asked for the stream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w.open("later").await;
    w.put("later", &lines(0..3)).await;
    w.close("later", false).await;
    let done = finish(child).await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..3));
    svc.shutdown().await;
}
