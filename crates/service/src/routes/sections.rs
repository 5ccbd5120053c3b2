//! `GET /stream/sections`: a stream's section index and completeness ledger; and
//! the writer's totals `DELETE /stream` takes.

use crate::error::ApiError;
use crate::extract::{Caller, Stream};
use crate::state::ServiceState;
use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use runlog_protocol::Scope;
use runlog_protocol::ledger::WriterTotals;
use runlog_protocol::sections::SectionsAnswer;

/// `GET /stream/sections?accountID=&key=`: the sections found so far (live) or in
/// the whole stream (closed or archived), and the ledger once closed. Same access
/// as reading the stream.
pub async fn get(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<Json<SectionsAnswer>, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let answer = st
        .sections()
        .answer(st.streams().as_ref(), st.blobs(), &q.id())
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
