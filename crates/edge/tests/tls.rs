//! Mutual TLS at the edge, with real handshakes on 127.0.0.1: a client whose
//! certificate the CA signed is served over TLS 1.3; every other client is refused in
//! the handshake, before any request of it is read; a handshake that stalls is timed
//! out and holds a connection slot meanwhile; bad files fail at load, naming the file.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::routing::get;
use runlog_edge::{Limits, ServerTls, TlsError, TlsFiles, serve_tls};
use runlog_testkit::tls::TlsSet;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A TLS server on a free port, and how many requests reached its route.
struct Server {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(set: &TlsSet, limits: Limits) -> Server {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let app = Router::new().route(
        "/",
        get(move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "ok"
        }),
    );
    let tls = set.server_tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve_tls(listener, app, limits, &tls, async move {
            let _ = stopped.await;
        })
        .await
    });
    Server {
        addr,
        served,
        _stop: stop,
    }
}

fn short(max_connections: usize) -> Limits {
    Limits {
        max_connections: Some(max_connections),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_secs(30),
    }
}

/// The whole error chain of a failed request, for assertions on its cause.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(" / ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A rustls client trusting `set`'s CA, presenting `identity` (certificate, key), and
/// offering h2 before http/1.1, as Go's client does.
fn raw_client(
    set: &TlsSet,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&set.ca_cert).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_client_with_a_certificate_the_ca_signed_is_served_over_tls_1_3() {
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = raw_client(&set, Some((&set.client_cert, &set.client_key)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );

    let resp = server.get(set.client()).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    assert_eq!(server.served.load(Ordering::SeqCst), 2);
}

impl Server {
    /// `GET /` with `client`.
    async fn get(&self, client: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Response> {
        client
            .build()
            .unwrap()
            .get(format!("https://localhost:{}/", self.addr.port()))
            .send()
            .await
    }

    /// `GET /` with `client`, which must fail without reaching the route; why it failed.
    async fn refused(&self, client: reqwest::ClientBuilder) -> String {
        let err = self.get(client).await.unwrap_err();
        assert_eq!(
            self.served.load(Ordering::SeqCst),
            0,
            "the route was reached"
        );
        chain(&err)
    }
}

#[tokio::test]
async fn a_client_presenting_the_servers_own_certificate_is_served() {
    // Harness's runners hold one certificate per machine and present it to the
    // lite-engine that serves it.
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    let runner = set
        .client_without_identity()
        .identity(set.server_identity());
    assert_eq!(server.get(runner).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    let why = server.refused(set.client_without_identity()).await;
    assert!(
        why.contains("received fatal alert: CertificateRequired"),
        "{why}"
    );
}

#[tokio::test]
async fn a_certificate_another_ca_signed_is_refused_in_the_handshake() {
    let set = TlsSet::new(&[]);
    let stranger = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    let why = server
        .refused(
            set.client_without_identity()
                .identity(stranger.client_identity()),
        )
        .await;
    // Both CAs bear the same name (as every runner's CA does), so the server tries the
    // stranger's certificate against its own CA's key: the signature fails
    // (DecryptError). With a differently named CA it would be UnknownCA.
    assert!(
        why.contains("received fatal alert: DecryptError")
            || why.contains("received fatal alert: UnknownCA"),
        "{why}"
    );
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused() {
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    let tls_1_2 = set
        .client()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .max_tls_version(reqwest::tls::Version::TLS_1_2);
    let why = server.refused(tls_1_2).await;
    assert!(why.contains("ProtocolVersion"), "{why}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_not_served() {
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept a plain HTTP connection open");
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
        "answered in plain HTTP: {got:?}"
    );
    assert_eq!(server.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_handshake_that_stalls_is_dropped_after_the_header_timeout() {
    let set = TlsSet::new(&[]);
    let server = start(&set, short(8)).await;
    for opening in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        // Nothing at all, then the start of a ClientHello that never ends.
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(opening).await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "a stalled handshake kept its connection");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    }
}

#[tokio::test]
async fn a_connection_in_its_handshake_holds_a_slot_under_the_cap() {
    let set = TlsSet::new(&[]);
    let limits = Limits {
        header_read_timeout: Duration::from_secs(60),
        ..short(1)
    };
    let server = start(&set, limits).await;
    let stalled = TcpStream::connect(server.addr).await.unwrap();
    let client = set.client().build().unwrap();
    let url = format!("https://localhost:{}/", server.addr.port());
    let next = tokio::spawn(async move { client.get(url).send().await });
    // Held back while the stalled handshake holds the only slot...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "served past the cap of 1");
    // ... and served once it leaves.
    drop(stalled);
    let resp = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
}

/// Sends `()` when dropped: the answer's body was dropped with its connection.
struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_tls_reader_that_stops_reading_is_cut_off_by_the_write_timeout() {
    let set = TlsSet::new(&[]);
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let guard = Arc::new(std::sync::Mutex::new(Some(Dropped(Some(dropped_tx)))));
    // An endless answer: the server always has bytes for this reader.
    let app = Router::new().route(
        "/",
        get(move || {
            let guard = guard.lock().unwrap().take();
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 16]);
            let body = futures_util::stream::repeat_with(move || {
                let _held = &guard;
                Ok::<_, std::convert::Infallible>(chunk.clone())
            });
            async move { axum::body::Body::from_stream(body) }
        }),
    );
    let tls = set.server_tls();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    tokio::spawn(
        async move { serve_tls(listener, app, limits, &tls, std::future::pending()).await },
    );

    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut conn = raw_client(&set, Some((&set.client_cert, &set.client_key)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 4096];
    let n = conn.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    // Now the reader stops; the server's writes stall once the socket buffers fill.
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), dropped)
        .await
        .expect("the stalled answer was never dropped")
        .unwrap();
    assert!(
        stopped.elapsed() >= Duration::from_millis(250),
        "dropped after {:?}",
        stopped.elapsed()
    );
    drop(conn);
}

#[test]
fn bad_files_fail_at_load_naming_the_file() {
    let set = TlsSet::new(&[]);
    let other = TlsSet::new(&[]);
    let missing = set.dir().join("missing.pem");
    let not_pem = set.dir().join("not-pem.txt");
    std::fs::write(&not_pem, "this is not PEM\n").unwrap();

    let error = |f: TlsFiles| ServerTls::from_files(&f).unwrap_err();
    let named = |e: &TlsError, path: &std::path::Path| {
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    };

    let e = error(TlsFiles {
        cert: missing.clone(),
        ..set.files()
    });
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    named(&e, &missing);

    let e = error(TlsFiles {
        cert: not_pem.clone(),
        ..set.files()
    });
    assert!(named(&e, &not_pem).contains("no PEM CERTIFICATE"), "{e}");

    let e = error(TlsFiles {
        key: not_pem.clone(),
        ..set.files()
    });
    assert!(named(&e, &not_pem).contains("no PEM PRIVATE KEY"), "{e}");

    let e = error(TlsFiles {
        client_ca: not_pem.clone(),
        ..set.files()
    });
    assert!(named(&e, &not_pem).contains("no PEM CERTIFICATE"), "{e}");

    // A key is not a certificate, and a certificate is not a key.
    let e = error(TlsFiles {
        cert: set.server_key.clone(),
        ..set.files()
    });
    named(&e, &set.server_key);
    let e = error(TlsFiles {
        key: set.server_cert.clone(),
        ..set.files()
    });
    named(&e, &set.server_cert);

    let garbage = set.dir().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = error(TlsFiles {
        cert: garbage.clone(),
        ..set.files()
    });
    assert!(
        named(&e, &garbage).contains("not a usable certificate"),
        "{e}"
    );

    let e = error(TlsFiles {
        key: other.server_key.clone(),
        ..set.files()
    });
    assert!(
        named(&e, &other.server_key).contains("not the key of"),
        "{e}"
    );

    assert!(ServerTls::from_files(&set.files()).is_ok());
}
