//! A builder of logs batches for sources whose protocol is not OTLP (syslog, Loki, Fluent
//! forward, Datadog): they append one record at a time with borrowed strings, and get one
//! record batch in the logs lake schema, with no intermediate OTLP structs.

use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;
use weir_schema::logs_schema;

use crate::columns::{string_bytes, timestamp_builder, AttributesBuilder};

/// The scalar fields of one log record.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFields<'a> {
    /// Event time, unix nanoseconds.
    pub timestamp: i64,
    /// When it was observed (received), unix nanoseconds.
    pub observed: i64,
    /// OTel severity number (0 unspecified).
    pub severity_number: i32,
    /// Severity as the source wrote it.
    pub severity_text: Option<&'a str>,
    /// The body text.
    pub body: Option<&'a str>,
    /// Trace id, lowercase hex.
    pub trace_id: Option<&'a str>,
    /// Span id, lowercase hex.
    pub span_id: Option<&'a str>,
    /// Trace flags.
    pub flags: u32,
    /// Event name.
    pub event_name: Option<&'a str>,
    /// `service.name`.
    pub service_name: Option<&'a str>,
    /// Instrumentation scope name (for non-OTLP sources: the source, like `syslog`).
    pub scope_name: Option<&'a str>,
}

/// Bytes of the fixed-width columns of one log row (two timestamps, severity number, flags,
/// dropped count).
pub const LOG_ROW_BYTES: usize = 28;

/// Builds a logs record batch row by row.
pub struct LogsBuilder {
    ts: TimestampNanosecondBuilder,
    observed: TimestampNanosecondBuilder,
    sev_num: Int32Builder,
    sev_text: StringBuilder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    flags: UInt32Builder,
    event_name: StringBuilder,
    dropped: UInt32Builder,
    service: StringBuilder,
    res_attrs: AttributesBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    attrs: AttributesBuilder,
    rows: usize,
}

impl Default for LogsBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl LogsBuilder {
    /// A builder for about `n` rows.
    pub fn with_capacity(n: usize) -> LogsBuilder {
        LogsBuilder {
            ts: timestamp_builder(n),
            observed: timestamp_builder(n),
            sev_num: Int32Builder::with_capacity(n),
            sev_text: StringBuilder::new(),
            body: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            flags: UInt32Builder::with_capacity(n),
            event_name: StringBuilder::new(),
            dropped: UInt32Builder::with_capacity(n),
            service: StringBuilder::new(),
            res_attrs: AttributesBuilder::with_capacity(n),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            attrs: AttributesBuilder::with_capacity(n),
            rows: 0,
        }
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of the rows appended so far (values and offsets of every column), what a
    /// [`DecodeBudget`](crate::DecodeBudget) is checked against after each record.
    pub fn bytes(&self) -> usize {
        let strings = [
            &self.sev_text,
            &self.body,
            &self.trace_id,
            &self.span_id,
            &self.event_name,
            &self.service,
            &self.scope_name,
            &self.scope_version,
        ];
        self.rows * LOG_ROW_BYTES
            + strings.into_iter().map(string_bytes).sum::<usize>()
            + self.res_attrs.bytes()
            + self.attrs.bytes()
    }

    /// Appends one record. `resource` and `attributes` add the entries of the row's two
    /// attribute maps.
    pub fn append(
        &mut self,
        f: &LogFields<'_>,
        scope_version: Option<&str>,
        dropped_attributes: u32,
        resource: impl FnOnce(&mut AttributesBuilder),
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        self.ts.append_value(f.timestamp);
        self.observed.append_value(f.observed);
        self.sev_num.append_value(f.severity_number);
        self.sev_text.append_option(f.severity_text);
        self.body.append_option(f.body);
        self.trace_id.append_option(f.trace_id);
        self.span_id.append_option(f.span_id);
        self.flags.append_value(f.flags);
        self.event_name.append_option(f.event_name);
        self.dropped.append_value(dropped_attributes);
        self.service.append_option(f.service_name);
        resource(&mut self.res_attrs);
        self.res_attrs.finish_row();
        self.scope_name.append_option(f.scope_name);
        self.scope_version.append_option(scope_version);
        attributes(&mut self.attrs);
        self.attrs.finish_row();
        self.rows += 1;
    }

    /// The record batch; the builder is empty again afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.observed.finish()),
            Arc::new(self.sev_num.finish()),
            Arc::new(self.sev_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.dropped.finish()),
            Arc::new(self.service.finish()),
            self.res_attrs.finish(),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.attrs.finish(),
        ];
        RecordBatch::try_new(logs_schema(), columns)
    }
}

/// Concatenates logs batches (for example one per decoded message) into one.
pub fn concat(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    arrow_select::concat::concat_batches(&logs_schema(), batches)
}
