//! `runlog tail --job ID`: the log of an engine job (RunPod's job API), the stream
//! `jobs/<ID>`, against a real log service.
#![allow(clippy::unwrap_used)]

mod tail_common;

use runlog_protocol::Scope;
use runlog_testkit::service::TestService;
use tail_common::*;

#[tokio::test]
async fn tail_job_reads_the_jobs_stream() {
    let svc = TestService::start().await;
    let id = runlog_engine::jobs::new_job_id();
    let key = runlog_engine::jobs::job_log_key(&id);
    let w = Writer::new(&svc);
    w.open(&key).await;
    w.put(&key, &lines(0..4)).await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let done = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--no-follow", "--job", &id],
    ))
    .await;
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_text(0..4));
    svc.shutdown().await;
}

#[tokio::test]
async fn tail_job_refuses_a_bad_id_and_a_key_with_it() {
    let svc = TestService::start().await;
    let read = svc.token(ACCOUNT, Scope::Read);
    let bad = run(runlog(&svc.url(), &read, &["tail", "--job", "../x"])).await;
    assert!(!bad.success);
    assert!(bad.stderr.contains("not a job id"), "{}", bad.stderr);
    let both = run(runlog(
        &svc.url(),
        &read,
        &["tail", "--job", "a", "some-key"],
    ))
    .await;
    assert!(!both.success);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
    svc.shutdown().await;
}
