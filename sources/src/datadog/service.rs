//! The Datadog intake protocol on the shared HTTP path, and building the source.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::IgnoredAny;
use weir_pipelines::logrows::LogsBuilder;
use weir_pipelines::metricrows::MetricsBuilder;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::otlp::shape::struct_bytes;
use weir_pipelines::{DecodeBudget, Signal};

use super::{logs, series};
use crate::auth::ApiKeys;
use crate::contract::SourceContext;
use crate::http::{
    body, serve_request, Accepted, Coding, DecodeFailure, Decoded, ErrorBody, HttpLimits,
    HttpSource, Protocol, SourceError,
};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "datadog";
const DD_API_KEY: &str = "dd-api-key";

/// The intake's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/v2/logs`.
    Logs,
    /// `/api/v1/series` (JSON).
    SeriesV1,
    /// `/api/v2/series` (JSON or the Agent's protobuf).
    SeriesV2,
    /// `/api/v1/check_run` (counted, not stored).
    CheckRun,
}

/// The Datadog intake protocol.
pub struct Datadog {
    metrics: Metrics,
}

impl Protocol for Datadog {
    type Endpoint = Endpoint;
    /// Whether the body is protobuf (`/api/v2/series` from the Agent).
    type Format = bool;
    const SOURCE: &'static str = SOURCE;
    const LIMIT_KEY: &'static str = "sources.datadog.max_request_bytes";
    const ROW_LIMIT_KEY: &'static str = "sources.datadog.max_row_bytes";

    fn format(&self, _: Endpoint, headers: &HeaderMap) -> Result<bool, String> {
        Ok(matches!(
            body::media_type(headers).as_str(),
            "application/x-protobuf" | "application/protobuf"
        ))
    }

    fn error_body(&self, _: Option<bool>) -> ErrorBody {
        ErrorBody::JsonErrors
    }

    fn codings(&self, _: Endpoint, _: bool) -> (&'static [Coding], Coding) {
        (&[Coding::Gzip, Coding::Deflate], Coding::Identity)
    }

    /// `DD-API-KEY`, or the `api_key` query parameter older clients use (form-decoded).
    fn api_key<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
        if let Some(k) = ApiKeys::key_from_headers(headers, &[DD_API_KEY]) {
            return Some(Cow::Borrowed(k));
        }
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v)
    }

    fn decode(
        &self,
        endpoint: Endpoint,
        protobuf: bool,
        body: &[u8],
        received_at: i64,
        budget: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure> {
        match endpoint {
            Endpoint::CheckRun => {
                // Counted, not stored: validated and counted without building a tree (a
                // value tree of many small values takes many times the body).
                let n = match serde_json::from_slice::<Vec<IgnoredAny>>(body) {
                    Ok(checks) => checks.len() as u64,
                    Err(_) => {
                        serde_json::from_slice::<IgnoredAny>(body)
                            .map_err(|e| format!("malformed check_run payload: {e}"))?;
                        1
                    }
                };
                self.metrics.received_unstored(SOURCE, "check_runs", n);
                Ok(Decoded {
                    signal: Signal::Metrics,
                    records: None,
                    rejected: 0,
                    error: None,
                    headers: Vec::new(),
                    counted: Vec::new(),
                })
            }
            Endpoint::Logs => {
                let mut b = LogsBuilder::default();
                logs::decode(body, received_at, budget, &mut b)?;
                Ok(Decoded::rows(
                    Signal::Logs,
                    b.finish().map_err(|e| e.to_string())?,
                ))
            }
            Endpoint::SeriesV1 | Endpoint::SeriesV2 => {
                let parsed = match (endpoint, protobuf) {
                    (Endpoint::SeriesV1, _) => series::parse_v1(body),
                    (_, true) => {
                        budget.check(struct_bytes(body, &series::V2_PROTOBUF))?;
                        series::parse_v2_protobuf(body)
                    }
                    (_, false) => series::parse_v2_json(body),
                }?;
                let mut b = MetricsBuilder::default();
                series::append_series(&parsed, received_at, budget, &mut b)?;
                Ok(Decoded::rows(
                    Signal::Metrics,
                    b.finish().map_err(|e| e.to_string())?,
                ))
            }
        }
    }

    fn respond(&self, endpoint: Endpoint, _: bool, _: Signal, _: Accepted) -> Response {
        let body = if endpoint == Endpoint::CheckRun {
            serde_json::json!({ "status": "ok" })
        } else {
            serde_json::json!({})
        };
        (StatusCode::ACCEPTED, Json(body)).into_response()
    }
}

async fn validate(
    State(s): State<Arc<HttpSource<Datadog>>>,
    req: Request,
) -> Result<Json<serde_json::Value>, SourceError> {
    s.tenant(None, req.headers(), req.uri().query())?;
    Ok(Json(serde_json::json!({ "valid": true })))
}

/// The routes of the Datadog source.
pub fn routes(ctx: &SourceContext, limits: HttpLimits) -> Router {
    let protocol = Datadog {
        metrics: ctx.metrics.clone(),
    };
    let source = HttpSource::new(protocol, ctx, limits);
    let route = |endpoint: Endpoint| {
        post(
            move |State(s): State<Arc<HttpSource<Datadog>>>, r: Request| async move {
                serve_request(s, endpoint, r).await
            },
        )
    };
    Router::new()
        .route("/api/v2/logs", route(Endpoint::Logs))
        .route("/api/v1/series", route(Endpoint::SeriesV1))
        .route("/api/v2/series", route(Endpoint::SeriesV2))
        .route("/api/v1/check_run", route(Endpoint::CheckRun))
        .route("/api/v1/validate", get(validate))
        .with_state(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_come_from_the_header_or_the_form_decoded_query() {
        let dd = Datadog {
            metrics: Metrics::new(),
        };
        let mut headers = HeaderMap::new();
        assert_eq!(
            dd.api_key(&headers, Some("api_key=a%2Bb+c&x=1")).as_deref(),
            Some("a+b c")
        );
        assert_eq!(dd.api_key(&headers, Some("x=1")), None);
        headers.insert("dd-api-key", "k1".parse().unwrap());
        assert_eq!(
            dd.api_key(&headers, Some("api_key=other")).as_deref(),
            Some("k1")
        );
    }
}
