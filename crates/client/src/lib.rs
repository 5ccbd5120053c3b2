//! Clients of runlog's HTTP APIs, shared by the `runlog` command, the test kit and
//! anything else that talks to a log service or an engine.
//!
//! - [`Reader`] — the log service's read side: follow a live stream over SSE
//!   (reconnecting, resuming with `Last-Event-ID`, never delivering a `pos` twice),
//!   download an archive, list an account's streams.
//! - [`sse::SseParser`] and [`NdjsonSplitter`] — the two incremental parsers under
//!   it, usable alone.
//! - [`viewer_link`], [`token_account`] — the viewer's URL of a stream, and the
//!   account a token names (to pick a default, unverified).
//! - [`EngineClient`] — the engine's stage API (`/setup`, `/step`, `/poll_step`,
//!   `/destroy`) on the `runlog_protocol::engine` types.
//!
//! The writer side (numbering, spooling, batching, archiving lines) is `livelog`'s.

mod engine;
mod links;
mod ndjson;
mod read;
pub mod sse;

pub use engine::{EngineClient, EngineError};
pub use links::{token_account, viewer_link};
pub use ndjson::NdjsonSplitter;
pub use read::{FollowEnd, FollowOptions, FollowSummary, ReadError, Reader};
