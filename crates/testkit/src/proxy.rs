//! A fault-injecting HTTP/1 proxy for tests: put it between a client and a real
//! server to see how the client copes with an unreliable network and service.
//!
//! It listens on `127.0.0.1:<random port>` and forwards every request to the
//! upstream base URL, except when it decides to inject a fault. Each request draws
//! one fault from the configured [`Faults`] mix, using a seeded random generator
//! (same seed and same request order → same faults):
//!
//! | fault | what the client sees | did the request reach upstream? |
//! |---|---|---|
//! | `status_500` | `500 {"error_msg": "injected fault"}` | no |
//! | `status_429` | `429` with `Retry-After: 0` | no |
//! | `reset` | connection closed before any answer | no |
//! | `drop_response` | connection closed before any answer | **yes** (tests idempotent retries) |
//! | `close_mid_body` | status and headers, then the body stops and the connection closes | yes |
//! | `delay` | the answer after `delay_ms` | yes |
//! | `stall` | nothing until the faults are changed, then a closed connection | no |
//!
//! [`FaultProxy::set_request_rate`] makes it a slow link instead: request bodies are
//! read at that many bytes a second (the client's sends back up behind it).
//!
//! The mix can be switched at runtime ([`FaultProxy::set_faults`]), and
//! [`FaultProxy::set_down`] simulates an outage: while down, new connections are
//! accepted and closed at once and requests on open connections are dropped.
//!
//! ```no_run
//! # async fn t() {
//! use runlog_testkit::proxy::{FaultProxy, Faults};
//! let proxy = FaultProxy::start("http://127.0.0.1:8079", Faults::mixed(0.3), 42).await;
//! // … point the client at proxy.url() …
//! proxy.set_down(true);   // outage
//! proxy.set_down(false);  // recovery
//! println!("{:?}", proxy.stats());
//! # }
//! ```

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Probabilities (each 0.0–1.0, summing to at most 1.0) of each fault per request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Answer `500` without forwarding.
    pub status_500: f64,
    /// Answer `429` without forwarding.
    pub status_429: f64,
    /// Close the connection without forwarding or answering.
    pub reset: f64,
    /// Forward, then close the connection without answering (the request landed).
    pub drop_response: f64,
    /// Forward, send the status and half of the body, then close the connection.
    pub close_mid_body: f64,
    /// Forward after waiting `delay_ms`.
    pub delay: f64,
    /// How long a `delay` fault waits.
    pub delay_ms: u64,
    /// Hold the request without answering until the faults are changed, then close.
    pub stall: f64,
}

impl Faults {
    /// No faults: a plain proxy.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// A total fault probability `total`, spread evenly over every kind except
    /// `stall` (delays of 20 ms).
    pub fn mixed(total: f64) -> Faults {
        let each = total / 6.0;
        Faults {
            status_500: each,
            status_429: each,
            reset: each,
            drop_response: each,
            close_mid_body: each,
            delay: each,
            delay_ms: 20,
            stall: 0.0,
        }
    }

    /// Every request stalls (a service that accepts connections but never answers).
    pub fn stalled() -> Faults {
        Faults {
            stall: 1.0,
            ..Faults::default()
        }
    }
}

/// What the proxy did, counted per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests received.
    pub requests: u64,
    /// Requests forwarded upstream (including those whose answer was then damaged).
    pub forwarded: u64,
    /// Injected 500s.
    pub status_500: u64,
    /// Injected 429s.
    pub status_429: u64,
    /// Connections reset before forwarding.
    pub reset: u64,
    /// Answers dropped after forwarding.
    pub drop_response: u64,
    /// Bodies cut in the middle.
    pub close_mid_body: u64,
    /// Delayed requests.
    pub delay: u64,
    /// Stalled requests.
    pub stall: u64,
    /// Connections refused while down.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Status500,
    Status429,
    Reset,
    DropResponse,
    CloseMidBody,
    Delay,
    Stall,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    forwarded: AtomicU64,
    status_500: AtomicU64,
    status_429: AtomicU64,
    reset: AtomicU64,
    drop_response: AtomicU64,
    close_mid_body: AtomicU64,
    delay: AtomicU64,
    stall: AtomicU64,
    refused: AtomicU64,
}

struct Shared {
    upstream: Mutex<String>,
    faults: Mutex<(Faults, StdRng)>,
    /// Bumped whenever the faults change: releases stalled requests.
    generation: watch::Sender<u64>,
    down: AtomicBool,
    /// Bytes a second at which request bodies are read; 0: as fast as they come.
    request_rate: AtomicU64,
    http: reqwest::Client,
    counts: Counters,
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct Dropped(&'static str);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection dropped by the fault proxy: {}", self.0)
    }
}

impl std::error::Error for Dropped {}

type Body = BoxBody<Bytes, std::io::Error>;

/// A running fault-injecting proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (a base URL such as
    /// `http://127.0.0.1:8079`), injecting `faults` drawn with `seed`.
    pub async fn start(upstream: &str, faults: Faults, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy to 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.trim_end_matches('/').to_owned()),
            faults: Mutex::new((faults, StdRng::seed_from_u64(seed))),
            generation: watch::channel(0).0,
            down: AtomicBool::new(false),
            request_rate: AtomicU64::new(0),
            // No timeout: a slow upstream is passed on as it is.
            http: reqwest::Client::builder().build().expect("an HTTP client"),
            counts: Counters::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy { addr, shared, task }
    }

    /// The proxy's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault mix (the random sequence continues); releases stalled requests.
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0 = faults;
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Points the proxy at another upstream (e.g. a restarted service on a new port);
    /// the client keeps the proxy's address.
    pub fn set_upstream(&self, upstream: &str) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = upstream.trim_end_matches('/').to_owned();
    }

    /// Simulates an outage (`true`) or ends it (`false`).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Reads request bodies at `bytes_per_sec` from now on (`None`: at full speed),
    /// as a slow uplink between client and server would carry them.
    pub fn set_request_rate(&self, bytes_per_sec: Option<u64>) {
        let rate = bytes_per_sec.map_or(0, |r| r.max(1));
        self.shared.request_rate.store(rate, Ordering::SeqCst);
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            requests: l(&c.requests),
            forwarded: l(&c.forwarded),
            status_500: l(&c.status_500),
            status_429: l(&c.status_429),
            reset: l(&c.reset),
            drop_response: l(&c.drop_response),
            close_mid_body: l(&c.close_mid_body),
            delay: l(&c.delay),
            stall: l(&c.stall),
            refused: l(&c.refused),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if shared.down.load(Ordering::SeqCst) {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, shared.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            // Errors here are the injected drops (or a client going away): expected.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
        // Reap finished connections so the set does not grow for the whole test.
        while conns.try_join_next().is_some() {}
    }
}

fn upstream_of(shared: &Shared) -> String {
    shared
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

fn draw(shared: &Shared) -> (Fault, u64) {
    let mut g = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
    let (f, rng) = &mut *g;
    let x: f64 = rng.random();
    let table = [
        (f.status_500, Fault::Status500),
        (f.status_429, Fault::Status429),
        (f.reset, Fault::Reset),
        (f.drop_response, Fault::DropResponse),
        (f.close_mid_body, Fault::CloseMidBody),
        (f.delay, Fault::Delay),
        (f.stall, Fault::Stall),
    ];
    let mut acc = 0.0;
    for (p, fault) in table {
        acc += p;
        if x < acc {
            return (fault, f.delay_ms);
        }
    }
    (Fault::None, f.delay_ms)
}

/// The whole request body, read at `rate` bytes a second (0: at once).
async fn read_body(mut body: Incoming, rate: u64) -> Result<Bytes, Dropped> {
    if rate == 0 {
        return Ok(body
            .collect()
            .await
            .map_err(|_| Dropped("request body broken"))?
            .to_bytes());
    }
    let started = tokio::time::Instant::now();
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Dropped("request body broken"))?;
        if let Ok(data) = frame.into_data() {
            all.extend_from_slice(&data);
            // Not reading on until the link would have carried what came so far:
            // hyper stops reading the socket, and the client's sends back up.
            let due = Duration::from_secs_f64(all.len() as f64 / rate as f64);
            tokio::time::sleep_until(started + due).await;
        }
    }
    Ok(Bytes::from(all))
}

fn full(status: u16, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Dropped> {
    let c = &shared.counts;
    c.requests.fetch_add(1, Ordering::Relaxed);
    if shared.down.load(Ordering::SeqCst) {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return Err(Dropped("down"));
    }
    let (fault, delay_ms) = draw(&shared);
    match fault {
        Fault::Status500 => {
            c.status_500.fetch_add(1, Ordering::Relaxed);
            return Ok(full(500, r#"{"error_msg":"injected fault"}"#));
        }
        Fault::Status429 => {
            c.status_429.fetch_add(1, Ordering::Relaxed);
            let mut r = full(429, r#"{"error_msg":"injected throttling"}"#);
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("0"),
            );
            return Ok(r);
        }
        Fault::Reset => {
            c.reset.fetch_add(1, Ordering::Relaxed);
            return Err(Dropped("reset"));
        }
        Fault::Stall => {
            c.stall.fetch_add(1, Ordering::Relaxed);
            let mut gen_rx = shared.generation.subscribe();
            let _ = gen_rx.changed().await;
            return Err(Dropped("stalled"));
        }
        Fault::Delay => {
            c.delay.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Fault::None | Fault::DropResponse | Fault::CloseMidBody => {}
    }

    let (parts, body) = req.into_parts();
    let body = read_body(body, shared.request_rate.load(Ordering::SeqCst)).await?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    for h in [
        http::header::HOST,
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::CONTENT_LENGTH,
    ] {
        headers.remove(h);
    }
    let upstream = shared
        .http
        .request(parts.method, format!("{}{path}", upstream_of(&shared)))
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|_| Dropped("upstream unreachable"))?;
    c.forwarded.fetch_add(1, Ordering::Relaxed);

    if fault == Fault::DropResponse {
        c.drop_response.fetch_add(1, Ordering::Relaxed);
        let _ = upstream.bytes().await;
        return Err(Dropped("response dropped"));
    }

    let mut resp = Response::builder().status(upstream.status());
    for (k, v) in upstream.headers() {
        if k != http::header::CONNECTION && k != http::header::TRANSFER_ENCODING {
            resp = resp.header(k, v);
        }
    }
    let body: Body = if fault == Fault::CloseMidBody {
        c.close_mid_body.fetch_add(1, Ordering::Relaxed);
        let all = upstream
            .bytes()
            .await
            .map_err(|_| Dropped("upstream body broken"))?;
        let half = all.slice(..all.len() / 2);
        // Yield once between the half body and the error: hyper flushes what it has
        // when the body is pending, so the client really gets the head and half the
        // body before the connection breaks (not just a connection that never answered).
        let frames = futures_util::stream::iter([Ok(Frame::data(half))]).chain(
            futures_util::stream::once(async {
                tokio::task::yield_now().await;
                Err(std::io::Error::other("body cut by the fault proxy"))
            }),
        );
        BodyExt::boxed(StreamBody::new(frames))
    } else {
        let frames = upstream
            .bytes_stream()
            .map(|r| r.map(Frame::data).map_err(std::io::Error::other));
        BodyExt::boxed(StreamBody::new(frames))
    };
    resp.body(body).map_err(|_| Dropped("bad upstream answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_draws_the_same_faults() {
        let mk = || Shared {
            upstream: Mutex::new(String::new()),
            faults: Mutex::new((Faults::mixed(0.5), StdRng::seed_from_u64(7))),
            generation: watch::channel(0).0,
            down: AtomicBool::new(false),
            request_rate: AtomicU64::new(0),
            http: reqwest::Client::new(),
            counts: Counters::default(),
        };
        let (a, b) = (mk(), mk());
        let da: Vec<Fault> = (0..100).map(|_| draw(&a).0).collect();
        let db: Vec<Fault> = (0..100).map(|_| draw(&b).0).collect();
        assert_eq!(da, db);
        let faulty = da.iter().filter(|f| **f != Fault::None).count();
        assert!(
            (30..=70).contains(&faulty),
            "about half should be faults, got {faulty}"
        );
    }
}
