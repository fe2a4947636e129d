//! Building the source: the engine over `{root}/*/*/*.log`, with the pod metadata from paths
//! and, when the API is there, from the watch of this node's pods.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::api::{self, Lookup, PodCache, PodLookup, PodWatch, SyncState};
use super::config::ValidKubernetesLogs;
use super::path::PodPath;
use super::SOURCE;
use crate::contract::{BuildError, RunningSource, SourceContext, ValidSource};
use crate::tail::{self, Describe, FileMeta, Format, TailEngine};

/// The pod to skip: the agent's own.
#[derive(Debug, Clone, Default)]
struct OwnPod {
    uid: Option<String>,
    namespace_name: Option<(String, String)>,
}

impl OwnPod {
    fn from_env() -> OwnPod {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        OwnPod {
            uid: var("K8S_POD_UID"),
            namespace_name: var("K8S_POD_NAMESPACE").zip(var("K8S_POD_NAME")),
        }
    }

    fn is(&self, p: &PodPath) -> bool {
        self.uid.as_deref() == Some(p.uid.as_str())
            || self
                .namespace_name
                .as_ref()
                .is_some_and(|(ns, n)| *ns == p.namespace && *n == p.pod)
    }
}

/// Pod metadata of a log file, from its path and the API.
struct PodFiles {
    node: Option<String>,
    own: Option<OwnPod>,
    exclude_namespaces: Vec<String>,
    /// The API's pods; `None` when `api.enabled = false` or there is no node name.
    pods: Option<PodLookup>,
}

impl Describe for PodFiles {
    fn describe(&self, path: &Path) -> Option<FileMeta> {
        let mut meta = FileMeta::default();
        if let Some(node) = &self.node {
            meta.resource.push(("k8s.node.name".into(), node.clone()));
        }
        let Some(p) = PodPath::parse(path) else {
            return Some(meta);
        };
        if self.own.as_ref().is_some_and(|o| o.is(&p))
            || self.exclude_namespaces.contains(&p.namespace)
        {
            return None;
        }
        let pod = match self.pods.as_ref().map(|l| l.lookup(&p, Instant::now())) {
            Some(Lookup::Known(pod)) if pod.excluded => return None,
            Some(Lookup::Known(pod)) => Some(pod),
            Some(Lookup::Wait) => return None,
            Some(Lookup::PathOnly) | None => None,
        };
        meta.service_name = Some(p.container.clone());
        let container = p.container.clone();
        let r = &mut meta.resource;
        r.push(("k8s.namespace.name".into(), p.namespace));
        r.push(("k8s.pod.name".into(), p.pod));
        r.push(("k8s.pod.uid".into(), p.uid));
        r.push(("k8s.container.name".into(), p.container));
        if let Some(n) = p.restart_count {
            r.push(("k8s.container.restart_count".into(), n.to_string()));
        }
        if let Some(pod) = pod {
            api::enrich(&mut meta, &pod, &container);
        }
        Some(meta)
    }
}

impl ValidSource for ValidKubernetesLogs {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let c = self.config;
        let node = c
            .node_name
            .clone()
            .or_else(|| std::env::var("K8S_NODE_NAME").ok().filter(|v| !v.is_empty()));
        if node.is_none() {
            warn!("sources.kubernetes_logs: no node name (set K8S_NODE_NAME from spec.nodeName); records carry no k8s.node.name");
        }
        if !Path::new(&c.root).is_dir() {
            warn!(root = %c.root, "sources.kubernetes_logs.root does not exist (yet); it is rescanned");
        }
        let pattern = format!("{}/*/*/*.log", c.root.trim_end_matches('/'));
        info!(pattern = %pattern, "tailing pod logs");
        let mut running = RunningSource::new(SOURCE);
        let cache = match (&node, c.api.enabled) {
            (Some(node), true) => {
                let cache = PodCache::new();
                running.tasks.push(Box::pin(api::run(
                    PodWatch {
                        node: node.clone(),
                        annotations: c.api.annotations.clone(),
                        exclude_label: c.api.exclude_label.clone(),
                        cache: cache.clone(),
                    },
                    ctx.shutdown.clone(),
                )));
                Some(cache)
            }
            (None, true) => {
                warn!("sources.kubernetes_logs.api: no node name to select this node's pods by; pod metadata from log paths only");
                None
            }
            (_, false) => None,
        };
        let describe = PodFiles {
            node,
            own: c.exclude_own_pod.then(OwnPod::from_env),
            exclude_namespaces: c.exclude_namespaces.clone(),
            pods: cache
                .as_ref()
                .map(|cache| PodLookup::new(cache.clone(), c.api.unknown_pod_wait.0)),
        };
        let engine = TailEngine::new(
            SOURCE,
            c.tenant.clone(),
            vec![pattern],
            Vec::new(),
            Format::Container,
            c.tail.clone(),
            Box::new(describe),
            ctx.ingest.clone(),
        );
        let poll = c.tail.poll_interval.0;
        let sync_timeout = c.api.sync_timeout.0;
        let shutdown = ctx.shutdown.clone();
        running.tasks.push(Box::pin(async move {
            if let Some(cache) = cache {
                if !first_sync(cache.subscribe(), sync_timeout, &shutdown).await {
                    return Ok(());
                }
            }
            tail::run(engine, poll, shutdown).await
        }));
        Ok(running)
    }
}

/// Waits for the first list of this node's pods (or for the watch to say there is no API),
/// at most `timeout`; after that, reading starts with path metadata (said once at warn, unless
/// the user asked not to wait).
/// `false` on shutdown.
async fn first_sync(
    mut state: watch::Receiver<SyncState>,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let wait = tokio::time::timeout(timeout, state.wait_for(|s| *s != SyncState::Pending));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = wait => {
            if r.is_err() && !timeout.is_zero() {
                warn!(
                    sync_timeout = %humantime::format_duration(timeout),
                    "sources.kubernetes_logs.api: no pod list from the Kubernetes API within sync_timeout; reading with path metadata only until it arrives"
                );
            }
            true
        }
    }
}
