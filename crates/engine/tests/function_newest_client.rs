//! The newest client's request on a real engine: `serialization_format` and
//! `json_result`, `modules` importable for one call only, `null` lists, a free
//! `execution_type`, the wrapped `/execute` body, `GET /ping`.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

use function_engine::TestEngine;
use serde_json::json;

#[tokio::test]
async fn json_format_answers_json_result_and_cloudpickle_answers_result() {
    let engine = TestEngine::start(None).await;
    let code = "def f(x):\n    return {'twice': x * 2}";
    let resp = engine
        .execute(json!({
            "function_name": "f", "function_code": code, "args": [21],
            "serialization_format": "json",
        }))
        .await;
    assert!(resp.success, "{resp:?}");
    assert_eq!(resp.json_result, Some(json!({"twice": 42})));
    assert_eq!(resp.result, None, "result is cloudpickle-only: {resp:?}");

    let rt = runlog_engine::python::PythonRuntime::new(support::config(None));
    rt.warm_up().await.unwrap();
    let resp = engine
        .execute(json!({
            "function_name": "f", "function_code": code,
            "args": [support::pickle("21")],
            "serialization_format": "cloudpickle",
        }))
        .await;
    assert_eq!(resp.json_result, None, "{resp:?}");
    let b64 = resp.result.unwrap();
    assert_eq!(
        support::unpickle_repr(b64.as_str().unwrap()),
        "{'twice': 42}"
    );
}

#[tokio::test]
async fn modules_are_importable_for_their_call_only() {
    let engine = TestEngine::start_with(None, |cfg, _| cfg.python.warm_workers = 1).await;
    let code = "def f():\n    import helpers.maths as m\n    from utils import NAME\n    return [m.double(4), NAME]";
    // Many calls so that both run on one warm worker at least once.
    for _ in 0..3 {
        let resp = engine
            .execute(json!({
                "function_name": "f", "function_code": code,
                "serialization_format": "json",
                "modules": {
                    "utils.py": "NAME = 'from utils'",
                    "helpers/__init__.py": "",
                    "helpers/maths.py": "def double(x):\n    return 2 * x",
                },
            }))
            .await;
        assert!(resp.success, "{resp:?}");
        assert_eq!(resp.json_result, Some(json!([8, "from utils"])));

        let after = engine
            .execute(json!({
                "function_name": "g",
                "function_code": "def g():\n    import utils\n    return utils.NAME",
                "serialization_format": "json",
            }))
            .await;
        assert!(
            !after.success,
            "a later call imported the earlier call's module: {after:?}"
        );
        let error = after.error.unwrap();
        assert!(error.starts_with("ModuleNotFoundError"), "{error}");
    }
}

#[tokio::test]
async fn a_class_keeps_its_modules_for_its_instances_life() {
    let engine = TestEngine::start(None).await;
    let class_code = "class C:\n    def get(self):\n        import consts\n        return consts.V";
    let first = engine
        .execute(json!({
            "execution_type": "class", "class_name": "C", "class_code": class_code,
            "method_name": "get", "serialization_format": "json",
            "modules": {"consts.py": "V = 7"},
        }))
        .await;
    assert_eq!(first.json_result, Some(json!(7)), "{first:?}");
    let again = engine
        .execute(json!({
            "execution_type": "class", "class_name": "C",
            "instance_id": first.instance_id.unwrap(), "create_new_instance": false,
            "method_name": "get", "serialization_format": "json",
        }))
        .await;
    assert_eq!(again.json_result, Some(json!(7)), "{again:?}");
}

#[tokio::test]
async fn null_lists_free_execution_type_and_wrapped_body_are_accepted() {
    let engine = TestEngine::start(None).await;
    let call = json!({
        "function_name": "f", "function_code": "def f(): return 'ran'",
        "dependencies": null, "system_dependencies": null, "modules": null,
        "execution_type": "anything-but-class",
        "serialization_format": "json",
    });
    let bare = engine.execute(call.clone()).await;
    assert_eq!(bare.json_result, Some(json!("ran")), "{bare:?}");
    let wrapped = engine.execute(json!({ "input": call })).await;
    assert_eq!(wrapped.json_result, Some(json!("ran")), "{wrapped:?}");
    // runlog's older field name still works.
    let old = engine
        .execute(json!({
            "function_name": "f", "function_code": "def f(): return 'old'",
            "serialization": "json",
        }))
        .await;
    assert_eq!(old.json_result, Some(json!("old")), "{old:?}");
}

#[tokio::test]
async fn ping_answers_healthy() {
    let engine = TestEngine::start(None).await;
    let (status, body) = engine.get("/ping").await;
    assert_eq!((status, body), (200, json!({"status": "healthy"})));
}

#[tokio::test]
async fn bad_newest_client_fields_get_a_clear_json_error() {
    let engine = TestEngine::start(None).await;
    let cases = [
        (
            json!({"function_name": "f", "function_code": "def f(): pass", "serialization_format": "xml"}),
            "unknown variant",
        ),
        (
            json!({"function_name": "f", "function_code": "def f(): pass", "modules": {"/abs.py": ""}}),
            "modules",
        ),
        (
            json!({"function_name": "f", "function_code": "def f(): pass", "modules": {"a.py": 3}}),
            "malformed JSON",
        ),
        (
            json!({"function_name": "f", "function_code": "def f(): pass",
                   "serialization": "json", "serialization_format": "json"}),
            "duplicate field",
        ),
        (
            json!({"input": {"function_code": "def f(): pass"}}),
            "function_name",
        ),
    ];
    for (body, needle) in cases {
        let (status, value) = engine.post("/execute", body.to_string()).await;
        assert_eq!(status, 400, "{body}: {value}");
        let msg = value["error_msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
}

#[tokio::test]
async fn a_missing_method_names_its_cause_once_and_leaves_no_instance() {
    let engine = TestEngine::start(None).await;
    let resp = engine
        .execute(json!({
            "execution_type": "class", "class_name": "C", "class_code": "class C:\n    pass",
            "method_name": "absent", "serialization_format": "json",
        }))
        .await;
    assert!(!resp.success, "{resp:?}");
    assert_eq!(
        resp.error.as_deref(),
        Some("AttributeError: method 'absent' not found on C")
    );
    assert_eq!(
        resp.instance_id, None,
        "a failed first call keeps no instance"
    );
}
