//! The warm pool of function workers.
//!
//! A warm call skips interpreter start-up (tens of milliseconds) by taking an idle
//! worker. At most `max_workers` run at once: a burst of calls waits for a worker
//! rather than forking without bound on a small machine. A worker that failed (crash,
//! timeout, protocol error) is never returned to the pool.

use crate::python::worker::{Worker, WorkerError};
use crate::step_user::StepUser;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What every worker of a pool is started with.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Interpreter (the venv's).
    pub python: PathBuf,
    /// The harness file.
    pub harness: PathBuf,
    /// Working directory of the workers.
    pub cwd: PathBuf,
    /// The user they run as; `None`: the engine's.
    pub user: Option<StepUser>,
}

impl WorkerSpec {
    /// Starts one worker.
    pub async fn spawn(&self) -> Result<Worker, WorkerError> {
        Worker::spawn(&self.python, &self.harness, &self.cwd, self.user.as_ref()).await
    }
}

/// Idle function workers plus a bound on running ones.
#[derive(Debug)]
pub struct FunctionPool {
    spec: WorkerSpec,
    idle: Mutex<Vec<Worker>>,
    running: Arc<Semaphore>,
    warm: usize,
}

/// A worker taken from the pool; give it back with [`FunctionPool::give_back`] when it
/// is still healthy, or drop it to retire it.
#[derive(Debug)]
pub struct PooledWorker {
    /// The worker.
    pub worker: Worker,
    _permit: OwnedSemaphorePermit,
}

impl FunctionPool {
    /// A pool keeping `warm` idle workers and running at most `max` at once.
    pub fn new(spec: WorkerSpec, warm: usize, max: usize) -> Self {
        FunctionPool {
            spec,
            idle: Mutex::new(Vec::new()),
            running: Arc::new(Semaphore::new(max.max(1))),
            warm,
        }
    }

    /// The spec workers are started with.
    pub fn spec(&self) -> &WorkerSpec {
        &self.spec
    }

    /// Starts workers until `warm` are idle.
    pub async fn prewarm(&self) -> Result<(), WorkerError> {
        while self.idle_count() < self.warm {
            let w = self.spec.spawn().await?;
            self.lock_idle().push(w);
        }
        Ok(())
    }

    /// Idle workers right now.
    pub fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    /// An idle worker, or a new one; waits while `max` are running.
    pub async fn take(&self) -> Result<PooledWorker, WorkerError> {
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Protocol("worker pool closed".into()))?;
        // A worker that died while idle (killed from outside) is skipped.
        while let Some(mut w) = self.lock_idle().pop() {
            if w.is_alive() {
                return Ok(PooledWorker {
                    worker: w,
                    _permit: permit,
                });
            }
        }
        let worker = self.spec.spawn().await?;
        Ok(PooledWorker {
            worker,
            _permit: permit,
        })
    }

    /// Returns a healthy worker to the pool (beyond `warm` idle ones, it is stopped).
    pub fn give_back(&self, taken: PooledWorker) {
        let mut idle = self.lock_idle();
        if idle.len() < self.warm.max(1) {
            idle.push(taken.worker);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
