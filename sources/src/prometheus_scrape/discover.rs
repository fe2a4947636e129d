//! Target discovery: `file_sd` files read again when they change, and this node's pods
//! annotated for scraping, from the Kubernetes API. Each publishes its whole current set on
//! a watch channel; the manager scrapes the union.

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::KEY;
use super::targets::{self, Target};
use crate::contract::ServeError;

/// What one file gave last.
struct Read {
    text: String,
    targets: Vec<Target>,
}

/// The paths `patterns` name now (a pattern may hold `*` in its file name, as in Prometheus).
fn expand(patterns: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => out.extend(
                paths
                    .flatten()
                    .filter_map(|p| p.to_str().map(str::to_string)),
            ),
            Err(_) => out.push(p.clone()),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Largest target file read.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// A target file's text, refused past [`MAX_FILE_BYTES`].
async fn read_bounded(path: &str) -> Result<String, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_FILE_BYTES} a target file may have",
            meta.len()
        ));
    }
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| e.to_string())
}

/// Reads the target files every `refresh` and publishes their targets when they change. A
/// file that stops parsing keeps its previous targets (said at warn); a file that is gone
/// drops its own.
pub async fn watch_files(
    patterns: Vec<String>,
    job: String,
    refresh: Duration,
    tx: watch::Sender<Vec<Target>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut files: HashMap<String, Read> = HashMap::new();
    // The last error said of each unreadable file, to say each once.
    let mut unreadable: HashMap<String, String> = HashMap::new();
    let mut missing_said = false;
    loop {
        let mut changed = false;
        let paths = expand(&patterns);
        if paths.is_empty() && !missing_said {
            warn!(files = ?patterns, "{KEY}.files: no target file yet; looked for again every files_refresh");
            missing_said = true;
        }
        let before = files.len();
        files.retain(|p, _| paths.contains(p));
        changed |= files.len() != before;
        unreadable.retain(|p, _| paths.contains(p));
        for path in paths {
            let text = match read_bounded(&path).await {
                Ok(t) => {
                    unreadable.remove(&path);
                    t
                }
                Err(e) => {
                    if unreadable.get(&path) != Some(&e) {
                        warn!(file = %path, error = %e, "target file unreadable; it gives no targets until it can be read");
                        unreadable.insert(path.clone(), e);
                    }
                    if files.remove(&path).is_some() {
                        changed = true;
                    }
                    continue;
                }
            };
            if files.get(&path).is_some_and(|r| r.text == text) {
                continue;
            }
            let yaml = !path.ends_with(".json");
            match targets::parse_file(&text, yaml, &job) {
                Ok(ts) => {
                    info!(file = %path, targets = ts.len(), "target file read");
                    files.insert(path, Read { text, targets: ts });
                    changed = true;
                }
                Err(e) => {
                    warn!(file = %path, error = %e, "target file not used; its previous targets stay");
                    // Remember the text so the same error is not logged every refresh.
                    let targets = files.remove(&path).map(|r| r.targets).unwrap_or_default();
                    files.insert(path, Read { text, targets });
                }
            }
        }
        if changed {
            let mut all: Vec<Target> = files.values().flat_map(|r| r.targets.clone()).collect();
            all.sort();
            all.dedup();
            tx.send_replace(all);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(refresh) => {}
        }
    }
}

/// The scrape targets of a pod: none unless annotated `<prefix>/scrape: "true"` and running
/// with an IP; the port from `<prefix>/port`, else each declared TCP container port.
pub fn pod_targets(pod: &Pod, prefix: &str, job: &str) -> Vec<Target> {
    let meta = &pod.metadata;
    let annotations = meta.annotations.clone().unwrap_or_default();
    let get = |k: &str| annotations.get(&format!("{prefix}/{k}")).map(String::as_str);
    if get("scrape") != Some("true") {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if status.phase.as_deref() != Some("Running") {
        return Vec::new();
    }
    let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    let mut labels = BTreeMap::new();
    if let Some(ns) = &meta.namespace {
        labels.insert("namespace".to_string(), ns.clone());
    }
    if let Some(name) = &meta.name {
        labels.insert("pod".to_string(), name.clone());
    }
    labels.insert(
        "__scheme__".to_string(),
        get("scheme").unwrap_or("http").to_string(),
    );
    labels.insert(
        "__metrics_path__".to_string(),
        get("path").unwrap_or("/metrics").to_string(),
    );
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let ports: Vec<String> = match get("port") {
        Some(p) => vec![p.to_string()],
        None => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| p.container_port.to_string())
            .collect(),
    };
    if ports.is_empty() {
        info!(pod = ?meta.name, namespace = ?meta.namespace, "pod annotated for scraping declares no port and has no {prefix}/port annotation; not scraped");
    }
    let mut out = Vec::new();
    for port in ports {
        match Target::from_address(&format!("{host}:{port}"), &labels, job) {
            Ok(t) => out.push(t),
            Err(e) => warn!(pod = ?meta.name, namespace = ?meta.namespace, error = %e, "pod scrape target skipped"),
        }
    }
    out
}

/// Watches this node's pods and publishes the targets of those annotated for scraping.
/// Never fails: without a cluster it says so once and waits for shutdown.
pub async fn watch_pods(
    node: String,
    prefix: String,
    job: String,
    tx: watch::Sender<Vec<Target>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let client = match crate::kubernetes_logs::api::connect().await {
        Ok(Some(c)) => c,
        Ok(None) => {
            warn!("{KEY}.kubernetes: no cluster config (neither KUBECONFIG nor an in-cluster service account); no pod targets");
            shutdown.cancelled().await;
            return Ok(());
        }
        Err(e) => {
            warn!(error = %e, "{KEY}.kubernetes: cannot use the cluster config; no pod targets");
            shutdown.cancelled().await;
            return Ok(());
        }
    };
    let api: kube::Api<Pod> = kube::Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let mut events = pin!(
        watcher(api, watcher::Config::default().fields(&selector)).default_backoff()
    );
    info!(field_selector = %selector, "watching this node's pods for scrape targets");
    let mut pods: HashMap<String, Vec<Target>> = HashMap::new();
    let mut listing: Option<HashMap<String, Vec<Target>>> = None;
    let mut failing = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = events.next() => e,
        };
        let Some(event) = event else {
            warn!("the pod watch ended; pod targets are no longer updated");
            shutdown.cancelled().await;
            return Ok(());
        };
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        let publish = match event {
            Ok(Event::Init) => {
                listing = Some(HashMap::new());
                false
            }
            Ok(Event::InitApply(p)) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(uid(&p), pod_targets(&p, &prefix, &job));
                }
                false
            }
            Ok(Event::InitDone) => {
                if let Some(l) = listing.take() {
                    pods = l;
                }
                if std::mem::take(&mut failing) {
                    info!("pod watch recovered");
                }
                true
            }
            Ok(Event::Apply(p)) => {
                pods.insert(uid(&p), pod_targets(&p, &prefix, &job));
                true
            }
            Ok(Event::Delete(p)) => pods.remove(&uid(&p)).is_some(),
            Err(e) => {
                if !failing {
                    warn!(error = %e, "pod watch failed; retrying with back-off (pod targets stay as last seen)");
                    failing = true;
                } else {
                    debug!(error = %e, "pod watch still failing");
                }
                false
            }
        };
        if publish {
            let mut all: Vec<Target> = pods.values().flatten().cloned().collect();
            all.sort();
            all.dedup();
            tx.send_if_modified(|old| {
                let differs = *old != all;
                if differs {
                    *old = std::mem::take(&mut all);
                }
                differs
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)], phase: &str, ports: &[i32]) -> Pod {
        let json = serde_json::json!({
            "metadata": {
                "name": "api-7d9f", "namespace": "shop", "uid": "u1",
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
            "spec": {"containers": [{"name": "c", "ports": ports.iter().map(|p| serde_json::json!({"containerPort": p})).collect::<Vec<_>>()}]},
            "status": {"phase": phase, "podIP": "10.1.2.3"},
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn annotated_running_pods_are_targets() {
        let p = pod(
            &[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "8080"),
                ("prometheus.io/path", "/stats"),
            ],
            "Running",
            &[],
        );
        let ts = pod_targets(&p, "prometheus.io", "kubernetes-pods");
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].url, "http://10.1.2.3:8080/stats");
        assert_eq!(ts[0].label("namespace"), Some("shop"));
        assert_eq!(ts[0].label("pod"), Some("api-7d9f"));
        assert_eq!(ts[0].label("job"), Some("kubernetes-pods"));
        assert_eq!(ts[0].instance(), "10.1.2.3:8080");
    }

    #[test]
    fn without_a_port_annotation_every_container_port_is_a_target() {
        let p = pod(&[("prometheus.io/scrape", "true")], "Running", &[9100, 9101]);
        let urls: Vec<String> = pod_targets(&p, "prometheus.io", "j")
            .into_iter()
            .map(|t| t.url)
            .collect();
        assert_eq!(
            urls,
            ["http://10.1.2.3:9100/metrics", "http://10.1.2.3:9101/metrics"]
        );
    }

    #[test]
    fn unannotated_or_pending_pods_are_not() {
        assert!(pod_targets(&pod(&[], "Running", &[80]), "prometheus.io", "j").is_empty());
        let pending = pod(&[("prometheus.io/scrape", "true")], "Pending", &[80]);
        assert!(pod_targets(&pending, "prometheus.io", "j").is_empty());
        let no = pod(&[("prometheus.io/scrape", "false")], "Running", &[80]);
        assert!(pod_targets(&no, "prometheus.io", "j").is_empty());
    }
}
