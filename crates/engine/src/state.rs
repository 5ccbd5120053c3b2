//! [`EngineState`]: what every handler of the engine shares, built whole from the
//! [`EngineConfig`] at construction: the stage slot, the step slots, the counters, the
//! function endpoints (whose Python runtime `/setup` also installs dependencies with)
//! and the job queue. The router mounts every route over it (`server::router`).

use crate::config::EngineConfig;
use crate::function::{Functions, FunctionsConfig};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::stage::Stage;
use runlog_capture::StreamSink;
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
    /// dependencies (one virtualenv, one install lock for both).
    functions: Functions,
    /// Whether steps get their stage's own `/tmp` (`EngineConfig::private_tmp`, and
    /// the kernel allows it: probed once, here).
    private_tmp: bool,
    /// RunPod's job queue over `functions`.
    jobs: Jobs,
}

impl EngineState {
    /// State for an engine with `config` (no stage yet); its function endpoints use
    /// [`EngineConfig::functions_config`].
    pub fn new(config: EngineConfig) -> EngineState {
        EngineState::with_functions(config, |_| {})
    }

    /// [`EngineState::new`], the function endpoints' settings (derived from `config`
    /// by [`EngineConfig::functions_config`]) first passed through `tune`: another
    /// virtualenv or package source, smaller bounds (tests, benchmarks).
    pub fn with_functions(
        mut config: EngineConfig,
        tune: impl FnOnce(&mut FunctionsConfig),
    ) -> EngineState {
        // Steps and Python workers run with their own working directories, so every
        // path handed to them (`$RUNLOG_OUTPUT`, the venv, spools) must not depend on
        // the engine's: resolve a relative data dir once, here.
        if let Ok(abs) = std::path::absolute(&config.data_dir) {
            config.data_dir = abs;
        }
        if config.step_user.is_some() {
            // A step user passes through to its workspace and lists nothing on the way.
            let protected = crate::step_user::protect_data_dir(&config.data_dir)
                .and_then(|()| crate::step_user::protect_data_dir(&config.stages_dir()));
            if let Err(e) = protected {
                tracing::warn!(
                    "could not set the data directory {} to mode 0711: {e}",
                    config.data_dir.display()
                );
            }
        }
        let private_tmp = private_tmp_usable(&config);
        let mut functions_config = config.functions_config();
        tune(&mut functions_config);
        let functions = Functions::new(functions_config);
        let jobs = Jobs::new(functions.clone());
        EngineState {
            inner: Arc::new(Inner {
                step_slots: Arc::new(tokio::sync::Semaphore::new(config.max_steps)),
                config,
                private_tmp,
                stage: tokio::sync::Mutex::new(None),
                current: RwLock::new(None),
                sink: RwLock::new(None),
                metrics: Metrics::default(),
                functions,
                jobs,
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

    /// Whether steps get their stage's own `/tmp` and `/var/tmp`
    /// ([`crate::private_tmp`]): configured, with a step user, and allowed here.
    pub fn private_tmp(&self) -> bool {
        self.inner.private_tmp
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// A slot for one more running step, or `None` when `max_steps` are running.
    pub fn try_step_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.step_slots.clone().try_acquire_owned().ok()
    }

    /// The function endpoints (`/execute`; their Python runtime also serves
    /// `/setup`'s dependencies).
    pub fn functions(&self) -> &Functions {
        &self.inner.functions
    }

    /// RunPod's job queue (`/run`, `/runsync`, `/status`, …).
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
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

/// Whether steps may get their stage's own `/tmp`: asked for, with a step user (an
/// engine running steps as itself has nothing to keep apart: they share its
/// files anyway), without host paths (a machine made for one stage), and allowed
/// by the kernel — which is probed, with a warning when it refuses.
fn private_tmp_usable(config: &EngineConfig) -> bool {
    if !config.private_tmp || config.step_user.is_none() || config.allow_host_paths {
        return false;
    }
    match crate::private_tmp::probe() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "steps share the machine's /tmp: {e} (a container without CAP_SYS_ADMIN?); --shared-tmp silences this"
            );
            false
        }
    }
}
