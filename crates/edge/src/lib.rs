//! The HTTP edge both runlog servers share: how connections are accepted, bounded and
//! timed, so that a peer that does not play by the protocol holds at most a bounded
//! share of the server for a bounded time; and what both answer and read the same way:
//! the error answer ([`HttpError`]), the JSON body ([`JsonBody`]) and the bearer token
//! ([`bearer_token`]).
//!
//! `axum::serve` gives hyper no timer, so hyper's header read timeout never ran: an
//! idle, half-sent or kept-alive connection stayed open for ever, and 520 of them under
//! `ulimit -n 512` made every other request fail. [`serve`] accepts at most
//! [`Limits::max_connections`] at once (the next waits in the kernel's backlog rather
//! than failing `accept` with `EMFILE`), gives hyper a timer so that headers — of a
//! first request or of the next one on a kept-alive connection — must arrive within
//! [`Limits::header_read_timeout`], times out a request body that stops arriving, and
//! resets a connection whose peer takes no byte of its answer ([`WriteTimeout`]).
//! [`serve_tls`] does the same over mutual TLS ([`ServerTls`]), the handshake timed
//! like the headers.

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

pub mod error;
pub mod json;
pub mod tls;
pub mod token;
pub mod write_timeout;

pub use error::HttpError;
pub use json::JsonBody;
pub use tls::{ServerTls, TlsError, TlsFiles};
pub use token::{bearer_token, tokens_match};
pub use write_timeout::WriteTimeout;

/// Descriptors kept free for the server's own files (stores, spools, child processes'
/// pipes) when [`Limits::max_connections`] is derived from the descriptor limit.
pub const DESCRIPTOR_HEADROOM: u64 = 256;

/// What one connection may hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; the next waits to be accepted. `None`: derived by
    /// [`serve`] from the descriptor limit, which it raises first
    /// ([`connections_for`]`(`[`descriptor_limit`]`())`).
    pub max_connections: Option<usize>,
    /// Time for a request's headers to arrive, counted from when the connection is
    /// ready for them: after it opens, and after each answer on a kept-alive one (so
    /// it is also the idle keep-alive timeout). Over TLS ([`serve_tls`]) the
    /// handshake gets the same time, before the headers' clock starts.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
    /// Longest time a peer may take no byte of an answer while the server has bytes
    /// for it (a tail that stopped reading): the connection is reset and what it held
    /// freed.
    pub write_timeout: Duration,
}

impl Default for Limits {
    /// 30 s for headers, for each piece of a body and for a stalled write; connections
    /// up to the descriptor limit less [`DESCRIPTOR_HEADROOM`] (at most 16 384).
    fn default() -> Self {
        Limits {
            max_connections: None,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Connections a server may hold with `descriptors` open files allowed: all but the
/// headroom, at least 16, at most 16 384.
pub fn connections_for(descriptors: u64) -> usize {
    let usable = descriptors
        .saturating_sub(DESCRIPTOR_HEADROOM)
        .clamp(16, 16_384);
    usize::try_from(usable).unwrap_or(16_384)
}

/// The soft limit on open files, raised to the hard limit first: the default soft
/// limit of many systems (1 024) is a few hundred tails and steps, the hard one rarely
/// is. Answers 1 024 when the limit cannot be read.
pub fn descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Serves `app` over plain HTTP on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting, lets each connection finish the request it is in,
/// and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, app, limits, None, shutdown).await
}

/// [`serve`] over TLS: every connection first completes a TLS 1.3 handshake in which
/// the client proves a certificate `tls`'s CA signed ([`ServerTls`]). The handshake
/// holds a connection slot and must end within [`Limits::header_read_timeout`] (a
/// peer that starts one and goes quiet is dropped); then the limits apply as over
/// plain HTTP, the write timeout to the encrypted bytes on the socket.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: &ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, app, limits, Some(tls.acceptor()), shutdown).await
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_read_timeout,
    ));
    let max_connections = limits
        .max_connections
        .unwrap_or_else(|| connections_for(descriptor_limit()));
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap the server stops accepting, and the kernel's
        // backlog holds the next connections instead of `accept` failing for them.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or memory for a moment, or a peer that reset
                    // before it was accepted: none of these ends the server.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        // SSE frames and controller answers are small writes; without TCP_NODELAY,
        // Nagle holds one until the peer's delayed ACK (a ~35 ms tail-latency p99 on
        // every backend of the service).
        let _ = tcp.set_nodelay(true);
        // Under TLS too: the clock then sits on the encrypted bytes, which are what a
        // stalled reader leaves unsent.
        let io = WriteTimeout::new(tcp, limits.write_timeout);
        let builder = builder.clone();
        // Taken now, while shutdown has not begun: a connection still in its
        // handshake is waited for (and told to close) like the others.
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // A connection's end is its peer's business (a reset, a timeout it earned).
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    let _ = watcher.watch(conn).await;
                }
                Some(tls) => match tokio::time::timeout(handshake_timeout, tls.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn).await;
                    }
                    // Worth a line: a controller whose certificate is wrong sees only
                    // a failed connection; this says why on the server's side.
                    Ok(Err(e)) => tracing::info!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::info!(
                        "TLS handshake with {peer} not done within {handshake_timeout:?}: dropped"
                    ),
                },
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_headroom_below_the_descriptor_limit() {
        assert_eq!(connections_for(1024), 768);
        assert_eq!(connections_for(100), 16, "never fewer than 16");
        assert_eq!(connections_for(1 << 20), 16_384);
    }
}
