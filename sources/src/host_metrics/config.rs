//! `[sources.host_metrics]`: which collectors run, how often, and where the host's `/proc`,
//! `/sys` and `/etc` are mounted.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::HumanDuration;

use crate::contract::{tenant_valid, SourceConfig, ValidSource};

/// Key prefix of the source.
pub const KEY: &str = "sources.host_metrics";

/// A group of host metrics, named as the OpenTelemetry Collector's hostmetrics scrapers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Collector {
    /// `system.cpu.time` from `/proc/stat`.
    Cpu,
    /// `system.memory.usage` (and `system.memory.utilization`) from `/proc/meminfo`.
    Memory,
    /// `system.cpu.load_average.*` from `/proc/loadavg`.
    Load,
    /// `system.disk.*` from `/proc/diskstats`.
    Disk,
    /// `system.filesystem.*` from the mounts and `statvfs`.
    Filesystem,
    /// `system.network.*` from `/proc/1/net/dev` (the node's interfaces; `/proc/net/dev` if absent).
    Network,
    /// `system.processes.*` from `/proc/stat`.
    Processes,
}

impl Collector {
    /// Every collector, in the order they run.
    pub const ALL: [Collector; 7] = [
        Collector::Cpu,
        Collector::Memory,
        Collector::Load,
        Collector::Disk,
        Collector::Filesystem,
        Collector::Network,
        Collector::Processes,
    ];

    /// The name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Collector::Cpu => "cpu",
            Collector::Memory => "memory",
            Collector::Load => "load",
            Collector::Disk => "disk",
            Collector::Filesystem => "filesystem",
            Collector::Network => "network",
            Collector::Processes => "processes",
        }
    }
}

/// Metrics of the host this agent runs on (or of the host whose root is mounted at `root`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    /// Whether the source runs (off by default; on in the DaemonSet example).
    pub enabled: bool,
    /// Time between two collections.
    pub interval: HumanDuration,
    /// The host's root directory: `/proc`, `/sys` and `/etc/hostname` are read under it, and
    /// filesystem usage is measured at each mount point joined to it. In a DaemonSet, mount
    /// the host's `/` read-only at `/host` and set `root = "/host"`.
    pub root: String,
    /// The collectors that run: `cpu`, `memory`, `load`, `disk`, `filesystem`, `network`,
    /// `processes` (default: all).
    pub collectors: Vec<Collector>,
    /// Also write `system.memory.utilization` (each state's fraction of `MemTotal`), off by
    /// default as in the Collector.
    pub memory_utilization: bool,
    /// `host.name` of every point; unset: `{root}/etc/hostname`, else the system hostname.
    pub host_name: Option<String>,
    /// Tenant of every point.
    pub tenant: String,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        HostMetricsConfig {
            enabled: false,
            interval: HumanDuration(Duration::from_secs(10)),
            root: "/".into(),
            collectors: Collector::ALL.to_vec(),
            memory_utilization: false,
            host_name: None,
            tenant: "default".into(),
        }
    }
}

/// A validated `[sources.host_metrics]`.
#[derive(Debug, Clone)]
pub struct ValidHostMetrics {
    /// The values.
    pub config: HostMetricsConfig,
}

impl SourceConfig for HostMetricsConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        if self.interval.0 < Duration::from_millis(100) {
            problems.push(format!("{KEY}.interval must be at least 100ms"));
        }
        if !self.root.starts_with('/') {
            problems.push(format!(
                "{KEY}.root = {:?} must be an absolute path",
                self.root
            ));
        }
        if self.collectors.is_empty() {
            problems.push(format!(
                "{KEY}.collectors is empty: name at least one, or disable the source"
            ));
        }
        for (i, c) in self.collectors.iter().enumerate() {
            if self.collectors[..i].contains(c) {
                problems.push(format!("{KEY}.collectors names {:?} twice", c.name()));
            }
        }
        if self.host_name.as_deref() == Some("") {
            problems.push(format!("{KEY}.host_name must not be empty (leave it unset)"));
        }
        tenant_valid(&mut problems, &format!("{KEY}.tenant"), &self.tenant);
        if problems.is_empty() {
            Ok(Box::new(ValidHostMetrics {
                config: self.clone(),
            }))
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let c = HostMetricsConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.root, "/");
        assert_eq!(c.collectors.len(), 7);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn problems_name_their_keys() {
        let bad = HostMetricsConfig {
            interval: HumanDuration(Duration::from_millis(1)),
            root: "host".into(),
            collectors: vec![Collector::Cpu, Collector::Cpu],
            host_name: Some(String::new()),
            tenant: "no spaces".into(),
            ..Default::default()
        };
        let problems = bad.validate().err().unwrap();
        for key in ["interval", "root", "collectors", "host_name", "tenant"] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{KEY}.{key}"))),
                "{key}: {problems:?}"
            );
        }
        let empty = HostMetricsConfig {
            collectors: Vec::new(),
            ..Default::default()
        };
        assert!(empty.validate().is_err());
    }

    #[test]
    fn collectors_parse_by_name() {
        let c: HostMetricsConfig =
            serde_json::from_str(r#"{"collectors": ["cpu", "network"]}"#).unwrap();
        assert_eq!(c.collectors, vec![Collector::Cpu, Collector::Network]);
        assert!(serde_json::from_str::<HostMetricsConfig>(r#"{"collectors": ["gpu"]}"#).is_err());
        assert!(serde_json::from_str::<HostMetricsConfig>(r#"{"intervall": "1s"}"#).is_err());
    }
}
