//! Helpers for livelog's integration tests: read a stream live (SSE) and its archive
//! straight from the real log service.
#![allow(dead_code, clippy::unwrap_used)]

use futures_util::StreamExt;
use livelog::{HttpLogClient, LogClient, WriterConfig};
use runlog_protocol::LogLine;
use runlog_protocol::engine::LogConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The account every test writes to.
pub const ACCOUNT: &str = "acc";

/// A log_config for `url` with `token`.
pub fn log_config(url: &str, token: &str) -> LogConfig {
    LogConfig {
        url: url.to_owned(),
        account_id: ACCOUNT.to_owned(),
        token: token.to_owned(),
        indirect_upload: true,
        ..LogConfig::default()
    }
}

/// An HTTP client of the service at `url`, writing for [`ACCOUNT`] with `token`.
pub fn client(url: &str, token: &str) -> Arc<dyn LogClient> {
    Arc::new(HttpLogClient::new(&log_config(url, token)).expect("an HTTP log client"))
}

/// A writer config for `key` spooling into `spool`, with a close deadline long
/// enough for a loaded test machine.
pub fn config(key: &str, spool: &Path) -> WriterConfig {
    WriterConfig {
        spool_dir: spool.to_path_buf(),
        close_deadline: Duration::from_secs(60),
        ..WriterConfig::new(key)
    }
}

fn url(base: &str, path: &str, key: &str) -> String {
    format!("{base}/{path}?accountID={ACCOUNT}&key={key}")
}

/// Opens the stream directly on the service (so a tail can start before the writer).
pub async fn open_stream(base: &str, token: &str, key: &str) {
    let r = reqwest::Client::new()
        .post(url(base, "stream", key))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "open failed: {}", r.status());
}

/// Reads the SSE tail from the start until the `eof` event (or `limit` passes).
pub async fn tail_until_eof(base: &str, token: &str, key: &str, limit: Duration) -> Vec<LogLine> {
    let resp = reqwest::Client::new()
        .get(url(base, "stream", key))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "tail failed: {}", resp.status());
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(_) => return lines,
            Err(_) => panic!("no eof within {limit:?}; got {} lines", lines.len()),
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let event = String::from_utf8(event).unwrap();
            if event.lines().any(|l| l == "event: eof") {
                return lines;
            }
            for l in event.lines() {
                if let Some(data) = l.strip_prefix("data: ") {
                    lines.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    }
}

/// Collects SSE lines until `n` arrived (or `limit` passes); does not need an eof.
pub async fn tail_n(base: &str, token: &str, key: &str, n: usize, limit: Duration) -> Vec<LogLine> {
    let resp = reqwest::Client::new()
        .get(url(base, "stream", key))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while lines.len() < n {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await else {
            return lines;
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            for l in String::from_utf8(event).unwrap().lines() {
                if let Some(data) = l.strip_prefix("data: ")
                    && let Ok(line) = serde_json::from_str::<LogLine>(data)
                {
                    lines.push(line);
                }
            }
        }
    }
    lines
}

/// The archive as lines, or `None` when there is none (404).
pub async fn fetch_archive(base: &str, token: &str, key: &str) -> Option<Vec<LogLine>> {
    let resp = reqwest::Client::new()
        .get(url(base, "blob", key))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(
        resp.status().is_success(),
        "archive download failed: {}",
        resp.status()
    );
    let body = resp.bytes().await.unwrap();
    Some(
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect(),
    )
}

/// Asserts `lines` are exactly pos 0..n, once each, in order, with the expected texts.
pub fn assert_exactly_once_in_order(
    what: &str,
    lines: &[LogLine],
    n: u64,
    text: impl Fn(u64) -> String,
) {
    assert_eq!(
        lines.len() as u64,
        n,
        "{what}: wrong number of lines (first pos {:?}, last pos {:?})",
        lines.first().map(|l| l.pos),
        lines.last().map(|l| l.pos)
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.pos, i as u64, "{what}: line {i} has pos {}", l.pos);
        assert_eq!(l.out, text(i as u64), "{what}: line {i} has the wrong text");
    }
}

/// Waits, checking every 20 ms, until `done` holds; fails the test after `limit`.
/// For conditions that no event announces (a background task's progress, a file).
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream's archive once the service has one (an outbox or a dropped writer
/// uploads it in the background); fails the test after `limit`.
pub async fn archive_within(base: &str, token: &str, key: &str, limit: Duration) -> Vec<LogLine> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(archive) = fetch_archive(base, token, key).await {
            return archive;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no archive of {key} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that counts the archive uploads it sends; with `archive_once` off it
/// never asks the service to build the archive (as a client of a Harness service),
/// so every close uploads.
pub struct CountingUploads {
    inner: Arc<dyn LogClient>,
    archive_once: bool,
    /// Uploads sent (`POST /blob` or a signed link's `PUT`).
    pub uploads: Arc<std::sync::atomic::AtomicU64>,
}

impl CountingUploads {
    pub fn new(inner: Arc<dyn LogClient>, archive_once: bool) -> Self {
        CountingUploads {
            inner,
            archive_once,
            uploads: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl LogClient for CountingUploads {
    async fn open(&self, key: &str) -> Result<(), livelog::ClientError> {
        self.inner.open(key).await
    }
    async fn write(
        &self,
        key: &str,
        batch: &livelog::Batch,
    ) -> Result<runlog_protocol::service::AppendAck, livelog::ClientError> {
        self.inner.write(key, batch).await
    }
    async fn write_opened(
        &self,
        key: &str,
        batch: &livelog::Batch,
    ) -> Result<runlog_protocol::service::AppendAck, livelog::ClientError> {
        self.inner.write_opened(key, batch).await
    }
    async fn close(&self, key: &str, snapshot: bool) -> Result<(), livelog::ClientError> {
        self.inner.close(key, snapshot).await
    }
    async fn close_archiving(
        &self,
        key: &str,
        totals: &runlog_protocol::ledger::WriterTotals,
    ) -> Result<livelog::Closing, livelog::ClientError> {
        if !self.archive_once {
            return Ok(livelog::Closing::NotAsked);
        }
        self.inner.close_archiving(key, totals).await
    }
    async fn upload_blob(&self, key: &str, ndjson: &Path) -> Result<(), livelog::ClientError> {
        self.uploads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.upload_blob(key, ndjson).await
    }
    async fn upload_link(&self, key: &str, ndjson: &Path) -> Result<(), livelog::ClientError> {
        self.uploads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.upload_link(key, ndjson).await
    }
    fn outbox_config(&self) -> Option<LogConfig> {
        self.inner.outbox_config()
    }
}
