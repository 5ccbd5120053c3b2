//! A small log service with the semantics of Harness's log service, for testing
//! runlog's writer against a service that is not runlog's: every stream route answers
//! 204 with no body, `POST /blob` and upload links store the body exactly as it
//! arrives (no decompression, no validation), an upload link's `expires` is a Go
//! `time.Duration` (integer nanoseconds), and the token is read from
//! `X-Harness-Token` only. Every request is recorded (method, path and query,
//! headers, body) so a test can assert exactly what a client sent.
//!
//! Written from the protocol's observable behaviour, not from Harness's code. Where
//! the real service's behaviour is not pinned down, this fake chooses the strict
//! reading: a `PUT` or `DELETE` of a stream nobody opened is a 404, so a client that
//! relies on a stream it did not open is caught.
//!
//! ```no_run
//! # async fn t() {
//! use runlog_testkit::harness::HarnessService;
//! let svc = HarnessService::start("secret-token").await;
//! // … point a client at svc.url() with X-Harness-Token: secret-token …
//! let sent = svc.requests();
//! # }
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// What an upload link answers for `expires`: one hour, as a Go `time.Duration`.
pub const LINK_EXPIRES_NANOS: u64 = 3_600_000_000_000;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `PUT`, `DELETE`, …
    pub method: String,
    /// The path and query exactly as sent (`/stream?accountID=a&key=k`).
    pub path_and_query: String,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (not decompressed).
    pub body: Bytes,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// Whether the query holds `name=value` (compared after percent-decoding).
    pub fn has_query(&self, name: &str, value: &str) -> bool {
        let Some((_, q)) = self.path_and_query.split_once('?') else {
            return false;
        };
        reqwest::Url::parse(&format!("http://h/?{q}"))
            .is_ok_and(|u| u.query_pairs().any(|(n, v)| n == name && v == value))
    }
}

/// One stream: its lines as received, in arrival order. A closed stream is kept so a
/// test can read what it received; it takes no more lines.
#[derive(Debug, Default, Clone)]
struct Live {
    lines: Vec<serde_json::Value>,
    closed: bool,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Streams by key, open or closed.
    streams: HashMap<String, Live>,
    /// Stored blobs by key: raw bodies, or a snapshot's NDJSON.
    blobs: HashMap<String, Bytes>,
    /// Keys that were closed (`DELETE /stream`), in order.
    closed: Vec<String>,
    /// Upload links handed out and not used yet: link id → key.
    links: HashMap<String, String>,
}

struct Shared {
    token: String,
    base: String,
    down: AtomicBool,
    next_link: AtomicU64,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide its own failure
        // behind a poisoned-lock panic in the server task.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake service on `127.0.0.1:<random port>`; stops when dropped.
pub struct HarnessService {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    #[serde(rename = "accountID", default)]
    account_id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    snapshot: Option<String>,
}

impl HarnessService {
    /// Starts the fake; every route but an upload link requires
    /// `X-Harness-Token: <token>`.
    pub async fn start(token: &str) -> HarnessService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            base: format!("http://{addr}"),
            down: AtomicBool::new(false),
            next_link: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/stream", post(open).put(append).delete(close))
            .route("/blob", post(upload))
            .route("/blob/link/upload", post(link))
            .route("/link/{id}", put(link_put))
            .fallback(fallback)
            // Archives of any size: the real service streams them to its store.
            .layer(DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                record_and_gate,
            ))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HarnessService { shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Opens `key` as another client would (a controller that opens streams its
    /// writers use with `skip_opening_stream`); not recorded as a request.
    pub fn open(&self, key: &str) {
        open_stream(&mut self.shared.lock(), key);
    }

    /// Every line stream `key` received, as received (in arrival order, repeats
    /// included), whether it is still open or closed.
    pub fn lines(&self, key: &str) -> Option<Vec<serde_json::Value>> {
        self.shared.lock().streams.get(key).map(|s| s.lines.clone())
    }

    /// Whether stream `key` is open (opened and not closed since).
    pub fn is_open(&self, key: &str) -> bool {
        self.shared
            .lock()
            .streams
            .get(key)
            .is_some_and(|s| !s.closed)
    }

    /// The stored blob of `key`: the raw body of its last upload, or the snapshot a
    /// `DELETE /stream?snapshot=true` made.
    pub fn blob(&self, key: &str) -> Option<Bytes> {
        self.shared.lock().blobs.get(key).cloned()
    }

    /// Keys closed with `DELETE /stream`, in order.
    pub fn closed(&self) -> Vec<String> {
        self.shared.lock().closed.clone()
    }

    /// While `down`, every request is recorded and answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for HarnessService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records the request (the body is read here, so handlers get it back whole), then
/// answers 503 while the fake is down and 401 without the right token.
async fn record_and_gate(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    s.lock().requests.push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers,
        body: bytes.clone(),
    });
    if s.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "down");
    }
    // An upload link carries its own authorisation (the real one is object storage).
    let is_link = parts.uri.path().starts_with("/link/");
    let token_ok = parts
        .headers
        .get("x-harness-token")
        .is_some_and(|v| v.as_bytes() == s.token.as_bytes());
    if !is_link && !token_ok {
        return error(StatusCode::UNAUTHORIZED, "missing or bad X-Harness-Token");
    }
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error_msg": msg }))).into_response()
}

fn bad_key(q: &KeyQuery) -> Option<Response> {
    (q.account_id.is_empty() || q.key.is_empty())
        .then(|| error(StatusCode::BAD_REQUEST, "accountID and key are required"))
}

async fn open(State(s): State<Arc<Shared>>, Query(q): Query<KeyQuery>) -> Response {
    if let Some(r) = bad_key(&q) {
        return r;
    }
    open_stream(&mut s.lock(), &q.key);
    StatusCode::NO_CONTENT.into_response()
}

/// Opening an open stream keeps it; opening a closed one starts it afresh.
fn open_stream(g: &mut Inner, key: &str) {
    let live = g.streams.entry(key.to_owned()).or_default();
    if live.closed {
        *live = Live::default();
    }
}

async fn append(State(s): State<Arc<Shared>>, Query(q): Query<KeyQuery>, body: Bytes) -> Response {
    if let Some(r) = bad_key(&q) {
        return r;
    }
    let lines: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match s.lock().streams.get_mut(&q.key) {
        Some(live) if !live.closed => {
            live.lines.extend(lines);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "stream not found"),
    }
}

async fn close(State(s): State<Arc<Shared>>, Query(q): Query<KeyQuery>) -> Response {
    if let Some(r) = bad_key(&q) {
        return r;
    }
    let mut g = s.lock();
    let Some(live) = g.streams.get_mut(&q.key).filter(|l| !l.closed) else {
        return error(StatusCode::NOT_FOUND, "stream not found");
    };
    live.closed = true;
    let lines = live.lines.clone();
    if q.snapshot.as_deref() == Some("true") {
        // The stream's lines become the stored history, one JSON object a line.
        let mut nd = Vec::new();
        for l in &lines {
            nd.extend_from_slice(l.to_string().as_bytes());
            nd.push(b'\n');
        }
        g.blobs.insert(q.key.clone(), nd.into());
    }
    g.closed.push(q.key);
    StatusCode::NO_CONTENT.into_response()
}

async fn upload(State(s): State<Arc<Shared>>, Query(q): Query<KeyQuery>, body: Bytes) -> Response {
    if let Some(r) = bad_key(&q) {
        return r;
    }
    // Stored as it came: a gzip body stays gzip bytes.
    s.lock().blobs.insert(q.key, body);
    StatusCode::NO_CONTENT.into_response()
}

async fn link(State(s): State<Arc<Shared>>, Query(q): Query<KeyQuery>) -> Response {
    if let Some(r) = bad_key(&q) {
        return r;
    }
    let id = s.next_link.fetch_add(1, Ordering::SeqCst);
    let id = format!("l{id}");
    s.lock().links.insert(id.clone(), q.key);
    axum::Json(serde_json::json!({
        "link": format!("{}/link/{id}?X-Amz-Signature=fake", s.base),
        "expires": LINK_EXPIRES_NANOS,
    }))
    .into_response()
}

async fn link_put(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let mut g = s.lock();
    match g.links.remove(&id) {
        Some(key) => {
            g.blobs.insert(key, body);
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::FORBIDDEN, "unknown or used link"),
    }
}

async fn fallback(method: Method, uri: Uri, _h: HeaderMap) -> Response {
    error(StatusCode::NOT_FOUND, &format!("no route {method} {uri}"))
}
