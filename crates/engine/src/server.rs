//! The router, its middleware (token, request span) and the listener.

use crate::browser_guard;
use crate::error::EngineError;
use crate::handlers::{destroy, execute, health, jobs, setup, step};
use crate::metrics::Metrics;
use crate::state::EngineState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use tokio::net::TcpListener;
use tracing::Instrument as _;

/// The engine's routes over `state`: `/setup`, `/step`, `/poll_step`, `/destroy`,
/// `/healthz`, `/metrics`, lite-engine's ([`crate::lite::routes`]), `/execute`,
/// `/ping` and RunPod's job routes ([`jobs::routes`]).
///
/// Every request runs in its own `runlog::engine` span that carries the engine log
/// stream, so the handler's events are streamed (a function call's capture ring hangs
/// on a span of its own, `Functions::call_observed`).
pub fn router(state: EngineState) -> Router {
    Router::new()
        .route("/setup", post(setup::setup))
        .route("/step", post(step::step))
        .route("/poll_step", post(step::poll_step))
        .route("/destroy", post(destroy::destroy))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/execute", post(execute::execute))
        .route("/ping", get(execute::ping))
        .merge(crate::lite::routes())
        .merge(jobs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body))
        .layer(middleware::from_fn_with_state(state.clone(), request_span))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Outermost but for panics: a browser's request is refused before anything,
        // the token check included, looks at it.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            browser_guard::refuse_browsers,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .with_state(state)
}

/// Binds `config.addr`, refusing a non-loopback address without a token or mutual TLS.
pub async fn bind(config: &crate::EngineConfig) -> std::io::Result<TcpListener> {
    config
        .check_exposure()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    TcpListener::bind(config.addr).await
}

/// Removes the empty cgroups of engines that died without `/destroy`
/// (`crate::cgroup_leftovers`), in both places this engine makes its own.
fn remove_leftover_cgroups() {
    let parents = [
        crate::cgroup::own_cgroup_dir(),
        crate::memory_cgroup::v1_parent().map(std::path::Path::to_path_buf),
    ];
    let removed: usize = parents
        .iter()
        .flatten()
        .map(|dir| crate::cgroup_leftovers::remove(dir))
        .sum();
    if removed > 0 {
        tracing::info!(target: "runlog::engine", "removed {removed} empty cgroups that engines no longer running left");
    }
}

/// Serves until `shutdown` resolves, destroying the stage at that moment (killing its
/// steps and closing its streams) while the requests in flight finish. Re-sends
/// histories earlier runs left in the outbox.
pub async fn serve(
    listener: TcpListener,
    state: EngineState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && !state.config().authenticates_callers() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to serve on {local} without a token or mutual TLS"),
        ));
    }
    // Steps run as the engine's user: `/proc/<engine>/environ` and `mem` would hand
    // them the engine's token and every secret it holds. A non-dumpable process's
    // `/proc` entries belong to root (a root step still reads them; SECURITY.md).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(target: "runlog::engine", "could not make the engine non-dumpable: {e}");
    }
    let outbox = state.config().outbox_dir();
    if outbox.is_dir() {
        drop(livelog::spawn_deliver_outbox(outbox));
    }
    // Before serving, so that a stage set up at once never races the sweep (a few
    // `rmdir`s).
    if let Err(e) = tokio::task::spawn_blocking(remove_leftover_cgroups).await {
        tracing::warn!(target: "runlog::engine", "removing leftover cgroups failed: {e}");
    }
    // Function workers run as the step user: an interpreter that user cannot run is
    // said at start (calls fail with the same error), without delaying serving.
    let functions = state.functions().clone();
    tokio::spawn(async move {
        if let Err(e) = functions.runtime().check_user_python().await {
            tracing::warn!(target: "runlog::engine", "functions will fail: {e}");
        }
    });
    let scheme = state.config().scheme();
    tracing::info!(target: "runlog::engine", "engine listening on {scheme}://{local}");
    let app = router(state.clone());
    // The stage is destroyed as soon as shutdown begins, not after the last request:
    // a `/step` request lasts as long as its step, so graceful shutdown would wait
    // for steps to end by themselves. Destroyed, they are stopped, their requests
    // answered and their streams archived.
    let (destroying_tx, destroying) = tokio::sync::oneshot::channel();
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        let _ = destroying_tx.send(tokio::spawn(async move {
            destroy::destroy_stage(&st).await;
        }));
    };
    let limits = state.config().connection_limits;
    let result = match &state.config().tls {
        Some(tls) => runlog_edge::serve_tls(listener, app, limits, tls, signal).await,
        None => runlog_edge::serve(listener, app, limits, signal).await,
    };
    if let Ok(task) = destroying.await {
        drop(task.await);
    }
    // Also when the server ended without a shutdown signal (an accept error), and for
    // a setup that came in on a kept-alive connection after the first destroy: no
    // stage outlives the server (nothing to do when there is none).
    drop(destroy::destroy_stage(&state).await);
    result
}

async fn not_found() -> EngineError {
    EngineError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> EngineError {
    EngineError::MethodNotAllowed(
        "method not allowed: the engine's endpoints take POST (GET for /healthz and /metrics)"
            .into(),
    )
}

fn panic_answer(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    EngineError::Internal("the engine failed while handling the request".into()).into_response()
}

async fn request_span(State(state): State<EngineState>, req: Request, next: Next) -> Response {
    let span = tracing::info_span!(target: "runlog::engine", "request", path = %req.uri().path());
    if let Some(sink) = state.engine_sink() {
        runlog_capture::attach_stream(&span, sink);
    }
    let response = next.run(req).instrument(span).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        Metrics::inc(&state.metrics().errors);
    }
    response
}

/// Refuses a request without the engine's token (`Authorization: Bearer <token>`,
/// the edge's one reading of it) when the engine has one.
async fn require_token(State(state): State<EngineState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config().required_token() else {
        return next.run(req).await;
    };
    match runlog_edge::bearer_token(req.headers()) {
        Ok(Some(given)) if runlog_edge::tokens_match(given, expected) => next.run(req).await,
        Ok(Some(_)) => EngineError::Unauthorized("wrong engine token".into()).into_response(),
        Ok(None) => EngineError::Unauthorized(
            "this engine requires a token: send Authorization: Bearer <token>".into(),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}
