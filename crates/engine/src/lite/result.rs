//! A `/start_step` step's outputs and result, as lite-engine makes them.
//!
//! Before the step runs, the commands that save `output_vars` (or typed `outputs`)
//! are appended to its first command line (`output_commands`): each variable's
//! value at the end of the script goes, base64-encoded behind `__B64__` (so values
//! with newlines survive), to the file named by `$DRONE_OUTPUT` /
//! `$HARNESS_OUTPUT_FILE`, where a step may also write `KEY=VALUE` lines itself.
//! Variables the step writes to `$DRONE_ENV` are its exported `envs`; values in
//! `$HARNESS_OUTPUT_SECRET_FILE` are outputs of type `SECRET`.
//!
//! The result follows lite-engine's rules: outputs are read whether the step
//! succeeded or not; a step that could not run or was stopped by its time limit
//! has exit code 255 and the reason in `error` (`context deadline exceeded` for a
//! timeout); a process a signal killed has exit code `-1` (what Go's
//! `ExitError.ExitCode()` gives lite-engine for a signal, where a shell would say
//! `128 + N`); a non-zero exit is also stated in `error` in lite-engine's words
//! (`exit status -1`), or `oom killed` when the kernel's OOM killer ended a process
//! of the step.

use crate::outputs;
use crate::process::ProcessOutcome;
use base64::Engine as _;
use runlog_protocol::engine::StepResponse;
use runlog_protocol::lite::{OutputType, OutputV2};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// lite-engine's exit code of a step that failed to run (its error is the cause).
const FAILED_TO_RUN: i32 = 255;

/// lite-engine's exit code of a step whose process a signal killed.
const KILLED_BY_SIGNAL: i32 = -1;

/// What a finished `/start_step` step's result is made from.
pub(crate) struct LiteFinish {
    /// Declared typed outputs: only these are answered, with their types.
    pub outputs: Vec<OutputV2>,
    /// Declared output variables (outputs are expected when non-empty).
    pub output_vars: Vec<String>,
    /// `$DRONE_ENV`.
    pub env_file: PathBuf,
    /// `$HARNESS_OUTPUT_SECRET_FILE`.
    pub secrets_file: PathBuf,
}

/// lite-engine's form of one error (hashicorp's multierror of one).
fn one_error(message: &str) -> String {
    format!("1 error occurred:\n\t* {message}\n\n")
}

impl crate::handlers::step::FinishStep for LiteFinish {
    fn finish<'a>(
        self: Box<Self>,
        out: &'a ProcessOutcome,
        oom_killed: bool,
        outputs_file: &'a Path,
    ) -> futures_util::future::BoxFuture<'a, StepResponse> {
        Box::pin((*self).result(out, oom_killed, outputs_file))
    }
}

impl LiteFinish {
    /// The step's result from its process outcome and the files it wrote.
    pub(crate) async fn result(
        self,
        out: &ProcessOutcome,
        oom_killed: bool,
        outputs_file: &Path,
    ) -> StepResponse {
        if out.timed_out {
            return StepResponse {
                exited: true,
                exit_code: FAILED_TO_RUN,
                error: Some("context deadline exceeded".to_owned()),
                ..StepResponse::default()
            };
        }
        if let Some(error) = &out.error {
            return StepResponse {
                exited: true,
                exit_code: FAILED_TO_RUN,
                error: Some(error.clone()),
                ..StepResponse::default()
            };
        }
        let envs = read_env_file(&self.env_file).await;
        let written = read_env_file(outputs_file).await;
        let expected = !self.outputs.is_empty() || !self.output_vars.is_empty();
        let mut output_v2: Vec<OutputV2> = if self.outputs.is_empty() {
            written
                .iter()
                .map(|(k, v)| OutputV2 {
                    key: k.clone(),
                    value: v.clone(),
                    kind: Some(OutputType::String),
                })
                .collect()
        } else {
            self.outputs
                .iter()
                .filter_map(|o| {
                    written.get(&o.key).map(|v| OutputV2 {
                        key: o.key.clone(),
                        value: v.clone(),
                        kind: o.kind.clone(),
                    })
                })
                .collect()
        };
        output_v2.extend(read_env_file(&self.secrets_file).await.into_iter().map(
            |(key, value)| OutputV2 {
                key,
                value,
                kind: Some(OutputType::Secret),
            },
        ));
        let exit_code = match out.signal {
            Some(_) => KILLED_BY_SIGNAL,
            None => out.exit_code,
        };
        let mut response = StepResponse {
            exited: true,
            exit_code,
            outputs: written,
            oom_killed,
            envs,
            output_v2,
            error: None,
        };
        if oom_killed {
            response.error = Some(one_error("oom killed"));
        } else if exit_code != 0 {
            response.error = Some(one_error(&format!("exit status {exit_code}")));
        } else if expected && !tokio::fs::try_exists(outputs_file).await.unwrap_or(false) {
            response.exit_code = FAILED_TO_RUN;
            response.error = Some(format!(
                "output variables were expected but the step wrote no outputs file {}",
                outputs_file.display()
            ));
        }
        response
    }
}

/// Whether `name` can be read as `$name` by a POSIX shell.
pub(crate) fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `s` as one single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell lines appended to the step's script that save each `(key, variable)`
/// to `file`. Names are checked with [`is_shell_name`] by the caller.
pub(crate) fn output_commands(pairs: &[(String, String)], file: &Path) -> String {
    let file = quote(&file.display().to_string());
    pairs
        .iter()
        .map(|(key, var)| {
            format!(
                "\nprintf '%s=__B64__%s\\n' {} \"$(printf '%s' \"${var}\" | base64 | tr -d '\\n')\" >> {file}",
                quote(key)
            )
        })
        .collect()
}

/// Reads a `KEY=VALUE` file (missing: empty), decoding `__B64__` values.
async fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let mut vars = outputs::read(path).await;
    for value in vars.values_mut() {
        if let Some(encoded) = value.strip_prefix("__B64__") {
            match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                Ok(bytes) => *value = String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => tracing::warn!("an output value is not valid base64: {e}"),
            }
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(dir: &Path, output_vars: &[&str]) -> LiteFinish {
        LiteFinish {
            outputs: Vec::new(),
            output_vars: output_vars.iter().map(|s| (*s).to_owned()).collect(),
            env_file: dir.join("export.env"),
            secrets_file: dir.join("secrets.env"),
        }
    }

    fn ended(exit_code: i32) -> ProcessOutcome {
        ProcessOutcome {
            exit_code,
            pgid: Some(1),
            ..ProcessOutcome::default()
        }
    }

    fn killed(signal: i32) -> ProcessOutcome {
        ProcessOutcome {
            signal: Some(signal),
            ..ended(128 + signal)
        }
    }

    #[tokio::test]
    async fn results_follow_lite_engines_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outputs = dir.path().join("out.env");
        let oom = finish(dir.path(), &[])
            .result(&killed(9), true, &outputs)
            .await;
        assert_eq!(
            (oom.exit_code, oom.oom_killed, oom.error.as_deref()),
            (-1, true, Some("1 error occurred:\n\t* oom killed\n\n"))
        );
        // A shell that outlived its OOM-killed child reports the child's 137.
        let child_oom = finish(dir.path(), &[])
            .result(&ended(137), true, &outputs)
            .await;
        assert_eq!((child_oom.exit_code, child_oom.oom_killed), (137, true));
        let terminated = finish(dir.path(), &[])
            .result(&killed(15), false, &outputs)
            .await;
        assert_eq!(
            (terminated.exit_code, terminated.error.as_deref()),
            (-1, Some("1 error occurred:\n\t* exit status -1\n\n"))
        );
        // An exit with 137 is no signal: its code stays.
        let exited = finish(dir.path(), &[])
            .result(&ended(137), false, &outputs)
            .await;
        assert_eq!(exited.exit_code, 137);
        let missing = finish(dir.path(), &["X"])
            .result(&ended(0), false, &outputs)
            .await;
        assert_eq!(missing.exit_code, FAILED_TO_RUN, "{missing:?}");
        std::fs::write(&outputs, "X=1\n").expect("write");
        std::fs::write(dir.path().join("export.env"), "E=2\n").expect("write");
        let failed = finish(dir.path(), &["X"])
            .result(&ended(2), false, &outputs)
            .await;
        assert_eq!(failed.exit_code, 2);
        assert_eq!(failed.outputs.get("X").map(String::as_str), Some("1"));
        assert_eq!(failed.envs.get("E").map(String::as_str), Some("2"));
        let stopped = ProcessOutcome {
            error: Some("stopped: the stage was destroyed".to_owned()),
            ..ended(143)
        };
        let stopped = finish(dir.path(), &[])
            .result(&stopped, false, &outputs)
            .await;
        assert_eq!(stopped.exit_code, FAILED_TO_RUN);
        assert!(stopped.outputs.is_empty());
    }

    #[test]
    fn shell_names_are_checked() {
        for ok in ["A", "_x1", "FOO_BAR"] {
            assert!(is_shell_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A;rm", "$A"] {
            assert!(!is_shell_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn saved_outputs_survive_newlines_and_quotes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("it's out.env");
        let script = format!(
            "V=$(printf 'a\\nb \"c\"')\nW=plain{}",
            output_commands(
                &[
                    ("v".to_owned(), "V".to_owned()),
                    ("w".to_owned(), "W".to_owned())
                ],
                &file
            )
        );
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let vars = read_env_file(&file).await;
        assert_eq!(vars.get("v").map(String::as_str), Some("a\nb \"c\""));
        assert_eq!(vars.get("w").map(String::as_str), Some("plain"));
    }
}
