//! Bad input never hurts: a table of malformed requests against every endpoint of
//! the real log service and the real engine (both on 127.0.0.1), sent as raw
//! HTTP/1.1 so that nothing is cleaned up by a client library. Each must get its
//! documented 4xx with a JSON `{"error_msg": …}`, and the server must still serve
//! (and still hold exactly what valid requests stored) afterwards.
#![allow(clippy::unwrap_used)]

use flate2::Compression;
use flate2::write::GzEncoder;
use runlog_engine::{EngineConfig, EngineState};
use runlog_protocol::{ErrorBody, Scope};
use runlog_testkit::chaos::{RawResponse, parse_ndjson, raw_request, request_bytes};
use runlog_testkit::service::{TestService, test_config};
use std::io::Write as _;
use std::net::SocketAddr;

/// One malformed request and what it must get.
struct Case {
    name: &'static str,
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
    status: u16,
    /// A fragment the `error_msg` must contain (lowercase), so the message explains.
    says: &'static str,
    /// Refused by the HTTP parser before any route runs: no JSON body to expect.
    protocol_level: bool,
}

fn case(
    name: &'static str,
    method: &'static str,
    target: impl Into<String>,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: impl Into<Vec<u8>>,
    status: u16,
    says: &'static str,
) -> Case {
    Case {
        name,
        method,
        target: target.into(),
        headers,
        body: body.into(),
        status,
        says,
        protocol_level: false,
    }
}

/// A request the HTTP/1 parser itself refuses (400, connection closed): only the
/// status is checked, since no route ever sees it.
fn protocol_case(name: &'static str, request_headers: Vec<(&'static str, Vec<u8>)>) -> Case {
    Case {
        protocol_level: true,
        ..case(
            name,
            "GET",
            "/healthz",
            request_headers,
            Vec::new(),
            400,
            "",
        )
    }
}

fn bearer(token: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![("Authorization", format!("Bearer {token}").into_bytes())]
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Nested JSON arrays `depth` deep: past serde_json's recursion limit.
fn deep_array(depth: usize) -> Vec<u8> {
    let mut v = "[".repeat(depth).into_bytes();
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// A line (pos 7) whose `args` nest `depth` objects deep.
fn deep_args(depth: usize) -> Vec<u8> {
    // A new pos: a duplicate would be ignored before anyone looked at it.
    let mut s = String::from(r#"[{"pos":7,"out":"x","args":"#);
    s.push_str(&r#"{"a":"#.repeat(depth));
    s.push('1');
    s.push_str(&"}".repeat(depth));
    s.push_str("}]");
    s.into_bytes()
}

async fn send(addr: SocketAddr, c: &Case) -> RawResponse {
    let headers: Vec<(&str, &[u8])> = c.headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let req = request_bytes(c.method, &c.target, &headers, &c.body);
    raw_request(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("case {:?}: no answer: {e}", c.name))
}

/// Sends every case; collects every failure (not just the first) and checks the
/// server still answers `GET /healthz` after each.
async fn run_cases(addr: SocketAddr, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let resp = send(addr, c).await;
        let parsed = serde_json::from_slice::<ErrorBody>(&resp.body);
        if resp.status != c.status {
            failures.push(format!(
                "{}: status {} (expected {}): {}",
                c.name,
                resp.status,
                c.status,
                resp.text()
            ));
        } else if c.protocol_level {
            // Status checked above; hyper answers these without a body.
        } else if !resp
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
        {
            failures.push(format!(
                "{}: content-type {:?}, expected application/json: {}",
                c.name,
                resp.header("content-type"),
                resp.text()
            ));
        } else {
            match parsed {
                Err(e) => failures.push(format!(
                    "{}: body is not {{\"error_msg\"}} ({e}): {}",
                    c.name,
                    resp.text()
                )),
                Ok(b) if !b.error_msg.to_lowercase().contains(c.says) => failures.push(format!(
                    "{}: error_msg {:?} does not mention {:?}",
                    c.name, b.error_msg, c.says
                )),
                Ok(_) => {}
            }
        }
        // Nothing a request sends may leak back as a header (response splitting).
        if resp
            .headers
            .iter()
            .any(|(k, _)| k == "x-injected" || k == "set-cookie")
        {
            failures.push(format!(
                "{}: injected header echoed: {:?}",
                c.name, resp.headers
            ));
        }
        let health = raw_request(addr, &request_bytes("GET", "/healthz", &[], b""))
            .await
            .unwrap_or_else(|e| panic!("server stopped answering after {:?}: {e}", c.name));
        assert_eq!(health.status, 200, "unhealthy after {:?}", c.name);
    }
    failures
}

fn service_cases(w: &str, r: &str, other: &str) -> Vec<Case> {
    let q = "/stream?accountID=acc&key=k";
    let line = |s: &str| s.as_bytes().to_vec();
    // Just over `PUT /stream`'s default limit (128 MiB: lite-engine sends a second's
    // lines in one request, however many).
    let mut huge = b"[".to_vec();
    huge.extend(std::iter::repeat_n(b' ', 128 << 20));
    huge.push(b']');
    let bomb = gzip(&vec![b'\n'; 3 << 20]);
    // On the wire CR LF ends the header: the server sees a wrong token and a second
    // header, and must neither accept the token nor echo the header back.
    let mut crlf_auth = b"Bearer not-a-token".to_vec();
    crlf_auth.extend_from_slice(b"\r\nX-Injected: 1");
    vec![
        // --- PUT /stream bodies
        case(
            "append: invalid JSON",
            "PUT",
            q,
            bearer(w),
            line("[{\"pos\":0,"),
            400,
            "json",
        ),
        case(
            "append: object, not array",
            "PUT",
            q,
            bearer(w),
            line("{}"),
            400,
            "array",
        ),
        case(
            "append: empty body",
            "PUT",
            q,
            bearer(w),
            line(""),
            400,
            "array",
        ),
        case(
            "append: pos is a string",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":"0","out":"x"}]"#),
            400,
            "line 0",
        ),
        case(
            "append: missing out",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":0}]"#),
            400,
            "out",
        ),
        case(
            "append: missing pos",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"out":"x"}]"#),
            400,
            "pos",
        ),
        case(
            "append: negative pos",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":-1,"out":"x"}]"#),
            400,
            "line 0",
        ),
        case(
            "append: pos over u64",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":18446744073709551616,"out":"x"}]"#),
            400,
            "line 0",
        ),
        case(
            // A tail's next `pos` (`pos + 1`) would wrap to 0 and replay the stream
            // for ever; the Redis store's Lua scripts would round it.
            "append: pos at u64::MAX",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":18446744073709551615,"out":"x"}]"#),
            400,
            "is above the largest allowed",
        ),
        case(
            "append: pos above 2^53 - 1",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"level":"info","pos":9007199254740992,"out":"x","time":"t"}]"#),
            400,
            "is above the largest allowed",
        ),
        case(
            "append: fractional pos",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":1.5,"out":"x"}]"#),
            400,
            "line 0",
        ),
        case(
            "append: out is a number",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":0,"out":5}]"#),
            400,
            "line 0",
        ),
        case(
            "append: args is an array",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":0,"out":"x","args":[1]}]"#),
            400,
            "line 0",
        ),
        case(
            "append: level is an object",
            "PUT",
            q,
            bearer(w),
            line(r#"[{"pos":0,"out":"x","level":{}}]"#),
            400,
            "line 0",
        ),
        case(
            "append: invalid UTF-8 in out",
            "PUT",
            q,
            bearer(w),
            b"[{\"pos\":0,\"out\":\"\xff\xfe\"}]".to_vec(),
            400,
            "unicode",
        ),
        case(
            "append: NUL byte between tokens",
            "PUT",
            q,
            bearer(w),
            b"[{\"pos\":0,\0\"out\":\"x\"}]".to_vec(),
            400,
            "json",
        ),
        case(
            "append: arrays nested 100k deep",
            "PUT",
            q,
            bearer(w),
            deep_array(100_000),
            400,
            "batch",
        ),
        case(
            "append: args nested 10k deep",
            "PUT",
            q,
            bearer(w),
            deep_args(10_000),
            400,
            "line 0",
        ),
        case(
            "append: body over 128 MiB",
            "PUT",
            q,
            bearer(w),
            huge,
            413,
            "larger",
        ),
        case(
            // Without the header a `PUT` opens the stream (lite-engine writes on after a
            // failed open); a runlog writer asks for the 404 instead.
            "append: unopened stream, explicit open asked",
            "PUT",
            "/stream?accountID=acc&key=never-opened",
            {
                let mut h = bearer(w);
                h.push(("x-runlog-explicit-open", b"1".to_vec()));
                h
            },
            line(r#"[{"pos":0,"out":"x"}]"#),
            404,
            "not found",
        ),
        // --- keys and accounts
        case(
            "key: parent traversal",
            "PUT",
            "/stream?accountID=acc&key=../../etc/passwd",
            bearer(w),
            line("[]"),
            400,
            "key",
        ),
        case(
            "key: encoded traversal",
            "POST",
            "/stream?accountID=acc&key=a%2F..%2F..%2Fb",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: absolute path",
            "POST",
            "/stream?accountID=acc&key=%2Fetc%2Fpasswd",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: NUL byte",
            "POST",
            "/stream?accountID=acc&key=a%00b",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: backslash",
            "POST",
            "/stream?accountID=acc&key=a%5C..%5Cb",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: 1025 bytes",
            "POST",
            format!("/stream?accountID=acc&key={}", "k".repeat(1025)),
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: invalid UTF-8",
            "POST",
            "/stream?accountID=acc&key=%ff%fe",
            bearer(w),
            line(""),
            400,
            "invalid",
        ),
        case(
            "key: CR LF header injection",
            "POST",
            "/stream?accountID=acc&key=k%0d%0aSet-Cookie:%20x",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: given twice",
            "POST",
            "/stream?accountID=acc&key=a&key=b",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "key: missing",
            "POST",
            "/stream?accountID=acc",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "account: missing",
            "POST",
            "/stream?key=k",
            bearer(w),
            line(""),
            400,
            "accountid",
        ),
        case(
            "account: with a slash",
            "POST",
            "/stream?accountID=a%2Fb&key=k",
            bearer(w),
            line(""),
            400,
            "account",
        ),
        case(
            "account: dot-dot",
            "GET",
            "/streams?accountID=..",
            bearer(r),
            line(""),
            400,
            "account",
        ),
        // --- tokens and headers
        case("token: missing", "POST", q, vec![], line(""), 401, "token"),
        case(
            "token: not Bearer",
            "POST",
            q,
            vec![("Authorization", b"Basic YTpi".to_vec())],
            line(""),
            401,
            "bearer",
        ),
        case(
            "token: garbage",
            "POST",
            q,
            bearer("not-a-token"),
            line(""),
            401,
            "token",
        ),
        case(
            "token: invalid UTF-8 header",
            "POST",
            q,
            vec![("Authorization", b"Bearer \xff\xfe".to_vec())],
            line(""),
            401,
            "authorization",
        ),
        case(
            "token: CR LF injection in Authorization",
            "POST",
            q,
            vec![("Authorization", crlf_auth)],
            line(""),
            401,
            "token",
        ),
        case(
            "token: other account",
            "POST",
            q,
            bearer(other),
            line(""),
            403,
            "another account",
        ),
        case(
            "token: read scope writes",
            "PUT",
            q,
            bearer(r),
            line("[]"),
            403,
            "scope",
        ),
        // --- GET /stream, DELETE /stream
        case(
            "tail: Last-Event-ID not a number",
            "GET",
            q,
            {
                let mut h = bearer(r);
                h.push(("Last-Event-ID", b"abc".to_vec()));
                h
            },
            line(""),
            400,
            "last-event-id",
        ),
        case(
            "tail: negative Last-Event-ID",
            "GET",
            q,
            {
                let mut h = bearer(r);
                h.push(("Last-Event-ID", b"-5".to_vec()));
                h
            },
            line(""),
            400,
            "last-event-id",
        ),
        case(
            "tail: unknown stream",
            "GET",
            "/stream?accountID=acc&key=nope",
            bearer(r),
            line(""),
            404,
            "not found",
        ),
        case(
            "close: unknown stream",
            "DELETE",
            "/stream?accountID=acc&key=nope",
            bearer(w),
            line(""),
            404,
            "not found",
        ),
        case(
            "close: snapshot is not a bool",
            "DELETE",
            "/stream?accountID=acc&key=k&snapshot=maybe",
            bearer(w),
            line(""),
            400,
            "snapshot",
        ),
        // --- archives
        case(
            "blob: row is not an object",
            "POST",
            "/blob?accountID=acc&key=k",
            bearer(w),
            line("{\"pos\":0}\n[1]\n"),
            400,
            "line 2",
        ),
        case(
            "blob: invalid UTF-8 row",
            "POST",
            "/blob?accountID=acc&key=k",
            bearer(w),
            b"{\"out\":\"\xff\"}\n".to_vec(),
            400,
            "line 1",
        ),
        case(
            "blob: gzip header, not gzip",
            "POST",
            "/blob?accountID=acc&key=k",
            {
                let mut h = bearer(w);
                h.push(("Content-Encoding", b"gzip".to_vec()));
                h
            },
            line("{\"pos\":0}\n"),
            400,
            "gzip",
        ),
        case(
            "blob: gzip bomb over the archive limit",
            "POST",
            "/blob?accountID=acc&key=k",
            {
                let mut h = bearer(w);
                h.push(("Content-Encoding", b"gzip".to_vec()));
                h
            },
            bomb,
            413,
            "decompresses",
        ),
        case(
            "blob: missing archive",
            "GET",
            "/blob?accountID=acc&key=nope",
            bearer(r),
            line(""),
            404,
            "not found",
        ),
        case(
            "link: traversal key",
            "POST",
            "/blob/link/upload?accountID=acc&key=..",
            bearer(w),
            line(""),
            400,
            "key",
        ),
        case(
            "signed upload: no signature",
            "PUT",
            "/blob/upload?accountID=acc&key=k&expires=99999999999",
            vec![],
            line("{\"pos\":0}\n"),
            400,
            "upload link",
        ),
        case(
            "signed upload: forged signature",
            "PUT",
            "/blob/upload?accountID=acc&key=k&expires=99999999999&n=x&sig=AAAA",
            vec![],
            line("{\"pos\":0}\n"),
            401,
            "upload link",
        ),
        case(
            "signed upload: expiry not a number",
            "PUT",
            "/blob/upload?accountID=acc&key=k&expires=soon&sig=AAAA",
            vec![],
            line("{\"pos\":0}\n"),
            400,
            "upload link",
        ),
        // --- tokens, routes
        case(
            "token: minted without admin",
            "POST",
            "/token?accountID=acc",
            bearer(w),
            line("{}"),
            403,
            "admin",
        ),
        case(
            "streams: missing account",
            "GET",
            "/streams",
            bearer(r),
            line(""),
            400,
            "accountid",
        ),
        case(
            "route: unknown",
            "GET",
            "/definitely/not/here",
            vec![],
            line(""),
            404,
            "no such route",
        ),
        case(
            "route: method not allowed",
            "PATCH",
            q,
            bearer(w),
            line(""),
            405,
            "method",
        ),
        protocol_case(
            "header: bare CR inside a value",
            vec![("X-Note", b"a\rX-Injected: 1".to_vec())],
        ),
        protocol_case(
            "header: NUL inside a value",
            vec![("X-Note", b"a\0b".to_vec())],
        ),
        protocol_case(
            "header: name with spaces",
            vec![("X-Injected no colon", b"".to_vec())],
        ),
    ]
}

fn admin_cases(admin: &str) -> Vec<Case> {
    let line = |s: &str| s.as_bytes().to_vec();
    vec![
        case(
            "token: invalid JSON body",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line("{\"scope\":"),
            400,
            "token request",
        ),
        case(
            "token: unknown scope",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line(r#"{"scope":"root"}"#),
            400,
            "token request",
        ),
        case(
            "token: unparsable ttl",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line(r#"{"ttl":"forever"}"#),
            400,
            "ttl",
        ),
        case(
            // Its expiry could not be written out (past year 9999): was a panic.
            "token: ttl of ten thousand years",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line(r#"{"ttl":"10000y"}"#),
            400,
            "at most",
        ),
        case(
            // Past what the clock can add: was a panic.
            "token: ttl past the end of time",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line(r#"{"ttl":"500000000000y"}"#),
            400,
            "at most",
        ),
        case(
            "token: ttl of the wrong type",
            "POST",
            "/token?accountID=acc",
            bearer(admin),
            line(r#"{"ttl":5}"#),
            400,
            "token request",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_refuses_every_malformed_request_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // Small enough that the gzip bomb row goes over it.
    cfg.max_archive_bytes = 1 << 20;
    let svc = TestService::start_with(cfg).await;
    let (w, r) = (
        svc.token("acc", Scope::Write),
        svc.token("acc", Scope::Read),
    );
    let other = svc.token("other", Scope::Write);
    let addr = svc.addr();

    // A stream with known content, to prove afterwards that nothing corrupted it.
    let ok = |m: &'static str, t: &'static str, b: &'static str| expect_ok(addr, &w, m, t, b);
    ok("POST", "/stream?accountID=acc&key=k", "").await;
    ok(
        "PUT",
        "/stream?accountID=acc&key=k",
        r#"[{"pos":0,"out":"a\n"},{"pos":1,"out":"b\n"}]"#,
    )
    .await;

    let mut cases = service_cases(&w, &r, &other);
    cases.extend(admin_cases(&svc.admin_token()));
    assert!(cases.len() >= 40, "the corpus shrank to {}", cases.len());
    let failures = run_cases(addr, &cases).await;

    // Still serving, and the stream holds exactly the valid lines.
    ok(
        "PUT",
        "/stream?accountID=acc&key=k",
        r#"[{"pos":2,"out":"c\n"}]"#,
    )
    .await;
    ok("DELETE", "/stream?accountID=acc&key=k&snapshot=true", "").await;
    let get = request_bytes(
        "GET",
        "/blob?accountID=acc&key=k",
        &[("Authorization", format!("Bearer {r}").as_bytes())],
        b"",
    );
    let archive = raw_request(addr, &get).await.unwrap();
    assert_eq!(archive.status, 200, "{}", archive.text());
    let lines = parse_ndjson(&archive.body).unwrap();
    let got: Vec<(u64, &str)> = lines.iter().map(|l| (l.pos, l.out.as_str())).collect();
    assert_eq!(got, vec![(0, "a\n"), (1, "b\n"), (2, "c\n")]);
    // No file was written outside the data directory's own tree.
    assert!(!dir.path().join("..").join("etc").join("passwd").exists());

    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    svc.shutdown().await;
}

/// Sends a request that must succeed.
async fn expect_ok(addr: SocketAddr, token: &str, method: &str, target: &str, body: &str) {
    let auth = format!("Bearer {token}");
    let req = request_bytes(
        method,
        target,
        &[("Authorization", auth.as_bytes())],
        body.as_bytes(),
    );
    let resp = raw_request(addr, &req).await.unwrap();
    assert_eq!(resp.status, 200, "{method} {target}: {}", resp.text());
}

/// The engine on `127.0.0.1:0` with its function routes, in a temp data dir.
async fn start_engine(dir: &std::path::Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = EngineConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        ..EngineConfig::default()
    };
    let listener = runlog_engine::bind(&config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runlog_engine::serve(
        listener,
        EngineState::new(config),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn json(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn engine_cases_before_setup() -> Vec<Case> {
    vec![
        case(
            "step: no stage yet",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s1","command":"true"}"#),
            409,
            "setup",
        ),
        case(
            "poll: no stage yet",
            "POST",
            "/poll_step",
            vec![],
            json(r#"{"id":"s1"}"#),
            400,
            "no step",
        ),
    ]
}

fn engine_setup_cases() -> Vec<Case> {
    let mut huge = br#"{"envs":{"A":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 33 << 20));
    huge.extend_from_slice(br#""}}"#);
    vec![
        case(
            "setup: invalid JSON",
            "POST",
            "/setup",
            vec![],
            json(r#"{"envs":"#),
            400,
            "json",
        ),
        case(
            "setup: envs is a list",
            "POST",
            "/setup",
            vec![],
            json(r#"{"envs":["A=1"]}"#),
            400,
            "json",
        ),
        case(
            "setup: secrets is a string",
            "POST",
            "/setup",
            vec![],
            json(r#"{"secrets":"s3cr3t"}"#),
            400,
            "json",
        ),
        case(
            "setup: file escapes with ..",
            "POST",
            "/setup",
            vec![],
            json(r#"{"files":[{"path":"../../escape","data":"x"}]}"#),
            400,
            "inside the workspace",
        ),
        case(
            "setup: absolute file path",
            "POST",
            "/setup",
            vec![],
            json(r#"{"files":[{"path":"/tmp/runlog-escape","data":"x"}]}"#),
            400,
            "inside the workspace",
        ),
        case(
            "setup: NUL in file path",
            "POST",
            "/setup",
            vec![],
            json(r#"{"files":[{"path":"a\u0000b","data":"x"}]}"#),
            400,
            "path",
        ),
        case(
            "setup: working dir escapes",
            "POST",
            "/setup",
            vec![],
            json(r#"{"working_dir":"../.."}"#),
            400,
            "inside the workspace",
        ),
        case(
            "setup: engine log key traversal",
            "POST",
            "/setup",
            vec![],
            json(r#"{"le_log_key":"../x"}"#),
            400,
            "le_log_key",
        ),
        case(
            "setup: nested 100k deep",
            "POST",
            "/setup",
            vec![],
            deep_array(100_000),
            400,
            "json",
        ),
        case(
            "setup: invalid UTF-8",
            "POST",
            "/setup",
            vec![],
            b"{\"envs\":{\"A\":\"\xff\"}}".to_vec(),
            400,
            "json",
        ),
        case(
            "setup: body over 32 MiB",
            "POST",
            "/setup",
            vec![],
            huge,
            413,
            "too large",
        ),
    ]
}

fn engine_step_cases() -> Vec<Case> {
    vec![
        case(
            "step: neither command nor script",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2"}"#),
            400,
            "command or a script",
        ),
        case(
            "step: both command and script",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":"true","script":"true"}"#),
            400,
            "not both",
        ),
        case(
            "step: empty id",
            "POST",
            "/step",
            vec![],
            json(r#"{"command":"true"}"#),
            400,
            "step id",
        ),
        case(
            "step: path-like id",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"../s","command":"true"}"#),
            400,
            "step id",
        ),
        case(
            "step: id with slash",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"a/b","command":"true"}"#),
            400,
            "step id",
        ),
        case(
            "step: id over 128 bytes",
            "POST",
            "/step",
            vec![],
            json(&format!(
                r#"{{"id":"{}","command":"true"}}"#,
                "i".repeat(129)
            )),
            400,
            "step id",
        ),
        case(
            "step: command is a number",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":5}"#),
            400,
            "json",
        ),
        case(
            "step: empty argv",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":[]}"#),
            400,
            "program",
        ),
        case(
            "step: negative timeout",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":"true","timeout":-1}"#),
            400,
            "json",
        ),
        case(
            "step: timeout over u64",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":"true","timeout":18446744073709551616}"#),
            400,
            "json",
        ),
        case(
            "step: log key absolute",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":"true","log_key":"/etc/passwd"}"#),
            400,
            "log_key",
        ),
        case(
            "step: working dir escapes",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","command":"true","working_dir":"../../.."}"#),
            400,
            "inside the workspace",
        ),
        case(
            "step: empty shell",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"s2","script":"true","shell":""}"#),
            400,
            "shell",
        ),
        case(
            "step: duplicate id",
            "POST",
            "/step",
            vec![],
            json(r#"{"id":"first","command":"true"}"#),
            409,
            "already exists",
        ),
        case(
            "setup: second setup",
            "POST",
            "/setup",
            vec![],
            json("{}"),
            409,
            "already set up",
        ),
        case(
            "poll: unknown step",
            "POST",
            "/poll_step",
            vec![],
            json(r#"{"id":"nope"}"#),
            400,
            "no step",
        ),
        case(
            "poll: invalid id",
            "POST",
            "/poll_step",
            vec![],
            json(r#"{"id":"../x"}"#),
            400,
            "step id",
        ),
        case(
            "execute: invalid JSON",
            "POST",
            "/execute",
            vec![],
            json(r#"{"function_name":"#),
            400,
            "malformed json",
        ),
        case(
            "execute: args is an object",
            "POST",
            "/execute",
            vec![],
            json(r#"{"function_name":"f","function_code":"def f(): pass","args":{}}"#),
            400,
            "malformed json",
        ),
        case(
            // Beyond what a `Duration` holds: was a panic (500) after the install.
            "execute: timeout too large",
            "POST",
            "/execute",
            vec![],
            json(
                r#"{"function_name":"f","function_code":"def f(): pass","serialization":"json","timeout":1e20}"#,
            ),
            400,
            "too large",
        ),
        case(
            "runsync: not an object",
            "POST",
            "/runsync",
            vec![],
            json("[1,2]"),
            400,
            "malformed json",
        ),
        case(
            "route: unknown",
            "POST",
            "/nope",
            vec![],
            json("{}"),
            404,
            "no such endpoint",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_refuses_every_malformed_request_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop) = start_engine(dir.path()).await;
    let mut failures = run_cases(addr, &engine_cases_before_setup()).await;
    failures.extend(run_cases(addr, &engine_setup_cases()).await);
    assert!(
        !std::path::Path::new("/tmp/runlog-escape").exists(),
        "setup wrote outside the workspace"
    );

    let setup = request_bytes("POST", "/setup", &[], br#"{"envs":{"A":"1"}}"#);
    let resp = raw_request(addr, &setup).await.unwrap();
    assert_eq!(
        resp.status,
        200,
        "valid setup after bad ones: {}",
        resp.text()
    );
    let first = request_bytes("POST", "/step", &[], br#"{"id":"first","command":"true"}"#);
    let resp = raw_request(addr, &first).await.unwrap();
    assert_eq!(resp.status, 200, "valid step: {}", resp.text());
    let cases = engine_step_cases();
    failures.extend(run_cases(addr, &cases).await);

    // Still working: a valid step runs and answers its exit code.
    let last = request_bytes(
        "POST",
        "/step",
        &[],
        br#"{"id":"last","command":["sh","-c","exit 3"]}"#,
    );
    let resp = raw_request(addr, &last).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(answer["exit_code"], 3, "{answer}");
    let destroy = raw_request(addr, &request_bytes("POST", "/destroy", &[], b"{}"))
        .await
        .unwrap();
    assert_eq!(destroy.status, 200, "{}", destroy.text());
    let _ = stop.send(());

    let total = 2 + engine_setup_cases().len() + cases.len();
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_answers_a_wrong_method_with_a_json_405() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop) = start_engine(dir.path()).await;
    let cases = [case(
        "route: wrong method",
        "GET",
        "/setup",
        vec![],
        json(""),
        405,
        "method",
    )];
    let failures = run_cases(addr, &cases).await;
    let _ = stop.send(());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
