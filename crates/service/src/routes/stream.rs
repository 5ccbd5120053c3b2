//! `/stream`: open, append, tail (SSE), close.

use super::rfc3339;
use crate::archive;
use crate::archive_build::ArchiveBuild;
use crate::error::ApiError;
use crate::extract::{Caller, Stream};
use crate::metrics::SubscriberGuard;
use crate::snapshot::snapshot_stream;
use crate::sse;
use crate::state::ServiceState;
use crate::store::{StoreError, StreamId, StreamMeta, TailItem};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use runlog_protocol::Scope;
use runlog_protocol::service::{
    ACCEPT_ARCHIVE_ENCODING, ARCHIVE_IF_COMPLETE, ARCHIVE_PARAM, AppendAck, EXPLICIT_OPEN,
    StreamInfo,
};
use std::sync::atomic::Ordering;

pub(crate) fn info(meta: &StreamMeta, archived: bool) -> StreamInfo {
    StreamInfo {
        key: meta.id.key.clone(),
        open: meta.open,
        lines: meta.lines,
        bytes: meta.bytes,
        archived,
        last_activity: rfc3339(meta.last_activity),
        complete: None,
        next_pos: None,
    }
}

/// `POST /stream`: opens (or reopens) a stream. Idempotent. The answer's `next_pos`
/// says where a writer continues a stream that holds lines already; it announces
/// that archive uploads may be gzip ([`ACCEPT_ARCHIVE_ENCODING`]): a writer that has
/// not seen it (a Harness log service stores upload bodies raw) uploads plain NDJSON.
pub async fn open(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    let _admitted = st
        .quotas()
        .admit(st.streams().as_ref(), &q.0.account_id)
        .await?;
    let meta = st.streams().open(&q.id()).await?;
    // Where a writer continues a stream that already holds lines (a reused key).
    let next_pos = meta.last_contiguous_pos.map_or(0, |p| p + 1);
    Ok((
        [(ACCEPT_ARCHIVE_ENCODING, HeaderValue::from_static("gzip"))],
        Json(StreamInfo {
            next_pos: Some(next_pos),
            ..info(&meta, false)
        }),
    ))
}

/// `PUT /stream`: appends a JSON array of lines; already-stored `pos` values are
/// ignored. A stream that is not open (never opened, or expired) is opened first:
/// lite-engine writes after a failed `POST /stream` too, and those lines must not be
/// lost. A closed stream still refuses lines (409).
pub async fn append(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<AppendAck>, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    let _admitted = st
        .quotas()
        .admit(st.streams().as_ref(), &q.0.account_id)
        .await?;
    let limit = st
        .config()
        .max_append_body
        .min(crate::config::MAX_APPEND_BODY_CEILING);
    let mut parse = crate::ingest::Incremental::default();
    let (raw, _reading) = super::read_body(st.body_budget(), &headers, raw, limit, |so_far| {
        parse.feed(so_far)
    })
    .await?;
    let (batch, out_first) = parse.finish_with_out_first(&raw)?;
    let scan = st.sections().scan(&batch, out_first.as_deref());
    let id = q.id();
    let ack = match st.streams().append_batch(&id, batch).await {
        // A runlog writer that reopens and resends from pos 0 itself wants the 404.
        Err(StoreError::NotFound) if !headers.contains_key(EXPLICIT_OPEN) => {
            st.streams().open(&id).await?;
            // The first batch went to the store; parsing again costs only this rare
            // path, where cloning every batch up front would cost every append.
            let batch = crate::ingest::parse_batch(&raw)?;
            st.streams().append_batch(&id, batch).await?
        }
        other => other?,
    };
    // The lines are stored: a failure to index them (a read back from a failing
    // store) must not fail the append, whose retry would change nothing. The index
    // catches up from the store on its next update.
    if let Some(scan) = scan
        && let Err(e) = st
            .sections()
            .after_append(st.streams().as_ref(), &id, scan, ack.next_pos)
            .await
    {
        tracing::warn!(account = %id.account, key = %id.key, error = %e, "cannot update the section index");
    }
    let m = st.metrics();
    m.lines_in.fetch_add(ack.appended, Ordering::Relaxed);
    m.duplicate_lines
        .fetch_add(ack.duplicates, Ordering::Relaxed);
    m.bytes_in.fetch_add(raw.len() as u64, Ordering::Relaxed);
    Ok(Json(ack))
}

/// `GET /stream`: SSE — every stored line from `Last-Event-ID + 1` (or 0), then live
/// lines, then `eof` once closed. A stream already removed is replayed from its
/// archive.
pub async fn tail(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let _admitted = st
        .quotas()
        .admit(st.streams().as_ref(), &q.0.account_id)
        .await?;
    // Held by the response body: the tail counts for its account until it ends.
    let permit = st.quotas().open_tail(&q.0.account_id)?;
    let from = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            // No line lies past `MAX_POS`: a larger id resumes there, after every line
            // (stores need not handle positions beyond it).
            .map(|id| id.saturating_add(1).min(runlog_protocol::MAX_POS + 1))
            .ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID must be a line pos (an integer)".into())
            })?,
    };
    let id = q.id();
    let tail = match st.streams().tail(&id, from).await {
        Ok(t) => finishing_from_archive(st.clone(), id.clone(), from, t),
        Err(StoreError::NotFound) => archive_replay(&st, &id, from).await?,
        Err(e) => return Err(e.into()),
    };
    let tail = tail
        .map(move |item| {
            let _held = &permit;
            item
        })
        .boxed();
    let guard = SubscriberGuard::new(st.metrics().clone());
    let stream = sse::body(
        tail,
        st.config().ping_interval,
        st.shutdown_token().clone(),
        guard,
    );
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

type TailStream = futures_util::stream::BoxStream<'static, Result<TailItem, StoreError>>;

/// A live tail that goes on from the archive when its stream is removed under it.
///
/// Expiry snapshots a stream into its archive, then removes it from the store; a
/// viewer still behind at that moment found no more lines there and got `eof` with
/// the rest of the stream missing. Now, when the store's tail ends and the stream is
/// gone, the lines from where the viewer stands come from the archive.
fn finishing_from_archive(
    st: ServiceState,
    id: crate::store::StreamId,
    from: u64,
    live: TailStream,
) -> TailStream {
    struct Tail {
        st: ServiceState,
        id: crate::store::StreamId,
        /// The `pos` after the last line handed out.
        next: u64,
        tail: TailStream,
        from_archive: bool,
    }
    let start = Tail {
        st,
        id,
        next: from,
        tail: live,
        from_archive: false,
    };
    futures_util::stream::unfold(start, |mut t| async move {
        loop {
            let item = t.tail.next().await?;
            let ended = matches!(item, Ok(TailItem::Eof) | Err(StoreError::NotFound));
            if ended && !t.from_archive {
                let removed = matches!(t.st.streams().meta(&t.id).await, Err(StoreError::NotFound));
                if removed && let Ok(rest) = archive_replay(&t.st, &t.id, t.next).await {
                    t.tail = rest;
                    t.from_archive = true;
                    continue;
                }
            }
            if let Ok(TailItem::Lines(lines)) = &item
                && let Some(last) = lines.last()
            {
                t.next = last.pos.saturating_add(1);
            }
            return Some((item, t));
        }
    })
    .boxed()
}

/// A finished stream's archive as a tail: its lines from `from`, then `Eof`. The
/// archive is inflated and split as it is read from the object store, a chunk per
/// pull of the SSE body, so a viewer holds one chunk of it, never the archive
/// (`archive::replay`). Only a missing archive is an error here; a damaged one ends
/// the tail with an `error` event after the lines before the damage.
async fn archive_replay(
    st: &ServiceState,
    id: &crate::store::StreamId,
    from: u64,
) -> Result<TailStream, ApiError> {
    let stored = match st.blobs().get_stream(id).await {
        Ok(b) => b,
        Err(crate::store::blob::BlobError::NotFound) => {
            return Err(ApiError::NotFound(
                "stream not found (no live stream and no archive)".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let limits = archive::ReadLimits {
        max_inflated: st.config().max_archive_bytes,
        max_row: archive::MAX_REPLAY_ROW_BYTES,
    };
    let bytes = stored
        .bytes
        .map(|piece| piece.map_err(|e| StoreError::Unavailable(e.to_string())))
        .boxed();
    Ok(archive::replay(bytes, from, limits))
}

/// `DELETE /stream[?snapshot=true]`: closes; with `snapshot`, the stored lines become
/// the archive. The writer's totals, if it states them (`&lines=&bytes=&digest=
/// &dropped=&outcome=`), are checked into the stream's ledger; with
/// `&archive=if_complete` ([`ARCHIVE_PARAM`]) the stored lines become the archive
/// only when that ledger proves them complete, and the answer's `archived` says
/// whether they did (the writer uploads its history when not). With `prefix=true` or
/// `keys=K1,K2,…` it closes several streams (Harness's forms,
/// [`super::compat::close_many`]).
pub async fn close(
    State(st): State<ServiceState>,
    caller: Caller,
    totals: crate::routes::sections::Totals,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    if let Some(many) = super::compat::CloseMany::from_uri(&uri)? {
        return Ok(Json(super::compat::close_many(&st, &caller, many).await?).into_response());
    }
    let q = Stream(crate::extract::parse_query(&uri)?);
    let if_complete = archive_if_complete(&uri)?;
    caller.require(&q.0.account_id, Scope::Write)?;
    let _admitted = st
        .quotas()
        .admit(st.streams().as_ref(), &q.0.account_id)
        .await?;
    let id = q.id();
    let started = std::time::Instant::now();
    let meta = st.streams().close(&id).await?;
    // The archive is built from the lines the ledger check reads, while it digests
    // them: one pass over the stream, compressing on one core and hashing on
    // another. Only a writer that stated its line count and digest can have it kept.
    let mut build = (if_complete && !q.0.snapshot && proves_text(&totals.0))
        .then(|| ArchiveBuild::start(st.blobs(), &id));
    let ledger = after_close(&st, &id, q.0.snapshot, &totals.0, build.as_mut()).await?;
    let checked = started.elapsed();
    let archived = match build {
        Some(build) => keep_when_complete(&st, &id, build, ledger.as_ref()).await,
        None => q.0.snapshot,
    };
    // Where a close's time goes (the ledger's read, digest and the archive's gzip run
    // together; the commit waits for the gzip to end), for profiling at debug level.
    tracing::debug!(account = %id.account, key = %id.key, lines = meta.lines, archived,
        checked_ms = checked.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64,
        "stream closed");
    Ok(Json(info(&meta, archived)).into_response())
}

/// Whether the close asks for [`ARCHIVE_IF_COMPLETE`]; any other value is refused,
/// so a misspelt request cannot silently leave a stream without its archive.
fn archive_if_complete(uri: &axum::http::Uri) -> Result<bool, ApiError> {
    let query = uri.query().unwrap_or_default();
    let mut asked = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == ARCHIVE_PARAM {
            if v != ARCHIVE_IF_COMPLETE {
                return Err(ApiError::BadRequest(format!(
                    "{ARCHIVE_PARAM} must be {ARCHIVE_IF_COMPLETE:?}, got {v:?}"
                )));
            }
            asked = true;
        }
    }
    Ok(asked)
}

/// Whether `totals` can prove the held lines the writer's: a count alone would take
/// another text under the same numbers for the writer's, so the digest is needed.
fn proves_text(totals: &runlog_protocol::ledger::WriterTotals) -> bool {
    totals.lines.is_some() && totals.digest.is_some()
}

/// Keeps `build` (the lines the ledger check read) as `id`'s archive when `ledger`
/// proves them exactly the lines the writer numbered: its stated line count and
/// digest both checked, no gap, no drop, and the build holding every line the
/// check counted. Whether it did; `false` gives the build up and leaves the archive
/// to the writer's upload, which replaces anything written here, so no failure on
/// this path loses a line.
async fn keep_when_complete(
    st: &ServiceState,
    id: &StreamId,
    build: ArchiveBuild,
    ledger: Option<&runlog_protocol::ledger::Ledger>,
) -> bool {
    let proven = ledger.is_some_and(|l| {
        l.complete
            && l.basis == runlog_protocol::ledger::Basis::WriterTotals
            && build.lines() == l.lines
    });
    if !proven {
        build.abort().await;
        return false;
    }
    match build.commit().await {
        Ok(_) => {
            st.metrics()
                .archives_written
                .fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            tracing::warn!(account = %id.account, key = %id.key, error = %e, "cannot archive a complete stream; its writer uploads it");
            false
        }
    }
}

/// What every close does once the store marked a stream closed: archive it when
/// asked, then finish its section index with the writer's totals (the one path of
/// `DELETE /stream` for one stream and for several). `archive` is fed the lines the
/// ledger check reads. Returns the stream's ledger (`None` when the index could not
/// be finished).
pub(crate) async fn after_close(
    st: &ServiceState,
    id: &StreamId,
    snapshot: bool,
    totals: &runlog_protocol::ledger::WriterTotals,
    archive: Option<&mut ArchiveBuild>,
) -> Result<Option<runlog_protocol::ledger::Ledger>, ApiError> {
    if snapshot {
        snapshot_stream(st, id).await?;
    }
    // The index is a reader's aid: failing to finish it never fails the close.
    match st
        .sections()
        .finish(st.streams().as_ref(), st.blobs(), id, totals, true, archive)
        .await
    {
        Ok(answer) => Ok(answer.ledger),
        Err(e) => {
            tracing::warn!(account = %id.account, key = %id.key, error = %e, "cannot finish the section index");
            Ok(None)
        }
    }
}
