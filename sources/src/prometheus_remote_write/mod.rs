//! The Prometheus remote write source: `POST /api/v1/write` on 9201 (off by default), remote
//! write 1.0 (`prometheus.WriteRequest`) and 2.0 (`io.prometheus.write.v2.Request`, with its
//! symbol table), both snappy-compressed protobuf, the version chosen by `Content-Type`.
//! Series map into the metrics lake schema as the OpenTelemetry Collector's Prometheus
//! receiver maps them ([`decode`]).
//!
//! Answers as the specifications say: 204 on success (2.0 adds the
//! `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written` headers); 400 with a
//! plain-text reason for a malformed or over-limit request (senders do not retry it); 413
//! over `max_request_bytes`; 415 for another content type or encoding; 503 with
//! `Retry-After` when the buffer is full, the agent cannot store, or the body was too slow
//! (Prometheus retries 5xx always, 429 only when `retry_on_http_429` is set, so a full buffer
//! is 503 here rather than 429).

pub mod config;
pub mod decode;
pub mod proto;
mod service;
mod wire;

pub use config::{PrometheusRemoteWriteConfig, ValidPrometheusRemoteWrite};
pub use service::{version, RemoteWrite, Version, PATH, SOURCE};
