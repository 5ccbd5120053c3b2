//! The job routes, under `/v2/{endpoint_id}/` (so RunPod's SDKs work with
//! `RUNPOD_ENDPOINT_BASE_URL=http://HOST:PORT/v2`) and at the root (one endpoint).
//! The README ("Using runlog as a RunPod worker") lists each route and its answer.
//!
//! The endpoint id only has to be well formed: an engine is one endpoint.

use crate::jobs::{JobError, MAX_WAIT};
use crate::state::EngineState;
use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use runlog_protocol::function::FunctionRequest;
use runlog_protocol::job::{JobAccepted, JobErrorBody, JobStatus, PurgeAnswer};
use std::time::Duration;

/// The job routes at the root and under `/v2/{endpoint_id}/`, over the state's
/// [`EngineState::jobs`].
pub fn routes() -> Router<EngineState> {
    let one = || {
        Router::new()
            .route("/run", post(run))
            .route("/runsync", post(runsync))
            .route("/status/{job_id}", get(status).post(status))
            .route("/cancel/{job_id}", post(cancel).get(cancel))
            .route("/stream/{job_id}", get(stream).post(stream))
            .route("/health", get(health))
            .route("/purge-queue", post(purge))
    };
    let scoped = one().layer(axum::middleware::from_fn(check_endpoint_id));
    Router::new().merge(one()).nest("/v2/{endpoint_id}", scoped)
}

/// A job route's refusal: RunPod's `{"error"}` plus runlog's `{"error_msg"}`.
impl IntoResponse for JobError {
    fn into_response(self) -> Response {
        let status = match &self {
            JobError::BadRequest(_) => StatusCode::BAD_REQUEST,
            JobError::NotFound(_) => StatusCode::NOT_FOUND,
            JobError::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            JobError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        (status, Json(JobErrorBody::new(self.to_string()))).into_response()
    }
}

/// The edge's refusal of a body (413 too large, 400 otherwise) as a job route's.
impl From<runlog_edge::HttpError> for JobError {
    fn from(e: runlog_edge::HttpError) -> Self {
        match e {
            runlog_edge::HttpError::TooLarge(m) => JobError::TooLarge(m),
            other => JobError::BadRequest(other.to_string()),
        }
    }
}

/// Refuses an endpoint id that is empty, longer than 128 bytes or not
/// `[A-Za-z0-9_.-]` (it is echoed in nothing, but a sane id keeps logs sane).
async fn check_endpoint_id(
    Path(params): Path<std::collections::HashMap<String, String>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let id = params.get("endpoint_id").map(String::as_str).unwrap_or("");
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        next.run(req).await
    } else {
        JobError::BadRequest("endpoint id must be 1 to 128 of A-Z a-z 0-9 _ - .".into())
            .into_response()
    }
}

/// A job request: the call and RunPod's `policy.executionTimeout`.
struct Envelope {
    call: FunctionRequest,
    execution_timeout: Option<Duration>,
}

/// The `{"input": {…}, "policy": {"executionTimeout": MS}}` envelope of `run` and
/// `runsync` (other fields, such as RunPod's `webhook`, are ignored).
async fn envelope(req: Request) -> Result<Envelope, JobError> {
    // The edge's body reading and JSON errors, answered in RunPod's error shape.
    let body = runlog_edge::json::read_body(Bytes::from_request(req, &()).await)?;
    let value: serde_json::Value = runlog_edge::json::parse_json(&body)?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(JobError::BadRequest(
            "malformed JSON body: expected {\"input\": {…}}".into(),
        ));
    };
    let Some(input) = map.remove("input") else {
        return Err(JobError::BadRequest(
            "the body must be {\"input\": {…}}: no \"input\" field".into(),
        ));
    };
    let call = serde_json::from_value(input)
        .map_err(|e| JobError::BadRequest(format!("malformed JSON body: input: {e}")))?;
    let execution_timeout = match map.get("policy").and_then(|p| p.get("executionTimeout")) {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(ms) if ms > 0 => Some(Duration::from_millis(ms)),
            _ => {
                return Err(JobError::BadRequest(
                    "policy.executionTimeout must be a positive whole number of milliseconds"
                        .into(),
                ));
            }
        },
    };
    Ok(Envelope {
        call,
        execution_timeout,
    })
}

/// Queues the job `req` describes, with the stage's secrets and log service; its id.
async fn submit(engine: &EngineState, req: Request) -> Result<String, JobError> {
    let env = envelope(req).await?;
    engine.jobs().submit(
        env.call,
        engine.stage_secrets(),
        engine.stage_log_config(),
        env.execution_timeout,
    )
}

async fn run(
    State(engine): State<EngineState>,
    req: Request,
) -> Result<Json<JobAccepted>, JobError> {
    let id = submit(&engine, req).await?;
    Ok(Json(JobAccepted {
        id,
        status: JobStatus::InQueue,
    }))
}

/// `?wait=MS`: how long `runsync` or `status` waits for the job to end (`default`
/// without it; at most [`MAX_WAIT`]).
fn wait_param(query: Option<&str>, default: Duration) -> Result<Duration, JobError> {
    let wait = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("wait="));
    let Some(raw) = wait else {
        return Ok(default);
    };
    let ms: u64 = raw.parse().map_err(|_| {
        let shown: String = raw.chars().take(32).collect();
        JobError::BadRequest(format!(
            "wait must be a whole number of milliseconds, got {shown:?}"
        ))
    })?;
    Ok(Duration::from_millis(ms).min(MAX_WAIT))
}

async fn runsync(State(engine): State<EngineState>, req: Request) -> Result<Response, JobError> {
    let jobs = engine.jobs();
    let wait = wait_param(req.uri().query(), jobs.config().runsync_wait)?;
    let id = submit(&engine, req).await?;
    let record = jobs.wait(&id, wait).await?;
    Ok(Json(record).into_response())
}

/// The path of a route about one job: its `{job_id}` (a nested route's
/// `{endpoint_id}` is [`check_endpoint_id`]'s).
#[derive(serde::Deserialize)]
struct JobPath {
    job_id: String,
}

/// A job's record; held while the job is queued or running, up to `?wait=` (the
/// configured `status_wait` without it), so a poller learns of the end at once.
async fn status(
    State(engine): State<EngineState>,
    Path(job): Path<JobPath>,
    uri: http::Uri,
) -> Result<Response, JobError> {
    let wait = wait_param(uri.query(), engine.jobs().config().status_wait)?;
    Ok(Json(engine.jobs().wait(&job.job_id, wait).await?).into_response())
}

async fn cancel(
    State(engine): State<EngineState>,
    Path(job): Path<JobPath>,
) -> Result<Response, JobError> {
    Ok(Json(engine.jobs().cancel(&job.job_id)?).into_response())
}

async fn stream(
    State(engine): State<EngineState>,
    Path(job): Path<JobPath>,
) -> Result<Response, JobError> {
    Ok(Json(engine.jobs().stream(&job.job_id)?).into_response())
}

async fn health(State(engine): State<EngineState>) -> Response {
    Json(engine.jobs().health()).into_response()
}

async fn purge(State(engine): State<EngineState>) -> Response {
    Json(PurgeAnswer {
        removed: engine.jobs().purge(),
        status: "completed".into(),
    })
    .into_response()
}
