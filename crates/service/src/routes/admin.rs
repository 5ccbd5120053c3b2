//! Account-wide and operational routes: `/token`, `/streams`, `/healthz`,
//! `/metrics`, and the benchmark's `/bench/discard`.

use super::{body, rfc3339};
use crate::auth::mint_token;
use crate::error::ApiError;
use crate::extract::{Account, Caller};
use crate::state::ServiceState;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use runlog_protocol::Scope;
use runlog_protocol::service::{Health, StreamInfo, TokenRequest, TokenResponse};
use std::collections::BTreeMap;
use std::time::Duration;

/// Lifetime of a token when the request names none.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// `POST /token?accountID=A` (admin only): mints an account token.
pub async fn token(
    State(st): State<ServiceState>,
    caller: Caller,
    Account(account): Account,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    if caller.0.scope != Scope::Admin {
        return Err(ApiError::Forbidden(
            "minting tokens needs an admin token".into(),
        ));
    }
    let raw = body(raw)?;
    // Blank is `{}`: every field has a default.
    let req: TokenRequest = runlog_edge::json::parse_json(&raw)
        .map_err(|e| e.map_message(|m| format!("invalid token request: {m}")))?;
    let ttl = match req.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(s) => humantime::parse_duration(s)
            .map_err(|e| ApiError::BadRequest(format!("invalid ttl {s:?}: {e}")))?,
    };
    let scope = req.scope.unwrap_or(Scope::Write);
    let token = mint_token(st.secret(), Some(&account), scope, ttl)?;
    let expires = rfc3339(std::time::SystemTime::now() + ttl);
    Ok(Json(TokenResponse {
        token,
        account,
        scope,
        expires,
    }))
}

/// `GET /streams`' own query parameter.
#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    /// Add each closed stream's ledger verdict (`StreamInfo::complete`).
    #[serde(default)]
    ledger: bool,
}

/// Stored indexes read at once for `?ledger=true`.
const LEDGER_READS: usize = 16;

/// `GET /streams?accountID=A[&ledger=true]`: the account's live and archived
/// streams, newest activity first; with `ledger`, each closed stream's ledger
/// verdict from its stored index (one small object read per closed stream, so
/// only when asked).
pub async fn list(
    State(st): State<ServiceState>,
    caller: Caller,
    Account(account): Account,
    uri: axum::http::Uri,
) -> Result<Json<Vec<StreamInfo>>, ApiError> {
    caller.require(&account, Scope::Read)?;
    let ListQuery { ledger } = crate::extract::parse_query(&uri)?;
    let live = st.streams().list(&account).await?;
    let archived = st.blobs().list(&account).await?;
    let mut by_key: BTreeMap<String, (StreamInfo, std::time::SystemTime)> = BTreeMap::new();
    for m in live {
        by_key.insert(
            m.id.key.to_string(),
            (super::stream::info(&m, false), m.last_activity),
        );
    }
    for a in archived {
        let entry = by_key.entry(a.key.to_string()).or_insert_with(|| {
            let info = StreamInfo {
                key: a.key.clone(),
                open: false,
                lines: 0,
                bytes: 0,
                archived: true,
                last_activity: rfc3339(a.last_modified),
                complete: None,
                next_pos: None,
            };
            (info, a.last_modified)
        });
        entry.0.archived = true;
        if a.last_modified > entry.1 {
            entry.1 = a.last_modified;
            entry.0.last_activity = rfc3339(a.last_modified);
        }
    }
    let mut rows: Vec<_> = by_key.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let mut rows: Vec<StreamInfo> = rows.into_iter().map(|(info, _)| info).collect();
    if ledger {
        let closed: Vec<Option<crate::store::StreamId>> = rows
            .iter()
            .map(|row| {
                (!row.open).then(|| crate::store::StreamId {
                    account: account.clone(),
                    key: row.key.clone(),
                })
            })
            .collect();
        let verdicts: Vec<Option<bool>> = futures_util::stream::iter(closed)
            .map(|id| {
                let blobs = st.blobs().clone();
                async move { crate::sections::stored_verdict(&blobs, &id?).await }
            })
            .buffered(LEDGER_READS)
            .collect()
            .await;
        rows.iter_mut()
            .zip(verdicts)
            .for_each(|(row, v)| row.complete = v);
    }
    Ok(Json(rows))
}

/// `GET /healthz`: 200 when every backend answers, 503 otherwise.
pub async fn health(State(st): State<ServiceState>) -> impl IntoResponse {
    let mut backends = BTreeMap::new();
    let streams = st.streams().health().await.map_err(|e| e.to_string());
    let blobs = st.blobs().health().await.map_err(|e| e.to_string());
    let ok = streams.is_ok() && blobs.is_ok();
    backends.insert(
        "streams".to_owned(),
        streams.err().unwrap_or_else(|| "ok".into()),
    );
    backends.insert(
        "blobs".to_owned(),
        blobs.err().unwrap_or_else(|| "ok".into()),
    );
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let h = Health {
        ok,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        backends,
    };
    (status, Json(h))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(st): State<ServiceState>) -> impl IntoResponse {
    let open = st
        .streams()
        .list_all()
        .await
        .map_or(0, |v| v.iter().filter(|m| m.open).count() as u64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics().render(open, st.body_budget().in_use()),
    )
}

/// `PUT /bench/discard`: reads the body and drops it. Mounted only with
/// `bench_discard`; the ingest benchmark's ceiling (HTTP and body transfer alone).
/// Reads the body as `PUT /stream` does.
pub async fn discard(
    State(st): State<ServiceState>,
    headers: axum::http::HeaderMap,
    raw: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let raw =
        super::owned_body(st.body_budget(), &headers, raw, st.config().max_append_body).await?;
    Ok(Json(serde_json::json!({ "discarded_bytes": raw.len() })))
}
