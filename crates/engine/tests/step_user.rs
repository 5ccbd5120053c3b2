#![allow(clippy::unwrap_used)]
//! A root engine runs steps as an unprivileged user: a hostile step can read none of
//! the engine's credentials and write nothing of the engine's, and ordinary steps
//! still work in their workspace.

mod engine_support;

use engine_support::{PlantedCredentials, TestEngine};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::os::unix::fs::MetadataExt as _;

const ACCOUNT: &str = "acc-step-user";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_step_reaches_no_credential_of_a_root_engine() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: the engine runs as root only in a root test run");
        return;
    }
    let svc = TestService::start().await;
    let engine = TestEngine::start().await;
    let user = engine
        .state
        .config()
        .step_user
        .clone()
        .expect("a root engine has a step user by default");
    assert_eq!(user.name, "nobody");
    let cfg = engine.state.config().clone();
    let data = cfg.data_dir.clone();

    // What a stage before this one, and `runlog serve`, leave in the data directory.
    let entry = PlantedCredentials::plant(&cfg).outbox_entry;

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
                "files": [{"path": "run/hello.sh", "data": "echo hello > made-by-step\n", "mode": 493}],
            }),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({})));
    // The engine stream's spool file is open now: another stage's history would be
    // in a file like it.
    let spool_file = engine_support::a_spool_file(&cfg);

    let script = r#"
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=done" >> "$RUNLOG_OUTPUT"; else echo "$1=refused" >> "$RUNLOG_OUTPUT"; fi; }
try admin_secret 'cat "$DATA/admin-secret"'
try outbox_entry 'cat "$ENTRY"'
try outbox_list 'ls "$DATA/outbox"'
try spool_file 'cat "$SPOOL_FILE"'
try spool_list 'ls "$DATA/spool"'
try engine_environ 'cat /proc/$ENGINE_PID/environ'
try data_list 'ls "$DATA"'
try write_data 'touch "$DATA/planted"'
try write_stages 'touch "$DATA/stages/planted"'
try write_workspace 'sh run/hello.sh && test -s made-by-step'
echo "uid=$(id -u) groups=$(id -G)" > whoami
echo "WHO=$(cat whoami)" >> "$RUNLOG_OUTPUT"
echo "HOME_SET=$HOME" >> "$RUNLOG_OUTPUT"
"#;
    let (status, body) = engine
        .post(
            "/step",
            json!({
                "id": "hostile",
                "script": script,
                "envs": {
                    "DATA": data.display().to_string(),
                    "ENTRY": entry.display().to_string(),
                    "SPOOL_FILE": spool_file.display().to_string(),
                    "ENGINE_PID": std::process::id().to_string(),
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");
    let out = &body["outputs"];
    let also = ["write_stages"];
    for refused in engine_support::REFUSED_TO_THE_STEP_USER.iter().chain(&also) {
        assert_eq!(out[*refused], "refused", "{refused}: {out}");
    }
    assert_eq!(out["write_workspace"], "done", "{out}");
    let nobody = format!("uid={} groups={}", user.uid, user.gid);
    assert_eq!(
        out["WHO"],
        nobody.as_str(),
        "no supplementary group is kept"
    );
    assert!(!data.join("planted").exists());

    // The workspace and what the step made there are the step user's; the engine's
    // own directories are not.
    let workspace = std::fs::read_dir(cfg.stages_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.display().to_string().ends_with(".runlog"))
        .unwrap();
    assert_eq!(out["HOME_SET"], workspace.display().to_string().as_str());
    let made = std::fs::metadata(workspace.join("made-by-step")).unwrap();
    assert_eq!((made.uid(), made.gid()), (user.uid, user.gid));
    assert_eq!(std::fs::metadata(cfg.spool_dir()).unwrap().uid(), 0);
    let (status, body) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{body}");
}
