//! Backend selection from configuration: which [`StreamStore`] and [`BlobStore`] a
//! service runs on. One small `match` per store.

use crate::config::{BlobBackend, ServiceConfig};
use crate::state::ServiceState;
use crate::store::{BlobStore, MemoryStreamStore, StreamStore};
use std::sync::Arc;

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The archive store failed to open.
    #[error("archive store: {0}")]
    Blob(#[from] crate::store::blob::BlobError),
    /// The admin secret could not be read or saved.
    #[error("admin secret in {dir}: {source}")]
    Secret {
        /// The data directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The live stream store the configuration asks for.
pub async fn stream_store(cfg: &ServiceConfig) -> Result<Arc<dyn StreamStore>, BackendError> {
    Ok(Arc::new(MemoryStreamStore::new(cfg.limits)))
}

/// The archive store the configuration asks for.
pub async fn blob_store(cfg: &ServiceConfig) -> Result<BlobStore, BackendError> {
    match cfg.blob_backend {
        BlobBackend::Local => Ok(BlobStore::local(cfg.archive_dir())?),
        BlobBackend::Memory => Ok(BlobStore::memory()),
    }
}

/// Full service state from configuration: stores, plus the admin secret (given, or
/// read from / generated into the data directory).
pub async fn build_state(cfg: ServiceConfig) -> Result<ServiceState, BackendError> {
    let secret = crate::auth::load_or_create_secret(cfg.admin_secret.as_deref(), &cfg.data_dir)
        .map_err(|source| BackendError::Secret {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
    let streams = stream_store(&cfg).await?;
    let blobs = blob_store(&cfg).await?;
    Ok(ServiceState::new(cfg, streams, blobs, secret))
}
