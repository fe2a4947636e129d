//! `[sources.prometheus_scrape]`: what to scrape (a static list, target files, annotated
//! pods on this node), how often, and the limits of one scrape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use super::targets::{self, Target};
use crate::contract::{tenant_valid, SourceConfig, ValidSource};

/// Key prefix of the source.
pub const KEY: &str = "sources.prometheus_scrape";

/// Scrapes Prometheus `/metrics` endpoints (text format 0.0.4 and OpenMetrics 1.0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusScrapeConfig {
    /// Whether the source runs (off by default).
    pub enabled: bool,
    /// Time between two scrapes of a target. Targets are spread over the interval.
    pub interval: HumanDuration,
    /// Longest a scrape may take, request and body (at most `interval`). A target that does
    /// not answer in time gets `up` = 0 for that scrape.
    pub timeout: HumanDuration,
    /// Static targets: URLs like `http://127.0.0.1:9100/metrics`.
    pub targets: Vec<String>,
    /// The `job` label of the static targets (and of file and pod targets without one).
    pub job: String,
    /// Labels added to every static target.
    pub labels: BTreeMap<String, String>,
    /// Target files in Prometheus `file_sd` form (JSON or YAML, by extension: a list of
    /// `{targets: ["host:port"], labels: {...}}`), read again when they change. The labels
    /// `__scheme__` and `__metrics_path__` set the URL (default `http` and `/metrics`).
    pub files: Vec<String>,
    /// How often the target files are checked for changes.
    pub files_refresh: HumanDuration,
    /// Pods on this node annotated `prometheus.io/scrape: "true"` (see
    /// [`KubernetesTargets`]).
    pub kubernetes: KubernetesTargets,
    /// When a scraped series has a label that is also a target label (`job`, `instance`, a
    /// configured label): `false` (the default) keeps the target's and renames the scraped
    /// one to `exported_<name>`; `true` keeps the scraped one.
    pub honor_labels: bool,
    /// Use the timestamps the target gives its samples (else the scrape's start time).
    pub honor_timestamps: bool,
    /// Largest response body (the scrape fails with `up` = 0 above it).
    pub max_body_bytes: ByteSize,
    /// Most samples one scrape may return (each bucket, quantile, `_sum` and `_count` counts,
    /// as in Prometheus's `sample_limit`); the scrape fails with `up` = 0 above it.
    pub max_samples: usize,
    /// Labels per series (the scrape fails above it).
    pub max_labels_per_series: usize,
    /// Bytes of label names and values per series (the scrape fails above it).
    pub max_label_bytes_per_series: ByteSize,
    /// Scrapes in flight at once; more wait their turn.
    pub max_concurrent_scrapes: usize,
    /// Most targets at once, all kinds together; targets past it are left out (and logged).
    pub max_targets: usize,
    /// A file holding a bearer token sent to the static `targets` (never to targets from
    /// files or pods, which could be anyone's). The kubelet wants the pod's service account
    /// token: `/var/run/secrets/kubernetes.io/serviceaccount/token`. Read again at every
    /// scrape, so a rotated token is picked up.
    pub bearer_token_file: Option<String>,
    /// Accept any certificate from HTTPS targets (the kubelet's is often self-signed).
    pub insecure_skip_verify: bool,
    /// Tenant of every point.
    pub tenant: String,
}

/// `[sources.prometheus_scrape.kubernetes]`: targets from this node's pods.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesTargets {
    /// Watch this node's pods (needs `get`, `list` and `watch` on pods, as the pod-logs
    /// source does).
    pub enabled: bool,
    /// This node's name (default: the `K8S_NODE_NAME` environment variable).
    pub node_name: Option<String>,
    /// The annotation prefix: `<prefix>/scrape: "true"` selects a pod, `<prefix>/port` its
    /// port (else every declared container port), `<prefix>/path` the path (default
    /// `/metrics`), `<prefix>/scheme` the scheme (default `http`).
    pub annotation_prefix: String,
}

impl Default for KubernetesTargets {
    fn default() -> Self {
        KubernetesTargets {
            enabled: false,
            node_name: None,
            annotation_prefix: "prometheus.io".into(),
        }
    }
}

impl Default for PrometheusScrapeConfig {
    fn default() -> Self {
        PrometheusScrapeConfig {
            enabled: false,
            interval: HumanDuration(Duration::from_secs(30)),
            timeout: HumanDuration(Duration::from_secs(10)),
            targets: Vec::new(),
            job: "prometheus_scrape".into(),
            labels: BTreeMap::new(),
            files: Vec::new(),
            files_refresh: HumanDuration(Duration::from_secs(30)),
            kubernetes: KubernetesTargets::default(),
            honor_labels: false,
            honor_timestamps: true,
            max_body_bytes: ByteSize(16 << 20),
            max_samples: 200_000,
            max_labels_per_series: 128,
            max_label_bytes_per_series: ByteSize(16 << 10),
            max_concurrent_scrapes: 16,
            max_targets: 1_000,
            bearer_token_file: None,
            insecure_skip_verify: false,
            tenant: "default".into(),
        }
    }
}

/// A validated `[sources.prometheus_scrape]`.
#[derive(Debug, Clone)]
pub struct ValidPrometheusScrape {
    /// The values.
    pub config: PrometheusScrapeConfig,
    /// The static targets.
    pub targets: Vec<Target>,
}

impl SourceConfig for PrometheusScrapeConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        if self.interval.0 < Duration::from_millis(100) {
            problems.push(format!("{KEY}.interval must be at least 100ms"));
        }
        if self.timeout.0.is_zero() || self.timeout.0 > self.interval.0 {
            problems.push(format!(
                "{KEY}.timeout = {:?} must be more than 0 and at most interval ({:?})",
                self.timeout.0, self.interval.0
            ));
        }
        if self.files_refresh.0 < Duration::from_millis(100) {
            problems.push(format!("{KEY}.files_refresh must be at least 100ms"));
        }
        if self.job.is_empty() {
            problems.push(format!("{KEY}.job must not be empty"));
        }
        for k in self.labels.keys() {
            if !targets::valid_label_name(k) {
                problems.push(format!(
                    "{KEY}.labels: {k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
            }
        }
        let mut valid = Vec::new();
        for (i, url) in self.targets.iter().enumerate() {
            match Target::from_url(url, &self.job, &self.labels).map(|t| Target {
                credentials: true,
                ..t
            }) {
                Ok(t) if valid.contains(&t) => {
                    problems.push(format!("{KEY}.targets[{i}] = {url:?} is listed twice"))
                }
                Ok(t) => valid.push(t),
                Err(e) => problems.push(format!("{KEY}.targets[{i}] = {url:?}: {e}")),
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if !(f.ends_with(".json") || f.ends_with(".yaml") || f.ends_with(".yml")) {
                problems.push(format!(
                    "{KEY}.files[{i}] = {f:?} must end in .json, .yaml or .yml (its format)"
                ));
            } else if let Err(e) = glob::Pattern::new(f) {
                problems.push(format!("{KEY}.files[{i}] = {f:?} is not a valid pattern: {e}"));
            }
        }
        if self.kubernetes.enabled && self.kubernetes.annotation_prefix.is_empty() {
            problems.push(format!(
                "{KEY}.kubernetes.annotation_prefix must not be empty"
            ));
        }
        if self.kubernetes.node_name.as_deref() == Some("") {
            problems.push(format!(
                "{KEY}.kubernetes.node_name must not be empty (leave it unset)"
            ));
        }
        if self.targets.is_empty() && self.files.is_empty() && !self.kubernetes.enabled {
            problems.push(format!("{KEY}: nothing to scrape: set targets, files or kubernetes.enabled (or disable the source)"));
        }
        for (key, v) in [
            ("max_body_bytes", self.max_body_bytes.0 as usize),
            ("max_samples", self.max_samples),
            ("max_labels_per_series", self.max_labels_per_series),
            (
                "max_label_bytes_per_series",
                self.max_label_bytes_per_series.0 as usize,
            ),
            ("max_concurrent_scrapes", self.max_concurrent_scrapes),
            ("max_targets", self.max_targets),
        ] {
            if v == 0 {
                problems.push(format!("{KEY}.{key} must be more than 0"));
            }
        }
        if self.bearer_token_file.as_deref() == Some("") {
            problems.push(format!(
                "{KEY}.bearer_token_file must not be empty (leave it unset)"
            ));
        }
        tenant_valid(&mut problems, &format!("{KEY}.tenant"), &self.tenant);
        if problems.is_empty() {
            Ok(Box::new(ValidPrometheusScrape {
                config: self.clone(),
                targets: valid,
            }))
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_target() -> PrometheusScrapeConfig {
        PrometheusScrapeConfig {
            targets: vec!["http://127.0.0.1:9100/metrics".into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_off_and_a_target_makes_them_valid() {
        let c = PrometheusScrapeConfig::default();
        assert!(!c.enabled);
        let problems = c.validate().err().unwrap();
        assert!(problems[0].contains("nothing to scrape"), "{problems:?}");
        assert!(with_target().validate().is_ok());
    }

    #[test]
    fn problems_name_their_keys() {
        let bad = PrometheusScrapeConfig {
            interval: HumanDuration(Duration::from_secs(5)),
            timeout: HumanDuration(Duration::from_secs(10)),
            targets: vec!["ftp://x/metrics".into(), "not a url".into()],
            files: vec!["/etc/targets.txt".into()],
            labels: BTreeMap::from([("bad-name".to_string(), "v".to_string())]),
            max_samples: 0,
            tenant: "no spaces".into(),
            ..Default::default()
        };
        let problems = bad.validate().err().unwrap();
        for key in [
            "timeout",
            "targets[0]",
            "targets[1]",
            "files[0]",
            "labels",
            "max_samples",
            "tenant",
        ] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{KEY}.{key}"))),
                "{key}: {problems:?}"
            );
        }
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let c = PrometheusScrapeConfig {
            targets: vec![
                "http://127.0.0.1:9100/metrics".into(),
                "http://127.0.0.1:9100/metrics".into(),
            ],
            ..Default::default()
        };
        let problems = c.validate().err().unwrap();
        assert!(problems[0].contains("listed twice"), "{problems:?}");
    }

    #[test]
    fn kubernetes_alone_is_something_to_scrape() {
        let mut c = PrometheusScrapeConfig {
            kubernetes: KubernetesTargets {
                enabled: true,
                ..Default::default()
            },
            ..Default::default()
        };
        // The node name may come from K8S_NODE_NAME at start, so it is not required here.
        assert!(c.validate().is_ok());
        c.kubernetes.node_name = Some(String::new());
        assert!(c.validate().err().unwrap()[0].contains("node_name must not be empty"));
        c.kubernetes.node_name = None;
        c.kubernetes.annotation_prefix = String::new();
        assert!(c.validate().is_err());
    }
}
