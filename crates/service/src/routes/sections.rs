//! `GET /stream/sections`: a stream's section index and completeness ledger; and
//! the writer's totals `DELETE /stream` takes.

use crate::error::ApiError;
use crate::extract::{Caller, Stream};
use crate::state::ServiceState;
use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::Uri;
use axum::http::request::Parts;
use runlog_protocol::Scope;
use runlog_protocol::ledger::WriterTotals;
use runlog_protocol::sections::SectionsAnswer;
use serde::Deserialize;

/// `GET /stream/sections`'s own query parameter.
#[derive(Debug, Deserialize)]
struct Since {
    /// List only the sections from this index on ([`SectionsAnswer::from`]).
    #[serde(default)]
    since: u32,
}

/// `GET /stream/sections?accountID=&key=[&since=N]`: the sections found so far
/// (live) or in the whole stream (closed or archived), and the ledger once closed;
/// with `since`, only the sections from index `N` on. Same access as reading the
/// stream.
pub async fn get(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
    uri: Uri,
) -> Result<Json<SectionsAnswer>, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let Since { since } = crate::extract::parse_query(&uri)?;
    let answer = st
        .sections()
        .answer(st.streams().as_ref(), st.blobs(), &q.id(), since)
        .await?;
    Ok(Json(answer))
}

/// The writer's totals in `DELETE /stream`'s query string (all optional), checked.
#[derive(Debug, Clone, Default)]
pub struct Totals(pub WriterTotals);

impl<S: Send + Sync> FromRequestParts<S> for Totals {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(totals) = Query::<WriterTotals>::try_from_uri(&parts.uri).map_err(|e| {
            ApiError::BadRequest(format!("invalid close totals: {}", e.body_text()))
        })?;
        totals.validate().map_err(ApiError::BadRequest)?;
        Ok(Totals(totals))
    }
}
