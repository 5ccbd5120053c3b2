//! Test servers that run as child processes (`redis-server`, `moto_server`): finding
//! their binary, picking a port, and waiting until a fresh one answers.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The test tool named by env var `var`, else `name` found on `PATH`.
///
/// # Panics
/// When neither exists, naming both, so the failing test says what to install.
pub(crate) fn tool_path(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: set {var} or put it on PATH (scripts/test installs it)")
        })
}

/// A port that was free on 127.0.0.1 a moment ago. Servers that take a port number
/// rather than a listening socket need one; the tiny window between release and
/// reuse is accepted in tests.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Spawns `cmd` and polls `answers` every `poll` until it is true.
///
/// # Panics
/// When the process cannot start, exits before answering, or does not answer
/// within `deadline` — a test that needs the server must fail loudly.
pub(crate) async fn spawn_until_answering<F, Fut>(
    mut cmd: Command,
    name: &str,
    port: u16,
    deadline: Duration,
    poll: Duration,
    mut answers: F,
) -> Child
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e}",
            cmd.as_std().get_program().to_string_lossy()
        )
    });
    let give_up = Instant::now() + deadline;
    loop {
        if answers().await {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited during start-up: {status}");
        }
        assert!(
            Instant::now() < give_up,
            "{name} on port {port} did not answer within {deadline:?}"
        );
        tokio::time::sleep(poll).await;
    }
}
