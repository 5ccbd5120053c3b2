//! [`refuse_browsers`]: no web page can make the engine act.
//!
//! The engine runs commands, and on loopback it needs no token, so a page open in the
//! browser of whoever runs it must not reach it. A page can send a POST without a
//! preflight (`fetch(…, {mode: "no-cors"})`, a form) with any body a controller sends —
//! a content-type check would not stop it, and would refuse real controllers: Go's
//! client (a Harness runner) sends no `Content-Type`, `curl -d` sends a form type. What
//! a browser cannot leave out is how it identifies itself:
//!
//! - every browser request that is not a plain navigation carries `Origin` (all POSTs
//!   do) or `Sec-Fetch-Site` other than `none`; no controller sends either, so the
//!   engine refuses both;
//! - a page that rebinds its own DNS name to 127.0.0.1 makes same-origin requests, but
//!   its `Host` is still its own name: without a token the engine answers only the
//!   names loopback is reached by (`localhost`, an IP literal) and those the operator
//!   allowed (`--allow-host`).
//!
//! With a token, a page cannot send it (it does not know it, and the engine answers no
//! CORS preflight that would let it add `Authorization`), so `Host` is not checked
//! there: an engine reached by a DNS name for which it holds a token keeps working.
//! Nor with mutual TLS: a browser reaches the engine only if it trusts the engine's
//! own CA and presents a certificate that CA signed, which makes it a controller the
//! operator set up, not a page that rebound a name (Harness's runners reach their
//! engine by the machine's address, whatever name its certificate bears).

use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::state::EngineState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::{HOST, ORIGIN};

/// Refuses a request that a browser made (403), or one that reached a token-less engine
/// under a name it does not serve (421, as for a misdirected request).
pub async fn refuse_browsers(
    State(state): State<EngineState>,
    req: Request,
    next: Next,
) -> Response {
    let config = state.config();
    let unauthenticated = !config.authenticates_callers();
    match check(req.headers(), unauthenticated, &config.allowed_hosts) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            Metrics::inc(&state.metrics().refused_callers);
            e.into_response()
        }
    }
}

/// The decision, without the request around it.
fn check(
    headers: &HeaderMap,
    unauthenticated: bool,
    allowed_hosts: &[String],
) -> Result<(), EngineError> {
    if headers.contains_key(ORIGIN) {
        return Err(EngineError::Forbidden(
            "the engine does not answer browsers: a request with an Origin header is refused \
             (a web page must not run commands); controllers send no Origin"
                .into(),
        ));
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"none"
    {
        return Err(EngineError::Forbidden(
            "the engine does not answer browsers: a request a page made (Sec-Fetch-Site) is refused"
                .into(),
        ));
    }
    if unauthenticated && let Some(host) = headers.get(HOST) {
        let name = host_name(host.to_str().unwrap_or_default());
        if !loopback_name(name) && !allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return Err(EngineError::Misdirected(
                "this engine has no token and answers only the names loopback is reached by \
                 (localhost, 127.0.0.1, [::1]); add a name with --allow-host, or set a token \
                 (or serve mutual TLS)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// `Host` without its port (`[::1]:9079` → `[::1]`, `localhost:9079` → `localhost`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _port)| name)
}

/// Names that reach this machine's loopback and that no web page can rebind: IP
/// literals (a page that uses one is already talking to that address, not to a name it
/// controls) and `localhost` (browsers resolve it to loopback themselves).
fn loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.len() > ".localhost".len()
            && name[name.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn controllers_pass_and_browsers_do_not() {
        // Whether a request with these headers passes, with or without a token set
        // and no host allowed besides the local names.
        let passes = |pairs: &[(&'static str, &'static str)], unauthenticated: bool| {
            check(&headers(pairs), unauthenticated, &[]).is_ok()
        };
        assert!(passes(&[("host", "127.0.0.1:9079")], true));
        assert!(passes(&[("host", "localhost:9079")], true));
        assert!(passes(&[("host", "[::1]:9079")], true));
        assert!(passes(&[], true), "HTTP/1.0 sends no Host");
        assert!(!passes(&[("host", "127.0.0.1"), ("origin", "null")], true));
        let cross_site = [("host", "127.0.0.1"), ("sec-fetch-site", "cross-site")];
        assert!(!passes(&cross_site, false));
        let typed_by_the_user = [("host", "127.0.0.1"), ("sec-fetch-site", "none")];
        assert!(passes(&typed_by_the_user, true));
    }

    #[test]
    fn a_rebound_name_needs_a_token_or_an_allowance() {
        let rebound = headers(&[("host", "rebind.evil.example:9079")]);
        assert!(matches!(
            check(&rebound, true, &[]),
            Err(EngineError::Misdirected(_))
        ));
        assert!(
            check(&rebound, false, &[]).is_ok(),
            "a token keeps pages out"
        );
        assert!(check(&rebound, true, &["REBIND.evil.example".to_owned()]).is_ok());
        assert!(check(&headers(&[("host", "localhost.evil.example")]), true, &[]).is_err());
        assert!(check(&headers(&[("host", "ci.localhost:1")]), true, &[]).is_ok());
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("[::1]:9079"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("a.b:1"), "a.b");
        assert_eq!(host_name("a.b"), "a.b");
    }
}
