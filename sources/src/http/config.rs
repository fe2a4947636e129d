//! The configuration of an HTTP source with one listen address (`[sources.loki]`,
//! `[sources.datadog]`): one generic struct, so every such source has the same keys, the same
//! defaults (but its address) and the same validation.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use super::{
    check_row_bytes, default_max_row_bytes, max_concurrent_decodes, HttpLimits, ValidHttp,
    DEFAULT_HEADER_READ_TIMEOUT,
};
use crate::conn::{ConnLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::contract::{SourceConfig, SourceContext, ValidSource};

/// What differs between single-address HTTP sources.
pub trait HttpSourceKind: Clone + fmt::Debug + PartialEq + Default + Send + Sync + 'static {
    /// Source name (`[sources.<name>]`).
    const NAME: &'static str;
    /// What it is, in logs (`Loki push`).
    const WHAT: &'static str;
    /// Default listen address.
    const ADDRESS: &'static str;
    /// The names its batches carry.
    const BATCH_SOURCES: &'static [&'static str];
    /// Its routes.
    fn routes(ctx: &SourceContext, limits: HttpLimits) -> axum::Router;
}

/// `[sources.<name>]` of an HTTP source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct HttpSourceConfig<K: HttpSourceKind> {
    /// Whether the source runs.
    pub enabled: bool,
    /// HTTP listen address (`127.0.0.1:0` lets the kernel pick a port, see `listen.json`).
    pub address: String,
    /// Largest request body, compressed or decompressed (413 above it).
    pub max_request_bytes: ByteSize,
    /// Largest size of the rows one request decodes to (413 above it, naming this key): a
    /// value sent once for many records (Loki stream labels, Datadog series tags) is copied to
    /// the row of each, so a small body can expand a thousandfold. Checked while the rows are
    /// built, so a refused request never holds more. Default: 8 × `max_request_bytes`
    /// (128 MiB), within 1 MiB ..= 1 GiB.
    pub max_row_bytes: Option<ByteSize>,
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
    #[serde(skip)]
    kind: PhantomData<K>,
}

impl<K: HttpSourceKind> Default for HttpSourceConfig<K> {
    fn default() -> Self {
        HttpSourceConfig {
            enabled: true,
            address: K::ADDRESS.into(),
            max_request_bytes: ByteSize(16 << 20),
            max_row_bytes: None,
            request_timeout: HumanDuration(super::DEFAULT_REQUEST_TIMEOUT),
            max_concurrent_decodes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: HumanDuration(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: HumanDuration(DEFAULT_IDLE_TIMEOUT),
            retry_after: HumanDuration(Duration::from_secs(5)),
            kind: PhantomData,
        }
    }
}

impl<K: HttpSourceKind> HttpSourceConfig<K> {
    /// The limits as the shared request path takes them.
    pub fn limits(&self) -> HttpLimits {
        let max_request_bytes = self.max_request_bytes.0 as usize;
        let max_row_bytes = self
            .max_row_bytes
            .map_or_else(|| default_max_row_bytes(self.max_request_bytes.0), |b| b.0)
            as usize;
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
}

impl<K: HttpSourceKind> SourceConfig for HttpSourceConfig<K> {
    const BATCH_SOURCES: &'static [&'static str] = K::BATCH_SOURCES;

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let limits = self.limits();
        let prefix = format!("sources.{}", K::NAME);
        let address = ValidHttp::check(&mut problems, &prefix, &self.address, &limits);
        check_row_bytes(
            &mut problems,
            &format!("{prefix}.max_row_bytes"),
            limits.max_row_bytes as u64,
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidHttp {
            name: K::NAME,
            what: K::WHAT,
            address,
            limits,
            router: K::routes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use weir_pipelines::units::ByteSize;

    use crate::contract::SourceConfig;
    use crate::fluent::FluentConfig;
    use crate::loki::LokiConfig;
    use crate::otlp::OtlpConfig;

    /// `max_row_bytes` of every source that has it: 8 × the request (or frame) limit by
    /// default, within 1 MiB ..= 1 GiB, and a set value outside that range is refused with
    /// its key.
    #[test]
    fn max_row_bytes_defaults_and_bounds() {
        let loki = LokiConfig::default();
        assert_eq!(loki.limits().max_row_bytes, 128 << 20);
        assert_eq!(OtlpConfig::default().max_row_bytes(), 128 << 20);
        assert_eq!(FluentConfig::default().max_row_bytes(), 128 << 20);
        let small = LokiConfig {
            max_request_bytes: ByteSize(4 << 10),
            ..LokiConfig::default()
        };
        assert_eq!(small.limits().max_row_bytes, 1 << 20);
        let huge = OtlpConfig {
            max_request_bytes: ByteSize(1 << 30),
            ..OtlpConfig::default()
        };
        assert_eq!(huge.max_row_bytes(), 1 << 30);
        let problems = |r: Result<_, Vec<String>>| r.err().unwrap_or_default().join("; ");
        let p = problems(
            LokiConfig {
                max_row_bytes: Some(ByteSize(2 << 30)),
                ..LokiConfig::default()
            }
            .validate(),
        );
        assert!(
            p.contains("sources.loki.max_row_bytes = 2GiB is above 1GiB"),
            "{p}"
        );
        let p = problems(
            OtlpConfig {
                max_row_bytes: Some(ByteSize(1024)),
                ..OtlpConfig::default()
            }
            .validate(),
        );
        assert!(p.contains("sources.otlp.max_row_bytes"), "{p}");
        let p = problems(
            FluentConfig {
                max_row_bytes: Some(ByteSize(2 << 30)),
                ..FluentConfig::default()
            }
            .validate(),
        );
        assert!(p.contains("sources.fluent.max_row_bytes"), "{p}");
    }

    /// The connection keys of every HTTP source: defaults, and values out of range refused
    /// with their key.
    #[test]
    fn connection_keys() {
        use std::time::Duration;

        use weir_pipelines::units::HumanDuration;

        use crate::prometheus_remote_write::PrometheusRemoteWriteConfig;

        let limits = LokiConfig::default().limits();
        assert_eq!(limits.conn.max_connections, 1024);
        assert_eq!(limits.conn.idle_timeout, Duration::from_secs(300));
        assert_eq!(limits.header_read_timeout, Duration::from_secs(30));
        assert!(limits.max_concurrent_decodes >= 1);
        let problems = |r: Result<_, Vec<String>>| r.err().unwrap_or_default().join("; ");
        let p = problems(
            LokiConfig {
                max_connections: 0,
                idle_timeout: HumanDuration(Duration::from_millis(10)),
                header_read_timeout: HumanDuration(Duration::ZERO),
                max_concurrent_decodes: Some(0),
                ..LokiConfig::default()
            }
            .validate(),
        );
        for key in [
            "sources.loki.max_connections must be at least 1",
            "sources.loki.idle_timeout must be at least 1s",
            "sources.loki.header_read_timeout must be at least 1s",
            "sources.loki.max_concurrent_decodes must be at least 1",
        ] {
            assert!(p.contains(key), "{p}");
        }
        let p = problems(
            OtlpConfig {
                idle_timeout: HumanDuration(Duration::ZERO),
                ..OtlpConfig::default()
            }
            .validate(),
        );
        assert!(p.contains("sources.otlp.idle_timeout"), "{p}");
        let p = problems(
            PrometheusRemoteWriteConfig {
                enabled: true,
                max_connections: 0,
                ..PrometheusRemoteWriteConfig::default()
            }
            .validate(),
        );
        assert!(
            p.contains("sources.prometheus_remote_write.max_connections"),
            "{p}"
        );
        let p = problems(
            FluentConfig {
                idle_timeout: HumanDuration(Duration::ZERO),
                max_connections: 0,
                ..FluentConfig::default()
            }
            .validate(),
        );
        assert!(p.contains("sources.fluent.idle_timeout"), "{p}");
        assert!(p.contains("sources.fluent.max_connections"), "{p}");
        let p = problems(
            crate::syslog::SyslogConfig {
                idle_timeout: HumanDuration(Duration::ZERO),
                ..Default::default()
            }
            .validate(),
        );
        assert!(p.contains("sources.syslog.idle_timeout"), "{p}");
    }

    /// The default of `max_concurrent_decodes`: what a quarter of memory holds, within
    /// 1 ..= two per core.
    #[test]
    fn decodes_sized_from_memory() {
        use super::super::decodes_for_memory;
        let (req, rows) = (16 << 20, 128 << 20); // 160 MiB per decode
        assert_eq!(decodes_for_memory(Some(1 << 30), req, rows, 4), 1);
        assert_eq!(decodes_for_memory(Some(256 << 20), req, rows, 4), 1);
        assert_eq!(decodes_for_memory(Some(2 << 30), req, rows, 8), 3);
        assert_eq!(decodes_for_memory(Some(64 << 30), req, rows, 4), 4);
        assert_eq!(decodes_for_memory(None, req, rows, 4), 4);
        assert_eq!(decodes_for_memory(Some(1 << 30), 1 << 20, 1 << 20, 4), 4);
    }
}
