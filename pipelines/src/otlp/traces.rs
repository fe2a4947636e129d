//! OTLP traces → the traces lake schema: one row per span, events and links as lists of structs.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
    UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use weir_schema::{span_event_fields, span_link_fields, traces_schema};

use super::anyvalue::{attributes_into, service_name};
use super::logs::non_empty;
use super::{hex_id, pick_time, DecodeError, Decoded, Rejections};
use crate::budget::DecodeBudget;
use crate::columns::{string_bytes, timestamp_builder, AttributesBuilder, ListOffsets};

/// Bytes of the fixed-width columns of one span (kind, three times, status code, flags).
const SPAN_ROW_BYTES: usize = 36;

/// The columns of the traces schema, filled one span at a time.
struct SpanColumns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: Int32Builder,
    start: TimestampNanosecondBuilder,
    end: TimestampNanosecondBuilder,
    duration: Int64Builder,
    status_code: Int32Builder,
    status_message: StringBuilder,
    flags: UInt32Builder,
    ev_ts: TimestampNanosecondBuilder,
    ev_name: StringBuilder,
    ev_attrs: AttributesBuilder,
    ev_dropped: UInt32Builder,
    ev_offsets: ListOffsets,
    ln_trace: StringBuilder,
    ln_span: StringBuilder,
    ln_state: StringBuilder,
    ln_attrs: AttributesBuilder,
    ln_flags: UInt32Builder,
    ln_offsets: ListOffsets,
    service: StringBuilder,
    res_attrs: AttributesBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    attrs: AttributesBuilder,
}

/// Where a span sits: its resource and scope.
struct SpanContext<'a> {
    resource_attrs: &'a [KeyValue],
    service: Option<&'a str>,
    scope: Option<&'a InstrumentationScope>,
    received_at: i64,
}

impl SpanColumns {
    fn new() -> SpanColumns {
        SpanColumns {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: Int32Builder::new(),
            start: timestamp_builder(0),
            end: timestamp_builder(0),
            duration: Int64Builder::new(),
            status_code: Int32Builder::new(),
            status_message: StringBuilder::new(),
            flags: UInt32Builder::new(),
            ev_ts: timestamp_builder(0),
            ev_name: StringBuilder::new(),
            ev_attrs: AttributesBuilder::default(),
            ev_dropped: UInt32Builder::new(),
            ev_offsets: ListOffsets::default(),
            ln_trace: StringBuilder::new(),
            ln_span: StringBuilder::new(),
            ln_state: StringBuilder::new(),
            ln_attrs: AttributesBuilder::default(),
            ln_flags: UInt32Builder::new(),
            ln_offsets: ListOffsets::default(),
            service: StringBuilder::new(),
            res_attrs: AttributesBuilder::default(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            attrs: AttributesBuilder::default(),
        }
    }

    /// Bytes of the spans appended so far (values and offsets of every column, events and
    /// links included).
    fn bytes(&self) -> usize {
        let strings = [
            &self.trace_id,
            &self.span_id,
            &self.parent,
            &self.trace_state,
            &self.name,
            &self.status_message,
            &self.ev_name,
            &self.ln_trace,
            &self.ln_span,
            &self.ln_state,
            &self.service,
            &self.scope_name,
            &self.scope_version,
        ];
        let attrs = [&self.ev_attrs, &self.ln_attrs, &self.res_attrs, &self.attrs];
        self.kind.len() * SPAN_ROW_BYTES
            + strings.into_iter().map(string_bytes).sum::<usize>()
            + attrs
                .into_iter()
                .map(AttributesBuilder::bytes)
                .sum::<usize>()
            + self.ev_offsets.bytes()
            + self.ln_offsets.bytes()
            + 12 * self.ev_ts.len()
            + 4 * self.ln_flags.len()
    }

    /// Appends a span whose ids were checked.
    fn append(&mut self, sp: &Span, cx: &SpanContext<'_>) {
        self.trace_id.append_value(hex::encode(&sp.trace_id));
        self.span_id.append_value(hex::encode(&sp.span_id));
        self.parent.append_option(hex_id(&sp.parent_span_id));
        self.trace_state.append_option(non_empty(&sp.trace_state));
        self.name.append_value(&sp.name);
        self.kind.append_value(sp.kind);
        let s = pick_time(sp.start_time_unix_nano, 0, cx.received_at);
        let e = if sp.end_time_unix_nano == 0 {
            s
        } else {
            i64::try_from(sp.end_time_unix_nano).unwrap_or(i64::MAX)
        };
        self.start.append_value(s);
        self.end.append_value(e);
        self.duration.append_value(e.saturating_sub(s));
        let status = sp.status.as_ref();
        self.status_code
            .append_value(status.map(|st| st.code).unwrap_or(0));
        self.status_message
            .append_option(status.and_then(|st| non_empty(&st.message)));
        self.flags.append_value(sp.flags);
        for ev in &sp.events {
            self.ev_ts.append_value(pick_time(ev.time_unix_nano, 0, s));
            self.ev_name.append_value(&ev.name);
            attributes_into(&mut self.ev_attrs, &ev.attributes);
            self.ev_attrs.finish_row();
            self.ev_dropped.append_value(ev.dropped_attributes_count);
        }
        self.ev_offsets.push(self.ev_name.len());
        for l in &sp.links {
            self.ln_trace.append_value(hex::encode(&l.trace_id));
            self.ln_span.append_value(hex::encode(&l.span_id));
            self.ln_state.append_option(non_empty(&l.trace_state));
            attributes_into(&mut self.ln_attrs, &l.attributes);
            self.ln_attrs.finish_row();
            self.ln_flags.append_value(l.flags);
        }
        self.ln_offsets.push(self.ln_trace.len());
        self.service.append_option(cx.service);
        attributes_into(&mut self.res_attrs, cx.resource_attrs);
        self.res_attrs.finish_row();
        self.scope_name
            .append_option(cx.scope.and_then(|s| non_empty(&s.name)));
        self.scope_version
            .append_option(cx.scope.and_then(|s| non_empty(&s.version)));
        attributes_into(&mut self.attrs, &sp.attributes);
        self.attrs.finish_row();
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let events = StructArray::new(
            span_event_fields(),
            vec![
                Arc::new(self.ev_ts.finish()) as ArrayRef,
                Arc::new(self.ev_name.finish()),
                self.ev_attrs.finish(),
                Arc::new(self.ev_dropped.finish()),
            ],
            None,
        );
        let links = StructArray::new(
            span_link_fields(),
            vec![
                Arc::new(self.ln_trace.finish()) as ArrayRef,
                Arc::new(self.ln_span.finish()),
                Arc::new(self.ln_state.finish()),
                self.ln_attrs.finish(),
                Arc::new(self.ln_flags.finish()),
            ],
            None,
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.flags.finish()),
            self.ev_offsets
                .finish(DataType::Struct(span_event_fields()), Arc::new(events)),
            self.ln_offsets
                .finish(DataType::Struct(span_link_fields()), Arc::new(links)),
            Arc::new(self.service.finish()),
            self.res_attrs.finish(),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.attrs.finish(),
        ];
        RecordBatch::try_new(traces_schema(), columns)
    }
}

/// Why a span is refused as a whole (OTLP partial success), if it is.
fn refusal(sp: &Span) -> Option<String> {
    if sp.trace_id.len() != 16 || sp.span_id.len() != 8 {
        return Some(format!(
            "span {:?}: trace_id has {} bytes and span_id {} bytes, expected 16 and 8",
            sp.name,
            sp.trace_id.len(),
            sp.span_id.len()
        ));
    }
    if !matches!(sp.parent_span_id.len(), 0 | 8)
        || sp
            .links
            .iter()
            .any(|l| l.trace_id.len() != 16 || l.span_id.len() != 8)
    {
        return Some(format!(
            "span {:?}: parent or link id has the wrong length",
            sp.name
        ));
    }
    None
}

/// Decodes an OTLP traces request into one record batch of the traces schema; refused whole
/// as soon as its rows are over `budget`.
pub fn decode_traces(
    req: &ExportTraceServiceRequest,
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeError> {
    let mut cols = SpanColumns::new();
    let mut rejected = Rejections::default();
    for rs in &req.resource_spans {
        let resource_attrs: &[KeyValue] = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        for ss in &rs.scope_spans {
            let cx = SpanContext {
                resource_attrs,
                service: service_name(resource_attrs),
                scope: ss.scope.as_ref(),
                received_at,
            };
            for sp in &ss.spans {
                match refusal(sp) {
                    Some(reason) => rejected.reject(|| reason),
                    None => {
                        cols.append(sp, &cx);
                        budget.check(cols.bytes())?;
                    }
                }
            }
        }
    }
    Ok(Decoded {
        records: cols.finish()?,
        rejected: rejected.count,
        error: rejected.first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    #[test]
    fn a_resource_attribute_copied_to_every_span_is_over_budget() {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
        let budget = DecodeBudget::new(8 << 20, "sources.otlp.max_row_bytes");
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            ..Default::default()
        };
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![KeyValue {
                        key: "big".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue("x".repeat(1 << 20))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span; 20_000],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match decode_traces(&req, 0, &budget) {
            Err(DecodeError::OverBudget(e)) => assert_eq!(e.limit, 8 << 20),
            other => panic!("expected over budget, got {other:?}"),
        }
        req.resource_spans[0].scope_spans[0].spans.truncate(5);
        let d = decode_traces(&req, 0, &budget).unwrap();
        assert_eq!(d.records.num_rows(), 5);
    }

    #[test]
    fn spans_with_events_and_links() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_500,
            events: vec![Event {
                time_unix_nano: 1_100,
                name: "ev".into(),
                ..Default::default()
            }],
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                ..Default::default()
            }],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        };
        let mut bad = span.clone();
        bad.span_id = vec![1];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span, bad],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = decode_traces(&req, 0, &DecodeBudget::unlimited()).unwrap();
        assert_eq!(d.records.num_rows(), 1);
        assert_eq!(d.rejected, 1);
        let b = &d.records;
        assert_eq!(
            b.column_by_name("trace_id")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "01".repeat(16)
        );
        let dur = b
            .column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(dur.value(0), 500);
        let events = b.column_by_name("events").unwrap().as_list::<i32>();
        assert_eq!(events.value(0).len(), 1);
        let links = b.column_by_name("links").unwrap().as_list::<i32>();
        let l = links.value(0);
        let l = l.as_struct();
        assert_eq!(l.column(0).as_string::<i32>().value(0), "03".repeat(16));
    }
}
