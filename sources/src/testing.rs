//! Helpers of the crate's unit tests.

use std::sync::Arc;

use weir_pipelines::buffer::{AckMode, SledBuffer, SledBufferConfig};
use weir_pipelines::ingest::Ingest;

/// An ingest handle over a 64 MiB buffer in `dir`, durable acks, fresh metrics.
pub(crate) fn ingest(dir: &std::path::Path) -> Ingest {
    let buffer = SledBuffer::open(&SledBufferConfig {
        path: dir.join("buffer"),
        max_bytes: 64 << 20,
    })
    .unwrap();
    Ingest::new(
        Arc::new(buffer),
        AckMode::Durable,
        weir_pipelines::metrics::Metrics::new(),
        Arc::new(tokio::sync::Notify::new()),
    )
}
