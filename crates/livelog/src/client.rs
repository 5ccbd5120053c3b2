//! The log-service protocol: the [`LogClient`] trait and its HTTP implementation.
//!
//! Every call is one HTTP request; retrying is the caller's job (the writer retries
//! with backoff), so each error says whether a retry can help ([`ClientError::is_retryable`]).

use async_trait::async_trait;
use bytes::Bytes;
use runlog_protocol::engine::LogConfig;
use runlog_protocol::ledger::WriterTotals;
use runlog_protocol::service::{
    ACCEPT_ARCHIVE_ENCODING, ARCHIVE_IF_COMPLETE, ARCHIVE_PARAM, AppendAck, EXPLICIT_OPEN,
    LinkResponse, StreamInfo,
};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why a call to the log service failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Connect, timeout, reset or a broken body: the request may or may not have landed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The service answered with an error status.
    #[error("log service answered {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The `error_msg` of the answer, or its start.
        message: String,
    },
    /// The configuration is unusable (bad URL, …); retrying cannot help.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The archive could not be read from disk.
    #[error("cannot read the archive: {0}")]
    Io(String),
}

impl ClientError {
    /// Whether the same request may succeed later: transport errors, 5xx, 408 and 429.
    /// Other 4xx (bad token, bad key, closed stream) will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            ClientError::Config(_) | ClientError::Io(_) => false,
        }
    }
}

/// A batch of numbered lines ready to send: a JSON array, built once and resent as
/// is on retry (same `pos` values, so the service stores each line once).
#[derive(Debug, Clone)]
pub struct Batch {
    /// `pos` of the first line.
    pub first_pos: u64,
    /// Number of lines.
    pub lines: u64,
    /// The JSON array body (`[{"pos":…},…]`).
    pub body: Bytes,
}

/// What [`LogClient::close_archiving`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Nothing: the service is not known to build archives (a Harness service, or a
    /// client that cannot ask). The writer uploads, then closes as usual.
    NotAsked,
    /// The stream is closed; `archived`: the service built the archive from its own
    /// lines, proven complete against the writer's totals. When not, the writer
    /// uploads its history.
    Closed {
        /// Whether the archive is complete without an upload.
        archived: bool,
    },
}

/// The log-service operations the writer needs. Implemented over HTTP by
/// [`HttpLogClient`]; tests may supply their own.
#[async_trait]
pub trait LogClient: Send + Sync + 'static {
    /// `POST /stream`: opens the live stream (idempotent).
    async fn open(&self, key: &str) -> Result<(), ClientError>;
    /// [`open`](Self::open), also returning where a writer continues the stream:
    /// runlog's service answers `next_pos` (past the lines the stream already holds,
    /// when a key is reused); `None` from a service that does not say (a Harness log
    /// service), where the writer numbers from 0.
    async fn open_at(&self, key: &str) -> Result<Option<u64>, ClientError> {
        self.open(key).await.map(|()| None)
    }
    /// `PUT /stream`: appends a batch.
    async fn write(&self, key: &str, batch: &Batch) -> Result<AppendAck, ClientError>;
    /// `PUT /stream` from a writer that opened the stream and reopens it itself: a
    /// service that would open a missing stream implicitly is asked for a 404 instead
    /// ([`runlog_protocol::service::EXPLICIT_OPEN`]), so the writer resends its history
    /// from `pos` 0 rather than leave a gap before this batch.
    async fn write_opened(&self, key: &str, batch: &Batch) -> Result<AppendAck, ClientError> {
        self.write(key, batch).await
    }
    /// `DELETE /stream`: closes the live stream; with `snapshot` its lines become the archive.
    async fn close(&self, key: &str, snapshot: bool) -> Result<(), ClientError>;
    /// `DELETE /stream?…&archive=if_complete` with the writer's `totals`, to a service
    /// that builds archives itself (runlog's; see
    /// [`runlog_protocol::service::ARCHIVE_PARAM`]). The default asks nothing.
    async fn close_archiving(
        &self,
        key: &str,
        totals: &WriterTotals,
    ) -> Result<Closing, ClientError> {
        let _ = (key, totals);
        Ok(Closing::NotAsked)
    }

    /// `DELETE /stream?outcome=`: closes, stating how the run that wrote the stream
    /// ended (the service marks sections still open with it). Clients that cannot
    /// state it close plainly.
    async fn close_with_outcome(
        &self,
        key: &str,
        snapshot: bool,
        outcome: Option<runlog_protocol::sections::Outcome>,
    ) -> Result<(), ClientError> {
        let _ = outcome;
        self.close(key, snapshot).await
    }

    /// `POST /blob`: uploads the NDJSON archive at `ndjson` (gzip-compressed on the way
    /// when the service said it takes gzip, plain otherwise).
    async fn upload_blob(&self, key: &str, ndjson: &Path) -> Result<(), ClientError>;
    /// `POST /blob/link/upload` then `PUT` to the signed link (no account token is sent
    /// to the link's host).
    async fn upload_link(&self, key: &str, ndjson: &Path) -> Result<(), ClientError>;
    /// The service and account this client talks to, kept with an undelivered history
    /// in the outbox so that a later process can re-send it. `None`: not reproducible.
    fn outbox_config(&self) -> Option<LogConfig> {
        None
    }
    /// Uploads the archive the configured way (indirect through the service, or direct
    /// through a signed link).
    async fn upload(&self, key: &str, ndjson: &Path, indirect: bool) -> Result<(), ClientError> {
        if indirect {
            self.upload_blob(key, ndjson).await
        } else {
            self.upload_link(key, ndjson).await
        }
    }
}

/// Timeouts of [`HttpLogClient`].
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// TCP/TLS connect.
    pub connect: Duration,
    /// One whole request: bounds a stalled service. An archive upload gets this
    /// plus the time to send its history at [`MIN_UPLOAD_RATE`], so a large history
    /// on a slow link is not cut off at every attempt.
    pub request: Duration,
}

/// The slowest upload an archive is allowed, in bytes of (uncompressed) history a
/// second: 256 KiB/s, a slow uplink sending gzip'd logs. An upload's timeout is
/// [`HttpTimeouts::request`] plus its history's size at this rate.
pub const MIN_UPLOAD_RATE: u64 = 256 * 1024;

impl HttpTimeouts {
    /// The timeout of an upload of `history_bytes` of NDJSON.
    pub fn upload(&self, history_bytes: u64) -> Duration {
        self.request + Duration::from_secs(history_bytes / MIN_UPLOAD_RATE)
    }
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// The HTTP client of the log service: pooled connections, connect and request
/// timeouts, token sent as `Authorization: Bearer` and `X-Harness-Token`.
///
/// Every answer with a 2xx status is success, a 204 without a body included (a
/// Harness log service answers most routes that way). Archives are uploaded as plain
/// NDJSON until an answer to `POST /stream` carried
/// [`ACCEPT_ARCHIVE_ENCODING`]` : gzip` (runlog's service), and gzip-compressed from
/// then on: a Harness log service stores an upload's body as it arrives, so gzip sent
/// there would become the archive's bytes. Clones share what was learnt.
#[derive(Clone)]
pub struct HttpLogClient {
    http: reqwest::Client,
    base: reqwest::Url,
    account_id: String,
    token: String,
    cfg: LogConfig,
    timeouts: HttpTimeouts,
    /// The service announced that archive uploads may be gzip.
    gzip_archives: Arc<AtomicBool>,
}

impl std::fmt::Debug for HttpLogClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("HttpLogClient")
            .field("base", &self.base.as_str())
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl HttpLogClient {
    /// A client for the service and account in `cfg`, with default timeouts.
    pub fn new(cfg: &LogConfig) -> Result<Self, ClientError> {
        Self::with_timeouts(cfg, HttpTimeouts::default())
    }

    /// A client with explicit timeouts.
    pub fn with_timeouts(cfg: &LogConfig, t: HttpTimeouts) -> Result<Self, ClientError> {
        let mut base = reqwest::Url::parse(&cfg.url)
            .map_err(|e| ClientError::Config(format!("url {:?}: {e}", cfg.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "url {:?} is not http(s)",
                cfg.url
            )));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(t.connect)
            .timeout(t.request)
            // Below the service's 30 s idle keep-alive timeout (`runlog_edge::Limits`),
            // so the client drops an idle connection before the service closes it
            // under a request about to be sent on it.
            .pool_idle_timeout(Duration::from_secs(20))
            // A thousand steps at once leave as many connections once they end; a
            // stage needs a few to start the next requests without a handshake.
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(HttpLogClient {
            http,
            base,
            account_id: cfg.account_id.clone(),
            token: cfg.token.clone(),
            cfg: cfg.clone(),
            timeouts: t,
            gzip_archives: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether archives go out gzip-compressed: the service announced it takes them
    /// (see [`ACCEPT_ARCHIVE_ENCODING`]).
    pub fn gzip_archives(&self) -> bool {
        self.gzip_archives.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str, key: &str) -> Result<reqwest::Url, ClientError> {
        let mut u = self
            .base
            .join(path)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        u.query_pairs_mut()
            .append_pair("accountID", &self.account_id)
            .append_pair("key", key);
        Ok(u)
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.bearer_auth(&self.token)
            .header("X-Harness-Token", &self.token)
    }

    /// Adds the archive at `ndjson` as the body of `rb`, gzip-compressed or plain as
    /// [`Self::gzip_archives`] says, with the timeout its size needs (see
    /// [`HttpTimeouts::upload`]).
    async fn archive_body(
        &self,
        rb: reqwest::RequestBuilder,
        ndjson: &Path,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let gzip = self.gzip_archives();
        // Streamed either way: the archive is never held in memory.
        let (body, len) = crate::upload_body::spool_body(ndjson, gzip)
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let rb = rb
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .timeout(self.timeouts.upload(len));
        if gzip {
            Ok(rb
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(body))
        } else {
            // The length is known, so it is sent as `Content-Length`, as lite-engine
            // does: a store that passes the body on (object storage) needs it.
            Ok(rb.header(reqwest::header::CONTENT_LENGTH, len).body(body))
        }
    }
}

impl HttpLogClient {
    /// `PUT /stream` with the batch; `explicit_open` asks for a 404 rather than an
    /// implicit open of a stream that is not open (see [`LogClient::write_opened`]).
    async fn put_batch(
        &self,
        key: &str,
        batch: &Batch,
        explicit_open: bool,
    ) -> Result<AppendAck, ClientError> {
        let mut rb = self
            .authed(self.http.put(self.url("stream", key)?))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(batch.body.clone());
        if explicit_open {
            rb = rb.header(EXPLICIT_OPEN, "1");
        }
        let resp = check(rb.send().await).await?;
        let body = resp.bytes().await.map_err(transport)?;
        // An answer without a readable ack (an older service, or a 204 from a Harness
        // service) still means "stored".
        Ok(serde_json::from_slice(&body).unwrap_or(AppendAck {
            appended: batch.lines,
            duplicates: 0,
            last_contiguous_pos: None,
            next_pos: batch.first_pos + batch.lines,
        }))
    }
}

async fn check(
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, ClientError> {
    let resp = resp.map_err(transport)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<runlog_protocol::ErrorBody>(&body)
        .map(|b| b.error_msg)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    Err(ClientError::Status {
        status: status.as_u16(),
        message,
    })
}

fn transport(e: reqwest::Error) -> ClientError {
    // `{:#}`-style chain: reqwest's top-level message alone ("error sending request")
    // hides the cause.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ClientError::Transport(msg)
}

#[async_trait]
impl LogClient for HttpLogClient {
    fn outbox_config(&self) -> Option<LogConfig> {
        Some(self.cfg.clone())
    }

    async fn open(&self, key: &str) -> Result<(), ClientError> {
        self.open_at(key).await.map(drop)
    }

    async fn open_at(&self, key: &str) -> Result<Option<u64>, ClientError> {
        let rb = self.authed(self.http.post(self.url("stream", key)?));
        let resp = check(rb.send().await).await?;
        let gzip = resp
            .headers()
            .get_all(ACCEPT_ARCHIVE_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| e.trim().eq_ignore_ascii_case("gzip"));
        // Only ever learnt, never unlearnt: a reopen through a proxy that drops the
        // header does not make the same service a different one.
        if gzip {
            self.gzip_archives.store(true, Ordering::Relaxed);
        }
        // Harness answers other fields (or none): no `next_pos`, the writer starts at 0.
        #[derive(serde::Deserialize)]
        struct Opened {
            next_pos: Option<u64>,
        }
        let body = resp.bytes().await.unwrap_or_default();
        Ok(serde_json::from_slice::<Opened>(&body)
            .ok()
            .and_then(|o| o.next_pos))
    }

    async fn write(&self, key: &str, batch: &Batch) -> Result<AppendAck, ClientError> {
        self.put_batch(key, batch, false).await
    }

    async fn write_opened(&self, key: &str, batch: &Batch) -> Result<AppendAck, ClientError> {
        self.put_batch(key, batch, true).await
    }

    async fn close(&self, key: &str, snapshot: bool) -> Result<(), ClientError> {
        self.close_with_outcome(key, snapshot, None).await
    }

    async fn close_with_outcome(
        &self,
        key: &str,
        snapshot: bool,
        outcome: Option<runlog_protocol::sections::Outcome>,
    ) -> Result<(), ClientError> {
        let mut url = self.url("stream", key)?;
        if snapshot {
            url.query_pairs_mut().append_pair("snapshot", "true");
        }
        if let Some(o) = outcome {
            url.query_pairs_mut().append_pair("outcome", o.as_str());
        }
        check(self.authed(self.http.delete(url)).send().await)
            .await
            .map(drop)
    }

    async fn close_archiving(
        &self,
        key: &str,
        totals: &WriterTotals,
    ) -> Result<Closing, ClientError> {
        // The header that announces gzip uploads is what tells runlog's service from a
        // Harness one, which would take the parameter for nothing and keep no archive.
        if !self.gzip_archives.load(Ordering::Relaxed) {
            return Ok(Closing::NotAsked);
        }
        let mut url = self.url("stream", key)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair(ARCHIVE_PARAM, ARCHIVE_IF_COMPLETE);
            let mut num = |name: &str, v: Option<u64>| {
                if let Some(v) = v {
                    q.append_pair(name, &v.to_string());
                }
            };
            num("lines", totals.lines);
            num("bytes", totals.bytes);
            num("dropped", totals.dropped);
            if let Some(d) = &totals.digest {
                q.append_pair("digest", d);
            }
            if let Some(o) = totals.outcome {
                q.append_pair("outcome", o.as_str());
            }
        }
        let resp = check(self.authed(self.http.delete(url)).send().await).await?;
        // A service that answers without `archived` (an older one ignores the
        // parameter) built nothing: the writer uploads.
        let archived = resp
            .json::<StreamInfo>()
            .await
            .is_ok_and(|info| info.archived);
        Ok(Closing::Closed { archived })
    }

    async fn upload_blob(&self, key: &str, ndjson: &Path) -> Result<(), ClientError> {
        let rb = self.authed(self.http.post(self.url("blob", key)?));
        let rb = self.archive_body(rb, ndjson).await?;
        check(rb.send().await).await.map(drop)
    }

    async fn upload_link(&self, key: &str, ndjson: &Path) -> Result<(), ClientError> {
        let rb = self.authed(self.http.post(self.url("blob/link/upload", key)?));
        let resp = check(rb.send().await).await?;
        // `expires` as integer nanoseconds (Harness, runlog) or an RFC 3339 time (runlog
        // before): either is read, so a link from either service is used.
        let link: LinkResponse = resp.json().await.map_err(transport)?;
        let url = reqwest::Url::parse(&link.link)
            .map_err(|e| ClientError::Transport(format!("bad upload link: {e}")))?;
        if link.expires.has_passed() {
            // Retryable: the next attempt asks for a new link.
            return Err(ClientError::Transport(
                "the upload link had expired when it arrived".into(),
            ));
        }
        // The link carries its own authorisation and may point at another host (object
        // storage): the account token is deliberately not attached.
        let rb = self.archive_body(self.http.put(url), ndjson).await?;
        check(rb.send().await).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses_are_server_side_or_throttling() {
        let st = |status| ClientError::Status {
            status,
            message: String::new(),
        };
        for s in [500, 502, 503, 408, 429] {
            assert!(st(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413] {
            assert!(!st(s).is_retryable(), "{s}");
        }
        assert!(ClientError::Transport("reset".into()).is_retryable());
    }

    #[test]
    fn non_http_urls_are_refused() {
        let cfg = LogConfig {
            url: "file:///etc".into(),
            ..LogConfig::default()
        };
        assert!(matches!(
            HttpLogClient::new(&cfg),
            Err(ClientError::Config(_))
        ));
    }
}
