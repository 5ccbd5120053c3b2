//! [`JsonBody`]: the JSON body extractor of both servers, whose every refusal is an
//! [`HttpError`] (so `{"error_msg": …}`), never axum's plain-text rejections.
//!
//! The `Content-Type` is not looked at: Go's client (a Harness runner) sends none and
//! `curl -d` sends a form type, and a content-type check would not stop a browser
//! anyway (the engine's browser guard does that). What is checked is the body itself:
//! too large → 413, unreadable → 400, not JSON or not the expected shape → 400
//! naming serde's line, column and cause.

use crate::HttpError;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// The request body parsed as `T`. An empty (or all-whitespace) body is read as `{}`,
/// so a request whose fields all have defaults may send none.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let body = read_body(Bytes::from_request(req, state).await)?;
        parse_json(&body).map(JsonBody)
    }
}

/// A buffered body, or the error for why it could not be read (413 past the route's
/// `DefaultBodyLimit`).
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, HttpError> {
    body.map_err(|e| {
        if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::TooLarge(format!("request body too large: {}", e.body_text()))
        } else {
            HttpError::BadRequest(format!("cannot read request body: {}", e.body_text()))
        }
    })
}

/// `body` parsed as `T` (blank as `{}`), or a 400 naming where and why it is not.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| HttpError::BadRequest(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Shape {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn blank_is_an_empty_object_and_bad_json_names_its_place() {
        assert_eq!(parse_json::<Shape>(b" \n"), Ok(Shape { n: 0 }));
        assert_eq!(parse_json::<Shape>(br#"{"n":3}"#), Ok(Shape { n: 3 }));
        let HttpError::BadRequest(m) = parse_json::<Shape>(b"{not json").expect_err("not JSON")
        else {
            panic!("a 400");
        };
        assert!(
            m.starts_with("malformed JSON body") && m.contains("line 1"),
            "{m}"
        );
        let HttpError::BadRequest(m) =
            parse_json::<Shape>(br#"{"n":"x"}"#).expect_err("wrong type")
        else {
            panic!("a 400");
        };
        assert!(m.contains("invalid type"), "{m}");
    }
}
