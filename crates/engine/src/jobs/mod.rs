//! RunPod's serverless job API on the engine: a bounded queue of function calls with
//! `run` / `runsync` / `status` / `cancel` / `stream` / `health` / `purge-queue`
//! (the HTTP side is `handlers/jobs.rs`, the bookkeeping `table.rs`).
//!
//! A job is one [`FunctionRequest`] run through [`Functions::call_observed`], so it
//! behaves exactly as `/execute` does (masking, log streams, instances); its answer is
//! the job record's `output`. A call that ran — even one whose function raised — is
//! `COMPLETED` with `output.success` telling which, as with RunPod's worker; `FAILED`
//! means the call could not run at all; `CANCELLED` and `TIMED_OUT` end a job from
//! outside (`cancel`, `purge-queue`, `policy.executionTimeout`), which stops its call.

mod table;

pub use crate::config::JobsConfig;
use crate::function::{Functions, LineObserver};
use runlog_protocol::engine::LogConfig;
use runlog_protocol::function::FunctionRequest;
use runlog_protocol::job::{HealthAnswer, JobRecord, JobStatus, StreamAnswer, WorkerCounts};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use table::Table;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// The longest `?wait=` of `runsync` and `status` (RunPod's own bound for `runsync`).
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Why a job request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The request is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such job: never existed, or expired (404).
    #[error("{0}")]
    NotFound(String),
    /// The queue is full (429).
    #[error("{0}")]
    QueueFull(String),
    /// The body is beyond the engine's limit (413).
    #[error("{0}")]
    TooLarge(String),
}

/// The job queue of one engine; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    functions: Functions,
    config: JobsConfig,
    table: Mutex<Table>,
    running: Arc<Semaphore>,
    /// Names this engine in `workerId`.
    worker_id: String,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("worker_id", &self.inner.worker_id)
            .finish_non_exhaustive()
    }
}

/// The stream key of job `id`'s live log when the stage names a log service:
/// `jobs/<id>` (`runlog tail --job <id>` follows it).
pub fn job_log_key(id: &str) -> String {
    format!("jobs/{id}")
}

/// A fresh job id: 128 random bits as 32 hex digits in UUID groups. Unguessable, so
/// knowing one job's id says nothing about another's.
pub fn new_job_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Jobs {
    /// A queue running its jobs on `functions`, with `functions.config().jobs`.
    pub fn new(functions: Functions) -> Self {
        let config = functions.config().jobs.clone();
        Jobs {
            inner: Arc::new(Inner {
                running: Arc::new(Semaphore::new(config.max_running.max(1))),
                worker_id: format!("runlog-{:08x}", rand::random::<u32>()),
                functions,
                config,
                table: Mutex::default(),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        let mut table = self
            .inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Expiry on every touch: no timer task, and nothing stale is ever answered.
        let config = &self.inner.config;
        table.expire(config.keep_finished, config.keep_bytes, Instant::now());
        table
    }

    /// Queues `req` (validated first) and returns its id; `secrets` are masked in
    /// its answer and lines. With `stage_logs` (the stage's `log_config`, when it names
    /// a service) a job without a `log_key` of its own streams its log live to
    /// [`job_log_key`] there.
    /// `execution_timeout` (RunPod's `policy.executionTimeout`) ends a running job
    /// `TIMED_OUT`, stopping its call.
    pub fn submit(
        &self,
        mut req: FunctionRequest,
        secrets: Vec<String>,
        stage_logs: Option<LogConfig>,
        execution_timeout: Option<Duration>,
    ) -> Result<String, JobError> {
        crate::python::runtime::validate(&req).map_err(JobError::BadRequest)?;
        let id = new_job_id();
        if req.log_key.is_none()
            && let Some(cfg) = stage_logs.filter(|c| !c.url.is_empty())
        {
            req.log_key = Some(job_log_key(&id));
            // The job's stream is the engine's own to open and close, whatever the
            // controller asked for the stage's streams.
            req.log_config = Some(LogConfig {
                skip_opening_stream: false,
                skip_closing_stream: false,
                ..cfg
            });
        }
        let log_key = req.log_key.clone();
        {
            let mut table = self.table();
            if table.active() >= self.inner.config.queue_capacity {
                return Err(JobError::QueueFull(format!(
                    "the job queue is full ({} jobs queued or running); retry later",
                    self.inner.config.queue_capacity
                )));
            }
            table.insert(id.clone(), Instant::now()).log_key = log_key;
        }
        let jobs = self.clone();
        let job_id = id.clone();
        // The task inherits the request's span, so the engine's log stream gets the
        // job's system lines as it gets `/execute`'s.
        tokio::spawn(
            async move { jobs.run(job_id, req, secrets, execution_timeout).await }
                .in_current_span(),
        );
        Ok(id)
    }

    async fn run(
        &self,
        id: String,
        req: FunctionRequest,
        secrets: Vec<String>,
        execution_timeout: Option<Duration>,
    ) {
        let Some(stop) = self.table().get(&id).map(|j| j.stop.clone()) else {
            return;
        };
        let permit = tokio::select! {
            permit = self.inner.running.clone().acquire_owned() => permit,
            () = stop.cancelled() => return, // cancelled or purged while queued
        };
        let Ok(_permit) = permit else {
            return;
        };
        if !self.table().start(&id, Instant::now()) {
            return;
        }
        // RunPod's `policy.executionTimeout`: the job ends TIMED_OUT, which stops the
        // call through `stop`.
        let timer = execution_timeout.map(|limit| {
            let jobs = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                jobs.table().finish(
                    &id,
                    JobStatus::TimedOut,
                    None,
                    Some(format!(
                        "execution timeout of {} ms exceeded",
                        limit.as_millis()
                    )),
                    Instant::now(),
                );
            })
        });
        let observer: LineObserver = {
            let jobs = self.clone();
            let id = id.clone();
            let cap = self.inner.config.stream_buffer;
            Arc::new(move |line: &str| {
                if let Some(job) = jobs.table().get_mut(&id) {
                    job.push_line(line, cap);
                }
            })
        };
        let answer = self
            .inner
            .functions
            .call_observed(
                req,
                secrets,
                Some(observer),
                Some(stop),
                Some(&format!("job {id}")),
            )
            .await;
        if let Some(timer) = timer {
            timer.abort();
        }
        let (status, output, error) = match answer {
            Ok(resp) => match serde_json::to_value(resp) {
                Ok(v) => (JobStatus::Completed, Some(v), None),
                Err(e) => (
                    JobStatus::Failed,
                    None,
                    Some(format!("answer not serialisable: {e}")),
                ),
            },
            Err(rejected) => (JobStatus::Failed, None, Some(rejected.0)),
        };
        self.table()
            .finish(&id, status, output, error, Instant::now());
    }

    /// The job's record.
    pub fn record(&self, id: &str) -> Result<JobRecord, JobError> {
        let table = self.table();
        let job = table.get(id).ok_or_else(|| not_found(id))?;
        Ok(job.record(id, &self.inner.worker_id))
    }

    /// Waits up to `wait` for the job to end, then answers its record.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<JobRecord, JobError> {
        let mut ended = {
            let table = self.table();
            let job = table.get(id).ok_or_else(|| not_found(id))?;
            job.ended_tx.subscribe()
        };
        let _ = tokio::time::timeout(wait, ended.wait_for(|e| *e)).await;
        self.record(id)
    }

    /// Cancels a queued or running job (stopping its call); an ended job is left as it
    /// ended. Answers the record after.
    pub fn cancel(&self, id: &str) -> Result<JobRecord, JobError> {
        let mut table = self.table();
        if table.get(id).is_none() {
            return Err(not_found(id));
        }
        table.finish(
            id,
            JobStatus::Cancelled,
            None,
            Some("cancelled".into()),
            Instant::now(),
        );
        let job = table.get(id).ok_or_else(|| not_found(id))?;
        Ok(job.record(id, &self.inner.worker_id))
    }

    /// The job's log lines since the previous call, and its status.
    pub fn stream(&self, id: &str) -> Result<StreamAnswer, JobError> {
        let mut table = self.table();
        let job = table.get_mut(id).ok_or_else(|| not_found(id))?;
        Ok(StreamAnswer {
            id: id.to_owned(),
            status: job.status,
            stream: job.take_lines(),
        })
    }

    /// Cancels every queued job (running ones go on); how many.
    pub fn purge(&self) -> u64 {
        let mut table = self.table();
        let now = Instant::now();
        let mut removed = 0;
        for id in table.queued() {
            if table.finish(
                &id,
                JobStatus::Cancelled,
                None,
                Some("purged from the queue".into()),
                now,
            ) {
                removed += 1;
            }
        }
        removed
    }

    /// Job and worker counts.
    pub fn health(&self) -> HealthAnswer {
        let jobs = self.table().counts();
        let (idle, ready) = self.inner.functions.runtime().worker_counts();
        let idle = u64::try_from(idle).unwrap_or(u64::MAX);
        HealthAnswer {
            workers: WorkerCounts {
                idle,
                initializing: u64::from(!ready && jobs.in_progress > 0),
                ready: idle,
                running: jobs.in_progress,
                throttled: 0,
                unhealthy: 0,
            },
            jobs,
        }
    }

    /// Its limits.
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }
}

fn not_found(id: &str) -> JobError {
    let shown: String = id.chars().take(64).collect();
    JobError::NotFound(format!(
        "no job {shown:?}: unknown, or ended longer ago than this engine keeps jobs"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_128_random_bits_in_uuid_groups() {
        let a = new_job_id();
        let b = new_job_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        let key = job_log_key(&a);
        assert_eq!(
            runlog_protocol::StreamKey::new(&key).map(|k| k.as_str().to_owned()),
            Ok(key),
            "a job's stream key is a valid key"
        );
    }
}
