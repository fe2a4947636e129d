//! `[sources.syslog]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use crate::conn::{ConnLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use crate::contract::{at_least, claim, tenant_valid, Claim, SourceConfig, ValidSource};
use crate::tls::TlsConfig;

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
    /// Open TCP connections allowed; one more is closed at once and counted
    /// (`weir_rejected_requests_total{source="syslog_tcp",reason="too_many_connections"}`).
    pub max_connections: usize,
    /// A TCP connection that sends nothing for this long is closed and counted
    /// (`reason="idle_timeout"`), so idle sockets cannot hold every slot of
    /// `max_connections`. Senders reconnect when they next have a message (rsyslog, syslog-ng).
    /// At least 1s.
    pub idle_timeout: HumanDuration,
    /// The UDP socket's receive buffer (`SO_RCVBUF`): datagrams that arrive while the agent
    /// is not reading wait there, and past it the kernel drops them uncounted by Weir (see
    /// `/proc/net/udp`). The kernel caps it at `net.core.rmem_max`; a smaller result is said
    /// at start.
    pub udp_receive_buffer: ByteSize,
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: HumanDuration(DEFAULT_IDLE_TIMEOUT),
            udp_receive_buffer: ByteSize(4 << 20),
            tenant: "default".into(),
            tls: None,
        }
    }
}

impl SyslogConfig {
    /// The bounds of TCP connections.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout.0,
        }
    }
}

/// A validated `[sources.syslog]`.
#[derive(Debug, Clone)]
pub struct ValidSyslog {
    /// The values.
    pub config: SyslogConfig,
    /// The TCP address, if enabled.
    pub tcp: Option<Claim>,
    /// The UDP address, if enabled.
    pub udp: Option<Claim>,
}

impl SourceConfig for SyslogConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE_UDP, super::SOURCE_TCP];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let tcp = claim(
            &mut problems,
            "sources.syslog.tcp_address",
            &self.tcp_address,
            false,
        );
        let udp = claim(
            &mut problems,
            "sources.syslog.udp_address",
            &self.udp_address,
            true,
        );
        at_least(
            &mut problems,
            "sources.syslog.max_frame_bytes",
            self.max_frame_bytes.0,
            480,
            "480 bytes (RFC 5424's minimum)",
        );
        if !(4096..=1 << 30).contains(&self.udp_receive_buffer.0) {
            problems.push("sources.syslog.udp_receive_buffer must be between 4KiB and 1GiB".into());
        }
        if self.max_batch_records == 0 {
            problems.push("sources.syslog.max_batch_records must be at least 1".into());
        }
        self.conn_limits().check(&mut problems, "sources.syslog");
        tenant_valid(&mut problems, "sources.syslog.tenant", &self.tenant);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidSyslog {
            config: self.clone(),
            tcp,
            udp,
        }))
    }
}
