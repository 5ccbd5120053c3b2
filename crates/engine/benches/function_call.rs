//! Latency of `POST /execute` through the real engine server on loopback.
//!
//! Reports p50/p99 of a warm call of a trivial function (virtualenv ready, worker pool
//! warm), the same call through RunPod's job API (`POST /runsync`, and `POST /v2/…/run`
//! then `GET …/status/{id}` until it completes — `status` holds its answer until the job
//! ends), the first (cold) call of a fresh engine on an existing virtualenv, and two
//! baselines measured in the same run: `GET /healthz` (the HTTP floor) and starting a
//! fresh `python -c` per call (what a worker pool saves).
//!
//! `cargo bench -p runlog-engine --bench function_call` (uses `RUNLOG_TEST_PYTHON`, else
//! `python3`; the virtualenv is kept under the target dir between runs).
#![allow(clippy::unwrap_used, missing_docs)]

use runlog_engine::python::PythonConfig;
use runlog_engine::{EngineConfig, EngineState};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WARM_CALLS: usize = 2000;
const SPAWN_CALLS: usize = 30;

fn python() -> PathBuf {
    std::env::var_os("RUNLOG_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn venv_dir() -> PathBuf {
    // Next to the test suite's virtualenv, so a machine builds each once.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp/runlog-function-bench")
}

struct Engine {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start_engine() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        ..EngineConfig::default()
    };
    let state = EngineState::with_functions(config.clone(), |fcfg| {
        fcfg.python = PythonConfig {
            base_python: python(),
            ..PythonConfig::new(venv_dir())
        };
    });
    let listener = runlog_engine::bind(&config).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runlog_engine::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Engine {
        url,
        stop,
        _dir: dir,
    }
}

fn body() -> String {
    json!({
        "function_name": "add",
        "function_code": "def add(a, b):\n    return a + b",
        "args": [1, 2],
        "serialization": "json",
    })
    .to_string()
}

async fn execute(http: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/execute"))
        .header("content-type", "application/json")
        .body(body())
        .send()
        .await
        .unwrap();
    let value: serde_json::Value = resp.json().await.unwrap();
    let took = started.elapsed();
    assert_eq!(value["json_result"], json!(3), "{value}");
    took
}

fn envelope() -> String {
    format!(r#"{{"input":{}}}"#, body())
}

async fn runsync(http: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/runsync"))
        .header("content-type", "application/json")
        .body(envelope())
        .send()
        .await
        .unwrap();
    let value: serde_json::Value = resp.json().await.unwrap();
    let took = started.elapsed();
    assert_eq!(value["output"]["json_result"], json!(3), "{value}");
    took
}

/// `run`, then `status` until the job completes: the SDKs' default path (they pause
/// between polls; this does not, to measure the engine rather than a poll interval).
/// The engine holds `status` until the job ends, so one poll is the usual case.
async fn run_and_poll(http: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/v2/bench/run"))
        .header("content-type", "application/json")
        .body(envelope())
        .send()
        .await
        .unwrap();
    let accepted: serde_json::Value = resp.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    loop {
        let rec: serde_json::Value = http
            .get(format!("{url}/v2/bench/status/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if rec["status"] == "COMPLETED" {
            assert_eq!(rec["output"]["json_result"], json!(3), "{rec}");
            return started.elapsed();
        }
        assert!(
            matches!(rec["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")),
            "{rec}"
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<34} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(*samples.last().unwrap())
    );
    (p50, p99)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful.
    // Either way the measurement runs once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        // Make sure the virtualenv exists before anything is timed.
        let prep = start_engine().await;
        execute(&http, &prep.url).await;
        let _ = prep.stop.send(());

        // Cold: a fresh engine (worker pool empty) on the existing virtualenv.
        let mut cold = Vec::new();
        for _ in 0..5 {
            let engine = start_engine().await;
            cold.push(execute(&http, &engine.url).await);
            let _ = engine.stop.send(());
        }

        let engine = start_engine().await;
        for _ in 0..50 {
            execute(&http, &engine.url).await;
        }
        let mut health = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            let started = Instant::now();
            let r = http.get(format!("{}/healthz", engine.url)).send().await.unwrap();
            let _ = r.bytes().await.unwrap();
            health.push(started.elapsed());
        }
        let mut warm = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            warm.push(execute(&http, &engine.url).await);
        }
        let mut via_runsync = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            via_runsync.push(runsync(&http, &engine.url).await);
        }
        let mut via_run = Vec::with_capacity(WARM_CALLS);
        for _ in 0..WARM_CALLS {
            via_run.push(run_and_poll(&http, &engine.url).await);
        }
        let venv_python = venv_dir().join("python").join("venv").join("bin").join("python");
        let mut spawn = Vec::with_capacity(SPAWN_CALLS);
        for _ in 0..SPAWN_CALLS {
            let started = Instant::now();
            let out = tokio::process::Command::new(&venv_python)
                .args(["-c", "import cloudpickle, json\ndef add(a, b):\n    return a + b\nprint(json.dumps(add(1, 2)))"])
                .output()
                .await
                .unwrap();
            assert!(out.status.success());
            spawn.push(started.elapsed());
        }
        let _ = engine.stop.send(());

        println!("function_call: POST /execute of a trivial function, sequential, loopback");
        let (h50, _) = summary("baseline GET /healthz", health);
        let (s50, _) = summary("baseline fresh python per call", spawn);
        let (c50, _) = summary("cold first call (fresh engine)", cold);
        let (w50, w99) = summary("warm call", warm);
        println!(
            "warm p50 / healthz p50 = {:.1}x; fresh-python p50 / warm p50 = {:.1}x; cold p50 / warm p50 = {:.1}x",
            w50.as_secs_f64() / h50.as_secs_f64(),
            s50.as_secs_f64() / w50.as_secs_f64(),
            c50.as_secs_f64() / w50.as_secs_f64(),
        );
        let (r50, r99) = summary("warm call via POST /runsync", via_runsync);
        let (p50, p99) = summary("warm call via run + status polls", via_run);
        println!(
            "job API / execute: runsync p50 {:.2}x p99 {:.2}x; run+status p50 {:.2}x p99 {:.2}x",
            r50.as_secs_f64() / w50.as_secs_f64(),
            r99.as_secs_f64() / w99.as_secs_f64(),
            p50.as_secs_f64() / w50.as_secs_f64(),
            p99.as_secs_f64() / w99.as_secs_f64(),
        );
        let within = |a: Duration, b: Duration| a.as_secs_f64() <= 2.0 * b.as_secs_f64();
        println!(
            "targets: warm p50 <= 5 ms: {}; warm p99 <= 20 ms: {}; job API p50 within 2x of /execute: {}",
            if w50 <= Duration::from_millis(5) { "met" } else { "MISSED" },
            if w99 <= Duration::from_millis(20) { "met" } else { "MISSED" },
            if within(r50, w50) && within(p50, w50) { "met" } else { "MISSED" },
        );
    });
}
