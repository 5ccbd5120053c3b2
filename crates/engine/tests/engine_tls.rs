//! The engine over mutual TLS, as Harness's runners reach lite-engine: real handshakes
//! on 127.0.0.1. A client certificate the engine's CA signed is the caller's proof, so
//! a token-less engine may then listen beyond loopback and answer any `Host`; without
//! TLS it still may not.
#![allow(clippy::unwrap_used)]

mod engine_support;

use engine_support::TestEngine;
use runlog_testkit::tls::TlsSet;
use std::net::SocketAddr;

#[tokio::test]
async fn a_runner_reaches_healthz_over_mutual_tls_and_nobody_else_does() {
    let set = TlsSet::new(&[]);
    let tls = set.server_tls();
    let engine = TestEngine::start_with(|c| c.tls = Some(tls)).await;
    assert!(engine.url("/healthz").starts_with("https://127.0.0.1:"));

    // A runner presents the certificate the engine serves.
    let runner = set
        .client_without_identity()
        .identity(set.server_identity())
        .build()
        .unwrap();
    let resp = runner.get(engine.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let anonymous = set.client_without_identity().build().unwrap();
    assert!(anonymous.get(engine.url("/healthz")).send().await.is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", engine.addr))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn with_mutual_tls_a_token_less_engine_listens_beyond_loopback_under_any_name() {
    let set = TlsSet::new(&["engine.test"]);
    let tls = set.server_tls();
    let engine = TestEngine::start_with(|c| {
        c.addr = SocketAddr::from(([0, 0, 0, 0], 0));
        c.tls = Some(tls);
    })
    .await;
    assert!(engine.addr.ip().is_unspecified());
    let port = engine.addr.port();
    let client = set
        .client()
        .resolve("engine.test", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap();
    let url = format!("https://engine.test:{port}/healthz");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);

    // Browsers are still refused: mutual TLS does not make a page a controller.
    let resp = client
        .get(&url)
        .header("origin", "https://engine.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    engine.shutdown().await;
}

#[tokio::test]
async fn without_mutual_tls_a_token_less_engine_keeps_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let beyond = runlog_engine::EngineConfig {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        ..engine_support::test_config(dir.path())
    };
    let refused = runlog_engine::bind(&beyond).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("without a token or mutual TLS"),
        "{refused}"
    );

    // On loopback, a name that is not loopback's is still refused (421).
    let engine = TestEngine::start().await;
    let port = engine.addr.port();
    let resp = reqwest::Client::builder()
        .resolve("engine.test", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .unwrap()
        .get(format!("http://engine.test:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    engine.shutdown().await;
}

#[tokio::test]
async fn with_a_token_as_well_a_caller_needs_both() {
    let set = TlsSet::new(&[]);
    let tls = set.server_tls();
    let engine = TestEngine::start_with(|c| {
        c.tls = Some(tls);
        c.token = Some("s3cret".into());
    })
    .await;
    let client = set.client().build().unwrap();
    let without = client.get(engine.url("/healthz")).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let with = client
        .get(engine.url("/healthz"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    engine.shutdown().await;
}
