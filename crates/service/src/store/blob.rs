//! [`BlobStore`]: complete archives, one gzip-compressed NDJSON object per stream.
//!
//! A thin layer over the `object_store` crate, so the local directory (embedded
//! default), memory (tests) and S3 (scale-out) share one code path. Object names are
//! `<account>/<key>.ndjson.gz`; account and key were validated before they got here,
//! so a name can never leave its account's prefix or the data directory.

use super::StreamId;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use runlog_protocol::{AccountId, StreamKey};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Suffix of every archive object.
pub const ARCHIVE_SUFFIX: &str = ".ndjson.gz";

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No archive for that stream.
    #[error("archive not found")]
    NotFound,
    /// The backend failed.
    #[error("archive storage failed: {0}")]
    Backend(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Backend(other.to_string()),
        }
    }
}

/// Creates `dir` and its missing parents for the service's user alone (`0700` on
/// Unix): the data directory holds every account's archives and the admin secret,
/// and files in it are written with the default mode. A directory that exists keeps
/// its mode.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// One stored archive, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The stream key.
    pub key: StreamKey,
    /// Compressed size in bytes.
    pub size: u64,
    /// Last write.
    pub last_modified: SystemTime,
}

/// A stored archive being read (see [`BlobStore::get_stream`]).
pub struct ArchiveBytes {
    /// Size of the stored object in bytes.
    pub size: u64,
    /// Its bytes, in the pieces the backend reads.
    pub bytes: futures_util::stream::BoxStream<'static, Result<Bytes, BlobError>>,
}

/// Archives over any `object_store` backend, with optional presigning.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
}

impl BlobStore {
    /// Archives in `store`; `signer` (e.g. S3) makes upload links point straight at
    /// the backend. Without one, the service signs links to itself.
    pub fn new(store: Arc<dyn ObjectStore>, signer: Option<Arc<dyn Signer>>) -> Self {
        BlobStore { store, signer }
    }

    /// Archives as files under `dir` (created if missing).
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, BlobError> {
        let dir = dir.as_ref();
        create_private_dir(dir)
            .map_err(|e| BlobError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(BlobStore::new(Arc::new(fs), None))
    }

    /// Archives in memory (tests).
    pub fn memory() -> Self {
        BlobStore::new(Arc::new(object_store::memory::InMemory::new()), None)
    }

    /// Whether upload links are presigned by the backend.
    pub fn has_signer(&self) -> bool {
        self.signer.is_some()
    }

    /// The object name of a stream's archive: `<account>/<key>.ndjson.gz`.
    pub fn object_path(id: &StreamId) -> ObjectPath {
        let key = id.key.as_str();
        let mut parts: Vec<String> = Vec::with_capacity(2 + key.matches('/').count());
        parts.push(id.account.as_str().to_owned());
        let mut segments = key.split('/').peekable();
        while let Some(seg) = segments.next() {
            if segments.peek().is_none() {
                parts.push(format!("{seg}{ARCHIVE_SUFFIX}"));
            } else {
                parts.push(seg.to_owned());
            }
        }
        ObjectPath::from_iter(parts)
    }

    /// Stores an archive, already gzip-compressed. Atomic: readers see the old or the
    /// new archive, never a partial one.
    pub async fn put(&self, id: &StreamId, gz: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&Self::object_path(id), PutPayload::from_bytes(gz))
            .await?;
        Ok(())
    }

    /// The stored archive bytes (gzip, unless an external uploader stored plain text
    /// through a presigned link).
    pub async fn get(&self, id: &StreamId) -> Result<Bytes, BlobError> {
        let got = self.store.get(&Self::object_path(id)).await?;
        Ok(got.bytes().await?)
    }

    /// The stored archive as the backend hands it out, a piece at a time (gzip,
    /// unless stored plain): readers that replay or inflate it hold one piece, never
    /// the whole object. `NotFound` is answered before any byte.
    pub async fn get_stream(&self, id: &StreamId) -> Result<ArchiveBytes, BlobError> {
        let got = self.store.get(&Self::object_path(id)).await?;
        Ok(ArchiveBytes {
            size: got.meta.size,
            bytes: got.into_stream().map_err(BlobError::from).boxed(),
        })
    }

    /// Whether an archive exists.
    pub async fn exists(&self, id: &StreamId) -> Result<bool, BlobError> {
        match self.store.head(&Self::object_path(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every archive of an account.
    pub async fn list(&self, account: &AccountId) -> Result<Vec<ArchiveInfo>, BlobError> {
        let prefix = ObjectPath::from_iter([account.as_str()]);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await?;
        let account_prefix = format!("{}/", account.as_str());
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&account_prefix)?;
                let key = StreamKey::new(name.strip_suffix(ARCHIVE_SUFFIX)?).ok()?;
                Some(ArchiveInfo {
                    key,
                    size: m.size,
                    last_modified: m.last_modified.into(),
                })
            })
            .collect())
    }

    /// A backend-presigned `PUT` URL for the archive, or `None` without a signer.
    pub async fn presigned_put(
        &self,
        id: &StreamId,
        ttl: Duration,
    ) -> Result<Option<url::Url>, BlobError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(http::Method::PUT, &Self::object_path(id), ttl)
            .await?;
        Ok(Some(url))
    }

    /// `Ok` when the backend answers a listing.
    pub async fn health(&self) -> Result<(), BlobError> {
        let mut listing = self.store.list(Some(&ObjectPath::from("-health-")));
        listing.try_next().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn object_path_appends_suffix_to_last_segment() {
        let id = StreamId {
            account: AccountId::new("acc").unwrap(),
            key: StreamKey::new("a/b.log").unwrap(),
        };
        assert_eq!(
            BlobStore::object_path(&id).as_ref(),
            "acc/a/b.log.ndjson.gz"
        );
    }

    #[tokio::test]
    async fn put_get_list_round_trip() {
        let b = BlobStore::memory();
        let id = StreamId {
            account: AccountId::new("acc").unwrap(),
            key: StreamKey::new("x/y").unwrap(),
        };
        assert!(!b.exists(&id).await.unwrap());
        b.put(&id, Bytes::from_static(b"gz")).await.unwrap();
        assert_eq!(b.get(&id).await.unwrap(), Bytes::from_static(b"gz"));
        let listed = b.list(&id.account).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key.as_str(), "x/y");
    }
}
