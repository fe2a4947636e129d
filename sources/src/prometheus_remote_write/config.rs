//! `[sources.prometheus_remote_write]`: the keys every HTTP source has, off by default,
//! listening on 9201, and the limits on series.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use super::decode::Limits;
use crate::conn::{ConnLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::contract::{at_least, Claim, SourceConfig, ValidSource};
use crate::http::{max_concurrent_decodes, HttpLimits, ValidHttp, DEFAULT_HEADER_READ_TIMEOUT};

/// Key prefix of the source.
pub const KEY: &str = "sources.prometheus_remote_write";

/// The Prometheus remote write receiver (1.0 and 2.0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusRemoteWriteConfig {
    /// Whether the source runs (off by default).
    pub enabled: bool,
    /// HTTP listen address of `POST /api/v1/write` (`127.0.0.1:0` lets the kernel pick a
    /// port, see `listen.json`).
    pub address: String,
    /// Largest request body, compressed or decompressed (413 above it; a snappy body whose
    /// header declares more is refused before it is decompressed).
    pub max_request_bytes: ByteSize,
    /// Longest wait for a request's body (408 after it).
    pub request_timeout: HumanDuration,
    /// Requests decoded at once; more wait their turn, up to `request_timeout`, then get 503.
    /// Default: sized from memory, a quarter of it divided by what one decode may hold
    /// (2 × `max_request_bytes` + `max_row_bytes`), at least 1 and at most two per core.
    pub max_concurrent_decodes: Option<usize>,
    /// Open connections allowed; one more is closed at once and counted
    /// (`weir_rejected_requests_total{reason="too_many_connections"}`).
    pub max_connections: usize,
    /// Longest wait for a request's headers (HTTP/1), from the connection's first bytes or the
    /// end of the previous response: a slower client (slowloris), or a keep-alive connection idle
    /// that long, is closed. At least 1s.
    pub header_read_timeout: HumanDuration,
    /// A connection over which nothing moves for this long while the agent waits on it (an
    /// HTTP/2 connection without requests, a client that stopped reading its response) is
    /// closed and counted (`reason="idle_timeout"`). At least 1s.
    pub idle_timeout: HumanDuration,
    /// `Retry-After` sent with 429 and 503.
    pub retry_after: HumanDuration,
    /// Labels per series, `__name__` included (400 above it).
    pub max_labels_per_series: usize,
    /// Bytes of label names and values per series (400 above it).
    pub max_label_bytes_per_series: ByteSize,
    /// Bytes of rows one request may expand to (400 above it): a series' labels are copied to
    /// the row of each of its samples, and native histogram buckets are filled between spans,
    /// so this bounds the memory of one decode. Default: 16 × `max_request_bytes`.
    pub max_row_bytes: Option<ByteSize>,
}

impl Default for PrometheusRemoteWriteConfig {
    fn default() -> Self {
        let limits = Limits::default();
        PrometheusRemoteWriteConfig {
            enabled: false,
            address: "0.0.0.0:9201".into(),
            max_request_bytes: ByteSize(16 << 20),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            max_concurrent_decodes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HumanDuration(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(DEFAULT_IDLE_TIMEOUT),
            retry_after: HumanDuration(Duration::from_secs(5)),
            max_labels_per_series: limits.max_labels_per_series,
            max_label_bytes_per_series: ByteSize(limits.max_label_bytes_per_series as u64),
            max_row_bytes: None,
        }
    }
}

impl PrometheusRemoteWriteConfig {
    /// The limits of the shared HTTP request path.
    pub fn http_limits(&self) -> HttpLimits {
        let max_request_bytes = self.max_request_bytes.0 as usize;
        // Enforced by the series assembly ([`Limits::max_row_bytes`], a 400).
        let max_row_bytes = self.series_limits().max_row_bytes;
        HttpLimits {
            max_request_bytes,
            max_row_bytes,
            request_timeout: self.request_timeout.0,
            max_concurrent_decodes: self
                .max_concurrent_decodes
                .unwrap_or_else(|| max_concurrent_decodes(max_request_bytes, max_row_bytes)),
            retry_after: self.retry_after.0,
            conn: ConnLimits {
                max_connections: self.max_connections,
                idle_timeout: self.idle_timeout.0,
            },
            header_read_timeout: self.header_read_timeout.0,
        }
    }

    /// The limits on the series of one request.
    pub fn series_limits(&self) -> Limits {
        Limits {
            key: KEY,
            scope: super::SOURCE,
            max_labels_per_series: self.max_labels_per_series,
            max_label_bytes_per_series: self.max_label_bytes_per_series.0 as usize,
            max_row_bytes: self
                .max_row_bytes
                .map(|b| b.0 as usize)
                .unwrap_or((self.max_request_bytes.0 as usize).saturating_mul(16)),
        }
    }
}

/// A validated `[sources.prometheus_remote_write]`.
#[derive(Debug, Clone)]
pub struct ValidPrometheusRemoteWrite {
    /// The listen address, if set.
    pub address: Option<Claim>,
    /// Limits of the request path.
    pub http: HttpLimits,
    /// Limits on series.
    pub series: Limits,
}

impl SourceConfig for PrometheusRemoteWriteConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::service::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let http = self.http_limits();
        let address = ValidHttp::check(&mut problems, KEY, &self.address, &http);
        if self.max_labels_per_series == 0 {
            problems.push(format!("{KEY}.max_labels_per_series must be at least 1"));
        }
        at_least(
            &mut problems,
            &format!("{KEY}.max_label_bytes_per_series"),
            self.max_label_bytes_per_series.0,
            64,
            "64B",
        );
        let series = self.series_limits();
        at_least(
            &mut problems,
            &format!("{KEY}.max_row_bytes"),
            series.max_row_bytes as u64,
            1 << 20,
            "1MiB",
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidPrometheusRemoteWrite {
            address,
            http,
            series,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_checked() {
        let c = PrometheusRemoteWriteConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.address, "0.0.0.0:9201");
        assert!(c.validate().is_ok());
        assert_eq!(c.series_limits().max_row_bytes, 256 << 20);
        let bad = PrometheusRemoteWriteConfig {
            max_labels_per_series: 0,
            max_label_bytes_per_series: ByteSize(10),
            address: "nope".into(),
            ..Default::default()
        };
        let problems = bad.validate().err().unwrap();
        assert!(problems.iter().any(|p| p.contains("max_labels_per_series")));
        assert!(problems
            .iter()
            .any(|p| p.contains("max_label_bytes_per_series")));
        assert!(problems.iter().any(|p| p.contains(".address")));
    }
}
