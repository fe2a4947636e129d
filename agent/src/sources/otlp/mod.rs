//! The OTLP source: gRPC (4317) and HTTP (4318), protobuf and JSON, gzip, partial success.
//!
//! Both transports share [`decode_body`] and [`accept`]: decoding, Arrow mapping and the
//! buffer write run together in one blocking task per request, and the response waits for
//! the batch's fate (durable, refused, or full).

pub mod grpc;
pub mod http;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::otlp::{decode_logs, decode_metrics, decode_traces, Decoded};
use weir_pipelines::{Batch, Signal};

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP JSON mapping).
    Json,
}

/// A decoded export request of any signal.
#[derive(Debug)]
pub enum ExportRequest {
    /// Logs.
    Logs(ExportLogsServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Traces.
    Traces(ExportTraceServiceRequest),
}

impl ExportRequest {
    fn signal(&self) -> Signal {
        match self {
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Metrics(_) => Signal::Metrics,
            ExportRequest::Traces(_) => Signal::Traces,
        }
    }

    fn to_arrow(&self, received_at: i64) -> Result<Decoded, String> {
        match self {
            ExportRequest::Logs(r) => decode_logs(r, received_at),
            ExportRequest::Metrics(r) => decode_metrics(r, received_at),
            ExportRequest::Traces(r) => decode_traces(r, received_at),
        }
        .map_err(|e| format!("cannot map request to the lake schema: {e}"))
    }
}

/// Why an OTLP request failed.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The body could not be decoded (400 / INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than allowed (413 / RESOURCE_EXHAUSTED without retry).
    #[error("{0}")]
    TooLarge(String),
    /// The buffer is full: retry later (429 / RESOURCE_EXHAUSTED with RetryInfo).
    #[error("{0}")]
    Full(String),
    /// The agent cannot store data now (503 / UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
}

/// Decodes an OTLP/HTTP body (already decompressed).
pub fn decode_body(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
) -> Result<ExportRequest, OtlpError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        OtlpError::BadRequest(format!(
            "malformed OTLP {what} {} request: {e}",
            signal.as_str()
        ))
    };
    Ok(match (signal, encoding) {
        (Signal::Logs, Encoding::Protobuf) => ExportRequest::Logs(
            ExportLogsServiceRequest::decode(body).map_err(|e| bad("protobuf", &e))?,
        ),
        (Signal::Metrics, Encoding::Protobuf) => ExportRequest::Metrics(
            ExportMetricsServiceRequest::decode(body).map_err(|e| bad("protobuf", &e))?,
        ),
        (Signal::Traces, Encoding::Protobuf) => ExportRequest::Traces(
            ExportTraceServiceRequest::decode(body).map_err(|e| bad("protobuf", &e))?,
        ),
        (Signal::Logs, Encoding::Json) => {
            ExportRequest::Logs(serde_json::from_slice(body).map_err(|e| bad("JSON", &e))?)
        }
        (Signal::Metrics, Encoding::Json) => {
            ExportRequest::Metrics(serde_json::from_slice(body).map_err(|e| bad("JSON", &e))?)
        }
        (Signal::Traces, Encoding::Json) => {
            ExportRequest::Traces(serde_json::from_slice(body).map_err(|e| bad("JSON", &e))?)
        }
    })
}

/// What was accepted: rows refused inside the request, and why (OTLP partial success).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Records refused.
    pub rejected: u64,
    /// Why the first one was refused.
    pub error: Option<String>,
}

/// Maps a request to Arrow and writes it to the buffer. Blocking.
pub fn accept(
    ingest: &Ingest,
    source: &str,
    tenant: String,
    request: &ExportRequest,
    request_bytes: usize,
    received_at: i64,
) -> Result<Accepted, OtlpError> {
    let signal = request.signal();
    let decoded = request
        .to_arrow(received_at)
        .map_err(OtlpError::BadRequest)?;
    if decoded.rejected > 0 {
        ingest
            .metrics()
            .rejected_records
            .with_label_values(&[source, signal.as_str()])
            .inc_by(decoded.rejected);
    }
    let batch = Batch::new(
        tenant,
        signal,
        source.to_string(),
        received_at,
        decoded.records,
    );
    ingest.write(batch, request_bytes).map_err(|e| {
        let msg = e.to_string();
        match e {
            IngestError::Full(_) => OtlpError::Full(msg),
            IngestError::TooLarge(_) => OtlpError::TooLarge(msg),
            _ => OtlpError::Unavailable(msg),
        }
    })?;
    Ok(Accepted {
        rejected: decoded.rejected,
        error: decoded.error,
    })
}
