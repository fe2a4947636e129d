//! `[sources.kubernetes_logs]`.

use serde::{Deserialize, Serialize};

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
        if problems.is_empty() {
            Ok(Box::new(ValidKubernetesLogs {
                config: self.clone(),
            }))
        } else {
            Err(problems)
        }
    }
}
