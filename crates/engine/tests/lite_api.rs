#![allow(clippy::unwrap_used)]
//! lite-engine's routes at their edges: host paths, trailing slashes, detached steps,
//! a step's own log service, requests that cannot run.

mod engine_support;

use engine_support::{TestEngine, archive};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;

const ACCOUNT: &str = "account-123";

fn run(id: &str, script: &str) -> serde_json::Value {
    json!({"id": id, "run": {"commands": [script], "entrypoint": ["sh", "-c"]}})
}

#[tokio::test]
async fn host_paths_are_refused_unless_the_engine_allows_them() {
    let engine = TestEngine::start().await;
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f.txt").display().to_string();
    let (status, answer) = engine
        .post("/setup", json!({"files": [{"path": file, "data": "x"}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error_msg"]
            .as_str()
            .unwrap()
            .contains("--allow-host-paths"),
        "{answer}"
    );
    let vol = host.path().join("vol").display().to_string();
    let (status, answer) = engine
        .post("/setup", json!({"volumes": [{"host": {"path": vol}}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(!host.path().join("f.txt").exists() && !host.path().join("vol").exists());

    // A step's absolute files fail the step, with the reason in its result.
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let mut step = run("s", "true");
    step["files"] = json!([{"path": file, "data": "x"}]);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (_, polled) = engine.post("/poll_step", json!({"id": "s"})).await;
    assert_eq!(polled["exit_code"], 255, "{polled}");
    assert!(
        polled["error"]
            .as_str()
            .unwrap()
            .contains("--allow-host-paths")
    );
    assert!(!host.path().join("f.txt").exists());
    engine.shutdown().await;
}

#[tokio::test]
async fn every_route_also_answers_with_a_trailing_slash() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.get_json("/healthz/").await["ok"], true);
    assert_eq!(engine.post("/setup/", json!({})).await, (200, json!({})));
    assert_eq!(
        engine.post("/start_step/", run("a", "echo hi")).await,
        (200, json!({}))
    );
    let (status, polled) = engine.post("/poll_step/", json!({"id": "a"})).await;
    assert_eq!((status, &polled["exit_code"]), (200, &json!(0)), "{polled}");
    let resp = reqwest::Client::new()
        .post(engine.url("/stream_output/"))
        .body("{\"id\":\"a\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().ends_with("\nhi\n"));
    assert_eq!(engine.post("/suspend/", json!({})).await, (200, json!({})));
    let (status, destroyed) = engine.post("/destroy/", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    assert!(destroyed["os_stats"].is_object());
    engine.shutdown().await;
}

#[tokio::test]
async fn requests_that_cannot_be_served_get_clear_errors() {
    let engine = TestEngine::start().await;
    let (status, answer) = engine.post("/start_step", run("a", "true")).await;
    assert_eq!(status, 409, "no stage yet: {answer}");
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let (status, answer) = engine.post("/start_step", json!({"run": {}})).await;
    assert_eq!(status, 400, "no id: {answer}");
    let (status, answer) = engine
        .post("/start_step", json!({"id": "a", "run": "not an object"}))
        .await;
    assert_eq!(status, 400, "{answer}");

    // Steps the engine cannot run start, and fail with the reason.
    let cases = [
        (
            json!({"id": "e", "run": {"commands": ["true"]}}),
            "entrypoint",
        ),
        (
            json!({"id": "t", "kind": "RunTest", "run": {"commands": ["true"], "entrypoint": ["sh", "-c"]}}),
            "Test Intelligence",
        ),
        (
            {
                let mut s = run("o", "X=1");
                s["output_vars"] = json!(["X; rm -rf /"]);
                s
            },
            "not a shell variable name",
        ),
        (
            {
                let mut s = run("w", "true");
                s["working_dir"] = json!("/nonexistent/dir");
                s
            },
            "not a directory",
        ),
    ];
    for (step, words) in cases {
        let id = step["id"].as_str().unwrap().to_owned();
        assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
        let (_, polled) = engine.post("/poll_step", json!({"id": id})).await;
        assert_eq!(polled["exit_code"], 255, "{id}: {polled}");
        assert!(
            polled["error"].as_str().unwrap().contains(words),
            "{id}: {polled}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_detached_step_is_polled_at_once_and_stopped_by_destroy() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let mut step = run("svc", "echo up; exec sleep 60");
    step["detach"] = json!(true);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (status, polled) = engine.post("/poll_step", json!({"id": "svc"})).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["exited"], false, "{polled}");
    let started = std::time::Instant::now();
    let (status, _) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_its_own_log_config_streams_there() {
    let stage_svc = TestService::start().await;
    let step_svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let setup = json!({"log_config": stage_svc.log_config(ACCOUNT)});
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let mut step = run("own", "echo elsewhere");
    step["log_key"] = json!("stage/own");
    step["log_config"] = step_svc.log_config(ACCOUNT);
    assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
    let (_, polled) = engine.post("/poll_step", json!({"id": "own"})).await;
    assert_eq!(polled["exit_code"], 0, "{polled}");
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    let read = |svc: &TestService| svc.token(ACCOUNT, Scope::Read);
    let lines = archive(&step_svc.url(), &read(&step_svc), ACCOUNT, "stage/own")
        .await
        .expect("archived in the step's log service");
    assert_eq!(lines.last().unwrap().out.trim_end(), "elsewhere");
    assert!(
        archive(&stage_svc.url(), &read(&stage_svc), ACCOUNT, "stage/own")
            .await
            .is_none()
    );
    stage_svc.shutdown().await;
    step_svc.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test]
async fn stream_output_of_a_step_that_never_starts_is_400() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let (status, answer) = engine.post("/stream_output", json!({"id": "nope"})).await;
    assert_eq!(status, 400, "{answer}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_step_a_signal_killed_exits_with_minus_one_as_in_lite_engine() {
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    for (id, script) in [("kill9", "kill -9 $$"), ("term", "kill -TERM $$")] {
        assert_eq!(
            engine.post("/start_step", run(id, script)).await,
            (200, json!({}))
        );
        let (status, polled) = engine.post("/poll_step", json!({"id": id})).await;
        assert_eq!(status, 200, "{polled}");
        assert_eq!(
            (&polled["exited"], &polled["exit_code"], &polled["error"]),
            (
                &json!(true),
                &json!(-1),
                &json!("1 error occurred:\n\t* exit status -1\n\n")
            ),
            "{id}: {polled}"
        );
        assert!(polled.get("oom_killed").is_none(), "{id}: {polled}");
    }
    // runlog's own /step keeps the shell's 128 + N.
    let (_, answer) = engine
        .post("/step", json!({"id": "own", "script": "kill -TERM $$"}))
        .await;
    assert_eq!(answer["exit_code"], 128 + 15, "{answer}");
    engine.shutdown().await;
}

/// A step's `mem_limit` is enforced with a memory cgroup; going over it is
/// `oom_killed`, whichever process of the step the kernel killed.
#[tokio::test]
async fn a_step_over_its_mem_limit_is_oom_killed_and_the_engine_keeps_working() {
    let controller = match runlog_engine::memory_cgroup::usable() {
        Ok(c) => c,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let engine = TestEngine::start().await;
    assert_eq!(engine.post("/setup", json!({})).await.0, 200);
    let limited = |id: &str, script: &str| {
        let mut step = run(id, script);
        step["mem_limit"] = json!(64 << 20);
        step
    };
    // `tail` keeps a line in memory, and /dev/zero has no newline.
    let cases = [
        // The killed process is the step's own: lite-engine's -1 of a signal.
        (limited("oom-exec", "exec tail /dev/zero"), -1),
        // The shell outlives its killed child and ends well; still oom_killed.
        (
            limited("oom-child", "tail /dev/zero; echo \"tail ended with $?\""),
            0,
        ),
    ];
    for (step, exit_code) in cases {
        let id = step["id"].as_str().unwrap().to_owned();
        assert_eq!(engine.post("/start_step", step).await, (200, json!({})));
        let (status, polled) = engine.post("/poll_step", json!({"id": id})).await;
        assert_eq!(status, 200, "{polled}");
        assert_eq!(
            (
                &polled["oom_killed"],
                &polled["exit_code"],
                &polled["error"]
            ),
            (
                &json!(true),
                &json!(exit_code),
                &json!("1 error occurred:\n\t* oom killed\n\n")
            ),
            "{controller}, {id}: {polled}"
        );
    }
    // runlog's own /step takes the limit too, and answers a shell's 128 + 9.
    let (_, answer) = engine
        .post(
            "/step",
            json!({"id": "own", "script": "exec tail /dev/zero", "mem_limit": 64 << 20}),
        )
        .await;
    assert_eq!(
        (&answer["exit_code"], &answer["oom_killed"]),
        (&json!(137), &json!(true)),
        "{answer}"
    );
    // 8 MiB under a 64 MiB limit.
    let under = limited("under", "dd if=/dev/zero of=/dev/null bs=8M count=4");
    assert_eq!(engine.post("/start_step", under).await, (200, json!({})));
    let (_, polled) = engine.post("/poll_step", json!({"id": "under"})).await;
    assert_eq!(polled["exit_code"], 0, "{polled}");
    assert!(polled.get("oom_killed").is_none(), "{polled}");
    let (status, destroyed) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroyed}");
    assert!(destroyed.get("errors").is_none(), "{destroyed}");
    // Each step's cgroup is gone with its step.
    if let Some(v1) = runlog_engine::memory_cgroup::v1_parent() {
        let left: Vec<_> = std::fs::read_dir(v1)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [
                    "-step-oom-exec",
                    "-step-oom-child",
                    "-step-own",
                    "-step-under",
                ]
                .iter()
                .any(|s| n.ends_with(s))
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    engine.shutdown().await;
}

/// An engine that died without `/destroy` left its cgroups; the next engine removes
/// the empty ones before it serves.
#[tokio::test]
async fn empty_cgroups_of_an_engine_no_longer_running_are_removed_at_start() {
    // Where steps' memory cgroups are made, this engine may make cgroups.
    if let Err(why) = runlog_engine::memory_cgroup::usable() {
        println!("skipped: {why}");
        return;
    }
    // pid 0 is no process: the owner in these names is gone.
    let leftovers: Vec<_> = [
        runlog_engine::cgroup::own_cgroup_dir().map(|d| d.join("runlog-e0.1-stage-left")),
        runlog_engine::memory_cgroup::v1_parent().map(|d| d.join("runlog-e0.1-stage-left-step-s")),
    ]
    .into_iter()
    .flatten()
    .filter(|dir| std::fs::create_dir(dir).is_ok() || dir.is_dir())
    .collect();
    assert!(!leftovers.is_empty(), "no leftover could be made");
    let engine = TestEngine::start().await;
    // Answered once serving began, which is after the sweep.
    assert_eq!(engine.get_json("/healthz").await["ok"], true);
    for dir in &leftovers {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    engine.shutdown().await;
}
