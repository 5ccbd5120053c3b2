//! Viewer links and the account a token names.

use runlog_protocol::{AccountId, StreamKey};

/// The viewer URL of one stream. `read_token` must be read-scoped: links get
/// pasted into chats and browser histories, so they never carry more than read.
///
/// ```
/// use runlog_protocol::{AccountId, StreamKey};
/// let link = runlog_client::viewer_link(
///     "http://127.0.0.1:8079",
///     &AccountId::new("acme").unwrap(),
///     &StreamKey::new("build/1").unwrap(),
///     None,
/// );
/// assert_eq!(link, "http://127.0.0.1:8079/ui/stream?accountID=acme&key=build%2F1");
/// ```
pub fn viewer_link(
    base_url: &str,
    account: &AccountId,
    key: &StreamKey,
    read_token: Option<&str>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("accountID", account.as_str());
    query.append_pair("key", key.as_str());
    if let Some(t) = read_token {
        query.append_pair("token", t);
    }
    format!(
        "{}/ui/stream?{}",
        base_url.trim_end_matches('/'),
        query.finish()
    )
}

/// The account a runlog token (`base64url(JSON claims).signature`) names, read
/// without verifying it: only to pick a default; the service verifies every call.
pub fn token_account(token: &str) -> Option<AccountId> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        account: Option<AccountId>,
    }
    let body = token.trim().split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    serde_json::from_slice::<Claims>(&json).ok()?.account
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn the_account_is_read_from_a_token_and_garbage_names_none() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"account":"acc-1","scope":"read","exp":4102444800}"#);
        let token = format!("{claims}.c2lnbmF0dXJl");
        assert_eq!(token_account(&token), AccountId::new("acc-1").ok());
        let admin = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"scope":"admin","exp":4102444800}"#);
        assert_eq!(token_account(&format!("{admin}.sig")), None);
        for bad in ["", "garbage", "a.b", "e30.sig", "!!!.x"] {
            assert_eq!(token_account(bad), None, "{bad}");
        }
    }

    #[test]
    fn viewer_links_escape_keys_and_carry_only_the_given_token() {
        let account = AccountId::new("acc").expect("valid");
        let key = StreamKey::new("stage/step-1").expect("valid");
        let link = viewer_link("http://h:1/", &account, &key, None);
        assert_eq!(
            link,
            "http://h:1/ui/stream?accountID=acc&key=stage%2Fstep-1"
        );
        let with = viewer_link("http://h:1", &account, &key, Some("r.t+/="));
        assert!(with.ends_with("&token=r.t%2B%2F%3D"), "{with}");
    }
}
