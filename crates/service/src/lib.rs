//! The runlog log service: live streams (open, append, tail, close), archives
//! (blobs), account tokens and the web viewer, over HTTP.
//!
//! Handlers are thin: they parse with the `runlog-protocol` types, call a store,
//! and map errors to one status each. Storage sits behind [`store::StreamStore`]
//! (live lines) and [`store::BlobStore`] (archives), so the embedded default
//! (memory + local directory) and the scale-out backends (Redis + S3) share every
//! route and every test.

pub mod store;
