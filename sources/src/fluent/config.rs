//! `[sources.fluent]`.

use serde::{Deserialize, Serialize};
use weir_pipelines::units::ByteSize;

use crate::contract::{at_least, claim, tenant_valid, Claim, SourceConfig, ValidSource};
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
        if self.max_connections == 0 {
            problems.push("sources.fluent.max_connections must be at least 1".into());
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
