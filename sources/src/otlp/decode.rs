//! OTLP request decoding, shared by both transports: the body (protobuf or the OTLP JSON
//! mapping) into the `Export*ServiceRequest` of its signal, then into the lake schema.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weir_pipelines::otlp::{decode_logs, decode_metrics, decode_traces, DecodeError};
use weir_pipelines::{DecodeBudget, Signal};

use crate::http::{DecodeFailure, Decoded};

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
    /// The request's signal.
    pub fn signal(&self) -> Signal {
        match self {
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Metrics(_) => Signal::Metrics,
            ExportRequest::Traces(_) => Signal::Traces,
        }
    }

    /// Maps the request to the lake schema, refused as soon as its rows are over `budget`.
    /// Blocking.
    pub fn to_arrow(
        &self,
        received_at: i64,
        budget: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure> {
        let d = match self {
            ExportRequest::Logs(r) => decode_logs(r, received_at, budget),
            ExportRequest::Metrics(r) => decode_metrics(r, received_at, budget),
            ExportRequest::Traces(r) => decode_traces(r, received_at, budget),
        }
        .map_err(|e| match e {
            DecodeError::OverBudget(e) => DecodeFailure::OverBudget(e),
            other => DecodeFailure::Malformed(other.to_string()),
        })?;
        Ok(Decoded {
            signal: self.signal(),
            records: Some(d.records),
            rejected: d.rejected,
            error: d.error,
            headers: Vec::new(),
            counted: Vec::new(),
        })
    }
}

/// Decodes an OTLP/HTTP body (already decompressed).
pub fn decode_body(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
) -> Result<ExportRequest, String> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        format!("malformed OTLP {what} {} request: {e}", signal.as_str())
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
