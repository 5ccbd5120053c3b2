//! [`PythonRuntime`]: one call from request to outcome — prepare the virtualenv,
//! install dependencies, run the function or method in a worker.

use crate::python::deps::{DependencyError, Installs};
use crate::python::harness;
use crate::python::install::Installer;
use crate::python::instances::{Instance, Instances, generate_id};
use crate::python::pool::{FunctionPool, WorkerSpec};
use crate::python::user_python;
use crate::python::venv::{Venv, VenvError};
use crate::python::worker::{Done, Worker};
use crate::python::{FunctionOutput, PythonConfig};
use runlog_capture::Section;
use runlog_protocol::function::{ExecutionType, FunctionRequest, InstanceInfo, Serialization};
use serde_json::json;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::sync::OnceCell;

/// What a call produced (the response minus `stdout`, which the caller assembles).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    /// Whether the function returned normally.
    pub success: bool,
    /// The encoded result.
    pub result: Option<serde_json::Value>,
    /// One-line cause, then the traceback when there is one.
    pub error: Option<String>,
    /// The class instance used.
    pub instance_id: Option<String>,
    /// Its state after the call.
    pub instance_info: Option<InstanceInfo>,
}

impl CallOutcome {
    fn failed(error: impl Into<String>) -> Self {
        CallOutcome {
            success: false,
            error: Some(error.into()),
            ..CallOutcome::default()
        }
    }

    fn from_done(done: Done) -> Self {
        if done.success {
            return CallOutcome {
                success: true,
                result: done.result,
                ..CallOutcome::default()
            };
        }
        let cause = done.error.unwrap_or_else(|| "the call failed".to_owned());
        let error = match done.traceback {
            Some(tb) if !tb.is_empty() => format!("{cause}\n{tb}"),
            _ => cause,
        };
        CallOutcome::failed(error)
    }
}

/// Why a request is refused before anything runs (answered with 400).
pub fn validate(req: &FunctionRequest) -> Result<(), String> {
    let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    match req.execution_type {
        ExecutionType::Function => {
            if !present(&req.function_name) {
                return Err("function_name is required for execution_type \"function\"".into());
            }
            if !present(&req.function_code) {
                return Err("function_code is required for execution_type \"function\"".into());
            }
        }
        ExecutionType::Class => {
            if !present(&req.class_name) {
                return Err("class_name is required for execution_type \"class\"".into());
            }
            let creates = req.create_new_instance || req.instance_id.is_none();
            if creates && !present(&req.class_code) {
                return Err("class_code is required to create an instance".into());
            }
        }
    }
    for path in req.modules.keys() {
        check_module_path(path)?;
    }
    match req.timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => Err(format!(
            "timeout must be a positive number of seconds, got {t}"
        )),
        Some(t) if Duration::try_from_secs_f64(t).is_err() => {
            Err(format!("timeout of {t} seconds is too large"))
        }
        _ => Ok(()),
    }
}

/// A `modules` key must stay inside the call's module directory: a relative POSIX
/// path of plain segments (the harness writes the file there).
fn check_module_path(path: &str) -> Result<(), String> {
    let shown: String = path.chars().take(100).collect();
    let bad = |why: &str| Err(format!("modules: {shown:?} {why}"));
    if path.is_empty() || path.len() > 1024 {
        return bad("must be a relative path of 1 to 1024 bytes");
    }
    if path.starts_with('/') || path.contains('\\') || path.chars().any(char::is_control) {
        return bad("must be a relative POSIX path without control characters");
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("may not have empty, '.' or '..' segments");
    }
    Ok(())
}

/// Everything that exists once the virtualenv is ready.
#[derive(Debug)]
struct Ready {
    pool: FunctionPool,
}

/// The Python runtime of one engine.
#[derive(Debug)]
pub struct PythonRuntime {
    config: PythonConfig,
    ready: OnceCell<Ready>,
    /// Dependency installs of `/setup` and `/execute` alike.
    installs: Installs,
    instances: Arc<Instances>,
    reaper: Once,
}

impl PythonRuntime {
    /// A runtime that prepares itself on first use.
    pub fn new(config: PythonConfig) -> Self {
        let installer = Installer {
            venv_python: config.venv_dir.join("bin").join("python"),
            pip_args: config.pip_args.clone(),
            prefer_uv: config.prefer_uv,
            uv: config.uv.clone(),
            allow_apt: config.allow_apt,
            apt_get: config.apt_get.clone(),
            apt_updated: Arc::default(),
            timeout: config.install_timeout,
        };
        let installs = Installs::new(installer, config.venv_dir.with_extension("install.lock"));
        PythonRuntime {
            config,
            ready: OnceCell::new(),
            installs,
            instances: Arc::default(),
            reaper: Once::new(),
        }
    }

    /// Installs the Python packages (into the virtualenv, prepared first) and system
    /// packages this runtime has not installed yet, for `/setup` and `/execute` alike.
    /// System packages alone do not prepare the virtualenv (that costs seconds).
    pub async fn install_dependencies(
        &self,
        python: &[String],
        system: &[String],
        parallel: bool,
    ) -> Result<(), DependencyError> {
        if python.is_empty() && system.is_empty() {
            return Ok(());
        }
        // A section of the stream this request logs into (the engine log for
        // `/setup`, the call's stream for `/execute`), ended with the install's
        // outcome.
        let section = Section::open(&install_title(python, system));
        let installed = async {
            if !python.is_empty() {
                self.ready().await.map_err(DependencyError::Runtime)?;
            }
            self.installs.ensure(python, system, parallel).await
        }
        .await;
        section.end_ok(installed.is_ok());
        installed
    }

    /// Its configuration.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// Live class instances.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// (idle function workers, whether the virtualenv and pool are ready).
    pub fn worker_counts(&self) -> (usize, bool) {
        match self.ready.get() {
            Some(r) => (r.pool.idle_count(), true),
            None => (0, false),
        }
    }

    /// Whether the step user, when workers run as one, can run them: the existing
    /// virtualenv checked as that user, or (none built yet) a base interpreter it can
    /// run found. Cheap (an interpreter start or a few), unlike [`Self::warm_up`]: the
    /// engine calls it at start so that an unusable Python is said then, not only by
    /// the first call.
    pub async fn check_user_python(&self) -> Result<(), String> {
        let Some(user) = &self.config.user else {
            return Ok(());
        };
        match Venv::existing(&self.config.venv_dir) {
            Some(venv) => {
                user_python::check_venv(&venv.python(), &[], &self.worker_imports(), user).await
            }
            None => user_python::base_for(&self.config.base_python, user)
                .await
                .map(|_| ()),
        }
    }

    /// What a worker imports at start besides the standard library's.
    fn worker_imports(&self) -> Vec<&'static str> {
        let pickles = self
            .config
            .bootstrap_packages
            .iter()
            .any(|p| p == "cloudpickle");
        ["json", "tempfile"]
            .into_iter()
            .chain(pickles.then_some("cloudpickle"))
            .collect()
    }

    /// Prepares the virtualenv and the warm pool now rather than on the first call.
    pub async fn warm_up(&self) -> Result<(), String> {
        self.ready().await.map(|_| ())
    }

    async fn ready(&self) -> Result<&Ready, String> {
        self.ready
            .get_or_try_init(|| self.prepare())
            .await
            .map_err(|e| e.to_string())
    }

    async fn prepare(&self) -> Result<Ready, VenvError> {
        let user = self.config.user.as_ref();
        // Workers run as the step user: the venv must be built on a base interpreter
        // that user can run (`user_python`), chosen only when there is none yet.
        let base_python = match user {
            Some(u) if Venv::existing(&self.config.venv_dir).is_none() => {
                user_python::base_for(&self.config.base_python, u)
                    .await
                    .map_err(VenvError::StepUser)?
            }
            _ => self.config.base_python.clone(),
        };
        let venv = Venv::ensure(
            &self.config.venv_dir,
            &base_python,
            &self.config.bootstrap_packages,
            self.installs.installer(),
        )
        .await?;
        if !self.config.preinstall.is_empty() {
            // Installed on every start, not only when the venv is built: a flag added
            // to an engine whose venv exists must take effect (an installer finds
            // satisfied requirements quickly).
            self.installs
                .installer()
                .from_default_index(venv.python())
                .pip_install(&self.config.preinstall)
                .await?;
        }
        let runtime_dir = venv.dir().parent().unwrap_or(venv.dir()).to_path_buf();
        let harness = harness::install(&runtime_dir).map_err(|source| VenvError::Io {
            path: runtime_dir.clone(),
            source,
        })?;
        let cwd = match user {
            None => runtime_dir,
            Some(u) => {
                // Before the first worker: the user runs the venv's interpreter, reads
                // the harness and imports what it imports, or the start fails saying so.
                user_python::check_venv(&venv.python(), &[&harness], &self.worker_imports(), u)
                    .await
                    .map_err(VenvError::StepUser)?;
                // The runtime's directory is the engine's (harness, venv): the
                // workers' files go in a directory of their user's own.
                let work = runtime_dir.join("work");
                u.private_dir(&work).map_err(|source| VenvError::Io {
                    path: work.clone(),
                    source,
                })?;
                work
            }
        };
        let spec = WorkerSpec {
            python: venv.python(),
            harness,
            cwd,
            user: user.cloned(),
        };
        let pool = FunctionPool::new(spec, self.config.warm_workers, self.config.max_workers);
        if let Err(e) = pool.prewarm().await {
            // Not fatal: calls start workers on demand and report the cause themselves.
            tracing::warn!(target: "runlog::python", "warming the worker pool failed: {e}");
        }
        Ok(Ready { pool })
    }

    /// Runs one call. The function's own output goes to `out` line by line as it
    /// arrives; the runtime's own progress is logged as tracing events in the current
    /// span. Call [`validate`] first.
    pub async fn execute(&self, req: &FunctionRequest, out: &FunctionOutput) -> CallOutcome {
        let ready = match self.ready().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target: "runlog::python", "{e}");
                return CallOutcome::failed(e);
            }
        };
        let (python, system) = (&req.dependencies, &req.system_dependencies);
        if let Err(e) = self
            .install_dependencies(python, system, req.accelerate_downloads)
            .await
        {
            return CallOutcome::failed(e.to_string());
        }
        let limit = req
            .timeout
            .and_then(|t| Duration::try_from_secs_f64(t).ok());
        match req.execution_type {
            ExecutionType::Function => self.run_function(ready, req, limit, out).await,
            ExecutionType::Class => self.run_method(ready, req, limit, out).await,
        }
    }

    async fn run_function(
        &self,
        ready: &Ready,
        req: &FunctionRequest,
        limit: Option<Duration>,
        out: &FunctionOutput,
    ) -> CallOutcome {
        let name = req.function_name.as_deref().unwrap_or_default();
        let mut taken = match ready.pool.take().await {
            Ok(w) => w,
            Err(e) => return CallOutcome::failed(e.to_string()),
        };
        tracing::debug!(target: "runlog::python", "calling function {name}");
        let request = json!({
            "op": "function",
            "name": name,
            "code": req.function_code,
            "args": req.args,
            "kwargs": req.kwargs,
            "modules": req.modules,
            "serialization": wire_name(req.serialization),
        });
        match with_limit(limit, taken.worker.call(&request, out)).await {
            Ok(Ok(done)) => {
                ready.pool.give_back(taken);
                let outcome = CallOutcome::from_done(done);
                log_end(&format!("function {name}"), &outcome);
                outcome
            }
            Ok(Err(e)) => {
                tracing::error!(target: "runlog::python", "function {name}: {e}");
                CallOutcome::failed(e.to_string())
            }
            Err(limit) => {
                tracing::error!(target: "runlog::python", "function {name} timed out after {limit:?}; its worker was stopped");
                CallOutcome::failed(format!("function {name} timed out after {limit:?}"))
            }
        }
    }

    async fn run_method(
        &self,
        ready: &Ready,
        req: &FunctionRequest,
        limit: Option<Duration>,
        out: &FunctionOutput,
    ) -> CallOutcome {
        self.reaper.call_once(|| {
            Instances::spawn_reaper(
                Arc::downgrade(&self.instances),
                self.config.instance_idle_timeout,
            );
        });
        let class_name = req.class_name.as_deref().unwrap_or_default();
        let id = req
            .instance_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| generate_id(class_name));
        let existing = if req.create_new_instance {
            None
        } else {
            self.instances.get(&id)
        };
        let created = existing.is_none();
        let handle = match existing {
            Some(h) => {
                tracing::debug!(target: "runlog::python", "reusing instance {id}");
                h
            }
            None => match self.construct(ready, req, &id, limit, out).await {
                Ok(h) => h,
                Err(outcome) => return outcome,
            },
        };
        let mut instance = handle.lock().await;
        let method = req.method_name.as_str();
        tracing::debug!(target: "runlog::python", "calling {class_name}.{method} on {id}");
        let request = json!({
            "op": "method",
            "name": method,
            "args": req.args,
            "kwargs": req.kwargs,
            "modules": req.modules,
            "serialization": wire_name(req.serialization),
        });
        // A call dropped half-way (its job cancelled) leaves the method running in the
        // instance's worker: the instance goes, and its worker is stopped with it.
        let mut forget = ForgetOnDrop {
            instances: &self.instances,
            id: Some(&id),
        };
        let answer = with_limit(limit, instance.worker.call(&request, out)).await;
        forget.id = None;
        drop(forget);
        instance.touch();
        let info = instance.info();
        drop(instance);
        let mut outcome = match answer {
            Ok(Ok(done)) => CallOutcome::from_done(done),
            Ok(Err(e)) => {
                self.instances.remove(&id);
                CallOutcome::failed(format!("{e}; instance {id} is gone"))
            }
            Err(limit) => {
                self.instances.remove(&id);
                CallOutcome::failed(format!(
                    "{class_name}.{method} timed out after {limit:?}; instance {id} was stopped"
                ))
            }
        };
        log_end(&format!("{class_name}.{method}"), &outcome);
        if created && !outcome.success {
            // The caller never got hold of it: an instance whose first call failed
            // would only wait for the reaper, holding a process.
            self.instances.remove(&id);
            return outcome;
        }
        outcome.instance_id = Some(id);
        outcome.instance_info = Some(info);
        outcome
    }

    async fn construct(
        &self,
        ready: &Ready,
        req: &FunctionRequest,
        id: &str,
        limit: Option<Duration>,
        out: &FunctionOutput,
    ) -> Result<crate::python::instances::InstanceHandle, CallOutcome> {
        let class_name = req.class_name.clone().unwrap_or_default();
        tracing::info!(target: "runlog::python", "creating instance {id} of {class_name}");
        // A dedicated process, outside the pool's bound: it lives as long as the instance.
        let mut worker: Worker = ready
            .pool
            .spec()
            .spawn()
            .await
            .map_err(|e| CallOutcome::failed(e.to_string()))?;
        let request = json!({
            "op": "construct",
            "name": class_name,
            "code": req.class_code,
            "args": req.constructor_args,
            "kwargs": req.constructor_kwargs,
            "modules": req.modules,
            "serialization": wire_name(req.serialization),
        });
        let done = match with_limit(limit, worker.call(&request, out)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(CallOutcome::failed(e.to_string())),
            Err(limit) => {
                return Err(CallOutcome::failed(format!(
                    "constructing {class_name} timed out after {limit:?}"
                )));
            }
        };
        if !done.success {
            let outcome = CallOutcome::from_done(done);
            log_end(&format!("{class_name}()"), &outcome);
            return Err(outcome);
        }
        let handle = Arc::new(tokio::sync::Mutex::new(Instance::new(worker, class_name)));
        self.instances.insert(id.to_owned(), handle.clone());
        Ok(handle)
    }
}

/// Removes instance `id` when dropped before being disarmed (`id = None`).
struct ForgetOnDrop<'a> {
    instances: &'a Instances,
    id: Option<&'a str>,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.instances.remove(id);
        }
    }
}

fn wire_name(s: Serialization) -> &'static str {
    match s {
        Serialization::Cloudpickle => "cloudpickle",
        Serialization::Json => "json",
    }
}

fn log_end(what: &str, outcome: &CallOutcome) {
    match (&outcome.success, &outcome.error) {
        // Per-call boilerplate stays out of the call's `stdout` (captures take info and
        // above); a failure is said, at error.
        (true, _) => tracing::debug!(target: "runlog::python", "{what} returned"),
        (false, Some(e)) => {
            let first = e.lines().next().unwrap_or_default();
            tracing::error!(target: "runlog::python", "{what} failed: {first}");
        }
        (false, None) => tracing::error!(target: "runlog::python", "{what} failed"),
    }
}

/// Runs `fut` within `limit` (when there is one); `Err(limit)` when it ran out.
async fn with_limit<T>(
    limit: Option<Duration>,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, Duration> {
    match limit {
        Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| d),
        None => Ok(fut.await),
    }
}

/// The title of an install's section: what it installs, by kind.
fn install_title(python: &[String], system: &[String]) -> String {
    let mut title = String::from("install dependencies:");
    if !python.is_empty() {
        title.push_str(" python ");
        title.push_str(&python.join(" "));
    }
    if !system.is_empty() {
        if !python.is_empty() {
            title.push(';');
        }
        title.push_str(" system ");
        title.push_str(&system.join(" "));
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid call of a function `f`, for a test to change one field of.
    fn call_of_f() -> FunctionRequest {
        FunctionRequest {
            function_name: Some("f".into()),
            function_code: Some("def f(): pass".into()),
            ..FunctionRequest::default()
        }
    }

    /// Asserts that `req` is refused with an error that names `what`.
    fn assert_refused(req: &FunctionRequest, what: &str) {
        let err = validate(req).expect_err(what);
        assert!(err.contains(what), "{err}");
    }

    #[test]
    fn function_request_without_name_is_refused() {
        let req = FunctionRequest {
            function_name: None,
            ..call_of_f()
        };
        assert_refused(&req, "function_name");
    }

    #[test]
    fn class_request_without_class_name_is_refused() {
        let req = FunctionRequest {
            execution_type: ExecutionType::Class,
            class_code: Some("class C: pass".into()),
            ..FunctionRequest::default()
        };
        assert_refused(&req, "class_name");
    }

    #[test]
    fn timeouts_a_duration_cannot_hold_are_refused() {
        let req = |timeout| FunctionRequest {
            timeout: Some(timeout),
            ..call_of_f()
        };
        for t in [1e20, f64::MAX] {
            assert_refused(&req(t), "too large");
        }
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(validate(&req(t)).is_err(), "{t}");
        }
        assert_eq!(validate(&req(86_400.0 * 365.0)), Ok(()));
    }

    #[test]
    fn module_paths_must_stay_inside_the_module_directory() {
        let req = |path: &str| FunctionRequest {
            modules: [(path.to_owned(), String::new())].into(),
            ..call_of_f()
        };
        for ok in ["utils.py", "helpers/__init__.py", "a/b/c.py"] {
            assert_eq!(validate(&req(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/x.py",
            "../x.py",
            "a/../../x.py",
            "a//b.py",
            "./x.py",
            "a\\b.py",
            "a\nb",
        ] {
            let err = validate(&req(bad)).expect_err(bad);
            assert!(err.starts_with("modules: "), "{err}");
        }
    }

    #[test]
    fn reuse_of_a_known_instance_needs_no_code() {
        let req = FunctionRequest {
            execution_type: ExecutionType::Class,
            class_name: Some("C".into()),
            instance_id: Some("C_00000000".into()),
            create_new_instance: false,
            ..FunctionRequest::default()
        };
        assert_eq!(validate(&req), Ok(()));
    }

    #[test]
    fn failure_joins_cause_and_traceback() {
        let outcome = CallOutcome::from_done(Done {
            success: false,
            result: None,
            error: Some("ValueError: boom".into()),
            traceback: Some("Traceback (most recent call last):\nValueError: boom\n".into()),
        });
        let error = outcome.error.expect("error set");
        assert!(error.starts_with("ValueError: boom\nTraceback"), "{error}");
        assert!(!outcome.success && outcome.result.is_none());
    }
}
