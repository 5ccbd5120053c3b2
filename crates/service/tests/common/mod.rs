//! Helpers shared by the service's integration tests: an HTTP client bound to a
//! `TestService`, line builders and an SSE reader.
#![allow(dead_code, clippy::unwrap_used)]

use futures_util::StreamExt;
use reqwest::{Client, Response, StatusCode};
use runlog_protocol::Scope;
use runlog_protocol::service::AppendAck;
use runlog_testkit::service::TestService;
use std::time::Duration;

pub mod viewer;

/// A client for one account with one token.
pub struct Api {
    pub base: String,
    pub account: String,
    pub token: String,
    pub http: Client,
}

impl Api {
    pub fn new(svc: &TestService, account: &str, scope: Scope) -> Api {
        Api {
            base: svc.url(),
            account: account.into(),
            token: svc.token(account, scope),
            http: Client::new(),
        }
    }

    pub fn url(&self, path: &str, key: &str) -> String {
        format!("{}{path}?accountID={}&key={key}", self.base, self.account)
    }

    pub fn req(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path, key))
            .bearer_auth(&self.token)
    }

    pub async fn open(&self, key: &str) {
        let r = self
            .req(reqwest::Method::POST, "/stream", key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "open {key}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn put(&self, key: &str, lines: &[serde_json::Value]) -> Response {
        self.req(reqwest::Method::PUT, "/stream", key)
            .json(lines)
            .send()
            .await
            .unwrap()
    }

    /// `PUT /stream` of a body already encoded.
    pub async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Response {
        self.req(reqwest::Method::PUT, "/stream", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_ok(&self, key: &str, lines: &[serde_json::Value]) -> AppendAck {
        let r = self.put(key, lines).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn close(&self, key: &str, snapshot: bool) {
        let url = format!(
            "{}{}",
            self.url("/stream", key),
            if snapshot { "&snapshot=true" } else { "" }
        );
        let r = self
            .http
            .delete(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "close {key}");
    }

    pub async fn tail(&self, key: &str, last_event_id: Option<u64>) -> Response {
        let mut req = self.req(reqwest::Method::GET, "/stream", key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "tail {key}");
        r
    }

    /// `GET /blob`: the stream's archive as text; it must be served (200).
    pub async fn archive(&self, key: &str) -> String {
        let r = self
            .req(reqwest::Method::GET, "/blob", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "archive of {key}");
        r.text().await.unwrap()
    }

    /// The value of counter `name` on the service's `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let r = self.http.get(format!("{}/metrics", self.base)).send();
        let text = r.await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

/// A value of this process's `/proc/self/status` (`VmRSS:`, `VmHWM:`), in bytes.
pub fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A line as a client sends it.
pub fn line(pos: u64) -> serde_json::Value {
    serde_json::json!({"level": "info", "pos": pos, "out": format!("line {pos}\n"), "time": "2026-11-20T10:00:00.000Z", "args": {}})
}

pub fn lines(range: std::ops::Range<u64>) -> Vec<serde_json::Value> {
    range.map(line).collect()
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE events from `resp` until `done(events)` holds or the stream ends;
/// panics after `deadline`.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    pub events: Vec<Event>,
    pub comments: usize,
    pub ended: bool,
}

impl SseReader {
    pub fn new(resp: Response) -> SseReader {
        SseReader {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            events: Vec::new(),
            comments: 0,
            ended: false,
        }
    }

    fn parse(&mut self) {
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8(frame).expect("SSE is UTF-8");
            let mut ev = Event {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut is_event = false;
            for l in text.lines() {
                if l.starts_with(':') {
                    self.comments += 1;
                } else if let Some(v) = l.strip_prefix("id: ") {
                    ev.id = Some(v.parse().expect("numeric id"));
                    is_event = true;
                } else if let Some(v) = l.strip_prefix("event: ") {
                    ev.event = Some(v.to_owned());
                    is_event = true;
                } else if let Some(v) = l.strip_prefix("data: ") {
                    ev.data.push_str(v);
                    is_event = true;
                }
            }
            if is_event {
                self.events.push(ev);
            }
        }
    }

    pub async fn read_until(&mut self, deadline: Duration, done: impl Fn(&SseReader) -> bool) {
        let until = tokio::time::Instant::now() + deadline;
        while !done(self) {
            if self.ended {
                return;
            }
            match tokio::time::timeout_at(until, self.stream.next()).await {
                Err(_) => panic!(
                    "SSE condition not met within {deadline:?}; got {} events",
                    self.events.len()
                ),
                Ok(None) => self.ended = true,
                Ok(Some(chunk)) => {
                    self.buf.extend_from_slice(&chunk.expect("SSE body"));
                    self.parse();
                }
            }
        }
    }

    /// Reads to the end of the response (eof event and body end).
    pub async fn read_to_end(&mut self, deadline: Duration) {
        self.read_until(deadline, |_| false).await;
    }

    pub fn line_positions(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter(|e| e.event.is_none())
            .filter_map(|e| e.id)
            .collect()
    }

    pub fn saw_eof(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.event.as_deref() == Some("eof"))
    }
}

/// Asserts a JSON error answer with `status`.
pub async fn assert_error(resp: Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let body: serde_json::Value = resp.json().await.unwrap();
    let msg = body["error_msg"]
        .as_str()
        .expect("error_msg string")
        .to_owned();
    assert!(!msg.is_empty());
    msg
}
