//! Security promises, checked against the real servers on 127.0.0.1: secrets never
//! leave the engine unmasked (in any stream, archive, response, error or the engine's
//! own log), tokens and upload links grant exactly what they say, and the engine
//! will not listen beyond loopback without a token.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use runlog_protocol::{AccountId, Scope};
use runlog_service::auth::{Claims, sign_claims};
use runlog_testkit::chaos::{Watched, loopback_url_in, parse_ndjson};
use runlog_testkit::service::{TestService, test_config};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SETUP_SECRET: &str = "s3cr3t-SETUP-value-1f9a";
const STEP_SECRET: &str = "st3p-ONLY-value-77c2";
const MASK: &str = livelog::mask::MASK;

/// The `runlog engine` binary on 127.0.0.1:0, with its console log collected.
fn start_engine(data_dir: &std::path::Path, token: Option<&str>) -> (Watched, String) {
    start_engine_with(data_dir, token, |_| {})
}

/// [`start_engine`] with `more` flags or environment for the engine process.
fn start_engine_with(
    data_dir: &std::path::Path,
    token: Option<&str>,
    more: impl FnOnce(&mut Command),
) -> (Watched, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.arg("engine")
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--close-deadline")
        .arg("10s");
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    more(&mut cmd);
    let engine = Watched::spawn(cmd).expect("spawn runlog engine");
    let line = engine
        .wait_for_line(Duration::from_secs(60), |l| {
            l.contains("listening on http://127.0.0.1:")
        })
        .unwrap_or_else(|| panic!("engine did not start:\n{}", engine.output()));
    let url = loopback_url_in(&line).expect("engine address");
    (engine, url)
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> (u16, String) {
    let resp = http.post(url).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Everything a reader can get for `key`: the SSE replay and the archive.
async fn stream_and_archive(svc: &TestService, token: &str, key: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let q = format!("accountID=acc&key={key}");
    let sse = tokio::time::timeout(
        Duration::from_secs(30),
        http.get(format!("{}/stream?{q}", svc.url()))
            .bearer_auth(token)
            .send(),
    )
    .await
    .expect("tail answers")
    .unwrap();
    assert_eq!(sse.status(), 200, "tail of {key}");
    let sse = tokio::time::timeout(Duration::from_secs(30), sse.text())
        .await
        .expect("a closed stream's tail ends")
        .unwrap();
    let blob = http
        .get(format!("{}/blob?{q}", svc.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200, "archive of {key}");
    (sse, blob.text().await.unwrap())
}

/// Every form of `secret` a careless sink could show.
fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ]
}

fn assert_clean(place: &str, text: &str) {
    for secret in [SETUP_SECRET, STEP_SECRET] {
        for form in forms(secret) {
            assert!(
                !text.contains(&form),
                "{place} shows {form:?} (a form of a secret):\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_never_appears_in_stream_archive_responses_or_engine_log() {
    let svc = TestService::start().await;
    let w = svc.token("acc", Scope::Write);
    let r = svc.token("acc", Scope::Read);
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, url) = start_engine(dir.path(), None);
    let http = reqwest::Client::new();

    let (status, setup) = post(
        &http,
        &format!("{url}/setup"),
        json!({
            "le_log_key": "engine/log",
            "log_config": {"url": svc.url(), "account_id": "acc", "token": w, "indirect_upload": true},
            "envs": {"SETUP_SECRET": SETUP_SECRET},
            "secrets": [SETUP_SECRET],
        }),
    )
    .await;
    assert_eq!(status, 200, "{setup}");
    // The secrets reach the step through its environment only, so that the command
    // line (which the engine logs) holds none; the step prints them every way.
    // (Outputs written to $RUNLOG_OUTPUT are an explicit export to the controller and
    // are answered verbatim, so the script exports no secret there.)
    let script = r#"
echo "plain: $SETUP_SECRET and $STEP_SECRET"
printf '%s' "$SETUP_SECRET" | base64
printf '%s' "$STEP_SECRET" | base64
printf 'split: %.6s' "$SETUP_SECRET"; sleep 0.3; printf '%s\n' "${SETUP_SECRET#??????}"
printf 'split: %.5s' "$STEP_SECRET"; sleep 0.3; printf '%s\n' "${STEP_SECRET#?????}"
printf 'split around stderr: %.5s' "$STEP_SECRET"; sleep 0.3; echo "a stderr line between the halves" >&2; sleep 0.3; printf '%s\n' "${STEP_SECRET#?????}"
echo "to stderr: $STEP_SECRET" >&2
echo "RESULT=done" >> "$RUNLOG_OUTPUT"
exit 4
"#;
    let (status, step) = post(
        &http,
        &format!("{url}/step"),
        json!({
            "id": "leaky",
            "script": script,
            "log_key": "steps/leaky",
            "envs": {"STEP_SECRET": STEP_SECRET},
            "secrets": [STEP_SECRET],
        }),
    )
    .await;
    assert_eq!(status, 200, "{step}");
    let step_json: Value = serde_json::from_str(&step).unwrap();
    assert_eq!(step_json["exit_code"], 4, "{step}");
    assert_clean("the /step answer", &step);
    let (status, poll) = post(&http, &format!("{url}/poll_step"), json!({"id": "leaky"})).await;
    assert_eq!(status, 200, "{poll}");
    assert_clean("the /poll_step answer", &poll);
    let (status, destroy) = post(&http, &format!("{url}/destroy"), json!({})).await;
    assert_eq!(status, 200, "{destroy}");
    assert_clean("the /destroy answer", &destroy);

    let (sse, archive) = stream_and_archive(&svc, &r, "steps/leaky").await;
    assert_clean("the step's live stream", &sse);
    assert_clean("the step's archive", &archive);
    let lines = parse_ndjson(archive.as_bytes()).unwrap();
    let masked = lines.iter().filter(|l| l.out.contains(MASK)).count();
    // plain (2 secrets on one line), 2 base64 lines, 3 split lines, stderr line.
    assert!(
        masked >= 7,
        "the step printed its secrets, so masks must show ({masked} lines masked):\n{archive}"
    );
    // A line of the other pipe between a secret's halves never leaves either half
    // unmasked on a line of its own.
    let rest = &STEP_SECRET[5..];
    assert!(
        !archive.contains(rest) && !sse.contains(rest),
        "the second half of a split secret shows:\n{archive}"
    );
    let (sse, archive) = stream_and_archive(&svc, &r, "engine/log").await;
    assert_clean("the engine's live log stream", &sse);
    assert_clean("the engine's log archive", &archive);
    assert!(
        archive.contains("leaky"),
        "the engine log stream should mention the step:\n{archive}"
    );

    engine.kill();
    assert_clean("the engine's console log", &engine.output());
    // Nothing left on disk shows them either (spools, outbox).
    for entry in walk(dir.path()) {
        if let Ok(text) = std::fs::read_to_string(&entry) {
            assert_clean(&format!("file {}", entry.display()), &text);
        }
    }
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_in_a_step_command_is_masked_in_errors_and_engine_log() {
    let svc = TestService::start().await;
    let w = svc.token("acc", Scope::Write);
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, url) = start_engine(dir.path(), None);
    let http = reqwest::Client::new();
    let (status, body) = post(
        &http,
        &format!("{url}/setup"),
        json!({
            "le_log_key": "engine/log",
            "log_config": {"url": svc.url(), "account_id": "acc", "token": w},
            "secrets": [SETUP_SECRET],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, inline) = post(
        &http,
        &format!("{url}/step"),
        json!({"id": "inline", "command": format!("echo {SETUP_SECRET}"), "log_key": "steps/inline"}),
    )
    .await;
    assert_eq!(status, 200, "{inline}");
    let (status, missing) = post(
        &http,
        &format!("{url}/step"),
        json!({"id": "missing", "command": [format!("/no/such/{STEP_SECRET}")], "secrets": [STEP_SECRET]}),
    )
    .await;
    assert_eq!(status, 200, "{missing}");
    assert_clean("a failed step's error", &missing);
    let (_, destroy) = post(&http, &format!("{url}/destroy"), json!({})).await;
    assert_clean("the /destroy answer", &destroy);
    engine.kill();
    assert_clean("the engine's console log", &engine.output());
    svc.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// One call to every account route of `account`, with its required scope.
fn routes(base: &str, account: &str) -> Vec<(reqwest::Method, String, &'static str)> {
    use reqwest::Method;
    let q = format!("accountID={account}&key=k");
    vec![
        (Method::POST, format!("{base}/stream?{q}"), ""),
        (
            Method::PUT,
            format!("{base}/stream?{q}"),
            r#"[{"pos":9,"out":"x"}]"#,
        ),
        (Method::GET, format!("{base}/stream?{q}"), ""),
        (Method::DELETE, format!("{base}/stream?{q}"), ""),
        (
            Method::POST,
            format!("{base}/blob?{q}"),
            "{\"pos\":0,\"out\":\"forged\"}\n",
        ),
        (Method::GET, format!("{base}/blob?{q}"), ""),
        (Method::POST, format!("{base}/blob/link/upload?{q}"), ""),
        (
            Method::GET,
            format!("{base}/streams?accountID={account}"),
            "",
        ),
    ]
}

/// Sends `token` to every route of `account`; each must be refused with `status`,
/// with an error that never repeats the token.
async fn refused_everywhere(base: &str, account: &str, token: &str, status: u16, what: &str) {
    let http = reqwest::Client::new();
    for (method, url, body) in routes(base, account) {
        let resp = http
            .request(method.clone(), &url)
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(
            code, status,
            "{what}: {method} {url} answered {code}: {text}"
        );
        let msg: runlog_protocol::ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: {method} {url}: not a JSON error ({e}): {text}"));
        if token.len() > 8 {
            assert!(
                !msg.error_msg.contains(token),
                "{what}: the error repeats the token: {text}"
            );
        }
    }
}

/// alice's stream `k` with two lines and an archive, to check nothing changed.
async fn alice_state(svc: &TestService) -> (String, String) {
    let r = svc.token("alice", Scope::Read);
    let http = reqwest::Client::new();
    let streams = http
        .get(format!("{}/streams?accountID=alice", svc.url()))
        .bearer_auth(&r)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let blob = http
        .get(format!("{}/blob?accountID=alice&key=k", svc.url()))
        .bearer_auth(&r)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Activity times change only on writes, so equal listings mean no write.
    (streams, blob)
}

async fn seed_alice(svc: &TestService) {
    let w = svc.token("alice", Scope::Write);
    let http = reqwest::Client::new();
    let q = format!("{}/stream?accountID=alice&key=k", svc.url());
    for (m, body) in [
        (reqwest::Method::POST, ""),
        (
            reqwest::Method::PUT,
            r#"[{"pos":0,"out":"a\n"},{"pos":1,"out":"b\n"}]"#,
        ),
    ] {
        let resp = http
            .request(m, &q)
            .bearer_auth(&w)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = http
        .post(format!("{}/blob?accountID=alice&key=k", svc.url()))
        .bearer_auth(&w)
        .body("{\"pos\":0,\"out\":\"a\\n\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_another_account_are_refused_on_every_route() {
    let svc = TestService::start().await;
    seed_alice(&svc).await;
    let before = alice_state(&svc).await;
    for scope in [Scope::Read, Scope::Write] {
        let bob = svc.token("bob", scope);
        refused_everywhere(
            &svc.url(),
            "alice",
            &bob,
            403,
            &format!("bob's {scope} token"),
        )
        .await;
    }
    assert_eq!(alice_state(&svc).await, before, "alice's data changed");
    svc.shutdown().await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tampered_forged_and_wrong_scope_tokens_are_refused() {
    let svc = TestService::start().await;
    seed_alice(&svc).await;
    let before = alice_state(&svc).await;
    let secret = svc.admin_secret().as_bytes().to_vec();
    let alice = AccountId::new("alice").unwrap();
    let claims = |scope, exp| Claims {
        account: Some(alice.clone()),
        scope,
        exp,
    };
    let expired = sign_claims(&secret, &claims(Scope::Write, now() - 1));
    refused_everywhere(&svc.url(), "alice", &expired, 401, "expired token").await;

    let forged = sign_claims(
        b"not-the-service-secret",
        &claims(Scope::Admin, now() + 3600),
    );
    refused_everywhere(
        &svc.url(),
        "alice",
        &forged,
        401,
        "token signed with another secret",
    )
    .await;

    // Tampered: a read token whose claims are rewritten to admin, signature kept.
    let read = svc.token("alice", Scope::Read);
    let (_, sig) = read.split_once('.').unwrap();
    let admin_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims(Scope::Admin, now() + 3600)).unwrap());
    let tampered = format!("{admin_claims}.{sig}");
    refused_everywhere(&svc.url(), "alice", &tampered, 401, "tampered token").await;
    // One flipped character in the signature.
    let mut flipped = read.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    refused_everywhere(
        &svc.url(),
        "alice",
        &flipped,
        401,
        "token with a flipped byte",
    )
    .await;

    // A non-admin token without an account is refused even when correctly signed.
    let unbound = sign_claims(
        &secret,
        &Claims {
            account: None,
            scope: Scope::Write,
            exp: now() + 3600,
        },
    );
    refused_everywhere(&svc.url(), "alice", &unbound, 401, "unbound write token").await;

    // Wrong scope: a read token cannot write, a write token cannot mint tokens.
    let http = reqwest::Client::new();
    let q = format!("{}/stream?accountID=alice&key=k", svc.url());
    for (m, body) in [
        (reqwest::Method::POST, ""),
        (reqwest::Method::PUT, r#"[{"pos":5,"out":"x"}]"#),
        (reqwest::Method::DELETE, ""),
    ] {
        let resp = http
            .request(m.clone(), &q)
            .bearer_auth(&read)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "read token on {m} /stream");
    }
    let resp = http
        .post(format!("{}/blob?accountID=alice&key=k", svc.url()))
        .bearer_auth(&read)
        .body("{\"pos\":0,\"out\":\"x\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "read token uploading an archive");
    let write = svc.token("alice", Scope::Write);
    let resp = http
        .post(format!("{}/token?accountID=alice", svc.url()))
        .bearer_auth(&write)
        .body(r#"{"scope":"admin"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "write token minting a token");

    assert_eq!(alice_state(&svc).await, before, "alice's data changed");
    svc.shutdown().await;
}

fn with_query(link: &str, name: &str, value: &str) -> String {
    let mut url = url::Url::parse(link).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_link_expires_and_works_for_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.link_ttl = Duration::from_secs(2);
    let svc = TestService::start_with(cfg).await;
    let w = svc.token("alice", Scope::Write);
    let http = reqwest::Client::new();
    let link_for = |key: &'static str| {
        let req = http
            .post(format!(
                "{}/blob/link/upload?accountID=alice&key={key}",
                svc.url()
            ))
            .bearer_auth(&w);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            v["link"].as_str().unwrap().to_owned()
        }
    };
    let archive = "{\"pos\":0,\"out\":\"archived\\n\"}\n";
    let link = link_for("a").await;
    assert!(
        !link.contains(&w),
        "the link must not carry the account token"
    );

    // Any change to what the link names voids its signature.
    for (name, value) in [
        ("key", "b"),
        ("key", "a/../b"),
        ("accountID", "mallory"),
        ("expires", "99999999999"),
    ] {
        let bent = with_query(&link, name, value);
        let resp = http.put(&bent).body(archive).send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(
            status == 401 || status == 400,
            "link with {name}={value} answered {status}"
        );
    }
    // Nothing landed under another key or account.
    let r = svc.token("alice", Scope::Read);
    let other = http
        .get(format!("{}/blob?accountID=alice&key=b", svc.url()))
        .bearer_auth(&r)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    let resp = http.put(&link).body(archive).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the link itself works");
    let got = http
        .get(format!("{}/blob?accountID=alice&key=a", svc.url()))
        .bearer_auth(&r)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(got.contains("archived"), "{got}");

    // Expiry: a fresh link is refused once its 2 s have passed. Waiting is the
    // point here; poll with a deadline rather than guess the instant.
    let late = link_for("c").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let resp = http.put(&late).body(archive).send().await.unwrap();
        if resp.status() == 401 {
            break resp.text().await.unwrap();
        }
        // An unexpired link takes one archive; used, it is refused with 409 (an
        // expired one with 401, whether used or not).
        assert!(
            [200, 409].contains(&resp.status().as_u16()),
            "an unexpired link answered {}",
            resp.status()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the link still worked 10 s after a 2 s lifetime"
        );
    };
    assert!(refused.contains("expired"), "{refused}");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_refuses_non_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runlog"));
        cmd.args(["engine", "--addr", addr, "--data-dir"])
            .arg(dir.path());
        let mut engine = Watched::spawn(cmd).unwrap();
        let status = engine
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("engine kept running on {addr} without a token"));
        assert!(!status.success(), "engine on {addr} exited with {status}");
        let out = engine.output();
        assert!(
            out.contains("token") && !out.contains("listening on"),
            "the refusal should name the missing token:\n{out}"
        );
    }
    // An empty token is no token.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.args(["engine", "--addr", "0.0.0.0:0", "--token", "", "--data-dir"])
        .arg(dir.path());
    let mut engine = Watched::spawn(cmd).unwrap();
    let status = engine.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "engine accepted an empty token:\n{}",
        engine.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_with_a_token_refuses_requests_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = "engine-token-5b1e3c";
    let (mut engine, url) = start_engine(dir.path(), Some(token));
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/setup", json!({})),
        ("/step", json!({"id": "x", "command": "touch pwned"})),
        (
            "/execute",
            json!({"function_name": "f", "function_code": "def f(): pass"}),
        ),
        ("/destroy", json!({})),
    ] {
        for given in [None, Some("wrong-token"), Some("engine-token-5b1e3")] {
            let mut req = http.post(format!("{url}{path}")).json(&body);
            if let Some(t) = given {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 401, "{path} with {given:?}: {text}");
            assert!(
                text.contains("error_msg") && !text.contains(token),
                "{text}"
            );
        }
    }
    assert!(
        walk(dir.path()).iter().all(|p| !p.ends_with("pwned")),
        "a refused step ran"
    );
    let resp = http
        .post(format!("{url}/setup"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the right token works");
    engine.kill();
    assert!(
        !engine.output().contains(token),
        "the engine logged its own token"
    );
}

/// A page of another origin, served on its own loopback port, that tries what a
/// hostile site would: `no-cors` POSTs (no preflight) with a text/plain body and a
/// form-encoded one, then sets its title so the test knows it is done.
fn hostile_page(engine: &str, proof: &std::path::Path) -> String {
    let step = json!({"id": "csrf", "script": format!("id > {}", proof.display())}).to_string();
    format!(
        r#"<!doctype html><title>working</title><script>
const engine = {engine:?};
const opts = (body, type) => ({{method: "POST", mode: "no-cors", headers: {{"Content-Type": type}}, body}});
(async () => {{
  for (const type of ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]) {{
    await fetch(engine + "/setup", opts("{{}}", type)).catch(() => {{}});
    await fetch(engine + "/step", opts({step:?}, type)).catch(() => {{}});
  }}
  document.title = "done";
}})();
</script>"#
    )
}

/// The engine's count of callers refused as browsers, from its `/metrics`.
async fn refused_callers(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("runlog_engine_refused_callers_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error count in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_of_another_origin_cannot_make_the_engine_act() {
    let dir = tempfile::tempdir().unwrap();
    // Written by a step, which a root engine runs as another user: not in the engine's
    // data directory.
    let scratch = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::Permissions::from_mode(0o1777);
        std::fs::set_permissions(scratch.path(), mode).unwrap();
    }
    let proof = scratch.path().join("proof");
    let (_engine, url) = start_engine(dir.path(), None);
    let page = hostile_page(&url, &proof);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let refused_before = refused_callers(&http, &url).await;
    let browser = runlog_testkit::browser::Browser::start().await;
    browser.goto(&site).await;
    browser
        .wait_for("the page's requests", "return document.title === 'done'")
        .await;
    browser.quit().await;
    assert!(
        !proof.exists(),
        "a web page ran a command through the engine"
    );
    // Every request the page made reached the engine and was refused.
    let refused = refused_callers(&http, &url).await - refused_before;
    assert!(
        refused >= 4,
        "the engine refused {refused} of the page's 4 requests"
    );

    // What a page sent, with the headers a browser adds, is refused with a reason...
    for (name, value) in [
        ("origin", site.trim_end_matches('/')),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = http
            .post(format!("{url}/setup"))
            .header(name, value)
            .header("content-type", "text/plain;charset=UTF-8")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{name}");
        assert!(resp.text().await.unwrap().contains("browsers"));
    }
    // ... and the same bodies from a controller (curl's form type, Go's none) work.
    let step = json!({"id": "ok", "script": format!("id > {}", proof.display())}).to_string();
    for (path, body, ctype) in [
        (
            "/setup",
            "{}".to_owned(),
            Some("application/x-www-form-urlencoded"),
        ),
        ("/step", step, None),
    ] {
        let mut req = http.post(format!("{url}{path}")).body(body);
        if let Some(t) = ctype {
            req = req.header("content-type", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{path}: {}",
            resp.text().await.unwrap()
        );
    }
    assert!(proof.exists(), "the controller's step did not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_dns_name_reaches_a_token_less_engine_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, url) = start_engine_with(dir.path(), None, |cmd| {
        cmd.args(["--allow-host", "ci-box.internal"]);
    });
    let port = url.rsplit(':').next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let post_as = |host: String| {
        http.post(format!("{url}/setup"))
            .header("host", host)
            .body("{}")
            .send()
    };
    // A page that rebinds its own name to 127.0.0.1 sends that name as Host.
    let resp = post_as(format!("rebind.evil.example:{port}"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 421);
    let text = resp.text().await.unwrap();
    assert!(text.contains("--allow-host"), "{text}");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("ci-box.internal:{port}"),
    ] {
        let resp = post_as(host.clone()).await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{host}: {}",
            resp.text().await.unwrap()
        );
        let resp = http
            .post(format!("{url}/destroy"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_inherits_no_credential_of_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let token = "engine-token-in-env-9d1";
    let (_engine, url) = start_engine_with(dir.path(), None, |cmd| {
        cmd.env("RUNLOG_ENGINE_TOKEN", token)
            .env("RUNLOG_ADMIN_SECRET", "admin-secret-in-env-4c2")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-in-env-77f")
            .env("AWS_REGION", "eu-test-1")
            .env("LC_ALL", "C")
            .args(["--pass-env", "AWS_REGION"]);
    });
    let http = reqwest::Client::new();
    let call = |path: &'static str, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let resp = call("/setup", json!({"envs": {"STAGE_VAR": "from-stage"}}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Every variable the step sees comes back as an output.
    let resp = call(
        "/step",
        json!({"id": "env", "envs": {"STEP_VAR": "from-step"}, "script": "env >> \"$RUNLOG_OUTPUT\""}),
    )
    .await
    .unwrap();
    let answer: Value = resp.json().await.unwrap();
    let seen = answer["outputs"]
        .as_object()
        .unwrap_or_else(|| panic!("{answer}"));
    for (name, value) in [
        ("STAGE_VAR", "from-stage"),
        ("STEP_VAR", "from-step"),
        ("AWS_REGION", "eu-test-1"),
        ("LC_ALL", "C"),
    ] {
        assert_eq!(
            seen.get(name).and_then(Value::as_str),
            Some(value),
            "{name} in {answer}"
        );
    }
    assert!(
        seen.contains_key("PATH") && seen.contains_key("RUNLOG_OUTPUT"),
        "{answer}"
    );
    let text = answer.to_string();
    for leaked in [token, "admin-secret-in-env-4c2", "aws-secret-in-env-77f"] {
        assert!(!text.contains(leaked), "the step saw {leaked}: {text}");
    }
    assert!(
        !seen.contains_key("CARGO_MANIFEST_DIR"),
        "the engine's environment leaked: {answer}"
    );
}
