//! The error response of every HTTP source, built in one place so that every refusal is
//! counted in `weir_rejected_requests_total`, retryable ones carry `Retry-After`, and each
//! protocol answers in its own error shape.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prost::Message;
use weir_pipelines::ingest::Ingest;

use super::Refusal;

/// How the error body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// `text/plain` message (Loki).
    Text,
    /// `{"errors": ["message"]}` (Datadog).
    JsonErrors,
    /// A protobuf `google.rpc.Status` (OTLP/HTTP with protobuf bodies).
    OtlpProtobuf,
    /// A `google.rpc.Status` in the OTLP JSON mapping (OTLP/HTTP with JSON bodies).
    OtlpJson,
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// A refused request.
#[derive(Debug)]
pub struct SourceError {
    /// Why.
    pub refusal: Refusal,
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
        refusal: Refusal,
        reason: &str,
        message: String,
    ) -> SourceError {
        if !reason.is_empty() {
            ingest.reject(source, reason);
        }
        SourceError {
            refusal,
            message,
            retry_after: None,
            body,
        }
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, after: Duration) -> SourceError {
        self.retry_after = Some(after);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.refusal.status()
    }
}

/// Adds `Retry-After` (whole seconds, at least 1) to a response.
pub fn set_retry_after(resp: &mut Response, after: Duration) {
    if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

impl IntoResponse for SourceError {
    fn into_response(self) -> Response {
        let status = self.status();
        let rpc = || RpcStatus {
            code: self.refusal.grpc_code() as i32,
            message: self.message.clone(),
        };
        let mut r = match self.body {
            ErrorBody::Text => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{}\n", self.message),
            )
                .into_response(),
            ErrorBody::JsonErrors => (
                status,
                Json(serde_json::json!({ "errors": [self.message] })),
            )
                .into_response(),
            ErrorBody::OtlpProtobuf => (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                rpc().encode_to_vec(),
            )
                .into_response(),
            ErrorBody::OtlpJson => {
                let s = rpc();
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({ "code": s.code, "message": s.message }).to_string(),
                )
                    .into_response()
            }
        };
        if let Some(after) = self.retry_after {
            set_retry_after(&mut r, after);
        }
        r
    }
}
