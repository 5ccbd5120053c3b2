//! The runlog log service: live streams (open, append, tail, close), archives
//! (blobs), account tokens and the web viewer, over HTTP.
//!
//! Handlers are thin: they parse with the `runlog-protocol` types, call a store,
//! and map errors to one status each. Storage sits behind [`store::StreamStore`]
//! (live lines) and [`store::BlobStore`] (archives), so the embedded default
//! (memory + local directory) and the scale-out backends (Redis + S3) share every
//! route and every test.
//!
//! Embedding:
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = runlog_service::ServiceConfig::default();
//! let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
//! let state = runlog_service::backend::build_state(cfg).await?;
//! runlog_service::serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod archive;
pub mod archive_build;
pub mod archive_ingest;
pub mod auth;
pub mod backend;
pub mod body_budget;
pub mod config;
pub mod error;
pub mod extract;
pub mod ingest;
pub mod metrics;
pub mod quota;
pub mod routes;
pub mod sections;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod state;
pub mod store;
pub mod used_links;
pub mod viewer;

pub use config::ServiceConfig;
pub use error::ApiError;
pub use server::{router, serve};
pub use state::ServiceState;
