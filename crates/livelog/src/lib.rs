//! livelog: the client library that gets every log line to the runlog log service —
//! in order, exactly once, fast, in bounded memory.
//!
//! A [`Writer`] takes raw bytes or whole lines from producers, joins them into lines
//! ([`assemble`]), masks secrets ([`mask`]), numbers and timestamps each line once,
//! appends it to a spool file (the complete history, on disk) and sends it to the log
//! service through a [`LogClient`] with adaptive batching and retries. `close()` drains,
//! uploads the archive from the spool and closes the stream within a deadline; what
//! cannot be delivered in time stays in an outbox directory and is re-sent later.

pub mod assemble;
pub mod mask;
