//! Weir's sources: every input, one folder each, all with the same contract.
//!
//! A source is a folder `src/<name>/` with the same small set of files:
//!
//! - `config.rs`: its configuration (`[sources.<name>]`), a serde struct with
//!   `deny_unknown_fields` whose doc comments are the user docs, implementing
//!   [`SourceConfig`]: a pure `validate()` (no I/O) that returns the validated source and the
//!   listen addresses it [`Claim`]s, so that conflicts are found before anything starts;
//! - the decoder (`decode.rs`, or a file per format), which maps the protocol to Arrow batches
//!   of the lake schemas;
//! - the service (`service.rs`), built by [`ValidSource::build`] from a [`SourceContext`]
//!   (ingest handle, API keys, shutdown token): it binds its sockets and returns a
//!   [`RunningSource`] whose tasks the agent spawns once every source is built;
//! - its tests (unit tests beside the code; end-to-end tests with real clients in
//!   `integration-tests/`).
//!
//! HTTP sources share one request path ([`http::serve_request`]): content type,
//! authentication and tenant, content encoding, a bounded body read with a timeout, decoding
//! off the async threads under a concurrency limit, the buffer write, and one mapping of the
//! batch's fate to HTTP (and OTLP/gRPC) statuses. Each protocol supplies its decoder and its
//! error body shape ([`http::Protocol`]). TCP sources share [`tcp::TcpServer`].
//!
//! Adding a source: its folder, and one line in the [`sources!`] list at the end of this
//! file (see docs/architecture.md).
#![warn(missing_docs)]

pub mod auth;
pub mod conn;
mod contract;
#[cfg(test)]
mod fuzz;
pub mod http;
mod listen;
pub mod prometheus;
pub mod severity;
pub mod tail;
pub mod tcp;
#[cfg(test)]
mod testing;
pub mod tls;

pub use contract::{
    check_claims, BuildError, Claim, ConnectionError, Resource, RunningSource, ServeError,
    SourceConfig, SourceContext, SourceTask, ValidSource,
};

use weir_catalog::valid_tenant;

/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Header (HTTP) and metadata key (gRPC) that selects the tenant, as Loki does.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant named by a request's `X-Scope-OrgID`, validated.
pub fn tenant_from(header: Option<&[u8]>) -> Result<String, String> {
    match header {
        None => Ok(DEFAULT_TENANT.to_string()),
        Some(raw) => {
            let t = std::str::from_utf8(raw)
                .map_err(|_| "X-Scope-OrgID is not valid UTF-8".to_string())?;
            let t = t.trim();
            if valid_tenant(t) {
                Ok(t.to_string())
            } else {
                Err(format!("X-Scope-OrgID {t:?} is not a valid tenant: it must match [A-Za-z0-9_-]{{1,64}}"))
            }
        }
    }
}

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Declares the sources: one line each, `name: ConfigType` (the folder `src/<name>/` and
/// the `[sources.<name>]` table). Generates [`SourcesConfig`] and its validation.
macro_rules! sources {
    ($($(#[$doc:meta])* $name:ident: $config:ty,)*) => {
        $(pub mod $name;)*

        /// Every input (`[sources.*]`).
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Default)]
        #[serde(deny_unknown_fields, default)]
        pub struct SourcesConfig {
            $($(#[$doc])* pub $name: $config,)*
        }

        impl SourcesConfig {
            /// Validates every enabled source (no I/O): the sources that are valid, and the
            /// problems of the others, each naming its key path. The claims of the valid ones
            /// go to a conflict check across the whole configuration ([`check_claims`]).
            pub fn validate(&self) -> (Vec<Box<dyn ValidSource>>, Vec<String>) {
                let mut problems = Vec::new();
                let mut valid: Vec<Box<dyn ValidSource>> = Vec::new();
                $(
                    if SourceConfig::enabled(&self.$name) {
                        match SourceConfig::validate(&self.$name) {
                            Ok(v) => valid.push(v),
                            Err(p) => problems.extend(p),
                        }
                    }
                )*
                (valid, problems)
            }

            /// The sources (`[sources.<name>]` names, which are also [`ValidSource::name`])
            /// whose configuration differs between `self` and `new`: what a reload restarts.
            pub fn changed(&self, new: &SourcesConfig) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    if self.$name != new.$name {
                        names.push(stringify!($name));
                    }
                )*
                names
            }

            /// Every name a `[[pipelines]].sources` entry may use: each source's family
            /// (`otlp`) and the names its batches carry (`otlp_grpc`, `otlp_http`), enabled
            /// or not.
            pub fn known_names() -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    names.push(stringify!($name));
                    names.extend_from_slice(<$config as SourceConfig>::BATCH_SOURCES);
                )*
                names.sort_unstable();
                names.dedup();
                names
            }
        }
    };
}

sources! {
    /// OTLP over gRPC and HTTP.
    otlp: otlp::OtlpConfig,
    /// Loki push API.
    loki: loki::LokiConfig,
    /// Datadog Agent intake.
    datadog: datadog::DatadogConfig,
    /// Fluent forward protocol.
    fluent: fluent::FluentConfig,
    /// syslog over UDP and TCP.
    syslog: syslog::SyslogConfig,
    /// Kubernetes pod log files on this node.
    kubernetes_logs: kubernetes_logs::KubernetesLogsConfig,
    /// Host log files.
    file: file::FileConfig,
    /// Prometheus remote write 1.0 and 2.0.
    prometheus_remote_write: prometheus_remote_write::PrometheusRemoteWriteConfig,
    /// Host metrics from /proc.
    host_metrics: host_metrics::HostMetricsConfig,
    /// Prometheus `/metrics` pages, scraped.
    prometheus_scrape: prometheus_scrape::PrometheusScrapeConfig,
}
