//! The remote write protocol on the shared HTTP path, and building the source.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use weir_pipelines::metricrows::MetricsBuilder;
use weir_pipelines::{DecodeBudget, Signal};

use super::config::ValidPrometheusRemoteWrite;
use super::decode::{self, Limits};
use crate::contract::{BuildError, Claim, RunningSource, SourceContext, ValidSource};
use crate::http::{
    body, serve_request, serve_router, Accepted, Coding, DecodeFailure, Decoded, ErrorBody,
    HttpLimits, HttpSource, Protocol,
};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "prometheus_remote_write";

/// The path Prometheus writes to.
pub const PATH: &str = "/api/v1/write";

/// The `proto` parameter of a 2.0 request's `Content-Type`.
pub const PROTO_V2: &str = "io.prometheus.write.v2.Request";

/// The `proto` parameter of a 1.0 request's `Content-Type` (optional in 1.0).
pub const PROTO_V1: &str = "prometheus.WriteRequest";

/// Response headers of 2.0: what was written.
pub const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";
/// Native histogram samples written.
pub const HISTOGRAMS_WRITTEN: &str = "x-prometheus-remote-write-histograms-written";
/// Exemplars written (always 0: the lake keeps no exemplars yet).
pub const EXEMPLARS_WRITTEN: &str = "x-prometheus-remote-write-exemplars-written";

/// The message a request carries, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// The version named by a `Content-Type`: `application/x-protobuf` with no `proto`
/// parameter or `proto=prometheus.WriteRequest` is 1.0, `proto=io.prometheus.write.v2.Request`
/// is 2.0 (a missing header is taken as 1.0, which Prometheus always labels).
pub fn version(headers: &HeaderMap) -> Result<Version, String> {
    let unsupported = |what: &str| {
        format!("unsupported Content-Type {what:?}: use application/x-protobuf (remote write 1.0) or application/x-protobuf;proto={PROTO_V2} (2.0)")
    };
    let raw = match headers.get(header::CONTENT_TYPE) {
        None => return Ok(Version::V1),
        Some(v) => v.to_str().map_err(|_| unsupported("(not text)"))?,
    };
    let media = body::media_type(headers);
    if media != "application/x-protobuf" {
        return Err(unsupported(raw));
    }
    let proto = raw.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("proto")
            .then(|| v.trim().trim_matches('"'))
    });
    match proto {
        None | Some(PROTO_V1) => Ok(Version::V1),
        Some(PROTO_V2) => Ok(Version::V2),
        Some(_) => Err(unsupported(raw)),
    }
}

/// The remote write protocol.
pub struct RemoteWrite {
    limits: Limits,
}

impl Protocol for RemoteWrite {
    type Endpoint = ();
    type Format = Version;
    const SOURCE: &'static str = SOURCE;
    const LIMIT_KEY: &'static str = "sources.prometheus_remote_write.max_request_bytes";
    const ROW_LIMIT_KEY: &'static str = "sources.prometheus_remote_write.max_row_bytes";

    fn format(&self, _: (), headers: &HeaderMap) -> Result<Version, String> {
        version(headers)
    }

    fn error_body(&self, _: Option<Version>) -> ErrorBody {
        ErrorBody::Text
    }

    fn retries_only_5xx(&self) -> bool {
        true
    }

    /// Both versions are snappy blocks; a missing `Content-Encoding` means snappy too.
    fn codings(&self, _: (), _: Version) -> (&'static [Coding], Coding) {
        (&[Coding::Snappy], Coding::Snappy)
    }

    fn decode(
        &self,
        _: (),
        version: Version,
        body: &[u8],
        received_at: i64,
        _: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure> {
        // The row budget is the series assembly's (`Limits::max_row_bytes`, the same key).
        let mut b = MetricsBuilder::default();
        let stats = match version {
            Version::V1 => decode::decode_v1(body, received_at, &self.limits, &mut b),
            Version::V2 => decode::decode_v2(body, received_at, &self.limits, &mut b),
        }?;
        let records = if b.is_empty() {
            None
        } else {
            Some(b.finish().map_err(|e| e.to_string())?)
        };
        let headers = match version {
            Version::V1 => Vec::new(),
            Version::V2 => [
                (SAMPLES_WRITTEN, stats.samples),
                (HISTOGRAMS_WRITTEN, stats.histograms),
                (EXEMPLARS_WRITTEN, 0),
            ]
            .into_iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from(v)))
            .collect(),
        };
        Ok(Decoded {
            signal: Signal::Metrics,
            records,
            rejected: 0,
            error: None,
            headers,
            counted: vec![
                ("samples", stats.samples),
                ("native_histograms", stats.histograms),
                ("stale_markers", stats.stale),
                ("exemplars", stats.exemplars),
            ],
        })
    }

    fn respond(&self, _: (), _: Version, _: Signal, accepted: Accepted) -> Response {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut().extend(accepted.headers);
        r
    }
}

/// The routes of the source.
pub fn routes(ctx: &SourceContext, http: HttpLimits, limits: Limits) -> Router {
    let protocol = RemoteWrite { limits };
    let source = HttpSource::new(protocol, ctx, http);
    Router::new()
        .route(
            PATH,
            post(
                |State(s): State<Arc<HttpSource<RemoteWrite>>>, r: Request| async move {
                    serve_request(s, (), r).await
                },
            ),
        )
        .with_state(source)
}

impl ValidSource for ValidPrometheusRemoteWrite {
    fn name(&self) -> &'static str {
        "prometheus_remote_write"
    }

    fn claims(&self) -> Vec<Claim> {
        self.address.iter().cloned().collect()
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let mut running = RunningSource::new(self.name());
        if let Some(claim) = &self.address {
            let router = routes(ctx, self.http.clone(), self.series.clone());
            serve_router(
                &mut running,
                ctx,
                claim,
                "Prometheus remote write",
                SOURCE,
                &self.http,
                router,
            )?;
        }
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn content_type_chooses_the_version() {
        assert_eq!(version(&HeaderMap::new()), Ok(Version::V1));
        assert_eq!(version(&ct("application/x-protobuf")), Ok(Version::V1));
        assert_eq!(
            version(&ct("application/x-protobuf;proto=prometheus.WriteRequest")),
            Ok(Version::V1)
        );
        assert_eq!(
            version(&ct(
                "application/x-protobuf; proto=io.prometheus.write.v2.Request"
            )),
            Ok(Version::V2)
        );
        assert!(version(&ct(
            "application/x-protobuf;proto=io.prometheus.write.v3.Request"
        ))
        .unwrap_err()
        .contains("unsupported Content-Type"));
        assert!(version(&ct("application/json")).is_err());
    }
}
