//! Benchmark (ignored by the test suite; run by `bench/viewer.sh`): `runlog logs`
//! throughput on a 1 000 000-line archive against `curl` of the same archive in the
//! same run (the baseline: bytes off the socket, no parsing).
#![allow(clippy::unwrap_used)]

mod tail_common;

use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tail_common::ACCOUNT;

const LINES: u64 = 1_000_000;
const RUNS: usize = 3;

fn archive() -> Vec<u8> {
    let mut out = String::with_capacity(LINES as usize * 120);
    for pos in 0..LINES {
        let text = if pos % 50 == 0 {
            format!(
                "\\u001b[1;32m   Compiling\\u001b[0m crate-{} v0.{}.{}",
                pos % 997,
                pos % 13,
                pos % 7
            )
        } else {
            format!(
                "step {pos}: running test module_{}::case_{} ... ok",
                pos % 211,
                pos % 89
            )
        };
        let _ = writeln!(
            out,
            r#"{{"level":"info","pos":{pos},"out":"{text}\n","time":"2026-11-20T10:00:00.000Z"}}"#
        );
    }
    out.into_bytes()
}

/// Best wall time of `RUNS` runs of a command writing to /dev/null.
async fn best_of(make: impl Fn() -> tokio::process::Command) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let mut cmd = make();
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        let t0 = Instant::now();
        let status = cmd.status().await.unwrap();
        let took = t0.elapsed();
        assert!(status.success(), "{cmd:?} failed");
        best = best.min(took);
    }
    best
}

#[tokio::test]
#[ignore = "benchmark: run bench/viewer.sh"]
async fn logs_throughput_against_curl() {
    let svc = TestService::start().await;
    let write = svc.token(ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    let body = archive();
    let mb = body.len() as f64 / 1e6;
    let r = reqwest::Client::new()
        .post(format!("{}/blob?accountID={ACCOUNT}&key=big", svc.url()))
        .bearer_auth(&write)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let url = format!("{}/blob?accountID={ACCOUNT}&key=big", svc.url());
    let curl = best_of(|| {
        let mut c = tokio::process::Command::new("curl");
        c.args(["-sf", "--noproxy", "*", "-H"])
            .arg(format!("Authorization: Bearer {read}"))
            .arg(&url);
        c
    })
    .await;
    let json = best_of(|| tail_common::runlog(&svc.url(), &read, &["logs", "--json", "big"])).await;
    let text = best_of(|| tail_common::runlog(&svc.url(), &read, &["logs", "big"])).await;
    println!("runlog logs, {LINES} lines, {mb:.1} MB archive, best of {RUNS}");
    for (what, t) in [
        ("curl (baseline)", curl),
        ("runlog logs --json", json),
        ("runlog logs (text, colours stripped)", text),
    ] {
        println!(
            "  {what}: {:.0} ms, {:.0} MB/s, {:.2}x curl's time",
            t.as_secs_f64() * 1e3,
            mb / t.as_secs_f64(),
            t.as_secs_f64() / curl.as_secs_f64()
        );
    }
    svc.shutdown().await;
}
