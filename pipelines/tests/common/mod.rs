//! Helpers the pipelines integration tests share.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use tokio::sync::Notify;
use weir_pipelines::buffer::Buffer;
use weir_pipelines::flusher::{Flusher, FlusherConfig};
use weir_pipelines::lake::Lake;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::metrics::Metrics;

/// A flusher over `buffer` that flushes every partition at once (no file age) and polls
/// every 20 ms.
pub fn flusher(buffer: Arc<dyn Buffer>, lake: Lake) -> Flusher {
    let config = FlusherConfig {
        max_file_age: Duration::ZERO,
        poll_interval: Duration::from_millis(20),
        ..FlusherConfig::default()
    };
    Flusher::new(
        buffer,
        lake,
        Metrics::new(),
        config,
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    )
}

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
