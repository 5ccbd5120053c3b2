//! A delivery pass over an outbox directory: the spools of writers whose process died
//! become entries first ([`crate::recovery`]), then every entry is re-sent
//! ([`crate::outbox`]). The one module that knows both, so neither imports the other.

use crate::client::LogClient;
use crate::outbox::OutboxReport;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One pass over `dir`: first makes an entry of every spool whose writer's process
/// died before `close()` (its recovery record in `dir` is no longer locked; a live
/// writer's is never touched), then re-sends every entry left by earlier runs to the
/// service recorded in it. Call at start; call again (or use [`spawn_deliver_outbox`]) while
/// entries are pending.
pub async fn deliver_outbox(dir: &Path) -> OutboxReport {
    pass(dir, None).await
}

/// Like [`deliver_outbox`], but through `client` for every entry.
pub async fn deliver_outbox_with(dir: &Path, client: Arc<dyn LogClient>) -> OutboxReport {
    pass(dir, Some(client)).await
}

async fn pass(dir: &Path, client: Option<Arc<dyn LogClient>>) -> OutboxReport {
    // Spools of writers whose process died become entries first.
    let adopt_failed = crate::recovery::adopt_orphans(dir);
    let mut report = crate::outbox::deliver_entries(dir, client).await;
    report.failed.splice(0..0, adopt_failed);
    report
}

/// Re-sends the outbox in the background until it is empty (or only entries that
/// failed for good remain), with backoff between passes.
pub fn spawn_deliver_outbox(dir: PathBuf) -> tokio::task::JoinHandle<OutboxReport> {
    tokio::spawn(async move {
        let mut delays = crate::outbox::backoff(Duration::from_secs(30));
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
