//! A real headless Chromium for viewer tests, driven over WebDriver (chromedriver).
//!
//! A small WebDriver client over `reqwest` JSON: the few commands the tests need
//! (navigate, run a script, type, screenshot) do not justify a WebDriver crate and
//! its dependency tree. Chromium and chromedriver are found through
//! `RUNLOG_TEST_CHROMIUM` / `RUNLOG_TEST_CHROMEDRIVER`, else on `PATH`; a missing one
//! fails the test with a message saying what to install, never a silent pass.
//!
//! ```no_run
//! # async fn t() {
//! use runlog_testkit::browser::Browser;
//! let browser = Browser::start().await;
//! browser.goto("http://127.0.0.1:8079/").await;
//! browser.wait_for("the list", "return document.querySelector('table') !== null").await;
//! browser.screenshot("list").await;
//! browser.quit().await;
//! # }
//! ```

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long [`Browser::wait_for`] polls by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium session. Dropping it kills chromedriver (and its browser).
pub struct Browser {
    http: reqwest::Client,
    driver_url: String,
    session: String,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Finds a tool by its env var, else on `PATH`; panics with what to install.
pub fn find_tool(env_var: &str, names: &[&str], package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "{env_var}={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{names:?} not found: set {env_var} or install it (apt-get install -y {package}); scripts/test does this"
    );
}

/// Where tests save screenshots: `RUNLOG_TEST_ARTIFACTS`, else a temp directory.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("RUNLOG_TEST_ARTIFACTS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("runlog-test-artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Reads chromedriver's output until it says which port it bound (it was started
/// with `--port=0`, so the kernel chose a free one and no other process can take it
/// first).
///
/// # Panics
/// When chromedriver exits or does not say so within a minute.
async fn driver_port(stdout: tokio::process::ChildStdout) -> u16 {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            // "ChromeDriver was started successfully on port 41234."
            if let Some(rest) = line.split("successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().parse().ok();
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        None
    })
    .await;
    let port = found
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("chromedriver did not report its port; it said:\n{seen}"));
    // Drain the rest, so chromedriver never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    port
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a fresh headless Chromium.
    pub async fn start() -> Browser {
        Self::start_sized(1280, 800).await
    }

    /// Like [`Browser::start`] with a given window size.
    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let chromium = find_tool(
            "RUNLOG_TEST_CHROMIUM",
            &["chromium", "chromium-browser"],
            "chromium",
        );
        let chromedriver = find_tool(
            "RUNLOG_TEST_CHROMEDRIVER",
            &["chromedriver"],
            "chromium-driver",
        );
        let profile = tempfile::tempdir().expect("a temp browser profile");
        // Talking to loopback only: never route through a proxy from the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("http client");
        let mut driver = tokio::process::Command::new(&chromedriver)
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let port = driver_port(driver.stdout.take().expect("chromedriver's stdout")).await;
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &driver_url).await;
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-proxy-server".to_owned(),
            "--enable-precise-memory-info".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let resp = http
            .post(format!("{driver_url}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers POST /session");
        let body: Value = resp.json().await.expect("session answer is JSON");
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start chromium: {body}"))
            .to_owned();
        Browser {
            http,
            driver_url,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let status = resp.status();
        let answer: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path} answer: {e}"));
        assert!(
            status.is_success(),
            "webdriver {path} failed ({status}): {answer}"
        );
        answer["value"].clone()
    }

    /// Loads `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body: use `return`) with `arguments`, returns its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an asynchronous `script`: it receives a callback as its last argument
    /// and must call it with the result. Waits up to `limit`.
    pub async fn eval_async(&self, script: &str, limit: Duration) -> Value {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.command(
            reqwest::Method::POST,
            "/timeouts",
            Some(json!({ "script": ms })),
        )
        .await;
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` until it returns something truthy (not `null`, `false`, `0`,
    /// `""`), and returns that; panics after [`DEFAULT_WAIT`] saying `what` was awaited.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        self.wait_for_within(what, script, DEFAULT_WAIT).await
    }

    /// [`Browser::wait_for`] with a chosen deadline.
    pub async fn wait_for_within(&self, what: &str, script: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(script, vec![]).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let body = self
                    .eval(
                        "return document.body ? document.body.innerText.slice(0, 2000) : ''",
                        vec![],
                    )
                    .await;
                let shot = self.screenshot(&format!("timeout-{}", slug(what))).await;
                panic!(
                    "timed out after {limit:?} waiting for {what}; last value {v}; page text: {body}; screenshot {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the element matching `css` (WebDriver key codes allowed,
    /// e.g. `"\u{E007}"` for Enter).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {el}"))
            .to_owned();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Console messages of level SEVERE (uncaught exceptions, failed loads, CSP
    /// violations) since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG screenshot as `<artifacts>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = decode_base64(b64.as_str().unwrap_or_default());
        let path = artifacts_dir().join(format!("{}.png", slug(name)));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.driver_url, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}

async fn wait_ready(http: &reqwest::Client, driver_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http.get(format!("{driver_url}/status")).send().await
            && let Ok(v) = resp.json::<Value>().await
            && v["value"]["ready"] == Value::Bool(true)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready at {driver_url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}

/// Standard base64 (WebDriver screenshots); ignores padding and whitespace.
fn decode_base64(s: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s.trim())
        .expect("webdriver screenshots are base64")
}

/// The artifacts path of a screenshot called `name` (for messages).
pub fn screenshot_path(name: &str) -> PathBuf {
    artifacts_dir().join(format!("{}.png", slug(name)))
}
