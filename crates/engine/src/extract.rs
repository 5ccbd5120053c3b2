//! [`JsonBody`]: a JSON body extractor whose failures are `{"error_msg": …}` answers.
//!
//! axum's own `Json` answers rejections in plain text and with 415/422; controllers
//! expect one JSON error shape and a 400 for anything malformed.

use crate::error::EngineError;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// The request body parsed as `T`. An empty body is read as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = EngineError;

    async fn from_request(req: Request, state: &S) -> Result<Self, EngineError> {
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                EngineError::TooLarge(format!("request body too large: {e}"))
            } else {
                EngineError::BadRequest(format!("could not read the request body: {e}"))
            }
        })?;
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(body)
            .map(JsonBody)
            .map_err(|e| EngineError::BadRequest(format!("malformed JSON body: {e}")))
    }
}
