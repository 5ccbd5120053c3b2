//! `close()`: finish lines, drain the sender, upload the archive, close the stream,
//! all before the deadline; keep the history in the outbox when it could not land.
//!
//! Run once per writer, by [`crate::Writer::close`] or by the guard that drops the last
//! handle without it.

use crate::error::WriterError;
use crate::retry::until_deadline;
use crate::shared::Shared;
use runlog_protocol::LogLine;
use runlog_protocol::engine::WriterReport;
use std::sync::Arc;
use tokio::time::Instant;

/// Lines at the end of the stream that nudges look at.
const NUDGE_WINDOW: usize = 20;

/// The closing sequence; see the module docs.
pub(crate) async fn close(shared: Arc<Shared>) -> WriterReport {
    let cfg = shared.cfg();
    let started = Instant::now();
    let deadline = started + cfg.close_deadline;
    let spool_complete = shared.finish_producing();
    // Read from the spool's tail now: the spool is moved or removed below.
    let hints = hints(&shared);
    shared.set_deadline(deadline);
    shared.wake_sender();
    shared.wake_producers();
    let mut dl = shared.deadline();
    let mut done = shared.sender_done();
    let drained = until_deadline(&mut dl, async move { done.wait_for(|d| *d).await.is_ok() })
        .await
        .is_some();
    if !drained {
        shared.stop_live(WriterError::Undrained);
    }
    let drain_ms = started.elapsed().as_millis() as u64;

    let key = cfg.key.clone();
    let (spool_path, acked_end, next_pos, totals, first_pos) = {
        let l = shared.lines();
        (
            l.spool().path().to_owned(),
            l.acked_end(),
            l.queue().next_pos(),
            l.totals(),
            l.first_pos(),
        )
    };
    // The run's outcome travels with the totals, so a close that archives also marks
    // the sections still open.
    let totals = runlog_protocol::ledger::WriterTotals {
        outcome: shared.outcome(),
        ..totals
    };
    // lite-engine's meanings: with `skip_opening_stream` the stream and its archive are
    // someone else's (an upload would overwrite the lines another writer put there), and
    // with `skip_closing_stream` the writer only flushes. Either way, what the live stream
    // lacks is sent again from the outbox, never uploaded. A writer that continued a
    // stream whose earlier lines (a reused key's) the service still holds never uploads
    // either: its spool holds only its part, so the service archives every line it
    // holds, the earlier ones included (`DELETE /stream?snapshot=true`). When the
    // service lost those (a restart), its part is all there is, and it is uploaded.
    let continued = first_pos > 0 && acked_end >= first_pos;
    let upload_archive = crate::outbox::uploads_archive(cfg) && !continued;
    let live_complete = acked_end >= next_pos;
    let client = shared.client();
    let mut archived = false;
    let mut stream_closed = cfg.skip_closing_stream;
    // Archive once: a service that acknowledged every line is asked to build the
    // archive from its own, which it does only when they prove complete against
    // these totals. Any other answer — lines it lost after acknowledging them, an
    // error, a service that cannot — leaves the upload below to do it, so the
    // history is sent only when the service lacks it. Only a spool that never failed
    // has exact totals (and an archive to fall back on).
    if spool_complete && upload_archive && live_complete && !stream_closed {
        match shared
            .retry(&mut dl, || client.close_archiving(&key, &totals))
            .await
        {
            Ok(crate::client::Closing::Closed { archived: built }) => {
                stream_closed = true;
                archived = built;
            }
            Ok(crate::client::Closing::NotAsked) => {}
            // A stream the service no longer has (a restart that lost it) answers
            // 404: the upload below brings the archive, and the close after it
            // reports whatever still fails.
            Err(why) => {
                tracing::debug!(target: "livelog", %why, "close with totals failed; uploading")
            }
        }
    }
    let built = archived;
    if spool_complete && upload_archive && !archived {
        let uploaded = shared
            .retry(&mut dl, || {
                client.upload(&key, &spool_path, cfg.indirect_upload)
            })
            .await;
        match uploaded {
            Ok(()) => archived = true,
            Err(why) => shared.lines().note_error(WriterError::Upload(why)),
        }
    }
    // A writer that uploads no archive closes only a stream that holds all its lines:
    // its archive is made from them, so the outbox sends the missing ones first.
    let close_now = upload_archive || live_complete || !spool_complete;
    if !stream_closed && close_now {
        // A spool that failed (a full disk) is not a whole history and is not
        // uploaded: the service makes the archive from the lines it received, the
        // loss marker among them, rather than leaving the stream without one. A
        // stream someone else opened is archived that way too (lite-engine's
        // `skip_opening_stream`).
        let snapshot = !spool_complete || cfg.skip_opening_stream || continued;
        let outcome = shared.outcome();
        let closing = || client.close_with_outcome(&key, snapshot, outcome);
        match shared.retry(&mut dl, closing).await {
            Ok(()) => {
                stream_closed = true;
                // The service made the archive of a continued stream from its lines.
                archived |= continued && live_complete;
            }
            Err(why) => shared.lines().note_error(WriterError::Close(why)),
        }
    }

    // Where a close's time goes, and which way the archive came to be.
    tracing::debug!(target: "livelog", key = %key, drained, drain_ms, archive_built_by_service = built,
        archived, total_ms = started.elapsed().as_millis() as u64, "closed");
    // Everything this writer owes the service has landed.
    let settled = if upload_archive {
        archived
    } else {
        live_complete && stream_closed
    };
    let mut outboxed = false;
    if settled {
        // Kept for the next writer's spool only when the sender has stopped: it must
        // not read from a file that another history is being written into.
        shared.lines().discard_spool(drained);
    } else if !spool_complete {
        // Neither the outbox nor a later recovery takes a broken history, and on a
        // full disk this file holds the space every later writer needs.
        shared.lines().discard_spool(false);
    } else if let Some(dir) = &cfg.outbox_dir {
        let resend_from = (!live_complete).then_some(acked_end);
        let mut entry = crate::outbox::Entry::for_writer(
            cfg,
            client.outbox_config(),
            resend_from,
            continued.then_some(first_pos),
        );
        entry.close_stream = !stream_closed;
        match crate::outbox::store(dir, &spool_path, &entry) {
            Ok(stored) => {
                outboxed = true;
                crate::outbox::spawn_retry(
                    dir.clone(),
                    stored,
                    client.clone(),
                    cfg.max_retry_delay,
                );
            }
            Err(e) => shared.lines().note_error(WriterError::Outbox(Arc::new(e))),
        }
    } else {
        // No outbox to hand it to: the history stays where it is, and the report
        // says where, rather than deleting the only complete copy.
        let what = if upload_archive {
            "the history was not archived".to_owned()
        } else if live_complete {
            "the stream was not closed".to_owned()
        } else {
            format!("lines from pos {acked_end} on did not reach the live stream")
        };
        shared.lines().note_error(WriterError::Kept {
            what,
            path: spool_path,
        });
    }

    // The history is archived or in the outbox (or was never complete): a later start
    // has nothing to recover. Otherwise the record stays, and a later start delivers it.
    if (settled || outboxed || !spool_complete)
        && let Some(record) = shared.take_recovery()
    {
        record.remove();
    }
    shared.lines().report(key, archived, outboxed, hints)
}

/// Hints of the nudges whose pattern appears in the last lines, read back from the
/// spool's tail at close (so producers pay nothing per line for nudges).
fn hints(shared: &Shared) -> Vec<String> {
    let nudges = &shared.cfg().nudges;
    if nudges.is_empty() {
        return Vec::new();
    }
    let (path, end) = {
        let l = shared.lines();
        (l.spool().path().to_owned(), l.spool().written())
    };
    let tail_bytes = 256 * 1024u64;
    let start = end.saturating_sub(tail_bytes);
    let rows = crate::spool::SpoolReader::open(&path)
        .and_then(|mut r| r.read_rows(start, end, tail_bytes as usize, u64::MAX))
        .map(|r| r.ndjson)
        .unwrap_or_default();
    let mut lines: Vec<&[u8]> = rows
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .collect();
    // The first row may be cut when reading from the middle of the file.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let recent: Vec<String> = lines
        .iter()
        .rev()
        .take(NUDGE_WINDOW)
        .filter_map(|r| serde_json::from_slice::<LogLine>(r).ok())
        .map(|l| l.out)
        .collect();
    nudges
        .iter()
        .filter(|n| recent.iter().any(|l| l.contains(&n.pattern)))
        .map(|n| n.hint.clone())
        .collect()
}
