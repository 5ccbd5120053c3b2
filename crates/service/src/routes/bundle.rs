//! Harness's zip download: `POST /blob/download?accountID=A&prefix=P` (read scope)
//! answers a link to one zip of every archive whose key starts with `P`.
//!
//! Harness's log service queues the zip for a worker and answers `queued`, then
//! `in_progress`, then `success` with the link to the finished file. Here the zip is
//! written when the link is fetched, so the first answer is already
//! `{"link", "status": "success", "expires"}` (the same JSON fields; `expires` an
//! RFC 3339 time, as Harness writes it). Each archive is one entry named
//! `<key>.ndjson` (the suffix keeps a key that is also a prefix of another key, `a`
//! beside `a/b`, from having to be a file and a directory at once), holding its rows
//! as `GET /blob` serves them. At most [`MAX_ZIP_ARCHIVES`] archives (413 above);
//! the zip is written to a temporary file, one archive in memory at a time, and
//! streamed from there.

use super::blob::{LinkQuery, signed_link, verified};
use crate::archive;
use crate::auth::{LinkFields, LinkPurpose};
use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::ServiceState;
use crate::store::StreamId;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runlog_protocol::{AccountId, Scope, StreamKey};
use serde::{Deserialize, Serialize};
use std::io::{Seek, Write};
use std::time::SystemTime;

/// Most archives one zip holds.
pub const MAX_ZIP_ARCHIVES: usize = 1000;

/// `?accountID=A&prefix=P`.
#[derive(Debug, Deserialize)]
pub struct PrefixQuery {
    #[serde(rename = "accountID")]
    account_id: AccountId,
    #[serde(default)]
    prefix: String,
}

/// Answer of `POST /blob/download`, Harness's `ResponsePrefixDownload`.
#[derive(Debug, Serialize)]
pub struct PrefixDownload {
    /// The zip's URL; works without a token until `expires`.
    pub link: String,
    /// `success`: the zip is ready to fetch (it is written as it is fetched).
    pub status: &'static str,
    /// When the link stops working (RFC 3339).
    pub expires: String,
}

/// Refuses an empty prefix (it would zip the whole account) and control characters.
fn checked_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.is_empty() {
        return Err(ApiError::BadRequest(
            "prefix is required (a key prefix, e.g. a pipeline run's)".into(),
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "the prefix holds a control character".into(),
        ));
    }
    Ok(())
}

/// The keys of `account`'s archives under `prefix`, in key order; 404 when none,
/// 413 past [`MAX_ZIP_ARCHIVES`].
async fn archives_under(
    st: &ServiceState,
    account: &AccountId,
    prefix: &str,
) -> Result<Vec<StreamKey>, ApiError> {
    let mut keys: Vec<StreamKey> = st
        .blobs()
        .list(account)
        .await?
        .into_iter()
        .map(|a| a.key)
        .filter(|k| k.as_str().starts_with(prefix))
        .collect();
    if keys.is_empty() {
        return Err(ApiError::NotFound("no archive under this prefix".into()));
    }
    if keys.len() > MAX_ZIP_ARCHIVES {
        return Err(ApiError::TooLarge(format!(
            "{} archives under this prefix; a zip holds at most {MAX_ZIP_ARCHIVES}",
            keys.len()
        )));
    }
    keys.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(keys)
}

/// `POST /blob/download?accountID=A&prefix=P` (read scope): a link to the zip of
/// every archive under `P`.
pub async fn zip_link(
    State(st): State<ServiceState>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Json<PrefixDownload>, ApiError> {
    let q: PrefixQuery = crate::extract::parse_query(&uri)?;
    caller.require(&q.account_id, Scope::Read)?;
    checked_prefix(&q.prefix)?;
    archives_under(&st, &q.account_id, &q.prefix).await?;
    let link = signed_link(
        &st,
        &headers,
        LinkPurpose::Zip,
        "/blob/zip",
        &q.account_id,
        ("prefix", &q.prefix),
    )?;
    Ok(Json(PrefixDownload {
        link: link.link,
        status: "success",
        expires: super::rfc3339(SystemTime::now() + st.config().link_ttl),
    }))
}

/// Query of a zip link.
#[derive(Debug, Deserialize)]
pub struct ZipLink {
    #[serde(rename = "accountID")]
    account_id: AccountId,
    prefix: String,
    expires: u64,
    n: String,
    sig: String,
}

impl LinkQuery for ZipLink {
    fn fields(&self, purpose: LinkPurpose) -> LinkFields<'_> {
        LinkFields {
            purpose,
            account: &self.account_id,
            subject: &self.prefix,
            expires: self.expires,
            nonce: &self.n,
        }
    }

    fn sig(&self) -> &str {
        &self.sig
    }
}

/// `GET /blob/zip?…&expires=&sig=`: the target of a zip link (its own authorisation;
/// no token is read). The archives are the ones under the prefix when it is fetched.
pub async fn zip(
    State(st): State<ServiceState>,
    q: Result<axum::extract::Query<ZipLink>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = verified(&st, q, LinkPurpose::Zip)?;
    checked_prefix(&q.prefix)?;
    let keys = archives_under(&st, &q.account_id, &q.prefix).await?;
    let file = tempfile::tempfile()
        .map_err(|e| ApiError::Unavailable(format!("cannot create the zip: {e}")))?;
    let mut zip = zip::ZipWriter::new(file);
    let max = st.config().max_archive_bytes;
    for key in keys {
        let id = StreamId {
            account: q.account_id.clone(),
            key,
        };
        let stored = st.blobs().get(&id).await?;
        // Inflating and deflating a whole archive is CPU work: off the runtime.
        zip = tokio::task::spawn_blocking(move || add_entry(zip, &id.key, &stored, max))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    }
    let mut file = tokio::task::spawn_blocking(move || {
        let mut file = zip.finish()?;
        file.rewind()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(format!("cannot write the zip: {e}")))?;
    let len = file
        .seek(std::io::SeekFrom::End(0))
        .and_then(|len| file.rewind().map(|()| len))
        .map_err(|e| ApiError::Unavailable(format!("cannot read the zip: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"logs.zip\""),
    );
    Ok(resp)
}

/// Writes one archive (stored gzip, or plain NDJSON a presigned upload left) as the
/// entry `<key>.ndjson`.
fn add_entry(
    mut zip: zip::ZipWriter<std::fs::File>,
    key: &StreamKey,
    stored: &[u8],
    max: u64,
) -> Result<zip::ZipWriter<std::fs::File>, ApiError> {
    let plain;
    let rows = if archive::is_gzip(stored) {
        plain = archive::gunzip_limited(stored, max)?;
        &plain[..]
    } else {
        stored
    };
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(rows.len() as u64 >= u64::from(u32::MAX));
    let write = |zip: &mut zip::ZipWriter<std::fs::File>| -> Result<(), zip::result::ZipError> {
        zip.start_file(format!("{key}.ndjson"), options)?;
        zip.write_all(rows)?;
        Ok(())
    };
    write(&mut zip).map_err(|e| ApiError::Unavailable(format!("cannot write the zip: {e}")))?;
    Ok(zip)
}
