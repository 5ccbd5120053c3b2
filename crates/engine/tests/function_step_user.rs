#![allow(clippy::unwrap_used)]
//! A root engine runs function workers as its step user, as it runs steps: a hostile
//! function reaches none of the engine's credentials and writes nothing of the
//! engine's (its virtualenv included), while an ordinary call still works and returns
//! its output. The engine picks the base interpreter itself: the default `python3`
//! is the first on `PATH` the step user can run (here pyenv's shim, in root's private
//! home, is passed over for `/usr/bin/python3`).

mod engine_support;

use engine_support::{PlantedCredentials, TestEngine};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ACCOUNT: &str = "acc-function-user";

/// The virtualenv of these tests, kept between runs (its first build installs
/// `cloudpickle` from the default index: the network is needed once). Apart from the
/// other tests' shared one, which may be built on an interpreter the step user cannot
/// run.
fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("runlog-function-step-user/venv")
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A `python3` in a directory of mode 0700, as pyenv's in `/root`: root runs it, the
/// step user cannot reach it. Returns the directory (kept while in use) and the link.
fn unreachable_python() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let python = private.path().join("python3");
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    (private, python)
}

/// Asserts that the engine's start check and a function call both fail with an error
/// containing `expected` (so no worker ran, as root or otherwise).
async fn assert_functions_refused(engine: &TestEngine, expected: &str) {
    let at_start = engine.state.functions().runtime().check_user_python().await;
    assert!(
        at_start.as_ref().is_err_and(|e| e.contains(expected)),
        "{at_start:?}"
    );
    let (status, body) = engine
        .post(
            "/execute",
            json!({
                "function_name": "f",
                "function_code": "import os\ndef f():\n    return os.getuid()",
                "serialization": "json",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], false, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(expected), "{error}");
}

/// Tries each of the engine's secrets and places; answers what it could do and who it
/// is.
const PROBE: &str = r#"
import os
import sysconfig

def probe(paths):
    results = {}
    def attempt(name, action):
        try:
            action()
            results[name] = "done"
        except OSError:
            results[name] = "refused"
    def read(path):
        with open(path, "rb") as f:
            f.read()
    def write(path):
        with open(path, "w") as f:
            f.write("planted")
    attempt("admin_secret", lambda: read(paths["admin_secret"]))
    attempt("outbox_entry", lambda: read(paths["entry"]))
    attempt("outbox_list", lambda: os.listdir(paths["outbox"]))
    attempt("spool_file", lambda: read(paths["spool_file"]))
    attempt("spool_list", lambda: os.listdir(paths["spool"]))
    attempt("engine_environ", lambda: read("/proc/%d/environ" % paths["engine_pid"]))
    attempt("data_list", lambda: os.listdir(paths["data"]))
    attempt("write_data", lambda: write(os.path.join(paths["data"], "planted")))
    site_packages = sysconfig.get_paths()["purelib"]
    attempt("write_venv", lambda: write(os.path.join(site_packages, "planted.pth")))
    attempt("write_cwd", lambda: write("made-by-function"))
    print("probed", len(results))
    return {
        "results": results,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "cwd": os.getcwd(),
        "home": os.environ.get("HOME"),
        "site_packages": site_packages,
    }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_function_reaches_no_credential_of_a_root_engine() {
    if !is_root() {
        eprintln!("skipped: the engine runs as root only in a root test run");
        return;
    }
    let svc = TestService::start().await;
    let engine = TestEngine::start_with_functions(|fcfg| {
        fcfg.python.venv_dir = venv_dir();
        fcfg.python.prefer_uv = false;
        fcfg.python.install_timeout = Duration::from_secs(300);
        fcfg.python.warm_workers = 1;
    })
    .await;
    let cfg = engine.state.config().clone();
    let user = cfg
        .step_user
        .clone()
        .expect("a root engine has a step user");
    assert_eq!(user.name, "nobody");
    let data = cfg.data_dir.clone();

    // What a stage before this one, and `runlog serve`, leave in the data directory.
    let planted = PlantedCredentials::plant(&cfg);
    // A stage's engine stream holds a spool file open.
    let (status, body) = engine
        .post(
            "/setup",
            json!({
                "le_log_key": "stage/engine-log",
                "log_config": {
                    "url": svc.url(),
                    "account_id": ACCOUNT,
                    "token": svc.token(ACCOUNT, Scope::Write),
                },
                "network": {"id": "n"},
            }),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    let spool_file = engine_support::a_spool_file(&cfg);
    // What a run of an engine without a step user could have planted in the kept venv.
    for lib in std::fs::read_dir(venv_dir().join("lib"))
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(lib.unwrap().path().join("site-packages/planted.pth"));
    }
    let paths = json!({
        "admin_secret": planted.admin_secret,
        "entry": planted.outbox_entry,
        "outbox": cfg.outbox_dir(),
        "spool_file": spool_file,
        "spool": cfg.spool_dir(),
        "engine_pid": std::process::id(),
        "data": data,
    });
    let (status, body) = engine
        .post(
            "/execute",
            json!({
                "function_name": "probe",
                "function_code": PROBE,
                "args": [paths],
                "serialization": "json",
                "timeout": 300,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    let result = &body["json_result"];
    let results = &result["results"];
    let also = ["write_venv"];
    for refused in engine_support::REFUSED_TO_THE_STEP_USER.iter().chain(&also) {
        assert_eq!(results[*refused], "refused", "{refused}: {results}");
    }
    assert_eq!(results["write_cwd"], "done", "{results}");
    assert_eq!(result["uid"], user.uid, "{result}");
    assert_eq!(result["gid"], user.gid, "{result}");
    assert_eq!(
        result["groups"],
        json!([]),
        "no supplementary group is kept"
    );
    let stdout = body["stdout"].as_str().unwrap();
    assert!(stdout.contains("probed 10"), "{stdout}");

    // The workers' directory, and what the function made there, are the user's; the
    // engine's own directories are not.
    let cwd = PathBuf::from(result["cwd"].as_str().unwrap());
    assert_eq!(
        result["home"],
        json!(cwd),
        "nobody's own home does not exist"
    );
    let made = std::fs::metadata(cwd.join("made-by-function")).unwrap();
    assert_eq!((made.uid(), made.gid()), (user.uid, user.gid));
    let work = std::fs::metadata(&cwd).unwrap();
    assert_eq!((work.uid(), work.mode() & 0o777), (user.uid, 0o700));
    assert!(!data.join("planted").exists());
    let site_packages = PathBuf::from(result["site_packages"].as_str().unwrap());
    assert!(site_packages.starts_with(venv_dir()), "{result}");
    assert!(!site_packages.join("planted.pth").exists());
    assert_eq!(std::fs::metadata(venv_dir()).unwrap().uid(), 0);

    // A class instance is a worker of its own: the same user.
    let (status, body) = engine
        .post(
            "/execute",
            json!({
                "execution_type": "class",
                "class_name": "Who",
                "class_code": "import os\nclass Who:\n    def uid(self):\n        return os.getuid()",
                "method_name": "uid",
                "serialization": "json",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["json_result"], user.uid, "{body}");
    let (status, body) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_interpreter_the_step_user_cannot_run_is_a_clear_error_not_root_workers() {
    if !is_root() {
        eprintln!("skipped: the engine runs as root only in a root test run");
        return;
    }
    let (private, python) = unreachable_python();
    let engine = TestEngine::start_with_functions(|fcfg| {
        fcfg.python.venv_dir = private.path().join("venv");
        fcfg.python.base_python = python.clone();
    })
    .await;
    let expected = format!(
        "the step user \"nobody\" cannot run the Python {}: Permission denied",
        python.display()
    );
    assert_functions_refused(&engine, &expected).await;
    assert!(
        !private.path().join("venv").exists(),
        "nothing was built with it"
    );
}

#[tokio::test]
async fn the_default_python3_is_the_first_on_path_the_step_user_can_run() {
    if !is_root() {
        eprintln!("skipped: a step user needs a root test run");
        return;
    }
    let nobody = runlog_engine::step_user::StepUser::lookup("nobody").unwrap();
    let chosen = runlog_engine::python::user_python::base_for(Path::new("python3"), &nobody)
        .await
        .unwrap();
    assert!(
        chosen.is_absolute() && chosen.ends_with("python3"),
        "{chosen:?}"
    );
    // The chosen one really runs as that user.
    let status = std::process::Command::new(&chosen)
        .args(["-c", "pass"])
        .uid(nobody.uid)
        .gid(nobody.gid)
        .status()
        .unwrap();
    assert!(status.success(), "{chosen:?}: {status}");

    let err = runlog_engine::python::user_python::base_for(Path::new("runlog-no-python"), &nobody)
        .await
        .unwrap_err();
    assert!(
        err.starts_with("no runlog-no-python on PATH can be run by the step user \"nobody\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_venv_built_on_an_interpreter_the_step_user_cannot_reach_is_named_not_used_as_root() {
    if !is_root() {
        eprintln!("skipped: a step user needs a root test run");
        return;
    }
    // A complete venv as an engine without a step user leaves it when its `python3` is
    // pyenv's under `/root`: `bin/python` links into a directory of mode 0700.
    let (private, python) = unreachable_python();
    let shared = tempfile::tempdir().unwrap();
    let venv = shared.path().join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::os::unix::fs::symlink(&python, venv.join("bin/python")).unwrap();
    let home = format!("home = {}\n", private.path().display());
    std::fs::write(venv.join("pyvenv.cfg"), home).unwrap();
    std::fs::write(venv.join(".runlog-ready"), "").unwrap();

    let engine = TestEngine::start_with_functions(|fcfg| fcfg.python.venv_dir = venv.clone()).await;
    let expected = format!(
        "the step user \"nobody\", who runs function workers, cannot use the virtualenv {} \
         (base interpreter {}): Permission denied (os error 13); remove that directory \
         to have it rebuilt",
        venv.display(),
        private.path().display()
    );
    assert_functions_refused(&engine, &expected).await;
}
