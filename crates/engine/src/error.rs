//! [`EngineError`]: every failure a request can meet, each mapped to one status.
//!
//! It is the edge's [`runlog_edge::HttpError`], the one error answer both servers give
//! (`{"error_msg": …}`, the status from the variant); under this name here so the
//! engine's code reads in its own terms.

pub use runlog_edge::HttpError as EngineError;
