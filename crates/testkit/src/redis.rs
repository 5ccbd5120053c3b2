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
    tls: Option<Tls>,
}

/// The TLS side of a server started with [`RedisServer::start_new_tls`].
#[derive(Debug)]
struct Tls {
    port: u16,
    ca_file: PathBuf,
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
            tls: None,
        };
        server.start().await;
        server
    }

    /// A server that also speaks TLS on a second port ([`tls_url`](Self::tls_url)),
    /// with a certificate for `127.0.0.1` signed by a CA made for this server
    /// ([`tls_ca_file`](Self::tls_ca_file)). The plain port stays open for
    /// [`ping`](Self::ping) and [`raw_command`](Self::raw_command). Certificates are
    /// made with `openssl` (`RUNLOG_TEST_OPENSSL`, else on `PATH`).
    ///
    /// # Panics
    /// When `openssl` or `redis-server` is missing or fails.
    pub async fn start_new_tls() -> RedisServer {
        let binary = tool_path("RUNLOG_TEST_REDIS_SERVER", "redis-server");
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        // In the server's own directory, so they outlive restarts and go with it.
        let certs = dir.path().join("tls");
        std::fs::create_dir(&certs).expect("certificate dir");
        make_certificates(&certs);
        let tls_port = free_port();
        let path = |name: &str| certs.join(name).display().to_string();
        let extra_args = vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.crt"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.crt"),
            // Clients prove nothing: the service checks the server, not the reverse.
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut server = RedisServer {
            binary,
            port: free_port(),
            extra_args,
            child: None,
            tls: Some(Tls {
                port: tls_port,
                ca_file: certs.join("ca.crt"),
            }),
            dir,
        };
        server.start().await;
        server
    }

    /// `rediss://127.0.0.1:TLS_PORT/` of a server from
    /// [`start_new_tls`](Self::start_new_tls).
    ///
    /// # Panics
    /// When the server was started without TLS.
    pub fn tls_url(&self) -> String {
        let tls = self
            .tls
            .as_ref()
            .expect("a server started with start_new_tls");
        format!("rediss://127.0.0.1:{}/", tls.port)
    }

    /// The PEM file of the CA that signed the server's certificate.
    ///
    /// # Panics
    /// When the server was started without TLS.
    pub fn tls_ca_file(&self) -> PathBuf {
        let tls = self
            .tls
            .as_ref()
            .expect("a server started with start_new_tls");
        tls.ca_file.clone()
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

impl RedisServer {
    /// Sends one inline command whose reply is an integer (`DBSIZE`, `XLEN k`,
    /// `CLUSTER KEYSLOT k`, …) and returns it; for `PUBSUB NUMSUB ch`, the count.
    ///
    /// # Panics
    /// When the server cannot be reached or the reply holds no integer.
    pub async fn int_command(&self, command: &str) -> i64 {
        let reply = self.raw_command(command).await.expect("redis command");
        reply
            .lines()
            .find_map(|l| l.strip_prefix(':'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no integer in the reply to {command:?}: {reply:?}"))
    }
}

/// A CA and a server certificate for `127.0.0.1` signed by it, in `dir`:
/// `ca.crt`, `server.crt`, `server.key`.
fn make_certificates(dir: &std::path::Path) {
    let openssl = tool_path("RUNLOG_TEST_OPENSSL", "openssl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=runlog test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}

/// A Redis Cluster of three primaries (no replicas), each a [`RedisServer`] on its own
/// loopback port with the 16 384 slots split evenly between them, for tests of the
/// stream store in cluster mode.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: u32 = 16_384;

impl RedisCluster {
    /// Starts three nodes, gives each a third of the slots, introduces them to each
    /// other and waits until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server` is missing or the cluster does not form.
    pub async fn start_new() -> RedisCluster {
        Self::start_new_with(&[]).await
    }

    /// Like [`start_new`](Self::start_new), with extra `redis-server` arguments for
    /// every node (as [`RedisServer::start_new_with`]).
    pub async fn start_new_with(extra_args: &[&str]) -> RedisCluster {
        const NODES: u32 = 3;
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            // Relative to the node's own `--dir`.
            "--cluster-config-file",
            "nodes.conf",
            // The nodes still up keep serving their slots while one is stopped (there
            // are no replicas to take over).
            "--cluster-require-full-coverage",
            "no",
        ];
        args.extend_from_slice(extra_args);
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(RedisServer::start_new_with(&args).await);
        }
        let per_node = CLUSTER_SLOTS / NODES;
        for (i, node) in nodes.iter().enumerate() {
            let i = i as u32;
            let first = i * per_node;
            let last = if i == NODES - 1 {
                CLUSTER_SLOTS - 1
            } else {
                first + per_node - 1
            };
            let reply = node
                .raw_command(&format!("CLUSTER ADDSLOTSRANGE {first} {last}"))
                .await
                .expect("CLUSTER ADDSLOTSRANGE");
            assert!(reply.starts_with("+OK"), "CLUSTER ADDSLOTSRANGE: {reply}");
        }
        for other in &nodes[1..] {
            let reply = nodes[0]
                .raw_command(&format!("CLUSTER MEET 127.0.0.1 {}", other.port()))
                .await
                .expect("CLUSTER MEET");
            assert!(reply.starts_with("+OK"), "CLUSTER MEET: {reply}");
        }
        let cluster = RedisCluster { nodes };
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        // The nodes agree through their gossip bus; there is no event to wait on but
        // their own report, so it is polled until every node says the cluster is up.
        loop {
            let mut ready = true;
            for node in &cluster.nodes {
                let info = node.raw_command("CLUSTER INFO").await.unwrap_or_default();
                // Every node must also know where every slot is, not only that it
                // is up (with partial coverage allowed, "ok" alone comes sooner).
                ready &= info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{NODES}"))
                    && info.contains(&format!("cluster_slots_assigned:{CLUSTER_SLOTS}"));
            }
            if ready {
                return cluster;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Redis Cluster did not form within {START_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The nodes' URLs, comma-separated: what `--redis` takes with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, to inspect what each one holds.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills node `i` (as [`RedisServer::stop`]); the others keep their slots.
    ///
    /// # Panics
    /// When there is no node `i`.
    pub async fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop().await;
    }
}
