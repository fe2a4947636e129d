//! The Kubernetes pod logs source: tails `{root}/*/*/*.log` (the kubelet's
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`), parses the CRI format
//! (merging `P` partial lines) or docker's json-file format (merging lines split at 16 KiB),
//! detected per file, and gives each record the OpenTelemetry Kubernetes attributes taken from
//! the path: `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`,
//! `k8s.container.restart_count`, `k8s.node.name` (resource), `log.iostream` and
//! `log.file.path` (record). The record's time is the line's.
//!
//! With the Kubernetes API (`[sources.kubernetes_logs.api]`, see [`api`]), records also
//! carry the pod's labels (`k8s.pod.label.<key>`), selected annotations
//! (`k8s.pod.annotation.<key>`), owner (`k8s.deployment.name`, `k8s.replicaset.name`,
//! `k8s.daemonset.name`, `k8s.statefulset.name`, `k8s.job.name`, `k8s.cronjob.name`) and
//! container image (`container.image.name`, `container.image.tag`), and `service.name` from
//! the `app.kubernetes.io/name` label; pods labelled `weir.dev/exclude=true` are not read.
//!
//! Reading, rotation, truncation and exactly-once checkpoints: see [`crate::tail`].

pub mod api;
pub mod config;
pub mod path;
mod service;

pub use config::{ApiSettings, KubernetesLogsConfig, ValidKubernetesLogs};
pub use path::PodPath;

/// Source name of its batches and metrics.
pub const SOURCE: &str = "kubernetes_logs";
