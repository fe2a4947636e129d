//! OTLP logs → the logs lake schema, and back.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType, UInt32Type};
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch};
use arrow_schema::ArrowError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::anyvalue::{any_value_to_string, attributes_into, service_name};
use super::{hex_id, pick_time, DecodeError, Decoded, Rejections};
use crate::budget::DecodeBudget;
use crate::logrows::{LogFields, LogsBuilder, LOG_ROW_BYTES};

/// Decodes an OTLP logs request into one record batch of the logs schema; refused whole as
/// soon as its rows are over `budget`.
pub fn decode_logs(
    req: &ExportLogsServiceRequest,
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeError> {
    let n: usize = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let mut out = LogsBuilder::with_capacity(budget.capacity(n, LOG_ROW_BYTES));
    let mut rejected = Rejections::default();
    for rl in &req.resource_logs {
        let resource_attrs: &[KeyValue] = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let svc = service_name(resource_attrs);
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref();
            for lr in &sl.log_records {
                if !matches!(lr.trace_id.len(), 0 | 16) {
                    rejected.reject(|| {
                        format!(
                            "log record trace_id has {} bytes, expected 16",
                            lr.trace_id.len()
                        )
                    });
                    continue;
                }
                if !matches!(lr.span_id.len(), 0 | 8) {
                    rejected.reject(|| {
                        format!(
                            "log record span_id has {} bytes, expected 8",
                            lr.span_id.len()
                        )
                    });
                    continue;
                }
                let observed = if lr.observed_time_unix_nano != 0 {
                    i64::try_from(lr.observed_time_unix_nano).unwrap_or(i64::MAX)
                } else {
                    received_at
                };
                let body = lr.body.as_ref().and_then(any_value_to_string);
                let trace_id = hex_id(&lr.trace_id);
                let span_id = hex_id(&lr.span_id);
                let fields = LogFields {
                    timestamp: pick_time(
                        lr.time_unix_nano,
                        lr.observed_time_unix_nano,
                        received_at,
                    ),
                    observed,
                    severity_number: lr.severity_number,
                    severity_text: non_empty(&lr.severity_text),
                    body: body.as_deref(),
                    trace_id: trace_id.as_deref(),
                    span_id: span_id.as_deref(),
                    flags: lr.flags,
                    event_name: non_empty(&lr.event_name),
                    service_name: svc,
                    scope_name: scope.and_then(|s| non_empty(&s.name)),
                };
                out.append(
                    &fields,
                    scope.and_then(|s| non_empty(&s.version)),
                    lr.dropped_attributes_count,
                    |b| attributes_into(b, resource_attrs),
                    |b| attributes_into(b, &lr.attributes),
                );
                budget.check(out.bytes())?;
            }
        }
    }
    Ok(Decoded::new(out.finish()?, rejected))
}

pub(crate) fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    b.column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("missing column {name}")))
}

fn string_at(a: &ArrayRef, i: usize) -> Option<String> {
    let s = a.as_string_opt::<i32>()?;
    if s.is_null(i) {
        None
    } else {
        Some(s.value(i).to_string())
    }
}

/// Reads back a map column's row as OTLP string attributes.
pub(crate) fn map_row_to_kv(a: &ArrayRef, i: usize) -> Vec<KeyValue> {
    let Some(m) = a.as_any().downcast_ref::<MapArray>() else {
        return Vec::new();
    };
    let entries = m.value(i);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|j| KeyValue {
            key: keys.value(j).to_string(),
            value: (!values.is_null(j)).then(|| AnyValue {
                value: Some(Value::StringValue(values.value(j).to_string())),
            }),
            ..Default::default()
        })
        .collect()
}

/// Converts a logs record batch back to an OTLP request: one resource and scope per row
/// group of equal resource and scope. Attribute values come back as strings (the lake keeps
/// non-string values as JSON text).
pub fn logs_to_otlp(b: &RecordBatch) -> Result<ExportLogsServiceRequest, ArrowError> {
    let ts = column(b, "timestamp")?.as_primitive::<TimestampNanosecondType>();
    let obs = column(b, "observed_timestamp")?.as_primitive::<TimestampNanosecondType>();
    let sev = column(b, "severity_number")?.as_primitive::<Int32Type>();
    let flags = column(b, "flags")?.as_primitive::<UInt32Type>();
    let dropped = column(b, "dropped_attributes_count")?.as_primitive::<UInt32Type>();
    let (sev_text, body, trace_id, span_id, event_name) = (
        column(b, "severity_text")?,
        column(b, "body")?,
        column(b, "trace_id")?,
        column(b, "span_id")?,
        column(b, "event_name")?,
    );
    let (res_attrs, scope_name, scope_version, attrs) = (
        column(b, "resource_attributes")?,
        column(b, "scope_name")?,
        column(b, "scope_version")?,
        column(b, "attributes")?,
    );
    let mut out: Vec<ResourceLogs> = Vec::new();
    for i in 0..b.num_rows() {
        let resource = Resource {
            attributes: map_row_to_kv(res_attrs, i),
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: string_at(scope_name, i).unwrap_or_default(),
            version: string_at(scope_version, i).unwrap_or_default(),
            ..Default::default()
        };
        let record = LogRecord {
            time_unix_nano: ts.value(i) as u64,
            observed_time_unix_nano: obs.value(i) as u64,
            severity_number: sev.value(i),
            severity_text: string_at(sev_text, i).unwrap_or_default(),
            body: string_at(body, i).map(|s| AnyValue {
                value: Some(Value::StringValue(s)),
            }),
            attributes: map_row_to_kv(attrs, i),
            dropped_attributes_count: dropped.value(i),
            flags: flags.value(i),
            trace_id: string_at(trace_id, i)
                .and_then(|h| hex::decode(h).ok())
                .unwrap_or_default(),
            span_id: string_at(span_id, i)
                .and_then(|h| hex::decode(h).ok())
                .unwrap_or_default(),
            event_name: string_at(event_name, i).unwrap_or_default(),
        };
        let same_resource = out
            .last()
            .is_some_and(|r| r.resource.as_ref() == Some(&resource));
        if !same_resource {
            out.push(ResourceLogs {
                resource: Some(resource),
                scope_logs: Vec::new(),
                schema_url: String::new(),
            });
        }
        let Some(rl) = out.last_mut() else { continue };
        let same_scope = rl
            .scope_logs
            .last()
            .is_some_and(|s| s.scope.as_ref() == Some(&scope));
        if !same_scope {
            rl.scope_logs.push(ScopeLogs {
                scope: Some(scope),
                log_records: Vec::new(),
                schema_url: String::new(),
            });
        }
        if let Some(sl) = rl.scope_logs.last_mut() {
            sl.log_records.push(record);
        }
    }
    Ok(ExportLogsServiceRequest { resource_logs: out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::wire_testing::{kv, logs_request};

    #[test]
    fn logs_round_trip_through_arrow() {
        let req = logs_request(3);
        let d = decode_logs(&req, 5, &DecodeBudget::unlimited()).unwrap();
        assert_eq!(d.records.num_rows(), 3);
        assert_eq!(d.rejected, 0);
        let back = logs_to_otlp(&d.records).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn bad_ids_are_rejected_one_by_one() {
        let mut req = logs_request(3);
        req.resource_logs[0].scope_logs[0].log_records[1].trace_id = vec![1, 2, 3];
        let d = decode_logs(&req, 5, &DecodeBudget::unlimited()).unwrap();
        assert_eq!(d.records.num_rows(), 2);
        assert_eq!(d.rejected, 1);
        assert!(d.error.unwrap().contains("trace_id has 3 bytes"));
    }

    #[test]
    fn a_resource_attribute_copied_to_every_row_is_over_budget() {
        let budget = DecodeBudget::new(8 << 20, "sources.otlp.max_row_bytes");
        let mut req = logs_request(0);
        let rl = &mut req.resource_logs[0];
        if let Some(r) = rl.resource.as_mut() {
            r.attributes.push(kv("big", &"x".repeat(1 << 20)));
        }
        rl.scope_logs[0].log_records = vec![LogRecord::default(); 20_000];
        match decode_logs(&req, 5, &budget) {
            Err(DecodeError::OverBudget(e)) => {
                assert_eq!((e.key, e.limit), ("sources.otlp.max_row_bytes", 8 << 20));
            }
            other => panic!("expected over budget, got {other:?}"),
        }
        // The same resource over a few records fits.
        req.resource_logs[0].scope_logs[0].log_records.truncate(5);
        let d = decode_logs(&req, 5, &budget).unwrap();
        assert_eq!(d.records.num_rows(), 5);
    }

    #[test]
    fn zero_time_falls_back_to_observed_then_received() {
        let mut req = logs_request(2);
        let recs = &mut req.resource_logs[0].scope_logs[0].log_records;
        recs[0].time_unix_nano = 0;
        recs[1].time_unix_nano = 0;
        recs[1].observed_time_unix_nano = 0;
        let d = decode_logs(&req, 77, &DecodeBudget::unlimited()).unwrap();
        let ts = d
            .records
            .column(0)
            .as_primitive::<TimestampNanosecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_000_000_500);
        assert_eq!(ts.value(1), 77);
    }
}
