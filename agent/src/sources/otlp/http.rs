//! OTLP/HTTP: `POST /v1/logs`, `/v1/metrics`, `/v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed.
//!
//! Statuses follow the OTLP spec: 200 with an `Export*ServiceResponse` (partial success when
//! records were refused), 400 for a malformed body, 413 for a body over
//! `sources.otlp.max_request_bytes` (before or after decompression), 415 for an unknown
//! content type or encoding, 429 with `Retry-After` when the buffer is full, 503 when the
//! agent cannot store data. Error bodies are a `google.rpc.Status` in the request's encoding.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use weir_pipelines::ingest::Ingest;
use weir_pipelines::Signal;

use super::{accept, decode_body, Accepted, Encoding, OtlpError};
use crate::sources::auth::ApiKeys;
use crate::sources::http_body::{self, BodyError, Coding};
use crate::sources::{now_nanos, set_retry_after, TENANT_HEADER};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "otlp_http";

/// Settings of the HTTP service.
#[derive(Clone)]
pub struct HttpState {
    /// Where batches go.
    pub ingest: Ingest,
    /// Largest body, compressed or not.
    pub max_request_bytes: usize,
    /// `Retry-After` when the buffer is full.
    pub retry_after: Duration,
    /// API keys → tenants.
    pub keys: ApiKeys,
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

/// The routes of the OTLP/HTTP source.
pub fn router(state: HttpState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route(
            "/v1/logs",
            post(|s: State<Arc<HttpState>>, r: Request| export(s, Signal::Logs, r)),
        )
        .route(
            "/v1/metrics",
            post(|s: State<Arc<HttpState>>, r: Request| export(s, Signal::Metrics, r)),
        )
        .route(
            "/v1/traces",
            post(|s: State<Arc<HttpState>>, r: Request| export(s, Signal::Traces, r)),
        )
        .with_state(state)
}

struct HttpError {
    status: StatusCode,
    grpc_code: i32,
    message: String,
    encoding: Encoding,
    retry_after: Option<Duration>,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = RpcStatus {
            code: self.grpc_code,
            message: self.message,
        };
        let mut resp = match self.encoding {
            Encoding::Protobuf => (
                self.status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                status.encode_to_vec(),
            )
                .into_response(),
            Encoding::Json => (
                self.status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "code": status.code, "message": status.message }).to_string(),
            )
                .into_response(),
        };
        if let Some(after) = self.retry_after {
            set_retry_after(&mut resp, after);
        }
        resp
    }
}

fn error(
    ingest: &Ingest,
    status: StatusCode,
    reason: &str,
    message: String,
    encoding: Encoding,
) -> HttpError {
    ingest.reject(SOURCE, reason);
    // gRPC codes of google.rpc.Status: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE.
    let grpc_code = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::FORBIDDEN => 7,
        _ => 3,
    };
    HttpError {
        status,
        grpc_code,
        message,
        encoding,
        retry_after: None,
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    match http_body::media_type(headers).as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        "" => Err("missing Content-Type: use application/x-protobuf or application/json".into()),
        other => Err(format!(
            "unsupported Content-Type {other:?}: use application/x-protobuf or application/json"
        )),
    }
}

const LIMIT_KEY: &str = "sources.otlp.max_request_bytes";

fn body_error(ingest: &Ingest, e: BodyError, encoding: Encoding) -> HttpError {
    let (status, reason) = e.status();
    let message = match e {
        BodyError::Unsupported(m) => format!("{m}: use gzip or none"),
        other => other.to_string(),
    };
    error(ingest, status, reason, message, encoding)
}

async fn export(
    State(state): State<Arc<HttpState>>,
    signal: Signal,
    req: Request,
) -> Result<Response, HttpError> {
    let received_at = now_nanos();
    let ingest = &state.ingest;
    let limit = state.max_request_bytes;
    let (parts, body) = req.into_parts();
    // Answer in the request's encoding when it is known; protobuf otherwise.
    let encoding = content_encoding(&parts.headers).map_err(|msg| {
        error(
            ingest,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            msg,
            Encoding::Protobuf,
        )
    })?;
    let key = ApiKeys::key_from_headers(&parts.headers, &[]);
    let tenant = state
        .keys
        .tenant(key, parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
            error(ingest, status, e.reason(), e.to_string(), encoding)
        })?;
    let coding = http_body::coding(&parts.headers, &[Coding::Gzip])
        .map_err(|e| body_error(ingest, e, encoding))?;
    let raw = http_body::read(&parts.headers, Body::new(body), limit, LIMIT_KEY)
        .await
        .map_err(|e| body_error(ingest, e, encoding))?;
    let ingest2 = state.ingest.clone();
    let retry_after = state.retry_after;
    let result = tokio::task::spawn_blocking(
        move || -> Result<Accepted, (StatusCode, &'static str, String)> {
            let body = http_body::decode(raw, coding, limit, LIMIT_KEY).map_err(|e| {
                let (status, reason) = e.status();
                (status, reason, e.to_string())
            })?;
            let request = decode_body(signal, encoding, &body)
                .map_err(|e| (StatusCode::BAD_REQUEST, "malformed", e.to_string()))?;
            accept(&ingest2, SOURCE, tenant, &request, body.len(), received_at).map_err(|e| match e
            {
                OtlpError::BadRequest(m) => (StatusCode::BAD_REQUEST, "malformed", m),
                OtlpError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "", m),
                OtlpError::Full(m) => (StatusCode::TOO_MANY_REQUESTS, "", m),
                OtlpError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "", m),
            })
        },
    )
    .await
    .map_err(|e| {
        error(
            ingest,
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            format!("request task failed: {e}"),
            encoding,
        )
    })?;
    match result {
        Ok(accepted) => Ok(success(signal, encoding, accepted)),
        Err((status, reason, message)) => {
            // Buffer refusals were counted by Ingest; count decoding refusals here.
            let mut e = if reason.is_empty() {
                let grpc_code = if status == StatusCode::SERVICE_UNAVAILABLE {
                    14
                } else {
                    8
                };
                HttpError {
                    status,
                    grpc_code,
                    message,
                    encoding,
                    retry_after: None,
                }
            } else {
                error(ingest, status, reason, message, encoding)
            };
            if matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) {
                e.retry_after = Some(retry_after);
            }
            Err(e)
        }
    }
}

fn success(signal: Signal, encoding: Encoding, a: Accepted) -> Response {
    let msg = a.error.unwrap_or_default();
    let partial = a.rejected > 0;
    macro_rules! respond {
        ($resp:expr) => {{
            let r = $resp;
            match encoding {
                Encoding::Protobuf => (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    r.encode_to_vec(),
                )
                    .into_response(),
                Encoding::Json => {
                    // `{}` on full success, as collectors answer; the partial success otherwise.
                    let body = if r.partial_success.is_some() {
                        serde_json::to_string(&r).unwrap_or_else(|_| "{}".into())
                    } else {
                        "{}".to_string()
                    };
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
            }
        }};
    }
    match signal {
        Signal::Logs => respond!(ExportLogsServiceResponse {
            partial_success: partial.then_some(ExportLogsPartialSuccess {
                rejected_log_records: a.rejected as i64,
                error_message: msg
            }),
        }),
        Signal::Metrics => respond!(ExportMetricsServiceResponse {
            partial_success: partial.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: a.rejected as i64,
                error_message: msg
            }),
        }),
        Signal::Traces => respond!(ExportTraceServiceResponse {
            partial_success: partial.then_some(ExportTracePartialSuccess {
                rejected_spans: a.rejected as i64,
                error_message: msg
            }),
        }),
    }
}
