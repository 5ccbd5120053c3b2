//! The outbox: histories that `close()` could not deliver before its deadline.
//!
//! Each entry is a directory holding `archive.ndjson` (the spool, moved, not copied)
//! and `entry.json` (which key, how to upload, whether the stream still needs
//! closing, and the service/account to send it to). A background task re-sends the
//! entry until it lands; [`deliver_outbox`] re-sends every entry at the next start,
//! after turning the spools of writers whose process died into entries (see
//! `recovery`).
//! An entry is removed only after its archive was accepted, so nothing is silently
//! lost: at worst it is sent twice, and the archive upload is idempotent.

use crate::client::{ClientError, HttpLogClient, LogClient};
use backon::BackoffBuilder;
use rand::Rng;
use runlog_protocol::engine::LogConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const ARCHIVE: &str = "archive.ndjson";
const META: &str = "entry.json";

/// What an outbox entry must still achieve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) indirect_upload: bool,
    pub(crate) close_stream: bool,
    /// Holds the account token: `entry.json` is written readable by its owner only.
    pub(crate) log_config: Option<LogConfig>,
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
    let name = spool
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "entry".to_owned());
    let entry_dir = dir.join(name);
    std::fs::create_dir_all(&entry_dir)?;
    let target = entry_dir.join(ARCHIVE);
    if std::fs::rename(spool, &target).is_err() {
        // Another filesystem: copy, then remove the spool.
        std::fs::copy(spool, &target)?;
        std::fs::remove_file(spool)?;
    }
    let json = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
    write_private(&entry_dir.join(META), &json, true)?;
    Ok(entry_dir)
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

/// Sends one entry: archive, then stream close if still due; removes it on success.
async fn deliver_one(entry_dir: &Path, client: &dyn LogClient) -> Result<(), ClientError> {
    let meta = std::fs::read(entry_dir.join(META)).map_err(|e| ClientError::Io(e.to_string()))?;
    let entry: Entry = serde_json::from_slice(&meta)
        .map_err(|e| ClientError::Io(format!("bad outbox entry: {e}")))?;
    client
        .upload(&entry.key, &entry_dir.join(ARCHIVE), entry.indirect_upload)
        .await?;
    if entry.close_stream {
        match client.close(&entry.key, false).await {
            // The stream may be gone (expired, service restarted): the archive is what matters.
            Ok(())
            | Err(ClientError::Status {
                status: 404 | 409, ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::remove_dir_all(entry_dir).map_err(|e| ClientError::Io(e.to_string()))
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
            if !entry_dir.exists() {
                return; // Delivered by another pass.
            }
            let d = delays.next().unwrap_or(max_delay);
            let d = d.mul_f64(rand::rng().random_range(0.0..=1.0));
            tokio::time::sleep(d).await;
        }
    });
}

fn backoff(max_delay: Duration) -> impl Iterator<Item = Duration> {
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

/// One pass over `dir`: first makes an entry of every spool whose writer's process
/// died before `close()` (its recovery record in `dir` is no longer locked; a live
/// writer's is never touched), then re-sends every entry left by earlier runs to the
/// service recorded in it. Call at start; call again (or use [`spawn_deliver_outbox`]) while
/// entries are pending.
pub async fn deliver_outbox(dir: &Path) -> OutboxReport {
    deliver_outbox_inner(dir, None).await
}

/// Like [`deliver_outbox`], but through `client` for every entry.
pub async fn deliver_outbox_with(dir: &Path, client: Arc<dyn LogClient>) -> OutboxReport {
    deliver_outbox_inner(dir, Some(client)).await
}

async fn deliver_outbox_inner(dir: &Path, client: Option<Arc<dyn LogClient>>) -> OutboxReport {
    let mut report = OutboxReport {
        // Spools of writers whose process died become entries first.
        failed: crate::recovery::adopt_orphans(dir),
        ..OutboxReport::default()
    };
    for entry_dir in entries(dir) {
        let client: Arc<dyn LogClient> = match &client {
            Some(c) => c.clone(),
            None => match read_config(&entry_dir).and_then(|c| HttpLogClient::new(&c)) {
                Ok(c) => Arc::new(c),
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

/// Re-sends the outbox in the background until it is empty (or only entries that
/// failed for good remain), with backoff between passes.
pub fn spawn_deliver_outbox(dir: PathBuf) -> tokio::task::JoinHandle<OutboxReport> {
    tokio::spawn(async move {
        let mut delays = backoff(Duration::from_secs(30));
        loop {
            let r = deliver_outbox(&dir).await;
            if r.pending == 0 {
                return r;
            }
            let d = delays.next().unwrap_or(Duration::from_secs(30));
            let d = d.mul_f64(rand::rng().random_range(0.5..=1.0));
            tokio::time::sleep(d).await;
        }
    })
}
