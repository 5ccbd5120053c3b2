//! Fault injection: the real engine and the real log service (the `runlog` binary,
//! on 127.0.0.1) with a step printing numbered lines, while the network or a server
//! misbehaves. Afterwards every `pos` must be in the live stream (SSE) and in the
//! archive exactly once, in order, with its text intact — or, where a bound forced a
//! loss, the loss must be stated by a marker line and in the report.
#![allow(clippy::unwrap_used)]

use runlog_protocol::{AccountId, LogLine, Scope};
use runlog_testkit::chaos::{
    RunlogBinary, Watched, archive_lines, check_exactly_once_in_order, free_loopback_port, rss_kib,
    sse_lines,
};
use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "acc";

fn runlog() -> RunlogBinary {
    RunlogBinary::new(env!("CARGO_BIN_EXE_runlog"))
}

fn token(secret: &str, scope: Scope) -> String {
    let acc = AccountId::new(ACCOUNT).unwrap();
    runlog_service::auth::mint_token(
        secret.as_bytes(),
        Some(&acc),
        scope,
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// What `expected_lines(n, tag)` steps print: `"<tag> line <i> …\n"` for i in 0..n.
fn expected_lines(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag} line {i} abcdefghijklmnopqrstuvwxyz\n"))
        .collect()
}

/// A POSIX sh script printing `expected_lines(n, tag)`, pausing `pause` seconds
/// every `every` lines (0: never) so that the output spans many batches.
fn numbered_script(n: usize, tag: &str, every: usize, pause: &str) -> String {
    let pause = if every == 0 {
        String::new()
    } else {
        format!("if [ $((i % {every})) -eq 0 ]; then sleep {pause}; fi; ")
    };
    format!(
        "i=0; while [ $i -lt {n} ]; do {pause}echo \"{tag} line $i abcdefghijklmnopqrstuvwxyz\"; i=$((i+1)); done"
    )
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

async fn setup(engine: &str, service: &str, write_token: &str) {
    let (status, body) = post(
        &format!("{engine}/setup"),
        json!({
            "le_log_key": "engine/log",
            "log_config": {"url": service, "account_id": ACCOUNT, "token": write_token, "indirect_upload": true},
        }),
    )
    .await;
    assert_eq!(status, 200, "setup: {body}");
}

async fn start_step(engine: &str, id: &str, script: &str, key: &str) {
    let (status, body) = post(
        &format!("{engine}/step"),
        json!({"id": id, "script": script, "log_key": key, "detach": true}),
    )
    .await;
    assert_eq!(status, 200, "step {id}: {body}");
}

async fn finish_step(engine: &str, id: &str) -> Value {
    let (status, body) = post(&format!("{engine}/poll_step"), json!({"id": id})).await;
    assert_eq!(status, 200, "poll {id}: {body}");
    body
}

async fn destroy(engine: &str) -> Value {
    let (status, body) = post(&format!("{engine}/destroy"), json!({})).await;
    assert_eq!(status, 200, "destroy: {body}");
    body
}

/// The live stream and the archive of `key` each hold exactly `expected`.
async fn assert_delivered(service: &str, read_token: &str, key: &str, expected: &[String]) {
    let live = sse_lines(service, ACCOUNT, key, read_token, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("live stream of {key}: {e}"));
    if let Err(e) = check_exactly_once_in_order(&live, expected) {
        panic!("live stream of {key}: {e}");
    }
    let archived = archive_lines(service, ACCOUNT, key, read_token)
        .await
        .unwrap_or_else(|e| panic!("archive of {key}: {e}"));
    if let Err(e) = check_exactly_once_in_order(&archived, expected) {
        panic!("archive of {key}: {e}");
    }
}

/// Lines the service holds for `key`, from `GET /streams` (0 when unknown).
async fn stored_lines(service: &str, read_token: &str, key: &str) -> u64 {
    let Ok(resp) = reqwest::Client::new()
        .get(format!("{service}/streams?accountID={ACCOUNT}"))
        .bearer_auth(read_token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return 0;
    };
    let rows: Vec<Value> = resp.json().await.unwrap_or_default();
    rows.iter()
        .find(|r| r["key"] == key)
        .and_then(|r| r["lines"].as_u64())
        .unwrap_or(0)
}

/// Polls until the service holds at least `n` lines of `key` (the step is mid-way).
async fn wait_for_lines(service: &str, read_token: &str, key: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored_lines(service, read_token, key).await < n {
        assert!(Instant::now() < deadline, "{key} never reached {n} lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_network_at_30_percent_loses_and_duplicates_nothing() {
    let svc = TestService::start().await;
    let faults = Faults {
        status_500: 0.05,
        status_429: 0.05,
        reset: 0.05,
        drop_response: 0.05,
        close_mid_body: 0.05,
        delay: 0.05,
        delay_ms: 2000,
        stall: 0.0,
    };
    let proxy = FaultProxy::start(&svc.url(), faults, 7).await;
    let dir = tempfile::tempdir().unwrap();
    let (_engine, engine) = runlog().engine(dir.path());
    setup(&engine, &proxy.url(), &svc.token(ACCOUNT, Scope::Write)).await;

    let n = 4000;
    // Paced (a pause every 20 lines) so the output spans ~200 requests: enough for
    // every kind of fault to be drawn many times.
    let script = numbered_script(n, "faulty", 20, "0.03");
    start_step(&engine, "faulty", &script, "steps/faulty").await;
    let result = finish_step(&engine, "faulty").await;
    assert_eq!(result["exit_code"], 0, "{result}");
    let report = destroy(&engine).await;

    let stats = proxy.stats();
    eprintln!("proxy: {stats:?}\ndestroy: {report}");
    // Every kind of fault actually happened, so the run proves something.
    for (kind, count) in [
        ("500", stats.status_500),
        ("429", stats.status_429),
        ("reset", stats.reset),
        ("answer dropped", stats.drop_response),
        ("half-closed body", stats.close_mid_body),
        ("2 s delay", stats.delay),
    ] {
        assert!(count > 0, "no {kind} fault was injected: {stats:?}");
    }
    let r = svc.token(ACCOUNT, Scope::Read);
    assert_delivered(&svc.url(), &r, "steps/faulty", &expected_lines(n, "faulty")).await;
    svc.shutdown().await;
}

/// Kills the log service (SIGKILL) while a step writes, restarts it on the same
/// address 5 s later, and checks every line arrived in the archive (and, with
/// `check_live`, in the live stream too); returns the writer's report for the
/// step's stream.
async fn service_killed_and_restarted(redis: Option<&str>, tag: &str, check_live: bool) -> Value {
    let data = tempfile::tempdir().unwrap();
    let secret = runlog_service::auth::generate_secret();
    let port = free_loopback_port().unwrap();
    let service = format!("http://127.0.0.1:{port}");
    let mut svc: Watched = runlog().service(port, data.path(), &secret, redis);
    let (w, r) = (token(&secret, Scope::Write), token(&secret, Scope::Read));
    let dir = tempfile::tempdir().unwrap();
    let (_engine, engine) = runlog().engine(dir.path());
    setup(&engine, &service, &w).await;

    let n = 3000;
    let key = format!("steps/{tag}");
    start_step(&engine, tag, &numbered_script(n, tag, 20, "0.02"), &key).await;
    wait_for_lines(&service, &r, &key, 300).await;
    svc.kill();
    // The outage itself is the point: the service is gone for 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _svc = runlog().service(port, data.path(), &secret, redis);

    let result = finish_step(&engine, tag).await;
    assert_eq!(result["exit_code"], 0, "{result}");
    let report = destroy(&engine).await;
    let stream = report["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == key.as_str()))
        .cloned()
        .unwrap_or_default();
    eprintln!("{tag}: report of the step's stream after the restart: {stream}");
    assert_eq!(stream["lines"], n as u64, "{report}");
    assert_eq!(stream["dropped_lines"], 0, "{report}");
    let expected = expected_lines(n, tag);
    if check_live {
        assert_delivered(&service, &r, &key, &expected).await;
    } else {
        let archived = archive_lines(&service, ACCOUNT, &key, &r)
            .await
            .unwrap_or_else(|e| panic!("archive of {key}: {e}"));
        if let Err(e) = check_exactly_once_in_order(&archived, &expected) {
            panic!("archive of {key}: {e}");
        }
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_mid_step_and_restarted_5s_later_loses_nothing() {
    // The embedded service keeps live lines in memory: the crash loses them, so the
    // promise is the archive, and that live streaming carried on after the restart.
    let stream = service_killed_and_restarted(None, "embedded", false).await;
    assert!(stream.get("error").is_none(), "{stream}");
    assert_eq!(stream["streamed_lines"], 3000, "{stream}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_service_restart_leaves_no_gap_in_the_live_stream() {
    service_killed_and_restarted(None, "resumed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backed_service_killed_mid_step_and_restarted_5s_later_loses_nothing() {
    let redis = runlog_testkit::redis::RedisServer::start_new().await;
    let stream = service_killed_and_restarted(Some(&redis.url()), "redis", true).await;
    // Redis kept the stream through the crash: live streaming went on after it.
    assert!(stream.get("error").is_none(), "{stream}");
    assert_eq!(stream["streamed_lines"], 3000, "{stream}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_service_slows_the_step_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let secret = runlog_service::auth::generate_secret();
    let port = free_loopback_port().unwrap();
    let service = format!("http://127.0.0.1:{port}");
    let svc = runlog().service(port, data.path(), &secret, None);
    let (w, r) = (token(&secret, Scope::Write), token(&secret, Scope::Read));
    let dir = tempfile::tempdir().unwrap();
    let (engine_proc, engine) = runlog().engine(dir.path());
    setup(&engine, &service, &w).await;

    // ~25 MB of output at full speed: three times the writer's 8 MiB memory queue.
    let n = 250_000;
    let script = numbered_script_fast(n, "stalled");
    start_step(&engine, "stalled", &script, "steps/stalled").await;
    wait_for_lines(&service, &r, "steps/stalled", 1000).await;
    let pid = nix::unistd::Pid::from_raw(svc.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let rss_before = rss_kib(engine_proc.pid()).unwrap();
    let mut rss_peak = rss_before;
    // The stall itself is the point: 60 s with the service frozen. Sample the
    // engine's memory meanwhile.
    let stall_end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < stall_end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss_kib(engine_proc.pid()).unwrap());
    }
    // The step cannot have finished: the writer held it back (backpressure).
    let dead_end =
        tokio::time::timeout(Duration::from_millis(200), finish_step(&engine, "stalled")).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    eprintln!(
        "engine RSS: {rss_before} KiB at the stall, peak {rss_peak} KiB during 60 s of stall"
    );
    assert!(
        dead_end.is_err(),
        "the step finished while the service was frozen: nothing slowed it"
    );
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "engine memory grew from {rss_before} KiB to {rss_peak} KiB during the stall"
    );
    let result = finish_step(&engine, "stalled").await;
    assert_eq!(result["exit_code"], 0, "{result}");
    destroy(&engine).await;
    assert_delivered(&service, &r, "steps/stalled", &expected_lines(n, "stalled")).await;
    drop(svc);
}

/// Like [`numbered_script`] without pauses, through `awk` so it runs at full speed.
fn numbered_script_fast(n: usize, tag: &str) -> String {
    format!(
        "awk 'BEGIN {{ for (i = 0; i < {n}; i++) print \"{tag} line \" i \" abcdefghijklmnopqrstuvwxyz\" }}'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_disk_is_reported_never_silent() {
    let svc = TestService::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A disk that fills up: every file the engine writes is capped at 512 KiB
    // (RLIMIT_FSIZE; SIGXFSZ ignored so writes fail with EFBIG instead of killing it).
    let (mut engine_proc, engine) =
        runlog().engine_with(dir.path(), "trap '' XFSZ; ulimit -f 1024");
    setup(&engine, &svc.url(), &svc.token(ACCOUNT, Scope::Write)).await;

    let n = 40_000; // ~1.8 MB of lines: far past the cap.
    start_step(
        &engine,
        "full",
        &numbered_script_fast(n, "full"),
        "steps/full",
    )
    .await;
    let result = finish_step(&engine, "full").await;
    assert_eq!(result["exit_code"], 0, "{result}");
    // The engine keeps running: another step works.
    start_step(&engine, "after", "echo still here", "steps/after").await;
    let after = finish_step(&engine, "after").await;
    assert_eq!(after["exit_code"], 0, "{after}");
    let report = destroy(&engine).await;
    assert!(
        engine_proc.wait_exit(Duration::from_millis(10)).is_none(),
        "the engine died of the full disk:\n{}",
        engine_proc.output()
    );
    let stream = report["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == "steps/full"))
        .cloned()
        .unwrap_or_default();
    let dropped = stream["dropped_lines"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "the loss is missing from the report: {report}");

    // Whatever reached the service says that lines were lost, and how the numbers run.
    let r = svc.token(ACCOUNT, Scope::Read);
    let live = sse_lines(
        &svc.url(),
        ACCOUNT,
        "steps/full",
        &r,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let marker = live
        .iter()
        .find(|l| l.out.contains("dropped"))
        .unwrap_or_else(|| panic!("no marker line among {} live lines", live.len()));
    eprintln!("marker: {:?}; report: {stream}", marker.out);
    let kept: Vec<&LogLine> = live
        .iter()
        .filter(|l| l.out.starts_with("full line"))
        .collect();
    assert!(
        kept.len() as u64 + dropped >= n as u64,
        "{} lines kept + {dropped} reported dropped < {n} written: a silent loss",
        kept.len()
    );
    for (i, l) in kept.iter().enumerate() {
        assert_eq!(
            l.out,
            expected_lines(n, "full")[i],
            "kept lines are the first ones, intact"
        );
    }
    // The broken spool was not uploaded; the archive is what the service received,
    // the marker among it, rather than nothing.
    let archived = archive_lines(&svc.url(), ACCOUNT, "steps/full", &r)
        .await
        .unwrap_or_else(|e| panic!("no archive of the stream whose spool failed: {e}"));
    let pos_out = |v: &[LogLine]| -> Vec<(u64, String)> {
        v.iter().map(|l| (l.pos, l.out.clone())).collect()
    };
    assert_eq!(
        pos_out(&archived),
        pos_out(&live),
        "archive and live stream differ"
    );
    // And the broken spool is gone: on a full disk it held the space later writers
    // need. What is left are spools kept for reuse (named `livelog-free-…`).
    let left: Vec<String> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("livelog-free-"))
        .collect();
    assert!(left.is_empty(), "spool files left behind: {left:?}");
    engine_proc.kill();
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_step_delivers_the_killed_runs_history_at_next_start() {
    let svc = TestService::start().await;
    let (w, r) = (
        svc.token(ACCOUNT, Scope::Write),
        svc.token(ACCOUNT, Scope::Read),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut first, engine) = runlog().engine(dir.path());
    setup(&engine, &svc.url(), &w).await;
    let n = 3000;
    start_step(
        &engine,
        "killed",
        &numbered_script(n, "killed", 20, "0.02"),
        "steps/killed",
    )
    .await;
    wait_for_lines(&svc.url(), &r, "steps/killed", 300).await;
    first.kill();
    let printed_before_kill = stored_lines(&svc.url(), &r, "steps/killed").await;

    let (_second, _engine) = runlog().engine(dir.path());
    // The history of the killed run (at least what the step printed before the
    // kill) must reach the service: as an archive, with every line once, in order.
    let deadline = Instant::now() + Duration::from_secs(60);
    let archived = loop {
        if let Ok(lines) = archive_lines(&svc.url(), ACCOUNT, "steps/killed", &r).await {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the killed run's history was not delivered within 60 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(archived.len() as u64 >= printed_before_kill);
    let want = expected_lines(archived.len(), "killed");
    check_exactly_once_in_order(&archived, &want).unwrap();
    svc.shutdown().await;
}

/// Descriptors of this process open on files under `dir`.
fn fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_writers_release_their_spool_files() {
    let svc = TestService::start().await;
    let spool = tempfile::tempdir().unwrap();
    let log_config = runlog_protocol::engine::LogConfig {
        url: svc.url(),
        account_id: ACCOUNT.to_owned(),
        token: svc.token(ACCOUNT, Scope::Write),
        ..Default::default()
    };
    let client: std::sync::Arc<dyn livelog::LogClient> =
        std::sync::Arc::new(livelog::HttpLogClient::new(&log_config).unwrap());
    let n = 50;
    for i in 0..n {
        let mut cfg = livelog::WriterConfig::new(format!("released/{i}"));
        cfg.spool_dir = spool.path().to_path_buf();
        let writer = livelog::Writer::new(client.clone(), cfg);
        writer.write(format!("line of writer {i}\n").as_bytes());
        let report = writer.close().await;
        assert!(report.archived, "{report:?}");
    }
    assert!(n > 0);
    // A long-lived engine closes a writer per step: each must let go of its spool
    // file (and the memory behind it) once closed, or descriptors run out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = fds_under(spool.path());
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} spool files of {n} closed writers are still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.shutdown().await;
}
