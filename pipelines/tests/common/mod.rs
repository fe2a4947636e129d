//! Helpers the pipelines integration tests share.
#![allow(dead_code)]

use arrow_array::RecordBatch;
use weir_pipelines::logrows::{LogFields, LogsBuilder};

/// A logs batch of `(timestamp, body, service)` rows (severity INFO, nothing else set).
pub fn log_batch<'a>(rows: impl IntoIterator<Item = (i64, String, &'a str)>) -> RecordBatch {
    let mut b = LogsBuilder::with_capacity(0);
    for (ts, body, service) in rows {
        b.append(
            &LogFields {
                timestamp: ts,
                observed: ts,
                severity_number: 9,
                severity_text: None,
                body: Some(&body),
                trace_id: None,
                span_id: None,
                flags: 0,
                event_name: None,
                service_name: Some(service),
                scope_name: None,
            },
            None,
            0,
            |_| {},
            |_| {},
        );
    }
    b.finish().unwrap()
}
