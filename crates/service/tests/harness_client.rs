//! A Harness lite-engine log client, unchanged, against `runlog service`.
//!
//! The requests here are the bytes lite-engine's HTTP clients put on the wire
//! (learnt from its behaviour, not copied from its code): the token in
//! `X-Harness-Token` (or `?X-Harness-Token=`), `accountID` and `key` in the query
//! unescaped (so a Harness key's `:`, `$` and `/` arrive raw), Go's default headers
//! (`User-Agent: Go-http-client/1.1`, `Accept-Encoding: gzip`), `Content-Length: 0`
//! on a `POST` without a body, no `Content-Type`, and a `PUT` body that is Go's JSON
//! encoding of the lines — `{"level","pos","out","time"(RFC 3339 nano),"args":null}`,
//! `<`, `>` and `&` as `\u003c`-style escapes — plus the encoder's trailing newline.
//! They go over a plain TCP socket, so nothing normalises them on the way. What the
//! service stored is then read back through its public API and compared exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use runlog_protocol::Scope;
use runlog_service::ServiceConfig;
use runlog_testkit::service::{TestService, test_config};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ACCOUNT: &str = "kmpySmUISimoRrJL6NL73w";
const HARNESS_KEY: &str = "accountId:kmpySmUISimoRrJL6NL73w/orgId:default/projectId:p$1/pipelineId:build_$x/runSequence:1/level0:pipeline/level1:stages/level2:s1/addon:20004";

/// One HTTP answer as read off the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error_msg` of a JSON error body, as lite-engine reads it.
    fn error_msg(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.text()));
        v["error_msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_msg in {v}"))
            .to_owned()
    }
}

/// How lite-engine's client authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Header(&'a str),
    Query(&'a str),
}

/// Sends one request as Go's `net/http` client writes it and reads the answer.
async fn go_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    auth: Auth<'_>,
    body: Option<&[u8]>,
) -> Reply {
    let target = match auth {
        Auth::Header(_) if query.is_empty() => path.to_owned(),
        Auth::Header(_) => format!("{path}?{query}"),
        Auth::Query(token) => format!("{path}?{query}&X-Harness-Token={token}"),
    };
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\n");
    match body {
        Some(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        // Go sends an explicit zero length on a body-less POST or PUT.
        None if method == "POST" || method == "PUT" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    if let Auth::Header(token) = auth {
        head.push_str(&format!("X-Harness-Token: {token}\r\n"));
    }
    head.push_str("Accept-Encoding: gzip\r\n\r\n");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = tcp.into_split();
    // Written while the answer is read, as a real client does: a server that
    // answers early is seen answering, not as a stalled write.
    let body = body.map(<[u8]>::to_vec);
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        if let Some(b) = body {
            write.write_all(&b).await?;
        }
        write.flush().await?;
        Ok::<_, std::io::Error>(write)
    });
    let reply = read_reply(BufReader::new(read), method).await;
    // A client like Go's reports a failed body write (the server reset the
    // connection while it was still sending) as the request's failure, whatever the
    // server answered: the whole request must have gone out.
    let written = writer.await.expect("writer task");
    if let Err(e) = written {
        panic!("{method} {path}: the request could not be sent whole: {e}");
    }
    reply.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
}

async fn read_reply(
    mut r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    method: &str,
) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if status == 204 || method == "HEAD" {
        // No body to read (lite-engine does not read one either).
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body).await?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// lite-engine's line, as Go's encoder writes it.
fn go_line(pos: u64, out: &str) -> String {
    format!(
        r#"{{"level":"info","pos":{pos},"out":{},"time":"2026-12-06T07:53:47.{:09}Z","args":null}}"#,
        go_json_string(out),
        pos % 1_000_000_000
    )
}

/// A string as Go's `encoding/json` writes it (HTML characters escaped).
fn go_json_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A `PUT /stream` body: the JSON array of `lines` and Go's trailing newline.
fn go_put_body(lines: &[String]) -> Vec<u8> {
    let mut b = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 3);
    b.push(b'[');
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(l.as_bytes());
    }
    b.extend_from_slice(b"]\n");
    b
}

fn stream_query(key: &str) -> String {
    // Unescaped, as lite-engine formats it.
    format!("accountID={ACCOUNT}&key={key}")
}

/// lite-engine's log client for one account: every call goes to `addr` with the
/// token sent as `auth`, the query unescaped, the bytes as Go writes them.
#[derive(Clone, Copy)]
struct LiteEngine<'a> {
    addr: SocketAddr,
    auth: Auth<'a>,
}

impl<'a> LiteEngine<'a> {
    fn new(svc: &TestService, token: &'a str) -> Self {
        LiteEngine {
            addr: svc.addr(),
            auth: Auth::Header(token),
        }
    }

    /// The same client with the token in the query string.
    fn token_in_query(svc: &TestService, token: &'a str) -> Self {
        LiteEngine {
            addr: svc.addr(),
            auth: Auth::Query(token),
        }
    }

    /// Any call on `key`'s stream query, with `extra` query parameters after it.
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        extra: &str,
        body: Option<&[u8]>,
    ) -> Reply {
        let q = format!("{}{extra}", stream_query(key));
        go_request(self.addr, method, path, &q, self.auth, body).await
    }

    /// `POST /stream`.
    async fn open(&self, key: &str) -> Reply {
        self.call("POST", "/stream", key, "", None).await
    }

    /// `PUT /stream` of `lines` as one batch.
    async fn write(&self, key: &str, lines: &[String]) -> Reply {
        self.put(key, &go_put_body(lines)).await
    }

    /// `PUT /stream` of a body as given.
    async fn put(&self, key: &str, body: &[u8]) -> Reply {
        self.call("PUT", "/stream", key, "", Some(body)).await
    }

    /// `DELETE /stream&snapshot=true`, lite-engine's close.
    async fn close(&self, key: &str) -> Reply {
        self.call("DELETE", "/stream", key, "&snapshot=true", None)
            .await
    }

    /// Asserts a reply is what lite-engine counts as success (any status ≤ 299).
    fn ok(what: &str, r: &Reply) {
        assert!(r.status <= 299, "{what}: {} {}", r.status, r.text());
    }
}

/// The archive of `key` as NDJSON rows, through `GET /blob` (a runlog client).
async fn archive_rows(svc: &TestService, key: &str) -> Vec<String> {
    let r = reqwest::Client::new()
        .get(format!("{}/blob", svc.url()))
        .query(&[("accountID", ACCOUNT), ("key", key)])
        .bearer_auth(svc.token(ACCOUNT, Scope::Read))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET /blob {key}");
    let text = r.text().await.unwrap();
    text.lines().map(str::to_owned).collect()
}

fn lines(range: std::ops::Range<u64>, text: impl Fn(u64) -> String) -> Vec<String> {
    range.map(|pos| go_line(pos, &text(pos))).collect()
}

#[tokio::test]
async fn open_write_close_with_a_harness_key_stores_the_lines_exactly() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    LiteEngine::ok("open", &le.open(HARNESS_KEY).await);

    let sent = lines(0..5, |pos| match pos {
        0 => "+ make build".into(),
        1 => "<b>bold</b> & \"quoted\"".into(),
        2 => "tab\there, unicode é ✓".into(),
        _ => format!("line {pos}"),
    });
    LiteEngine::ok("write", &le.write(HARNESS_KEY, &sent).await);
    let more = lines(5..8, |pos| format!("later {pos}"));
    LiteEngine::ok("write", &le.write(HARNESS_KEY, &more).await);
    LiteEngine::ok("close", &le.close(HARNESS_KEY).await);

    let expected: Vec<String> = sent.into_iter().chain(more).collect();
    assert_eq!(archive_rows(&svc, HARNESS_KEY).await, expected);

    // Listed under its key, as sent.
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/streams?accountID={ACCOUNT}", svc.url()))
        .bearer_auth(svc.token(ACCOUNT, Scope::Read))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(keys, [HARNESS_KEY]);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_twenty_megabyte_put_stores_every_line() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    LiteEngine::ok("open", &le.open(HARNESS_KEY).await);

    // One second of a very chatty step, flushed in one request as lite-engine does.
    let sent = lines(0..100_000, |pos| {
        format!(
            "{pos:08} {}",
            "compiling crate with a long enough line of output to fill ".repeat(3)
        )
    });
    let body = go_put_body(&sent);
    assert!(body.len() > 20_000_000, "{} bytes", body.len());
    assert!(body.len() > runlog_service::config::DEFAULT_MAX_BODY);
    let put = le.put(HARNESS_KEY, &body).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let ack: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(ack["appended"], 100_000);
    assert_eq!(ack["next_pos"], 100_000);

    LiteEngine::ok("close", &le.close(HARNESS_KEY).await);
    assert!(
        archive_rows(&svc, HARNESS_KEY).await == sent,
        "archive differs from what was sent"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn a_put_before_any_open_stores_its_lines() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    let key = "accountId:a/pipelineId:p/level0:open_failed$";
    let sent = lines(0..3, |pos| format!("written without an open {pos}"));
    let put = le.write(key, &sent).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let ack: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(ack["appended"], 3);
    // The stream is open now: the next write goes on, a close archives both.
    let more = lines(3..4, |_| "second write".into());
    let put = le.write(key, &more).await;
    assert_eq!(put.status, 200, "{}", put.text());
    LiteEngine::ok("close", &le.close(key).await);
    let expected: Vec<String> = sent.into_iter().chain(more).collect();
    assert_eq!(archive_rows(&svc, key).await, expected);

    // A closed stream still refuses lines: only a stream that is not there opens.
    let late = le.write(key, &lines(4..5, |_| "late".into())).await;
    assert_eq!(late.status, 409, "{}", late.text());
    assert!(!late.error_msg().is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn indirect_upload_of_plain_ndjson_reads_back_exactly() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    let history = lines(0..50, |pos| format!("history <{pos}>"));
    // lite-engine's upload: the lines as NDJSON, uncompressed, no Content-Type.
    let up = le
        .call("POST", "/blob", HARNESS_KEY, "", Some(&ndjson(&history)))
        .await;
    LiteEngine::ok("upload", &up);
    assert_eq!(archive_rows(&svc, HARNESS_KEY).await, history);
    svc.shutdown().await;
}

/// Rows as an NDJSON body, as lite-engine uploads its history.
fn ndjson(rows: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in rows {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn close_with_snapshot_archives_what_was_written() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    let key = "accountId:x/runSequence:7/level0:pipeline";
    LiteEngine::ok("open", &le.open(key).await);
    let sent = lines(0..10, |pos| format!("row {pos}"));
    LiteEngine::ok("write", &le.write(key, &sent).await);
    // Before the close there is no archive.
    let none = le.call("GET", "/blob", key, "", None).await;
    assert_eq!(none.status, 404);
    assert!(!none.error_msg().is_empty());
    LiteEngine::ok("close", &le.close(key).await);
    assert_eq!(archive_rows(&svc, key).await, sent);
    svc.shutdown().await;
}

/// Every `tracing` event and span field of this process, as text.
fn captured_log() -> Arc<Mutex<String>> {
    static LOG: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(String::new()));
        let _ = tracing::subscriber::set_global_default(capture::Capture {
            log: log.clone(),
            next: Default::default(),
        });
        log
    })
    .clone()
}

/// A subscriber that writes everything, at every level, from every crate (hyper
/// and axum included), so a test can search all that could reach a log.
mod capture {
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    pub struct Capture {
        pub log: Arc<Mutex<String>>,
        pub next: AtomicU64,
    }

    struct Text<'a>(&'a mut String);

    impl Visit for Text<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    impl Capture {
        fn write(&self, meta: &Metadata<'_>, record: impl FnOnce(&mut Text<'_>)) {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let _ = write!(log, "{} {} {}:", meta.level(), meta.target(), meta.name());
            record(&mut Text(&mut log));
            log.push('\n');
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            self.write(span.metadata(), |t| span.record(t));
            Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, values: &Record<'_>) {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            values.record(&mut Text(&mut log));
            log.push('\n');
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            self.write(event.metadata(), |t| event.record(t));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn the_token_in_the_query_is_accepted_and_never_logged() {
    let log = captured_log();
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::token_in_query(&svc, &token);
    LiteEngine::ok("open", &le.open(HARNESS_KEY).await);
    let sent = lines(0..4, |pos| format!("query token {pos}"));
    let put = le.write(HARNESS_KEY, &sent).await;
    assert_eq!(put.status, 200, "{}", put.text());
    // Failures log; none of them may log the query that carried the token: a
    // malformed batch, a forged token, a token for another account, a storage
    // failure (a file where the archive's directory must go).
    let bad = le.put(HARNESS_KEY, b"[{\"pos\":\"x\"}]\n").await;
    assert_eq!(bad.status, 400);
    let forged = format!("{token}x");
    let r = LiteEngine::token_in_query(&svc, &forged)
        .put(HARNESS_KEY, b"[]\n")
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let other = svc.token("other-account", Scope::Write);
    let r = LiteEngine::token_in_query(&svc, &other)
        .open(HARNESS_KEY)
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let archives = svc.config().archive_dir().join(ACCOUNT);
    std::fs::create_dir_all(&archives).unwrap();
    std::fs::write(archives.join("blocked"), b"not a directory").unwrap();
    let r = le
        .call(
            "POST",
            "/blob",
            "blocked/x",
            "",
            Some(b"{\"pos\":0,\"out\":\"x\"}\n"),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());

    LiteEngine::ok("close", &le.close(HARNESS_KEY).await);
    assert_eq!(archive_rows(&svc, HARNESS_KEY).await, sent);
    svc.shutdown().await;

    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("storage backend failed"),
        "the capture saw the service's events: {log}"
    );
    for secret in [&token, &forged, &other] {
        assert!(
            !log.contains(secret.as_str()),
            "a token reached the log:\n{log}"
        );
    }
    assert!(
        !log.contains("X-Harness-Token="),
        "a query reached the log:\n{log}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_never_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start_with(ServiceConfig {
        max_append_body: 1 << 20,
        ..test_config(dir.path())
    })
    .await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let q = stream_query(HARNESS_KEY);
    // Far over: more than socket buffers hold, so a server that answers without
    // reading the body closes a connection with unread bytes, which resets it.
    let sent = lines(0..100_000, |pos| format!("{pos} {}", "x".repeat(160)));
    let body = go_put_body(&sent);
    assert!(body.len() > 20 << 20);

    // Over a socket, as lite-engine writes it.
    let r = LiteEngine::new(&svc, &token).put(HARNESS_KEY, &body).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error_msg().contains("larger"), "{}", r.error_msg());

    // And through an HTTP client library, declared length and chunked alike.
    let http = reqwest::Client::new();
    let url = format!("{}/stream?{q}", svc.url());
    let r = http
        .put(&url)
        .header("X-Harness-Token", &token)
        .body(body.clone())
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(r.status(), 413);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error_msg"].is_string(), "{err}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let r = http
        .put(&url)
        .header("X-Harness-Token", &token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(r.status(), 413);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error_msg"].is_string(), "{err}");

    // Nothing of it was stored, and the same client goes on writing.
    let small = lines(0..2, |pos| format!("small {pos}"));
    let r = http
        .put(&url)
        .header("X-Harness-Token", &token)
        .body(go_put_body(&small))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ack: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ack["appended"], 2);
    svc.shutdown().await;
}

#[tokio::test]
async fn a_big_batch_still_counts_against_the_stores_memory_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_bytes_per_stream = 4 << 20;
    let svc = TestService::start_with(cfg).await;
    let token = svc.token(ACCOUNT, Scope::Write);
    // Within the body limit, over the stream's byte limit.
    let sent = lines(0..60_000, |pos| format!("{pos} {}", "y".repeat(60)));
    let body = go_put_body(&sent);
    assert!(body.len() > 4 << 20 && body.len() < svc.config().max_append_body);
    let r = LiteEngine::new(&svc, &token).put(HARNESS_KEY, &body).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(!r.error_msg().is_empty());
    let meta = svc
        .state()
        .streams()
        .meta(&runlog_service::store::StreamId {
            account: ACCOUNT.parse().unwrap(),
            key: HARNESS_KEY.parse().unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(meta.lines, 0, "a refused batch stores nothing");
    svc.shutdown().await;
}

/// The stream's id in the service's store.
fn stream_id(key: &str) -> runlog_service::store::StreamId {
    runlog_service::store::StreamId {
        account: ACCOUNT.parse().unwrap(),
        key: key.parse().unwrap(),
    }
}

#[tokio::test]
async fn harness_operational_routes_answer_at_harness_paths() {
    let svc = TestService::start().await;
    let write = svc.token(ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    let writer = LiteEngine::new(&svc, &write);
    let reader = LiteEngine::new(&svc, &read);

    let ready = go_request(
        svc.addr(),
        "GET",
        "/ready/healthz",
        "",
        Auth::Header(&read),
        None,
    )
    .await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let health: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(health["ok"], true);

    // `GET /stream/info`: a live stream with its counts, then archived only, then none.
    let sent = lines(0..3, |pos| format!("info {pos}"));
    let put = writer.write(HARNESS_KEY, &sent).await;
    assert_eq!(put.status, 200);
    let info = reader
        .call("GET", "/stream/info", HARNESS_KEY, "", None)
        .await;
    assert_eq!(info.status, 200, "{}", info.text());
    let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(
        (
            v["key"].as_str(),
            v["open"].as_bool(),
            v["lines"].as_u64(),
            v["archived"].as_bool()
        ),
        (Some(HARNESS_KEY), Some(true), Some(3), Some(false))
    );
    let exists = reader
        .call("GET", "/blob/exists", HARNESS_KEY, "", None)
        .await;
    assert_eq!((exists.status, exists.text().as_str()), (200, "false"));
    LiteEngine::ok("close", &writer.close(HARNESS_KEY).await);
    let exists = reader
        .call("GET", "/blob/exists", HARNESS_KEY, "", None)
        .await;
    assert_eq!((exists.status, exists.text().as_str()), (200, "true"));
    svc.state()
        .streams()
        .remove(&stream_id(HARNESS_KEY))
        .await
        .unwrap();
    let info = reader
        .call("GET", "/stream/info", HARNESS_KEY, "", None)
        .await;
    assert_eq!(info.status, 200, "{}", info.text());
    let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(
        (v["open"].as_bool(), v["archived"].as_bool()),
        (Some(false), Some(true))
    );

    // `DELETE /blob`: write scope only; 204, then the archive is gone.
    let denied = reader.call("DELETE", "/blob", HARNESS_KEY, "", None).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(archive_rows(&svc, HARNESS_KEY).await, sent);
    let deleted = writer.call("DELETE", "/blob", HARNESS_KEY, "", None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let gone = reader.call("GET", "/blob", HARNESS_KEY, "", None).await;
    assert_eq!(gone.status, 404);
    let again = writer.call("DELETE", "/blob", HARNESS_KEY, "", None).await;
    assert_eq!(again.status, 404);
    assert!(!again.error_msg().is_empty());
    let info = reader
        .call("GET", "/stream/info", HARNESS_KEY, "", None)
        .await;
    assert_eq!(info.status, 404);
    assert!(!info.error_msg().is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn the_global_token_gets_an_account_token_as_harness_managers_ask_for_it() {
    let svc = TestService::start().await;
    let global = svc.admin_token();
    // `GET token?accountID=` with `X-Harness-Token: <global token>`, as Harness's
    // managers call it; the answer's body is the token, nothing around it.
    let r = go_request(
        svc.addr(),
        "GET",
        "/token",
        &format!("accountID={ACCOUNT}"),
        Auth::Header(&global),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let token = r.text();
    assert!(
        !token.is_empty() && !token.contains(['"', '\n', ' ']),
        "{token:?}"
    );

    // The token is the account's: lite-engine writes with it, and it reaches no
    // other account.
    let le = LiteEngine::new(&svc, &token);
    let sent = lines(0..2, |pos| format!("minted {pos}"));
    LiteEngine::ok("open", &le.open(HARNESS_KEY).await);
    LiteEngine::ok("write", &le.write(HARNESS_KEY, &sent).await);
    LiteEngine::ok("close", &le.close(HARNESS_KEY).await);
    assert_eq!(archive_rows(&svc, HARNESS_KEY).await, sent);
    let elsewhere = go_request(
        svc.addr(),
        "POST",
        "/stream",
        "accountID=other&key=k",
        Auth::Header(&token),
        None,
    )
    .await;
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.text());

    // The global token also in the query, as Harness accepts it.
    let r = go_request(
        svc.addr(),
        "GET",
        "/token",
        &format!("accountID={ACCOUNT}"),
        Auth::Query(&global),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Only the global token mints: an account token is refused, no token is 401,
    // a missing account is 400 — each a JSON error.
    let write = svc.token(ACCOUNT, Scope::Write);
    for (auth, query, status) in [
        (Auth::Header(&write), format!("accountID={ACCOUNT}"), 403),
        (Auth::Header(""), format!("accountID={ACCOUNT}"), 401),
        (Auth::Header(&global), String::new(), 400),
    ] {
        let r = go_request(svc.addr(), "GET", "/token", &query, auth, None).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert!(!r.error_msg().is_empty());
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn a_download_link_serves_the_archive_without_a_token_until_it_expires() {
    let svc = TestService::start().await;
    let write = svc.token(ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    let le = LiteEngine::new(&svc, &write);
    let reader = LiteEngine::new(&svc, &read);

    // No archive yet: no link.
    let none = reader
        .call("POST", "/blob/link/download", HARNESS_KEY, "", None)
        .await;
    assert_eq!(none.status, 404, "{}", none.text());
    assert!(!none.error_msg().is_empty());

    let sent = lines(0..20, |pos| format!("to download <{pos}>"));
    LiteEngine::ok("write", &le.write(HARNESS_KEY, &sent).await);
    LiteEngine::ok("close", &le.close(HARNESS_KEY).await);

    let r = reader
        .call("POST", "/blob/link/download", HARNESS_KEY, "", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // `expires` as a Go `time.Duration`: an hour in nanoseconds.
    assert_eq!(v["expires"].as_i64(), Some(3_600_000_000_000), "{v}");
    let link = v["link"].as_str().unwrap().to_owned();

    // Fetched as a browser or `curl` would: no token at all.
    let http = reqwest::Client::new();
    let got = http.get(&link).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let text = got.text().await.unwrap();
    assert_eq!(text.lines().map(str::to_owned).collect::<Vec<_>>(), sent);

    // A link is for its stream alone: another key under the same signature, or
    // the link used as an upload link, is refused.
    let other = link.replace("addon%3A20004", "addon%3A20005");
    assert_ne!(other, link);
    let r = http.get(&other).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let as_upload = link.replace("/blob/read?", "/blob/upload?");
    let r = http
        .put(&as_upload)
        .body(ndjson(&sent))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error_msg"].is_string(), "{err}");

    // Reading needs only read scope; a token of another account gets no link.
    let stranger = svc.token("other-account", Scope::Read);
    let r = LiteEngine::new(&svc, &stranger)
        .call("POST", "/blob/link/download", HARNESS_KEY, "", None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    svc.shutdown().await;
}

#[tokio::test]
async fn an_expired_download_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start_with(ServiceConfig {
        link_ttl: std::time::Duration::ZERO,
        ..test_config(dir.path())
    })
    .await;
    let write = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &write);
    LiteEngine::ok(
        "upload",
        &le.call(
            "POST",
            "/blob",
            HARNESS_KEY,
            "",
            Some(&ndjson(&lines(0..1, |_| "x".into()))),
        )
        .await,
    );
    let r = le
        .call("POST", "/blob/link/download", HARNESS_KEY, "", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let got = reqwest::get(v["link"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.status(), 401);
    let err: serde_json::Value = got.json().await.unwrap();
    assert!(
        err["error_msg"].as_str().unwrap().contains("expired"),
        "{err}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn closing_by_prefix_closes_and_archives_every_open_stream_under_it() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    let stage = "accountId:a/pipelineId:p/runSequence:3/level0:pipeline/level1:stages/level2:s1";
    let steps = [
        format!("{stage}/level3:spec/level4:execution/level5:steps/level6:build"),
        format!("{stage}/level3:spec/level4:execution/level5:steps/level6:test$1"),
    ];
    let elsewhere =
        "accountId:a/pipelineId:p/runSequence:3/level0:pipeline/level1:stages/level2:s2";
    let mut sent = Vec::new();
    for (i, key) in steps
        .iter()
        .map(String::as_str)
        .chain([elsewhere])
        .enumerate()
    {
        let rows = lines(0..3, |pos| format!("stream {i} line {pos}"));
        LiteEngine::ok("write", &le.write(key, &rows).await);
        sent.push(rows);
    }
    // A closed stream under the prefix keeps its own archive.
    let done = format!("{stage}/level3:done");
    LiteEngine::ok(
        "write",
        &le.write(&done, &lines(0..1, |_| "done".into())).await,
    );
    LiteEngine::ok("close", &le.close(&done).await);
    LiteEngine::ok(
        "overwrite",
        &le.call(
            "POST",
            "/blob",
            &done,
            "",
            Some(&ndjson(&lines(0..1, |_| "uploaded".into()))),
        )
        .await,
    );

    // Harness's managers: `DELETE stream?…&key=<prefix>&snapshot=true&prefix=true`.
    let r = le
        .call(
            "DELETE",
            "/stream",
            stage,
            "&snapshot=true&prefix=true",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let closed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut keys: Vec<&str> = closed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, [steps[0].as_str(), steps[1].as_str()]);
    for (key, rows) in steps.iter().zip(&sent) {
        assert_eq!(&archive_rows(&svc, key).await, rows);
        assert!(
            !svc.state()
                .streams()
                .meta(&stream_id(key))
                .await
                .unwrap()
                .open
        );
    }
    assert_eq!(
        archive_rows(&svc, &done).await,
        lines(0..1, |_| "uploaded".into())
    );
    assert!(
        svc.state()
            .streams()
            .meta(&stream_id(elsewhere))
            .await
            .unwrap()
            .open
    );

    // A prefix nothing matches is no error (as in Harness); an empty one is refused.
    let r = le
        .call("DELETE", "/stream", "accountId:none", "&prefix=true", None)
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    let r = le.call("DELETE", "/stream", "", "&prefix=true", None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.error_msg().is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn closing_several_keys_closes_those_named_and_skips_unknown_ones() {
    let svc = TestService::start().await;
    let token = svc.token(ACCOUNT, Scope::Write);
    let le = LiteEngine::new(&svc, &token);
    let keys = ["run/1/step:a", "run/1/step:b$", "run/1/step:c"];
    for key in keys {
        LiteEngine::ok(
            "write",
            &le.write(key, &lines(0..2, |p| format!("{key} {p}"))).await,
        );
    }
    let r = le
        .call(
            "DELETE",
            "/stream",
            "run/1",
            &format!("&snapshot=true&keys={},{},run/1/never", keys[0], keys[1]),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let closed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(closed.as_array().unwrap().len(), 2, "{closed}");
    for key in &keys[..2] {
        assert_eq!(
            archive_rows(&svc, key).await,
            lines(0..2, |p| format!("{key} {p}"))
        );
    }
    assert!(
        svc.state()
            .streams()
            .meta(&stream_id(keys[2]))
            .await
            .unwrap()
            .open
    );

    // An invalid key in the list refuses the whole call before anything closes.
    let r = le
        .call(
            "DELETE",
            "/stream",
            "run/1",
            &format!("&keys={},../escape", keys[2]),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error_msg().contains("escape"), "{}", r.error_msg());
    assert!(
        svc.state()
            .streams()
            .meta(&stream_id(keys[2]))
            .await
            .unwrap()
            .open
    );

    // Read scope closes nothing.
    let read = svc.token(ACCOUNT, Scope::Read);
    let r = LiteEngine::new(&svc, &read)
        .call(
            "DELETE",
            "/stream",
            "run/1",
            &format!("&keys={}", keys[2]),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    svc.shutdown().await;
}

#[tokio::test]
async fn the_zip_of_a_prefix_holds_every_archive_under_it() {
    use std::io::Read as _;
    let svc = TestService::start().await;
    let write = svc.token(ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    let le = LiteEngine::new(&svc, &write);
    let run = "accountId:a/pipelineId:p/runSequence:9";
    let keys = [
        format!("{run}/level0:pipeline"),
        format!("{run}/level0:pipeline/level1:stages/level2:s$1"),
        format!("{run}/level0:pipeline/level1:stages/level2:s2"),
    ];
    let mut sent = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let rows = lines(0..(i as u64 + 2), |pos| format!("archive {i} <{pos}>"));
        LiteEngine::ok("write", &le.write(key, &rows).await);
        LiteEngine::ok("close", &le.close(key).await);
        sent.push(rows);
    }
    let outside = "accountId:a/pipelineId:p/runSequence:90/level0:pipeline";
    LiteEngine::ok(
        "upload",
        &le.call(
            "POST",
            "/blob",
            outside,
            "",
            Some(&ndjson(&lines(0..1, |_| "x".into()))),
        )
        .await,
    );

    // Harness's form: `POST /blob/download?accountID=&prefix=`, no key.
    let prefix = format!("{run}/");
    let reader = async |query: String| {
        go_request(
            svc.addr(),
            "POST",
            "/blob/download",
            &query,
            Auth::Header(&read),
            None,
        )
        .await
    };
    let r = reader(format!("accountID={ACCOUNT}&prefix={prefix}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    assert!(
        v["expires"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    let link = v["link"].as_str().unwrap().to_owned();

    // Fetched without a token.
    let got = reqwest::get(&link).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-type"].to_str().unwrap(),
        "application/zip"
    );
    let bytes = got.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort_unstable();
    let mut expected: Vec<String> = keys.iter().map(|k| format!("{k}.ndjson")).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (key, rows) in keys.iter().zip(&sent) {
        let mut text = String::new();
        zip.by_name(&format!("{key}.ndjson"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(&text.lines().map(str::to_owned).collect::<Vec<_>>(), rows);
    }

    // The signature covers the prefix: a wider one is refused.
    let wider = link.replace("runSequence%3A9%2F", "runSequence%3A9");
    assert_ne!(wider, link);
    assert_eq!(reqwest::get(&wider).await.unwrap().status(), 401);
    // Nothing under a prefix is a 404; no prefix is a 400; another account's token
    // gets nothing.
    let r = reader(format!("accountID={ACCOUNT}&prefix=accountId:none/")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.error_msg().is_empty());
    let r = reader(format!("accountID={ACCOUNT}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.error_msg().is_empty());
    let stranger = svc.token("other-account", Scope::Read);
    let r = go_request(
        svc.addr(),
        "POST",
        "/blob/download",
        &format!("accountID={ACCOUNT}&prefix={prefix}"),
        Auth::Header(&stranger),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    svc.shutdown().await;
}
