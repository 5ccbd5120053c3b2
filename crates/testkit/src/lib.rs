//! Fixtures shared by runlog's test suites. Everything listens on 127.0.0.1 only.

pub mod browser;
pub mod chaos;
mod child;
pub mod cpu;
pub mod forward;
pub mod harness;
pub mod proxy;
pub mod redis;
pub mod s3;
pub mod service;
pub mod tls;
