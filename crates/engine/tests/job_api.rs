//! RunPod's job API on a real engine over loopback HTTP: `run`, `runsync`, `status`,
//! `cancel`, `stream`, `health`, `purge-queue`, under `/v2/{endpoint_id}/` and at the
//! root, with RunPod's status values, timing fields and error shapes.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

mod engine_support;

use function_engine::TestEngine;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BASE: &str = "/v2/ep-123";

fn call(name: &str, code: &str, args: Value) -> Value {
    json!({"input": {
        "function_name": name,
        "function_code": code,
        "args": args,
        "serialization_format": "json",
    }})
}

/// Polls `status` until the job has ended; its final record.
async fn wait_final(engine: &TestEngine, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, rec) = engine.get(&format!("{base}/status/{id}")).await;
        assert_eq!(code, 200, "{rec}");
        let status = rec["status"].as_str().unwrap().to_owned();
        if !matches!(status.as_str(), "IN_QUEUE" | "IN_PROGRESS") {
            return rec;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `status` until the job is running.
async fn wait_running(engine: &TestEngine, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, rec) = engine.get(&format!("{BASE}/status/{id}?wait=0")).await;
        if rec["status"] == "IN_PROGRESS" {
            return;
        }
        assert_eq!(rec["status"], "IN_QUEUE", "{rec}");
        assert!(Instant::now() < deadline, "job {id} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(engine: &TestEngine, base: &str, body: &Value) -> String {
    let (code, ans) = engine.post(&format!("{base}/run"), body.to_string()).await;
    assert_eq!(code, 200, "{ans}");
    assert_eq!(ans["status"], "IN_QUEUE", "{ans}");
    ans["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn run_then_status_gives_runpods_job_record_at_both_prefixes() {
    let engine = TestEngine::start(None).await;
    for base in [BASE, ""] {
        let id = submit(
            &engine,
            base,
            &call(
                "add",
                "def add(a, b):\n    print('adding')\n    return a + b",
                json!([2, 3]),
            ),
        )
        .await;
        assert_eq!(id.len(), 36, "{id}");
        let rec = wait_final(&engine, base, &id).await;
        assert_eq!(rec["id"], id.as_str());
        assert_eq!(rec["status"], "COMPLETED", "{rec}");
        for field in ["delayTime", "executionTime"] {
            assert!(rec[field].is_u64(), "{field} in {rec}");
        }
        assert!(
            rec["workerId"].as_str().unwrap().starts_with("runlog-"),
            "{rec}"
        );
        let out = &rec["output"];
        assert_eq!(out["success"], true, "{rec}");
        assert_eq!(out["json_result"], 5, "{rec}");
        assert_eq!(out["result"], Value::Null, "{rec}");
        assert!(
            out["stdout"].as_str().unwrap().ends_with("\nadding\n"),
            "{rec}"
        );
    }
}

#[tokio::test]
async fn runsync_answers_the_whole_record_or_in_progress_after_its_wait() {
    let engine = TestEngine::start(None).await;
    let (code, rec) = engine
        .post(
            "/runsync",
            call("f", "async def f(x):\n    return x + 1", json!([41])).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    assert_eq!(rec["output"]["json_result"], 42, "{rec}");
    assert!(
        rec["executionTime"].is_u64() && rec["workerId"].is_string(),
        "{rec}"
    );

    let slow = call(
        "slow",
        "import time\ndef slow():\n    time.sleep(1.5)\n    return 'late'",
        json!([]),
    );
    let (code, rec) = engine
        .post(&format!("{BASE}/runsync?wait=200"), slow.to_string())
        .await;
    assert_eq!(code, 200, "{rec}");
    assert!(
        matches!(rec["status"].as_str(), Some("IN_PROGRESS" | "IN_QUEUE")),
        "{rec}"
    );
    assert_eq!(rec.get("output"), None, "{rec}");
    let id = rec["id"].as_str().unwrap();
    let done = wait_final(&engine, BASE, id).await;
    assert_eq!(done["output"]["json_result"], "late", "{done}");
}

#[tokio::test]
async fn status_holds_its_answer_until_the_job_ends_unless_asked_not_to() {
    // The configured hold is long, so "answered at the end" cannot be luck.
    let mut gate = std::path::PathBuf::new();
    let engine = TestEngine::start_with(None, |cfg, dir| {
        cfg.jobs.status_wait = Duration::from_secs(120);
        gate = dir.join("gate");
    })
    .await;
    let code = format!(
        "import os, time\ndef f():\n    while not os.path.exists({gate:?}):\n        time.sleep(0.01)\n    return 'done'"
    );
    let id = submit(&engine, BASE, &call("f", &code, json!([]))).await;
    // `?wait=0` answers at once: the job cannot end before the gate exists.
    let (code, rec) = engine.get(&format!("{BASE}/status/{id}?wait=0")).await;
    assert_eq!(code, 200, "{rec}");
    assert!(
        matches!(rec["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")),
        "{rec}"
    );
    // A plain `status` is held: it answers the final record once the gate opens.
    // The pause only gives an engine that does not hold the time to answer
    // IN_PROGRESS (and fail); an engine that holds answers the same whenever the
    // request arrives.
    let held = {
        let path = format!("{BASE}/status/{id}");
        let engine = &engine;
        async move { engine.get(&path).await }
    };
    let open_gate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&gate, b"").unwrap();
    };
    let ((code, rec), ()) = tokio::join!(held, open_gate);
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    assert_eq!(rec["output"]["json_result"], "done", "{rec}");
}

#[tokio::test]
async fn a_raising_function_is_completed_with_success_false_as_the_worker_answers() {
    let engine = TestEngine::start(None).await;
    let id = submit(
        &engine,
        BASE,
        &call(
            "f",
            "def f():\n    raise ValueError('bad input')",
            json!([]),
        ),
    )
    .await;
    let rec = wait_final(&engine, BASE, &id).await;
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    assert_eq!(rec["output"]["success"], false, "{rec}");
    let error = rec["output"]["error"].as_str().unwrap();
    assert!(error.starts_with("ValueError: bad input"), "{error}");
}

#[tokio::test]
async fn a_job_that_cannot_run_is_failed_with_its_cause() {
    let engine = TestEngine::start(None).await;
    // Valid at submission; the log stream it asks for has no log_config.
    let body = json!({"input": {
        "function_name": "f", "function_code": "def f(): pass", "log_key": "a/b",
    }});
    let id = submit(&engine, BASE, &body).await;
    let rec = wait_final(&engine, BASE, &id).await;
    assert_eq!(rec["status"], "FAILED", "{rec}");
    assert!(
        rec["error"].as_str().unwrap().contains("log_config"),
        "{rec}"
    );
    assert_eq!(rec.get("output"), None, "{rec}");
}

#[tokio::test]
async fn stream_hands_out_each_new_line_once_while_the_job_runs() {
    let engine = TestEngine::start(None).await;
    let code = "import time\ndef f():\n    for i in range(5):\n        print(f'tick {i}', flush=True)\n        time.sleep(0.3)\n    raise ValueError('after the ticks')";
    let id = submit(&engine, BASE, &call("f", code, json!([]))).await;
    let mut seen = Vec::new();
    let mut polls_with_lines = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, ans) = engine.get(&format!("{BASE}/stream/{id}")).await;
        assert_eq!(code, 200, "{ans}");
        assert_eq!(ans["id"], id.as_str());
        let chunk: Vec<String> = ans["stream"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["output"].as_str().unwrap().to_owned())
            .collect();
        if chunk.iter().any(|l| l.starts_with("tick ")) {
            polls_with_lines += 1;
        }
        seen.extend(chunk);
        let status = ans["status"].as_str().unwrap();
        if status == "COMPLETED" && ans["stream"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ticks: Vec<&String> = seen.iter().filter(|l| l.starts_with("tick ")).collect();
    assert_eq!(
        ticks,
        vec!["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"]
    );
    assert!(
        polls_with_lines >= 2,
        "the lines came live, not at the end: {seen:?}"
    );
    // The engine's own line about the call comes after the call's output.
    let failed = seen
        .iter()
        .position(|l| l.contains("| ERROR | function f failed"));
    assert_eq!(
        failed,
        Some(seen.len() - 1),
        "system lines are streamed too: {seen:?}"
    );
}

#[tokio::test]
async fn cancel_stops_a_running_call_and_its_process() {
    let engine = TestEngine::start(None).await;
    let code = "import os, time\ndef f():\n    print(f'pid {os.getpid()}', flush=True)\n    time.sleep(60)\n    return 'not cancelled'";
    let id = submit(&engine, BASE, &call("f", code, json!([]))).await;
    let pid = loop {
        let (_, ans) = engine.get(&format!("{BASE}/stream/{id}")).await;
        let found = ans["stream"].as_array().unwrap().iter().find_map(|c| {
            c["output"]
                .as_str()
                .and_then(|l| l.strip_prefix("pid "))
                .map(|p| p.parse::<i32>().unwrap())
        });
        if let Some(pid) = found {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, rec) = engine.post(&format!("{BASE}/cancel/{id}"), "").await;
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec["status"], "CANCELLED", "{rec}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "worker {pid} still running after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, rec) = engine.get(&format!("{BASE}/status/{id}")).await;
    assert_eq!(rec["status"], "CANCELLED", "{rec}");
    assert!(rec["executionTime"].is_u64(), "{rec}");
    // Cancelling an ended job changes nothing.
    let (code, again) = engine.post(&format!("/cancel/{id}"), "").await;
    assert_eq!((code, &again["status"]), (200, &json!("CANCELLED")));
}

#[tokio::test]
async fn queue_is_bounded_purgeable_and_counted_by_health() {
    let engine = TestEngine::start_with(None, |cfg, _| {
        cfg.jobs.max_running = 1;
        cfg.jobs.queue_capacity = 3;
    })
    .await;
    let sleeper = call("f", "import time\ndef f():\n    time.sleep(30)", json!([]));
    let running = submit(&engine, BASE, &sleeper).await;
    wait_running(&engine, &running).await;
    let queued = [
        submit(&engine, BASE, &sleeper).await,
        submit(&engine, BASE, &sleeper).await,
    ];
    let (code, full) = engine
        .post(&format!("{BASE}/run"), sleeper.to_string())
        .await;
    assert_eq!(code, 429, "{full}");
    assert!(
        full["error"].as_str().unwrap().contains("queue is full"),
        "{full}"
    );
    assert_eq!(full["error"], full["error_msg"]);

    let (code, health) = engine.get(&format!("{BASE}/health")).await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["jobs"]["inQueue"], 2, "{health}");
    assert_eq!(health["jobs"]["inProgress"], 1, "{health}");
    assert_eq!(health["workers"]["running"], 1, "{health}");
    for field in ["idle", "initializing", "ready", "throttled", "unhealthy"] {
        assert!(health["workers"][field].is_u64(), "{field}: {health}");
    }

    let (code, purged) = engine.post(&format!("{BASE}/purge-queue"), "").await;
    assert_eq!(code, 200, "{purged}");
    assert_eq!(purged, json!({"removed": 2, "status": "completed"}));
    for id in &queued {
        let (_, rec) = engine.get(&format!("{BASE}/status/{id}")).await;
        assert_eq!(rec["status"], "CANCELLED", "{rec}");
    }
    let (_, rec) = engine.get(&format!("{BASE}/status/{running}?wait=0")).await;
    assert_eq!(
        rec["status"], "IN_PROGRESS",
        "running jobs are not purged: {rec}"
    );
    let (_, health) = engine.get("/health").await;
    assert_eq!(health["jobs"]["inQueue"], 0, "{health}");
    assert_eq!(health["jobs"]["failed"], 2, "{health}");
    // Room again: the queue counts queued and running jobs only.
    submit(&engine, BASE, &sleeper).await;
}

#[tokio::test]
async fn ended_jobs_are_forgotten_after_the_configured_time() {
    let engine = TestEngine::start_with(None, |cfg, _| {
        cfg.jobs.keep_finished = Duration::from_millis(300);
    })
    .await;
    let (_, rec) = engine
        .post(
            "/runsync",
            call("f", "def f(): return 1", json!([])).to_string(),
        )
        .await;
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    let id = rec["id"].as_str().unwrap();
    let (code, _) = engine.get(&format!("/status/{id}")).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, gone) = engine.get(&format!("/status/{id}")).await;
    assert_eq!(code, 404, "{gone}");
    assert!(gone["error"].as_str().unwrap().contains("no job"), "{gone}");
}

#[tokio::test]
async fn bad_job_requests_get_a_clear_json_error() {
    let engine = TestEngine::start(None).await;
    let ok = call("f", "def f(): pass", json!([])).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v2/ep-1/run", "{not json".into(), 400, "malformed JSON"),
        ("/v2/ep-1/run", "[1,2]".into(), 400, "malformed JSON"),
        ("/v2/ep-1/run", r#"{"function_name":"f"}"#.into(), 400, "\"input\""),
        ("/v2/ep-1/run", r#"{"input":{"args":{}}}"#.into(), 400, "input: "),
        ("/v2/ep-1/run", r#"{"input":{"function_code":"def f(): pass"}}"#.into(), 400, "function_name"),
        (
            "/v2/ep-1/run",
            r#"{"input":{"function_name":"f","function_code":"def f(): pass","modules":{"../x.py":""}}}"#.into(),
            400,
            "modules",
        ),
        ("/runsync?wait=soon", ok.clone(), 400, "wait must be"),
        ("/v2/ep-1/status/x?wait=later", String::new(), 400, "wait must be"),
        ("/v2/bad%20id/run", ok.clone(), 400, "endpoint id"),
        ("/v2/ep-1/cancel/0000", String::new(), 404, "no job"),
        ("/v2/ep-1/run", " ".repeat(33 << 20), 413, "too large"),
    ];
    for (path, body, want, needle) in cases {
        let (status, value) = engine.post(path, body.clone()).await;
        let shown: String = body.chars().take(100).collect();
        assert_eq!(status, want, "{path} {shown:?}: {value}");
        let msg = value["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {needle:?} not in {msg:?}");
        assert_eq!(value["error_msg"], value["error"], "{value}");
    }
    let long_id = "x".repeat(5000);
    let (status, value) = engine.get(&format!("/status/{long_id}")).await;
    assert_eq!(status, 404, "{value}");
    assert!(value["error"].as_str().unwrap().len() < 200, "{value}");
    let (status, value) = engine.get("/v2/ep-1/run").await;
    assert_eq!(status, 405, "{value}");
}

#[tokio::test]
async fn a_job_streams_its_log_live_under_its_own_key_when_the_stage_names_a_service() {
    let svc = runlog_testkit::service::TestService::start().await;
    let token = svc.token("acct-jobs", runlog_protocol::Scope::Write);
    let engine = TestEngine::start(None).await;
    let log_config = runlog_protocol::engine::LogConfig {
        url: svc.url(),
        account_id: "acct-jobs".into(),
        token: token.clone(),
        indirect_upload: true,
        ..runlog_protocol::engine::LogConfig::default()
    };
    let (code, setup) = engine
        .post("/setup", json!({ "log_config": log_config }).to_string())
        .await;
    assert_eq!(code, 200, "{setup}");
    let id = submit(
        &engine,
        BASE,
        &call(
            "f",
            "def f():\n    print('to the job stream')\n    return 1",
            json!([]),
        ),
    )
    .await;
    let rec = wait_final(&engine, BASE, &id).await;
    assert_eq!(rec["status"], "COMPLETED", "{rec}");
    let key = format!("jobs/{id}");
    assert_eq!(rec["logKey"], key.as_str(), "{rec}");
    // The call's writer is closed (archive uploaded) before the job ends.
    let archive = engine_support::archive(&svc.url(), &token, "acct-jobs", &key)
        .await
        .expect("the job's archive");
    assert!(
        archive.iter().any(|l| l.out.contains("to the job stream")),
        "{archive:?}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn an_execution_timeout_ends_the_job_timed_out_and_stops_its_call() {
    let engine = TestEngine::start(None).await;
    let code = "import os, time\ndef f():\n    print(f'pid {os.getpid()}', flush=True)\n    time.sleep(60)";
    let mut body = call("f", code, json!([]));
    body["policy"] = json!({"executionTimeout": 1500});
    let id = submit(&engine, BASE, &body).await;
    let rec = wait_final(&engine, BASE, &id).await;
    assert_eq!(rec["status"], "TIMED_OUT", "{rec}");
    assert!(rec["error"].as_str().unwrap().contains("1500 ms"), "{rec}");
    assert!(rec["executionTime"].as_u64().unwrap() >= 1500, "{rec}");
    let (_, ans) = engine.get(&format!("{BASE}/stream/{id}")).await;
    let lines: Vec<&str> = ans["stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["output"].as_str().unwrap())
        .collect();
    let pid: i32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("pid "))
        .unwrap_or_else(|| panic!("{lines:?}"))
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "worker {pid} still running after the timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, bad) = engine
        .post(
            "/run",
            json!({"input": {"function_name": "f", "function_code": "def f(): pass"},
                   "policy": {"executionTimeout": "soon"}})
            .to_string(),
        )
        .await;
    assert_eq!(code, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("executionTimeout"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_cancelled_jobs_log_stream_is_still_closed_and_archived() {
    let svc = runlog_testkit::service::TestService::start().await;
    let token = svc.token("acct-cancel", runlog_protocol::Scope::Write);
    let engine = TestEngine::start(None).await;
    let log_config = runlog_protocol::engine::LogConfig {
        url: svc.url(),
        account_id: "acct-cancel".into(),
        token: token.clone(),
        indirect_upload: true,
        ..runlog_protocol::engine::LogConfig::default()
    };
    let (code, setup) = engine
        .post("/setup", json!({ "log_config": log_config }).to_string())
        .await;
    assert_eq!(code, 200, "{setup}");
    let code =
        "import time\ndef f():\n    print('before the cancel', flush=True)\n    time.sleep(60)";
    let id = submit(&engine, BASE, &call("f", code, json!([]))).await;
    loop {
        let (_, ans) = engine.get(&format!("{BASE}/stream/{id}")).await;
        if ans.to_string().contains("before the cancel") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, rec) = engine.post(&format!("{BASE}/cancel/{id}"), "").await;
    assert_eq!(rec["status"], "CANCELLED", "{rec}");
    let key = format!("jobs/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body: String = loop {
        if let Some(lines) = engine_support::archive(&svc.url(), &token, "acct-cancel", &key).await
        {
            break lines.into_iter().map(|l| l.out).collect();
        }
        assert!(Instant::now() < deadline, "no archive of {key}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("before the cancel"), "{body}");
    assert!(
        body.contains("the call was stopped before it returned"),
        "{body}"
    );
    svc.shutdown().await;
}
