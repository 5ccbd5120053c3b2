//! Routes Harness's log service offers beyond what runlog's own clients use, at the
//! same paths, so tools written for it work against runlog: `GET /token` (the
//! global token's route), `GET /ready/healthz`, `GET /stream/info`, `DELETE /blob`,
//! `GET /blob/exists` and the closing of several streams at once. Where Harness's
//! clients read a body (`/token`, `/blob/exists`) it is Harness's shape; elsewhere
//! the answers are runlog's (Harness's clients look at the status only).

use super::stream::info;
use crate::auth::mint_token;
use crate::error::ApiError;
use crate::extract::{Account, Caller, Stream};
use crate::state::ServiceState;
use crate::store::{StoreError, StreamId};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use runlog_protocol::service::StreamInfo;
use runlog_protocol::{AccountId, Scope, StreamKey};
use serde::Deserialize;
use std::time::Duration;

/// Lifetime of a token from `GET /token`: 48 hours, as Harness's log service mints
/// them (its callers fetch a new one per pipeline run).
pub const HARNESS_TOKEN_TTL: Duration = Duration::from_secs(48 * 3600);

/// `GET /token?accountID=A`: Harness's token route. The caller presents the
/// service's global credential — an admin token here — in `X-Harness-Token` (or
/// `?X-Harness-Token=`, or `Authorization: Bearer`), as Harness's managers do with
/// their `LOG_SERVICE_GLOBAL_TOKEN`; the answer is a write-scope token for the
/// account, valid for [`HARNESS_TOKEN_TTL`], as the bare body (`text/plain`), which
/// is what their clients read. 401 without a valid token, 403 with one that is not
/// admin.
pub async fn harness_token(
    State(st): State<ServiceState>,
    caller: Caller,
    Account(account): Account,
) -> Result<impl IntoResponse, ApiError> {
    if caller.0.scope != Scope::Admin {
        return Err(ApiError::Forbidden(
            "minting tokens needs the global (admin) token".into(),
        ));
    }
    let token = mint_token(st.secret(), Some(&account), Scope::Write, HARNESS_TOKEN_TTL)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token))
}

/// `GET /blob/exists?accountID=A&key=K` (read scope): `true` or `false` as the bare
/// body, as Harness's log service answers.
pub async fn blob_exists(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&q.0.account_id, Scope::Read)?;
    let exists = st.blobs().exists(&q.id()).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        if exists { "true" } else { "false" },
    ))
}

/// `DELETE /stream` closing several streams: `prefix=true` takes `key` as a prefix
/// and closes every open stream of the account whose key starts with it (Harness's
/// managers close a whole stage's or pipeline's streams so); `keys=K1,K2,…` closes
/// the streams named. `snapshot=true` archives each, as it does for one stream.
#[derive(Debug, Clone)]
pub struct CloseMany {
    account: AccountId,
    which: Which,
    snapshot: bool,
}

#[derive(Debug, Clone)]
enum Which {
    /// A string prefix of keys (not validated as a key: `a/b/` is a fine prefix).
    Prefix(String),
    /// Keys, each validated.
    Keys(Vec<StreamKey>),
}

/// The query of `DELETE /stream` as Harness's clients send it.
#[derive(Debug, Deserialize)]
struct CloseQuery {
    #[serde(rename = "accountID")]
    account_id: AccountId,
    #[serde(default)]
    key: String,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    prefix: bool,
    keys: Option<String>,
}

impl CloseMany {
    /// The several-stream close this query asks for, or `None` for an ordinary
    /// one-stream close (neither `prefix=true` nor `keys`). Refuses an empty prefix
    /// (it would close every stream of the account), an empty list and invalid keys.
    pub fn from_uri(uri: &axum::http::Uri) -> Result<Option<CloseMany>, ApiError> {
        let wants_many = uri.query().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| (k == "prefix" && v == "true") || k == "keys")
        });
        if !wants_many {
            return Ok(None);
        }
        let q: CloseQuery = crate::extract::parse_query(uri)?;
        let which = match (q.prefix, q.keys) {
            (true, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "give either prefix=true or keys, not both".into(),
                ));
            }
            (true, None) if q.key.is_empty() => {
                return Err(ApiError::BadRequest(
                    "prefix=true needs a non-empty key (the prefix)".into(),
                ));
            }
            (true, None) if q.key.chars().any(char::is_control) => {
                return Err(ApiError::BadRequest(
                    "the prefix holds a control character".into(),
                ));
            }
            (true, None) => Which::Prefix(q.key),
            (false, Some(list)) => {
                let keys = list
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        k.parse::<StreamKey>()
                            .map_err(|e| ApiError::BadRequest(format!("invalid key {k:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() {
                    return Err(ApiError::BadRequest("keys names no key".into()));
                }
                Which::Keys(keys)
            }
            (false, None) => return Ok(None),
        };
        Ok(Some(CloseMany {
            account: q.account_id,
            which,
            snapshot: q.snapshot,
        }))
    }
}

/// Closes the streams `many` names (write scope) and answers them as they are
/// now. Streams not in the live store are skipped, as Harness skips them ("no key
/// with that prefix is not an error"); a prefix closes only open streams, so a
/// closed stream's archive is not written again. A failure stops at that stream:
/// those before it are closed (and archived), the rest untouched, and the error is
/// the answer.
pub async fn close_many(
    st: &ServiceState,
    caller: &Caller,
    many: CloseMany,
) -> Result<Vec<StreamInfo>, ApiError> {
    caller.require(&many.account, Scope::Write)?;
    let ids: Vec<StreamId> = match many.which {
        Which::Prefix(prefix) => st
            .streams()
            .list(&many.account)
            .await?
            .into_iter()
            .filter(|m| m.open && m.id.key.as_str().starts_with(&prefix))
            .map(|m| m.id)
            .collect(),
        Which::Keys(keys) => keys
            .into_iter()
            .map(|key| StreamId {
                account: many.account.clone(),
                key,
            })
            .collect(),
    };
    let mut closed = Vec::with_capacity(ids.len());
    for id in ids {
        let meta = match st.streams().close(&id).await {
            Ok(meta) => meta,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        // Bulk closes state no writer totals: the ledger holds what the service proves.
        super::stream::after_close(st, &id, many.snapshot, &Default::default(), None).await?;
        closed.push(info(&meta, many.snapshot));
    }
    Ok(closed)
}

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
                complete: None,
                next_pos: None,
            })),
            None => Err(ApiError::NotFound(
                "stream not found (no live stream and no archive)".into(),
            )),
        },
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /blob?accountID=A&key=K` (write scope): deletes the stream's archive and
/// the section index kept with it; 204, or 404 when there is neither. The live
/// stream, if any, is left alone (a later close with `snapshot` archives it again).
pub async fn delete_blob(
    State(st): State<ServiceState>,
    caller: Caller,
    q: Stream,
) -> Result<StatusCode, ApiError> {
    caller.require(&q.0.account_id, Scope::Write)?;
    let id = q.id();
    let archive = st.blobs().delete(&id).await?;
    let index = crate::sections::delete_stored(st.blobs(), &id).await?;
    if archive || index {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("archive not found".into()))
    }
}
