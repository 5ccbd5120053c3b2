//! Backend selection from configuration: which [`StreamStore`] and [`BlobStore`] a
//! service runs on. One small `match` per store.

use crate::config::{BlobBackend, ServiceConfig};
use crate::state::ServiceState;
use crate::store::redis::{RedisConfig, RedisStreamStore};
use crate::store::s3::{S3Error, S3Settings};
use crate::store::{BlobStore, MemoryStreamStore, StreamStore};
use object_store::ObjectStore;
use std::sync::Arc;

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The archive store failed to open.
    #[error("archive store: {0}")]
    Blob(#[from] crate::store::blob::BlobError),
    /// The Redis URL is invalid.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The S3 URL or configuration is invalid.
    #[error("{0}")]
    S3(#[from] S3Error),
    /// The CA certificate for Redis cannot be read.
    #[error("redis CA certificate {path}: {source}")]
    RedisCaFile {
        /// The file given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The overflow directory of the Redis store cannot be used.
    #[error("overflow store: {0}")]
    Overflow(#[from] object_store::Error),
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
    match &cfg.redis_url {
        None => Ok(Arc::new(
            MemoryStreamStore::new(cfg.limits).with_account_limits(cfg.account_limits),
        )),
        Some(url) => {
            let ca_pem = match &cfg.redis_ca_file {
                None => None,
                Some(path) => {
                    Some(
                        std::fs::read(path).map_err(|source| BackendError::RedisCaFile {
                            path: path.display().to_string(),
                            source,
                        })?,
                    )
                }
            };
            let config = RedisConfig {
                url: url.clone(),
                cluster: cfg.redis_cluster,
                ca_pem,
                account_limits: cfg.account_limits,
                ..RedisConfig::default()
            };
            Ok(Arc::new(RedisStreamStore::new(
                config,
                Some(overflow_store(cfg)?),
            )?))
        }
    }
}

/// Where the Redis store moves the heads of over-long streams: next to the archives,
/// in a namespace no archive can take.
fn overflow_store(cfg: &ServiceConfig) -> Result<Arc<dyn ObjectStore>, BackendError> {
    match &cfg.blob_backend {
        BlobBackend::Local => {
            let dir = cfg.data_dir.join("overflow");
            crate::store::blob::create_private_dir(&dir).map_err(|e| {
                object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                }
            })?;
            Ok(Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir)?,
            ))
        }
        BlobBackend::Memory => Ok(Arc::new(object_store::memory::InMemory::new())),
        BlobBackend::S3(url) => Ok(S3Settings::overflow_store_from_env(url)?),
    }
}

/// The archive store the configuration asks for.
pub async fn blob_store(cfg: &ServiceConfig) -> Result<BlobStore, BackendError> {
    match cfg.blob_backend {
        BlobBackend::Local => Ok(BlobStore::local(cfg.archive_dir())?),
        BlobBackend::Memory => Ok(BlobStore::memory()),
        BlobBackend::S3(ref url) => Ok(S3Settings::blob_store_from_env(url)?),
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
