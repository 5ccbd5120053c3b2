//! A real S3-compatible server (`moto_server`) on a free loopback port (chosen as
//! `child.rs` explains), for tests of
//! the S3 blob store, presigned uploads and S3 outages.
//!
//! moto keeps objects in memory: [`S3Server::stop`] + [`S3Server::start`] is an
//! outage that also loses the bucket, so tests call [`S3Server::create_bucket`]
//! again after a restart. The binary comes from `RUNLOG_TEST_MOTO_SERVER`, else
//! `moto_server` on `PATH` (PyPI `moto[server]`).

use crate::child::{
    START_ATTEMPTS, StartError, fixture_port, spawn_until_answering, start_while_port_taken,
    tool_path,
};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// moto is a Python program: its first start on a cold machine takes seconds.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Credentials moto accepts (it checks that a signature is present, not the secret).
pub const ACCESS_KEY_ID: &str = "runlog-test-key";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "runlog-test-secret";
/// Region the fixtures use.
pub const REGION: &str = "us-east-1";

/// A running (or stopped) `moto_server`, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server on a free `127.0.0.1` port and waits until it answers HTTP.
    ///
    /// # Panics
    /// When no `moto_server` is found or it does not come up.
    pub async fn start_new() -> S3Server {
        let mut server = S3Server {
            binary: tool_path("RUNLOG_TEST_MOTO_SERVER", "moto_server"),
            port: 0,
            child: None,
        };
        let failure = format!("moto_server found its port taken {START_ATTEMPTS} times");
        start_while_port_taken(&failure, Duration::ZERO, async || {
            // A fresh port each time the last one was found taken (see `child.rs`).
            server.port = fixture_port();
            server.try_start().await
        })
        .await;
        server
    }

    /// `http://127.0.0.1:PORT`: the `AWS_ENDPOINT` of this server.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again on the same port after [`stop`](Self::stop) (empty:
    /// moto keeps nothing across restarts). No-op when running.
    ///
    /// # Panics
    /// When it does not come up, or its port stays taken.
    pub async fn start(&mut self) {
        let failure = format!("moto_server could not take its port {} again", self.port);
        start_while_port_taken(&failure, Duration::from_millis(200), async || {
            self.try_start().await
        })
        .await;
    }

    /// One start on the port chosen; no-op when it is running.
    async fn try_start(&mut self) -> Result<(), StartError> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let this = &*self;
        let child = spawn_until_answering(
            cmd,
            "moto_server",
            this.port,
            START_DEADLINE,
            Duration::from_millis(50),
            || this.answers(),
        )
        .await?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server (an abrupt outage) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// [`stop`](Self::stop) then [`start`](Self::start); the bucket must be created again.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Creates a bucket (idempotent on moto). Panics if the server refuses.
    pub async fn create_bucket(&self, bucket: &str) {
        let status = self
            .raw_request("PUT", &format!("/{bucket}"), b"")
            .await
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
        assert!(
            status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
            "create bucket {bucket}: {status}"
        );
    }

    /// Whether the server answers an HTTP request right now.
    pub async fn answers(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.raw_request("GET", "/", b""))
            .await
            .map(|r| r.is_ok_and(|status| status.starts_with("HTTP/")))
            .unwrap_or(false)
    }

    /// One unauthenticated HTTP/1.1 request (moto accepts those); returns the status line.
    async fn raw_request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        let reply = String::from_utf8_lossy(&reply);
        Ok(reply.lines().next().unwrap_or_default().to_owned())
    }
}
