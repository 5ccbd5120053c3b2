//! Reading the log service over HTTP: follow a live stream (SSE), download an
//! archive, list an account's streams.
//!
//! The follower survives a service restart or a dropped connection: it reconnects
//! with exponential backoff and resumes with `Last-Event-ID` from the last line it
//! delivered, and it never delivers a `pos` twice or out of order.
//!
//! ```ignore
//! let reader = Reader::new("http://127.0.0.1:8079", Some(token))?;
//! reader
//!     .follow(&account, &key, &FollowOptions::default(), |line| {
//!         print!("{}", line.out);
//!         Ok(())
//!     })
//!     .await?;
//! ```

use crate::sse::SseParser;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use runlog_protocol::service::StreamInfo;
use runlog_protocol::{AccountId, ErrorBody, LogLine, StreamKey};
use std::time::{Duration, Instant};

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such stream (or archive) in the account.
    #[error("not found: {0}")]
    NotFound(String),
    /// The service refused the request for good (bad token, bad key, …).
    #[error("the service refused the request ({status}): {msg}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The service's `error_msg`, or the start of its body.
        msg: String,
    },
    /// The service stayed unreachable or failing for longer than allowed.
    #[error("gave up after {attempts} attempts in {elapsed:?} without progress: {last}")]
    GaveUp {
        /// Connection attempts made since the last delivered line.
        attempts: u32,
        /// Time spent without progress.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },
    /// The service answered something that is not the protocol.
    #[error("malformed answer from the service: {0}")]
    Malformed(String),
    /// A transport failure where retrying makes no sense (e.g. mid-download).
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// The consumer of the lines failed (e.g. stdout closed).
    #[error("writing output: {0}")]
    Sink(#[from] std::io::Error),
}

/// How to follow a stream.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// First `pos` to deliver (`--since-line`); earlier lines are skipped.
    pub from_line: u64,
    /// Stop once a line with this `pos` or higher was delivered (a snapshot of what
    /// is stored now), instead of waiting for the stream to close.
    pub stop_at_pos: Option<u64>,
    /// Stop when no line arrived for this long (a snapshot that tolerates gaps).
    pub stop_when_idle: Option<Duration>,
    /// Give up when no line could be delivered for this long while reconnecting.
    pub reconnect_for: Duration,
    /// Treat a connection as dead when nothing, not even a `: ping`, arrives for this long.
    pub stall_timeout: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            from_line: 0,
            stop_at_pos: None,
            stop_when_idle: None,
            reconnect_for: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(90),
        }
    }
}

/// How a follow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// The stream closed (`eof` event) and every line was delivered.
    Closed,
    /// `stop_at_pos` was reached.
    CaughtUp,
    /// `stop_when_idle` elapsed without a line.
    Idle,
}

/// What a follow delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowSummary {
    /// Why it ended.
    pub end: FollowEnd,
    /// Lines delivered to the callback.
    pub lines: u64,
    /// `pos` of the last delivered line.
    pub last_pos: Option<u64>,
    /// Times the connection was re-established.
    pub reconnects: u32,
}

/// An HTTP client for the log service's read side.
#[derive(Debug, Clone)]
pub struct Reader {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Reader {
    /// A reader for the service at `base_url` (e.g. `http://127.0.0.1:8079`),
    /// sending `token` as `Authorization: Bearer` when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ReadError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self::with_client(http, base_url, token))
    }

    /// A reader that shares an existing client (and its connection pool).
    pub fn with_client(http: reqwest::Client, base_url: &str, token: Option<String>) -> Self {
        Reader {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The service's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The streams of `account`, newest activity first (`GET /streams`).
    pub async fn list(&self, account: &AccountId) -> Result<Vec<StreamInfo>, ReadError> {
        self.list_rows(account, false).await
    }

    /// [`list`](Self::list) with each closed stream's ledger verdict
    /// ([`StreamInfo::complete`]; the service reads one stored index per closed
    /// stream for it).
    pub async fn list_with_ledgers(
        &self,
        account: &AccountId,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        self.list_rows(account, true).await
    }

    async fn list_rows(
        &self,
        account: &AccountId,
        ledger: bool,
    ) -> Result<Vec<StreamInfo>, ReadError> {
        let mut query = vec![("accountID", account.as_str())];
        if ledger {
            query.push(("ledger", "true"));
        }
        let resp = self.get("/streams").query(&query).send().await?;
        let resp = check(resp).await?;
        let body = resp.bytes().await?;
        let mut streams: Vec<StreamInfo> = serde_json::from_slice(&body)
            .map_err(|e| ReadError::Malformed(format!("stream list: {e}")))?;
        // RFC 3339 UTC times with a fixed format sort as strings.
        streams.sort_by(|a, b| b.last_activity.cmp(&a.last_activity));
        Ok(streams)
    }

    /// The list row of one stream, if the account has it.
    pub async fn info(
        &self,
        account: &AccountId,
        key: &StreamKey,
    ) -> Result<Option<StreamInfo>, ReadError> {
        Ok(self
            .list(account)
            .await?
            .into_iter()
            .find(|s| &s.key == key))
    }

    /// The stream's sections and, once closed, its completeness ledger
    /// (`GET /stream/sections`).
    pub async fn sections(
        &self,
        account: &AccountId,
        key: &StreamKey,
    ) -> Result<runlog_protocol::sections::SectionsAnswer, ReadError> {
        let resp = self
            .get("/stream/sections")
            .query(&[("accountID", account.as_str()), ("key", key.as_str())])
            .send()
            .await?;
        let body = check(resp).await?.bytes().await?;
        serde_json::from_slice(&body).map_err(|e| ReadError::Malformed(format!("sections: {e}")))
    }

    /// Follows `key`: backfill from `opts.from_line`, then live lines, until the
    /// stream closes (or a stop condition of `opts`). Each line is handed to
    /// `on_line` once, in `pos` order; an error from `on_line` stops the follow.
    ///
    /// Transport failures, 5xx, 408 and 429 are retried with backoff, resuming with
    /// `Last-Event-ID`; 404 is [`ReadError::NotFound`]; other 4xx are
    /// [`ReadError::Refused`].
    pub async fn follow(
        &self,
        account: &AccountId,
        key: &StreamKey,
        opts: &FollowOptions,
        mut on_line: impl FnMut(&LogLine) -> std::io::Result<()>,
    ) -> Result<FollowSummary, ReadError> {
        if opts.stop_at_pos.is_some_and(|stop| stop < opts.from_line) {
            // The snapshot ends before the first wanted line: nothing to read.
            return Ok(FollowSummary {
                end: FollowEnd::CaughtUp,
                lines: 0,
                last_pos: None,
                reconnects: 0,
            });
        }
        let mut state = FollowState {
            from_line: opts.from_line,
            last_pos: None,
            lines: 0,
        };
        let backoff_builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let mut backoff = backoff_builder.build();
        let mut reconnects = 0u32;
        let mut attempts = 0u32;
        let mut progress_at = Instant::now();
        loop {
            attempts += 1;
            let before = state.lines;
            let outcome = self
                .follow_once(account, key, opts, &mut state, &mut on_line)
                .await;
            if state.lines > before {
                // Progress resets the patience: only a service that stays down ends a tail.
                progress_at = Instant::now();
                attempts = 1;
                backoff = backoff_builder.build();
            }
            let failure = match outcome {
                Ok(end) => {
                    return Ok(FollowSummary {
                        end,
                        lines: state.lines,
                        last_pos: state.last_pos,
                        reconnects,
                    });
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => why,
            };
            let elapsed = progress_at.elapsed();
            if elapsed >= opts.reconnect_for {
                return Err(ReadError::GaveUp {
                    attempts,
                    elapsed,
                    last: failure,
                });
            }
            tracing::debug!(%failure, attempts, "stream connection lost; reconnecting");
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::time::sleep(delay.min(opts.reconnect_for.saturating_sub(elapsed))).await;
            reconnects += 1;
        }
    }

    /// One connection of a follow. `Ok` when a stop condition was met.
    async fn follow_once(
        &self,
        account: &AccountId,
        key: &StreamKey,
        opts: &FollowOptions,
        state: &mut FollowState,
        on_line: &mut impl FnMut(&LogLine) -> std::io::Result<()>,
    ) -> Result<FollowEnd, Attempt> {
        let mut req = self
            .get("/stream")
            .query(&[("accountID", account.as_str()), ("key", key.as_str())])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(resume) = state.resume_id() {
            req = req.header("Last-Event-ID", resume.to_string());
        }
        let resp = req.send().await.map_err(|e| Attempt::Retry(describe(&e)))?;
        let resp = check(resp).await.map_err(Attempt::classify)?;
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        // Idleness only counts once lines flow: a service slow to start a large
        // backfill is not a finished snapshot.
        let mut lines_flowing = false;
        loop {
            let idle = opts
                .stop_when_idle
                .filter(|idle| *idle <= opts.stall_timeout && lines_flowing);
            let wait = idle.unwrap_or(opts.stall_timeout);
            let chunk = match tokio::time::timeout(wait, body.next()).await {
                Err(_) if idle.is_some() => return Ok(FollowEnd::Idle),
                Err(_) => return Err(Attempt::Retry(format!("no data for {wait:?}"))),
                Ok(None) => {
                    return Err(Attempt::Retry(
                        "the service ended the stream without eof".into(),
                    ));
                }
                Ok(Some(Err(e))) => return Err(Attempt::Retry(describe(&e))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            parser
                .push(&chunk, &mut events)
                .map_err(|e| Attempt::Fatal(ReadError::Malformed(e.to_string())))?;
            for event in events.drain(..) {
                match event.event.as_str() {
                    "eof" => return Ok(FollowEnd::Closed),
                    // The service hit a storage failure mid-tail; it may pass.
                    "error" => {
                        let msg = serde_json::from_str::<ErrorBody>(&event.data)
                            .map(|e| e.error_msg)
                            .unwrap_or(event.data);
                        return Err(Attempt::Retry(format!("the service reported: {msg}")));
                    }
                    "" | "message" if !event.data.is_empty() => {
                        lines_flowing = true;
                        let line: LogLine = serde_json::from_str(&event.data).map_err(|e| {
                            Attempt::Fatal(ReadError::Malformed(format!("line: {e}")))
                        })?;
                        if state.accept(line.pos) {
                            on_line(&line).map_err(|e| Attempt::Fatal(ReadError::Sink(e)))?;
                            if opts.stop_at_pos.is_some_and(|stop| line.pos >= stop) {
                                return Ok(FollowEnd::CaughtUp);
                            }
                        }
                    }
                    // Unknown events are for newer clients; skipping them keeps this one working.
                    _ => {}
                }
            }
        }
    }

    /// Downloads the archive of `key` (`GET /blob`), handing each chunk of NDJSON
    /// bytes to `sink`. `on_start` is told the body's length, when the service
    /// sends one, before the first chunk (to size a progress display). Returns the
    /// bytes received.
    pub async fn archive(
        &self,
        account: &AccountId,
        key: &StreamKey,
        on_start: impl FnOnce(Option<u64>),
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ReadError> {
        let resp = self
            .get("/blob")
            .query(&[("accountID", account.as_str()), ("key", key.as_str())])
            .send()
            .await?;
        let resp = check(resp).await?;
        on_start(resp.content_length());
        let mut body = resp.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk?;
            sink(&chunk)?;
            received += chunk.len() as u64;
        }
        Ok(received)
    }
}

/// Where a follow stands across reconnects.
struct FollowState {
    from_line: u64,
    last_pos: Option<u64>,
    lines: u64,
}

impl FollowState {
    /// The `Last-Event-ID` to send: the last delivered `pos`, or the line before
    /// `from_line` so the service starts there.
    fn resume_id(&self) -> Option<u64> {
        self.last_pos.or_else(|| self.from_line.checked_sub(1))
    }

    /// Whether a line should be delivered; records it when so. Lines before
    /// `from_line` or at/below the last delivered `pos` (a replay after a
    /// reconnect to a service that ignores `Last-Event-ID`) are skipped.
    fn accept(&mut self, pos: u64) -> bool {
        if pos < self.from_line || self.last_pos.is_some_and(|last| pos <= last) {
            return false;
        }
        self.last_pos = Some(pos);
        self.lines += 1;
        true
    }
}

/// The result of one failed connection attempt.
enum Attempt {
    Retry(String),
    Fatal(ReadError),
}

impl Attempt {
    fn classify(e: ReadError) -> Attempt {
        match e {
            ReadError::Refused { status, msg }
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT =>
            {
                Attempt::Retry(format!("{status}: {msg}"))
            }
            ReadError::Transport(e) => Attempt::Retry(describe(&e)),
            other => Attempt::Fatal(other),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the chain says why.
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Turns a non-2xx answer into an error carrying the service's `error_msg`.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ReadError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    let msg = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => e.error_msg,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    if status == StatusCode::NOT_FOUND {
        return Err(ReadError::NotFound(msg));
    }
    Err(ReadError::Refused { status, msg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_and_early_lines_are_not_delivered_twice() {
        let mut s = FollowState {
            from_line: 2,
            last_pos: None,
            lines: 0,
        };
        assert_eq!(s.resume_id(), Some(1));
        assert!(!s.accept(1));
        assert!(s.accept(2));
        assert!(s.accept(5));
        assert!(!s.accept(3), "a replayed older line is skipped");
        assert_eq!(s.resume_id(), Some(5));
        assert_eq!(s.lines, 2);
    }

    #[test]
    fn only_passing_failures_are_retried() {
        let refused = |status| ReadError::Refused {
            status,
            msg: String::new(),
        };
        for (status, passing) in [
            (StatusCode::SERVICE_UNAVAILABLE, true),
            (StatusCode::INTERNAL_SERVER_ERROR, true),
            (StatusCode::TOO_MANY_REQUESTS, true),
            (StatusCode::REQUEST_TIMEOUT, true),
            (StatusCode::UNAUTHORIZED, false),
            (StatusCode::FORBIDDEN, false),
            (StatusCode::BAD_REQUEST, false),
        ] {
            let retried = match Attempt::classify(refused(status)) {
                Attempt::Retry(_) => true,
                Attempt::Fatal(_) => false,
            };
            assert_eq!(retried, passing, "{status}");
        }
        assert!(matches!(
            Attempt::classify(ReadError::NotFound("gone".into())),
            Attempt::Fatal(ReadError::NotFound(_))
        ));
    }
}
