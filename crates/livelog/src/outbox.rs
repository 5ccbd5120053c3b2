//! The outbox: histories that `close()` could not deliver before its deadline.
//!
//! Each entry is a directory holding `archive.ndjson` (the spool, moved, not copied)
//! and `entry.json` (which key, how to upload, whether the stream still needs
//! closing, and the service/account to send it to). A background task re-sends the
//! entry until it lands; [`crate::deliver_outbox`] re-sends every entry at the next start,
//! after turning the spools of writers whose process died into entries (see
//! `recovery`).
//! An entry is removed only after its archive was accepted, so nothing is silently
//! lost. A deliverer holds an exclusive `flock` on the entry's `entry.json` while it
//! sends and removes the entry, so the background task of a closed writer and a
//! [`crate::deliver_outbox`] pass (in this process or another) never send the same entry at
//! the same time; the one that waited finds the entry gone and counts it delivered.

use crate::client::{ClientError, HttpLogClient, LogClient};
use backon::BackoffBuilder;
use nix::fcntl::{Flock, FlockArg};
use rand::Rng;
use runlog_protocol::engine::LogConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const ARCHIVE: &str = "archive.ndjson";
const META: &str = "entry.json";

/// What an outbox entry must still achieve, in this order: upload the archive, send
/// the lines the live stream lacks, close the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) indirect_upload: bool,
    /// Upload the history as the archive. `false` for a writer with
    /// `skip_opening_stream` or `skip_closing_stream`, which never uploads (lite-engine's
    /// meaning: another writer's archive, or the controller's, must not be
    /// overwritten). Entries written before this field existed all uploaded.
    #[serde(default = "yes")]
    pub(crate) upload_archive: bool,
    /// Lines from this `pos` on are not known to be in the live stream: send them
    /// with `PUT /stream` (the entry's `sent` file says how far an earlier attempt got).
    #[serde(default)]
    pub(crate) resend_from: Option<u64>,
    pub(crate) close_stream: bool,
    /// Close with `snapshot=true`: the service makes the archive from the stream's lines.
    #[serde(default)]
    pub(crate) snapshot: bool,
    /// Holds the account token: `entry.json` is written readable by its owner only.
    pub(crate) log_config: Option<LogConfig>,
}

fn yes() -> bool {
    true
}

impl Entry {
    /// The entry of a writer configured by `cfg`. A writer that uploads no archive
    /// sends the lines from `resend_from` instead (when `Some`); one that opens and
    /// closes its own stream uploads its history, which holds every line — unless it
    /// continues a stream whose earlier lines the service holds (`continues_at`, its
    /// first `pos`; a reused key): its history is only its part, and an upload of it
    /// would replace them. It sends every line of its part again instead (the service
    /// keeps each `pos` once, and one that lost them gets the whole part back) and the
    /// service archives all it holds.
    pub(crate) fn for_writer(
        cfg: &crate::WriterConfig,
        log_config: Option<LogConfig>,
        resend_from: Option<u64>,
        continues_at: Option<u64>,
    ) -> Entry {
        let upload_archive = uploads_archive(cfg) && continues_at.is_none();
        let resend_from = if upload_archive {
            None
        } else {
            continues_at.or(resend_from)
        };
        Entry {
            key: cfg.key.clone(),
            indirect_upload: cfg.indirect_upload,
            upload_archive,
            resend_from,
            close_stream: !cfg.skip_closing_stream,
            snapshot: cfg.skip_opening_stream || continues_at.is_some(),
            log_config,
        }
    }
}

#[cfg(test)]
impl Entry {
    /// The entry of a writer that opens and closes its stream itself (indirect
    /// upload, no token): upload the archive, then close.
    pub(crate) fn uploading(key: &str) -> Entry {
        Entry {
            key: key.into(),
            indirect_upload: true,
            upload_archive: true,
            resend_from: None,
            close_stream: true,
            snapshot: false,
            log_config: None,
        }
    }
}

/// Whether a writer configured by `cfg` uploads its history as the archive: only one
/// that opens and closes its stream itself, as lite-engine's writer. With
/// `skip_opening_stream` the stream is someone else's and its archive is made from its
/// lines (`DELETE /stream?snapshot=true`); with `skip_closing_stream` the writer only
/// flushes, and whoever closes the stream archives it.
pub(crate) fn uploads_archive(cfg: &crate::WriterConfig) -> bool {
    !cfg.skip_opening_stream && !cfg.skip_closing_stream
}

/// What one pass over the outbox achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxReport {
    /// Entries delivered and removed.
    pub delivered: u64,
    /// Entries still waiting (service unreachable); tried again on the next pass.
    pub pending: u64,
    /// Entries that failed for good (refused by the service, unreadable); left on disk.
    pub failed: Vec<String>,
}

/// Moves the spool into a new outbox entry; returns the entry's directory.
pub(crate) fn store(dir: &Path, spool: &Path, entry: &Entry) -> std::io::Result<PathBuf> {
    match store_once(dir, spool, entry) {
        // The entry's directory and file need a little space: a file system a step
        // filled gets it from the spool directory's reserve, and the move is finished.
        Err(e) if crate::reserve::is_full(&e) => {
            if let Some(spool_dir) = spool.parent() {
                crate::reserve::release(spool_dir);
            }
            finish_store(dir, spool, entry)?;
            let stem = spool.file_stem().unwrap_or_default();
            let entry_dir = dir.join(stem);
            if entry_dir.join(META).is_file() {
                Ok(entry_dir)
            } else {
                store_once(dir, spool, entry)
            }
        }
        other => other,
    }
}

fn store_once(dir: &Path, spool: &Path, entry: &Entry) -> std::io::Result<PathBuf> {
    let name = spool
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "entry".to_owned());
    let entry_dir = dir.join(name);
    crate::private_dir::create(&entry_dir)?;
    let target = entry_dir.join(ARCHIVE);
    if std::fs::rename(spool, &target).is_err() {
        // Another filesystem: copy, then remove the spool.
        std::fs::copy(spool, &target)?;
        std::fs::remove_file(spool)?;
    }
    write_entry(&entry_dir, entry)?;
    Ok(entry_dir)
}

/// Finishes a [`store`] that moved `spool` into its entry but did not write the entry
/// file (a full disk, a crash in between): without that file the entry is never
/// listed, and its history never sent. Nothing to do when there is no such entry.
pub(crate) fn finish_store(dir: &Path, spool: &Path, entry: &Entry) -> std::io::Result<()> {
    let Some(name) = spool.file_stem() else {
        return Ok(());
    };
    let entry_dir = dir.join(name);
    if entry_dir.join(ARCHIVE).is_file() && !entry_dir.join(META).is_file() {
        write_entry(&entry_dir, entry)?;
    }
    Ok(())
}

/// Writes the entry file: to a temporary name first, then renamed, so a deliverer
/// never reads half of one (an entry is listed by its entry file).
fn write_entry(entry_dir: &Path, entry: &Entry) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
    let tmp = entry_dir.join(format!(".{META}.tmp"));
    write_private(&tmp, &json, true)?;
    std::fs::rename(&tmp, entry_dir.join(META))
}

/// Writes `bytes` to `path`, readable by its owner only (synced to disk when `sync`);
/// returns the file.
pub(crate) fn write_private(
    path: &Path,
    bytes: &[u8],
    sync: bool,
) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut opts = std::fs::File::options();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    Ok(f)
}

/// Takes the entry's delivery lock, waiting while another deliverer holds it.
/// `None`: the entry is gone — delivered (and removed) by whoever held the lock.
async fn lock_entry(entry_dir: &Path) -> Result<Option<Flock<std::fs::File>>, ClientError> {
    let meta = entry_dir.join(META);
    let locked = tokio::task::spawn_blocking(move || {
        let file = match std::fs::File::open(&meta) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                #[cfg(test)]
                tests::contended(&meta);
                // Blocking is bounded: a holder keeps the lock for one delivery attempt
                // (its requests have timeouts), never while it sleeps between attempts.
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, errno)| std::io::Error::from(errno))?
            }
            Err((_, errno)) => return Err(std::io::Error::from(errno)),
        };
        // The previous holder removes the entry before it lets go.
        Ok(meta.exists().then_some(lock))
    })
    .await
    .map_err(|e| ClientError::Io(e.to_string()))?;
    locked.map_err(|e| ClientError::Io(e.to_string()))
}

/// Sends one entry under its lock: archive or missing live lines, then stream close if
/// still due; removes it on success. An entry another deliverer removed meanwhile
/// counts as delivered.
async fn deliver_one(entry_dir: &Path, client: &dyn LogClient) -> Result<(), ClientError> {
    let Some(_lock) = lock_entry(entry_dir).await? else {
        return Ok(());
    };
    let meta = std::fs::read(entry_dir.join(META)).map_err(|e| ClientError::Io(e.to_string()))?;
    let entry: Entry = serde_json::from_slice(&meta)
        .map_err(|e| ClientError::Io(format!("bad outbox entry: {e}")))?;
    if entry.upload_archive {
        client
            .upload(&entry.key, &entry_dir.join(ARCHIVE), entry.indirect_upload)
            .await?;
    }
    if let Some(from) = entry.resend_from {
        resend_lines(entry_dir, client, &entry.key, from).await?;
    }
    if entry.close_stream {
        match client.close(&entry.key, entry.snapshot).await {
            // The stream may be gone (expired, service restarted): the archive is what matters.
            Ok(())
            | Err(ClientError::Status {
                status: 404 | 409, ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    // Removed while the lock is held, so a waiting deliverer finds it gone.
    std::fs::remove_dir_all(entry_dir).map_err(|e| ClientError::Io(e.to_string()))
}

/// How far an earlier attempt got sending an entry's lines: the `pos` after the last
/// acknowledged batch. A file of its own, not `entry.json`, whose inode carries the
/// delivery lock.
const SENT: &str = "sent";

/// Sends the history's lines from `from` on with `PUT /stream`, in batches, in order,
/// recording after each acknowledged batch how far it got, so that a later attempt
/// does not send a line again to a service that does not ignore repeated `pos` values.
async fn resend_lines(
    entry_dir: &Path,
    client: &dyn LogClient,
    key: &str,
    from: u64,
) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Io(e.to_string());
    let sent_file = entry_dir.join(SENT);
    let done = std::fs::read_to_string(&sent_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut pos = done.map_or(from, |d| d.max(from));
    let archive = entry_dir.join(ARCHIVE);
    let end = std::fs::metadata(&archive).map_err(io)?.len();
    let mut reader = crate::spool::SpoolReader::open(&archive).map_err(io)?;
    // No row numbered `pos`: every line was sent.
    let Some(mut offset) = reader.offset_of(pos, end).map_err(io)? else {
        return Ok(());
    };
    while offset < end {
        // A mebibyte read from disk is off the runtime's workers, as in the sender.
        let (back, rows) = tokio::task::spawn_blocking(move || {
            let rows = reader.read_batch(offset, end, 1024 * 1024, 10_000, Vec::new());
            (reader, rows)
        })
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
        reader = back;
        let rows = rows.map_err(io)?;
        if rows.count == 0 {
            break;
        }
        let batch = crate::client::Batch {
            first_pos: pos,
            lines: rows.count,
            body: rows.body.into(),
        };
        client.write(key, &batch).await?;
        pos += rows.count;
        offset += rows.ndjson_len;
        write_private(&sent_file, pos.to_string().as_bytes(), false).map_err(io)?;
    }
    Ok(())
}

/// Re-sends one entry in the background until it lands (or fails for good).
pub(crate) fn spawn_retry(
    _dir: PathBuf,
    entry_dir: PathBuf,
    client: Arc<dyn LogClient>,
    max_delay: Duration,
) {
    tokio::spawn(async move {
        let mut delays = backoff(max_delay);
        loop {
            match deliver_one(&entry_dir, client.as_ref()).await {
                Ok(()) => return,
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(target: "livelog", entry = %entry_dir.display(), "outbox entry not delivered: {e}");
                    return;
                }
                Err(_) => {}
            }
            let d = delays.next().unwrap_or(max_delay);
            let d = d.mul_f64(rand::rng().random_range(0.0..=1.0));
            tokio::time::sleep(d).await;
        }
    });
}

/// Delays between delivery attempts (and passes).
pub(crate) fn backoff(max_delay: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max_delay)
        .without_max_times()
        .build()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join(META).is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Re-sends every entry in `dir` (left by earlier runs, or made of a dead writer's
/// spool by [`crate::recovery`] just before) to the service recorded in it, or through
/// `client`. One half of a delivery pass ([`crate::deliver_outbox`]).
pub(crate) async fn deliver_entries(
    dir: &Path,
    client: Option<Arc<dyn LogClient>>,
) -> OutboxReport {
    let mut report = OutboxReport::default();
    for entry_dir in entries(dir) {
        let client: Arc<dyn LogClient> = match &client {
            Some(c) => c.clone(),
            None => match read_config(&entry_dir).and_then(|c| HttpLogClient::new(&c)) {
                Ok(c) => Arc::new(c),
                // Delivered and removed by another deliverer since the listing.
                Err(_) if !entry_dir.exists() => {
                    report.delivered += 1;
                    continue;
                }
                Err(e) => {
                    report.failed.push(format!("{}: {e}", entry_dir.display()));
                    continue;
                }
            },
        };
        match deliver_one(&entry_dir, client.as_ref()).await {
            Ok(()) => report.delivered += 1,
            Err(e) if e.is_retryable() => report.pending += 1,
            Err(e) => report.failed.push(format!("{}: {e}", entry_dir.display())),
        }
    }
    report
}

fn read_config(entry_dir: &Path) -> Result<LogConfig, ClientError> {
    let meta = std::fs::read(entry_dir.join(META)).map_err(|e| ClientError::Io(e.to_string()))?;
    let entry: Entry = serde_json::from_slice(&meta)
        .map_err(|e| ClientError::Io(format!("bad outbox entry: {e}")))?;
    entry.log_config.ok_or_else(|| {
        ClientError::Config("the entry does not say which service to send it to".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Batch;
    use async_trait::async_trait;
    use runlog_protocol::service::AppendAck;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{LazyLock, Mutex};
    use tokio::sync::{Notify, Semaphore};

    #[test]
    fn a_writer_continuing_held_lines_resends_its_part_and_never_uploads() {
        let cfg = crate::WriterConfig::new("k");
        let own = Entry::for_writer(&cfg, None, Some(0), None);
        assert!(own.upload_archive && own.resend_from.is_none() && !own.snapshot);
        let continuing = Entry::for_writer(&cfg, None, Some(0), Some(3));
        assert!(
            !continuing.upload_archive,
            "an upload would replace pos 0..3"
        );
        assert_eq!(
            continuing.resend_from,
            Some(3),
            "its whole part, from its first pos"
        );
        assert!(continuing.snapshot && continuing.close_stream);
    }

    /// Entries whose lock a deliverer found held (and is now waiting for).
    static CONTENDED: LazyLock<(Mutex<Vec<PathBuf>>, Notify)> =
        LazyLock::new(|| (Mutex::new(Vec::new()), Notify::new()));

    pub(super) fn contended(meta: &Path) {
        let (list, notify) = &*CONTENDED;
        list.lock()
            .expect("contended list")
            .push(meta.to_path_buf());
        notify.notify_waiters();
    }

    async fn until_contended(meta: &Path) {
        let (list, notify) = &*CONTENDED;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if list
                .lock()
                .expect("contended list")
                .iter()
                .any(|p| p == meta)
            {
                return;
            }
            notified.await;
        }
    }

    /// Counts uploads; each upload waits for a permit, so a test can hold one
    /// deliverer in the middle of its upload while another one arrives.
    struct GatedClient {
        uploads: AtomicU64,
        started: Notify,
        gate: Semaphore,
    }

    #[async_trait]
    impl LogClient for GatedClient {
        async fn open(&self, _: &str) -> Result<(), ClientError> {
            Ok(())
        }
        async fn write(&self, _: &str, batch: &Batch) -> Result<AppendAck, ClientError> {
            let next_pos = batch.first_pos + batch.lines;
            Ok(AppendAck {
                appended: batch.lines,
                duplicates: 0,
                last_contiguous_pos: next_pos.checked_sub(1),
                next_pos,
            })
        }
        async fn close(&self, _: &str, _: bool) -> Result<(), ClientError> {
            Ok(())
        }
        async fn upload_blob(&self, _: &str, ndjson: &Path) -> Result<(), ClientError> {
            // The archive must still be there for whoever uploads it.
            std::fs::metadata(ndjson).map_err(|e| ClientError::Io(e.to_string()))?;
            self.uploads.fetch_add(1, Ordering::SeqCst);
            self.started.notify_one();
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
            Ok(())
        }
        async fn upload_link(&self, key: &str, ndjson: &Path) -> Result<(), ClientError> {
            self.upload_blob(key, ndjson).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_deliverers_of_one_entry_send_it_once_and_both_see_it_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("w1.ndjson");
        std::fs::write(&spool, b"{\"pos\":0,\"out\":\"x\"}\n").expect("spool");
        let outbox = dir.path().join("outbox");
        let entry = Entry::uploading("a/b");
        store(&outbox, &spool, &entry).expect("store");
        let client = Arc::new(GatedClient {
            uploads: AtomicU64::new(0),
            started: Notify::new(),
            gate: Semaphore::new(0),
        });

        let first = tokio::spawn({
            let (outbox, client) = (outbox.clone(), client.clone());
            async move { deliver_entries(&outbox, Some(client)).await }
        });
        client.started.notified().await; // the first deliverer is mid-upload
        let second = tokio::spawn({
            let (outbox, client) = (outbox.clone(), client.clone());
            async move { deliver_entries(&outbox, Some(client)).await }
        });
        let entry_dir = entries(&outbox).pop().expect("the entry");
        until_contended(&entry_dir.join(META)).await; // the second waits for the lock
        client.gate.add_permits(2);
        let (first, second) = (first.await.expect("first"), second.await.expect("second"));

        assert_eq!(client.uploads.load(Ordering::SeqCst), 1, "sent once");
        for r in [&first, &second] {
            assert_eq!(r.delivered, 1, "{r:?}");
            assert!(r.failed.is_empty() && r.pending == 0, "{r:?}");
        }
        assert!(entries(&outbox).is_empty(), "the entry is removed");
    }
}
