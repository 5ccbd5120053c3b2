//! The `runlog` command's side of `runlog-client`: the flags naming the service and
//! the caller (shared by `tail`, `logs`, `ls`), an archive download with a progress
//! bar on a terminal, and viewer-link tokens minted from the admin secret.

use crate::credentials::AccountToken;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use runlog_client::{ReadError, Reader, token_account};
use runlog_protocol::{AccountId, Scope, StreamKey};
use std::io::IsTerminal as _;
use std::time::Duration;

/// Flags naming the service and the caller, shared by the reading commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Base URL of the log service.
    #[arg(long, env = "RUNLOG_URL", default_value = "http://127.0.0.1:8079")]
    pub url: String,
    /// The caller's token.
    #[command(flatten)]
    pub auth: AccountToken,
    /// Account that owns the streams; by default the account the token is for.
    #[arg(long, env = "RUNLOG_ACCOUNT")]
    pub account: Option<AccountId>,
}

impl ConnectArgs {
    /// A reader for these flags.
    pub fn reader(&self) -> Result<Reader, ReadError> {
        Reader::new(&self.url, self.auth.token.clone())
    }

    /// The account to read: `--account`, else the one the token names.
    pub fn account(&self) -> anyhow::Result<AccountId> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        self.auth
            .token
            .as_deref()
            .and_then(token_account)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no account: pass --account or set RUNLOG_ACCOUNT (the token names none)"
                )
            })
    }
}

/// A read-scoped token for viewer links, minted locally from the service's admin
/// secret. `runlog serve` and `runlog run` print links with one only when they hold
/// the secret; otherwise the link has no token and the page asks for one.
pub fn read_token_for_link(
    admin_secret: &str,
    account: &AccountId,
    ttl: Duration,
) -> Option<String> {
    runlog_service::auth::mint_token(admin_secret.as_bytes(), Some(account), Scope::Read, ttl).ok()
}

/// [`Reader::archive`] with a progress bar on stderr while it downloads, when
/// stderr is a terminal.
pub async fn archive_with_progress(
    reader: &Reader,
    account: &AccountId,
    key: &StreamKey,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, ReadError> {
    let bar = ProgressBar::hidden();
    let received = reader
        .archive(
            account,
            key,
            |len| show_progress(&bar, len),
            |chunk| {
                sink(chunk)?;
                bar.inc(chunk.len() as u64);
                Ok(())
            },
        )
        .await;
    bar.finish_and_clear();
    received
}

/// Makes the hidden `bar` draw on stderr, sized by `len`, when stderr is a terminal.
fn show_progress(bar: &ProgressBar, len: Option<u64>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let template = if let Some(len) = len {
        bar.set_length(len);
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_draw_target(ProgressDrawTarget::stderr());
}
