//! `[sources.kubernetes_logs]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::HumanDuration;

use crate::contract::{tenant_valid, SourceConfig, ValidSource};
use crate::tail::TailSettings;

/// Kubernetes pod logs from the node's `/var/log/pods`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesLogsConfig {
    /// Whether the source runs (off by default; on in the DaemonSet example).
    pub enabled: bool,
    /// The kubelet's pod log directory (a hostPath mount in a DaemonSet).
    pub root: String,
    /// `k8s.node.name` of every record; unset: the `K8S_NODE_NAME` environment variable (set
    /// it from the downward API, `spec.nodeName`).
    pub node_name: Option<String>,
    /// Skip the logs of the agent's own pod, named by the `K8S_POD_UID` environment variable
    /// (or `K8S_POD_NAMESPACE` and `K8S_POD_NAME`).
    pub exclude_own_pod: bool,
    /// Namespaces whose pods are not read.
    pub exclude_namespaces: Vec<String>,
    /// Tenant of every record.
    pub tenant: String,
    /// How files are read (`[sources.kubernetes_logs.tail]`).
    pub tail: TailSettings,
    /// Pod metadata from the Kubernetes API (`[sources.kubernetes_logs.api]`).
    pub api: ApiSettings,
}

/// `[sources.kubernetes_logs.api]`: a watch of this node's pods (field selector
/// `spec.nodeName=<node>`) that adds labels, selected annotations, owner and container image
/// to each record, and skips pods labelled `<exclude_label>=true`. The cluster is found from
/// `KUBECONFIG`, else from the in-cluster service account (`KUBERNETES_SERVICE_HOST` and the
/// mounted token); without either, or without a node name, records carry the path metadata
/// only (said once at warn). Needs `get`, `list` and `watch` on `pods` (a ClusterRole).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Whether to watch the API (on by default; it falls back to path metadata when there is
    /// no cluster to talk to).
    pub enabled: bool,
    /// Annotation keys copied to records as `k8s.pod.annotation.<key>` (none by default).
    pub annotations: Vec<String>,
    /// How long the source waits at start for the first list of this node's pods before it
    /// starts reading with path metadata only (said once at warn); metadata that arrives
    /// later applies from then on. `0s`: do not wait.
    pub sync_timeout: HumanDuration,
    /// Label that excludes a pod's logs when its value is `true`.
    pub exclude_label: String,
    /// How long a log file of a pod the API does not know (yet) waits for its metadata
    /// before it is read with path metadata only: a pod's watch event can arrive after its
    /// first lines.
    pub unknown_pod_wait: HumanDuration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            enabled: true,
            annotations: Vec::new(),
            sync_timeout: HumanDuration(Duration::from_secs(10)),
            exclude_label: "weir.dev/exclude".into(),
            unknown_pod_wait: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// At most this long for `sync_timeout` and `unknown_pod_wait`: reading must not stall on the
/// API for longer.
const MAX_WAIT: Duration = Duration::from_secs(600);

impl ApiSettings {
    /// Problems of the values, under `key` (`sources.kubernetes_logs.api`).
    pub fn check(&self, key: &str, problems: &mut Vec<String>) {
        for (i, a) in self.annotations.iter().enumerate() {
            if let Err(why) = qualified_name(a) {
                problems.push(format!("{key}.annotations[{i}] = {a:?} {why}"));
            } else if self.annotations[..i].contains(a) {
                problems.push(format!("{key}.annotations[{i}] = {a:?} is listed twice"));
            }
        }
        if let Err(why) = qualified_name(&self.exclude_label) {
            problems.push(format!(
                "{key}.exclude_label = {:?} {why}",
                self.exclude_label
            ));
        }
        for (name, d) in [
            ("sync_timeout", self.sync_timeout),
            ("unknown_pod_wait", self.unknown_pod_wait),
        ] {
            if d.0 > MAX_WAIT {
                problems.push(format!(
                    "{key}.{name} = {} is above 10m",
                    humantime::format_duration(d.0)
                ));
            }
        }
    }
}

/// Checks a label or annotation key: an optional DNS subdomain prefix and `/`, then a name of
/// at most 63 characters, alphanumeric at both ends with `-`, `_` and `.` between (the API
/// server's rule).
fn qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err("has a prefix that is not a DNS subdomain");
        }
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 {
        return Err("must have a name of 1 to 63 characters");
    }
    if !edge(name.chars().next())
        || !edge(name.chars().last())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("is not a label or annotation key (alphanumeric, '-', '_', '.')");
    }
    Ok(())
}

impl Default for KubernetesLogsConfig {
    fn default() -> Self {
        KubernetesLogsConfig {
            enabled: false,
            root: "/var/log/pods".into(),
            node_name: None,
            exclude_own_pod: true,
            exclude_namespaces: Vec::new(),
            tenant: "default".into(),
            tail: TailSettings::default(),
            api: ApiSettings::default(),
        }
    }
}

/// A validated `[sources.kubernetes_logs]`.
#[derive(Debug, Clone)]
pub struct ValidKubernetesLogs {
    /// The values.
    pub config: KubernetesLogsConfig,
}

impl SourceConfig for KubernetesLogsConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        if !self.root.starts_with('/') {
            problems.push(format!(
                "sources.kubernetes_logs.root = {:?} must be an absolute path",
                self.root
            ));
        }
        if glob::Pattern::escape(&self.root) != self.root {
            problems.push(format!(
                "sources.kubernetes_logs.root = {:?} must not contain glob characters (*?[])",
                self.root
            ));
        }
        tenant_valid(&mut problems, "sources.kubernetes_logs.tenant", &self.tenant);
        self.tail.check("sources.kubernetes_logs.tail", &mut problems);
        self.api.check("sources.kubernetes_logs.api", &mut problems);
        if problems.is_empty() {
            Ok(Box::new(ValidKubernetesLogs {
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
    fn api_settings_are_checked_without_io() {
        let ok = ApiSettings {
            annotations: vec!["team".into(), "example.com/owner".into()],
            ..ApiSettings::default()
        };
        let mut problems = Vec::new();
        ok.check("k", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");

        let bad = ApiSettings {
            annotations: vec![
                "".into(),
                "team".into(),
                "team".into(),
                "Bad_Prefix/x".into(),
                "-dash".into(),
            ],
            exclude_label: "has space".into(),
            sync_timeout: HumanDuration(Duration::from_secs(3600)),
            ..ApiSettings::default()
        };
        let mut problems = Vec::new();
        bad.check("k", &mut problems);
        let text = problems.join("\n");
        assert_eq!(problems.len(), 6, "{text}");
        assert!(text.contains("k.annotations[0]"), "{text}");
        assert!(text.contains("k.annotations[2] = \"team\" is listed twice"), "{text}");
        assert!(text.contains("k.annotations[3]"), "{text}");
        assert!(text.contains("k.annotations[4]"), "{text}");
        assert!(text.contains("k.exclude_label"), "{text}");
        assert!(text.contains("k.sync_timeout = 1h is above 10m"), "{text}");
    }

    #[test]
    fn api_table_parses_and_rejects_unknown_keys() {
        let c: KubernetesLogsConfig = serde_json::from_str(
            r#"{"enabled": true, "api": {"annotations": ["team"], "sync_timeout": "2s"}}"#,
        )
        .unwrap();
        assert!(c.api.enabled);
        assert_eq!(c.api.annotations, ["team"]);
        assert_eq!(c.api.sync_timeout.0, Duration::from_secs(2));
        assert_eq!(c.api.exclude_label, "weir.dev/exclude");
        assert!(serde_json::from_str::<KubernetesLogsConfig>(r#"{"api": {"labels": []}}"#).is_err());
    }
}
