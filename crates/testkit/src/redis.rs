//! A real `redis-server` on a free loopback port, for tests of the Redis stream store.
//!
//! The server keeps its data in a temporary directory with an append-only file
//! synced on every write, so [`RedisServer::stop`] + [`RedisServer::start`] (or
//! [`RedisServer::restart`]) behaves like a production restart: acknowledged data
//! survives, and clients see a real outage in between. The binary comes from
//! `RUNLOG_TEST_REDIS_SERVER`, else `redis-server` on `PATH`.

use crate::child::{free_port, spawn_until_answering, tool_path};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a fresh server may take to answer `PING`.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running (or stopped, between [`stop`](Self::stop) and [`start`](Self::start))
/// `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free `127.0.0.1` port and waits until it answers `PING`.
    ///
    /// # Panics
    /// When no `redis-server` binary is found or it does not come up: a test that
    /// needs Redis must fail loudly rather than pass without it.
    pub async fn start_new() -> RedisServer {
        Self::start_new_with(&[]).await
    }

    /// Like [`start_new`](Self::start_new), with extra `redis-server` arguments
    /// that override the defaults (e.g. `["--appendfsync", "everysec"]` for a
    /// benchmark that should measure Redis as deployed, not a test's fsync-always).
    pub async fn start_new_with(extra_args: &[&str]) -> RedisServer {
        let binary = tool_path("RUNLOG_TEST_REDIS_SERVER", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let port = free_port();
        let mut server = RedisServer {
            binary,
            dir,
            port,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        server.start().await;
        server
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again on the same port after [`stop`](Self::stop). No-op
    /// when it is running.
    pub async fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            // Every acknowledged write is on disk before the reply, so a restart in a
            // test loses nothing the store was told is stored.
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "yes", "--loglevel", "warning"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let this = &*self;
        let child = spawn_until_answering(
            cmd,
            "redis-server",
            this.port,
            START_DEADLINE,
            Duration::from_millis(20),
            || this.ping(),
        )
        .await;
        self.child = Some(child);
    }

    /// Kills the server (an abrupt outage, like a crashed node) and waits until it
    /// is gone. Its data stays in the temp dir for the next [`start`](Self::start).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// [`stop`](Self::stop) then [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Whether the server answers `PING` right now.
    pub async fn ping(&self) -> bool {
        let attempt = async {
            let mut conn = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            conn.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            conn.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"+PONG\r\n")
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Sends one inline command (e.g. `INFO memory`) and returns the raw reply, for
    /// tests and benchmarks that inspect the server itself.
    pub async fn raw_command(&self, command: &str) -> std::io::Result<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).await?;
        conn.write_all(format!("{command}\r\nQUIT\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        conn.read_to_string(&mut out).await?;
        Ok(out)
    }
}
