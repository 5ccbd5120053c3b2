//! Request extractors that answer bad input with a JSON [`ApiError`]: validated
//! query strings and the caller's token.

use crate::auth::{Claims, verify_token};
use crate::error::ApiError;
use crate::state::ServiceState;
use crate::store::StreamId;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use runlog_protocol::service::{AccountQuery, StreamQuery};
use runlog_protocol::{AccountId, Scope};
use serde::de::DeserializeOwned;

/// Parses the query string into `T`, refusing bad input with 400 (this is where
/// invalid keys and account ids stop, before any store is touched).
fn query<T: DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    parse_query(&parts.uri)
}

/// [`query`] for a handler that reads the query string itself (one route, several
/// query shapes).
pub(crate) fn parse_query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
}

/// `?accountID=A&key=K[&snapshot=…]`, validated.
#[derive(Debug, Clone)]
pub struct Stream(pub StreamQuery);

impl Stream {
    /// The stream it names.
    pub fn id(&self) -> StreamId {
        StreamId {
            account: self.0.account_id.clone(),
            key: self.0.key.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Stream {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        query(parts).map(Stream)
    }
}

/// `?accountID=A`, validated.
#[derive(Debug, Clone)]
pub struct Account(pub AccountId);

impl<S: Send + Sync> FromRequestParts<S> for Account {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        query::<AccountQuery>(parts).map(|q| Account(q.account_id))
    }
}

/// Name of the query parameter that may carry the token, as Harness's log service
/// accepts it. The service never logs a request's query string (no access log, and
/// no message quotes a URL), so the token does not reach a log from there either.
pub const TOKEN_QUERY_PARAM: &str = "X-Harness-Token";

/// The token in the query string (`?X-Harness-Token=T`), if any.
fn query_token(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == TOKEN_QUERY_PARAM)
        .map(|(_, value)| value.into_owned())
}

/// The caller's verified token: `Authorization: Bearer T`, `X-Harness-Token: T`, or
/// (only when neither header is sent) `?X-Harness-Token=T`.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// Refuses with 403 unless the token allows `needed` on `account`.
    pub fn require(&self, account: &AccountId, needed: Scope) -> Result<(), ApiError> {
        if self.0.allows(account, needed) {
            return Ok(());
        }
        Err(ApiError::Forbidden(match &self.0.account {
            Some(own) if own != account => format!("token is for another account, not {account}"),
            _ => format!("token scope {} does not allow {needed}", self.0.scope),
        }))
    }
}

impl FromRequestParts<ServiceState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ServiceState) -> Result<Self, ApiError> {
        // `Authorization: Bearer` is read as the engine reads it (the edge's one
        // parser); Harness's header and query parameter are the service's alone.
        let bearer = runlog_edge::bearer_token(&parts.headers)?;
        let harness = parts
            .headers
            .get("x-harness-token")
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::Unauthorized("malformed X-Harness-Token header".into()))
            })
            .transpose()?;
        let in_query = if bearer.is_none() && harness.is_none() {
            query_token(parts)
        } else {
            None
        };
        let token = bearer.or(harness).or(in_query.as_deref()).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing token: send `Authorization: Bearer <token>`, `X-Harness-Token` \
                     or `?X-Harness-Token=`"
                    .into(),
            )
        })?;
        Ok(Caller(verify_token(state.secret(), token)?))
    }
}
