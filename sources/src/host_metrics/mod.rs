//! The host metrics source: CPU, memory, load, disk I/O, filesystem usage, network and
//! process counts of the host, read from `/proc` (and `statvfs`) under a configurable root on
//! an interval, named and attributed as the OpenTelemetry Collector's hostmetrics receiver
//! names them (`system.cpu.time`, `system.memory.usage`, ...; docs/protocols.md has the
//! table). No listen address: one task collects until shutdown.

pub mod collect;
pub mod config;
pub mod procfs;
mod service;

pub use config::{Collector, HostMetricsConfig, ValidHostMetrics};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "host_metrics";
