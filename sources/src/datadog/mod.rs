//! The Datadog Agent intake (HTTP 8282): `/api/v2/logs`, `/api/v1/series`, `/api/v2/series`,
//! `/api/v1/validate` and `/api/v1/check_run`, answered as the Datadog intake does (202 with
//! `{}`), so the Agent, `datadog-api-client` and the `datadog` library can point their host at
//! Weir. Bodies may be gzip or deflate (the Agent's default). `DD-API-KEY` (or the `api_key`
//! query parameter older clients use) is checked against `auth.api_keys` when keys are
//! configured, and selects the tenant.

pub mod config;
pub mod logs;
pub mod series;
mod service;

pub use config::{DatadogConfig, DatadogSource};
pub use service::{Datadog, Endpoint, SOURCE};
