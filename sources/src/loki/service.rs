//! The Loki protocol on the shared HTTP path, and building the source.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use weir_pipelines::logrows::LogsBuilder;
use weir_pipelines::{DecodeBudget, Signal};

use super::decode;
use crate::contract::SourceContext;
use crate::http::{
    body, serve_request, Accepted, Coding, DecodeFailure, Decoded, ErrorBody, HttpLimits,
    HttpSource, Protocol,
};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "loki";

/// Body formats of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `logproto.PushRequest`, snappy-compressed.
    Protobuf,
    /// The JSON push format.
    Json,
}

/// The Loki push protocol.
pub struct Loki;

impl Protocol for Loki {
    type Endpoint = ();
    type Format = Format;
    const SOURCE: &'static str = SOURCE;
    const LIMIT_KEY: &'static str = "sources.loki.max_request_bytes";
    const ROW_LIMIT_KEY: &'static str = "sources.loki.max_row_bytes";

    fn format(&self, _: (), headers: &HeaderMap) -> Result<Format, String> {
        match body::media_type(headers).as_str() {
            "application/json" => Ok(Format::Json),
            "application/x-protobuf" | "application/protobuf" | "" => Ok(Format::Protobuf),
            other => Err(format!("unsupported Content-Type {other:?}: use application/x-protobuf (snappy) or application/json")),
        }
    }

    fn error_body(&self, _: Option<Format>) -> ErrorBody {
        ErrorBody::Text
    }

    /// Loki's protobuf bodies are snappy blocks, with or without a Content-Encoding header.
    fn codings(&self, _: (), format: Format) -> (&'static [Coding], Coding) {
        let accepted = &[Coding::Gzip, Coding::Deflate, Coding::Snappy];
        match format {
            Format::Protobuf => (accepted, Coding::Snappy),
            Format::Json => (accepted, Coding::Identity),
        }
    }

    fn decode(
        &self,
        _: (),
        format: Format,
        body: &[u8],
        received_at: i64,
        budget: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure> {
        let mut b = LogsBuilder::default();
        match format {
            Format::Protobuf => decode::decode_protobuf(body, received_at, budget, &mut b),
            Format::Json => decode::decode_json(body, received_at, budget, &mut b),
        }?;
        let records = b.finish().map_err(|e| e.to_string())?;
        Ok(Decoded::rows(Signal::Logs, records))
    }

    fn respond(&self, _: (), _: Format, _: Signal, _: Accepted) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The routes of the Loki source.
pub fn routes(ctx: &SourceContext, limits: HttpLimits) -> Router {
    let source = HttpSource::new(Loki, ctx, limits);
    let push = post(
        |State(s): State<Arc<HttpSource<Loki>>>, r: Request| async move {
            serve_request(s, (), r).await
        },
    );
    Router::new()
        .route("/loki/api/v1/push", push.clone())
        .route("/api/prom/push", push)
        .route("/ready", get(|| async { "ready\n" }))
        .with_state(source)
}
