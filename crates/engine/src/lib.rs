//! The runlog engine: runs workspaces, steps and functions, streaming every log line.
//!
//! A controller sets up a stage (`POST /setup`: workspace, files, environment,
//! secrets, the engine's own log stream), runs steps in it (`POST /step`, each a
//! process group whose stdout and stderr go to a `livelog::Writer` with backpressure)
//! and destroys it (`POST /destroy`: kill, close every stream, remove the workspace).
//! The engine's own tracing events are forwarded to the stage's engine log stream
//! through `runlog_capture`'s stream layer, attached to every request's span.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use runlog_engine::{EngineConfig, EngineState};
//! let config = EngineConfig::default();
//! let listener = runlog_engine::bind(&config).await?;
//! let state = EngineState::new(config);
//! runlog_engine::serve(listener, state, std::future::pending()).await
//! # }
//! ```

pub mod browser_guard;
mod call_lines;
pub mod cgroup;
pub mod cgroup_leftovers;
pub mod child_env;
pub mod config;
pub mod error;
pub mod function;
pub mod handlers;
pub mod jobs;
pub mod lite;
pub mod machine;
pub mod memory_cgroup;
pub mod metrics;
pub mod outputs;
pub mod private_tmp;
pub mod process;
pub mod python;
pub mod server;
pub mod stage;
pub mod state;
pub mod step_output;
pub mod step_user;
pub mod worker_log_level;
pub mod workspace;

pub use config::EngineConfig;
pub use error::EngineError;
pub use server::{bind, router, serve};
pub use state::EngineState;
