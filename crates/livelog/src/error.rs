//! Why a writer's delivery fell short: the typed errors behind the report's `error`
//! text (the first one a writer meets is the one reported).

use crate::client::ClientError;
use crate::retry::Outcome;
use crate::spool::SpoolError;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a retried call to the log service gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum GaveUp {
    /// An error a retry cannot fix (a 4xx other than 408/429, a bad configuration).
    #[error("{0}")]
    Fatal(ClientError),
    /// The close deadline passed after this error.
    #[error("close deadline passed; last error: {0}")]
    DeadlineAfter(ClientError),
    /// The close deadline passed before the call ended.
    #[error("close deadline passed")]
    Deadline,
}

impl<T> From<Outcome<T>> for Result<T, GaveUp> {
    fn from(out: Outcome<T>) -> Self {
        match out {
            Outcome::Done(v) => Ok(v),
            Outcome::Fatal(e) => Err(GaveUp::Fatal(e)),
            Outcome::Deadline(Some(e)) => Err(GaveUp::DeadlineAfter(e)),
            Outcome::Deadline(None) => Err(GaveUp::Deadline),
        }
    }
}

/// What went wrong for one writer; its text is the report's `error`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriterError {
    /// The spool could not be created or written (a full disk).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The stream could not be opened: live streaming never started.
    #[error("cannot open the live stream: {0}")]
    Open(GaveUp),
    /// A batch could not be delivered: live streaming stopped.
    #[error("live streaming stopped: {0}")]
    LiveStopped(GaveUp),
    /// Spilled lines could not be read back from the spool: live streaming stopped.
    #[error("cannot read the spool back from {}", .0.display())]
    ReadBack(PathBuf),
    /// `close()` reached its deadline with lines still to send.
    #[error("close deadline passed before every line was sent")]
    Undrained,
    /// The archive upload gave up.
    #[error("archive upload failed: {0}")]
    Upload(GaveUp),
    /// Closing the stream gave up.
    #[error("closing the stream failed: {0}")]
    Close(GaveUp),
    /// The history was not delivered and there is no outbox: it stays in the spool.
    #[error("{what}; it is kept at {}", path.display())]
    Kept {
        /// What was not delivered.
        what: String,
        /// Where the history is.
        path: PathBuf,
    },
    /// The stream already held lines when this writer, which had numbered its lines
    /// from its first `pos` because its first open failed, could open it.
    #[error(
        "the stream already held lines up to pos {held} when it could be opened; this writer's lines below that pos were kept by the service as the earlier writer's, and are counted as dropped"
    )]
    Shadowed {
        /// One past the last `pos` the stream held.
        held: u64,
    },
    /// The service already held lines with the numbers this writer sent: another
    /// writer of the key wrote at the same time.
    #[error(
        "another writer of the key wrote at the same time: the service kept its lines where this writer's had the same pos, and those are counted as dropped"
    )]
    Collided,
    /// The history could not be moved to the outbox.
    #[error("cannot keep the history in the outbox: {0}")]
    Outbox(Arc<std::io::Error>),
}
