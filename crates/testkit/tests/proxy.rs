//! The fault proxy does what each fault promises, in front of a real log service.
#![allow(clippy::unwrap_used)]

use runlog_testkit::proxy::{FaultProxy, Faults};
use runlog_testkit::service::TestService;

async fn get(url: &str) -> Result<(u16, Result<bytes::Bytes, reqwest::Error>), reqwest::Error> {
    // A fresh client per call: no pooled connection carries state between faults.
    let resp = reqwest::Client::new()
        .get(format!("{url}/healthz"))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.bytes().await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_kind_behaves_as_documented() {
    let svc = TestService::start().await;
    let proxy = FaultProxy::start(&svc.url(), Faults::none(), 1).await;
    let url = proxy.url();

    let (status, body) = get(&url).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.unwrap().len() > 2);

    proxy.set_faults(Faults {
        status_500: 1.0,
        ..Faults::none()
    });
    assert_eq!(get(&url).await.unwrap().0, 500);
    proxy.set_faults(Faults {
        status_429: 1.0,
        ..Faults::none()
    });
    assert_eq!(get(&url).await.unwrap().0, 429);

    let forwarded = proxy.stats().forwarded;
    proxy.set_faults(Faults {
        reset: 1.0,
        ..Faults::none()
    });
    assert!(get(&url).await.is_err(), "reset: no answer");
    assert_eq!(proxy.stats().forwarded, forwarded, "reset: not forwarded");

    proxy.set_faults(Faults {
        drop_response: 1.0,
        ..Faults::none()
    });
    assert!(get(&url).await.is_err(), "drop_response: no answer");
    assert_eq!(
        proxy.stats().forwarded,
        forwarded + 1,
        "drop_response: forwarded"
    );

    proxy.set_faults(Faults {
        close_mid_body: 1.0,
        ..Faults::none()
    });
    let (status, body) = get(&url).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.is_err(), "close_mid_body: the body breaks");

    proxy.set_faults(Faults::none());
    proxy.set_down(true);
    assert!(get(&url).await.is_err(), "down: refused");
    assert!(proxy.stats().refused > 0);
    proxy.set_down(false);
    let again = get(&url).await;
    assert!(matches!(again, Ok((200, _))), "recovered: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_released_when_the_faults_change() {
    let svc = TestService::start().await;
    let proxy = FaultProxy::start(&svc.url(), Faults::stalled(), 1).await;
    let url = proxy.url();
    let stalled = tokio::spawn(async move { get(&url).await.is_err() });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.stats().stall == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the proxy"
        );
        tokio::task::yield_now().await;
    }
    assert!(!stalled.is_finished());
    proxy.set_faults(Faults::none());
    assert!(
        stalled.await.unwrap(),
        "a released stalled request ends with a closed connection"
    );
    assert_eq!(get(&proxy.url()).await.unwrap().0, 200);
}
