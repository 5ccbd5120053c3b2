#![allow(clippy::unwrap_used)]
//! A step that fills the file system of the engine's data directory: the engine's
//! own spools go on in the space it held back (`livelog::reserve`), so the next step
//! loses no line and its writer meets no error. Needs a small file system of its
//! own: a tmpfs, mounted when the test may (root); otherwise the test says so and
//! checks nothing.

mod engine_support;

use engine_support::TestEngine;
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const ACCOUNT: &str = "acc";

/// A tmpfs of its own, unmounted when dropped (lazily: a process may still hold it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("not run: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn report_of<'a>(destroy: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    destroy["streams"]
        .as_array()
        .expect("stream reports")
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no report for {key}: {destroy}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_step_fills_the_disk_the_next_step_loses_no_line_and_its_writer_no_error() {
    let Some(disk) = Tmpfs::mount("24m") else {
        return;
    };
    let data: PathBuf = disk.path().join("engine");
    let svc = TestService::start().await;
    let engine = TestEngine::start_with(|c| {
        c.data_dir = data.clone();
        c.spool_reserve_bytes = 4 << 20;
    })
    .await;
    let setup = json!({"log_config": svc.log_config(ACCOUNT), "le_log_key": "disk/engine"});
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    assert!(livelog::reserve::is_held(&data.join("spool")));
    let fill = json!({"id": "fill", "log_key": "disk/fill",
        "script": "dd if=/dev/zero of=fill bs=64k 2>/dev/null; echo filled"});
    let (status, answer) = engine.post("/step", fill).await;
    assert_eq!(status, 200, "{answer}");
    // The disk was full: the first writer that met it (the filling step's own, or
    // the engine log) gave the reserve back, and about that much is free now.
    let free = nix::sys::statvfs::statvfs(disk.path()).unwrap();
    let free = free.blocks_available() * free.fragment_size();
    assert!(
        free <= 5 << 20 && !livelog::reserve::is_held(&data.join("spool")),
        "the step did not fill the file system: {free} bytes free"
    );
    let after = json!({"id": "after", "log_key": "disk/after",
        "script": "i=0; while [ $i -lt 2000 ]; do echo \"after the fill, line $i\"; i=$((i+1)); done"});
    let (status, answer) = engine.post("/step", after).await;
    assert_eq!((status, &answer["exit_code"]), (200, &json!(0)), "{answer}");
    let (status, destroy) = engine.post("/destroy", json!({})).await;
    assert_eq!(status, 200, "{destroy}");
    for key in ["disk/after", "disk/engine"] {
        let r = report_of(&destroy, key);
        assert_eq!(
            (&r["dropped_lines"], &r["archived"], r.get("error")),
            (&json!(0), &json!(true), None),
            "{key}: {r}"
        );
    }
    let reader = svc.token(ACCOUNT, Scope::Read);
    let lines = engine_support::archive(&svc.url(), &reader, ACCOUNT, "disk/after")
        .await
        .expect("the step's archive");
    let want: Vec<String> = (0..2000)
        .map(|i| format!("after the fill, line {i}\n"))
        .collect();
    assert_eq!(
        lines.iter().map(|l| l.out.clone()).collect::<Vec<_>>(),
        want
    );
    // The workspace that filled the disk is gone: the next stage holds its reserve again.
    let setup = json!({"log_config": {"url": svc.url(), "account_id": ACCOUNT,
        "token": svc.token(ACCOUNT, Scope::Write)}});
    assert_eq!(engine.post("/setup", setup).await.0, 200);
    assert!(livelog::reserve::is_held(&data.join("spool")));
    assert_eq!(engine.post("/destroy", json!({})).await.0, 200);
    engine.shutdown().await;
    svc.shutdown().await;
}
