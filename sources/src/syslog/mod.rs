//! The syslog source: RFC 5424 and RFC 3164 over UDP and TCP (newline and octet-counting
//! framing, RFC 6587), 1514 by default.
//!
//! Mapping (docs/protocols.md): the severity becomes the OTel severity number and text, APP-NAME
//! and HOSTNAME become the resource's `service.name` and `host.name`, the facility, priority,
//! PROCID, MSGID and structured data become `syslog.*` attributes. A line without a valid
//! header is kept as the raw body with a `syslog.parse_error` attribute.
//!
//! Messages are batched per socket (up to `max_batch_records` or `batch_timeout`). TCP applies
//! backpressure: while the buffer is full the connection is not read, so the sender's TCP
//! window fills. UDP cannot push back: datagrams that arrive while the buffer is full are
//! counted in `weir_rejected_requests_total{reason="buffer_full"}` and logged.

pub mod config;
pub mod framing;
pub mod parse;
mod service;

pub use config::{SyslogConfig, ValidSyslog};
pub use service::{to_batch, SyslogService, SOURCE_TCP, SOURCE_UDP};
