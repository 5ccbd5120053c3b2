//! RunPod's serverless job API as the engine answers it: `run`, `runsync`,
//! `status/{id}`, `cancel/{id}`, `stream/{id}`, `health`, `purge-queue`.
//!
//! Field names and status values are RunPod's (camelCase timing fields, upper-case
//! statuses), so its SDKs (`runpod.Endpoint`, `runpod-flash`) read the answers
//! unchanged.
//!
//! ```
//! use runlog_protocol::job::{JobRecord, JobStatus};
//! let rec: JobRecord = serde_json::from_str(
//!     r#"{"id":"a1","status":"COMPLETED","delayTime":3,"executionTime":40,
//!         "workerId":"w","output":{"success":true}}"#,
//! ).unwrap();
//! assert_eq!(rec.status, JobStatus::Completed);
//! assert!(rec.status.is_final());
//! ```

use serde::{Deserialize, Serialize};

/// Where a job is in its life, spelled as RunPod spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted, waiting for a worker.
    InQueue,
    /// Running.
    InProgress,
    /// The call ran to its end (the function itself may have raised: see the
    /// output's `success`, as with RunPod's worker).
    Completed,
    /// The call could not run (e.g. its log stream could not be opened).
    Failed,
    /// Cancelled by `cancel/{id}` or `purge-queue`.
    Cancelled,
    /// Stopped by the engine's time limit for jobs.
    TimedOut,
}

impl JobStatus {
    /// Whether the job has ended (the SDKs stop polling on these).
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::InQueue | JobStatus::InProgress)
    }
}

/// The answer of `run` (and of `cancel`): the job's id and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    /// The job id (128 random bits).
    pub id: String,
    /// `IN_QUEUE` right after `run`.
    pub status: JobStatus,
}

/// The whole job record: the answer of `runsync` and `status/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// Its status.
    pub status: JobStatus,
    /// Milliseconds between `run` and the start of the call (present once started).
    #[serde(rename = "delayTime", default, skip_serializing_if = "Option::is_none")]
    pub delay_time: Option<u64>,
    /// Milliseconds the call ran (present once ended).
    #[serde(
        rename = "executionTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub execution_time: Option<u64>,
    /// The engine that ran it (present once started).
    #[serde(rename = "workerId", default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The function call's answer ([`crate::function::FunctionResponse`]) once
    /// `COMPLETED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Why the job `FAILED`, was `CANCELLED` or `TIMED_OUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// runlog's addition: the key of the job's live log stream (in the account of the
    /// stage's `log_config`, or the request's own), when it has one.
    #[serde(rename = "logKey", default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
}

/// One entry of a `stream/{id}` answer: one log line of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamChunk {
    /// The line, without its newline.
    pub output: String,
}

/// The answer of `stream/{id}`: the job's log lines since the previous `stream` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAnswer {
    /// The job id.
    pub id: String,
    /// Its status now.
    pub status: JobStatus,
    /// New lines, oldest first (empty when none arrived).
    pub stream: Vec<StreamChunk>,
}

/// Job counts of a `health` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    /// Kept finished jobs that completed.
    pub completed: u64,
    /// Kept finished jobs that failed, were cancelled or timed out.
    pub failed: u64,
    /// Jobs running.
    pub in_progress: u64,
    /// Jobs waiting.
    pub in_queue: u64,
    /// Always 0: the engine never retries a job.
    pub retried: u64,
}

/// Worker counts of a `health` answer (RunPod's fields; the engine's Python workers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Started function workers waiting for a call.
    pub idle: u64,
    /// 1 while the Python runtime is being prepared, else 0.
    pub initializing: u64,
    /// Workers able to take a call now (idle ones).
    pub ready: u64,
    /// Jobs running on a worker.
    pub running: u64,
    /// Always 0.
    pub throttled: u64,
    /// Always 0.
    pub unhealthy: u64,
}

/// The answer of `health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// Job counts.
    pub jobs: JobCounts,
    /// Worker counts.
    pub workers: WorkerCounts,
}

/// The answer of `purge-queue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAnswer {
    /// How many queued jobs were removed (running ones are left alone).
    pub removed: u64,
    /// `"completed"`.
    pub status: String,
}

/// The error body of the job routes: RunPod's `error`, and runlog's `error_msg`
/// ([`crate::ErrorBody`]) with the same text, so either kind of client finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobErrorBody {
    /// The cause.
    pub error: String,
    /// The same cause, under runlog's field name.
    pub error_msg: String,
}

impl JobErrorBody {
    /// A body with `msg` in both fields.
    pub fn new(msg: impl Into<String>) -> Self {
        let error = msg.into();
        JobErrorBody {
            error_msg: error.clone(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_runpods_spelling() {
        for (s, wire) in [
            (JobStatus::InQueue, "IN_QUEUE"),
            (JobStatus::InProgress, "IN_PROGRESS"),
            (JobStatus::Completed, "COMPLETED"),
            (JobStatus::Failed, "FAILED"),
            (JobStatus::Cancelled, "CANCELLED"),
            (JobStatus::TimedOut, "TIMED_OUT"),
        ] {
            assert_eq!(
                serde_json::to_value(s).expect("serialises"),
                serde_json::json!(wire)
            );
        }
        assert!(!JobStatus::InQueue.is_final() && JobStatus::Cancelled.is_final());
    }

    #[test]
    fn record_and_health_use_runpods_field_names() {
        let rec = JobRecord {
            id: "x".into(),
            status: JobStatus::Completed,
            delay_time: Some(1),
            execution_time: Some(2),
            worker_id: Some("w".into()),
            output: Some(serde_json::json!({})),
            error: None,
            log_key: None,
        };
        let v = serde_json::to_value(&rec).expect("serialises");
        for field in [
            "id",
            "status",
            "delayTime",
            "executionTime",
            "workerId",
            "output",
        ] {
            assert!(v.get(field).is_some(), "missing {field} in {v}");
        }
        let h = serde_json::to_value(HealthAnswer::default()).expect("serialises");
        assert_eq!(h["jobs"]["inProgress"], 0);
        assert_eq!(h["workers"]["unhealthy"], 0);
    }
}
