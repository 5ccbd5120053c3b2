//! Harness lite-engine's wire shapes that the runlog engine serves beside its own.
//!
//! A Harness runner (its VM and Docker runners, drone-runner-aws) drives a machine's
//! engine with `POST /setup`, `/start_step`, `/poll_step`, `/stream_output`,
//! `/suspend`, `/destroy` and `GET /healthz`. The shared routes (`/setup`,
//! `/poll_step`, `/destroy`, `/healthz`) answer a superset of both APIs' fields (see
//! [`crate::engine`]); the types here are the requests and answers only lite-engine
//! has. Unknown fields are ignored everywhere: a runner sends many that only mean
//! something for containers.

use crate::engine::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `run` of a step: `entrypoint[0]` is executed with `entrypoint[1..]` and then
/// `commands` as its arguments (`["sh","-c"]` + `["echo hi"]` is `sh -c 'echo hi'`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// The command lines; usually one script.
    pub commands: Vec<String>,
    /// The program and its first arguments.
    pub entrypoint: Vec<String>,
}

/// Kind of an output variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputType {
    /// A plain value.
    #[default]
    #[serde(rename = "STRING")]
    String,
    /// A value the controller keeps secret.
    #[serde(rename = "SECRET")]
    Secret,
}

/// One output of a step, lite-engine's `OutputV2`. In a request, `key` is the
/// output's name and `value` the shell variable it is read from; in an answer,
/// `value` is the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputV2 {
    /// The output's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Request: the variable to read; answer: the value.
    pub value: String,
    /// Its kind; `STRING` when absent.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<OutputType>,
}

/// Body of `POST /start_step` (the fields the runlog engine uses; the others a
/// runner sends, most of them container settings, are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartStepRequest {
    /// Unique id of the step in the stage; a repeated id starts nothing new.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Run in the background: `/poll_step` answers at once, without waiting.
    pub detach: bool,
    /// Environment of the step, over the stage's `envs`.
    pub environment: BTreeMap<String, String>,
    /// Stream key of the step's output.
    pub log_key: String,
    /// Values masked in the step's output, besides the stage's secrets.
    pub secrets: Vec<String>,
    /// Working directory: absolute, or relative to the stage's workspace.
    pub working_dir: String,
    /// Step kind: `Run` (or absent) is run; `RunTest` and `RunTestsV2` (Test
    /// Intelligence) are refused.
    pub kind: String,
    /// What to run.
    pub run: RunConfig,
    /// Where this step's stream goes, when it differs from the stage's.
    pub log_config: LogConfig,
    /// Shell variables whose values at the end of the commands are the outputs.
    pub output_vars: Vec<String>,
    /// Typed outputs (take precedence over `output_vars`).
    pub outputs: Vec<OutputV2>,
    /// Time limit in seconds; none when 0.
    pub timeout: u64,
    /// Memory limit of the step's processes together, in bytes (swap included);
    /// none when 0 or less. Enforced with a memory cgroup where the engine can make
    /// one; the step is then `oom_killed` when it goes over.
    pub mem_limit: i64,
    /// A container image: such steps need a Docker engine and are refused.
    pub image: String,
    /// Files the step writes before it starts (absolute paths, like setup's).
    pub files: Vec<crate::engine::SetupFile>,
}

/// Body of `POST /poll_step`, and of `POST /stream_output` with `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamOutputRequest {
    /// The step's id.
    pub id: String,
    /// Bytes of output to skip.
    pub offset: u64,
}

/// Body of `POST /suspend` (suspends containers in lite-engine; nothing here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SuspendRequest {
    /// Key of an engine log stream (unused).
    pub log_key: String,
    /// Labels of the containers to suspend (unused).
    pub labels: BTreeMap<String, String>,
}

/// lite-engine's `os_stats`: what the engine measured of the machine while the
/// stage ran (percentages of the whole machine).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OsStats {
    /// Total memory, MiB.
    pub total_mem_mb: f64,
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// Mean memory use, percent.
    pub avg_mem_usage_pct: f64,
    /// Mean CPU use, percent.
    pub avg_cpu_usage_pct: f64,
    /// Peak memory use, percent.
    pub max_mem_usage_pct: f64,
    /// Peak CPU use, percent.
    pub max_cpu_usage_pct: f64,
    /// Memory use over time (x: seconds since setup, y: percent).
    pub mem_graph: Graph,
    /// CPU use over time (x: seconds since setup, y: percent).
    pub cpu_graph: Graph,
}

/// A series of samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The samples, oldest first.
    pub points: Vec<Point>,
    /// Label of x.
    pub xmetric: String,
    /// Label of y.
    pub ymetric: String,
}

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the stage was set up.
    pub x: f64,
    /// Percent.
    pub y: f64,
}
