//! OTLP traces → the traces lake schema: one row per span, events and links as lists of structs.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Int32Builder, Int64Builder, StringBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use weir_schema::{span_event_fields, span_link_fields, traces_schema};

use super::anyvalue::{attributes_into, service_name};
use super::logs::non_empty;
use super::{hex_id, pick_time, Decoded, Rejections};
use crate::columns::{timestamp_builder, AttributesBuilder, ListOffsets};

/// Decodes an OTLP traces request into one record batch of the traces schema.
pub fn decode_traces(
    req: &ExportTraceServiceRequest,
    received_at: i64,
) -> Result<Decoded, ArrowError> {
    let mut trace_id = StringBuilder::new();
    let mut span_id = StringBuilder::new();
    let mut parent = StringBuilder::new();
    let mut trace_state = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = Int32Builder::new();
    let mut start = timestamp_builder(0);
    let mut end = timestamp_builder(0);
    let mut duration = Int64Builder::new();
    let mut status_code = Int32Builder::new();
    let mut status_message = StringBuilder::new();
    let mut flags = UInt32Builder::new();
    let (mut ev_ts, mut ev_name, mut ev_attrs, mut ev_dropped) = (
        timestamp_builder(0),
        StringBuilder::new(),
        AttributesBuilder::default(),
        UInt32Builder::new(),
    );
    let mut ev_offsets = ListOffsets::default();
    let (mut ln_trace, mut ln_span, mut ln_state, mut ln_attrs, mut ln_flags) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        AttributesBuilder::default(),
        UInt32Builder::new(),
    );
    let mut ln_offsets = ListOffsets::default();
    let mut service = StringBuilder::new();
    let mut res_attrs = AttributesBuilder::default();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut attrs = AttributesBuilder::default();
    let mut rejected = Rejections::default();

    for rs in &req.resource_spans {
        let resource_attrs: &[KeyValue] = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let svc = service_name(resource_attrs);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref();
            for sp in &ss.spans {
                if sp.trace_id.len() != 16 || sp.span_id.len() != 8 {
                    rejected.reject(|| {
                        format!(
                            "span {:?}: trace_id has {} bytes and span_id {} bytes, expected 16 and 8",
                            sp.name,
                            sp.trace_id.len(),
                            sp.span_id.len()
                        )
                    });
                    continue;
                }
                if !matches!(sp.parent_span_id.len(), 0 | 8)
                    || sp
                        .links
                        .iter()
                        .any(|l| l.trace_id.len() != 16 || l.span_id.len() != 8)
                {
                    rejected.reject(|| {
                        format!("span {:?}: parent or link id has the wrong length", sp.name)
                    });
                    continue;
                }
                trace_id.append_value(hex::encode(&sp.trace_id));
                span_id.append_value(hex::encode(&sp.span_id));
                parent.append_option(hex_id(&sp.parent_span_id));
                trace_state.append_option(non_empty(&sp.trace_state));
                name.append_value(&sp.name);
                kind.append_value(sp.kind);
                let s = pick_time(sp.start_time_unix_nano, 0, received_at);
                let e = if sp.end_time_unix_nano == 0 {
                    s
                } else {
                    i64::try_from(sp.end_time_unix_nano).unwrap_or(i64::MAX)
                };
                start.append_value(s);
                end.append_value(e);
                duration.append_value(e.saturating_sub(s));
                let status = sp.status.as_ref();
                status_code.append_value(status.map(|st| st.code).unwrap_or(0));
                status_message.append_option(status.and_then(|st| non_empty(&st.message)));
                flags.append_value(sp.flags);
                for ev in &sp.events {
                    ev_ts.append_value(pick_time(ev.time_unix_nano, 0, s));
                    ev_name.append_value(&ev.name);
                    attributes_into(&mut ev_attrs, &ev.attributes);
                    ev_attrs.finish_row();
                    ev_dropped.append_value(ev.dropped_attributes_count);
                }
                ev_offsets.push(ev_name.len());
                for l in &sp.links {
                    ln_trace.append_value(hex::encode(&l.trace_id));
                    ln_span.append_value(hex::encode(&l.span_id));
                    ln_state.append_option(non_empty(&l.trace_state));
                    attributes_into(&mut ln_attrs, &l.attributes);
                    ln_attrs.finish_row();
                    ln_flags.append_value(l.flags);
                }
                ln_offsets.push(ln_trace.len());
                service.append_option(svc);
                attributes_into(&mut res_attrs, resource_attrs);
                res_attrs.finish_row();
                scope_name.append_option(scope.and_then(|s| non_empty(&s.name)));
                scope_version.append_option(scope.and_then(|s| non_empty(&s.version)));
                attributes_into(&mut attrs, &sp.attributes);
                attrs.finish_row();
            }
        }
    }
    let events = StructArray::new(
        span_event_fields(),
        vec![
            Arc::new(ev_ts.finish()) as ArrayRef,
            Arc::new(ev_name.finish()),
            ev_attrs.finish(),
            Arc::new(ev_dropped.finish()),
        ],
        None,
    );
    let links = StructArray::new(
        span_link_fields(),
        vec![
            Arc::new(ln_trace.finish()) as ArrayRef,
            Arc::new(ln_span.finish()),
            Arc::new(ln_state.finish()),
            ln_attrs.finish(),
            Arc::new(ln_flags.finish()),
        ],
        None,
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(flags.finish()),
        ev_offsets.finish(DataType::Struct(span_event_fields()), Arc::new(events)),
        ln_offsets.finish(DataType::Struct(span_link_fields()), Arc::new(links)),
        Arc::new(service.finish()),
        res_attrs.finish(),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
        attrs.finish(),
    ];
    Ok(Decoded {
        records: RecordBatch::try_new(traces_schema(), columns)?,
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
        let d = decode_traces(&req, 0).unwrap();
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
