//! The error response of the HTTP sources that answer in their protocol's own error format
//! (Loki: plain text; Datadog: `{"errors": [...]}`), built in one place so that every refusal
//! is counted in `weir_rejected_requests_total` and retryable ones carry `Retry-After`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use weir_pipelines::ingest::Ingest;

use super::auth::AuthError;
use super::http_body::BodyError;
use super::set_retry_after;

/// How the error body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// `text/plain` message (Loki).
    Text,
    /// `{"errors": ["message"]}` (Datadog).
    JsonErrors,
}

/// A refused request.
#[derive(Debug)]
pub struct SourceError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    retry_after: Option<Duration>,
    body: ErrorBody,
}

impl SourceError {
    /// A refusal; a non-empty `reason` is counted for `source`. (Buffer refusals are counted by
    /// `Ingest` itself and pass an empty reason.)
    pub fn new(
        ingest: &Ingest,
        source: &str,
        body: ErrorBody,
        status: StatusCode,
        reason: &str,
        message: String,
    ) -> SourceError {
        if !reason.is_empty() {
            ingest.reject(source, reason);
        }
        SourceError {
            status,
            message,
            retry_after: None,
            body,
        }
    }

    /// A body that could not be read, decompressed or is too large.
    pub fn from_body(ingest: &Ingest, source: &str, body: ErrorBody, e: BodyError) -> SourceError {
        let (status, reason) = e.status();
        SourceError::new(ingest, source, body, status, reason, e.to_string())
    }

    /// A request that failed authentication.
    pub fn from_auth(ingest: &Ingest, source: &str, body: ErrorBody, e: AuthError) -> SourceError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
        SourceError::new(ingest, source, body, status, e.reason(), e.to_string())
    }

    /// Adds `Retry-After` when the refusal is retryable (429, 503).
    pub fn retry_after_if_retryable(mut self, after: Duration) -> SourceError {
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            self.retry_after = Some(after);
        }
        self
    }
}

impl IntoResponse for SourceError {
    fn into_response(self) -> Response {
        let mut r = match self.body {
            ErrorBody::Text => (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                self.message + "\n",
            )
                .into_response(),
            ErrorBody::JsonErrors => (
                self.status,
                Json(serde_json::json!({ "errors": [self.message] })),
            )
                .into_response(),
        };
        if let Some(after) = self.retry_after {
            set_retry_after(&mut r, after);
        }
        r
    }
}
