//! The Loki push source: `POST /loki/api/v1/push` on 3100, snappy-compressed protobuf
//! (`application/x-protobuf`, as Promtail and winston-loki send it) and JSON (`application/json`,
//! optionally gzip), plus `GET /ready` for clients that probe it.
//!
//! Answers like Loki: 204 on success; 400 with a plain-text reason for a malformed payload;
//! 413 when the body is over `sources.loki.max_request_bytes` (before or after
//! decompression); 415 for an unknown content type; 429 with `Retry-After` when the buffer
//! is full (Loki's rate-limit status, which clients retry); 503 when the agent cannot store.

pub mod config;
pub mod decode;
mod service;

pub use config::{LokiConfig, LokiSource};
pub use service::{Loki, SOURCE};
