//! Tools for the reliability and security suites: a raw HTTP/1.1 client (to send
//! what well-behaved clients refuse to: CR/LF in headers, invalid UTF-8 in the
//! request line, broken bodies), exactly-once checks over received lines, and
//! process probes (resident memory, open file descriptors) for soak tests.
//!
//! ```no_run
//! # async fn t(addr: std::net::SocketAddr) {
//! use runlog_testkit::chaos::{raw_request, request_bytes};
//! let req = request_bytes("GET", "/healthz", &[], b"");
//! let resp = raw_request(addr, &req).await.expect("an answer");
//! assert_eq!(resp.status, 200);
//! # }
//! ```

use runlog_protocol::LogLine;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a raw request may take before it counts as a hung server.
pub const RAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Bytes of an HTTP/1.1 request: `method target`, `Host`, `Connection: close`,
/// `Content-Length` (when there is a body), then `headers` verbatim — a value may
/// hold CR/LF on purpose.
pub fn request_bytes(
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends `request` (raw bytes) on a new connection and reads the whole answer.
///
/// A server may answer before it has read a huge body and close the connection;
/// a write error is then ignored and the answer read as usual.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    tokio::time::timeout(RAW_REQUEST_TIMEOUT, async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let (mut rd, mut wr) = conn.split();
        let write = async {
            let _ = wr.write_all(request).await;
            let _ = wr.flush().await;
        };
        let mut buf = Vec::new();
        let read = rd.read_to_end(&mut buf);
        let ((), read) = tokio::join!(write, read);
        // A reset after a complete answer (server closed while we still wrote) is fine.
        if let Err(e) = read
            && buf.is_empty()
        {
            return Err(e);
        }
        parse_response(&buf)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30 s"))?
}

fn parse_response(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the answer"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("non-UTF-8 answer head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body).ok_or_else(|| bad("broken chunked body"))?
    } else {
        raw_body.to_vec()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Checks that `lines` hold every `pos` from 0 to `expected.len() - 1` exactly once,
/// in order, each with the text `expected[pos]`. Returns a description of the first
/// difference.
pub fn check_exactly_once_in_order(lines: &[LogLine], expected: &[String]) -> Result<(), String> {
    for (i, line) in lines.iter().enumerate() {
        let want = i as u64;
        if line.pos != want {
            return Err(format!(
                "line {i} has pos {} (expected {want}): lost, duplicated or reordered",
                line.pos
            ));
        }
        let Some(text) = expected.get(i) else {
            return Err(format!(
                "{} lines received, {} expected",
                lines.len(),
                expected.len()
            ));
        };
        if &line.out != text {
            return Err(format!(
                "pos {want}: text {:?}, expected {text:?}",
                line.out
            ));
        }
    }
    if lines.len() != expected.len() {
        return Err(format!(
            "{} lines received, {} expected (the last {} are missing)",
            lines.len(),
            expected.len(),
            expected.len().saturating_sub(lines.len())
        ));
    }
    Ok(())
}

/// Parses NDJSON rows (an archive) into lines; rows that are not lines are an error.
pub fn parse_ndjson(data: &[u8]) -> Result<Vec<LogLine>, String> {
    data.split(|b| *b == b'\n')
        .filter(|row| !row.iter().all(u8::is_ascii_whitespace))
        .map(|row| {
            serde_json::from_slice::<LogLine>(row).map_err(|e| {
                format!(
                    "archive row is not a line ({e}): {}",
                    String::from_utf8_lossy(row)
                )
            })
        })
        .collect()
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc status"))
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A child process (e.g. the `runlog` binary) whose stdout and stderr are collected
/// line by line, so a test can wait for a line (an event) and search everything
/// the process printed. Killed with SIGKILL when dropped.
pub struct Watched {
    child: std::process::Child,
    lines: std::sync::Arc<(std::sync::Mutex<Vec<String>>, std::sync::Condvar)>,
    /// Pipes whose reader reached end of file (signalled on `lines`' condvar).
    closed_pipes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// stdout and stderr.
const PIPES: usize = 2;

impl Watched {
    /// Spawns `cmd` with piped stdout and stderr.
    pub fn spawn(mut cmd: std::process::Command) -> std::io::Result<Watched> {
        use std::io::BufRead as _;
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let lines =
            std::sync::Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
        let out: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(
                child
                    .stdout
                    .take()
                    .ok_or_else(|| std::io::Error::other("no stdout"))?,
            ),
            Box::new(
                child
                    .stderr
                    .take()
                    .ok_or_else(|| std::io::Error::other("no stderr"))?,
            ),
        ];
        let closed_pipes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for pipe in out {
            let lines = lines.clone();
            let closed_pipes = closed_pipes.clone();
            std::thread::spawn(move || {
                let (buf, cv) = &*lines;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    buf.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                    cv.notify_all();
                }
                // Counted under the lock, so a waiter cannot miss the notification.
                let _guard = buf.lock().unwrap_or_else(|p| p.into_inner());
                closed_pipes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                cv.notify_all();
            });
        }
        Ok(Watched {
            child,
            lines,
            closed_pipes,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (blocking, up to `timeout`) for a printed line that `pred` accepts; returns it.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        let (buf, cv) = &*self.lines;
        let mut guard = buf.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(l) = guard.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            guard = cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Everything printed so far, one line each.
    pub fn output(&self) -> String {
        let (buf, _) = &*self.lines;
        buf.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Waits up to `timeout` for the process to exit by itself; its status, if it did.
    /// Once it has, [`Watched::output`] holds everything it printed: this also waits
    /// (within `timeout`) for both pipes to be read to their end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.wait_pipes_closed(deadline);
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until both pipe readers reached end of file, or `deadline` (a process
    /// that left a child holding the pipes open never closes them).
    fn wait_pipes_closed(&self, deadline: std::time::Instant) {
        let (buf, cv) = &*self.lines;
        let mut guard = buf.lock().unwrap_or_else(|p| p.into_inner());
        while self.closed_pipes.load(std::sync::atomic::Ordering::SeqCst) < PIPES {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return;
            };
            guard = cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `http://127.0.0.1:PORT` address in a line such as
/// `… engine listening on http://127.0.0.1:41234`.
pub fn loopback_url_in(line: &str) -> Option<String> {
    let at = line.find("http://127.0.0.1:")?;
    let rest = &line[at..];
    let end = rest[17..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(rest.len(), |i| 17 + i);
    Some(rest[..end].to_owned())
}

/// A free loopback port, for a server that must come back on the same address
/// after a restart (a client was configured with it): below the kernel's ephemeral
/// range, so no outgoing connection takes it between this call and the server's
/// bind, nor while the server is down (see `child.rs`).
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(crate::child::fixture_port())
}

/// How to start the `runlog` binary's servers as child processes (tests pass
/// `env!("CARGO_BIN_EXE_runlog")`): the only way to SIGKILL or SIGSTOP one.
#[derive(Debug, Clone)]
pub struct RunlogBinary {
    /// Path of the `runlog` executable.
    pub path: std::path::PathBuf,
}

impl RunlogBinary {
    /// The binary at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        RunlogBinary { path: path.into() }
    }

    /// `runlog service` on `127.0.0.1:port` over `data_dir` with `secret` (and Redis
    /// streams when `redis` is given); returns once it listens.
    pub fn service(
        &self,
        port: u16,
        data_dir: &std::path::Path,
        secret: &str,
        redis: Option<&str>,
    ) -> Watched {
        let extra: Vec<String> = redis
            .map(|u| vec!["--redis".to_owned(), u.to_owned()])
            .unwrap_or_default();
        self.service_with(port, data_dir, secret, &extra)
    }

    /// [`RunlogBinary::service`] with extra flags (e.g. `--closed-retention 10s`).
    pub fn service_with(
        &self,
        port: u16,
        data_dir: &std::path::Path,
        secret: &str,
        extra: &[String],
    ) -> Watched {
        // A fixed port can be taken meanwhile by another socket's ephemeral port (a
        // busy test machine opens thousands); such a bind failure is retried briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut cmd = std::process::Command::new(&self.path);
            cmd.arg("service")
                .arg("--addr")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--admin-secret")
                .arg(secret);
            cmd.args(extra);
            let mut svc = Watched::spawn(cmd).expect("spawn runlog service");
            loop {
                if svc
                    .wait_for_line(Duration::from_millis(200), |l| l.contains("listening"))
                    .is_some()
                {
                    return svc;
                }
                if svc.wait_exit(Duration::ZERO).is_some() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "runlog service did not start within 60 s:\n{}",
                    svc.output()
                );
            }
            let out = svc.output();
            assert!(
                out.contains("in use") && std::time::Instant::now() < deadline,
                "runlog service exited at start:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `runlog engine` on `127.0.0.1:0` over `data_dir`, through `sh` so that `limits`
    /// (shell commands such as `ulimit -f 2048`) apply to it; returns it and its URL.
    pub fn engine_with(&self, data_dir: &std::path::Path, limits: &str) -> (Watched, String) {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{limits}\nexec \"$0\" engine --addr 127.0.0.1:0 --data-dir \"$1\" --close-deadline 20s"))
            .arg(&self.path)
            .arg(data_dir);
        let engine = Watched::spawn(cmd).expect("spawn runlog engine");
        let line = engine
            .wait_for_line(Duration::from_secs(60), |l| {
                l.contains("listening on http://127.0.0.1:")
            })
            .unwrap_or_else(|| panic!("runlog engine did not start:\n{}", engine.output()));
        let url = loopback_url_in(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
        (engine, url)
    }

    /// `runlog engine` on `127.0.0.1:0` over `data_dir`.
    pub fn engine(&self, data_dir: &std::path::Path) -> (Watched, String) {
        self.engine_with(data_dir, ":")
    }
}

/// Lines of a stream as a reader sees them through `GET /stream` (SSE), read until
/// the stream's `eof`; fails on an `error` event or after `timeout`.
pub async fn sse_lines(
    base: &str,
    account: &str,
    key: &str,
    token: &str,
    timeout: Duration,
) -> Result<Vec<LogLine>, String> {
    let resp = tokio::time::timeout(
        timeout,
        reqwest::Client::new()
            .get(format!("{base}/stream?accountID={account}&key={key}"))
            .bearer_auth(token)
            .send(),
    )
    .await
    .map_err(|_| "GET /stream did not answer".to_owned())?
    .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("GET /stream answered {}", resp.status()));
    }
    let text = tokio::time::timeout(timeout, resp.text())
        .await
        .map_err(|_| format!("the SSE stream of {key} did not end within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    let mut event = "message";
    for row in text.lines() {
        if let Some(name) = row.strip_prefix("event: ") {
            event = if name == "error" { "error" } else { "other" };
        } else if let Some(data) = row.strip_prefix("data: ") {
            match event {
                "error" => return Err(format!("SSE error event: {data}")),
                "message" => lines.push(
                    serde_json::from_str::<LogLine>(data)
                        .map_err(|e| format!("SSE data is not a line ({e}): {data}"))?,
                ),
                _ => {}
            }
        } else if row.is_empty() {
            event = "message";
        }
    }
    Ok(lines)
}

/// Lines of a stream's archive (`GET /blob`).
pub async fn archive_lines(
    base: &str,
    account: &str,
    key: &str,
    token: &str,
) -> Result<Vec<LogLine>, String> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/blob?accountID={account}&key={key}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("GET /blob of {key} answered {}", resp.status()));
    }
    parse_ndjson(&resp.bytes().await.map_err(|e| e.to_string())?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunked_answers_are_joined() {
        let r = parse_response(
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn exactly_once_check_names_the_first_difference() {
        let l = |pos, out: &str| LogLine::new("info", pos, out);
        let want = vec!["a".to_owned(), "b".to_owned()];
        assert!(check_exactly_once_in_order(&[l(0, "a"), l(1, "b")], &want).is_ok());
        assert!(check_exactly_once_in_order(&[l(0, "a"), l(0, "a"), l(1, "b")], &want).is_err());
        assert!(check_exactly_once_in_order(&[l(0, "a")], &want).is_err());
        assert!(check_exactly_once_in_order(&[l(0, "a"), l(1, "x")], &want).is_err());
    }

    #[test]
    fn loopback_url_is_found_in_a_log_line() {
        assert_eq!(
            loopback_url_in("2026 | INFO | engine listening on http://127.0.0.1:4123 now")
                .as_deref(),
            Some("http://127.0.0.1:4123")
        );
        assert_eq!(loopback_url_in("no address"), None);
    }

    #[test]
    fn watched_process_lines_are_awaited_and_kept() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; exec sleep 30"]);
        let mut p = Watched::spawn(cmd).unwrap();
        assert_eq!(
            p.wait_for_line(Duration::from_secs(10), |l| l == "two")
                .as_deref(),
            Some("two")
        );
        // stdout and stderr are read by separate threads: "one" may land after "two".
        assert_eq!(
            p.wait_for_line(Duration::from_secs(10), |l| l == "one")
                .as_deref(),
            Some("one")
        );
        let output = p.output();
        assert!(output.contains("one") && output.contains("two"), "{output}");
        p.kill();
        assert!(p.wait_exit(Duration::from_secs(5)).is_some());
    }

    #[test]
    fn own_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(open_fds(me).unwrap() >= 3);
    }
}
