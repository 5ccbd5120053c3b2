//! Wire types shared by every part of runlog.
//!
//! This crate does no I/O. It holds the JSON shapes that cross a process boundary
//! (log lines, service answers, engine requests) and the validation rules that must
//! hold before any input reaches a store (stream keys, account ids), so that the
//! server and its clients agree on one definition of each.

pub mod engine;
pub mod error;
pub mod function;
pub mod job;
pub mod key;
pub mod ledger;
pub mod line;
pub mod lite;
pub mod sections;
pub mod service;

pub use error::ErrorBody;
pub use key::{AccountId, KeyError, StreamKey};
pub use line::{LogLine, MAX_POS, format_time, now_rfc3339};
pub use service::Scope;
