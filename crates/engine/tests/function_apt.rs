//! `system_dependencies` on an engine that allows apt (`runlog engine --allow-apt`):
//! `apt-get update` once before the first install of the engine's life and again when
//! a package is not found, every apt line in the call's `stdout`. A stand-in
//! `apt-get` records its calls: the test must not change the machine it runs on.
#![allow(clippy::unwrap_used)]

#[path = "fixtures/support.rs"]
mod support;

#[path = "fixtures/function_engine.rs"]
mod function_engine;

use function_engine::{TestEngine, split_stdout};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A fake `apt-get` logging each call's arguments to `log`; `late-pkg` is "not found"
/// until the package lists were updated twice.
fn fake_apt_get(dir: &Path, log: &Path) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
log='{log}'
echo "$*" >> "$log"
case "$1" in
  update) echo "Reading package lists... Done"; exit 0 ;;
  install)
    shift 4
    for p in "$@"; do
      if [ "$p" = late-pkg ] && [ "$(grep -c '^update' "$log")" -lt 2 ]; then
        echo "E: Unable to locate package late-pkg" >&2; exit 100
      fi
      echo "Setting up $p"
    done
    exit 0 ;;
esac
exit 1
"#,
        log = log.display()
    );
    let path = dir.join("apt-get");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test]
async fn allowed_apt_updates_once_then_installs_and_again_when_a_package_is_missing() {
    if !is_root() {
        // apt-get runs as root only; the engine refuses before starting it otherwise.
        eprintln!("skipped: the engine installs with apt only as root");
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("calls");
    let apt = fake_apt_get(tools.path(), &log);
    let engine = TestEngine::start_with(None, |cfg, _| {
        cfg.python.allow_apt = true;
        cfg.python.apt_get = apt.clone();
    })
    .await;
    let call = |pkg: &str| {
        json!({
            "function_name": "f", "function_code": "def f(): return 'ran'",
            "system_dependencies": [pkg], "serialization_format": "json",
        })
    };

    let first = engine.execute(call("pkg-a")).await;
    assert_eq!(first.json_result, Some(json!("ran")), "{first:?}");
    let stdout = first.stdout.unwrap();
    let (system, _) = split_stdout(&stdout);
    for needle in [
        "apt-get | Reading package lists",
        "apt-get | Setting up pkg-a",
    ] {
        assert!(
            system.iter().any(|l| l.contains(needle)),
            "{needle}: {system:?}"
        );
    }
    assert_eq!(
        calls(&log),
        vec!["update", "install -y --no-install-recommends -- pkg-a"]
    );

    let second = engine.execute(call("pkg-b")).await;
    assert!(second.success, "{second:?}");
    assert_eq!(
        calls(&log)[2..],
        ["install -y --no-install-recommends -- pkg-b"],
        "the lists are updated once per engine"
    );

    let late = engine.execute(call("late-pkg")).await;
    assert!(late.success, "{late:?}");
    assert_eq!(
        calls(&log)[3..],
        [
            "install -y --no-install-recommends -- late-pkg",
            "update",
            "install -y --no-install-recommends -- late-pkg"
        ]
    );
}

#[tokio::test]
async fn apt_is_refused_with_its_cause_unless_allowed() {
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("calls");
    let apt = fake_apt_get(tools.path(), &log);
    let engine = TestEngine::start_with(None, |cfg, _| cfg.python.apt_get = apt.clone()).await;
    let resp = engine
        .execute(json!({
            "function_name": "f", "function_code": "def f(): pass",
            "system_dependencies": ["curl"],
        }))
        .await;
    assert!(!resp.success, "{resp:?}");
    let error = resp.error.unwrap();
    assert!(error.contains("does not allow apt"), "{error}");
    assert!(
        error.contains("--allow-apt"),
        "says how to allow it: {error}"
    );
    assert!(calls(&log).is_empty(), "apt-get ran: {:?}", calls(&log));
}
