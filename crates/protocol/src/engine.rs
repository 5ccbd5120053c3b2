//! Shapes shared between the engine's HTTP API and the livelog writer.
//!
//! The engine's request/answer types (`/setup`, `/step`, `/destroy`, …) live here so
//! that the engine, the CLI and tests speak one definition.

use serde::{Deserialize, Serialize};

/// Where and how to stream logs: the lite-engine `log_config` object.
///
/// ```
/// use runlog_protocol::engine::LogConfig;
/// let c: LogConfig = serde_json::from_str(
///     r#"{"url":"http://127.0.0.1:8079","account_id":"account-123","token":"t","indirect_upload":true}"#,
/// ).unwrap();
/// assert!(c.indirect_upload);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Base URL of the log service, e.g. `http://127.0.0.1:8079`.
    pub url: String,
    /// Account that owns the streams.
    pub account_id: String,
    /// Account token (write scope) sent as `Authorization: Bearer` and `X-Harness-Token`.
    pub token: String,
    /// Upload the archive through the service (`POST /blob`) instead of a signed link.
    pub indirect_upload: bool,
    /// Do not `POST /stream` before writing (the controller opened it).
    pub skip_opening_stream: bool,
    /// Do not `DELETE /stream` at close (the controller closes it).
    pub skip_closing_stream: bool,
    /// Strip the trailing `\n` of each line before sending it.
    pub trim_new_line_suffix: bool,
}

/// What closing one livelog writer achieved; returned by `Writer::close` and, per
/// stream, by the engine's `/destroy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReport {
    /// The stream key.
    pub key: String,
    /// Lines numbered (written by the producer, after splitting).
    pub lines: u64,
    /// Bytes of line text numbered.
    pub bytes: u64,
    /// Batches the live stream accepted.
    pub batches: u64,
    /// Requests that were retried (each retry counts once).
    pub retries: u64,
    /// Lines lost because a bound forced it (disk cap), also stated by a marker line.
    pub dropped_lines: u64,
    /// Bytes lost the same way.
    pub dropped_bytes: u64,
    /// Lines the live stream is known to hold (it may hold fewer when live streaming stopped).
    pub streamed_lines: u64,
    /// Whether the complete archive was uploaded before the deadline.
    pub archived: bool,
    /// Whether the history was left in the outbox to be re-sent later.
    pub outboxed: bool,
    /// Hints from the nudges matched on the last lines (e.g. "probably out of memory").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// The first error that stopped live streaming or the upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One file written into the stage workspace by `/setup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupFile {
    /// Path relative to the workspace (no absolute paths, no `..`).
    pub path: String,
    /// File contents (UTF-8 text).
    #[serde(default)]
    pub data: String,
    /// Unix permission bits, e.g. `420` (= `0o644`); `0o644` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Create a directory rather than a file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_dir: bool,
}

/// Body of `POST /setup`: the lite-engine setup request (unknown fields are ignored,
/// so controllers that send more, e.g. `network` or `volumes`, work unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SetupRequest {
    /// Key of the engine's own log stream for this stage (workspace setup, errors,
    /// destroy). No engine stream when absent.
    pub le_log_key: Option<String>,
    /// Where streams go.
    pub log_config: LogConfig,
    /// Environment variables of every step of the stage.
    pub envs: std::collections::BTreeMap<String, String>,
    /// Values masked in every stream of the stage.
    pub secrets: Vec<String>,
    /// Files created in the workspace before any step runs.
    pub files: Vec<SetupFile>,
    /// Default working directory of steps, relative to the workspace.
    pub working_dir: Option<String>,
    /// Accepted for compatibility; the engine runs steps on the host network.
    pub network: Option<serde_json::Value>,
    /// lite-engine's volumes: a `host` volume's directory is created (an absolute
    /// path, so only on an engine allowed to write host paths) and removed at
    /// destroy when it says `remove`; `temp` volumes only mean something to
    /// containers and are ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<SetupVolume>,
    /// Key of a stream of periodic CPU and memory figures of the machine, written
    /// for the stage's life (lite-engine's memory metrics stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_metrics_log_key: Option<String>,
    /// Dependencies installed before setup answers, their installer output in the
    /// engine log stream. Python packages go into the engine's Python runtime
    /// virtualenv, whose `bin` directory is then put first on the stage's `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<SetupDependencies>,
}

/// One of setup's `volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SetupVolume {
    /// A directory of the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    /// A container's scratch volume (ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temp: Option<serde_json::Value>,
}

/// A host directory volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostVolume {
    /// Its name (containers mount it by name).
    pub name: String,
    /// The absolute path of the directory.
    pub path: String,
    /// Remove the directory when the stage is destroyed.
    pub remove: bool,
}

/// `dependencies` of `POST /setup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SetupDependencies {
    /// pip requirement specs (`requests==2.32.3`, `numpy>=2`).
    pub python: Vec<String>,
    /// apt package names; refused unless the engine allows apt installs.
    pub system: Vec<String>,
}

/// `command` of a step: a shell line, or an argument vector run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepCommand {
    /// Run through the step's shell (`sh -c LINE`).
    Line(String),
    /// Run directly: program and arguments.
    Argv(Vec<String>),
}

/// Body of `POST /step`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepRequest {
    /// Unique id of the step within the stage: `[A-Za-z0-9._-]`, at most 128 bytes.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// What to run; exactly one of `command` and `script` is required.
    pub command: Option<StepCommand>,
    /// A script run by `shell -c`.
    pub script: Option<String>,
    /// Shell for `script` and string `command`s; `sh` when absent.
    pub shell: Option<String>,
    /// Extra environment variables (over the stage's).
    pub envs: std::collections::BTreeMap<String, String>,
    /// Working directory: relative to the workspace (no `..`), or an existing
    /// absolute directory.
    pub working_dir: Option<String>,
    /// Time limit in seconds; the whole process group is killed when it passes.
    pub timeout: Option<u64>,
    /// Memory limit of the step's processes together, in bytes (swap included),
    /// where the engine can make a memory cgroup; going over it, the kernel's OOM
    /// killer ends a process of the step and the answer says `oom_killed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<u64>,
    /// Stream key of the step's output.
    pub log_key: Option<String>,
    /// Values masked in this step's output (besides the stage's).
    pub secrets: Vec<String>,
    /// Answer `{}` at once; the result is fetched with `/poll_step`.
    pub detach: bool,
}

/// Answer of `POST /step` (not detached) and `POST /poll_step`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResponse {
    /// Exit code of the step's process; when a signal N killed it, `128 + N` from
    /// `/step` and `-1` from `/start_step`'s steps (lite-engine's answer); `-1` when it
    /// never started.
    pub exit_code: i32,
    /// Whether the process has ended (always `true` in a result).
    pub exited: bool,
    /// Why the step failed to run or was stopped (timeout, destroy, spawn error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `KEY=VALUE` pairs the step wrote to the file named by `$RUNLOG_OUTPUT`
    /// (also `$DRONE_OUTPUT` and `$HARNESS_OUTPUT_FILE` for `/start_step` steps).
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Whether the kernel's OOM killer ended the step (lite-engine's field).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// Variables the step exported through the file named by `$DRONE_ENV`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub envs: std::collections::BTreeMap<String, String>,
    /// The outputs with their types (lite-engine's `outputV2`).
    #[serde(rename = "outputV2", default, skip_serializing_if = "Vec::is_empty")]
    pub output_v2: Vec<crate::lite::OutputV2>,
}

/// Body of `POST /poll_step`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollStepRequest {
    /// The step's id.
    pub id: String,
}

/// Answer of `POST /destroy`: what closing every stream of the stage achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestroyResponse {
    /// One report per stream (steps first, the engine's own stream last).
    pub streams: Vec<WriterReport>,
    /// Steps that were still running and were killed.
    pub killed_steps: Vec<String>,
    /// Problems met while tearing down (a writer that missed its deadline, a workspace
    /// that could not be removed); the destroy still completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// What the engine measured of the machine while the stage ran (lite-engine's
    /// field); absent when no stage was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_stats: Option<crate::lite::OsStats>,
}

/// Answer of the engine's `GET /healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineHealth {
    /// Always `true` when the engine answers.
    pub ok: bool,
    /// The runlog version.
    pub version: String,
    /// Whether a stage is set up.
    pub stage: bool,
}
