//! `runlog engine` with TLS files, as a lite-engine machine is set up: the files and
//! the address come from lite-engine's variables, and a bad file stops the engine at
//! start with an error that names it.
#![allow(clippy::unwrap_used)]

use runlog_testkit::chaos::Watched;
use runlog_testkit::tls::TlsSet;
use std::path::Path;
use std::time::Duration;

/// `runlog engine` over a fresh data dir with `args` and lite-engine's variables
/// `vars`, none of the engine's own address variables inherited.
fn engine(data_dir: &Path, args: &[&str], vars: &[(&str, &Path)]) -> Watched {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runlog"));
    cmd.arg("engine").arg("--data-dir").arg(data_dir).args(args);
    for name in [
        "RUNLOG_ENGINE_ADDR",
        "RUNLOG_ENGINE_TOKEN",
        "HTTPS_BIND",
        "SERVER_CERT_FILE",
        "SERVER_KEY_FILE",
        "CLIENT_CERT_FILE",
    ] {
        cmd.env_remove(name);
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    Watched::spawn(cmd).expect("spawn runlog engine")
}

#[tokio::test]
async fn the_engine_serves_mutual_tls_from_lite_engines_variables() {
    let set = TlsSet::new(&[]);
    let data = tempfile::tempdir().unwrap();
    // `:0`, Go's form for every interface: allowed without a token because of TLS.
    let engine = engine(
        data.path(),
        &[],
        &[
            ("SERVER_CERT_FILE", &set.server_cert),
            ("SERVER_KEY_FILE", &set.server_key),
            ("CLIENT_CERT_FILE", &set.ca_cert),
            ("HTTPS_BIND", Path::new(":0")),
        ],
    );
    let line = engine
        .wait_for_line(Duration::from_secs(60), |l| {
            l.contains("listening on https://0.0.0.0:")
        })
        .unwrap_or_else(|| panic!("the engine did not start:\n{}", engine.output()));
    let port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let resp = set
        .client()
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let anonymous = set
        .client_without_identity()
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(anonymous.is_err(), "{anonymous:?}");
}

/// Starts the engine with `args`, expects it to exit at once with an error whose
/// output contains every one of `said`.
fn refused_at_start(args: &[&str], said: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let mut engine = engine(data.path(), args, &[]);
    let status = engine
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the engine started with {args:?}:\n{}", engine.output()));
    assert!(!status.success());
    for text in said {
        assert!(
            engine
                .wait_for_line(Duration::from_secs(10), |l| l.contains(text))
                .is_some(),
            "{text:?} not said for {args:?}:\n{}",
            engine.output()
        );
    }
}

#[test]
fn bad_tls_files_stop_the_engine_at_start_naming_the_file() {
    let set = TlsSet::new(&[]);
    let other = TlsSet::new(&[]);
    let missing = set.dir().join("missing.pem");
    let not_pem = set.dir().join("not-pem.txt");
    std::fs::write(&not_pem, "not PEM\n").unwrap();
    let (cert, key, ca) = (
        set.server_cert.to_str().unwrap(),
        set.server_key.to_str().unwrap(),
        set.ca_cert.to_str().unwrap(),
    );
    let (missing, not_pem) = (missing.to_str().unwrap(), not_pem.to_str().unwrap());
    let addr = ["--addr", "127.0.0.1:0"];
    let with = |cert: &str, key: &str, ca: &str| {
        let mut args = addr.to_vec();
        args.extend(["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca].map(|a| a));
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, said: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused_at_start(&args, said);
    };
    run(with(missing, key, ca), &["cannot read", missing]);
    run(with(cert, not_pem, ca), &["no PEM PRIVATE KEY", not_pem]);
    run(with(cert, key, not_pem), &["no PEM CERTIFICATE", not_pem]);
    let other_key = other.server_key.to_str().unwrap();
    run(with(cert, other_key, ca), &["not the key of", other_key]);
    refused_at_start(
        &["--addr", "127.0.0.1:0", "--tls-cert", cert],
        &["go together"],
    );
}
