//! `/blob`: archive upload and download, and upload links.

use crate::archive;
use crate::auth::{LinkFields, LinkPurpose};
use crate::error::ApiError;
use crate::extract::{Caller, Stream};
use crate::state::ServiceState;
use crate::store::{StoreError, StreamId};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use runlog_protocol::service::{LinkExpires, LinkResponse};
use runlog_protocol::{AccountId, Scope, StreamKey};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Answer of an archive upload.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    /// NDJSON rows in the archive.
    pub lines: usize,
    /// Bytes stored (compressed).
    pub stored_bytes: usize,
}

/// Pieces of an upload in flight to the thread that checks them.
const UPLOAD_PIECES: usize = 4;

/// Reads an uploaded archive (plain or gzip NDJSON) and stores it gzip-compressed.
/// Each piece is inflated and validated on a blocking thread as it arrives
/// ([`ArchiveIngest`](crate::archive_ingest::ArchiveIngest)): the service never
/// holds the archive's plain text, only the compressed bytes it stores.
async fn store_archive(
    st: &ServiceState,
    id: &StreamId,
    headers: &HeaderMap,
    raw: Body,
) -> Result<Uploaded, ApiError> {
    use http_body_util::BodyExt;
    // An upload is one of the account's requests: counted in its rate and holding
    // one of its slots while it lasts, as an append does (downloads are not: a
    // reader, or anyone holding a download link, must not use up the writers' rate).
    // Archives do not need the stream store, so its outage does not refuse them.
    let _admitted = st
        .quotas()
        .admit_without_the_store(st.streams().as_ref(), &id.account)
        .await?;
    let declared_gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let limit = st.config().max_blob_body;
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        ApiError::TooLarge(format!(
            "request body is larger than this service accepts ({limit} bytes)"
        ))
    };
    if declared_len.is_some_and(|n| n > limit) {
        super::drain(raw, declared_len, limit, 0).await;
        return Err(too_large());
    }
    let mut ingest =
        crate::archive_ingest::ArchiveIngest::new(declared_gzip, st.config().max_archive_bytes);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(UPLOAD_PIECES);
    let checker = tokio::task::spawn_blocking(move || {
        while let Some(piece) = rx.blocking_recv() {
            ingest.feed(&piece)?;
        }
        ingest.finish()
    });
    let mut body = raw;
    let mut read = 0usize;
    let mut refused = false;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("cannot read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > limit {
            drop(tx);
            let _ = checker.await;
            super::drain(body, declared_len, limit, read).await;
            return Err(too_large());
        }
        if tx.send(data).await.is_err() {
            // The checker refused the archive: the rest of the body is read (as
            // far as a drain goes) so the client gets the answer, not a reset.
            refused = true;
            break;
        }
    }
    drop(tx);
    if refused {
        super::drain(body, declared_len, limit, read).await;
    }
    let (lines, gz) = checker
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let stored_bytes = gz.len();
    st.blobs().put(id, gz).await?;
    let m = st.metrics();
    m.archives_written.fetch_add(1, Ordering::Relaxed);
    m.archives_uploaded.fetch_add(1, Ordering::Relaxed);
    Ok(Uploaded {
        lines,
        stored_bytes,
    })
}

/// `POST /blob`: the complete archive as NDJSON, plain or `Content-Encoding: gzip`.
pub async fn upload(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<Uploaded>, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    Ok(Json(store_archive(&st, &q.id(), &headers, raw).await?))
}

/// `GET /blob`: the archive as NDJSON; gzip as stored when the client accepts it.
///
/// Streamed from the object store either way, and inflated as it goes out for a
/// client that does not take gzip: a slow or stalled download holds a piece of the
/// archive, never all of it (and is dropped by the write timeout).
pub async fn download(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    serve_archive(&st, &q.id(), &headers).await
}

/// The archive of `id` as a response: gzip as stored when the request accepts it,
/// NDJSON inflated on the way out otherwise.
async fn serve_archive(
    st: &ServiceState,
    id: &StreamId,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let stored = st.blobs().get_stream(id).await?;
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.split(';').next().is_some_and(|e| e.trim() == "gzip"))
        });
    let size = stored.size;
    let mut bytes = stored
        .bytes
        .map(|piece| piece.map_err(|e| StoreError::Unavailable(e.to_string())));
    // The first piece tells gzip from plain (an external uploader may have stored
    // plain NDJSON through a presigned link).
    let mut first = Bytes::new();
    while first.len() < 2 {
        match bytes.next().await {
            Some(piece) => first = [first, piece?].concat().into(),
            None => break,
        }
    }
    let gzip = archive::is_gzip(&first);
    let stored = futures_util::stream::once(async move { Ok(first) })
        .chain(bytes)
        .boxed();
    let (body, length, encoding) = match (gzip, accepts_gzip) {
        (false, _) => (stored, Some(size), None),
        // The stored size, so a download shows its progress as it did when the body
        // was one buffer.
        (true, true) => (stored, Some(size), Some(HeaderValue::from_static("gzip"))),
        (true, false) => (
            archive::inflate(stored, st.config().max_archive_bytes),
            None,
            None,
        ),
    };
    let mut resp = Body::from_stream(body.map_err(std::io::Error::other)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Some(length) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(encoding) = encoding {
        h.insert(header::CONTENT_ENCODING, encoding);
    }
    Ok(resp)
}

/// `POST /blob/link/upload`: a URL that accepts one `PUT` of the archive until it
/// expires (self-signed links; an S3 presigned URL accepts puts until it expires).
pub async fn link(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
) -> Result<Json<LinkResponse>, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    let ttl = st.config().link_ttl;
    let id = q.id();
    if let Some(url) = st.blobs().presigned_put(&id, ttl).await? {
        return Ok(Json(LinkResponse {
            link: url.to_string(),
            expires: LinkExpires::after(ttl),
        }));
    }
    Ok(Json(signed_link(
        &st,
        &headers,
        LinkPurpose::Upload,
        "/blob/upload",
        &id.account,
        ("key", id.key.as_str()),
    )?))
}

/// `POST /blob/link/download` (read scope): a URL that serves the archive, with no
/// token, until it expires (`config.link_ttl`, an hour by default, as Harness's log
/// service signs them). 404 when there is no archive yet: a link that could only
/// answer 404 would hide that from whoever asked for it. The link is runlog's own
/// (`GET /blob/read`) on every backend, so what it serves is NDJSON as
/// `GET /blob` serves it, not the stored gzip object.
pub async fn download_link(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
) -> Result<Json<LinkResponse>, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let id = q.id();
    if !st.blobs().exists(&id).await? {
        return Err(ApiError::NotFound("archive not found".into()));
    }
    Ok(Json(signed_link(
        &st,
        &headers,
        LinkPurpose::Download,
        "/blob/read",
        &id.account,
        ("key", id.key.as_str()),
    )?))
}

/// A self-signed link to `path` for what `subject` names in `account` (`("key", K)`
/// or `("prefix", P)`), valid for `config.link_ttl`; `expires` in nanoseconds, as
/// Harness's log service answers (lite-engine decodes it as a Go `time.Duration` and
/// drops the upload on anything else).
pub(crate) fn signed_link(
    st: &ServiceState,
    headers: &HeaderMap,
    purpose: LinkPurpose,
    path: &str,
    account: &AccountId,
    subject: (&str, &str),
) -> Result<LinkResponse, ApiError> {
    let ttl = st.config().link_ttl;
    let base = match &st.config().public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| st.config().addr.to_string(), str::to_owned);
            format!("http://{host}")
        }
    };
    let exp_secs = (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    // Each link its own: an upload link is used once, and a client that asks again
    // (a retry) gets a new one.
    let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
    let sig = LinkFields {
        purpose,
        account,
        subject: subject.1,
        expires: exp_secs,
        nonce: &nonce,
    }
    .sign(st.secret());
    let mut url = url::Url::parse(&format!("{base}{path}"))
        .map_err(|e| ApiError::Internal(format!("bad public URL {base:?}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("accountID", account.as_str())
        .append_pair(subject.0, subject.1)
        .append_pair("expires", &exp_secs.to_string())
        .append_pair("n", &nonce)
        .append_pair("sig", &sig);
    Ok(LinkResponse {
        link: url.to_string(),
        expires: LinkExpires::after(ttl),
    })
}

/// Query of a self-signed link (upload or download).
#[derive(Debug, Deserialize)]
pub struct SignedLink {
    #[serde(rename = "accountID")]
    account_id: AccountId,
    key: StreamKey,
    expires: u64,
    /// What makes each link distinct (random, signed with the rest).
    n: String,
    sig: String,
}

impl LinkQuery for SignedLink {
    fn fields(&self, purpose: LinkPurpose) -> LinkFields<'_> {
        LinkFields {
            purpose,
            account: &self.account_id,
            subject: self.key.as_str(),
            expires: self.expires,
            nonce: &self.n,
        }
    }

    fn sig(&self) -> &str {
        &self.sig
    }
}

/// The query of a self-signed link (an upload, download or zip link): what its
/// signature binds, and the signature.
pub(crate) trait LinkQuery {
    /// The fields the signature binds, for a link of `purpose`.
    fn fields(&self, purpose: LinkPurpose) -> LinkFields<'_>;
    /// The signature the link carries.
    fn sig(&self) -> &str;
}

/// A link's query, checked for `purpose`: 400 when it is not a link's query, 401
/// when its signature does not hold or it has expired.
pub(crate) fn verified<Q: LinkQuery>(
    st: &ServiceState,
    q: Result<axum::extract::Query<Q>, axum::extract::rejection::QueryRejection>,
    purpose: LinkPurpose,
) -> Result<Q, ApiError> {
    let what = purpose.name();
    let axum::extract::Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("invalid {what} link: {}", e.body_text())))?;
    q.fields(purpose)
        .verify(st.secret(), q.sig())
        .map_err(|e| ApiError::Unauthorized(format!("{what} link refused: {e}")))?;
    Ok(q)
}

/// `PUT /blob/upload?…&expires=&sig=`: the target of a self-signed upload link. The
/// link is its own authorisation; no token is needed or read. The body is read only
/// after the link is verified.
pub async fn upload_signed(
    State(st): State<ServiceState>,
    q: Result<axum::extract::Query<SignedLink>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Json<Uploaded>, ApiError> {
    let q = verified(&st, q, LinkPurpose::Upload)?;
    if !st
        .used_links()
        .claim(&q.sig, q.expires, crate::auth::now_secs())
    {
        return Err(ApiError::Conflict(
            "this upload link was used already; ask for a new one".into(),
        ));
    }
    let id = StreamId {
        account: q.account_id,
        key: q.key,
    };
    // Read only once the link is known good: anyone may send to this route, and a
    // body taken first would be held in memory (up to the archive limit) only to be
    // refused.
    let stored = store_archive(&st, &id, &headers, raw).await;
    if stored.is_err() {
        // Nothing was stored: the link stays good for another try.
        st.used_links().release(&q.sig);
    }
    Ok(Json(stored?))
}

/// `GET /blob/read?…&expires=&sig=`: the target of a self-signed download link. The
/// link is its own authorisation (no token is read) and may be used until it
/// expires.
pub async fn download_signed(
    State(st): State<ServiceState>,
    q: Result<axum::extract::Query<SignedLink>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = verified(&st, q, LinkPurpose::Download)?;
    let id = StreamId {
        account: q.account_id,
        key: q.key,
    };
    serve_archive(&st, &id, &headers).await
}
