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

/// A root engine's steps see their stage's own directory at `/tmp` and `/var/tmp`:
/// what one stage's step writes there (rather than to `$TMPDIR`) its later steps
/// read, the machine's `/tmp` never holds, and the next stage's steps — the same
/// user — never find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_engine_s_steps_see_their_stage_s_own_tmp_and_the_next_stage_finds_nothing() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: the engine runs as root only in a root test run");
        return;
    }
    if let Err(e) = runlog_engine::private_tmp::probe() {
        eprintln!("skipped: no mount namespace here ({e})");
        return;
    }
    // The data directory outside `/tmp`: one under it would be hidden by the
    // stage's own, which the engine then does not mount.
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    if let Some(why) = unusable_for_the_step_user(data.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let svc = TestService::start().await;
    let engine = TestEngine::start_with(|c| c.data_dir = data.path().to_path_buf()).await;
    assert!(engine.state.private_tmp());
    let name = format!("runlog-left-by-stage-one-{}", std::process::id());
    let setup = json!({"log_config": svc.log_config(ACCOUNT)});
    let step = |id: &str, script: String| json!({"id": id, "script": script});
    let check = |what: &str, test: &str| {
        format!(
            r#"if {test}; then echo "{what}=yes" >> "$RUNLOG_OUTPUT"; else echo "{what}=no" >> "$RUNLOG_OUTPUT"; fi"#
        )
    };

    assert_eq!(engine.post("/setup", setup.clone()).await.0, 200);
    let leave = [
        format!("echo STAGE-ONE > /tmp/{name} && echo STAGE-ONE > /var/tmp/{name}"),
        check(
            "tmp_is_tmpdir",
            r#"[ "$(stat -c %d:%i /tmp)" = "$(stat -c %d:%i "$TMPDIR")" ]"#,
        ),
        check(
            "var_tmp_is_tmpdir",
            r#"[ "$(stat -c %d:%i /var/tmp)" = "$(stat -c %d:%i "$TMPDIR")" ]"#,
        ),
    ]
    .join("\n");
    let (status, body) = engine.post("/step", step("leave", leave)).await;
    assert_eq!((status, &body["exit_code"]), (200, &json!(0)), "{body}");
    assert_eq!(body["outputs"]["tmp_is_tmpdir"], "yes", "{body}");
    assert_eq!(body["outputs"]["var_tmp_is_tmpdir"], "yes", "{body}");
    for dir in ["/tmp", "/var/tmp"] {
        let on_machine = std::path::Path::new(dir).join(&name);
        assert!(
            !on_machine.exists(),
            "{} reached the machine",
            on_machine.display()
        );
    }
    // Nothing of the step's mounts is left in the engine's view of the machine.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(".runlog/tmp"), "{mounts}");

    let (_, later) = engine
        .post(
            "/step",
            step(
                "later",
                check("found", &format!("grep -q STAGE-ONE /tmp/{name}")),
            ),
        )
        .await;
    assert_eq!(
        later["outputs"]["found"], "yes",
        "a later step of the stage reads it: {later}"
    );
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);

    assert_eq!(engine.post("/setup", setup).await.0, 200);
    let look = [
        check("in_tmp", &format!("[ -e /tmp/{name} ]")),
        check("in_var_tmp", &format!("[ -e /var/tmp/{name} ]")),
        check(
            "tmp_writable",
            r#"echo x > /tmp/mine && [ -s "$TMPDIR/mine" ]"#,
        ),
    ]
    .join("\n");
    let (_, next) = engine.post("/step", step("next", look)).await;
    assert_eq!(next["outputs"]["in_tmp"], "no", "{next}");
    assert_eq!(next["outputs"]["in_var_tmp"], "no", "{next}");
    assert_eq!(next["outputs"]["tmp_writable"], "yes", "{next}");
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    engine.shutdown().await;
    svc.shutdown().await;
}

/// Why the step user could not work in a data directory at `dir`, for this test:
/// under `/tmp` (the checkout is there), or behind a directory others may not pass.
fn unusable_for_the_step_user(dir: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    if runlog_engine::private_tmp::TARGETS
        .iter()
        .any(|t| dir.starts_with(t))
    {
        return Some(format!("{} lies under /tmp", dir.display()));
    }
    dir.ancestors().skip(1).find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| format!("{} is not passable by others", a.display()))
    })
}

/// With `--shared-tmp`, or host paths allowed (a machine made for one stage, whose
/// runner may put the steps' working directory in `/tmp`), steps write the
/// machine's `/tmp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tmp_and_host_paths_keep_the_machine_s_tmp() {
    let svc = TestService::start().await;
    let setup = json!({"log_config": svc.log_config(ACCOUNT)});
    type Tweak = fn(&mut runlog_engine::EngineConfig);
    let tweaks: [(&str, Tweak); 2] = [
        ("shared", |c| c.private_tmp = false),
        ("host-paths", |c| c.allow_host_paths = true),
    ];
    for (case, tweak) in tweaks {
        // Where the other test runs, so that this one shows the difference (when the
        // step user can work there).
        let outside = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let data = match unusable_for_the_step_user(outside.path()) {
            None => outside,
            Some(_) => tempfile::tempdir().unwrap(),
        };
        let engine = TestEngine::start_with(|c| {
            c.data_dir = data.path().to_path_buf();
            tweak(c);
        })
        .await;
        assert!(!engine.state.private_tmp(), "{case}");
        let name = format!("runlog-shared-tmp-{case}-{}", std::process::id());
        let on_machine = std::path::Path::new("/tmp").join(&name);
        assert_eq!(engine.post("/setup", setup.clone()).await.0, 200);
        let script = format!("echo SHARED > /tmp/{name}");
        let (_, body) = engine
            .post("/step", json!({"id": "write", "script": script}))
            .await;
        assert_eq!(body["exit_code"], 0, "{case}: {body}");
        let written = std::fs::read_to_string(&on_machine);
        let _ = std::fs::remove_file(&on_machine);
        assert_eq!(written.unwrap_or_default(), "SHARED\n", "{case}");
        assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
        engine.shutdown().await;
    }
    svc.shutdown().await;
}
