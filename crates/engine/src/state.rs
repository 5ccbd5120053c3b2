//! [`EngineState`]: what every handler of the engine shares, including the ones that
//! other modules (e.g. function execution) mount on the same router.

use crate::config::EngineConfig;
use crate::function::Functions;
use crate::metrics::Metrics;
use crate::stage::Stage;
use runlog_capture::{Capture, StreamSink};
use runlog_protocol::engine::LogConfig;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// Shared engine state; cheap to clone.
#[derive(Clone)]
pub struct EngineState {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    /// Setup and destroy hold this for their whole run, so they never interleave.
    stage: tokio::sync::Mutex<Option<Arc<Stage>>>,
    /// The current stage, for readers that must not wait behind a running destroy.
    current: RwLock<Option<Arc<Stage>>>,
    /// The engine log stream's sink, attached to every request's span.
    sink: RwLock<Option<Arc<dyn StreamSink>>>,
    metrics: Metrics,
    /// One permit per step that may run at once (`EngineConfig::max_steps`); a step
    /// holds its permit until its stream is closed.
    step_slots: Arc<tokio::sync::Semaphore>,
    /// The function endpoints, whose Python runtime also installs `/setup`'s
    /// dependencies; set once by whoever mounts them.
    functions: std::sync::OnceLock<Functions>,
}

impl EngineState {
    /// State for an engine with `config` (no stage yet).
    pub fn new(mut config: EngineConfig) -> EngineState {
        // Steps and Python workers run with their own working directories, so every
        // path handed to them (`$RUNLOG_OUTPUT`, the venv, spools) must not depend on
        // the engine's: resolve a relative data dir once, here.
        if let Ok(abs) = std::path::absolute(&config.data_dir) {
            config.data_dir = abs;
        }
        EngineState {
            inner: Arc::new(Inner {
                step_slots: Arc::new(tokio::sync::Semaphore::new(config.max_steps)),
                config,
                stage: tokio::sync::Mutex::new(None),
                current: RwLock::new(None),
                sink: RwLock::new(None),
                metrics: Metrics::default(),
                functions: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A slot for one more running step, or `None` when `max_steps` are running.
    pub fn try_step_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.step_slots.clone().try_acquire_owned().ok()
    }

    /// A fresh capture ring of the configured capacity, for one request: attach it to
    /// the request's span (`capture.attach(&tracing::Span::current())`).
    pub fn new_capture(&self) -> Capture {
        Capture::new(self.inner.config.capture_capacity)
    }

    /// Lets `/setup` install dependencies through the Python runtime of `functions`
    /// (the one `/execute` uses, so both share one virtualenv and its install lock).
    /// Only the first call counts; without it, a setup with dependencies is refused.
    pub fn set_functions(&self, functions: Functions) {
        let _ = self.inner.functions.set(functions);
    }

    /// The function endpoints given to [`EngineState::set_functions`], if any.
    pub fn functions(&self) -> Option<&Functions> {
        self.inner.functions.get()
    }

    /// The current stage, if one is set up.
    pub fn stage(&self) -> Option<Arc<Stage>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current stage's secrets (empty without a stage).
    pub fn stage_secrets(&self) -> Vec<String> {
        self.stage().map(|s| s.secrets.clone()).unwrap_or_default()
    }

    /// The current stage's log config, if a stage is set up.
    pub fn stage_log_config(&self) -> Option<LogConfig> {
        self.stage().map(|s| s.log_config.clone())
    }

    /// The sink of the engine's own log stream, if the stage has one.
    pub fn engine_sink(&self) -> Option<Arc<dyn StreamSink>> {
        self.inner
            .sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) async fn lock_stage(&self) -> tokio::sync::MutexGuard<'_, Option<Arc<Stage>>> {
        self.inner.stage.lock().await
    }

    pub(crate) fn publish(&self, stage: Option<Arc<Stage>>, sink: Option<Arc<dyn StreamSink>>) {
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = stage;
        *self
            .inner
            .sink
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sink;
    }
}
