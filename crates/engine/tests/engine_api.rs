#![allow(clippy::unwrap_used)]
//! The engine's HTTP API against a real log service: setup → step → destroy.

mod engine_support;

use engine_support::{TestEngine, archive, assert_in_order, eventually};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::time::{Duration, Instant};

const ACCOUNT: &str = "account-123";

fn texts(lines: &[runlog_protocol::LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.out.trim_end_matches('\n').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_and_engine_lines_arrive_in_their_keys_in_order_complete_and_masked() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": "stage-1/lite-engine-logs",
                "log_config": svc.log_config(ACCOUNT),
                "network": {"id": "n"},
                "envs": {"GREETING": "hello from the stage"},
                "secrets": ["hunter2"],
                "files": [{"path": "scripts/count.sh", "data": "i=0\nwhile [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done\n", "mode": 493}],
            }),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let spool = engine.state.config().spool_dir();
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the spool directory holds the stage's logs");
    }

    let (status, body) = engine
        .post(
            "/step",
            json!({
                "id": "step-1",
                "name": "count",
                "script": "sh scripts/count.sh; echo \"$GREETING\"; echo \"password is hunter2\" >&2; echo \"step secret s3cr3t-value\"; echo RESULT=42 >> \"$RUNLOG_OUTPUT\"",
                "log_key": "stage-1/step-1",
                "secrets": ["s3cr3t-value"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["exited"], true);
    assert_eq!(body["outputs"], json!({"RESULT": "42"}));

    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    let streams = destroyed["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{destroyed}");
    assert_eq!(streams[0]["key"], "stage-1/step-1");
    assert_eq!(streams[0]["lines"], 3003);
    assert_eq!(streams[0]["archived"], true, "{destroyed}");
    assert_eq!(
        streams[1]["key"], "stage-1/lite-engine-logs",
        "the engine stream closes last"
    );
    assert_eq!(streams[1]["archived"], true, "{destroyed}");

    let reader = svc.token(ACCOUNT, Scope::Read);
    let step = archive(&svc.url(), &reader, ACCOUNT, "stage-1/step-1")
        .await
        .unwrap();
    let step_text = texts(&step);
    assert_eq!(step.len(), 3003);
    assert!(
        step.iter().enumerate().all(|(i, l)| l.pos == i as u64),
        "positions are 0..n"
    );
    let counted: Vec<_> = step_text
        .iter()
        .filter(|l| l.starts_with("line "))
        .cloned()
        .collect();
    let expected: Vec<_> = (0..3000).map(|i| format!("line {i}")).collect();
    assert_eq!(counted, expected, "every line, in order");
    assert!(step_text.contains(&"hello from the stage".to_owned()));
    assert!(
        step_text
            .iter()
            .all(|l| !l.contains("hunter2") && !l.contains("s3cr3t-value")),
        "secrets masked"
    );
    assert!(
        step_text
            .iter()
            .any(|l| l.starts_with("password is ") && l.len() > "password is ".len())
    );

    let own = archive(&svc.url(), &reader, ACCOUNT, "stage-1/lite-engine-logs")
        .await
        .unwrap();
    let own_text = texts(&own).join("\n");
    let order = [
        "setting up stage",
        "workspace",
        "starting step",
        "step exited with code 0",
        "destroying stage",
        "closing the engine log stream",
    ];
    assert_in_order(&own_text, &order);
    assert!(!own_text.contains("hunter2"));
    svc.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_step_answers_at_once_and_poll_returns_its_result() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let (status, _) = engine
        .post("/setup", json!({"log_config": svc.log_config(ACCOUNT)}))
        .await;
    assert_eq!(status, 200);
    let marker = engine.scratch.path().join("release");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo released; exit 3",
        marker.display()
    );
    let (status, body) = engine
        .post(
            "/step",
            json!({"id": "bg", "script": script, "log_key": "s/bg", "detach": true}),
        )
        .await;
    assert_eq!(
        (status, &body),
        (200, &json!({})),
        "detached answers {{}} while the step still runs"
    );
    std::fs::write(&marker, b"").unwrap();
    let (status, body) = engine.post("/poll_step", json!({"id": "bg"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 3);
    assert_eq!(body["exited"], true);
    // Polling again answers the same result.
    let (_, again) = engine.post("/poll_step", json!({"id": "bg"})).await;
    assert_eq!(again, body);
    engine.post("/destroy", json!({})).await;
    engine.shutdown().await;
    svc.shutdown().await;
}

fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting to be reaped by init is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group_including_grandchildren() {
    let engine = TestEngine::start().await;
    let (status, _) = engine.post("/setup", json!({})).await;
    assert_eq!(status, 200);
    let pidfile = engine.scratch.path().join("grandchild.pid");
    let script = format!(
        "sh -c 'echo $$ > {}; sleep 1000' & sleep 1000",
        pidfile.display()
    );
    let started = Instant::now();
    let (status, body) = engine
        .post(
            "/step",
            json!({"id": "slow", "script": script, "timeout": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after the timeout, not after the sleep"
    );
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    assert_ne!(body["exit_code"], 0);
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || process_is_gone(pid)).await,
        "grandchild {pid} survived the timeout"
    );
    engine.post("/destroy", json!({})).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_kills_running_steps_and_removes_the_workspace() {
    let engine = TestEngine::start().await;
    engine
        .post("/setup", json!({"files": [{"path": "a.txt", "data": "x"}]}))
        .await;
    let (status, _) = engine
        .post(
            "/step",
            json!({"id": "forever", "script": "sleep 1000", "detach": true}),
        )
        .await;
    assert_eq!(status, 200);
    let stage = engine.state.stage().unwrap();
    assert!(stage.workspace.join("a.txt").is_file());
    let started = Instant::now();
    let (status, body) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(body["killed_steps"], json!(["forever"]));
    assert!(!stage.workspace.exists());
    // A second destroy is harmless, and a new stage can be set up.
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stages_running_concurrently_never_mix_lines() {
    let svc = TestService::start().await;
    let a = TestEngine::start().await;
    let b = TestEngine::start().await;
    for (engine, name) in [(&a, "a"), (&b, "b")] {
        let (status, _) = engine
            .post(
                "/setup",
                json!({"le_log_key": format!("{name}/engine"), "log_config": svc.log_config(ACCOUNT)}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let script =
        |name: &str| format!("i=0; while [ $i -lt 5000 ]; do echo \"{name} $i\"; i=$((i+1)); done");
    let (ra, rb) = tokio::join!(
        a.post(
            "/step",
            json!({"id": "s", "name": "count-a", "script": script("a"), "log_key": "a/step"})
        ),
        b.post(
            "/step",
            json!({"id": "s", "name": "count-b", "script": script("b"), "log_key": "b/step"})
        ),
    );
    assert_eq!(ra.1["exit_code"], 0);
    assert_eq!(rb.1["exit_code"], 0);
    let (da, db) = tokio::join!(a.post("/destroy", json!({})), b.post("/destroy", json!({})));
    assert_eq!((da.0, db.0), (200, 200));
    let reader = svc.token(ACCOUNT, Scope::Read);
    for name in ["a", "b"] {
        let lines = texts(
            &archive(&svc.url(), &reader, ACCOUNT, &format!("{name}/step"))
                .await
                .unwrap(),
        );
        let expected: Vec<_> = (0..5000).map(|i| format!("{name} {i}")).collect();
        assert_eq!(lines, expected);
        let own = texts(
            &archive(&svc.url(), &reader, ACCOUNT, &format!("{name}/engine"))
                .await
                .unwrap(),
        )
        .join("\n");
        // Each engine stream holds its own stage's step only.
        let other = if name == "a" { "b" } else { "a" };
        assert!(
            own.contains(&format!("starting step \"count-{name}\"")),
            "{own}"
        );
        assert!(
            !own.contains(&format!("count-{other}")),
            "engine {name}'s stream holds the other stage's events:\n{own}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_service_down_at_setup_steps_still_run_and_the_outbox_delivers_later() {
    use runlog_testkit::proxy::{FaultProxy, Faults};
    let svc = TestService::start().await;
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 7).await;
    proxy.set_down(true);
    let engine = TestEngine::start().await;
    let mut cfg = svc.log_config(ACCOUNT);
    cfg["url"] = json!(proxy.url());
    let (status, body) = engine
        .post(
            "/setup",
            json!({"le_log_key": "down/engine", "log_config": cfg}),
        )
        .await;
    assert_eq!(
        (status, &body),
        (200, &json!({})),
        "setup succeeds without the service"
    );
    let (status, body) = engine
        .post(
            "/step",
            json!({"id": "s", "script": "seq 1 100", "log_key": "down/step"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["exit_code"], 0, "the step ran");
    let started = Instant::now();
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    let deadline = engine.state.config().destroy_deadline;
    assert!(
        started.elapsed() <= deadline + Duration::from_secs(2),
        "destroy took {:?}",
        started.elapsed()
    );
    let step = &destroyed["streams"][0];
    assert_eq!(step["key"], "down/step");
    assert_eq!(step["archived"], false);
    assert_eq!(step["outboxed"], true, "{destroyed}");

    proxy.set_down(false);
    let outbox = engine.state.config().outbox_dir();
    let reader = svc.token(ACCOUNT, Scope::Read);
    let url = svc.url();
    let delivered = eventually(Duration::from_secs(20), async || {
        livelog::deliver_outbox(&outbox).await;
        archive(&url, &reader, ACCOUNT, "down/step")
            .await
            .is_some_and(|l| l.len() == 100)
    })
    .await;
    assert!(
        delivered,
        "the outbox delivered the step's history once the service was back"
    );
    let lines = texts(&archive(&url, &reader, ACCOUNT, "down/step").await.unwrap());
    assert_eq!(lines, (1..=100).map(|i| i.to_string()).collect::<Vec<_>>());
    engine.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_step_of_a_key_continues_its_stream_and_a_concurrent_writer_is_refused() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let setup = json!({"log_config": svc.log_config(ACCOUNT), "le_log_key": "reuse/engine"});
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let first = json!({"id": "first", "log_key": "reuse/step", "script": "for i in 1 2 3; do echo FIRST-$i; done"});
    assert_eq!(engine.post("/step", first).await.0, 200);
    // A writer of the same key at the same time: the engine log, a running step.
    let marker = engine.scratch.path().join("release");
    let wait = format!("while [ ! -e '{}' ]; do sleep 0.05; done", marker.display());
    let running =
        json!({"id": "running", "log_key": "reuse/running", "script": wait, "detach": true});
    assert_eq!(engine.post("/step", running).await.0, 200);
    let proof = engine.scratch.path().join("refused-ran");
    for (id, key) in [("engine-key", "reuse/engine"), ("beside", "reuse/running")] {
        let script = format!("touch '{}'", proof.display());
        let (status, answer) = engine
            .post("/step", json!({"id": id, "log_key": key, "script": script}))
            .await;
        assert_eq!(status, 409, "{id}: {answer}");
        let msg = answer["error_msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(key) && msg.contains("one writer at a time"),
            "{msg}"
        );
    }
    assert!(!proof.exists(), "a refused step ran");
    std::fs::write(&marker, b"").unwrap();
    // The first step has ended: a second one of its key continues the stream.
    let second =
        json!({"id": "second", "log_key": "reuse/step", "script": "echo SECOND-4; echo SECOND-5"});
    let (status, answer) = engine.post("/step", second).await;
    assert_eq!(status, 200, "{answer}");
    let (status, report) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{report}");
    for stream in report["streams"].as_array().expect("stream reports") {
        assert_eq!(stream["dropped_lines"], json!(0), "{stream}");
        assert_eq!(stream["archived"], json!(true), "{stream}");
    }
    let want = ["FIRST-1", "FIRST-2", "FIRST-3", "SECOND-4", "SECOND-5"];
    let reader = svc.token(ACCOUNT, Scope::Read);
    let live = engine_support::live_lines(&svc.url(), &reader, ACCOUNT, "reuse/step").await;
    assert_eq!(texts(&live), want, "live stream");
    let positions: Vec<u64> = live.iter().map(|l| l.pos).collect();
    assert_eq!(positions, [0, 1, 2, 3, 4]);
    let lines = archive(&svc.url(), &reader, ACCOUNT, "reuse/step")
        .await
        .expect("the key's archive");
    assert_eq!(texts(&lines), want, "archive");
    engine.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_by_a_later_stage_on_another_engine_keeps_both_histories() {
    let svc = TestService::start().await;
    let reader = svc.token(ACCOUNT, Scope::Read);
    let mut engine_log_lines = 0;
    for (round, word) in ["EARLIER", "LATER"].iter().enumerate() {
        let engine = TestEngine::start().await;
        let setup = json!({"log_config": svc.log_config(ACCOUNT), "le_log_key": "shared/engine"});
        assert_eq!(engine.post("/setup", setup).await.0, 200);
        let script = format!("for i in 1 2 3; do echo {word}-$i; done");
        let step = json!({"id": format!("s{round}"), "log_key": "shared/key", "script": script});
        let (status, answer) = engine.post("/step", step).await;
        assert_eq!(status, 200, "{answer}");
        let (status, report) = engine.post("/destroy", json!({})).await;
        assert_eq!(status, 200, "{report}");
        let step = &report["streams"]
            .as_array()
            .expect("stream reports")
            .iter()
            .find(|r| r["key"] == "shared/key")
            .cloned()
            .expect("the step's report");
        assert_eq!(
            (&step["lines"], &step["dropped_lines"], &step["archived"]),
            (&json!(3), &json!(0), &json!(true)),
            "{step}"
        );
        let log = report["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "shared/engine")
            .cloned()
            .expect("the engine log's report");
        assert_eq!(
            (&log["dropped_lines"], &log["archived"]),
            (&json!(0), &json!(true)),
            "{log}"
        );
        engine_log_lines += log["lines"].as_u64().unwrap();
        engine.shutdown().await;
    }
    // The stage's engine log (`le_log_key`) is continued by the later stage too.
    let log = archive(&svc.url(), &reader, ACCOUNT, "shared/engine")
        .await
        .expect("the engine log's archive");
    assert_eq!(log.len() as u64, engine_log_lines);
    assert!(log.iter().enumerate().all(|(i, l)| l.pos == i as u64));
    let want = [
        "EARLIER-1",
        "EARLIER-2",
        "EARLIER-3",
        "LATER-1",
        "LATER-2",
        "LATER-3",
    ];
    let live = engine_support::live_lines(&svc.url(), &reader, ACCOUNT, "shared/key").await;
    assert_eq!(texts(&live), want, "live stream");
    let lines = archive(&svc.url(), &reader, ACCOUNT, "shared/key")
        .await
        .expect("the key's archive");
    assert_eq!(texts(&lines), want, "archive");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_ends_a_process_that_left_its_steps_process_group() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let pidfile = engine.scratch.path().join("escaped.pid");
    // `setsid` puts the sleeper in a session and process group of its own: killing
    // the step's group does not reach it.
    let script = format!(
        "setsid sh -c 'echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec sleep 600' '{}' </dev/null >/dev/null 2>&1 &\n\
         while [ ! -s '{}' ]; do sleep 0.02; done",
        pidfile.display(),
        pidfile.display()
    );
    let (status, answer) = engine
        .post("/step", json!({"id": "escape", "script": script}))
        .await;
    assert_eq!((status, &answer["exit_code"]), (200, &json!(0)), "{answer}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !process_is_gone(pid),
        "the escaped process should still run after its step"
    );
    let (status, report) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert!(report.get("errors").is_none(), "{report}");
    assert!(process_is_gone(pid), "process {pid} outlived /destroy");
    engine.shutdown().await;
}

/// Steps of an engine that runs them as its own user can read its spool directory;
/// the spool files kept for reuse must then hold nothing of an earlier stage.
/// Every step of a stage has the stage's own `TMPDIR`, shared by its steps and
/// removed by `/destroy`: what one stage's tools leave there is gone before the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_s_temporary_directory_is_its_own_and_gone_after_destroy() {
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let setup = json!({"log_config": svc.log_config(ACCOUNT)});
    let run = |id: &str, script: &str| json!({"id": id, "log_key": format!("tmp/{id}"), "script": script});
    assert_eq!(engine.post("/setup", setup.clone()).await.0, 200);
    let (status, first) = engine
        .post("/step", run("one", r#"f=$(mktemp) && echo LEFT-BEHIND > "$f" && echo "tmpfile=$f" >> "$RUNLOG_OUTPUT""#))
        .await;
    assert_eq!(status, 200, "{first}");
    let left = first["outputs"]["tmpfile"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!left.is_empty(), "{first}");
    let (_, second) = engine
        .post(
            "/step",
            run(
                "two",
                &format!(
                    r#"grep -q LEFT-BEHIND '{left}' && [ "$(dirname '{left}')" = "$TMPDIR" ]"#
                ),
            ),
        )
        .await;
    assert_eq!(
        second["exit_code"],
        json!(0),
        "a later step of the stage shares its TMPDIR: {second}"
    );
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    assert!(
        !std::path::Path::new(&left).exists(),
        "{left} outlived its stage"
    );
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let (_, third) = engine
        .post("/step", run("three", &format!(r#"[ "$TMPDIR" != "$(dirname '{left}')" ] && [ -d "$TMPDIR" ] && [ -w "$TMPDIR" ]"#)))
        .await;
    assert_eq!(
        third["exit_code"],
        json!(0),
        "the next stage has a new, writable TMPDIR: {third}"
    );
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    engine.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_stage_finds_nothing_of_the_last_one_in_the_spool_directory() {
    let svc = TestService::start().await;
    let engine = TestEngine::start_with(|c| c.step_user = None).await;
    let spool = engine.dir.path().join("spool");
    let setup = json!({"log_config": svc.log_config(ACCOUNT), "le_log_key": "stages/engine"});
    assert_eq!(engine.post("/setup", setup.clone()).await.0, 200);
    let earlier = json!({"id": "one", "log_key": "stages/one",
        "script": "i=0; while [ $i -lt 200 ]; do echo STAGE-ONE-HISTORY-$i; i=$((i+1)); done"});
    assert_eq!(engine.post("/step", earlier).await.0, 200);
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let script = format!(
        "ls '{dir}' > /dev/null || exit 2; if grep -r -a -l STAGE-ONE-HISTORY '{dir}'; then exit 1; fi",
        dir = spool.display()
    );
    let (status, answer) = engine
        .post(
            "/step",
            json!({"id": "two", "log_key": "stages/two", "script": script}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["exit_code"],
        json!(0),
        "the step found the earlier stage's lines (1) or could not read the spool directory (2): {answer}"
    );
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    engine.shutdown().await;
    svc.shutdown().await;
}
