//! Starts a real engine on a free loopback port, and reads archives back from a real
//! log service.
#![allow(dead_code)]

use runlog_engine::{EngineConfig, EngineState};
use runlog_protocol::LogLine;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;

/// An engine running in this process on `127.0.0.1:<random port>`.
pub struct TestEngine {
    pub addr: SocketAddr,
    pub state: EngineState,
    pub dir: tempfile::TempDir,
    /// A directory steps and the test both write (mode 1777, as `/tmp`): a root engine
    /// runs steps as another user, who may not write the engine's data directory.
    pub scratch: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Short deadlines so fault tests finish quickly.
pub fn test_config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        close_deadline: Duration::from_secs(3),
        destroy_deadline: Duration::from_secs(10),
        kill_grace: Duration::from_millis(500),
        drain_grace: Duration::from_secs(1),
        ..EngineConfig::default()
    }
}

impl TestEngine {
    pub async fn start() -> TestEngine {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut EngineConfig)) -> TestEngine {
        Self::launch(tweak, |_| {}).await
    }

    /// With the function runtime's settings (`/setup` installs through it and
    /// `/execute` serves it) passed through `tune`.
    pub async fn start_with_functions(
        tune: impl FnOnce(&mut runlog_engine::function::FunctionsConfig),
    ) -> TestEngine {
        Self::launch(|_| {}, tune).await
    }

    /// With both the engine's settings (`tweak`) and the function runtime's (`tune`).
    pub async fn launch(
        tweak: impl FnOnce(&mut EngineConfig),
        tune: impl FnOnce(&mut runlog_engine::function::FunctionsConfig),
    ) -> TestEngine {
        runlog_capture::init(runlog_capture::InitOptions::default());
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let listener = runlog_engine::bind(&config)
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = EngineState::with_functions(config, tune);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runlog_engine::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let scratch = tempfile::tempdir().expect("temp dir");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::Permissions::from_mode(0o1777);
            std::fs::set_permissions(scratch.path(), mode).expect("scratch mode");
        }
        TestEngine {
            addr,
            state,
            dir,
            scratch,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `path` on this engine, `https` when it serves TLS.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.state.config().scheme(), self.addr)
    }

    /// POSTs JSON; returns status and parsed body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("engine answers");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("JSON answer");
        (status, body)
    }

    /// GETs `path`; returns the parsed JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .expect("engine answers")
            .json()
            .await
            .expect("JSON answer")
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("engine stops")
                .expect("engine task")
                .expect("engine serve");
        }
    }
}

/// `GET /<route>?accountID=…&key=…` on the service.
async fn get_stream_route(
    service_url: &str,
    route: &str,
    token: &str,
    account: &str,
    key: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{service_url}/{route}"))
        .query(&[("accountID", account), ("key", key)])
        .bearer_auth(token)
        .send()
        .await
        .expect("service answers")
}

/// The archive of `key`, one line per row, in `pos` order as stored.
pub async fn archive(
    service_url: &str,
    token: &str,
    account: &str,
    key: &str,
) -> Option<Vec<LogLine>> {
    let resp = get_stream_route(service_url, "blob", token, account, key).await;
    if !resp.status().is_success() {
        return None;
    }
    let text = resp.text().await.expect("archive body");
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("archive row is a log line"))
            .collect(),
    )
}

/// Every line of the live stream of `key` (closed: the tail ends with `eof`), read
/// over SSE from the start.
pub async fn live_lines(service_url: &str, token: &str, account: &str, key: &str) -> Vec<LogLine> {
    let resp = get_stream_route(service_url, "stream", token, account, key).await;
    assert!(resp.status().is_success(), "tail: {}", resp.status());
    let body = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("the tail of a closed stream ends")
        .expect("tail body");
    assert!(body.contains("event: eof"), "no eof in:\n{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Panics unless each of `needles` is found in `text` after the one before it.
pub fn assert_in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        let found = text[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after byte {at} in:\n{text}"));
        at += found + needle.len();
    }
}

/// Polls `check` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Credentials planted in an engine's data directory, as an earlier stage and
/// `runlog serve` leave them there: the service's admin secret and an outbox entry
/// holding a write token, each a 0600 file (the outbox entry's directory 0700).
pub struct PlantedCredentials {
    /// `<data>/admin-secret`.
    pub admin_secret: std::path::PathBuf,
    /// `<data>/outbox/earlier-stage/entry.json`.
    pub outbox_entry: std::path::PathBuf,
}

impl PlantedCredentials {
    /// Plants them into `config`'s data directory.
    pub fn plant(config: &EngineConfig) -> PlantedCredentials {
        let admin_secret = config.data_dir.join("admin-secret");
        private_file(&admin_secret, "admin-secret-7d1");
        let entry_dir = config.outbox_dir().join("earlier-stage");
        livelog::spool::create_private_dir(&entry_dir).expect("outbox entry directory");
        let outbox_entry = entry_dir.join("entry.json");
        private_file(&outbox_entry, r#"{"token":"write-token-of-another-stage"}"#);
        PlantedCredentials {
            admin_secret,
            outbox_entry,
        }
    }
}

/// Writes `text` into a new file of mode 0600, as the service writes its admin secret
/// and livelog its outbox entries.
fn private_file(path: &std::path::Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("a new private file");
    f.write_all(text.as_bytes()).expect("written");
}

/// A spool file of `config`'s engine (one a stage's engine log holds open after
/// `/setup`): another stage's history would be in a file like it.
pub fn a_spool_file(config: &EngineConfig) -> std::path::PathBuf {
    std::fs::read_dir(config.spool_dir())
        .expect("the spool directory")
        .next()
        .expect("a spool file")
        .expect("a directory entry")
        .path()
}

/// What a root engine's step user may not do, by the names the hostile step and the
/// hostile function report them under: read the planted credentials, list the outbox
/// and spool directory, read a spool file or the engine's `/proc/<pid>/environ`, list
/// or write the data directory.
pub const REFUSED_TO_THE_STEP_USER: &[&str] = &[
    "admin_secret",
    "outbox_entry",
    "outbox_list",
    "spool_file",
    "spool_list",
    "engine_environ",
    "data_list",
    "write_data",
];
