//! A TCP forwarder on a fixed loopback port whose upstream can be switched, so a
//! client keeps one URL while the service behind it restarts on a new port (the
//! way a load balancer hides a redeploy). Not a fault injector: see `proxy` for that.
//!
//! ```no_run
//! # async fn t(first: std::net::SocketAddr, second: std::net::SocketAddr) {
//! use runlog_testkit::forward::Forwarder;
//! let fwd = Forwarder::start(first).await;
//! // … point the client at fwd.url(), restart the service …
//! fwd.switch_to(second);
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection to the current upstream; stops when dropped.
pub struct Forwarder {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    connections: Arc<AtomicU64>,
    /// Connections accepted and not yet closed by either side.
    open: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:<random port>`, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let connections = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (target, counter, gauge) = (upstream.clone(), connections.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                gauge.fetch_add(1, Ordering::SeqCst);
                let to = *target.lock().unwrap_or_else(|e| e.into_inner());
                let gauge = gauge.clone();
                tokio::spawn(async move {
                    // A refused upstream (service restarting) drops the client connection.
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    gauge.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Forwarder {
            addr,
            upstream,
            connections,
            open,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Client connections open now: accepted, and neither the client nor the upstream
    /// has closed its side yet (an idle kept-alive connection counts).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Sends new connections to `upstream` (open ones stay where they are).
    pub fn switch_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
