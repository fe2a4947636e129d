//! `[sources.datadog]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use crate::contract::{SourceConfig, ValidSource};
use crate::http::{HttpLimits, ValidHttp};

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
    /// Longest wait for a request's body (408 after it).
    pub request_timeout: HumanDuration,
    /// `Retry-After` sent with 429 when the buffer is full.
    pub retry_after: HumanDuration,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            enabled: true,
            address: "0.0.0.0:8282".into(),
            max_request_bytes: ByteSize(16 << 20),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            retry_after: HumanDuration(Duration::from_secs(5)),
        }
    }
}

impl SourceConfig for DatadogConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::service::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        let limits = HttpLimits {
            max_request_bytes: self.max_request_bytes.0 as usize,
            request_timeout: self.request_timeout.0,
            retry_after: self.retry_after.0,
        };
        let address = ValidHttp::check(&mut problems, "sources.datadog", &self.address, &limits);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Box::new(ValidHttp {
            name: "datadog",
            what: "Datadog intake",
            address,
            limits,
            router: super::service::routes,
        }))
    }
}
