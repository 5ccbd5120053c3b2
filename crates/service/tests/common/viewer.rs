//! Helpers of the viewer's browser tests (`viewer.rs`, `viewer_sections.rs`).

use super::Api;
use runlog_protocol::Scope;
use runlog_testkit::service::TestService;

/// The account the viewer tests write to.
pub const ACCOUNT: &str = "acc";

/// The viewer URL of `key` with a read token in the link, as the CLI prints it.
pub fn page(svc: &TestService, key: &str, token: &str, hash: &str) -> String {
    format!(
        "{}/ui/stream?accountID={ACCOUNT}&key={key}&token={token}{hash}",
        svc.url()
    )
}

/// A service, a writer of `ACCOUNT` and a read token for it.
pub async fn setup() -> (TestService, Api, String) {
    let svc = TestService::start().await;
    let writer = Api::new(&svc, ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    (svc, writer, read)
}

/// Ends a browser test: saves screenshot `shot`, checks that the page logged no
/// error, and stops the browser and the service.
pub async fn finish(browser: runlog_testkit::browser::Browser, svc: TestService, shot: &str) {
    browser.screenshot(shot).await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}
