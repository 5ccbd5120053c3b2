//! Test servers that run as child processes (`redis-server`, `moto_server`): finding
//! their binary, choosing their port, and waiting until a fresh one answers.
//!
//! # Ports without a race
//! These servers take a port number, not a listening socket, and some must come back
//! on the same port after a restart (their clients keep the URL), so "bind port 0 and
//! read what the child chose" does not fit them. A port found free by binding port 0
//! and releasing it is in the kernel's ephemeral range, where every outgoing
//! connection of every test process also takes its local port: between the release
//! and the child's bind, one of them could take it ("exited during start-up").
//! [`fixture_port`] chooses instead, at random, a port *below* the ephemeral range,
//! which the kernel never hands out by itself; the only possible competitor is
//! another fixture that drew the same number, and the child then reports its address
//! in use, which [`spawn_until_answering`] recognises ([`StartError::PortTaken`]) so
//! that the fixture starts again on fresh ports.

use rand::Rng;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::Stdio;
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

/// Lowest port [`fixture_port`] chooses: above the well-known and most registered
/// service ports (a developer's own Redis on 6379 is never touched).
const FIXTURE_PORTS_FROM: u16 = 20_000;

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), where
/// `bind(0)` and outgoing connections take their ports; Linux's default when the
/// setting cannot be read.
fn ephemeral_ports_from() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port for a child server: free on 127.0.0.1 now, and outside the ephemeral range,
/// so no connection of any process takes it before the child binds it (see the
/// module documentation). Another fixture may still draw the same number; the child
/// then fails with [`StartError::PortTaken`] and the caller draws again.
pub(crate) fn fixture_port() -> u16 {
    let below = ephemeral_ports_from();
    let mut rng = rand::rng();
    if below > FIXTURE_PORTS_FROM + 1_000 {
        for _ in 0..100 {
            let port = rng.random_range(FIXTURE_PORTS_FROM..below);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // No room below the ephemeral range (an unusual `ip_local_port_range`): a port
    // the kernel finds free, and start-up retries cover the rarer race.
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Why a child server did not come up.
#[derive(Debug)]
pub(crate) enum StartError {
    /// It exited reporting its address in use: start again on other ports.
    PortTaken(String),
}

/// How many times a fixture starts its child again on fresh ports after
/// [`StartError::PortTaken`] before it gives up.
pub(crate) const START_ATTEMPTS: usize = 5;

/// Runs `attempt` until it starts the child, at most [`START_ATTEMPTS`] times while
/// it finds its port taken, pausing `pause` between tries (an attempt that draws
/// fresh ports needs none; one that waits for its own port to come free does).
///
/// # Panics
/// When every attempt found the port taken: `failure`, with the last output.
pub(crate) async fn start_while_port_taken(
    failure: &str,
    pause: std::time::Duration,
    mut attempt: impl AsyncFnMut() -> Result<(), StartError>,
) {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        match attempt().await {
            Ok(()) => return,
            Err(StartError::PortTaken(output)) => last = output,
        }
        tokio::time::sleep(pause).await;
    }
    panic!("{failure}; last output:\n{last}");
}

/// Spawns `cmd` (its output going to a log read back on failure) and polls `answers`
/// every `poll` until it is true.
///
/// # Errors
/// [`StartError::PortTaken`] when the child exits reporting its address in use.
///
/// # Panics
/// When the process cannot start, exits before answering for another reason, or
/// does not answer within `deadline` — a test that needs the server must fail loudly.
pub(crate) async fn spawn_until_answering<F, Fut>(
    mut cmd: Command,
    name: &str,
    port: u16,
    deadline: Duration,
    poll: Duration,
    mut answers: F,
) -> Result<Child, StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut log = tempfile::tempfile().expect("a temp file for the child's output");
    let out = log.try_clone().expect("clone the log handle");
    let err = log.try_clone().expect("clone the log handle");
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e}",
            cmd.as_std().get_program().to_string_lossy()
        )
    });
    let give_up = Instant::now() + deadline;
    loop {
        if answers().await {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let output = read_log(&mut log);
            if output.contains("in use") {
                return Err(StartError::PortTaken(output));
            }
            panic!("{name} exited during start-up: {status}; its output:\n{output}");
        }
        assert!(
            Instant::now() < give_up,
            "{name} on port {port} did not answer within {deadline:?}; its output:\n{}",
            read_log(&mut log)
        );
        tokio::time::sleep(poll).await;
    }
}

/// What a child wrote to its log so far.
fn read_log(log: &mut File) -> String {
    let mut out = Vec::new();
    let _ = log.rewind().and_then(|()| log.read_to_end(&mut out));
    String::from_utf8_lossy(&out).into_owned()
}
