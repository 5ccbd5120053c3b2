//! [`bearer_token`]: how both servers read a caller's token from its headers.
//!
//! Both take `Authorization: Bearer <token>` (the scheme in any case, RFC 9110
//! §11.1). The log service also takes Harness's `X-Harness-Token` header and query
//! parameter, which its Harness clients send (`runlog_service::extract`); the engine
//! takes nothing else: no client of it sends another header, and one way in is one
//! way to get right.

use crate::HttpError;
use http::HeaderMap;

/// The token of `Authorization: Bearer <token>`; `Ok(None)` without the header.
/// A header that is not text, names another scheme or carries no token is a 401
/// saying so (a client that sent a token in the wrong form learns why it failed).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| HttpError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(HttpError::Unauthorized(
            "Authorization must be `Bearer <token>`".into(),
        ));
    }
    Ok(Some(token))
}

/// Whether `given` is `expected`, compared without an early exit, so the time an
/// answer takes says nothing about how much of a guess was right.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_in_any_case_is_read_and_other_forms_are_refused() {
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer_token(&with("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&with("bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&with("BEARER  abc ")), Ok(Some("abc")));
        for bad in ["Basic dXNlcg==", "Bearer", "Bearer ", "abc", "Bearerabc"] {
            assert!(
                matches!(bearer_token(&with(bad)), Err(HttpError::Unauthorized(_))),
                "{bad}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(b"Bearer \xff").expect("header"),
        );
        assert!(
            matches!(bearer_token(&h), Err(HttpError::Unauthorized(m)) if m.contains("malformed"))
        );
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("s3cret", "s3cret"));
        assert!(!tokens_match("s3cres", "s3cret"));
        assert!(!tokens_match("s3cre", "s3cret"));
        assert!(!tokens_match("", "s3cret"));
    }
}
