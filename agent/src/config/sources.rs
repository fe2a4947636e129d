//! Configuration of the sources (`[sources.*]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ByteSize, HumanDuration};
use crate::sources::tls::TlsConfig;

/// The OTLP source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// gRPC listen address; empty string disables gRPC.
    pub grpc_address: String,
    /// HTTP listen address; empty string disables HTTP.
    pub http_address: String,
    /// Largest request body, compressed or decompressed (413 / RESOURCE_EXHAUSTED above it).
    pub max_request_bytes: ByteSize,
    /// `Retry-After` sent when the buffer is full.
    pub retry_after: HumanDuration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: true,
            grpc_address: "0.0.0.0:4317".into(),
            http_address: "0.0.0.0:4318".into(),
            max_request_bytes: ByteSize(16 << 20),
            retry_after: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// The syslog source (RFC 5424 and RFC 3164).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// UDP listen address; empty string disables UDP.
    pub udp_address: String,
    /// TCP listen address (newline or octet-counting framing); empty string disables TCP.
    pub tcp_address: String,
    /// Largest message; a longer TCP frame closes that connection, a longer datagram is dropped.
    pub max_frame_bytes: ByteSize,
    /// Messages per batch written to the buffer.
    pub max_batch_records: usize,
    /// Longest a message waits for its batch to fill.
    pub batch_timeout: HumanDuration,
    /// Open TCP connections allowed.
    pub max_connections: usize,
    /// Tenant of every message (syslog carries none).
    pub tenant: String,
    /// TLS certificate and key for TCP; plain TCP when absent.
    pub tls: Option<TlsConfig>,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: true,
            udp_address: "0.0.0.0:1514".into(),
            tcp_address: "0.0.0.0:1514".into(),
            max_frame_bytes: ByteSize(64 << 10),
            max_batch_records: 1000,
            batch_timeout: HumanDuration(Duration::from_millis(200)),
            max_connections: 1024,
            tenant: "default".into(),
            tls: None,
        }
    }
}

/// The Loki push source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LokiConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// HTTP listen address of `/loki/api/v1/push` and `/ready`.
    pub address: String,
    /// Largest request body, compressed or decompressed (413 above it).
    pub max_request_bytes: ByteSize,
    /// `Retry-After` sent with 429 when the buffer is full.
    pub retry_after: HumanDuration,
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            enabled: true,
            address: "0.0.0.0:3100".into(),
            max_request_bytes: ByteSize(16 << 20),
            retry_after: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// The Fluent forward source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FluentConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// TCP listen address.
    pub address: String,
    /// Largest forward message, and largest decompressed CompressedPackedForward payload; a
    /// larger one closes that connection.
    pub max_frame_bytes: ByteSize,
    /// Open connections allowed.
    pub max_connections: usize,
    /// Tenant of every record (the forward protocol carries none).
    pub tenant: String,
    /// Shared key: when set, clients must pass the forward protocol's HELO/PING/PONG handshake.
    pub shared_key: Option<String>,
    /// Host name sent in PONG.
    pub self_hostname: String,
    /// TLS certificate and key; plain TCP when absent.
    pub tls: Option<TlsConfig>,
}

impl Default for FluentConfig {
    fn default() -> Self {
        FluentConfig {
            enabled: true,
            address: "0.0.0.0:24224".into(),
            max_frame_bytes: ByteSize(16 << 20),
            max_connections: 1024,
            tenant: "default".into(),
            shared_key: None,
            self_hostname: "weir".into(),
            tls: None,
        }
    }
}

/// The Datadog Agent intake source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// HTTP listen address.
    pub address: String,
    /// Largest request body, compressed or decompressed (413 above it).
    pub max_request_bytes: ByteSize,
    /// `Retry-After` sent with 429 when the buffer is full.
    pub retry_after: HumanDuration,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            enabled: true,
            address: "0.0.0.0:8282".into(),
            max_request_bytes: ByteSize(16 << 20),
            retry_after: HumanDuration(Duration::from_secs(5)),
        }
    }
}
