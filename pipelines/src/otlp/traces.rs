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
use super::common_wire::{hex_id_in, hex_in};
use super::logs::non_empty;
use super::{pick_time, DecodeError, Decoded, Rejections};
use crate::budget::DecodeBudget;
use crate::columns::{string_bytes, timestamp_builder, AttributesBuilder, ListOffsets};

/// Bytes of the fixed-width columns of one span (kind, three times, status code, flags).
pub(crate) const SPAN_ROW_BYTES: usize = 36;

/// The columns of the traces schema, filled one span at a time: its events, its links, then
/// the span.
pub(crate) struct SpanColumns {
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

/// The scalar fields of a span and where it sits.
pub(crate) struct SpanFields<'s> {
    pub trace_id: &'s [u8],
    pub span_id: &'s [u8],
    pub parent_span_id: &'s [u8],
    pub trace_state: &'s str,
    pub name: &'s str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub status_message: &'s str,
    pub flags: u32,
    pub received_at: i64,
    pub service_name: Option<&'s str>,
    pub scope_name: Option<&'s str>,
    pub scope_version: Option<&'s str>,
}

/// The start of a span as stored (its events' missing times default to it).
pub(crate) fn span_start(start_time_unix_nano: u64, received_at: i64) -> i64 {
    pick_time(start_time_unix_nano, 0, received_at)
}

/// Where a span sits: its resource and scope.
struct SpanContext<'a> {
    resource_attrs: &'a [KeyValue],
    service: Option<&'a str>,
    scope: Option<&'a InstrumentationScope>,
    received_at: i64,
}

impl SpanColumns {
    pub(crate) fn new() -> SpanColumns {
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
    pub(crate) fn bytes(&self) -> usize {
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
        let start = span_start(sp.start_time_unix_nano, cx.received_at);
        for ev in &sp.events {
            self.event(
                ev.time_unix_nano,
                start,
                &ev.name,
                ev.dropped_attributes_count,
                |b| attributes_into(b, &ev.attributes),
            );
        }
        for l in &sp.links {
            self.link(&l.trace_id, &l.span_id, &l.trace_state, l.flags, |b| {
                attributes_into(b, &l.attributes)
            });
        }
        let status = sp.status.as_ref();
        let fields = SpanFields {
            trace_id: &sp.trace_id,
            span_id: &sp.span_id,
            parent_span_id: &sp.parent_span_id,
            trace_state: &sp.trace_state,
            name: &sp.name,
            kind: sp.kind,
            start_time_unix_nano: sp.start_time_unix_nano,
            end_time_unix_nano: sp.end_time_unix_nano,
            status_code: status.map(|st| st.code).unwrap_or(0),
            status_message: status.map(|st| st.message.as_str()).unwrap_or(""),
            flags: sp.flags,
            received_at: cx.received_at,
            service_name: cx.service,
            scope_name: cx.scope.and_then(|s| non_empty(&s.name)),
            scope_version: cx.scope.and_then(|s| non_empty(&s.version)),
        };
        self.span(
            &fields,
            |b| attributes_into(b, cx.resource_attrs),
            |b| attributes_into(b, &sp.attributes),
        );
    }

    /// Appends an event of the span being appended, which starts at `span_start`.
    pub(crate) fn event(
        &mut self,
        time_unix_nano: u64,
        span_start: i64,
        name: &str,
        dropped_attributes_count: u32,
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        self.ev_ts
            .append_value(pick_time(time_unix_nano, 0, span_start));
        self.ev_name.append_value(name);
        attributes(&mut self.ev_attrs);
        self.ev_attrs.finish_row();
        self.ev_dropped.append_value(dropped_attributes_count);
    }

    /// Appends a link (ids checked) of the span being appended.
    pub(crate) fn link(
        &mut self,
        trace_id: &[u8],
        span_id: &[u8],
        trace_state: &str,
        flags: u32,
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        let (mut t, mut s) = ([0u8; 32], [0u8; 32]);
        self.ln_trace.append_option(hex_in(trace_id, &mut t));
        self.ln_span.append_option(hex_in(span_id, &mut s));
        self.ln_state.append_option(non_empty(trace_state));
        attributes(&mut self.ln_attrs);
        self.ln_attrs.finish_row();
        self.ln_flags.append_value(flags);
    }

    /// Appends a span (ids checked) whose events and links were appended.
    pub(crate) fn span(
        &mut self,
        f: &SpanFields<'_>,
        resource: impl FnOnce(&mut AttributesBuilder),
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        let (mut t, mut sp, mut p) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        self.trace_id.append_option(hex_in(f.trace_id, &mut t));
        self.span_id.append_option(hex_in(f.span_id, &mut sp));
        self.parent
            .append_option(hex_id_in(f.parent_span_id, &mut p));
        self.trace_state.append_option(non_empty(f.trace_state));
        self.name.append_value(f.name);
        self.kind.append_value(f.kind);
        let s = span_start(f.start_time_unix_nano, f.received_at);
        let e = if f.end_time_unix_nano == 0 {
            s
        } else {
            i64::try_from(f.end_time_unix_nano).unwrap_or(i64::MAX)
        };
        self.start.append_value(s);
        self.end.append_value(e);
        self.duration.append_value(e.saturating_sub(s));
        self.status_code.append_value(f.status_code);
        self.status_message
            .append_option(non_empty(f.status_message));
        self.flags.append_value(f.flags);
        self.ev_offsets.push(self.ev_name.len());
        self.ln_offsets.push(self.ln_trace.len());
        self.service.append_option(f.service_name);
        resource(&mut self.res_attrs);
        self.res_attrs.finish_row();
        self.scope_name.append_option(f.scope_name);
        self.scope_version.append_option(f.scope_version);
        attributes(&mut self.attrs);
        self.attrs.finish_row();
    }

    pub(crate) fn finish(mut self) -> Result<RecordBatch, ArrowError> {
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
    refusal_of(
        &sp.name,
        &sp.trace_id,
        &sp.span_id,
        &sp.parent_span_id,
        sp.links.iter().map(|l| (l.trace_id.len(), l.span_id.len())),
    )
}

/// Why a span named `name` with these ids and links' id lengths is refused, if it is.
pub(crate) fn refusal_of(
    name: &str,
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
    mut link_ids: impl Iterator<Item = (usize, usize)>,
) -> Option<String> {
    if trace_id.len() != 16 || span_id.len() != 8 {
        return Some(format!(
            "span {:?}: trace_id has {} bytes and span_id {} bytes, expected 16 and 8",
            name,
            trace_id.len(),
            span_id.len()
        ));
    }
    if !matches!(parent_span_id.len(), 0 | 8) || link_ids.any(|(t, s)| t != 16 || s != 8) {
        return Some(format!(
            "span {name:?}: parent or link id has the wrong length"
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
    Ok(Decoded::new(cols.finish()?, rejected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

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
        let req = crate::otlp::wire_testing::traces_request();
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
