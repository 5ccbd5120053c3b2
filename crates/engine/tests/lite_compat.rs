#![allow(clippy::unwrap_used)]
//! A Harness runner's requests, replayed byte for byte against the engine.
//!
//! The bodies are what the runner's Go client sends (`json.NewEncoder(buf).Encode`:
//! compact, struct fields in declaration order, map keys sorted, `<`, `>` and `&`
//! escaped as `\u003c`, `\u003e`, `\u0026`, a trailing newline, no Content-Type),
//! for lite-engine's request types as its `api` package declares them. Every step's
//! stream, the engine stream and the memory metrics stream are read back from a
//! real log service. The runner reaches the engine as it reaches lite-engine: over
//! mutual TLS, TLS 1.3, presenting the server's own certificate.

mod engine_support;

use engine_support::{TestEngine, archive, assert_in_order};
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use runlog_testkit::tls::TlsSet;
use serde_json::{Value, json};
use std::time::Duration;

const ACCOUNT: &str = "account-123";
/// Harness-format keys, as a runner names its streams.
const LE_KEY: &str = "accountId:account-123/orgId:default/projectId:proj/pipelineId:p1/runSequence:7/level0:pipeline/level1:stages/level2:s1/le";
const METRICS_KEY: &str = "accountId:account-123/orgId:default/projectId:proj/pipelineId:p1/runSequence:7/level0:pipeline/level1:stages/level2:s1/memory_metrics";

fn step_key(step: &str) -> String {
    format!(
        "accountId:account-123/orgId:default/projectId:proj/pipelineId:p1/runSequence:7/level0:pipeline/level1:stages/level2:s1/level3:steps/level4:{step}"
    )
}

/// How the runner reaches the engine: its client and base URL (lite-engine's
/// `Endpoint`, ending in `/`), over mutual TLS.
struct Runner {
    client: reqwest::Client,
    base: String,
}

/// The runner's client: the CA as its only root and, as Harness's runners do, the
/// engine's own certificate as its client certificate.
fn runner(engine: &TestEngine, tls: &TlsSet) -> Runner {
    let base = engine.url("/");
    assert!(base.starts_with("https://"), "{base}");
    Runner {
        client: tls
            .client_without_identity()
            .identity(tls.server_identity())
            .build()
            .unwrap(),
        base,
    }
}

impl Runner {
    /// POSTs `body` as Go's encoder writes it: the compact text and a newline.
    async fn post(&self, route: &str, body: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{route}", self.base))
            .body(format!("{body}\n"))
            .send()
            .await
            .expect("engine answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    /// `POST /stream_output`, answered as a body that grows while the step runs.
    async fn stream_output(&self, id: &str) -> reqwest::Response {
        self.client
            .post(format!("{}stream_output", self.base))
            .body(format!("{{\"id\":\"{id}\"}}\n"))
            .send()
            .await
            .expect("engine answers")
    }

    async fn health(&self) -> Value {
        let resp = self
            .client
            .get(format!("{}healthz", self.base))
            .send()
            .await
            .expect("engine answers");
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.expect("JSON answer")
    }
}

/// lite-engine's `LogConfig` as Go encodes it (empty fields left out, the
/// `sanitize_config` struct always written).
fn log_config(svc: &TestService) -> String {
    format!(
        r#"{{"account_id":"{ACCOUNT}","indirect_upload":true,"url":"{}","token":"{}","sanitize_config":{{}}}}"#,
        svc.url(),
        svc.token(ACCOUNT, Scope::Write)
    )
}

/// `api.SetupRequest` of a VM runner: stage envs and secrets, a host volume that
/// is removed at destroy, a file at an absolute path, Harness-format keys.
fn setup_body(svc: &TestService, host: &str) -> String {
    format!(
        concat!(
            r#"{{"envs":{{"CI":"true","STAGE_VAR":"from-stage"}},"network":{{}},"#,
            r#""volumes":[{{"host":{{"id":"harness","name":"harness","path":"{host}/harness","create":true,"remove":true}}}}],"#,
            r#""secrets":["stage-pass"],"log_config":{lc},"ti_config":{{}},"#,
            r#""files":[{{"path":"{host}/harness/.netrc","mode":384,"data":"machine example.com\nlogin bot\n"}}],"#,
            r#""mount_docker_socket":false,"mtls_config":{{}},"vm_image_config":{{}},"#,
            r#""le_log_key":"{le}","memory_metrics_log_key":"{mm}"}}"#
        ),
        host = host,
        lc = log_config(svc),
        le = LE_KEY,
        mm = METRICS_KEY,
    )
}

/// `api.StartStepRequest` of a Run step as Go encodes it: zero-valued structs are
/// still written (`run_test`, `test_report`, …), `log_drone`,
/// `mount_docker_socket` and `delete_temp_step_files` always are.
struct Step<'a> {
    id: &'a str,
    envs: &'a str,
    secrets: &'a str,
    commands: &'a str,
    output_vars: &'a str,
    outputs: &'a str,
    timeout: u64,
    image: &'a str,
}

impl Step<'_> {
    fn body(&self, svc: &TestService, host: &str) -> String {
        let mut s = format!(r#"{{"id":"{}""#, self.id);
        if !self.envs.is_empty() {
            s += &format!(r#","environment":{}"#, self.envs);
        }
        s += &format!(
            r#","name":"{}","log_key":"{}","log_drone":false"#,
            self.id,
            step_key(self.id)
        );
        if !self.secrets.is_empty() {
            s += &format!(r#","secrets":{}"#, self.secrets);
        }
        s += &format!(
            r#","working_dir":"{host}/harness","run":{{"commands":[{}],"entrypoint":["sh","-c"],"binary":{{}}}},"run_test":{{}},"run_test_v2":{{}},"log_config":{},"ti_config":{{}},"mtls_config":{{}},"annotations_config":{{}}"#,
            self.commands,
            log_config(svc)
        );
        if !self.output_vars.is_empty() {
            s += &format!(r#","output_vars":{}"#, self.output_vars);
        }
        s += r#","test_report":{"junit":{}}"#;
        if self.timeout > 0 {
            s += &format!(r#","timeout":{}"#, self.timeout);
        }
        s += r#","mount_docker_socket":null"#;
        if !self.outputs.is_empty() {
            s += &format!(r#","outputs":{}"#, self.outputs);
        }
        s += r#","delete_temp_step_files":false"#;
        if !self.image.is_empty() {
            s += &format!(r#","image":"{}""#, self.image);
        }
        s + r#","step_status":{},"process_config":{}}"#
    }
}

const BASE: Step<'static> = Step {
    id: "",
    envs: "",
    secrets: "",
    commands: "",
    output_vars: "",
    outputs: "",
    timeout: 0,
    image: "",
};

/// The lines lite-engine prints before a Run step's commands.
fn preface(commands: &[&str]) -> Vec<String> {
    std::iter::once("Executing the following command(s):")
        .chain(commands.iter().copied())
        .map(|l| format!("\u{1b}[33;1m{l}"))
        .collect()
}

async fn lines_of(svc: &TestService, key: &str) -> Vec<String> {
    let reader = svc.token(ACCOUNT, Scope::Read);
    archive(&svc.url(), &reader, ACCOUNT, key)
        .await
        .unwrap_or_else(|| panic!("no archive of {key}"))
        .iter()
        .map(|l| l.out.trim_end_matches('\n').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_runner_drives_a_stage_from_setup_to_destroy() {
    let svc = TestService::start().await;
    let tls = TlsSet::new(&[]);
    let server_tls = tls.server_tls();
    let engine = TestEngine::start_with(|c| {
        c.tls = Some(server_tls);
        c.allow_host_paths = true;
        c.machine_sample_interval = Duration::from_millis(100);
    })
    .await;
    let host_dir = tempfile::tempdir().unwrap();
    let host = host_dir.path().display().to_string();
    let runner = runner(&engine, &tls);

    let health = runner.health().await;
    assert_eq!(health["ok"], true, "{health}");
    assert!(health["version"].as_str().is_some_and(|v| !v.is_empty()));

    // Setup, and the runner's RetrySetup sending it again.
    let setup = setup_body(&svc, &host);
    assert_eq!(runner.post("setup", &setup).await, (200, json!({})));
    assert_eq!(runner.post("setup", &setup).await, (200, json!({})));
    let other = setup.replace("from-stage", "another-stage");
    let (status, answer) = runner.post("setup", &other).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error_msg"]
            .as_str()
            .unwrap()
            .contains("different request")
    );
    let netrc = std::fs::read_to_string(format!("{host}/harness/.netrc")).unwrap();
    assert_eq!(netrc, "machine example.com\nlogin bot\n");

    // Step 1: environment, secrets, output_vars, DRONE_OUTPUT and DRONE_ENV; started
    // twice, as a runner whose first attempt timed out does.
    let first = Step {
        id: "step1",
        envs: r#"{"FOO":"bar"}"#,
        secrets: r#"["secret-value"]"#,
        commands: r#""echo hello $FOO from $STAGE_VAR\necho the token is secret-value and stage-pass\necho EXPORTED=yes \u003e\u003e $DRONE_ENV\nOUT1=computed\necho DIRECT=1 \u003e\u003e $DRONE_OUTPUT""#,
        output_vars: r#"["OUT1"]"#,
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &first).await, (200, json!({})));
    assert_eq!(runner.post("start_step", &first).await, (200, json!({})));
    let (status, polled) = runner.post("poll_step", r#"{"id":"step1"}"#).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["exited"], true, "{polled}");
    assert_eq!(polled["exit_code"], 0, "{polled}");
    assert!(polled.get("error").is_none(), "{polled}");
    assert_eq!(
        polled["outputs"],
        json!({"DIRECT": "1", "OUT1": "computed"})
    );
    assert_eq!(polled["envs"], json!({"EXPORTED": "yes"}));
    assert_eq!(
        polled["outputV2"],
        json!([
            {"key": "DIRECT", "value": "1", "type": "STRING"},
            {"key": "OUT1", "value": "computed", "type": "STRING"},
        ])
    );

    // A finished step's output is all there, masked as in its stream.
    let output = runner.stream_output("step1").await.text().await.unwrap();
    assert!(
        output.ends_with(
            "hello bar from from-stage\nthe token is ************** and **************\n"
        ),
        "{output}"
    );
    assert!(!output.contains("secret-value") && !output.contains("stage-pass"));

    // Step 2: typed outputs, one secret, one value with a newline.
    let typed = Step {
        id: "step2",
        commands: r#""ART=$(printf 'multi\\nline')\nPW=p4ss""#,
        outputs: r#"[{"key":"artifact","value":"ART","type":"STRING"},{"key":"pw","value":"PW","type":"SECRET"}]"#,
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &typed).await, (200, json!({})));
    let (_, polled) = runner.post("poll_step", r#"{"id":"step2"}"#).await;
    assert_eq!(polled["exit_code"], 0, "{polled}");
    assert_eq!(
        polled["outputV2"],
        json!([
            {"key": "artifact", "value": "multi\nline", "type": "STRING"},
            {"key": "pw", "value": "p4ss", "type": "SECRET"},
        ])
    );

    // Step 3: /stream_output while it runs; it goes on once the test says so.
    let slow = Step {
        id: "slow",
        commands: r#""echo tick1\nwhile [ ! -f go ]; do sleep 0.05; done\necho tick2""#,
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &slow).await, (200, json!({})));
    let mut stream = runner.stream_output("slow").await;
    assert_eq!(stream.status().as_u16(), 200);
    let mut seen = Vec::new();
    // "\ntick1\n" is the step's output; the printed command has "echo tick1".
    while !String::from_utf8_lossy(&seen).contains("\ntick1\n") {
        let chunk = stream
            .chunk()
            .await
            .unwrap()
            .expect("more output while it runs");
        seen.extend_from_slice(&chunk);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("\ntick2"));
    std::fs::write(format!("{host}/harness/go"), "").unwrap();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        seen.extend_from_slice(&chunk);
    }
    let slow_lines = preface(&[
        "echo tick1",
        "while [ ! -f go ]; do sleep 0.05; done",
        "echo tick2",
    ]);
    let expected_output = format!("{}\ntick1\ntick2\n", slow_lines.join("\n"));
    assert_eq!(String::from_utf8_lossy(&seen), expected_output);
    let (_, polled) = runner.post("poll_step", r#"{"id":"slow"}"#).await;
    assert_eq!(polled["exit_code"], 0, "{polled}");

    // Step 4 fails, step 5 runs out of time, step 6 asks for a container.
    let failing = Step {
        id: "failing",
        commands: r#""echo failing\nexit 3""#,
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &failing).await, (200, json!({})));
    let (_, polled) = runner.post("poll_step", r#"{"id":"failing"}"#).await;
    assert_eq!(polled["exited"], true, "{polled}");
    assert_eq!(polled["exit_code"], 3, "{polled}");
    assert_eq!(polled["error"], "1 error occurred:\n\t* exit status 3\n\n");

    let late = Step {
        id: "late",
        commands: r#""echo waiting\nsleep 30""#,
        timeout: 1,
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &late).await, (200, json!({})));
    let (_, polled) = runner.post("poll_step", r#"{"id":"late"}"#).await;
    assert_eq!(polled["exit_code"], 255, "{polled}");
    assert_eq!(polled["error"], "context deadline exceeded");

    let boxed = Step {
        id: "boxed",
        commands: r#""go test ./...""#,
        image: "golang:1.22",
        ..BASE
    }
    .body(&svc, &host);
    assert_eq!(runner.post("start_step", &boxed).await, (200, json!({})));
    let (_, polled) = runner.post("poll_step", r#"{"id":"boxed"}"#).await;
    assert_eq!(polled["exit_code"], 255, "{polled}");
    assert!(
        polled["error"]
            .as_str()
            .unwrap()
            .contains("need a Docker engine"),
        "{polled}"
    );

    let (status, answer) = runner.post("poll_step", r#"{"id":"never"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(runner.post("suspend", "{}").await, (200, json!({})));

    // Destroy: os_stats, every stream archived, the volume removed.
    let (status, destroyed) = runner.post("destroy", "{}").await;
    assert_eq!(status, 200, "{destroyed}");
    let stats = &destroyed["os_stats"];
    assert!(stats["cpu_cores"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["total_mem_mb"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(!stats["mem_graph"]["points"].as_array().unwrap().is_empty());
    let streams = destroyed["streams"].as_array().unwrap();
    assert!(streams.iter().all(|s| s["archived"] == true), "{destroyed}");
    assert_eq!(streams.last().unwrap()["key"], LE_KEY, "engine stream last");
    assert!(!std::path::Path::new(&format!("{host}/harness")).exists());

    assert_eq!(
        lines_of(&svc, &step_key("step1")).await,
        [
            preface(&[
                "echo hello $FOO from $STAGE_VAR",
                "echo the token is ************** and **************",
                "echo EXPORTED=yes >> $DRONE_ENV",
                "OUT1=computed",
                "echo DIRECT=1 >> $DRONE_OUTPUT",
            ]),
            vec![
                "hello bar from from-stage".to_owned(),
                "the token is ************** and **************".to_owned(),
            ],
        ]
        .concat()
    );
    assert_eq!(
        lines_of(&svc, &step_key("step2")).await,
        preface(&["ART=$(printf 'multi\\nline')", "PW=p4ss"])
    );
    assert_eq!(
        lines_of(&svc, &step_key("slow")).await,
        [slow_lines, vec!["tick1".to_owned(), "tick2".to_owned()]].concat()
    );
    assert_eq!(
        lines_of(&svc, &step_key("failing")).await,
        [
            preface(&["echo failing", "exit 3"]),
            vec!["failing".to_owned()]
        ]
        .concat()
    );
    assert_eq!(
        lines_of(&svc, &step_key("late")).await,
        [
            preface(&["echo waiting", "sleep 30"]),
            vec![
                "waiting".to_owned(),
                "timed out after 1s; the process group was killed".to_owned()
            ]
        ]
        .concat()
    );
    let boxed_lines = lines_of(&svc, &step_key("boxed")).await;
    assert_eq!(boxed_lines.len(), 1, "{boxed_lines:?}");
    assert!(boxed_lines[0].contains("need a Docker engine"));

    // The engine stream: each request's events once, in order, secrets masked.
    let own = lines_of(&svc, LE_KEY).await.join("\n");
    let order = [
        "setting up stage",
        "volume \"harness\"",
        "the same setup again",
        "starting step \"step1\"",
        "step exited with code 0",
        "starting step \"slow\"",
        "step exited with code 3",
        "timed out after 1s",
        "step failed with code -1: step \"boxed\" runs in a container",
        "nothing to suspend",
        "destroying stage",
        "closing the engine log stream",
    ];
    assert_in_order(&own, &order);
    // The repeated start races the first one's task: counted, not ordered.
    assert_eq!(own.matches("starting step \"step1\"").count(), 1, "{own}");
    assert_eq!(
        own.matches("the repeated start is ignored").count(),
        1,
        "{own}"
    );
    assert!(!own.contains("secret-value") && !own.contains("stage-pass"));

    // The machine's figures: one JSON line per sample, the summary last.
    let metrics = lines_of(&svc, METRICS_KEY).await;
    let parsed: Vec<Value> = metrics
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, samples) = parsed.split_last().unwrap();
    assert_eq!(summary["osStatsSummary"], true, "{summary}");
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|s| s["totalCPU"].as_u64() >= Some(1)));

    svc.shutdown().await;
    engine.shutdown().await;
}
