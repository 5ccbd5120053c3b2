//! RunPod's tetra worker's own JSON test cases (`../shared/peers/worker-tetra/`, beside
//! the checkout for developers and CI alike; not copied into the repository), replayed
//! against a real engine through `POST /runsync` and through `POST /v2/{id}/run` +
//! `GET /v2/{id}/status/{job}`, answers checked as the worker answers them.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

use function_engine::{TestEngine, split_stdout};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn case(name: &str) -> Value {
    // crates/engine → the checkout → its parent, where shared/ lies.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/peers/worker-tetra")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared/ folder beside the checkout)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The job record of `body` through `runsync`, and through `run` + `status`.
async fn both_ways(engine: &TestEngine, body: &Value) -> [Value; 2] {
    let (code, sync) = engine.post("/runsync", body.to_string()).await;
    assert_eq!(code, 200, "{sync}");
    let (code, queued) = engine.post("/v2/tetra/run", body.to_string()).await;
    assert_eq!(code, 200, "{queued}");
    assert_eq!(queued["status"], "IN_QUEUE");
    let id = queued["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let polled = loop {
        let (code, rec) = engine.get(&format!("/v2/tetra/status/{id}")).await;
        assert_eq!(code, 200, "{rec}");
        if !matches!(rec["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")) {
            break rec;
        }
        assert!(Instant::now() < deadline, "{rec}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    [sync, polled]
}

/// Replays case `name` both ways; each answer's output, checked to be a success.
async fn replay(engine: &TestEngine, name: &str) -> [Value; 2] {
    both_ways(engine, &case(name)).await.map(|rec| {
        assert_eq!(rec["status"], "COMPLETED", "{name}: {rec}");
        let out = rec["output"].clone();
        assert_eq!(out["success"], true, "{name}: {out}");
        out
    })
}

fn result_repr(out: &Value) -> String {
    support::unpickle_repr(out["result"].as_str().unwrap())
}

#[tokio::test]
async fn the_workers_function_and_class_cases_answer_as_the_worker_does() {
    let engine = TestEngine::start(None).await;
    let rt = runlog_engine::python::PythonRuntime::new(support::config(None));
    rt.warm_up().await.unwrap();

    let expected = [
        ("test_lb_simple_function", "8"),
        ("test_class_input", "'Value is: hello'"),
        ("test_class_custom_method", "50.0"),
        (
            "test_class_persistence",
            "{'current_value': 5, 'call_count': 0, 'call_history': []}",
        ),
    ];
    for (name, repr) in expected {
        for out in replay(&engine, name).await {
            assert_eq!(result_repr(&out), repr, "{name}");
        }
    }

    for out in replay(&engine, "test_input").await {
        assert_eq!(result_repr(&out), "'hello world'");
        let (_, output) = split_stdout(out["stdout"].as_str().unwrap());
        assert!(output.contains(&"going to say hello"), "{output:?}");
        assert!(
            output.iter().any(|l| l.ends_with("hello from the log")),
            "{output:?}"
        );
    }

    for out in replay(&engine, "test_function_args").await {
        let repr = result_repr(&out);
        assert!(repr.contains("'number_times_multiplier'"), "{repr}");
    }

    // These inspect their environment and answer what they found: the call succeeds
    // (as on the worker); what they find differs, since the worker's image ships
    // torch and the `runpod` package and this test virtualenv has neither (an engine
    // given `--python-package runpod` has it: see below).
    for name in [
        "test_installed_packages",
        "test_pip_package_access",
        "test_runpod_import",
    ] {
        for out in replay(&engine, name).await {
            assert!(result_repr(&out).starts_with('{'), "{name}: {out}");
        }
    }
}

#[tokio::test]
async fn the_workers_apt_cases_are_refused_with_a_clear_cause_without_allow_apt() {
    // The worker's image allows apt; an engine allows it only when told to, which
    // these tests do not do (it would install curl and wget on the test machine).
    let engine = TestEngine::start(None).await;
    for name in [
        "test_system_dependencies",
        "test_log_streaming",
        "test_mixed_dependencies",
    ] {
        for rec in both_ways(&engine, &case(name)).await {
            assert_eq!(rec["status"], "COMPLETED", "{name}: {rec}");
            let out = &rec["output"];
            assert_eq!(out["success"], false, "{name}: {out}");
            let error = out["error"].as_str().unwrap();
            assert!(error.contains("does not allow apt"), "{name}: {error}");
        }
    }
}

/// An engine whose virtualenv installs from PyPI: one of its own, kept between runs
/// beside the shared one (which stays small for the other tests).
async fn pypi_engine(allow_apt: bool) -> TestEngine {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runlog-worker-cases/venv");
    TestEngine::start_with(None, |cfg, _| {
        cfg.python.venv_dir = venv;
        cfg.python.install_timeout = Duration::from_secs(600);
        cfg.python.allow_apt = allow_apt;
    })
    .await
}

#[tokio::test]
async fn the_workers_cases_that_install_from_pypi_succeed() {
    // numpy, requests and transformers come from PyPI: this test needs the network.
    let engine = pypi_engine(false).await;
    for out in replay(&engine, "test_dependencies").await {
        let v = repr_in_engine(&engine, &out, "test_dependencies").await;
        assert!(v.contains("'array_sum': 15"), "{v}");
    }
    for out in replay(&engine, "test_uv_no_acceleration").await {
        let v = repr_in_engine(&engine, &out, "test_uv_no_acceleration").await;
        assert!(!v.contains("ImportError"), "{v}");
    }
}

#[tokio::test]
async fn the_workers_runpod_import_case_succeeds_with_the_package_preinstalled() {
    // As `runlog engine --python-package runpod`: the worker's image ships `runpod`;
    // this engine installs it from PyPI at start (the network is needed), into a
    // virtualenv of its own: installers running at once in one venv could race.
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runlog-worker-cases/venv-runpod");
    let engine = TestEngine::start_with(None, |cfg, _| {
        cfg.python.venv_dir = venv;
        cfg.python.install_timeout = Duration::from_secs(600);
        cfg.python.preinstall = vec!["runpod".to_owned()];
    })
    .await;
    // The runtime (with its packages) is prepared by the first call: one that may wait
    // long enough for a fresh virtualenv, so the replay's `runsync` finds it ready.
    let first = json!({"input": {"function_name": "f", "function_code": "def f():\n    return 1", "args": []}});
    let (code, rec) = engine.post("/runsync?wait=300000", first.to_string()).await;
    assert_eq!((code, &rec["status"]), (200, &json!("COMPLETED")), "{rec}");
    for out in replay(&engine, "test_runpod_import").await {
        let v = repr_in_engine(&engine, &out, "test_runpod_import").await;
        assert!(v.contains("'success': True"), "{v}");
        assert!(v.contains("'runpod_version': '"), "{v}");
    }
}

#[tokio::test]
async fn the_workers_apt_cases_succeed_with_apt_allowed() {
    // As `runlog engine --allow-apt`: the real apt-get, as root (as on the worker's image),
    // with the network (apt-get update, PyPI).
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !Path::new("/usr/bin/apt-get").exists() {
        eprintln!("skipped: the worker's apt cases need root and apt-get (as its image has)");
        return;
    }
    let engine = pypi_engine(true).await;
    for out in replay(&engine, "test_system_dependencies").await {
        let v = repr_in_engine(&engine, &out, "test_system_dependencies").await;
        assert!(v.contains("'curl_available': True"), "{v}");
    }
    for out in replay(&engine, "test_log_streaming").await {
        let (_, output) = split_stdout(out["stdout"].as_str().unwrap());
        for line in ["This is a warning message", "This is a print statement"] {
            assert!(
                output.iter().any(|l| l.ends_with(line)),
                "{line}: {output:?}"
            );
        }
    }
    for out in replay(&engine, "test_mixed_dependencies").await {
        let v = repr_in_engine(&engine, &out, "test_mixed_dependencies").await;
        // wget, requests and numpy: each reported available.
        assert!(v.matches("'available': True").count() >= 3, "{v}");
    }
}

/// `repr()` of a result from an engine whose virtualenv is not the shared one: asked of
/// the engine itself, so the classes it pickled are importable where it is read.
async fn repr_in_engine(engine: &TestEngine, out: &Value, name: &str) -> String {
    let code = "def r(b64):\n    import base64, cloudpickle\n    return repr(cloudpickle.loads(base64.b64decode(b64)))";
    let resp = engine
        .execute(serde_json::json!({
            "function_name": "r", "function_code": code,
            "args": [out["result"]], "serialization_format": "json",
        }))
        .await;
    assert!(resp.success, "{name}: {resp:?}");
    resp.json_result.unwrap().as_str().unwrap().to_owned()
}
