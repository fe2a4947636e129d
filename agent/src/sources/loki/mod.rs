//! The Loki push source: `POST /loki/api/v1/push` on 3100, snappy-compressed protobuf
//! (`application/x-protobuf`, as Promtail and winston-loki send it) and JSON (`application/json`,
//! optionally gzip), plus `GET /ready` for clients that probe it.
//!
//! Answers like Loki: 204 on success; 400 with a plain-text reason for a malformed payload;
//! 413 when the body is over `sources.loki.max_request_bytes` (before or after
//! decompression); 415 for an unknown content type; 429 with `Retry-After` when the buffer
//! is full (Loki's rate-limit status, which clients retry); 503 when the agent cannot store.

pub mod decode;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use weir_pipelines::ingest::Ingest;
use weir_pipelines::logrows::LogsBuilder;
use weir_pipelines::{Batch, Signal};

use crate::sources::auth::ApiKeys;
use crate::sources::http_body::{self, BodyError, Coding};
use crate::sources::http_error::{ErrorBody, SourceError};
use crate::sources::{ingest_status, now_nanos, TENANT_HEADER};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "loki";
const LIMIT_KEY: &str = "sources.loki.max_request_bytes";

/// Settings of the Loki service.
#[derive(Clone)]
pub struct LokiState {
    /// Where batches go.
    pub ingest: Ingest,
    /// Largest body, compressed or not.
    pub max_request_bytes: usize,
    /// `Retry-After` when the buffer is full.
    pub retry_after: Duration,
    /// API keys → tenants.
    pub keys: ApiKeys,
}

/// The routes of the Loki source.
pub fn router(state: LokiState) -> Router {
    Router::new()
        .route("/loki/api/v1/push", post(push))
        .route("/api/prom/push", post(push))
        .route("/ready", get(|| async { "ready\n" }))
        .with_state(Arc::new(state))
}

fn fail(ingest: &Ingest, status: StatusCode, reason: &str, message: String) -> SourceError {
    SourceError::new(ingest, SOURCE, ErrorBody::Text, status, reason, message)
}

fn body_error(ingest: &Ingest, e: BodyError) -> SourceError {
    SourceError::from_body(ingest, SOURCE, ErrorBody::Text, e)
}

#[derive(Clone, Copy)]
enum Format {
    Protobuf,
    Json,
}

async fn push(
    State(state): State<Arc<LokiState>>,
    req: Request,
) -> Result<StatusCode, SourceError> {
    let received_at = now_nanos();
    let ingest = &state.ingest;
    let limit = state.max_request_bytes;
    let (parts, body) = req.into_parts();
    let format = match http_body::media_type(&parts.headers).as_str() {
        "application/json" => Format::Json,
        "application/x-protobuf" | "application/protobuf" | "" => Format::Protobuf,
        other => {
            return Err(fail(
                ingest,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!("unsupported Content-Type {other:?}: use application/x-protobuf (snappy) or application/json"),
            ))
        }
    };
    let key = ApiKeys::key_from_headers(&parts.headers, &[]);
    let tenant = state
        .keys
        .tenant(key, parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| SourceError::from_auth(ingest, SOURCE, ErrorBody::Text, e))?;
    let mut coding = http_body::coding(
        &parts.headers,
        &[Coding::Gzip, Coding::Deflate, Coding::Snappy],
    )
    .map_err(|e| body_error(ingest, e))?;
    // Loki's protobuf bodies are snappy blocks, with or without a Content-Encoding header.
    if matches!(format, Format::Protobuf) && coding == Coding::Identity {
        coding = Coding::Snappy;
    }
    let raw = http_body::read(&parts.headers, Body::new(body), limit, LIMIT_KEY)
        .await
        .map_err(|e| body_error(ingest, e))?;
    let ingest2 = ingest.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
        let body = http_body::decode(raw, coding, limit, LIMIT_KEY)
            .map_err(|e| body_error(&ingest2, e))?;
        let mut b = LogsBuilder::default();
        match format {
            Format::Protobuf => decode::decode_protobuf(&body, received_at, &mut b),
            Format::Json => decode::decode_json(&body, received_at, &mut b),
        }
        .map_err(|m| fail(&ingest2, StatusCode::BAD_REQUEST, "malformed", m))?;
        let records = b.finish().map_err(|e| {
            fail(
                &ingest2,
                StatusCode::BAD_REQUEST,
                "malformed",
                e.to_string(),
            )
        })?;
        let batch = Batch::new(tenant, Signal::Logs, SOURCE, received_at, records);
        ingest2
            .write(batch, body.len())
            .map_err(|e| fail(&ingest2, ingest_status(&e), "", e.to_string()))
    })
    .await
    .map_err(|e| {
        fail(
            ingest,
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            format!("request task failed: {e}"),
        )
    })?;
    match result {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.retry_after_if_retryable(state.retry_after)),
    }
}
