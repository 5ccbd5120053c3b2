//! Fixtures shared by runlog's test suites. Everything listens on 127.0.0.1 only.

pub mod proxy;
pub mod service;
