//! OTLP logs protobuf → the logs lake schema in one walk of the wire format, with no prost
//! structs: the same rows, rejections, budget refusals and times as prost's decode followed by
//! [`decode_logs`](super::decode_logs), at a fraction of the cost (docs/performance.md).
//!
//! Protobuf lets fields come in any order, so a `ResourceLogs` is walked twice: first for its
//! resource (merged if it appears more than once) and the frames of its `ScopeLogs`, then
//! each `ScopeLogs` in turn: once for its scope, once for its records, which are appended as
//! they are read (`common_wire::walk`). Strings and bytes are borrowed from the body; string
//! values go to the builders without a copy of their own.

use std::borrow::Cow;

use super::common_wire::{
    any_text, check_listed, count_items, held_lists, hex_id_in, merge_any, push_attribute, refusal,
    walk, Any, Items, ResourceText, Scope, Shape, Stop, ANY_VALUE_LISTED, ATTRIBUTES_LISTED,
};
use super::logs::non_empty;
use super::wire::{Depth, Reader, WireError};
use super::{pick_time, DecodeError, Decoded, Rejections};
use crate::budget::DecodeBudget;
use crate::logrows::{LogFields, LogsBuilder, LOG_ROW_BYTES};

const LOGS: Shape = Shape {
    resources: "resource_logs",
    scopes: "scope_logs",
    items: "log_records",
};

/// Decodes the protobuf `ExportLogsServiceRequest` `body` into one record batch of the logs
/// schema; refused whole as soon as its rows are over `budget`, or when it is malformed
/// ([`DecodeError::Malformed`] names the field), which wins over the budget as it does when
/// prost decodes the body before any row is built.
pub fn decode_logs_protobuf(
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeError> {
    let mut out = LogsBuilder::with_capacity(budget.capacity(count_items(body), LOG_ROW_BYTES));
    let mut records = Records::new(Some(&mut out), received_at, budget);
    let walked = walk(body, &LOGS, &mut records);
    let rejected = std::mem::take(&mut records.rejected);
    // The scratch lists go before a refused body is walked again.
    drop(records);
    if let Err(stop) = walked {
        drop(out);
        let mut check = Records::new(None, received_at, budget);
        return Err(refusal(body, &LOGS, stop, &mut check));
    }
    Ok(Decoded::new(out.finish()?, rejected))
}

/// What a walk does with log records: appends them to `out`, or only checks them when `out`
/// is `None`.
struct Records<'a, 'o> {
    out: Option<&'o mut LogsBuilder>,
    received_at: i64,
    budget: &'o DecodeBudget,
    /// Bytes the enclosing resource's and scope's lists hold ([`Items::hold`]).
    held: usize,
    rejected: Rejections,
    /// The attributes of the current record (reused from record to record).
    attrs: Vec<(&'a str, Any<'a>)>,
}

impl<'o> Records<'_, 'o> {
    fn new(out: Option<&'o mut LogsBuilder>, received_at: i64, budget: &'o DecodeBudget) -> Self {
        Records {
            out,
            received_at,
            budget,
            held: 0,
            rejected: Rejections::default(),
            attrs: Vec::new(),
        }
    }
}

impl<'a> Items<'a> for Records<'a, '_> {
    /// One `LogRecord`: checked, then appended unless its ids are refused.
    fn item(
        &mut self,
        buf: &'a [u8],
        depth: Depth,
        resource: &ResourceText<'a>,
        scope: &Scope<'a>,
    ) -> Result<(), Stop> {
        check_listed(buf, &LOG_RECORD_LISTED, self)?;
        self.attrs.clear();
        let lr = log_record(buf, depth, &mut self.attrs)?;
        let Some(out) = self.out.as_deref_mut() else {
            return Ok(());
        };
        if !matches!(lr.trace_id.len(), 0 | 16) {
            self.rejected.reject(|| {
                format!(
                    "log record trace_id has {} bytes, expected 16",
                    lr.trace_id.len()
                )
            });
            return Ok(());
        }
        if !matches!(lr.span_id.len(), 0 | 8) {
            self.rejected.reject(|| {
                format!(
                    "log record span_id has {} bytes, expected 8",
                    lr.span_id.len()
                )
            });
            return Ok(());
        }
        let observed = if lr.observed_time_unix_nano != 0 {
            i64::try_from(lr.observed_time_unix_nano).unwrap_or(i64::MAX)
        } else {
            self.received_at
        };
        let body = any_text(&lr.body);
        let (mut trace_hex, mut span_hex) = ([0u8; 32], [0u8; 32]);
        let fields = LogFields {
            timestamp: pick_time(
                lr.time_unix_nano,
                lr.observed_time_unix_nano,
                self.received_at,
            ),
            observed,
            severity_number: lr.severity_number,
            severity_text: non_empty(lr.severity_text),
            body: body.as_deref(),
            trace_id: hex_id_in(lr.trace_id, &mut trace_hex),
            span_id: hex_id_in(lr.span_id, &mut span_hex),
            flags: lr.flags,
            event_name: non_empty(lr.event_name),
            service_name: resource.service_name,
            scope_name: non_empty(scope.name),
        };
        let attrs = &self.attrs;
        out.append(
            &fields,
            non_empty(scope.version),
            lr.dropped_attributes_count,
            |b| {
                for (k, v) in &resource.attrs {
                    b.entry(k, v.as_deref());
                }
            },
            |b| {
                for (k, v) in attrs {
                    let text: Option<Cow<'_, str>> = any_text(v);
                    b.entry(k, text.as_deref());
                }
            },
        );
        self.budget
            .check(out.bytes().saturating_add(held_lists(self.held)))
            .map_err(Stop::OverBudget)
    }

    fn budget(&self) -> (&DecodeBudget, usize) {
        let rows = self.out.as_deref().map_or(0, |out| out.bytes());
        (self.budget, rows.saturating_add(self.held))
    }

    fn hold(&mut self, bytes: usize) {
        self.held = bytes;
    }
}

/// What a `LogRecord` puts in the walk's scratch lists: its body and attributes.
static LOG_RECORD_LISTED: super::shape::Shape = super::shape::Shape {
    fields: &[(5, ANY_VALUE_LISTED), (6, ATTRIBUTES_LISTED)],
};

/// The fields of a `LogRecord` the lake keeps (its attributes go to the walk's scratch list).
#[derive(Debug, Default)]
struct LogRecordView<'a> {
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_number: i32,
    severity_text: &'a str,
    body: Any<'a>,
    dropped_attributes_count: u32,
    flags: u32,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: &'a str,
}

/// Reads a `LogRecord` whose fields are at `depth`, appending its attributes to `attrs`.
fn log_record<'a>(
    buf: &'a [u8],
    depth: Depth,
    attrs: &mut Vec<(&'a str, Any<'a>)>,
) -> Result<LogRecordView<'a>, WireError> {
    let mut lr = LogRecordView::default();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => lr.time_unix_nano = r.fixed64(wt).map_err(|e| e.at("time_unix_nano"))?,
            2 => {
                let v = r.varint_field(wt).map_err(|e| e.at("severity_number"))?;
                lr.severity_number = v as i32;
            }
            3 => lr.severity_text = r.string(wt).map_err(|e| e.at("severity_text"))?,
            5 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("body"))?;
                merge_any(&mut lr.body, m, d).map_err(|e| e.at("body"))?;
            }
            6 => {
                let i = attrs.len();
                push_attribute(attrs, &mut r, wt, depth, "attributes", i)?;
            }
            7 => {
                let v = r
                    .varint_field(wt)
                    .map_err(|e| e.at("dropped_attributes_count"))?;
                lr.dropped_attributes_count = v as u32;
            }
            8 => lr.flags = r.fixed32(wt).map_err(|e| e.at("flags"))?,
            9 => lr.trace_id = r.bytes(wt).map_err(|e| e.at("trace_id"))?,
            10 => lr.span_id = r.bytes(wt).map_err(|e| e.at("span_id"))?,
            11 => {
                lr.observed_time_unix_nano =
                    r.fixed64(wt).map_err(|e| e.at("observed_time_unix_nano"))?;
            }
            12 => lr.event_name = r.string(wt).map_err(|e| e.at("event_name"))?,
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(lr)
}

#[cfg(test)]
mod tests;
