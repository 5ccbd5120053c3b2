//! Turning a live stream's lines into its archive, and the sweep that expires idle
//! and long-closed streams (snapshotting each first, so expiry never loses a line).

use crate::archive_build::ArchiveBuild;
use crate::error::ApiError;
use crate::state::ServiceState;
use crate::store::StreamId;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Lines read per store call while snapshotting.
const SNAPSHOT_READ: usize = 16_384;

/// Writes every stored line of `id` as its archive (gzip NDJSON); returns the line
/// count. Built as the lines are read ([`ArchiveBuild`]), so the lines, their
/// NDJSON and the gzip are never all in memory at once.
pub async fn snapshot_stream(st: &ServiceState, id: &StreamId) -> Result<u64, ApiError> {
    let mut build = ArchiveBuild::start(st.blobs(), id);
    let mut next = 0;
    loop {
        let chunk = st.streams().read(id, next, SNAPSHOT_READ).await?;
        let Some(last) = chunk.last() else { break };
        // Ingest refuses a `pos` above `MAX_POS`; should one be stored anyway, the
        // read ends at it rather than wrapping round to 0 and never ending.
        let after = last.pos.checked_add(1);
        build.add(std::sync::Arc::new(chunk)).await;
        match after {
            Some(after) => next = after,
            None => break,
        }
    }
    let count = build.commit().await?;
    st.metrics()
        .archives_written
        .fetch_add(1, Ordering::Relaxed);
    Ok(count)
}

/// One pass of expiry: an open stream idle past `idle_timeout`, or a closed one past
/// `closed_retention`, is snapshotted (unless an archive exists) and removed.
pub async fn sweep_once(st: &ServiceState) {
    let Ok(metas) = st.streams().list_all().await else {
        return;
    };
    let now = SystemTime::now();
    let cfg = st.config();
    for meta in metas {
        let age = now.duration_since(meta.last_activity).unwrap_or_default();
        let expired = if meta.open {
            age >= cfg.idle_timeout
        } else {
            age >= cfg.closed_retention
        };
        if !expired {
            continue;
        }
        if let Err(e) = expire(st, &meta.id, meta.last_activity, meta.open).await {
            tracing::warn!(account = %meta.id.account, key = %meta.id.key, error = %e, "cannot expire stream; will retry");
        }
    }
}

/// Closes, archives and removes `id`, which the sweep saw idle since `idle_since`
/// (and still `open`, or closed by its writer); a stream written to or reopened
/// since then is left alone.
async fn expire(
    st: &ServiceState,
    id: &StreamId,
    idle_since: SystemTime,
    open: bool,
) -> Result<(), ApiError> {
    let Some(closed) = st.streams().close_if_idle(id, idle_since).await? else {
        return Ok(());
    };
    if !st.blobs().exists(id).await? {
        snapshot_stream(st, id).await?;
    }
    // Its writer never closed it: the ledger says so. (One its writer closed was
    // finished then.) The index is a reader's aid, so failing to store it does not
    // stop the expiry.
    if open
        && let Err(e) = st
            .sections()
            .finish(
                st.streams().as_ref(),
                st.blobs(),
                id,
                &Default::default(),
                false,
                None,
            )
            .await
    {
        tracing::warn!(account = %id.account, key = %id.key, error = %e, "cannot finish the section index");
    }
    // Reopened meanwhile (another replica, a retried step): it lives on with every
    // line it took; its writer archives it again at close.
    if !st
        .streams()
        .remove_if_unchanged(id, closed.last_activity)
        .await?
    {
        return Ok(());
    }
    // Finished above; dropped here too should storing it have failed.
    let _ = st.sections().forget(id).await;
    st.metrics().streams_expired.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Archives every held stream that has lines and no archive yet (graceful shutdown
/// of a service whose live lines exist only in its memory).
pub async fn snapshot_all_unarchived(st: &ServiceState) {
    let Ok(metas) = st.streams().list_all().await else {
        return;
    };
    for meta in metas.into_iter().filter(|m| m.lines > 0) {
        let done = match st.blobs().exists(&meta.id).await {
            Ok(true) => Ok(0),
            Ok(false) => snapshot_stream(st, &meta.id).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = done {
            tracing::warn!(account = %meta.id.account, key = %meta.id.key, error = %e, "cannot archive stream at shutdown");
        }
    }
}

/// Runs [`sweep_once`] every `sweep_interval` until shutdown.
pub async fn run(st: ServiceState) {
    let mut tick = tokio::time::interval(st.config().sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = st.shutdown_token().cancelled() => return,
            _ = tick.tick() => sweep_once(&st).await,
        }
    }
}
