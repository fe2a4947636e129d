//! OTLP request decoding, shared by both transports: the body (protobuf or the OTLP JSON
//! mapping) into the `Export*ServiceRequest` of its signal, then into the lake schema.
//!
//! A protobuf logs or traces body (OTLP/HTTP, and OTLP/gRPC, whose services take the message's
//! bytes) skips the structs: [`decode_to_arrow`] walks its wire format straight into the Arrow
//! builders (`weir_pipelines::otlp::decode_logs_protobuf`, `decode_traces_protobuf`), with the
//! same rows and refusals. Metrics bodies and JSON bodies take [`ExportRequest::to_arrow`]
//! after the structs they would become are counted against the budget
//! (`weir_pipelines::otlp::shape`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weir_pipelines::otlp::{
    decode_logs, decode_logs_protobuf, decode_metrics, decode_traces, decode_traces_protobuf,
    DecodeError,
};
use weir_pipelines::otlp::json_shape::{json, otlp_json_bytes};
use weir_pipelines::otlp::shape::{struct_bytes, METRICS_REQUEST};
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

impl Encoding {
    /// The name in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        }
    }
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
        };
        decoded(self.signal(), Encoding::Protobuf, d)
    }
}

/// The source's view of a decode: rows, or the refusal (malformed → 400, over budget → 413).
fn decoded(
    signal: Signal,
    encoding: Encoding,
    d: Result<weir_pipelines::otlp::Decoded, DecodeError>,
) -> Result<Decoded, DecodeFailure> {
    let d = d.map_err(|e| match e {
        DecodeError::OverBudget(e) => DecodeFailure::OverBudget(e),
        DecodeError::Malformed(e) => DecodeFailure::Malformed(format!(
            "malformed OTLP {} {} request: {e}",
            encoding.as_str(),
            signal.as_str()
        )),
        other => DecodeFailure::Malformed(other.to_string()),
    })?;
    Ok(Decoded {
        signal,
        records: Some(d.records),
        rejected: d.rejected,
        error: d.error,
        headers: Vec::new(),
        counted: Vec::new(),
    })
}

/// Decodes an OTLP/HTTP body (already decompressed) into the lake schema, refused as soon as
/// its rows are over `budget`. Protobuf logs and traces go straight from the wire format to the
/// builders; the other bodies through [`decode_body`] and [`ExportRequest::to_arrow`].
/// Blocking.
pub fn decode_to_arrow(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeFailure> {
    match (signal, encoding) {
        (Signal::Logs, Encoding::Protobuf) => decoded(
            signal,
            encoding,
            decode_logs_protobuf(body, received_at, budget),
        ),
        (Signal::Traces, Encoding::Protobuf) => decoded(
            signal,
            encoding,
            decode_traces_protobuf(body, received_at, budget),
        ),
        (Signal::Metrics, Encoding::Protobuf) => {
            // prost's structs are counted first: 16 MiB of empty data points would be
            // gigabytes of them before the first row is checked.
            budget.check(struct_bytes(body, &METRICS_REQUEST))?;
            decode_body(signal, encoding, body)?.to_arrow(received_at, budget)
        }
        (_, Encoding::Json) => {
            // serde's structs are bounded first: `{}` is two bytes and a whole struct.
            let structs = match signal {
                Signal::Logs => otlp_json_bytes(body, json::logs),
                Signal::Metrics => otlp_json_bytes(body, json::metrics),
                Signal::Traces => otlp_json_bytes(body, json::traces),
            }
            .map_err(|e| {
                format!(
                    "malformed OTLP json {} request: {e}",
                    signal.as_str()
                )
            })?;
            budget.check(structs)?;
            decode_body(signal, encoding, body)?.to_arrow(received_at, budget)
        }
    }
}

/// Decodes an OTLP/HTTP body (already decompressed) into the request's structs (prost or
/// the JSON mapping).
pub fn decode_body(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
) -> Result<ExportRequest, String> {
    let bad = |what: Encoding, e: &dyn std::fmt::Display| {
        format!(
            "malformed OTLP {} {} request: {e}",
            what.as_str(),
            signal.as_str()
        )
    };
    Ok(match (signal, encoding) {
        (Signal::Logs, Encoding::Protobuf) => ExportRequest::Logs(
            ExportLogsServiceRequest::decode(body).map_err(|e| bad(Encoding::Protobuf, &e))?,
        ),
        (Signal::Metrics, Encoding::Protobuf) => ExportRequest::Metrics(
            ExportMetricsServiceRequest::decode(body).map_err(|e| bad(Encoding::Protobuf, &e))?,
        ),
        (Signal::Traces, Encoding::Protobuf) => ExportRequest::Traces(
            ExportTraceServiceRequest::decode(body).map_err(|e| bad(Encoding::Protobuf, &e))?,
        ),
        (Signal::Logs, Encoding::Json) => {
            ExportRequest::Logs(serde_json::from_slice(body).map_err(|e| bad(Encoding::Json, &e))?)
        }
        (Signal::Metrics, Encoding::Json) => {
            ExportRequest::Metrics(serde_json::from_slice(body).map_err(|e| bad(Encoding::Json, &e))?)
        }
        (Signal::Traces, Encoding::Json) => {
            ExportRequest::Traces(serde_json::from_slice(body).map_err(|e| bad(Encoding::Json, &e))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn request() -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord {
                            body: Some(AnyValue {
                                value: Some(Value::StringValue("hi".into())),
                            }),
                            ..Default::default()
                        },
                        LogRecord {
                            trace_id: vec![1; 3],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn protobuf_logs_take_the_wire_path_with_the_same_result() {
        let budget = DecodeBudget::unlimited();
        let body = request().encode_to_vec();
        let wire = decode_to_arrow(Signal::Logs, Encoding::Protobuf, &body, 7, &budget).unwrap();
        let structs = decode_body(Signal::Logs, Encoding::Protobuf, &body)
            .unwrap()
            .to_arrow(7, &budget)
            .unwrap();
        assert_eq!(wire.records, structs.records);
        assert_eq!((wire.rejected, wire.error), (1, structs.error));
    }

    #[test]
    fn protobuf_traces_take_the_wire_path_with_the_same_result() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let span = |span_id: Vec<u8>| Span {
            trace_id: vec![1; 16],
            span_id,
            name: "GET /".into(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(vec![2; 8]), span(vec![2; 3])],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let budget = DecodeBudget::unlimited();
        let body = req.encode_to_vec();
        let wire = decode_to_arrow(Signal::Traces, Encoding::Protobuf, &body, 7, &budget).unwrap();
        let structs = ExportRequest::Traces(req).to_arrow(7, &budget).unwrap();
        assert_eq!(wire.records, structs.records);
        assert_eq!((wire.rejected, wire.error), (1, structs.error));
        let e = decode_to_arrow(Signal::Traces, Encoding::Protobuf, &body[..5], 7, &budget);
        assert!(
            matches!(&e, Err(DecodeFailure::Malformed(m)) if m.starts_with("malformed OTLP protobuf traces request: ")),
            "{e:?}"
        );
    }

    #[test]
    fn a_malformed_protobuf_body_names_the_problem() {
        let budget = DecodeBudget::unlimited();
        let mut body = request().encode_to_vec();
        body.truncate(body.len() - 1);
        match decode_to_arrow(Signal::Logs, Encoding::Protobuf, &body, 7, &budget) {
            Err(DecodeFailure::Malformed(m)) => assert!(
                m.starts_with("malformed OTLP protobuf logs request: resource_logs[0]"),
                "{m}"
            ),
            other => panic!("expected malformed, got {other:?}"),
        }
        match decode_to_arrow(Signal::Logs, Encoding::Json, b"{", 7, &budget) {
            Err(DecodeFailure::Malformed(m)) => {
                assert!(m.starts_with("malformed OTLP JSON logs request: "), "{m}")
            }
            other => panic!("expected malformed, got {other:?}"),
        }
    }
}
