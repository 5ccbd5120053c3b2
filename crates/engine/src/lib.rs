//! The runlog engine: runs workspaces, steps and functions, streaming every log line.

pub mod python;
