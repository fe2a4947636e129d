//! `[sources.fluent]`.

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use crate::conn::{ConnLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::contract::{at_least, claim, tenant_valid, Claim, SourceConfig, ValidSource};
use crate::http::{check_row_bytes, default_max_row_bytes};
use crate::tls::TlsConfig;

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
    /// Largest size of the rows one forward message decodes to: the tag is copied to the row
    /// of each of its entries, so a small message can expand a thousandfold. Checked while the
    /// rows are built; a message over it is not acknowledged, counted as
    /// `weir_rejected_requests_total{source="fluent",reason="too_many_row_bytes"}`, and closes
    /// the connection (messages before it are written and acknowledged). Also bounds the
    /// parse (each msgpack value is counted before it is decoded) and the rows one read
    /// gathers before they are written. Default: 8 × `max_frame_bytes` (128 MiB),
    /// within 1 MiB ..= 1 GiB.
    pub max_row_bytes: Option<ByteSize>,
    /// Open connections allowed; one more is closed at once and counted
    /// (`weir_rejected_requests_total{source="fluent",reason="too_many_connections"}`).
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed and counted
    /// (`reason="idle_timeout"`), so idle sockets cannot hold every slot of `max_connections`.
    /// Fluent Bit closes its own idle forward connections after 30 s
    /// (`net.keepalive_idle_timeout`) and Fluentd reconnects (and resends unacknowledged
    /// chunks with `require_ack_response`), so 5 minutes breaks neither. At least 1s.
    pub idle_timeout: HumanDuration,
    /// Forward messages decoded at once across the source's connections; a connection whose
    /// message waits for its turn stops reading (TCP backpressure). Default: derived from
    /// memory ([`crate::http::max_concurrent_decodes`]): a quarter of the memory available
    /// divided by what one decode may hold (2 × `max_frame_bytes` + `max_row_bytes`), at least
    /// 1 and at most two per core.
    pub max_concurrent_decodes: Option<usize>,
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
            max_row_bytes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: HumanDuration(DEFAULT_IDLE_TIMEOUT),
            max_concurrent_decodes: None,
            tenant: "default".into(),
            shared_key: None,
            self_hostname: "weir".into(),
            tls: None,
        }
    }
}

impl FluentConfig {
    /// The bounds of connections.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout.0,
        }
    }

    /// Messages decoded at once (`max_concurrent_decodes` or its default from memory).
    pub fn max_concurrent_decodes(&self) -> usize {
        self.max_concurrent_decodes.unwrap_or_else(|| {
            crate::http::max_concurrent_decodes(
                self.max_frame_bytes.0 as usize,
                self.max_row_bytes(),
            )
        })
    }

    /// The budget of one message's rows (`max_row_bytes` or its default).
    pub fn max_row_bytes(&self) -> usize {
        self.max_row_bytes
            .map_or_else(|| default_max_row_bytes(self.max_frame_bytes.0), |b| b.0) as usize
    }
}

/// A validated `[sources.fluent]`.
#[derive(Debug, Clone)]
pub struct ValidFluent {
    /// The values.
    pub config: FluentConfig,
    /// The listen address, if set.
    pub address: Option<Claim>,
}

impl SourceConfig for FluentConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let address = claim(
            &mut problems,
            "sources.fluent.address",
            &self.address,
            false,
        );
        at_least(
            &mut problems,
            "sources.fluent.max_frame_bytes",
            self.max_frame_bytes.0,
            1024,
            "1KiB",
        );
        check_row_bytes(
            &mut problems,
            "sources.fluent.max_row_bytes",
            self.max_row_bytes() as u64,
        );
        self.conn_limits().check(&mut problems, "sources.fluent");
        if self.max_concurrent_decodes == Some(0) {
            problems.push("sources.fluent.max_concurrent_decodes must be at least 1".into());
        }
        tenant_valid(&mut problems, "sources.fluent.tenant", &self.tenant);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidFluent {
            config: self.clone(),
            address,
        }))
    }
}
