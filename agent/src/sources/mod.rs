//! Inputs. Every source has the same shape: a config (in `crate::config`), a decoder that maps
//! the protocol to Arrow batches of the lake schemas, and a service that hands batches to
//! [`weir_pipelines::ingest::Ingest`] and maps their fate to the protocol's status.

pub mod auth;
pub mod datadog;
pub mod fluent;
#[cfg(test)]
mod fuzz;
pub mod http_body;
pub mod http_error;
pub mod loki;
pub mod otlp;
pub mod severity;
pub mod syslog;
pub mod tcp;
pub mod tls;

use weir_control_plane::segment_valid_tenant;

/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Header (HTTP) and metadata key (gRPC) that selects the tenant, as Loki does.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant named by a request's `X-Scope-OrgID`, validated.
pub fn tenant_from(header: Option<&[u8]>) -> Result<String, String> {
    match header {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(raw) => {
            let t = std::str::from_utf8(raw)
                .map_err(|_| "X-Scope-OrgID is not valid UTF-8".to_string())?;
            let t = t.trim();
            if segment_valid_tenant(t) {
                Ok(t.to_string())
            } else {
                Err(format!("X-Scope-OrgID {t:?} is not a valid tenant: it must match [A-Za-z0-9_-]{{1,64}}"))
            }
        }
    }
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The HTTP status of a refused buffer write: 429 when full (retry later), 413 when the request
/// can never fit, 503 otherwise.
pub fn ingest_status(e: &weir_pipelines::ingest::IngestError) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    use weir_pipelines::ingest::IngestError;
    match e {
        IngestError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
        IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Adds `Retry-After` (whole seconds, at least 1) to a response.
pub fn set_retry_after(resp: &mut axum::response::Response, after: std::time::Duration) {
    if let Ok(v) = axum::http::HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
}
