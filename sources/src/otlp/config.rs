//! `[sources.otlp]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use crate::conn::{ConnLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::contract::{claim, Claim, SourceConfig, ValidSource};
use crate::http::{
    check_row_bytes, default_max_row_bytes, max_concurrent_decodes, HttpLimits,
    DEFAULT_HEADER_READ_TIMEOUT,
};

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
    /// Largest size of the rows one request decodes to, on both transports (413 /
    /// RESOURCE_EXHAUSTED above it, naming this key): resource and scope attributes are copied
    /// to the row of every record, so a small request can expand a thousandfold. Checked while
    /// the rows are built, so a refused request never holds more. Default: 8 ×
    /// `max_request_bytes` (128 MiB), within 1 MiB ..= 1 GiB.
    pub max_row_bytes: Option<ByteSize>,
    /// Longest wait for an OTLP/HTTP request's body (408 after it).
    pub request_timeout: HumanDuration,
    /// Requests decoded at once, per transport: OTLP/HTTP requests wait their turn up to
    /// `request_timeout`, then get 503; OTLP/gRPC requests wait (and one connection runs at
    /// most this many at once). Default: sized from memory, a quarter of it divided by what
    /// one decode may hold (2 × `max_request_bytes` + `max_row_bytes`), at least 1 and at most
    /// two per core.
    pub max_concurrent_decodes: Option<usize>,
    /// Open connections allowed on each of the two addresses; one more is closed at once and
    /// counted (`weir_rejected_requests_total{reason="too_many_connections"}`).
    pub max_connections: usize,
    /// Longest wait for an OTLP/HTTP request's headers (HTTP/1), from the connection's first
    /// bytes or the end of the previous response: a slower client (slowloris), or a keep-alive
    /// connection idle that long, is closed. At least 1s.
    pub header_read_timeout: HumanDuration,
    /// A connection (either transport) over which nothing moves for this long while the agent
    /// waits on it is closed and counted (`reason="idle_timeout"`). gRPC exporters reconnect
    /// by themselves. At least 1s.
    pub idle_timeout: HumanDuration,
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
            max_row_bytes: None,
            request_timeout: HumanDuration(Duration::from_secs(30)),
            max_concurrent_decodes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HumanDuration(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(DEFAULT_IDLE_TIMEOUT),
            retry_after: HumanDuration(Duration::from_secs(5)),
        }
    }
}

impl OtlpConfig {
    /// The budget of one request's rows (`max_row_bytes` or its default).
    pub fn max_row_bytes(&self) -> usize {
        self.max_row_bytes
            .map_or_else(|| default_max_row_bytes(self.max_request_bytes.0), |b| b.0)
            as usize
    }

    /// The limits of OTLP/HTTP requests (and the connection bounds of both transports).
    pub fn http_limits(&self) -> HttpLimits {
        let max_request_bytes = self.max_request_bytes.0 as usize;
        HttpLimits {
            max_request_bytes,
            max_row_bytes: self.max_row_bytes(),
            request_timeout: self.request_timeout.0,
            max_concurrent_decodes: self
                .max_concurrent_decodes
                .unwrap_or_else(|| max_concurrent_decodes(max_request_bytes, self.max_row_bytes())),
            retry_after: self.retry_after.0,
            conn: ConnLimits {
                max_connections: self.max_connections,
                idle_timeout: self.idle_timeout.0,
            },
            header_read_timeout: self.header_read_timeout.0,
        }
    }
}

/// A validated `[sources.otlp]`.
#[derive(Debug, Clone)]
pub struct ValidOtlp {
    /// The values.
    pub config: OtlpConfig,
    /// The gRPC address, if enabled.
    pub grpc: Option<Claim>,
    /// The HTTP address, if enabled.
    pub http: Option<Claim>,
}

impl SourceConfig for OtlpConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::grpc::SOURCE, super::http::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let grpc = claim(
            &mut problems,
            "sources.otlp.grpc_address",
            &self.grpc_address,
            false,
        );
        let http = claim(
            &mut problems,
            "sources.otlp.http_address",
            &self.http_address,
            false,
        );
        self.http_limits().check(&mut problems, "sources.otlp");
        check_row_bytes(
            &mut problems,
            "sources.otlp.max_row_bytes",
            self.max_row_bytes() as u64,
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidOtlp {
            config: self.clone(),
            grpc,
            http,
        }))
    }
}
