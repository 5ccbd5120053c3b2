//! `POST /execute` and `POST /runsync` through the real engine server on loopback.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

mod engine_support;

use function_engine::{TestEngine, split_stdout};
use runlog_protocol::Scope;
use runlog_protocol::engine::LogConfig;
use serde_json::json;

#[tokio::test]
async fn stdout_is_system_logs_then_blank_line_then_function_output() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "function_name": "shout",
            "function_code": "import logging\ndef shout(word, times=1):\n    print('one', word)\n    logging.info('two %s', word)\n    print('three')\n    return word.upper() * times",
            "args": ["hey"],
            "kwargs": {"times": 2},
            "serialization": "json",
        }))
        .await;
    assert!(resp.success, "{resp:?}");
    assert_eq!(resp.json_result, Some(json!("HEYHEY")));
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    assert_eq!(output, vec!["one hey", "root: two hey", "three"]);
    // A warm call has nothing to say of itself: no per-call boilerplate at info.
    assert!(
        system.iter().all(|l| !l.contains("execute function")
            && !l.contains("calling function")
            && !l.contains("returned")),
        "{system:?}"
    );
    assert!(system.iter().all(|l| l.contains(" | ")), "{system:?}");
}

#[tokio::test]
async fn cloudpickle_call_over_http_round_trips() {
    let engine = TestEngine::start(None).await;
    let rt = runlog_engine::python::PythonRuntime::new(support::config(None));
    rt.warm_up().await.unwrap();
    let resp = engine
        .execute(json!({
            "function_name": "area",
            "function_code": "def area(w, h=1):\n    return {'area': w * h}",
            "args": [support::pickle("3")],
            "kwargs": {"h": support::pickle("4")},
        }))
        .await;
    assert!(resp.success, "{resp:?}");
    let b64 = resp.result.unwrap();
    assert_eq!(
        support::unpickle_repr(b64.as_str().unwrap()),
        "{'area': 12}"
    );
}

#[tokio::test]
async fn runsync_envelope_answers_the_job_record_with_output() {
    let engine = TestEngine::start(None).await;
    let body = json!({"input": {
        "function_name": "f",
        "function_code": "async def f(x):\n    return x + 1",
        "args": [41],
        "serialization": "json",
    }});
    let (status, value) = engine.post("/runsync", body.to_string()).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["status"], json!("COMPLETED"), "{value}");
    assert_eq!(value["output"]["success"], json!(true), "{value}");
    assert_eq!(value["output"]["json_result"], json!(42));
}

#[tokio::test]
async fn bad_requests_get_a_clear_json_error() {
    let engine = TestEngine::start(None).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/execute", br#"{"function_code":"def f(): pass"}"#.to_vec(), 400, "function_name"),
        (
            "/execute",
            br#"{"execution_type":"class","class_code":"class C: pass"}"#.to_vec(),
            400, "class_name",
        ),
        ("/execute", b"{not json".to_vec(), 400, "malformed JSON"),
        ("/execute", b"\xff\xfe\x00garbage".to_vec(), 400, "malformed JSON"),
        ("/runsync", br#"{"function_name":"f"}"#.to_vec(), 400, "input"),
        ("/execute", vec![b' '; 33 << 20], 413, "too large"),
        (
            "/execute",
            br#"{"function_name":"f","function_code":"def f(): pass","log_key":"../escape","log_config":{"url":"http://127.0.0.1:1"}}"#
                .to_vec(),
            400, "log_key",
        ),
        (
            "/execute",
            br#"{"function_name":"f","function_code":"def f(): pass","timeout":-1}"#.to_vec(),
            400, "timeout",
        ),
    ];
    for (path, body, want, needle) in cases {
        let (status, value) = engine.post(path, body.clone()).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        assert_eq!(status, want, "{path} {shown:?}: {value}");
        let msg = value["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
}

#[tokio::test]
async fn function_missing_from_code_is_a_failure_not_a_result() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "function_name": "wanted",
            "function_code": "def other():\n    return 'wrong'",
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success);
    assert_eq!((resp.result, resp.json_result), (None, None));
    let error = resp.error.unwrap();
    // The cause once: no traceback that only repeats it.
    assert_eq!(
        error,
        "LookupError: function 'wanted' not found in function_code"
    );
}

#[tokio::test]
async fn a_syntax_error_keeps_its_line_and_caret() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f(:\n    pass",
            "serialization": "json",
        }))
        .await;
    let error = resp.error.unwrap();
    assert!(error.starts_with("SyntaxError: "), "{error}");
    assert!(error.contains("def f(:") && error.contains('^'), "{error}");
}

#[tokio::test]
async fn raising_function_reports_traceback_and_prior_output() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f():\n    print('got this far')\n    raise KeyError('missing-key')",
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success);
    let error = resp.error.unwrap();
    assert!(error.starts_with("KeyError: 'missing-key'"), "{error}");
    assert!(error.contains("Traceback"), "{error}");
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    assert_eq!(output, vec!["got this far"]);
    assert!(
        system
            .iter()
            .any(|l| l.contains("| ERROR | function f failed: KeyError")),
        "{system:?}"
    );
}

#[tokio::test]
async fn class_state_persists_across_requests() {
    let engine = TestEngine::start(None).await;
    let code = "class Bank:\n    def __init__(self, balance):\n        self.balance = balance\n    def deposit(self, amount):\n        self.balance += amount\n        print('balance', self.balance)\n        return self.balance";
    let first = engine
        .execute(json!({
            "execution_type": "class",
            "class_name": "Bank",
            "class_code": code,
            "constructor_args": [10],
            "method_name": "deposit",
            "args": [5],
            "serialization": "json",
        }))
        .await;
    assert_eq!(first.json_result, Some(json!(15)), "{first:?}");
    let id = first.instance_id.unwrap();
    let second = engine
        .execute(json!({
            "execution_type": "class",
            "class_name": "Bank",
            "instance_id": id,
            "create_new_instance": false,
            "method_name": "deposit",
            "args": [7],
            "serialization": "json",
        }))
        .await;
    assert_eq!(second.json_result, Some(json!(22)), "{second:?}");
    assert_eq!(second.instance_id.as_deref(), Some(id.as_str()));
    let info = second.instance_info.unwrap();
    assert_eq!((info.class_name.as_str(), info.method_calls), ("Bank", 2));
    let (_, output) = split_stdout(second.stdout.as_deref().unwrap());
    assert_eq!(
        output,
        vec!["balance 22"],
        "the first call's output must not reappear"
    );
}

#[tokio::test]
async fn installer_output_is_in_stdout_and_the_package_is_usable() {
    let (wheels, version) = support::build_fixture_wheel();
    let engine = TestEngine::start(Some(wheels.path())).await;
    let call = json!({
        "function_name": "f",
        "function_code": "def f():\n    import runlog_fixture_pkg\n    return runlog_fixture_pkg.VERSION",
        "dependencies": [format!("runlog-fixture-pkg=={version}")],
        "serialization": "json",
    });
    let resp = engine.execute(call.clone()).await;
    assert_eq!(resp.json_result, Some(json!(version)), "{resp:?}");
    let stdout = resp.stdout.unwrap();
    let (system, _) = split_stdout(&stdout);
    assert!(
        system
            .iter()
            .any(|l| l.contains("pip | ") && l.contains("runlog-fixture-pkg")),
        "installer output missing: {system:?}"
    );
    // The same dependencies again: no installer runs at all.
    let again = engine.execute(call).await;
    assert_eq!(again.json_result, Some(json!(version)), "{again:?}");
    let stdout = again.stdout.unwrap();
    let (system, _) = split_stdout(&stdout);
    assert!(!system.iter().any(|l| l.contains("pip | ")), "{system:?}");
    assert!(
        system
            .iter()
            .any(|l| l.contains("dependencies already installed")),
        "{system:?}"
    );
}

#[tokio::test]
async fn overflowing_capture_says_how_many_lines_were_dropped() {
    let engine = TestEngine::start_with(None, |c, _| {
        c.capture_capacity = 1;
        c.output_bytes = 21;
    })
    .await;
    let resp = engine
        .execute(json!({
            "execution_type": "class",
            "class_name": "C",
            "class_code": "class C:\n    def m(self):\n        for i in range(10):\n            print('line', i)\n        raise ValueError('at the end')",
            "method_name": "m",
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success, "{resp:?}");
    // A first call that failed leaves no instance behind to reuse.
    assert_eq!(resp.instance_id, None, "{resp:?}");
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    // "creating instance", "C.m failed": two system lines into a ring of one.
    assert_eq!(system.len(), 2, "{system:?}");
    assert_eq!(system[0], "1 earlier lines dropped");
    assert!(system[1].contains("C.m failed"), "{system:?}");
    assert_eq!(
        output,
        vec![
            "[runlog: 7 earlier output lines (49 bytes) dropped past the 21-byte cap; \
             send log_key to keep every line in a live stream]",
            "line 7",
            "line 8",
            "line 9"
        ]
    );
}

#[tokio::test]
async fn failed_install_answers_cause_and_installer_output() {
    let (wheels, _) = support::build_fixture_wheel();
    let engine = TestEngine::start(Some(wheels.path())).await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f():\n    print('ran')",
            "dependencies": ["runlog-absent-package==1.0"],
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success);
    let error = resp.error.unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("runlog-absent-package"), "{error}");
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    assert!(output.is_empty(), "the function must not run: {output:?}");
    assert!(
        system.iter().any(|l| l.contains("pip | ERROR")),
        "installer output missing: {system:?}"
    );
}

#[tokio::test]
async fn apt_install_is_refused_when_the_engine_does_not_allow_it() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "def f():\n    return 1",
            "system_dependencies": ["figlet"],
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success);
    let error = resp.error.unwrap();
    assert!(
        error.contains("does not allow apt") && error.contains("figlet"),
        "{error}"
    );
    assert!(resp.stdout.unwrap().contains("does not allow apt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_never_mix_their_lines() {
    let engine = std::sync::Arc::new(TestEngine::start(None).await);
    let mut tasks = Vec::new();
    for n in 0..50 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let marker = format!("MARK{n:03}X");
            let name = format!("fn_{marker}");
            let code = format!(
                "import logging, sys\ndef {name}(m):\n    for i in range(3):\n        print(m, 'out', i)\n        print(m, 'err', i, file=sys.stderr)\n        logging.warning('%s log %d', m, i)\n    return m"
            );
            let resp = engine
                .execute(json!({
                    "function_name": name,
                    "function_code": code,
                    "args": [marker],
                    "serialization": "json",
                }))
                .await;
            (marker, resp)
        }));
    }
    for t in tasks {
        let (marker, resp) = t.await.unwrap();
        assert_eq!(resp.json_result, Some(json!(marker)), "{resp:?}");
        let stdout = resp.stdout.unwrap();
        let (system, output) = split_stdout(&stdout);
        assert_eq!(output.len(), 9, "{marker}: {output:?}");
        assert!(
            output.iter().all(|l| l.contains(&marker)),
            "{marker}: {output:?}"
        );
        // A call's system lines no longer name it (no per-call boilerplate at info);
        // that none names another call is the check below, over all of `stdout`.
        drop(system);
        let foreign = stdout
            .match_indices("MARK")
            .filter(|(at, _)| !stdout[*at..].starts_with(&marker))
            .count();
        assert_eq!(foreign, 0, "{marker} saw another call's lines: {stdout}");
    }
}

#[tokio::test]
async fn failed_call_leaks_nothing_into_the_next() {
    let engine = TestEngine::start(None).await;
    let bad = engine
        .execute(json!({
            "function_name": "bad",
            "function_code": "def bad():\n    print('LEAK-CANARY')\n    raise RuntimeError('LEAK-CANARY failure')",
            "serialization": "json",
        }))
        .await;
    assert!(!bad.success);
    assert!(bad.stdout.unwrap().contains("LEAK-CANARY"));
    let good = engine
        .execute(json!({
            "function_name": "good",
            "function_code": "def good():\n    print('clean')\n    return 1",
            "serialization": "json",
        }))
        .await;
    assert!(good.success);
    let stdout = good.stdout.unwrap();
    assert!(!stdout.contains("LEAK-CANARY"), "{stdout}");
    assert!(!stdout.contains("bad"), "{stdout}");
}

#[tokio::test]
async fn live_stream_of_a_call_matches_its_stdout() {
    let svc = runlog_testkit::service::TestService::start().await;
    let token = svc.token("acct-fn", Scope::Write);
    let mut spool_dir = std::path::PathBuf::new();
    let engine = TestEngine::start_with(None, |cfg, _| spool_dir = cfg.spool_dir.clone()).await;
    let log_config = LogConfig {
        url: svc.url(),
        account_id: "acct-fn".into(),
        token: token.clone(),
        indirect_upload: true,
        ..LogConfig::default()
    };
    let resp = engine
        .execute(json!({
            "function_name": "f",
            "function_code": "import logging\ndef f():\n    print('streamed one')\n    logging.warning('streamed two')\n    raise ValueError('after the output')",
            "serialization": "json",
            "log_key": "calls/f-1",
            "log_config": log_config,
        }))
        .await;
    assert!(!resp.success, "{resp:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the spool directory holds the calls' logs");
    }
    let archive = engine_support::archive(&svc.url(), &token, "acct-fn", "calls/f-1")
        .await
        .expect("the call's archive");
    let streamed: Vec<String> = archive
        .iter()
        .map(|line| line.out.trim_end_matches('\n').to_owned())
        .collect();
    let stdout = resp.stdout.unwrap();
    let (system, output) = split_stdout(&stdout);
    // The stream and the capture stamp a line independently, so times may differ by a
    // millisecond: compare what follows the timestamp.
    let untimed = |l: &str| {
        l.split_once(" | ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_else(|| l.to_owned())
    };
    // The stream has every line in arrival order; `stdout` groups the system lines
    // first. So: the same system lines in the same order, the same function output in
    // the same order, and nothing else.
    let is_system = |l: &str| l.starts_with("20") && l.contains(" | ");
    // The stream alone has the call's section markers, first and last.
    assert!(
        streamed.first().unwrap().starts_with("section_start:"),
        "{streamed:?}"
    );
    assert!(
        streamed.last().unwrap().ends_with("[outcome=failure]"),
        "{streamed:?}"
    );
    let streamed = &streamed[1..streamed.len() - 1];
    let streamed_system: Vec<String> = streamed
        .iter()
        .filter(|l| is_system(l))
        .map(|l| untimed(l))
        .collect();
    let streamed_output: Vec<&str> = streamed
        .iter()
        .filter(|l| !is_system(l))
        .map(String::as_str)
        .collect();
    let stdout_system: Vec<String> = system.iter().map(|l| untimed(l)).collect();
    assert_eq!(streamed_system, stdout_system);
    assert_eq!(streamed_output, output);
    assert_eq!(streamed.len(), system.len() + output.len());
    // Live order: the function's output comes before the line saying it failed.
    let at = |needle: &str| streamed.iter().position(|l| l.contains(needle)).unwrap();
    assert!(at("streamed one") < at("function f failed"), "{streamed:?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn stage_secrets_are_masked_in_stdout_and_error() {
    let engine = TestEngine::start(None).await;
    let secret = "fn-secret-7f3a9c";
    let (status, value) = engine
        .post("/setup", json!({ "secrets": [secret] }).to_string())
        .await;
    assert_eq!(status, 200, "{value}");
    let resp = engine
        .execute(json!({
            "function_name": "leak",
            "function_code": "def leak(s):\n    print('token is', s)\n    raise ValueError('bad ' + s)",
            "args": [secret],
            "serialization": "json",
        }))
        .await;
    assert!(!resp.success);
    let stdout = resp.stdout.unwrap();
    let error = resp.error.unwrap();
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(!error.contains(secret), "{error}");
    assert!(stdout.contains("token is "), "{stdout}");
    assert!(error.starts_with("ValueError: bad "), "{error}");
}
