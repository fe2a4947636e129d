//! OTLP/HTTP: `POST /v1/logs`, `/v1/metrics`, `/v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed, through the shared HTTP path
//! ([`crate::http::serve_request`]).
//!
//! Statuses follow the OTLP spec: 200 with an `Export*ServiceResponse` (partial success when
//! records were refused), 400 for a malformed body, 413 for a body over
//! `sources.otlp.max_request_bytes` (before or after decompression) or whose rows would be over
//! `sources.otlp.max_row_bytes`, 415 for an unknown
//! content type or encoding, 429 with `Retry-After` when the buffer is full, 503 when the
//! agent cannot store data. Error bodies are a `google.rpc.Status` in the request's encoding.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
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
use weir_pipelines::{DecodeBudget, Signal};

use super::decode::{decode_to_arrow, Encoding};
use crate::http::{
    body, serve_request, Accepted, Coding, DecodeFailure, Decoded, ErrorBody, HttpSource, Protocol,
};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "otlp_http";

/// Key of the budget of a request's rows, on both transports.
pub const ROW_LIMIT_KEY: &str = "sources.otlp.max_row_bytes";

/// The OTLP/HTTP protocol.
pub struct OtlpHttp;

impl Protocol for OtlpHttp {
    type Endpoint = Signal;
    type Format = Encoding;
    const SOURCE: &'static str = SOURCE;
    const LIMIT_KEY: &'static str = "sources.otlp.max_request_bytes";
    const ROW_LIMIT_KEY: &'static str = ROW_LIMIT_KEY;

    fn format(&self, _: Signal, headers: &HeaderMap) -> Result<Encoding, String> {
        match body::media_type(headers).as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            "" => {
                Err("missing Content-Type: use application/x-protobuf or application/json".into())
            }
            other => Err(format!(
                "unsupported Content-Type {other:?}: use application/x-protobuf or application/json"
            )),
        }
    }

    /// Answer in the request's encoding when it is known; protobuf otherwise.
    fn error_body(&self, format: Option<Encoding>) -> ErrorBody {
        match format {
            Some(Encoding::Json) => ErrorBody::OtlpJson,
            _ => ErrorBody::OtlpProtobuf,
        }
    }

    fn codings(&self, _: Signal, _: Encoding) -> (&'static [Coding], Coding) {
        (&[Coding::Gzip], Coding::Identity)
    }

    fn decode(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: &[u8],
        received_at: i64,
        budget: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure> {
        decode_to_arrow(signal, encoding, body, received_at, budget)
    }

    fn respond(&self, _: Signal, encoding: Encoding, signal: Signal, a: Accepted) -> Response {
        success(signal, encoding, a)
    }
}

/// The routes of the OTLP/HTTP source.
pub fn router(source: Arc<HttpSource<OtlpHttp>>) -> Router {
    let route = |signal: Signal| {
        post(
            move |State(s): State<Arc<HttpSource<OtlpHttp>>>, r: Request| async move {
                serve_request(s, signal, r).await
            },
        )
    };
    Router::new()
        .route("/v1/logs", route(Signal::Logs))
        .route("/v1/metrics", route(Signal::Metrics))
        .route("/v1/traces", route(Signal::Traces))
        .with_state(source)
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
