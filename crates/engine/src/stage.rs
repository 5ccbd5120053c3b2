//! A stage: the workspace, environment, secrets and streams that `/setup` creates
//! and `/destroy` tears down, and the steps run in it.

use crate::cgroup::StageCgroup;
use crate::config::EngineConfig;
use crate::memory_cgroup::StepMemory;
use crate::step_output::StepOutputLog;
use livelog::{LogClient, Writer, WriterConfig};
use runlog_capture::StreamSink;
use runlog_protocol::engine::{LogConfig, StepResponse, WriterReport};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The name of a stage's temporary directory in its engine-side directory.
pub(crate) const TMP_DIR: &str = "tmp";

/// One set-up stage.
pub struct Stage {
    /// Random id; names the workspace directory.
    pub id: String,
    /// The stage's working tree.
    pub workspace: PathBuf,
    /// Engine-side files of the stage (step outputs), outside the workspace.
    pub meta_dir: PathBuf,
    /// Environment of every step.
    pub envs: BTreeMap<String, String>,
    /// Masked in every stream of the stage.
    pub secrets: Vec<String>,
    /// Where the stage's streams go.
    pub log_config: LogConfig,
    /// Default working directory of steps.
    pub working_dir: PathBuf,
    /// Client of the log service; `None` when setup gave no usable `log_config`.
    pub client: Option<Arc<dyn LogClient>>,
    /// The engine's own log stream (`le_log_key`).
    pub engine_log: Option<Writer>,
    /// The key of `engine_log`: no step may write to it.
    engine_log_key: Option<String>,
    /// Every process of the stage's steps, `setsid` ones included; `None` where the
    /// engine cannot make cgroups (then process groups are all `/destroy` kills).
    pub cgroup: Option<StageCgroup>,
    /// Cancelled by `/destroy`: running steps are killed.
    pub cancel: CancellationToken,
    /// What setup recorded for repeated setups, host volumes and machine figures.
    pub extras: StageExtras,
    steps: Mutex<HashMap<String, StepEntry>>,
    /// Steps' memory cgroups that still held a process when their step ended.
    memory_cgroups: Mutex<Vec<StepMemory>>,
}

/// What a stage holds beyond its workspace and streams.
#[derive(Default)]
pub struct StageExtras {
    /// The setup request's body as JSON: a runner re-sends a setup it got no answer
    /// to, and the same body again is answered as the first was.
    pub request: serde_json::Value,
    /// Host directories setup created for volumes that ask to be removed at destroy.
    pub remove_dirs: Vec<PathBuf>,
    /// Samples the machine while the stage lives (`os_stats`, the memory metrics
    /// stream).
    pub machine: Option<crate::machine::MachineMonitor>,
}

/// A step's result slot and the task running it (which returns its stream's report).
pub(crate) struct StepEntry {
    /// The step's stream key: its writers take turns.
    log_key: Option<String>,
    /// The step's output, for `/stream_output`.
    output: StepOutputLog,
    pub(crate) result: watch::Receiver<Option<StepResponse>>,
    pub(crate) task: Option<JoinHandle<Option<WriterReport>>>,
    /// True once the step's writer is closed: a later step of the same key opens
    /// its stream only then, and continues after this one's lines.
    closed: watch::Receiver<bool>,
}

/// What a registered step's task signals and waits for around its writer.
pub(crate) struct KeyTurn {
    /// Set once this step's writer is closed (or it had none).
    pub(crate) closed: watch::Sender<bool>,
    /// The writers of earlier steps with the same key, to wait for before opening.
    pub(crate) after: Vec<watch::Receiver<bool>>,
}

impl KeyTurn {
    /// Waits until every earlier writer of the key is closed (a dropped sender, a
    /// step task that ended without saying, counts as closed).
    pub(crate) async fn wait(&mut self) {
        for rx in &mut self.after {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }
}

/// A step's id, whether it was still running, and its task (taken once).
pub(crate) type StepTask = (String, bool, Option<JoinHandle<Option<WriterReport>>>);

/// Forwards tracing events into a log stream without blocking (`try_write_line`):
/// the stage's engine log, and a function call's system lines.
pub struct WriterSink(pub Writer);

impl StreamSink for WriterSink {
    fn forward(&self, level: &'static str, line: &str) {
        self.0.try_write_line(level, line);
    }
}

impl Stage {
    /// A stage with no steps yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        workspace: PathBuf,
        meta_dir: PathBuf,
        envs: BTreeMap<String, String>,
        secrets: Vec<String>,
        log_config: LogConfig,
        working_dir: PathBuf,
        client: Option<Arc<dyn LogClient>>,
        engine_log: Option<(String, Writer)>,
        cgroup: Option<StageCgroup>,
        extras: StageExtras,
    ) -> Stage {
        let (engine_log_key, engine_log) = engine_log.unzip();
        Stage {
            id,
            workspace,
            meta_dir,
            envs,
            secrets,
            log_config,
            working_dir,
            client,
            engine_log,
            engine_log_key,
            cgroup,
            cancel: CancellationToken::new(),
            extras,
            steps: Mutex::new(HashMap::new()),
            memory_cgroups: Mutex::new(Vec::new()),
        }
    }

    /// A writer for `key` with the stage's log config and secrets plus `extra_secrets`;
    /// `None` when the stage has no log service. The stream is opened first, so a
    /// key that holds lines already is continued ([`Writer::open`]).
    pub async fn writer(
        &self,
        config: &EngineConfig,
        key: &str,
        extra_secrets: &[String],
    ) -> Option<Writer> {
        let client = self.client.clone()?;
        let log_config = self.log_config.clone();
        Some(
            self.writer_to(config, key, extra_secrets, client, &log_config)
                .await,
        )
    }

    /// A writer for `key` to the log service of `client` and `log_config` (a step's
    /// own), masking the stage's secrets plus `extra_secrets`; opened first, as
    /// [`Stage::writer`].
    pub async fn writer_to(
        &self,
        config: &EngineConfig,
        key: &str,
        extra_secrets: &[String],
        client: Arc<dyn LogClient>,
        log_config: &LogConfig,
    ) -> Writer {
        let mut cfg = WriterConfig::new(key).with_log_config(log_config);
        cfg.secrets = self.secrets.iter().chain(extra_secrets).cloned().collect();
        cfg.spool_dir = config.spool_dir();
        cfg.outbox_dir = Some(config.outbox_dir());
        cfg.close_deadline = config.close_deadline;
        Writer::open(client, cfg).await
    }

    /// Registers a step id and the key it writes to. Refused (with the reason) when the
    /// id exists already, when the key is the stage's engine log, or when another step
    /// of the stage that writes the key is still running: writers of one stream take
    /// turns, each numbering its lines after the last one's (`livelog::Writer::open`),
    /// which two writers at once cannot do. A key whose earlier steps have exited is
    /// reused: the returned [`KeyTurn`] waits for their writers to close.
    pub(crate) fn add_step(
        &self,
        id: &str,
        log_key: Option<&str>,
        result: watch::Receiver<Option<StepResponse>>,
        output: StepOutputLog,
    ) -> Result<KeyTurn, String> {
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        if steps.contains_key(id) {
            return Err(format!("step {id:?} already exists"));
        }
        let mut after = Vec::new();
        if let Some(key) = log_key {
            if self.engine_log_key.as_deref() == Some(key) {
                return Err(format!(
                    "log_key {key:?} is the stage's engine log (le_log_key), written while the stage lives: a stream has one writer at a time; give the step a key of its own"
                ));
            }
            for (other, e) in steps
                .iter()
                .filter(|(_, e)| e.log_key.as_deref() == Some(key))
            {
                let exited = e.result.borrow().as_ref().is_some_and(|r| r.exited);
                if !exited {
                    return Err(format!(
                        "log_key {key:?} is written by step {other:?} of this stage, which is still running: a stream has one writer at a time; start this step once that one has ended, or give it a key of its own"
                    ));
                }
                after.push(e.closed.clone());
            }
        }
        let (closed, closed_rx) = watch::channel(false);
        steps.insert(
            id.to_owned(),
            StepEntry {
                log_key: log_key.map(str::to_owned),
                output,
                result,
                task: None,
                closed: closed_rx,
            },
        );
        Ok(KeyTurn { closed, after })
    }

    /// Records the task running a registered step.
    pub(crate) fn set_task(&self, id: &str, task: JoinHandle<Option<WriterReport>>) {
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = steps.get_mut(id) {
            e.task = Some(task);
        }
    }

    /// The result slot of a step.
    pub(crate) fn step_result(&self, id: &str) -> Option<watch::Receiver<Option<StepResponse>>> {
        let steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        steps.get(id).map(|e| e.result.clone())
    }

    /// Whether a step with this id was started in the stage.
    pub(crate) fn has_step(&self, id: &str) -> bool {
        let steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        steps.contains_key(id)
    }

    /// The output log of a step.
    pub(crate) fn step_output(&self, id: &str) -> Option<StepOutputLog> {
        let steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        steps.get(id).map(|e| e.output.clone())
    }

    /// Takes every step's task, with whether it was still running.
    pub(crate) fn take_tasks(&self) -> Vec<StepTask> {
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = steps
            .iter_mut()
            .map(|(id, e)| (id.clone(), e.result.borrow().is_none(), e.task.take()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Keeps a step's memory cgroup that could not be removed yet, for `/destroy`.
    pub(crate) fn keep_memory_cgroup(&self, memory: StepMemory) {
        let mut kept = self
            .memory_cgroups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        kept.push(memory);
    }

    /// Takes the memory cgroups kept for `/destroy`.
    pub(crate) fn take_memory_cgroups(&self) -> Vec<StepMemory> {
        let mut kept = self
            .memory_cgroups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut kept)
    }

    /// The stage's temporary directory, every step's `TMPDIR`: removed with the stage,
    /// so what its steps' tools put there is not left for the next stage to read (or
    /// to plant something in for it), which `/tmp` shared by all stages would be.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.meta_dir.join(TMP_DIR)
    }

    /// Where step `id` writes its outputs.
    pub(crate) fn outputs_file(&self, id: &str) -> PathBuf {
        self.meta_dir.join("outputs").join(format!("{id}.env"))
    }
}
