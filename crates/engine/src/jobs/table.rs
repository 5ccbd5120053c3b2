//! The engine's jobs: one record per job id, kept while queued or running and for a
//! bounded time after it ends. Pure bookkeeping (no tasks, no I/O), under one mutex in
//! [`super::Jobs`].

use runlog_protocol::job::{JobCounts, JobRecord, JobStatus, StreamChunk};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One job.
#[derive(Debug)]
pub struct Job {
    /// Its status.
    pub status: JobStatus,
    /// When `run` accepted it.
    pub submitted: Instant,
    /// When its call started.
    pub started: Option<Instant>,
    /// When it ended (any final status).
    pub ended: Option<Instant>,
    /// The call's answer, once completed.
    pub output: Option<serde_json::Value>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Its live log stream's key, if it has one.
    pub log_key: Option<String>,
    /// Log lines not yet handed out by `stream`.
    unread: VecDeque<String>,
    /// Bytes of `unread`.
    unread_bytes: usize,
    /// Lines dropped from `unread` because nobody read them in time.
    dropped: u64,
    /// Stops the job: its task while it waits in the queue, its call once it runs
    /// (cancel, purge, its execution timeout).
    pub stop: tokio_util::sync::CancellationToken,
    /// Told `true` when the job ends (for `runsync`).
    pub ended_tx: tokio::sync::watch::Sender<bool>,
}

impl Job {
    fn new(now: Instant) -> Self {
        Job {
            status: JobStatus::InQueue,
            submitted: now,
            started: None,
            ended: None,
            output: None,
            error: None,
            log_key: None,
            unread: VecDeque::new(),
            unread_bytes: 0,
            dropped: 0,
            stop: tokio_util::sync::CancellationToken::new(),
            ended_tx: tokio::sync::watch::channel(false).0,
        }
    }

    /// The wire record, `worker_id` naming this engine once the job started.
    pub fn record(&self, id: &str, worker_id: &str) -> JobRecord {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // A job cancelled in the queue never started: its whole life was delay.
        let start = self.started.or(self.ended);
        JobRecord {
            id: id.to_owned(),
            status: self.status,
            delay_time: start.map(|s| ms(s.duration_since(self.submitted))),
            execution_time: match (self.started, self.ended) {
                (Some(s), Some(e)) => Some(ms(e.duration_since(s))),
                (None, Some(_)) => Some(0),
                _ => None,
            },
            worker_id: start.map(|_| worker_id.to_owned()),
            output: self.output.clone(),
            error: self.error.clone(),
            log_key: self.log_key.clone(),
        }
    }

    /// Queues one log line for `stream`, dropping the oldest beyond `cap` bytes.
    pub fn push_line(&mut self, line: &str, cap: usize) {
        self.unread_bytes += line.len();
        self.unread.push_back(line.to_owned());
        while self.unread_bytes > cap {
            let Some(old) = self.unread.pop_front() else {
                break;
            };
            self.unread_bytes -= old.len();
            self.dropped += 1;
        }
    }

    /// The lines queued since the last call, oldest first; a note first when some
    /// were dropped.
    pub fn take_lines(&mut self) -> Vec<StreamChunk> {
        let mut out = Vec::with_capacity(self.unread.len() + 1);
        if self.dropped > 0 {
            out.push(StreamChunk {
                output: format!(
                    "[runlog: {} earlier lines dropped: not read in time]",
                    self.dropped
                ),
            });
            self.dropped = 0;
        }
        self.unread_bytes = 0;
        out.extend(self.unread.drain(..).map(|output| StreamChunk { output }));
        out
    }

    fn end(&mut self, status: JobStatus, now: Instant) {
        self.status = status;
        self.ended = Some(now);
        // Ended by someone else than its call (cancel, purge, timeout): stop it. A
        // call that ended by itself has nothing left to stop.
        self.stop.cancel();
        self.ended_tx.send_replace(true);
    }
}

/// Every job the engine knows.
#[derive(Debug, Default)]
pub struct Table {
    jobs: HashMap<String, Job>,
    /// Ended jobs in the order they ended, for expiry, with the bytes each holds.
    ended: VecDeque<(Instant, String, usize)>,
    /// Bytes the ended jobs hold (outputs and unread lines), roughly.
    kept_bytes: usize,
    /// Jobs queued or running.
    active: usize,
}

impl Table {
    /// Adds a queued job.
    pub fn insert(&mut self, id: String, now: Instant) -> &mut Job {
        self.active += 1;
        self.jobs.entry(id).or_insert_with(|| Job::new(now))
    }

    /// Jobs queued or running.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// The job with this id, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id)
    }

    /// Marks a queued job running; `false` when it is no longer queued (cancelled).
    pub fn start(&mut self, id: &str, now: Instant) -> bool {
        match self.jobs.get_mut(id) {
            Some(job) if job.status == JobStatus::InQueue => {
                job.status = JobStatus::InProgress;
                job.started = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Ends a job that is still queued or running with `status`; `false` when it had
    /// already ended (a cancel that raced the call's end keeps the first outcome).
    pub fn finish(
        &mut self,
        id: &str,
        status: JobStatus,
        output: Option<serde_json::Value>,
        error: Option<String>,
        now: Instant,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        if job.status.is_final() {
            return false;
        }
        let bytes = output.as_ref().map_or(0, approx_size)
            + error.as_ref().map_or(0, String::len)
            + job.unread_bytes
            + id.len();
        job.output = output;
        job.error = error;
        job.end(status, now);
        self.active -= 1;
        self.kept_bytes += bytes;
        self.ended.push_back((now, id.to_owned(), bytes));
        true
    }

    /// Ids of the queued jobs.
    pub fn queued(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.status == JobStatus::InQueue)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Forgets jobs that ended more than `keep` before `now`, and the oldest ended
    /// ones while those kept hold more than `keep_bytes` (a burst of jobs with big
    /// outputs must not hold the engine's memory for the whole retention time).
    pub fn expire(&mut self, keep: Duration, keep_bytes: usize, now: Instant) {
        while let Some((at, _, _)) = self.ended.front() {
            if now.duration_since(*at) < keep && self.kept_bytes <= keep_bytes {
                break;
            }
            if let Some((_, id, bytes)) = self.ended.pop_front() {
                self.kept_bytes -= bytes;
                self.jobs.remove(&id);
            }
        }
    }

    /// Counts for `health`.
    pub fn counts(&self) -> JobCounts {
        let mut c = JobCounts::default();
        for job in self.jobs.values() {
            match job.status {
                JobStatus::InQueue => c.in_queue += 1,
                JobStatus::InProgress => c.in_progress += 1,
                JobStatus::Completed => c.completed += 1,
                JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut => c.failed += 1,
            }
        }
        c
    }
}

/// Roughly the bytes a JSON value holds: its strings' lengths, 8 per other leaf.
fn approx_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(a) => a.iter().map(approx_size).sum(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| k.len() + approx_size(v)).sum(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_goes_queued_running_completed_then_expires() {
        let t0 = Instant::now();
        let mut table = Table::default();
        table.insert("a".into(), t0);
        assert_eq!(table.active(), 1);
        assert!(table.start("a", t0 + Duration::from_millis(5)));
        assert!(!table.start("a", t0), "started twice");
        let end = t0 + Duration::from_millis(25);
        assert!(table.finish(
            "a",
            JobStatus::Completed,
            Some(serde_json::json!(1)),
            None,
            end
        ));
        assert!(
            !table.finish("a", JobStatus::Cancelled, None, None, end),
            "ended twice"
        );
        let rec = table.get("a").expect("kept").record("a", "w");
        assert_eq!(rec.status, JobStatus::Completed);
        assert_eq!((rec.delay_time, rec.execution_time), (Some(5), Some(20)));
        assert_eq!(rec.worker_id.as_deref(), Some("w"));
        assert_eq!(table.active(), 0);
        table.expire(
            Duration::from_secs(1),
            1 << 20,
            end + Duration::from_millis(999),
        );
        assert!(table.get("a").is_some());
        table.expire(
            Duration::from_secs(1),
            1 << 20,
            end + Duration::from_secs(1),
        );
        assert!(table.get("a").is_none());
    }

    #[test]
    fn the_oldest_ended_jobs_go_first_when_kept_outputs_pass_the_byte_bound() {
        let now = Instant::now();
        let mut table = Table::default();
        for id in ["a", "b", "c"] {
            table.insert(id.into(), now);
            let out = serde_json::json!({"stdout": "x".repeat(1000)});
            table.finish(id, JobStatus::Completed, Some(out), None, now);
        }
        let hour = Duration::from_secs(3600);
        table.expire(hour, 2500, now);
        assert!(table.get("a").is_none(), "the oldest goes");
        assert!(table.get("b").is_some() && table.get("c").is_some());
    }

    #[test]
    fn queued_record_has_no_timing_and_no_worker() {
        let mut table = Table::default();
        table.insert("q".into(), Instant::now());
        let v = serde_json::to_value(table.get("q").expect("there").record("q", "w"))
            .expect("serialises");
        assert_eq!(v, serde_json::json!({"id": "q", "status": "IN_QUEUE"}));
    }

    #[test]
    fn unread_lines_are_bounded_by_bytes_and_say_what_was_dropped() {
        let mut job = Job::new(Instant::now());
        for n in 0..10 {
            job.push_line(&format!("line {n}"), 20);
        }
        let lines: Vec<String> = job.take_lines().into_iter().map(|c| c.output).collect();
        assert_eq!(
            lines,
            vec![
                "[runlog: 7 earlier lines dropped: not read in time]",
                "line 7",
                "line 8",
                "line 9"
            ]
        );
        assert!(job.take_lines().is_empty(), "handed out once");
    }
}
