//! Routes Harness's log service offers beyond what runlog's own clients use, at the
//! same paths, so tools written for it work against runlog: `GET /ready/healthz`,
//! `GET /stream/info` and `DELETE /blob`. Their answers are runlog's shapes (Harness's
//! exact bodies are not part of the protocol its clients read: they look at the status).

use super::stream::info;
use crate::error::ApiError;
use crate::extract::{Caller, Stream};
use crate::state::ServiceState;
use crate::store::StoreError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use runlog_protocol::Scope;
use runlog_protocol::service::StreamInfo;

/// `GET /ready/healthz`: the readiness probe Harness deployments point at; the same
/// answer as `GET /healthz` (200 when every backend answers, 503 otherwise).
pub async fn ready(st: State<ServiceState>) -> impl IntoResponse {
    super::admin::health(st).await
}

/// `GET /stream/info?accountID=A&key=K` (read scope): one stream as `GET /streams`
/// lists it — live (open or closed, with its line and byte counts) or only archived.
/// 404 when there is neither.
pub async fn stream_info(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<Json<StreamInfo>, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let id = q.id();
    let archived_at = st.blobs().modified(&id).await?;
    match st.streams().meta(&id).await {
        Ok(meta) => Ok(Json(info(&meta, archived_at.is_some()))),
        Err(StoreError::NotFound) => match archived_at {
            Some(at) => Ok(Json(StreamInfo {
                key: id.key,
                open: false,
                lines: 0,
                bytes: 0,
                archived: true,
                last_activity: super::rfc3339(at),
            })),
            None => Err(ApiError::NotFound(
                "stream not found (no live stream and no archive)".into(),
            )),
        },
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /blob?accountID=A&key=K` (write scope): deletes the stream's archive; 204,
/// or 404 when there is none. The live stream, if any, is left alone (a later close
/// with `snapshot` archives it again).
pub async fn delete_blob(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<StatusCode, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    if st.blobs().delete(&q.id()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("archive not found".into()))
    }
}
