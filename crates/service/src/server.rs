//! The router and the server loop.

use crate::error::ApiError;
use crate::routes::{admin, blob, bundle, compat, sections, stream};
use crate::snapshot;
use crate::state::ServiceState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::future::Future;
use tokio::net::TcpListener;

/// Every route of the log service over `state`.
pub fn router(state: ServiceState) -> Router {
    let cfg = state.config();
    // Archives are whole job logs, so their uploads get their own (larger) limit.
    let archives = Router::new()
        .route(
            "/blob",
            post(blob::upload)
                .get(blob::download)
                .delete(compat::delete_blob),
        )
        .route("/blob/upload", put(blob::upload_signed))
        .route("/blob/read", get(blob::download_signed))
        .route("/blob/zip", get(bundle::zip))
        .layer(DefaultBodyLimit::max(cfg.max_blob_body));
    let mut api = Router::new()
        .route(
            "/stream",
            post(stream::open)
                .put(stream::append)
                .get(stream::tail)
                .delete(stream::close),
        )
        .route("/stream/sections", get(sections::get))
        .route("/streams", get(admin::list))
        .route("/blob/link/upload", post(blob::link))
        .route("/blob/link/download", post(blob::download_link))
        .route("/blob/exists", get(compat::blob_exists))
        .route("/blob/download", post(bundle::zip_link))
        .route("/token", post(admin::token).get(compat::harness_token))
        .route("/healthz", get(admin::health))
        .route("/ready/healthz", get(compat::ready))
        .route("/stream/info", get(compat::stream_info))
        .route("/metrics", get(admin::metrics));
    if cfg.bench_discard {
        api = api.route("/bench/discard", put(admin::discard));
    }
    api.layer(DefaultBodyLimit::max(cfg.max_body))
        .merge(archives)
        .merge(crate::viewer::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed".into())
        })
        .layer(middleware::from_fn(crate::quota::hold_refusals))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("internal error".into()).into_response()
        }))
        .with_state(state)
}

/// Counts error answers by kind for `/metrics`.
async fn count_errors(State(st): State<ServiceState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        st.metrics().count_error(resp.status());
    }
    resp
}

/// Serves `state` on `listener` until `shutdown` resolves; then open SSE responses
/// end, in-flight requests finish, and the expiry sweep stops.
pub async fn serve(
    listener: TcpListener,
    state: ServiceState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown_token().clone();
    let sweeper = tokio::spawn(snapshot::run(state.clone()));
    let app = router(state.clone());
    let result = runlog_edge::serve(
        listener,
        app,
        state.config().connection_limits(),
        async move {
            shutdown.await;
            token.cancel();
        },
    )
    .await;
    state.shutdown_token().cancel();
    let _ = sweeper.await;
    if state.config().snapshot_on_shutdown && state.config().redis_url.is_none() {
        snapshot::snapshot_all_unarchived(&state).await;
    }
    result
}
