//! The control plane's HTTP/JSON API routes (the part `weir run` serves on its admin port).
//!
//! `GET /v1/segments?tenant&signal&from&to&service&limit&cursor` lists active segments.
//! `from`/`to` take unix nanoseconds or RFC 3339 times. Errors are JSON objects with a stable
//! `code` and a `message`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::{Catalog, CatalogError, SegmentQuery};

/// Query string of `GET /v1/segments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    tenant: Option<String>,
    signal: Option<String>,
    from: Option<String>,
    to: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Parses a time bound: unix nanoseconds or an RFC 3339 timestamp.
pub fn parse_time(name: &str, v: &str) -> Result<i64, CatalogError> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            CatalogError::Invalid(format!(
                "{name}={v:?} is neither unix nanoseconds nor an RFC 3339 time"
            ))
        })
}

impl ListParams {
    fn into_query(self) -> Result<SegmentQuery, CatalogError> {
        Ok(SegmentQuery {
            tenant: self.tenant.unwrap_or_else(|| "default".into()),
            signal: self.signal,
            from: self
                .from
                .as_deref()
                .map(|v| parse_time("from", v))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|v| parse_time("to", v))
                .transpose()?,
            service: self.service,
            limit: self.limit,
            cursor: self.cursor,
        })
    }
}

/// An API error: HTTP status, stable code and message.
pub struct ApiError(pub CatalogError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            CatalogError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            CatalogError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            CatalogError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_index"),
            CatalogError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        };
        let body = serde_json::json!({ "code": code, "message": self.0.to_string() });
        (status, Json(body)).into_response()
    }
}

async fn list_segments(
    State(catalog): State<Arc<dyn Catalog>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError(CatalogError::Invalid(e.body_text())))?;
    let query = params.into_query().map_err(ApiError)?;
    let page = catalog.list(&query).await.map_err(ApiError)?;
    Ok(Json(page).into_response())
}

/// The read routes of the segment API, to merge into an admin router.
pub fn segment_routes(catalog: Arc<dyn Catalog>) -> Router {
    Router::new()
        .route("/v1/segments", get(list_segments))
        .with_state(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_parse() {
        assert_eq!(parse_time("from", "12").unwrap(), 12);
        assert_eq!(
            parse_time("from", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(parse_time("from", "yesterday").is_err());
    }
}
