//! [`BlobStore`]: complete archives, one gzip-compressed NDJSON object per stream.
//!
//! A thin layer over the `object_store` crate, so the local directory (embedded
//! default), memory (tests) and S3 (scale-out) share one code path. Object names come
//! from the one key mapping in [`super::names`] (`<account>/<key>.ndjson.gz` for
//! ordinary keys); account and key were validated before they got here, so a name
//! can never leave its account's prefix or the data directory, nor name another
//! key's archive.

use super::{StreamId, names};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use runlog_protocol::{AccountId, StreamKey};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use super::names::ARCHIVE_SUFFIX;

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No archive for that stream.
    #[error("archive not found")]
    NotFound,
    /// The backend failed. The text is shown to callers, so it never holds the
    /// backend's own message (which names the server's paths, see
    /// `backend_failure`).
    #[error("archive storage failed: {0}")]
    Backend(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Backend(backend_failure("archive store", &other)),
        }
    }
}

/// Logs a storage backend's error in full and returns what a caller may be told.
///
/// `object_store`'s messages name the file or object they failed on — for the local
/// store, an absolute path on the server (an over-long key once answered 503 with
/// the data directory in it). The log keeps the detail for the operator; the answer
/// says only what kind of failure it was.
pub(crate) fn backend_failure(store: &'static str, e: &object_store::Error) -> String {
    tracing::warn!(store, error = %e, "storage backend failed");
    let kind = match e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            "conflicting write"
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => "access denied",
        _ => "backend error",
    };
    format!("{kind} (details in the service's log)")
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

    /// The object name of a stream's archive ([`super::names::archive_path`]).
    pub fn object_path(id: &StreamId) -> ObjectPath {
        super::names::archive_path(id)
    }

    /// Stores an archive, already gzip-compressed. Atomic: readers see the old or the
    /// new archive, never a partial one.
    pub async fn put(&self, id: &StreamId, gz: Bytes) -> Result<(), BlobError> {
        self.record_key(id).await?;
        self.store
            .put(&Self::object_path(id), PutPayload::from_bytes(gz))
            .await?;
        Ok(())
    }

    /// Stores the key of a stream whose archive goes under a digest name
    /// ([`names::key_record_path`]), before the archive itself: a listing that finds
    /// the archive always finds its key.
    pub(crate) async fn record_key(&self, id: &StreamId) -> Result<(), BlobError> {
        if let Some(path) = names::key_record_path(id) {
            self.store
                .put(&path, PutPayload::from_bytes(names::key_record(id)))
                .await?;
        }
        Ok(())
    }

    /// The archive's name, then every name it may have been written under before.
    fn archive_paths(id: &StreamId) -> impl Iterator<Item = ObjectPath> {
        std::iter::once(Self::object_path(id)).chain(names::former_archive_paths(id))
    }

    /// A writer of `id`'s archive in pieces, for an archive too large to hold whole
    /// ([`crate::archive_build`]): up to 10 MiB it is one put, past that a multipart
    /// upload. Either way the archive appears only when the writer is shut down
    /// (the local store renames a staged file into place, S3 completes the upload),
    /// and an aborted or dropped writer leaves the stored one as it was. The key of
    /// an archive under a digest name is recorded first (`record_key`).
    pub fn archive_writer(&self, id: &StreamId) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::new(Arc::clone(&self.store), Self::object_path(id))
    }

    /// The name of an object kept beside a stream's archive: `name` in the stream's
    /// directory ([`names::stream_dir`]). `name` starts with `=`, which no part of a
    /// key's storage name starts with, so it is never an archive, a directory of
    /// another key, or an overflow segment (those start with `+`).
    fn beside_path(id: &StreamId, name: &str) -> Result<ObjectPath, BlobError> {
        if !name.starts_with('=') || name.contains('/') {
            return Err(BlobError::Backend(format!("bad object name {name:?}")));
        }
        Ok(names::stream_dir(id).join(name))
    }

    /// Stores a small object beside a stream's archive (the section index).
    pub async fn put_beside(
        &self,
        id: &StreamId,
        name: &str,
        bytes: Bytes,
    ) -> Result<(), BlobError> {
        let path = Self::beside_path(id, name)?;
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// An object stored by [`put_beside`](Self::put_beside).
    pub async fn get_beside(&self, id: &StreamId, name: &str) -> Result<Bytes, BlobError> {
        let path = Self::beside_path(id, name)?;
        Ok(self.store.get(&path).await?.bytes().await?)
    }

    /// Deletes an object stored by [`put_beside`](Self::put_beside); whether there
    /// was one.
    pub async fn delete_beside(&self, id: &StreamId, name: &str) -> Result<bool, BlobError> {
        let path = Self::beside_path(id, name)?;
        // Looked up first, as in `delete`: backends differ on deleting nothing.
        match self.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored archive bytes (gzip, unless an external uploader stored plain text
    /// through a presigned link).
    pub async fn get(&self, id: &StreamId) -> Result<Bytes, BlobError> {
        let got = self.get_object(id).await?;
        Ok(got.bytes().await?)
    }

    /// The archive object of a stream: under its name, or else under a name it had
    /// before (see [`names::former_archive_paths`]).
    async fn get_object(&self, id: &StreamId) -> Result<object_store::GetResult, BlobError> {
        for path in Self::archive_paths(id) {
            match self.store.get(&path).await {
                Err(object_store::Error::NotFound { .. }) => continue,
                other => return Ok(other?),
            }
        }
        Err(BlobError::NotFound)
    }

    /// The stored archive as the backend hands it out, a piece at a time (gzip,
    /// unless stored plain): readers that replay or inflate it hold one piece, never
    /// the whole object. `NotFound` is answered before any byte.
    pub async fn get_stream(&self, id: &StreamId) -> Result<ArchiveBytes, BlobError> {
        let got = self.get_object(id).await?;
        Ok(ArchiveBytes {
            size: got.meta.size,
            bytes: got.into_stream().map_err(BlobError::from).boxed(),
        })
    }

    /// Whether an archive exists.
    pub async fn exists(&self, id: &StreamId) -> Result<bool, BlobError> {
        Ok(self.modified(id).await?.is_some())
    }

    /// When the stream's archive was last written, `None` when it has none.
    pub async fn modified(&self, id: &StreamId) -> Result<Option<SystemTime>, BlobError> {
        for path in Self::archive_paths(id) {
            match self.store.head(&path).await {
                Ok(meta) => return Ok(Some(meta.last_modified.into())),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Deletes a stream's archive (under its current name and every name it had
    /// before) and its key record; `Ok(false)` when there was no archive.
    pub async fn delete(&self, id: &StreamId) -> Result<bool, BlobError> {
        let mut deleted = false;
        for path in Self::archive_paths(id) {
            // Looked up first: backends differ in whether deleting nothing is an error.
            match self.store.head(&path).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted = true,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(record) = names::key_record_path(id) {
            match self.store.delete(&record).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }

    /// Every archive of an account.
    pub async fn list(&self, account: &AccountId) -> Result<Vec<ArchiveInfo>, BlobError> {
        let prefix = ObjectPath::from_iter([account.as_str()]);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await?;
        let account_prefix = format!("{}/", account.as_str());
        // Keyed by stream key: an archive under its current name wins over one left
        // under its name from before the current mapping.
        let mut found: std::collections::BTreeMap<StreamKey, (bool, ArchiveInfo)> =
            std::collections::BTreeMap::new();
        for m in metas {
            let Some(name) = m.location.as_ref().strip_prefix(&account_prefix) else {
                continue;
            };
            let (key, current) = match names::key_of_archive(name) {
                Some(key) => (key, true),
                None => match names::key_record_of_digest_archive(name) {
                    Some(record) => match self.recorded_key(account, name, &record).await? {
                        Some(key) => (key, true),
                        None => continue,
                    },
                    None => match names::key_of_archive_or_legacy(name) {
                        Some(key) => (key, false),
                        None => continue,
                    },
                },
            };
            let info = ArchiveInfo {
                key: key.clone(),
                size: m.size,
                last_modified: m.last_modified.into(),
            };
            match found.get(&key) {
                Some((true, _)) if !current => {}
                _ => {
                    found.insert(key, (current, info));
                }
            }
        }
        Ok(found.into_values().map(|(_, info)| info).collect())
    }

    /// The key of the digest archive `name` of `account`, from its key record;
    /// `None` when the record is missing or names another key (never listed).
    async fn recorded_key(
        &self,
        account: &AccountId,
        name: &str,
        record: &str,
    ) -> Result<Option<StreamKey>, BlobError> {
        let path = ObjectPath::from_iter([account.as_str(), record]);
        match self.store.get(&path).await {
            Ok(got) => Ok(names::key_of_record(name, &got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
        // The uploader writes the archive itself, maybe under a digest name.
        self.record_key(id).await?;
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

    #[tokio::test]
    async fn a_key_stored_under_its_digest_is_listed_and_deleted_with_its_record() {
        let b = BlobStore::memory();
        let id = StreamId {
            account: AccountId::new("acc").unwrap(),
            key: StreamKey::new("k".repeat(runlog_protocol::key::MAX_KEY_LEN)).unwrap(),
        };
        b.put(&id, Bytes::from_static(b"gz")).await.unwrap();
        let objects = || async {
            let all: Vec<_> = b.store.list(None).try_collect().await.unwrap();
            all.len()
        };
        assert_eq!(objects().await, 2, "the archive and its key record");
        assert_eq!(b.get(&id).await.unwrap(), Bytes::from_static(b"gz"));
        let listed = b.list(&id.account).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, id.key);
        assert!(b.delete(&id).await.unwrap());
        assert_eq!(objects().await, 0, "nothing is left behind");
        assert!(!b.exists(&id).await.unwrap());
    }
}
