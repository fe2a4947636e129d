//! The Prometheus scrape source: fetches `/metrics` pages on an interval from a static list
//! of URLs, from `file_sd` target files (JSON or YAML, read again when they change) and from
//! this node's pods annotated `prometheus.io/scrape: "true"`, parses the text format and
//! OpenMetrics, and maps the series into the metrics lake schema as the remote write source
//! does ([`crate::prometheus`]). Like Prometheus it labels every series with the target's
//! `job` and `instance` (`honor_labels` decides conflicts) and adds `up`,
//! `scrape_duration_seconds` and `scrape_samples_scraped` to every scrape; a target that
//! times out, answers an error, sends a page over the size or sample limit or one that does
//! not parse gets `up` = 0 and the others go on. No listen address.

pub mod config;
mod discover;
pub mod exposition;
pub mod text;
mod service;
pub mod targets;

pub use config::{PrometheusScrapeConfig, ValidPrometheusScrape};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "prometheus_scrape";
