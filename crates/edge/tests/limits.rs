//! Peers that do not play by the protocol, against a real server on 127.0.0.1: each is
//! cut off within its limit, and the cap on connections holds the next peer back
//! instead of failing it.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::{get, post};
use runlog_edge::{Limits, serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A server with `limits` on a free port; it stops when the returned sender drops.
async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/echo",
        post(|body: axum::body::Bytes| async move { body.len().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn short(max_connections: usize) -> Limits {
    Limits {
        max_connections: Some(max_connections),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(30),
    }
}

/// Reads until the server closes the connection; what it sent, and how long it took.
async fn until_closed(conn: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    // Generous: a server that never closes fails here, not by hanging the suite.
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (addr, _stop) = start(short(8)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let (said, took) = until_closed(&mut idle).await;
    assert!(!said.contains("200"), "{said}");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}

#[tokio::test]
async fn headers_that_stop_halfway_are_cut_off() {
    let (addr, _stop) = start(short(8)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (said, _) = until_closed(&mut slow).await;
    assert!(!said.contains("200 OK"), "{said}");
}

#[tokio::test]
async fn a_kept_alive_connection_that_goes_idle_is_closed() {
    let (addr, _stop) = start(short(8)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (said, took) = until_closed(&mut conn).await;
    assert!(
        said.starts_with("HTTP/1.1 200") && said.ends_with("ok"),
        "{said}"
    );
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_timed_out() {
    let (addr, _stop) = start(short(8)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (said, _) = until_closed(&mut conn).await;
    assert!(
        !said.contains("\r\n\r\n100"),
        "a body that never came was taken: {said}"
    );
}

#[tokio::test]
async fn at_the_connection_cap_the_next_peer_waits_and_is_served_when_one_leaves() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(60),
        ..short(2)
    };
    let (addr, _stop) = start(limits).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let http = reqwest::Client::new();
    let third = tokio::spawn(async move { http.get(format!("http://{addr}/")).send().await });
    // Held back while both slots are taken (the kernel's backlog holds it)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the cap of 2"
    );
    // ... and served as soon as one leaves.
    drop(first);
    let resp = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn well_behaved_requests_are_unaffected() {
    let (addr, _stop) = start(Limits::default()).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let resp = http
            .post(format!("http://{addr}/echo"))
            .body(vec![b'x'; 1 << 20])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), (1 << 20).to_string());
    }
}
