//! The Datadog Agent intake (HTTP 8282): `/api/v2/logs`, `/api/v1/series`, `/api/v2/series`,
//! `/api/v1/validate` and `/api/v1/check_run`, answered as the Datadog intake does (202 with
//! `{}`), so the Agent, `datadog-api-client` and the `datadog` library can point their host at
//! Weir. Bodies may be gzip or deflate (the Agent's default). `DD-API-KEY` (or the `api_key`
//! query parameter older clients use) is checked against `auth.api_keys` when keys are
//! configured, and selects the tenant.

pub mod logs;
pub mod series;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::logrows::LogsBuilder;
use weir_pipelines::otlp::decode_metrics;
use weir_pipelines::{Batch, Signal};

use crate::sources::auth::{ApiKeys, AuthError};
use crate::sources::http_body::{self, BodyError, Coding};
use crate::sources::http_error::{ErrorBody, SourceError};
use crate::sources::{ingest_status, now_nanos, TENANT_HEADER};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "datadog";
const LIMIT_KEY: &str = "sources.datadog.max_request_bytes";
const DD_API_KEY: &str = "dd-api-key";

/// Settings of the Datadog service.
#[derive(Clone)]
pub struct DatadogState {
    /// Where batches go.
    pub ingest: Ingest,
    /// API keys → tenants.
    pub keys: ApiKeys,
    /// Largest body, compressed or not.
    pub max_request_bytes: usize,
    /// `Retry-After` when the buffer is full.
    pub retry_after: Duration,
}

/// The routes of the Datadog source.
pub fn router(state: DatadogState) -> Router {
    Router::new()
        .route(
            "/api/v2/logs",
            post(
                |s: State<Arc<DatadogState>>, q: Query<HashMap<String, String>>, r: Request| {
                    intake(s, q, Endpoint::Logs, r)
                },
            ),
        )
        .route(
            "/api/v1/series",
            post(
                |s: State<Arc<DatadogState>>, q: Query<HashMap<String, String>>, r: Request| {
                    intake(s, q, Endpoint::SeriesV1, r)
                },
            ),
        )
        .route(
            "/api/v2/series",
            post(
                |s: State<Arc<DatadogState>>, q: Query<HashMap<String, String>>, r: Request| {
                    intake(s, q, Endpoint::SeriesV2, r)
                },
            ),
        )
        .route(
            "/api/v1/check_run",
            post(
                |s: State<Arc<DatadogState>>, q: Query<HashMap<String, String>>, r: Request| {
                    intake(s, q, Endpoint::CheckRun, r)
                },
            ),
        )
        .route("/api/v1/validate", get(validate))
        .with_state(Arc::new(state))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Logs,
    SeriesV1,
    SeriesV2,
    CheckRun,
}

fn fail(ingest: &Ingest, status: StatusCode, reason: &str, message: String) -> SourceError {
    SourceError::new(
        ingest,
        SOURCE,
        ErrorBody::JsonErrors,
        status,
        reason,
        message,
    )
}

fn auth_error(ingest: &Ingest, e: AuthError) -> SourceError {
    SourceError::from_auth(ingest, SOURCE, ErrorBody::JsonErrors, e)
}

fn authenticate(
    state: &DatadogState,
    headers: &axum::http::HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, AuthError> {
    let key = ApiKeys::key_from_headers(headers, &[DD_API_KEY])
        .or_else(|| query.get("api_key").map(String::as_str));
    state
        .keys
        .tenant(key, headers.get(TENANT_HEADER).map(|v| v.as_bytes()))
}

async fn validate(
    State(state): State<Arc<DatadogState>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Json<serde_json::Value>, SourceError> {
    authenticate(&state, req.headers(), &q).map_err(|e| auth_error(&state.ingest, e))?;
    Ok(Json(serde_json::json!({ "valid": true })))
}

async fn intake(
    State(state): State<Arc<DatadogState>>,
    Query(query): Query<HashMap<String, String>>,
    endpoint: Endpoint,
    req: Request,
) -> Result<Response, SourceError> {
    let received_at = now_nanos();
    let ingest = &state.ingest;
    let limit = state.max_request_bytes;
    let (parts, body) = req.into_parts();
    let tenant = authenticate(&state, &parts.headers, &query).map_err(|e| auth_error(ingest, e))?;
    let body_error = |e: BodyError| {
        let (status, reason) = e.status();
        fail(ingest, status, reason, e.to_string())
    };
    let coding =
        http_body::coding(&parts.headers, &[Coding::Gzip, Coding::Deflate]).map_err(body_error)?;
    let protobuf = matches!(
        http_body::media_type(&parts.headers).as_str(),
        "application/x-protobuf" | "application/protobuf"
    );
    let raw = http_body::read(&parts.headers, Body::new(body), limit, LIMIT_KEY)
        .await
        .map_err(body_error)?;
    let ingest2 = ingest.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), SourceError> {
        let body = http_body::decode(raw, coding, limit, LIMIT_KEY).map_err(|e| match e {
            BodyError::TooLarge(m) => fail(&ingest2, StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            other => fail(
                &ingest2,
                StatusCode::BAD_REQUEST,
                "decompress",
                other.to_string(),
            ),
        })?;
        let bad = |m: String| fail(&ingest2, StatusCode::BAD_REQUEST, "malformed", m);
        let (signal, records) = match endpoint {
            Endpoint::CheckRun => {
                let checks: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| bad(format!("malformed check_run payload: {e}")))?;
                let n = checks.as_array().map(Vec::len).unwrap_or(1) as u64;
                ingest2
                    .metrics()
                    .received_records
                    .with_label_values(&[SOURCE, "check_runs"])
                    .inc_by(n);
                return Ok(());
            }
            Endpoint::Logs => {
                let mut b = LogsBuilder::default();
                logs::decode(&body, received_at, &mut b).map_err(bad)?;
                (Signal::Logs, b.finish().map_err(|e| bad(e.to_string()))?)
            }
            Endpoint::SeriesV1 | Endpoint::SeriesV2 => {
                let parsed = match (endpoint, protobuf) {
                    (Endpoint::SeriesV1, _) => series::parse_v1(&body),
                    (_, true) => series::parse_v2_protobuf(&body),
                    (_, false) => series::parse_v2_json(&body),
                }
                .map_err(bad)?;
                let decoded = decode_metrics(&series::to_otlp(parsed), received_at)
                    .map_err(|e| bad(e.to_string()))?;
                (Signal::Metrics, decoded.records)
            }
        };
        let batch = Batch::new(tenant, signal, SOURCE, received_at, records);
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
        Ok(()) if endpoint == Endpoint::CheckRun => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "ok" })),
        )
            .into_response()),
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))).into_response()),
        Err(e) => Err(e.retry_after_if_retryable(state.retry_after)),
    }
}
