//! A real `redis-server` on a free loopback port, for tests of the Redis stream store.
//!
//! The server keeps its data in a temporary directory with an append-only file
//! synced on every write, so [`RedisServer::stop`] + [`RedisServer::start`] (or
//! [`RedisServer::restart`]) behaves like a production restart: acknowledged data
//! survives, and clients see a real outage in between. The binary comes from
//! `RUNLOG_TEST_REDIS_SERVER`, else `redis-server` on `PATH`. Its ports (plain, TLS,
//! cluster bus) are chosen as `child.rs` explains, so a start never races another
//! process for them.

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
    /// The cluster bus port of a cluster node (`--cluster-port`): chosen like the
    /// others, not Redis's default `port + 10000`, which may be taken or past 65 535.
    cluster_port: Option<u16>,
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
        let cluster = extra_args.contains(&"--cluster-enabled");
        let mut server = RedisServer {
            binary,
            dir,
            port: 0,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            tls: None,
            cluster_port: cluster.then_some(0),
        };
        server.start_on_fresh_ports().await;
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
        let path = |name: &str| certs.join(name).display().to_string();
        let extra_args = vec![
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
            port: 0,
            extra_args,
            child: None,
            tls: Some(Tls {
                port: 0,
                ca_file: certs.join("ca.crt"),
            }),
            cluster_port: None,
            dir,
        };
        server.start_on_fresh_ports().await;
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

    /// The cluster bus port of a node of a [`RedisCluster`] (what `CLUSTER MEET`
    /// needs besides the port).
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// First start: on fresh ports, drawn again when the child finds one taken.
    async fn start_on_fresh_ports(&mut self) {
        let failure = format!("redis-server found its port taken {START_ATTEMPTS} times");
        start_while_port_taken(&failure, Duration::ZERO, async || {
            self.port = fixture_port();
            if let Some(tls) = &mut self.tls {
                tls.port = fixture_port();
            }
            if let Some(bus) = &mut self.cluster_port {
                *bus = fixture_port();
            }
            self.try_start().await
        })
        .await;
    }

    /// Starts the server again on the same port after [`stop`](Self::stop). No-op
    /// when it is running.
    ///
    /// # Panics
    /// When it does not come up, or its port stays taken (another fixture drew the
    /// very port between the stop and this start: see `child.rs`).
    pub async fn start(&mut self) {
        let failure = format!("redis-server could not take its port {} again", self.port);
        start_while_port_taken(&failure, Duration::from_millis(200), async || {
            self.try_start().await
        })
        .await;
    }

    /// One start on the ports chosen; no-op when it is running.
    async fn try_start(&mut self) -> Result<(), StartError> {
        if self.child.is_some() {
            return Ok(());
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
            .kill_on_drop(true);
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-port").arg(tls.port.to_string());
        }
        if let Some(bus) = self.cluster_port {
            cmd.arg("--cluster-port").arg(bus.to_string());
        }
        let this = &*self;
        let child = spawn_until_answering(
            cmd,
            "redis-server",
            this.port,
            START_DEADLINE,
            Duration::from_millis(20),
            || this.ping(),
        )
        .await?;
        self.child = Some(child);
        Ok(())
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

/// A Redis Cluster of three primaries, each a [`RedisServer`] on its own loopback
/// port with the 16 384 slots split evenly between them in node order, for tests of
/// the stream store in cluster mode; optionally one replica per primary (nodes 3–5,
/// replica `3 + i` following primary `i`) for failover tests.
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
        Self::form(extra_args, false).await
    }

    /// Three primaries as [`start_new`](Self::start_new), each with a replica, and a
    /// node timeout of 500 ms, so that a replica takes over a failed primary within
    /// about a second; returns once every replica is in sync with its primary.
    ///
    /// # Panics
    /// When `redis-server` is missing or the cluster does not form.
    pub async fn start_with_replicas() -> RedisCluster {
        Self::form(&["--cluster-node-timeout", "500"], true).await
    }

    async fn form(extra_args: &[&str], replicas: bool) -> RedisCluster {
        const PRIMARIES: u32 = 3;
        let total = if replicas { 2 * PRIMARIES } else { PRIMARIES };
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            // Relative to the node's own `--dir`.
            "--cluster-config-file",
            "nodes.conf",
            // The nodes still up keep serving their slots while one is stopped and
            // has no replica to take over.
            "--cluster-require-full-coverage",
            "no",
        ];
        args.extend_from_slice(extra_args);
        let mut nodes = Vec::new();
        for _ in 0..total {
            nodes.push(RedisServer::start_new_with(&args).await);
        }
        let per_node = CLUSTER_SLOTS / PRIMARIES;
        for (i, node) in nodes.iter().take(PRIMARIES as usize).enumerate() {
            let i = i as u32;
            let first = i * per_node;
            let last = if i == PRIMARIES - 1 {
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
                .raw_command(&format!(
                    "CLUSTER MEET 127.0.0.1 {} {}",
                    other.port(),
                    other.cluster_port().unwrap_or(other.port() + 10_000)
                ))
                .await
                .expect("CLUSTER MEET");
            assert!(reply.starts_with("+OK"), "CLUSTER MEET: {reply}");
        }
        let cluster = RedisCluster { nodes };
        // The nodes agree through their gossip bus; there is no event to wait on but
        // their own report, so it is polled until every node says the cluster is up.
        // Every node must also know where every slot is, not only that it is up (with
        // partial coverage allowed, "ok" alone comes sooner).
        let formed = format!("cluster_known_nodes:{total}");
        let slots = format!("cluster_slots_assigned:{CLUSTER_SLOTS}");
        cluster
            .wait_for_all("the Redis Cluster to form", "CLUSTER INFO", |info| {
                info.contains("cluster_state:ok") && info.contains(&formed) && info.contains(&slots)
            })
            .await;
        if replicas {
            for i in 0..PRIMARIES as usize {
                let id = cluster.node_id(i).await;
                let reply = cluster.nodes[PRIMARIES as usize + i]
                    .raw_command(&format!("CLUSTER REPLICATE {id}"))
                    .await
                    .expect("CLUSTER REPLICATE");
                assert!(reply.starts_with("+OK"), "CLUSTER REPLICATE {id}: {reply}");
            }
            cluster.wait_replicated().await;
        }
        cluster
    }

    /// The cluster id of node `i`.
    async fn node_id(&self, i: usize) -> String {
        let reply = self.nodes[i]
            .raw_command("CLUSTER MYID")
            .await
            .expect("CLUSTER MYID");
        // A bulk string: `$40`, then the id.
        reply.lines().nth(1).unwrap_or_default().trim().to_owned()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of the first running node).
    ///
    /// # Panics
    /// When no node answers.
    pub async fn slot(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        let slot = node.int_command(&format!("CLUSTER KEYSLOT {key}")).await;
        u16::try_from(slot).expect("a slot number")
    }

    /// The primary that was given `slot` when the cluster formed: the slots are split
    /// in three equal ranges, in node order.
    pub fn primary_of(slot: u16) -> usize {
        (u32::from(slot) / (CLUSTER_SLOTS / 3)).min(2) as usize
    }

    /// Polls `command` on every node until `ready` holds for every answer.
    async fn wait_for_all(&self, what: &str, command: &str, ready: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            let mut all = true;
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let reply = node.raw_command(command).await.unwrap_or_default();
                all &= ready(&reply);
            }
            if all {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {START_DEADLINE:?} for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every replica has everything its primary had when this was called
    /// (replication is asynchronous: what a replica lacks when its primary dies is
    /// lost with it, by Redis's own design).
    ///
    /// # Panics
    /// When the cluster has no replicas, or they do not catch up in time.
    pub async fn wait_replicated(&self) {
        let primaries = self.nodes.len() / 2;
        assert!(
            primaries > 0 && self.nodes.len() == 2 * primaries,
            "no replicas"
        );
        for i in 0..primaries {
            let info = self.nodes[i]
                .raw_command("INFO replication")
                .await
                .expect("INFO replication");
            let target = info_field(&info, "master_repl_offset").unwrap_or(0);
            let replica = &self.nodes[primaries + i];
            let deadline = tokio::time::Instant::now() + START_DEADLINE;
            loop {
                let info = replica
                    .raw_command("INFO replication")
                    .await
                    .unwrap_or_default();
                let linked = info.contains("master_link_status:up");
                if linked && info_field(&info, "slave_repl_offset").unwrap_or(0) >= target {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "replica {} did not catch up with its primary within {START_DEADLINE:?}",
                    primaries + i
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits until node `i` (a replica whose primary failed) serves as a primary, the
    /// cluster is `ok` again on every running node and they all agree on it.
    ///
    /// # Panics
    /// When that does not happen in time.
    pub async fn wait_promoted(&self, i: usize) {
        let node = &self.nodes[i];
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        while !node
            .raw_command("ROLE")
            .await
            .unwrap_or_default()
            .contains("master")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} was not promoted within {START_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.wait_for_all("the cluster to be ok again", "CLUSTER INFO", |info| {
            info.contains("cluster_state:ok")
        })
        .await;
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

    /// Moves `slot` from primary `from` to primary `to` the way `redis-cli --cluster
    /// reshard` does, while clients keep using it: `to` imports, `from` migrates, the
    /// keys move over in small `MIGRATE` steps (so commands meet `ASK` and `TRYAGAIN`
    /// meanwhile), then every node learns the new owner.
    ///
    /// # Panics
    /// When a step is refused.
    pub async fn move_slot(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.node_id(from).await, self.node_id(to).await);
        let ok = |what: &str, reply: std::io::Result<String>| {
            let reply = reply.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(reply.starts_with("+OK"), "{what}: {reply}");
        };
        ok(
            "SETSLOT IMPORTING",
            self.nodes[to]
                .raw_command(&format!("CLUSTER SETSLOT {slot} IMPORTING {from_id}"))
                .await,
        );
        ok(
            "SETSLOT MIGRATING",
            self.nodes[from]
                .raw_command(&format!("CLUSTER SETSLOT {slot} MIGRATING {to_id}"))
                .await,
        );
        let port = self.nodes[to].port();
        loop {
            let reply = self.nodes[from]
                .raw_command(&format!("CLUSTER GETKEYSINSLOT {slot} 1"))
                .await
                .expect("CLUSTER GETKEYSINSLOT");
            // An array of bulk strings: `*1`, `$len`, the key.
            let Some(key) = reply
                .lines()
                .nth(2)
                .map(str::trim)
                .filter(|k| !k.is_empty())
            else {
                break;
            };
            let moved = self.nodes[from]
                .raw_command(&format!("MIGRATE 127.0.0.1 {port} {key} 0 5000"))
                .await
                .expect("MIGRATE");
            // `NOKEY`: the key expired or was deleted in between.
            assert!(
                moved.starts_with("+OK") || moved.starts_with("+NOKEY"),
                "MIGRATE {key}: {moved}"
            );
        }
        // The new owner first, then the old one, then the other primaries (the first
        // three nodes); gossip would tell them too, later.
        let others = (0..3).filter(|&i| i != from && i != to);
        for i in [to, from].into_iter().chain(others) {
            if self.nodes[i].child.is_some() {
                ok(
                    "SETSLOT NODE",
                    self.nodes[i]
                        .raw_command(&format!("CLUSTER SETSLOT {slot} NODE {to_id}"))
                        .await,
                );
            }
        }
    }
}

/// The integer `field` of an `INFO` reply.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}
