//! Reading the log service over HTTP: follow a live stream (SSE), download an
//! archive, list an account's streams, build viewer links.
//!
//! Used by `runlog tail`, `runlog logs`, `runlog ls`, and by `runlog run` to show a
//! step's output as it streams. The follower survives a service restart or a
//! dropped connection: it reconnects with exponential backoff and resumes with
//! `Last-Event-ID` from the last line it delivered, and it never delivers a `pos`
//! twice or out of order.
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

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use runlog_protocol::service::StreamInfo;
use runlog_protocol::{AccountId, ErrorBody, LogLine, Scope, StreamKey};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A partial SSE line longer than this means the peer is not speaking SSE; the
/// service's own lines are bounded far below it.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

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
        let resp = self
            .get("/streams")
            .query(&[("accountID", account.as_str())])
            .send()
            .await?;
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
                .map_err(|e| Attempt::Fatal(ReadError::Malformed(e)))?;
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
    /// bytes to `sink`. Shows a progress bar on stderr when `progress` is set and
    /// stderr is a terminal. Returns the bytes received.
    pub async fn archive(
        &self,
        account: &AccountId,
        key: &StreamKey,
        progress: bool,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ReadError> {
        let resp = self
            .get("/blob")
            .query(&[("accountID", account.as_str()), ("key", key.as_str())])
            .send()
            .await?;
        let resp = check(resp).await?;
        let bar = progress_bar(progress, resp.content_length());
        let mut body = resp.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk?;
            sink(&chunk)?;
            received += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(received)
    }
}

/// A read-scoped token for viewer links, minted locally from the service's admin
/// secret. `runlog serve` and `runlog run` print links with one only when they hold
/// the secret; otherwise the link has no token and the page asks for one.
#[allow(
    dead_code,
    reason = "for the commands that create streams and print their links"
)]
pub fn read_token_for_link(
    admin_secret: &str,
    account: &AccountId,
    ttl: Duration,
) -> Option<String> {
    runlog_service::auth::mint_token(admin_secret.as_bytes(), Some(account), Scope::Read, ttl).ok()
}

/// The viewer URL of one stream. `read_token` must be read-scoped: links get
/// pasted into chats and browser histories, so they never carry more than read.
pub fn viewer_link(
    base_url: &str,
    account: &AccountId,
    key: &StreamKey,
    read_token: Option<&str>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("accountID", account.as_str());
    query.append_pair("key", key.as_str());
    if let Some(t) = read_token {
        query.append_pair("token", t);
    }
    format!(
        "{}/ui/stream?{}",
        base_url.trim_end_matches('/'),
        query.finish()
    )
}

/// Splits NDJSON bytes arriving in arbitrary chunks into complete lines.
#[derive(Debug, Default)]
pub struct NdjsonSplitter {
    partial: Vec<u8>,
}

impl NdjsonSplitter {
    /// Feeds a chunk, calling `on_row` for every complete, non-empty row (without `\n`).
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_row: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (row, tail) = rest.split_at(nl);
            if self.partial.is_empty() {
                emit(row, &mut on_row)?;
            } else {
                self.partial.extend_from_slice(row);
                let joined = std::mem::take(&mut self.partial);
                emit(&joined, &mut on_row)?;
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Flushes a last row that had no trailing newline.
    pub fn finish(
        &mut self,
        mut on_row: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let last = std::mem::take(&mut self.partial);
        emit(&last, &mut on_row)
    }
}

fn emit(row: &[u8], on_row: &mut impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    if row.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    on_row(row)
}

fn progress_bar(wanted: bool, len: Option<u64>) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
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

/// One Server-Sent Event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SseEvent {
    event: String,
    data: String,
    id: Option<String>,
}

/// An incremental `text/event-stream` parser (the WHATWG rules this service uses:
/// `field: value` lines, `:` comments, a blank line dispatches).
#[derive(Debug, Default)]
struct SseParser {
    partial: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                self.partial.extend_from_slice(line);
                let joined = std::mem::take(&mut self.partial);
                self.line(&joined, out);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_SSE_LINE {
            return Err(format!("an event-stream line exceeds {MAX_SSE_LINE} bytes"));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            if self.has_data || !event.event.is_empty() {
                out.push(event);
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // comment (keep-alive ping)
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = value.to_owned(),
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).expect("within limits");
        }
        out
    }

    #[test]
    fn sse_events_split_across_chunks_are_joined() {
        let events = parse_all(&[
            b"id: 4\nda",
            b"ta: {\"pos\":4}\r\n",
            b"\n: ping\n\nevent: eof\ndata:\n\n",
        ]);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].id.as_deref(), Some("4"));
        assert_eq!(events[0].data, "{\"pos\":4}");
        assert_eq!(events[1].event, "eof");
    }

    #[test]
    fn comments_alone_dispatch_nothing() {
        assert!(parse_all(&[b": ping\n\n: ping\n\n"]).is_empty());
    }

    #[test]
    fn an_endless_sse_line_is_refused() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_SSE_LINE + 1];
        assert!(p.push(&big, &mut out).is_err());
    }

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
    fn ndjson_rows_split_across_chunks_are_whole() {
        let mut split = NdjsonSplitter::default();
        let mut rows = Vec::new();
        for chunk in [&b"{\"a\":1}\n{\"b\""[..], b":2}\r\n\n{\"c\":3}"] {
            split
                .push(chunk, |r| {
                    rows.push(String::from_utf8_lossy(r).into_owned());
                    Ok(())
                })
                .expect("no sink error");
        }
        split
            .finish(|r| {
                rows.push(String::from_utf8_lossy(r).into_owned());
                Ok(())
            })
            .expect("no sink error");
        assert_eq!(rows, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn the_account_is_read_from_a_token_and_garbage_names_none() {
        let account = AccountId::new("acc-1").expect("valid");
        let token = runlog_service::auth::mint_token(
            b"s",
            Some(&account),
            Scope::Read,
            Duration::from_secs(60),
        )
        .expect("mint");
        assert_eq!(token_account(&token), Some(account));
        for bad in ["", "garbage", "a.b", "e30.sig", "!!!.x"] {
            assert_eq!(token_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn viewer_links_escape_keys_and_carry_only_the_given_token() {
        let account = AccountId::new("acc").expect("valid");
        let key = StreamKey::new("stage/step-1").expect("valid");
        let link = viewer_link("http://h:1/", &account, &key, None);
        assert_eq!(
            link,
            "http://h:1/ui/stream?accountID=acc&key=stage%2Fstep-1"
        );
        let with = viewer_link("http://h:1", &account, &key, Some("r.t+/="));
        assert!(with.ends_with("&token=r.t%2B%2F%3D"), "{with}");
    }
}

/// Flags naming the service and the caller, shared by the reading commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Base URL of the log service.
    #[arg(long, env = "RUNLOG_URL", default_value = "http://127.0.0.1:8079")]
    pub url: String,
    /// Account token (read scope is enough), sent as `Authorization: Bearer`.
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "RUNLOG_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Account that owns the streams; by default the account the token is for.
    #[arg(long, env = "RUNLOG_ACCOUNT")]
    pub account: Option<AccountId>,
}

impl ConnectArgs {
    /// A reader for these flags.
    pub fn reader(&self) -> Result<Reader, ReadError> {
        Reader::new(&self.url, self.token.clone())
    }

    /// The account to read: `--account`, else the one the token names.
    pub fn account(&self) -> anyhow::Result<AccountId> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        self.token
            .as_deref()
            .and_then(token_account)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no account: pass --account or set RUNLOG_ACCOUNT (the token names none)"
                )
            })
    }
}

/// The account a runlog token (`base64url(JSON claims).signature`) names, read
/// without verifying it: only to pick a default; the service verifies every call.
pub fn token_account(token: &str) -> Option<AccountId> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        account: Option<AccountId>,
    }
    let body = token.trim().split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    serde_json::from_slice::<Claims>(&json).ok()?.account
}
