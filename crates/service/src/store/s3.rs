//! Archives in S3 or any S3-compatible server (MinIO, Ceph, R2, moto), through
//! `object_store`'s S3 backend.
//!
//! - **Where:** `s3://bucket/prefix` (a prefix of at most 100 bytes); archives are
//!   `prefix/<account>/<key>.ndjson.gz`, named by `super::names`.
//!   Region, endpoint and credentials come from [`S3Settings`] (tests) or from the
//!   usual `AWS_*` variables (the CLI): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`, and for S3-compatible servers
//!   `AWS_ENDPOINT` + `AWS_ALLOW_HTTP=true`.
//! - **Upload links** are real S3 presigned `PUT` URLs ([`PrefixedSigner`]), so an
//!   engine uploads its archive straight to the bucket; the service never carries
//!   those bytes.
//! - **Large archives** go up as multipart uploads ([`MultipartOnLarge`]), which
//!   are aborted when a part fails, so no orphaned parts accumulate in the bucket
//!   (still, configure the bucket lifecycle rule `AbortIncompleteMultipartUpload`
//!   for uploads cut short by a crash).
//! - **Outages:** requests are retried briefly (a few attempts within
//!   [`S3Settings::retry_timeout`]) and then fail, so a route answers 503 within
//!   seconds instead of hanging, and works again once S3 answers.

use super::BlobStore;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientConfigKey, CopyOptions, GetOptions, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutPayloadMut, PutResult, RenameOptions, RetryConfig,
};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Archives at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Size of one part (S3 requires at least 5 MiB for every part but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once.
const PART_CONCURRENCY: usize = 4;

/// Why an S3 store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The `s3://bucket/prefix` URL is malformed.
    #[error("invalid S3 URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `object_store` refused the configuration.
    #[error("S3 configuration: {0}")]
    Config(#[from] object_store::Error),
}

/// An object store and the signer for the same bucket and prefix.
type StoreAndSigner = (Arc<dyn ObjectStore>, Arc<dyn Signer>);

/// Explicit S3 settings. Fields left `None` fall back to `object_store`'s defaults
/// (or, with [`S3Settings::blob_store_from_env`], to the `AWS_*` variables).
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Object name prefix ("" for the bucket root), without leading or trailing `/`.
    pub prefix: String,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Permit `http://` endpoints (S3-compatible servers on a private network).
    pub allow_http: bool,
    /// Longest time one request (with its retries) may take before it fails.
    pub retry_timeout: Duration,
}

impl S3Settings {
    /// Bucket and prefix from `s3://bucket/prefix`, nothing else set.
    pub fn from_url(url: &str) -> Result<S3Settings, S3Error> {
        let bad = |reason: &str| S3Error::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad("expected s3://bucket[/prefix]"));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket"))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad("prefix must not contain '.' or '..' segments"));
        }
        // Object names are at most `names::MAX_NAME` bytes so that, with the prefix,
        // every one fits S3's 1024-byte limit.
        if prefix.len() > super::names::MAX_PREFIX {
            return Err(bad(&format!(
                "prefix must be at most {} bytes",
                super::names::MAX_PREFIX
            )));
        }
        Ok(S3Settings {
            bucket: bucket.to_owned(),
            prefix,
            retry_timeout: Duration::from_secs(10),
            ..S3Settings::default()
        })
    }

    /// What the CLI uses: bucket and prefix from `s3://bucket/prefix`, everything
    /// else from the `AWS_*` environment variables.
    pub fn blob_store_from_env(url: &str) -> Result<BlobStore, S3Error> {
        let settings = S3Settings::from_url(url)?;
        let builder = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        settings.finish(builder)
    }

    /// The Redis store's overflow store for the bucket of `url` (under
    /// `prefix/+overflow`), credentials from the `AWS_*` environment variables.
    pub fn overflow_store_from_env(url: &str) -> Result<Arc<dyn ObjectStore>, S3Error> {
        let settings = S3Settings::from_url(url)?.overflow();
        let builder = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        Ok(settings.build(builder)?.0)
    }

    /// A [`BlobStore`] from these settings alone (no environment variables read).
    pub fn blob_store(&self) -> Result<BlobStore, S3Error> {
        self.finish(self.builder_from_fields())
    }

    /// The same bucket under `prefix/+overflow`: where the Redis stream store moves
    /// the heads of over-long streams. `+` cannot start an account id, so this never
    /// collides with an archive.
    pub fn overflow(&self) -> S3Settings {
        let prefix = if self.prefix.is_empty() {
            "+overflow".to_owned()
        } else {
            format!("{}/+overflow", self.prefix)
        };
        S3Settings {
            prefix,
            ..self.clone()
        }
    }

    /// The bare object store (prefix applied, multipart for large objects), for uses
    /// other than archives, such as the Redis store's overflow segments.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>, S3Error> {
        let (store, _) = self.build(self.builder_from_fields())?;
        Ok(store)
    }

    fn builder_from_fields(&self) -> AmazonS3Builder {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_allow_http(self.allow_http);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &self.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        builder
    }

    /// A [`BlobStore`] for this bucket and prefix from a builder the caller prepared
    /// (credentials, endpoint, …), with this module's retry and timeout policy added.
    /// What [`S3Settings::blob_store_from_env`] does with `AmazonS3Builder::from_env()`.
    pub fn blob_store_with(&self, builder: AmazonS3Builder) -> Result<BlobStore, S3Error> {
        self.finish(builder.with_bucket_name(&self.bucket))
    }

    fn finish(&self, builder: AmazonS3Builder) -> Result<BlobStore, S3Error> {
        let (store, signer) = self.build(builder)?;
        Ok(BlobStore::new(store, Some(signer)))
    }

    fn build(&self, builder: AmazonS3Builder) -> Result<StoreAndSigner, S3Error> {
        let retry_timeout = if self.retry_timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            self.retry_timeout
        };
        let s3 = builder
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout,
            })
            // Set key by key: replacing the client options wholesale would drop what
            // `from_env` read, such as `AWS_ALLOW_HTTP=true` for an S3-compatible server.
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "3s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "300s")
            .build()?;
        let prefix = ObjectPath::from(self.prefix.as_str());
        let signer = Arc::new(PrefixedSigner {
            inner: s3.clone(),
            prefix: prefix.clone(),
        });
        let store = Arc::new(MultipartOnLarge {
            inner: PrefixStore::new(s3, prefix),
        });
        Ok((store, signer))
    }
}

/// Presigns URLs for paths under a prefix: the signing counterpart of
/// [`PrefixStore`], which `object_store` does not provide.
#[derive(Debug)]
pub struct PrefixedSigner {
    inner: AmazonS3,
    prefix: ObjectPath,
}

#[async_trait]
impl Signer for PrefixedSigner {
    async fn signed_url(
        &self,
        method: http::Method,
        path: &ObjectPath,
        expires_in: Duration,
    ) -> object_store::Result<url::Url> {
        let full = self
            .prefix
            .parts()
            .chain(path.parts())
            .collect::<ObjectPath>();
        self.inner.signed_url(method, &full, expires_in).await
    }
}

/// Sends `put`s of [`MULTIPART_THRESHOLD`] bytes or more as multipart uploads
/// (parallel parts, aborted on failure); everything else passes straight through.
#[derive(Debug)]
pub struct MultipartOnLarge<T> {
    inner: T,
}

impl<T: ObjectStore> MultipartOnLarge<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        MultipartOnLarge { inner }
    }

    async fn put_in_parts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut upload = self
            .inner
            .put_multipart_opts(
                location,
                PutMultipartOptions {
                    tags: opts.tags,
                    attributes: opts.attributes,
                    extensions: opts.extensions,
                },
            )
            .await?;
        // Part futures are created in order (that fixes their part numbers) and run
        // a few at a time.
        let parts: Vec<_> = split_into_parts(&payload, PART_SIZE)
            .into_iter()
            .map(|part| upload.put_part(part))
            .collect();
        let uploaded = futures_util::stream::iter(parts)
            .buffer_unordered(PART_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        let result = match uploaded {
            Ok(_) => upload.complete().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            // Parts already stored would be kept (and billed) until aborted.
            if let Err(abort_error) = upload.abort().await {
                tracing::warn!(%location, error = %abort_error, "could not abort a failed multipart upload");
            }
            tracing::warn!(%location, error = %e, "multipart upload failed and was aborted");
        }
        result
    }
}

/// Splits a payload into parts of `part_size` bytes (the last one shorter) without
/// copying: parts are slices of the payload's chunks.
fn split_into_parts(payload: &PutPayload, part_size: usize) -> Vec<PutPayload> {
    let mut parts = Vec::new();
    let mut current = PutPayloadMut::new();
    for chunk in payload.iter() {
        let mut rest = chunk.clone();
        while !rest.is_empty() {
            let room = part_size - current.content_length();
            let piece = rest.split_to(room.min(rest.len()));
            current.push(piece);
            if current.content_length() == part_size {
                parts.push(std::mem::take(&mut current).freeze());
            }
        }
    }
    if !current.is_empty() {
        parts.push(current.freeze());
    }
    parts
}

impl<T> std::fmt::Display for MultipartOnLarge<T>
where
    T: std::fmt::Display,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultipartOnLarge({})", self.inner)
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for MultipartOnLarge<T> {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // Conditional puts need the single-request semantics; they are never archives.
        if payload.content_length() >= MULTIPART_THRESHOLD
            && matches!(opts.mode, PutMode::Overwrite)
        {
            self.put_in_parts(location, payload, opts).await
        } else {
            self.inner.put_opts(location, payload, opts).await
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gives_bucket_and_prefix() {
        let s = S3Settings::from_url("s3://logs/runlog/prod/").expect("valid");
        assert_eq!(s.bucket, "logs");
        assert_eq!(s.prefix, "runlog/prod");
        let root = S3Settings::from_url("s3://logs").expect("valid");
        assert_eq!(root.prefix, "");
        assert_eq!(root.overflow().prefix, "+overflow");
        assert_eq!(s.overflow().prefix, "runlog/prod/+overflow");
    }

    #[test]
    fn malformed_urls_are_refused_with_a_reason() {
        for bad in ["http://logs/x", "s3:///x", "logs/x"] {
            let err = S3Settings::from_url(bad).expect_err(bad);
            assert!(
                err.to_string().contains(bad) || err.to_string().contains("invalid"),
                "{err}"
            );
        }
        let long = format!(
            "s3://logs/{}",
            "p".repeat(super::super::names::MAX_PREFIX + 1)
        );
        let err = S3Settings::from_url(&long).expect_err("too long a prefix");
        assert!(err.to_string().contains("at most"), "{err}");
    }
}

#[cfg(test)]
mod part_tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parts_cover_the_payload_in_order_without_gaps() {
        let data: Vec<u8> = (0..100u8).collect();
        let payload: PutPayload = vec![
            Bytes::copy_from_slice(&data[..33]),
            Bytes::copy_from_slice(&data[33..]),
        ]
        .into_iter()
        .collect();
        let parts = split_into_parts(&payload, 40);
        let sizes: Vec<usize> = parts.iter().map(|p| p.content_length()).collect();
        assert_eq!(sizes, vec![40, 40, 20]);
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.iter().flat_map(|b| b.to_vec()))
            .collect();
        assert_eq!(joined, data);
    }
}
