//! The Python runtime on its own: venv, workers, pool, instances, installers.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

use runlog_engine::python::{FunctionOutput, OutputLine, OutputStream, PythonRuntime};
use runlog_protocol::function::{ExecutionType, FunctionRequest, Serialization};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn json_call(name: &str, code: &str) -> FunctionRequest {
    FunctionRequest {
        function_name: Some(name.into()),
        function_code: Some(code.into()),
        serialization: Serialization::Json,
        ..FunctionRequest::default()
    }
}

/// Waits (10 s at most) until process `pid` has exited; fails with `what` otherwise.
async fn wait_until_gone(pid: u32, what: &str) {
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive() {
        assert!(std::time::Instant::now() < deadline, "child {pid} {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(
    rt: &PythonRuntime,
    req: &FunctionRequest,
) -> (runlog_engine::python::CallOutcome, Vec<OutputLine>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let sink: FunctionOutput = Arc::new(move |l| kept.lock().unwrap().push(l));
    let outcome = rt.execute(req, &sink).await;
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    (outcome, lines)
}

#[tokio::test]
async fn json_function_gets_args_and_kwargs_and_output_arrives_in_order() {
    let rt = PythonRuntime::new(support::config(None));
    let mut req = json_call(
        "f",
        "import logging, sys\ndef f(a, b, *, scale=1):\n    print('first', a)\n    logging.getLogger('app').warning('second %s', b)\n    print('third', file=sys.stderr)\n    return {'sum': (a + b) * scale}",
    );
    req.args = vec![json!(2), json!(3)];
    req.kwargs.insert("scale".into(), json!(10));
    let (outcome, lines) = run(&rt, &req).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.result, Some(json!({"sum": 50})));
    let seen: Vec<(OutputStream, &str, &str)> = lines
        .iter()
        .map(|l| (l.stream, l.level, l.text.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (OutputStream::Stdout, "info", "first 2"),
            (OutputStream::Log, "warn", "app: second 3"),
            (OutputStream::Stderr, "error", "third"),
        ]
    );
}

#[tokio::test]
async fn cloudpickle_args_and_result_round_trip() {
    let rt = PythonRuntime::new(support::config(None));
    rt.warm_up().await.unwrap();
    let req = FunctionRequest {
        function_name: Some("join".into()),
        function_code: Some(
            "def join(items, sep='-'):\n    return sep.join(items), len(items)".into(),
        ),
        args: vec![json!(support::pickle("['a', 'b', 'c']"))],
        kwargs: [("sep".to_owned(), json!(support::pickle("'+'")))]
            .into_iter()
            .collect(),
        ..FunctionRequest::default()
    };
    let (outcome, _) = run(&rt, &req).await;
    assert!(outcome.success, "{outcome:?}");
    let b64 = outcome
        .result
        .as_ref()
        .and_then(|v| v.as_str())
        .expect("base64 string result");
    assert_eq!(support::unpickle_repr(b64), "('a+b+c', 3)");
}

#[tokio::test]
async fn async_function_is_awaited() {
    let rt = PythonRuntime::new(support::config(None));
    let req = json_call(
        "f",
        "import asyncio\nasync def f():\n    await asyncio.sleep(0.01)\n    return 'awaited'",
    );
    let (outcome, _) = run(&rt, &req).await;
    assert_eq!(outcome.result, Some(json!("awaited")), "{outcome:?}");
}

#[tokio::test]
async fn raising_function_fails_with_traceback_and_keeps_earlier_output() {
    let rt = PythonRuntime::new(support::config(None));
    let req = json_call(
        "f",
        "def f():\n    print('before the error')\n    raise ValueError('boom 42')",
    );
    let (outcome, lines) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert_eq!(outcome.result, None);
    let error = outcome.error.unwrap();
    assert!(error.starts_with("ValueError: boom 42\n"), "{error}");
    assert!(
        error.contains("Traceback (most recent call last)"),
        "{error}"
    );
    assert!(error.contains("<function_code>"), "{error}");
    assert!(
        !error.contains("harness"),
        "harness frames are hidden: {error}"
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].text, "before the error");
}

#[tokio::test]
async fn missing_function_is_an_error_not_a_result() {
    let rt = PythonRuntime::new(support::config(None));
    let req = json_call("absent", "def present():\n    return 1");
    let (outcome, _) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert_eq!(outcome.result, None);
    assert!(
        outcome
            .error
            .unwrap()
            .contains("function 'absent' not found in function_code"),
    );
}

#[tokio::test]
async fn worker_that_exits_is_reported_and_replaced() {
    let rt = PythonRuntime::new(support::config(None));
    let req = json_call("f", "import os\ndef f():\n    os._exit(3)");
    let (outcome, _) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert!(outcome.error.unwrap().contains("exited before answering"));
    let (outcome, _) = run(&rt, &json_call("g", "def g():\n    return 'alive'")).await;
    assert_eq!(outcome.result, Some(json!("alive")), "{outcome:?}");
}

#[tokio::test]
async fn timed_out_call_is_stopped_and_the_next_call_works() {
    let rt = PythonRuntime::new(support::config(None));
    let mut req = json_call("f", "import time\ndef f():\n    time.sleep(30)");
    req.timeout = Some(0.5);
    let started = std::time::Instant::now();
    let (outcome, _) = run(&rt, &req).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(outcome.error.unwrap().contains("timed out"));
    let (outcome, _) = run(&rt, &json_call("g", "def g():\n    return 7")).await;
    assert_eq!(outcome.result, Some(json!(7)));
}

#[tokio::test]
async fn class_instance_state_persists_across_calls() {
    let rt = PythonRuntime::new(support::config(None));
    let code = "class Counter:\n    def __init__(self, start):\n        self.n = start\n    def add(self, k=1):\n        self.n += k\n        return self.n";
    let first = FunctionRequest {
        execution_type: ExecutionType::Class,
        class_name: Some("Counter".into()),
        class_code: Some(code.into()),
        constructor_args: vec![json!(100)],
        method_name: "add".into(),
        args: vec![json!(5)],
        serialization: Serialization::Json,
        ..FunctionRequest::default()
    };
    let (outcome, _) = run(&rt, &first).await;
    assert_eq!(outcome.result, Some(json!(105)), "{outcome:?}");
    let id = outcome.instance_id.clone().unwrap();
    assert!(
        id.starts_with("Counter_") && id.len() == "Counter_".len() + 8,
        "{id}"
    );
    let second = FunctionRequest {
        instance_id: Some(id.clone()),
        create_new_instance: false,
        class_code: None,
        args: vec![json!(1)],
        ..first.clone()
    };
    let (outcome, _) = run(&rt, &second).await;
    assert_eq!(outcome.result, Some(json!(106)), "{outcome:?}");
    assert_eq!(outcome.instance_id.as_deref(), Some(id.as_str()));
    let info = outcome.instance_info.unwrap();
    assert_eq!(info.class_name, "Counter");
    assert_eq!(info.method_calls, 2);
    // A new instance under the same id starts again from the constructor.
    let (outcome, _) = run(
        &rt,
        &FunctionRequest {
            instance_id: Some(id),
            ..first
        },
    )
    .await;
    assert_eq!(outcome.result, Some(json!(105)));
}

#[tokio::test]
async fn idle_instances_are_reaped() {
    let mut cfg = support::config(None);
    cfg.instance_idle_timeout = Duration::from_millis(300);
    let rt = PythonRuntime::new(cfg);
    let req = FunctionRequest {
        execution_type: ExecutionType::Class,
        class_name: Some("C".into()),
        class_code: Some("class C:\n    def __call__(self):\n        return 1".into()),
        serialization: Serialization::Json,
        ..FunctionRequest::default()
    };
    let (outcome, _) = run(&rt, &req).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(rt.instance_count(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rt.instance_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "instance never reaped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dependency_from_local_wheel_is_installed_before_the_call() {
    let (wheels, version) = support::build_fixture_wheel();
    let rt = PythonRuntime::new(support::config(Some(wheels.path())));
    let mut req = json_call(
        "f",
        "def f(name):\n    import runlog_fixture_pkg\n    return runlog_fixture_pkg.greet(name)",
    );
    req.args = vec![json!("runlog")];
    req.dependencies = vec![format!("runlog-fixture-pkg=={version}")];
    let (outcome, _) = run(&rt, &req).await;
    assert_eq!(
        outcome.result,
        Some(json!(format!(
            "hello runlog from runlog_fixture_pkg {version}"
        ))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn failed_install_stops_the_call_with_a_one_line_cause() {
    let (wheels, _) = support::build_fixture_wheel();
    let rt = PythonRuntime::new(support::config(Some(wheels.path())));
    let mut req = json_call("f", "def f():\n    print('must not run')\n    return 1");
    req.dependencies = vec!["runlog-no-such-package==9.9.9".into()];
    let (outcome, lines) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert!(lines.is_empty(), "the function ran: {lines:?}");
    let error = outcome.error.unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("pip failed"), "{error}");
    assert!(error.contains("runlog-no-such-package"), "{error}");
}

#[tokio::test]
async fn apt_is_refused_when_not_allowed() {
    let rt = PythonRuntime::new(support::config(None));
    let mut req = json_call("f", "def f():\n    return 1");
    req.system_dependencies = vec!["cowsay".into()];
    let (outcome, lines) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert!(lines.is_empty());
    let error = outcome.error.unwrap();
    assert!(error.contains("does not allow apt"), "{error}");
    assert!(error.contains("cowsay"), "{error}");
}

#[tokio::test]
async fn option_like_dependency_is_refused() {
    let rt = PythonRuntime::new(support::config(None));
    let mut req = json_call("f", "def f():\n    return 1");
    req.dependencies = vec!["--index-url=http://evil.invalid".into()];
    let (outcome, _) = run(&rt, &req).await;
    assert!(outcome.error.unwrap().contains("must not start with '-'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_see_each_others_output() {
    let rt = std::sync::Arc::new(PythonRuntime::new(support::config(None)));
    rt.warm_up().await.unwrap();
    let code = "import logging\ndef f(marker):\n    for i in range(5):\n        print(marker, 'print', i)\n        logging.info('%s log %d', marker, i)\n    return marker";
    let mut tasks = Vec::new();
    for n in 0..50 {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = json_call("f", code);
            let marker = format!("M{n:03}");
            req.args = vec![json!(marker)];
            let (outcome, lines) = run(&rt, &req).await;
            (marker, outcome, lines)
        }));
    }
    for t in tasks {
        let (marker, outcome, lines) = t.await.unwrap();
        assert_eq!(outcome.result, Some(json!(marker)));
        assert_eq!(lines.len(), 10, "{marker}: {lines:?}");
        for l in &lines {
            assert!(
                l.text.contains(&marker),
                "{marker} got a foreign line {l:?}"
            );
        }
    }
}

#[tokio::test]
async fn timed_out_call_also_stops_the_processes_it_started() {
    let rt = PythonRuntime::new(support::config(None));
    let mut req = json_call(
        "f",
        "import subprocess, time\ndef f():\n    child = subprocess.Popen(['sleep', '300'])\n    print(child.pid, flush=True)\n    time.sleep(300)",
    );
    req.timeout = Some(1.0);
    let (outcome, lines) = run(&rt, &req).await;
    assert!(outcome.error.unwrap().contains("timed out"));
    let pid: u32 = lines
        .first()
        .expect("the child's pid was printed")
        .text
        .trim()
        .parse()
        .unwrap();
    wait_until_gone(pid, "survived its call").await;
}

#[tokio::test]
async fn installation_past_its_time_limit_stops_the_call() {
    let (wheels, version) = support::build_fixture_wheel();
    let mut cfg = support::config(Some(wheels.path()));
    cfg.install_timeout = Duration::from_millis(1);
    let rt = PythonRuntime::new(cfg);
    rt.warm_up().await.unwrap();
    let mut req = json_call("f", "def f():\n    print('must not run')");
    req.dependencies = vec![format!("runlog-fixture-pkg=={version}")];
    let (outcome, lines) = run(&rt, &req).await;
    assert!(!outcome.success);
    assert!(lines.is_empty(), "the function ran: {lines:?}");
    let error = outcome.error.unwrap();
    assert!(error.contains("timed out after 1ms"), "{error}");
}

#[tokio::test]
async fn missing_interpreter_fails_the_call_with_a_clear_cause() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = runlog_engine::python::PythonConfig::new(dir.path());
    cfg.base_python = dir.path().join("no-such-python3");
    let rt = PythonRuntime::new(cfg);
    let (outcome, _) = run(&rt, &json_call("f", "def f():\n    return 1")).await;
    assert!(!outcome.success);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("virtualenv") && error.contains("could not be started"),
        "{error}"
    );
    assert!(
        !dir.path().join("python").join("venv").exists(),
        "no half-made venv left"
    );
}

#[tokio::test]
async fn call_that_replaces_sys_stdout_does_not_blind_the_next_call() {
    let mut cfg = support::config(None);
    // One worker, so the second call surely runs where the first one meddled.
    cfg.warm_workers = 1;
    cfg.max_workers = 1;
    let rt = PythonRuntime::new(cfg);
    let meddle = json_call(
        "f",
        "import io, logging, sys\ndef f():\n    sys.stdout = io.StringIO()\n    logging.root.handlers = []\n    return 1",
    );
    let (outcome, _) = run(&rt, &meddle).await;
    assert!(outcome.success, "{outcome:?}");
    let (outcome, lines) = run(
        &rt,
        &json_call(
            "g",
            "import logging\ndef g():\n    print('seen')\n    logging.info('logged')",
        ),
    )
    .await;
    assert!(outcome.success, "{outcome:?}");
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, vec!["seen", "root: logged"]);
}

#[tokio::test]
async fn result_that_is_not_json_fails_the_call_clearly() {
    let rt = PythonRuntime::new(support::config(None));
    let (outcome, _) = run(&rt, &json_call("f", "def f():\n    return {1, 2}")).await;
    assert!(!outcome.success);
    assert_eq!(outcome.result, None);
    let error = outcome.error.unwrap();
    assert!(error.starts_with("TypeError:"), "{error}");
    assert!(error.contains("not JSON serializable"), "{error}");
}

#[tokio::test]
async fn install_waits_while_another_process_installs_into_the_same_venv() {
    let (wheels, version) = support::build_fixture_wheel();
    let config = support::config(Some(wheels.path()));
    // This test process plays the other engine: it holds the venv's install lock.
    let held = support::hold_install_lock(&config.venv_dir);
    let rt = Arc::new(PythonRuntime::new(config));
    let mut req = json_call(
        "f",
        "def f():\n    import runlog_fixture_pkg\n    return runlog_fixture_pkg.greet('x')",
    );
    req.dependencies = vec![format!("runlog-fixture-pkg=={version}")];
    let call = tokio::spawn({
        let rt = rt.clone();
        let req = req.clone();
        async move { run(&rt, &req).await }
    });
    // The call cannot install (and so cannot finish) while the lock is held…
    let mut call = call;
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut call)
            .await
            .is_err(),
        "the call installed while another process held the venv's install lock"
    );
    // …and goes ahead as soon as it is released.
    drop(held);
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(120), call)
        .await
        .expect("the call finishes once the lock is free")
        .unwrap();
    assert!(outcome.success, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_an_instance_never_gets_the_result_of_one_that_timed_out() {
    let rt = Arc::new(PythonRuntime::new(support::config(None)));
    let code = "import time\nclass Slow:\n    def m(self, s):\n        print('started', s, flush=True)\n        time.sleep(s)\n        return s";
    let create = FunctionRequest {
        execution_type: ExecutionType::Class,
        class_name: Some("Slow".into()),
        class_code: Some(code.into()),
        method_name: "m".into(),
        args: vec![json!(0)],
        serialization: Serialization::Json,
        ..FunctionRequest::default()
    };
    let (outcome, _) = run(&rt, &create).await;
    assert_eq!(outcome.result, Some(json!(0)), "{outcome:?}");
    let call = |s: u64, timeout: Option<f64>| FunctionRequest {
        instance_id: outcome.instance_id.clone(),
        create_new_instance: false,
        class_code: None,
        args: vec![json!(s)],
        timeout,
        ..create.clone()
    };
    // A: holds the instance for 2 s but gives up after 0.5 s.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Mutex::new(Some(started_tx));
    let sink: FunctionOutput = Arc::new(move |l: OutputLine| {
        if l.text.starts_with("started")
            && let Some(tx) = started_tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    });
    let a = tokio::spawn({
        let (rt, req) = (rt.clone(), call(2, Some(0.5)));
        async move { rt.execute(&req, &sink).await }
    });
    started_rx.await.unwrap();
    // B: asks the same instance while A's method runs, so it waits for it.
    let (b, b_lines) = run(&rt, &call(0, None)).await;
    let a = a.await.unwrap();
    assert!(
        a.error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{a:?}"
    );
    assert!(b.success, "{b:?}");
    assert_eq!(
        b.result,
        Some(json!(0)),
        "B got another call's result: {b:?}"
    );
    let texts: Vec<&str> = b_lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, vec!["started 0"]);
}

#[tokio::test]
async fn a_worker_that_dies_takes_the_processes_it_started_with_it() {
    let rt = PythonRuntime::new(support::config(None));
    let req = json_call(
        "f",
        "import os, subprocess\ndef f():\n    child = subprocess.Popen(['sleep', '300'])\n    print(child.pid, flush=True)\n    os._exit(1)",
    );
    let (outcome, lines) = run(&rt, &req).await;
    assert!(!outcome.success, "{outcome:?}");
    let pid: u32 = lines
        .iter()
        .find_map(|l| l.text.trim().parse().ok())
        .expect("the child's pid was printed");
    wait_until_gone(pid, "outlived its worker").await;
}

#[tokio::test]
async fn what_a_subprocess_writes_to_stderr_is_its_calls_and_never_the_next_ones() {
    let rt = PythonRuntime::new(support::config(None));
    for i in 0..10 {
        // Enough lines that some are still in the pipe when the call's end arrives.
        let mut req = json_call(
            "f",
            "import subprocess\ndef f(i):\n    subprocess.run(f'seq 1 3000 | sed s/^/E{i}-/ >&2', shell=True)\n    return i",
        );
        req.args = vec![json!(i)];
        let (outcome, lines) = run(&rt, &req).await;
        assert_eq!(outcome.result, Some(json!(i)), "{outcome:?}");
        let stderr: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == OutputStream::Stderr)
            .map(|l| l.text.as_str())
            .collect();
        let expected: Vec<String> = (1..=3000).map(|n| format!("E{i}-{n}")).collect();
        assert_eq!(stderr.len(), expected.len(), "call {i}");
        assert!(
            stderr.iter().zip(&expected).all(|(a, b)| a == b),
            "call {i}"
        );
    }
}

#[tokio::test]
async fn a_function_that_points_stderr_at_its_own_file_gets_only_its_own_bytes_there() {
    let rt = PythonRuntime::new(support::config(None));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("err.txt");
    let mut req = json_call(
        "f",
        "import os\ndef f(path):\n    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)\n    os.dup2(fd, 2)\n    os.write(2, b'mine\\n')\n    return 1",
    );
    req.args = vec![json!(file.to_string_lossy())];
    for _ in 0..2 {
        let (outcome, _) = run(&rt, &req).await;
        assert_eq!(outcome.result, Some(json!(1)), "{outcome:?}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\nmine\n");
}
