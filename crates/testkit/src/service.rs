//! Starts a real log service on a free loopback port for a test.
//!
//! ```no_run
//! # async fn t() {
//! use runlog_testkit::service::TestService;
//! let svc = TestService::start().await;
//! let token = svc.token("acc", runlog_protocol::Scope::Write);
//! // … speak HTTP to svc.url() with `Authorization: Bearer {token}` …
//! svc.shutdown().await;
//! # }
//! ```

use runlog_protocol::{AccountId, Scope};
use runlog_service::config::BlobBackend;
use runlog_service::store::{BlobStore, StreamStore};
use runlog_service::{ServiceConfig, ServiceState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A log service running in this process on `127.0.0.1:<random port>`.
pub struct TestService {
    addr: SocketAddr,
    config: ServiceConfig,
    secret: String,
    /// Stores injected by the caller: reused across restarts (they outlive the
    /// process in real life, e.g. Redis). `None`: rebuilt from `config`, so a
    /// restart loses live streams and keeps local archives, like a real one.
    injected: Option<(Arc<dyn StreamStore>, BlobStore)>,
    state: ServiceState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    // Dropped last: removes the data directory when the test ends.
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// A configuration for tests: loopback, a fresh temp data dir, random admin secret.
pub fn test_config(data_dir: &Path) -> ServiceConfig {
    ServiceConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        admin_secret: Some(runlog_service::auth::generate_secret()),
        ..ServiceConfig::default()
    }
}

impl TestService {
    /// Memory streams, local archives in a temp dir, random admin secret.
    pub async fn start() -> TestService {
        let dir = Arc::new(tempfile::tempdir().expect("create a temp data dir"));
        let cfg = test_config(dir.path());
        Self::launch(cfg, None, Some(dir)).await
    }

    /// Starts with `config` (its `addr` is replaced by `127.0.0.1:0`; a missing
    /// admin secret is generated into its data dir).
    pub async fn start_with(config: ServiceConfig) -> TestService {
        Self::launch(config, None, None).await
    }

    /// Starts over the given stores (e.g. Redis + S3), in a temp data dir.
    pub async fn start_with_stores(streams: Arc<dyn StreamStore>, blobs: BlobStore) -> TestService {
        let dir = Arc::new(tempfile::tempdir().expect("create a temp data dir"));
        let cfg = test_config(dir.path());
        Self::launch(cfg, Some((streams, blobs)), Some(dir)).await
    }

    /// Starts with `config` over the given stores.
    pub async fn start_with_config_and_stores(
        config: ServiceConfig,
        streams: Arc<dyn StreamStore>,
        blobs: BlobStore,
    ) -> TestService {
        Self::launch(config, Some((streams, blobs)), None).await
    }

    async fn launch(
        mut config: ServiceConfig,
        injected: Option<(Arc<dyn StreamStore>, BlobStore)>,
        dir: Option<Arc<tempfile::TempDir>>,
    ) -> TestService {
        config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let secret = runlog_service::auth::load_or_create_secret(
            config.admin_secret.as_deref(),
            &config.data_dir,
        )
        .expect("admin secret");
        config.admin_secret = Some(secret.clone());
        let (streams, blobs) = match &injected {
            Some((s, b)) => (s.clone(), b.clone()),
            None => (
                runlog_service::backend::stream_store(&config)
                    .await
                    .expect("stream store"),
                runlog_service::backend::blob_store(&config)
                    .await
                    .expect("blob store"),
            ),
        };
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = ServiceState::new(config.clone(), streams, blobs, secret.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runlog_service::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        TestService {
            addr,
            config,
            secret,
            injected,
            state,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin secret (mint your own tokens with `runlog_service::auth`).
    pub fn admin_secret(&self) -> &str {
        &self.secret
    }

    /// The data directory (archives live under `archives/`).
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The running service's state (stores, counters).
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// A token for `account` with `scope`, valid for an hour. `Scope::Admin` gives an
    /// admin token (not bound to the account).
    pub fn token(&self, account: &str, scope: Scope) -> String {
        let account = AccountId::new(account).expect("valid account id");
        let bound = (scope != Scope::Admin).then_some(&account);
        runlog_service::auth::mint_token(
            self.secret.as_bytes(),
            bound,
            scope,
            Duration::from_secs(3600),
        )
        .expect("mint token")
    }

    /// A stage's `log_config` (`/setup`'s JSON) that streams to this service as
    /// `account`, with a write token, archives uploaded through the service
    /// (`indirect_upload`).
    pub fn log_config(&self, account: &str) -> serde_json::Value {
        serde_json::json!({
            "url": self.url(),
            "account_id": account,
            "token": self.token(account, Scope::Write),
            "indirect_upload": true,
        })
    }

    /// An admin token.
    pub fn admin_token(&self) -> String {
        runlog_service::auth::mint_token(
            self.secret.as_bytes(),
            None,
            Scope::Admin,
            Duration::from_secs(3600),
        )
        .expect("mint admin token")
    }

    /// Stops gracefully and starts again with the same data dir and secret (and the
    /// same injected stores, if any). Returns the new URL (the port changes).
    pub async fn restart(&mut self) -> String {
        self.stop_server().await;
        let dir = self._dir.take();
        let injected = self.injected.take();
        let mut config = self.config.clone();
        config.admin_secret = Some(self.secret.clone());
        *self = Self::launch(config, injected, dir).await;
        self.url()
    }

    /// Stops gracefully: open SSE responses end, in-flight requests finish.
    pub async fn shutdown(mut self) {
        self.stop_server().await;
    }

    async fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("log service failed: {e}"),
                Ok(Err(e)) => panic!("log service task panicked: {e}"),
                Err(_) => panic!("log service did not shut down within 30 s"),
            }
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Uses `BlobBackend::Memory`: a config whose archives vanish with the process.
pub fn memory_blob_config(data_dir: &Path) -> ServiceConfig {
    ServiceConfig {
        blob_backend: BlobBackend::Memory,
        ..test_config(data_dir)
    }
}
