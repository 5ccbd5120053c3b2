//! livelog: the client library that gets every log line to the runlog log service —
//! in order, exactly once, fast, in bounded memory.
//!
//! A [`Writer`] takes raw bytes or whole lines from producers, joins them into lines
//! ([`assemble`]), masks secrets ([`mask`]), numbers and timestamps each line once,
//! appends it to a spool file (the complete history, on disk; [`spool`]) and sends it
//! to the log service through a [`LogClient`] with adaptive batching and retries.
//! `close()` drains, uploads the archive from the spool and closes the stream within a
//! deadline; what cannot be delivered in time stays in an outbox directory and is
//! re-sent later ([`deliver_outbox`]). A writer with an outbox also leaves a locked
//! recovery record there while it lives, so that if its process dies before `close()`
//! the next `deliver_outbox` delivers its spool. When the service loses a stream
//! (restart), the writer resends the history from the spool, so the live stream has
//! no gap.
//!
//! Metrics (counters, through the `metrics` facade): `livelog_lines_total`,
//! `livelog_bytes_total`, `livelog_batches_total`, `livelog_retries_total`,
//! `livelog_dropped_lines_total`, `livelog_spills_total` (times the memory queue
//! overflowed to the spool: the sender lagging behind), `livelog_streamed_lines_total`
//! (lines the service acknowledged; the live lag is `livelog_lines_total` minus it, and
//! per writer [`Writer::progress`]).

pub mod assemble;
pub mod client;
mod close;
pub mod config;
mod deliver;
mod error;
mod lines;
mod losses;
pub mod mask;
pub mod outbox;
mod private_dir;
mod queue;
mod recovery;
pub mod recycle;
pub mod reserve;
pub mod retry;
pub mod row;
mod sender;
mod shared;
pub mod spool;
mod upload_body;
mod writer;

pub use client::{Batch, ClientError, Closing, HttpLogClient, HttpTimeouts, LogClient};
pub use config::{Nudge, Tap, WriterConfig};
pub use deliver::{deliver_outbox, deliver_outbox_with, spawn_deliver_outbox};
pub use lines::Progress;
pub use outbox::OutboxReport;
pub use runlog_protocol::engine::WriterReport;
pub use writer::Writer;
