//! A client of the engine's stage API (`/setup`, `/step`, `/poll_step`,
//! `/destroy`) on the `protocol` types, so a controller writes no JSON by hand.
//!
//! ```ignore
//! let engine = EngineClient::new("http://127.0.0.1:9079", None)?;
//! engine.setup(&SetupRequest { log_config, ..Default::default() }).await?;
//! let result = engine.step(&StepRequest { id: "build".into(), script: Some("make".into()), ..Default::default() }).await?;
//! let report = engine.destroy().await?;
//! ```

use runlog_protocol::ErrorBody;
use runlog_protocol::engine::{
    DestroyResponse, PollStepRequest, SetupRequest, StepRequest, StepResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request did not get an answer (connection refused, reset, timed out).
    #[error("the engine did not answer: {0}")]
    NoAnswer(#[source] reqwest::Error),
    /// The engine answered with an error status.
    #[error("the engine refused ({status}): {msg}")]
    Refused {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// The engine's `error_msg`, or `no message`.
        msg: String,
    },
    /// The engine's answer is not the expected JSON.
    #[error("the engine's answer is not the expected JSON: {0}")]
    Malformed(String),
}

/// An HTTP client of one engine.
#[derive(Debug, Clone)]
pub struct EngineClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl EngineClient {
    /// A client of the engine at `base_url`, sending `token` (the engine's own,
    /// when it requires one) as `Authorization: Bearer`.
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        Self::with_client(reqwest::Client::new(), base_url, token)
    }

    /// A client that shares an existing HTTP client (and its connection pool).
    pub fn with_client(http: reqwest::Client, base_url: &str, token: Option<String>) -> Self {
        EngineClient {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The engine's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /setup`: creates the stage.
    pub async fn setup(&self, req: &SetupRequest) -> Result<(), EngineError> {
        self.post::<_, serde_json::Value>("/setup", req)
            .await
            .map(drop)
    }

    /// `POST /step` of a step that is not detached: waits for it and answers its
    /// result.
    pub async fn step(&self, req: &StepRequest) -> Result<StepResponse, EngineError> {
        let req = StepRequest {
            detach: false,
            ..req.clone()
        };
        self.post("/step", &req).await
    }

    /// `POST /step` detached: answers once the step started; its result comes
    /// from [`EngineClient::poll_step`].
    pub async fn start_step(&self, req: &StepRequest) -> Result<(), EngineError> {
        let req = StepRequest {
            detach: true,
            ..req.clone()
        };
        self.post::<_, serde_json::Value>("/step", &req)
            .await
            .map(drop)
    }

    /// `POST /poll_step`: waits for the step `id` to end and answers its result.
    pub async fn poll_step(&self, id: &str) -> Result<StepResponse, EngineError> {
        self.post("/poll_step", &PollStepRequest { id: id.to_owned() })
            .await
    }

    /// `POST /destroy`: stops the stage's steps, closes and archives its streams.
    pub async fn destroy(&self) -> Result<DestroyResponse, EngineError> {
        self.post("/destroy", &serde_json::json!({})).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, EngineError> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(EngineError::NoAnswer)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(EngineError::NoAnswer)?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map_or_else(|_| "no message".to_owned(), |e| e.error_msg);
            return Err(EngineError::Refused { status, msg });
        }
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Malformed(format!("{path}: {e}")))
    }
}
