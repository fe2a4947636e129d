//! Building the source: the engine over `{root}/*/*/*.log`, with the pod metadata from paths.

use std::path::Path;

use tracing::{info, warn};

use super::config::ValidKubernetesLogs;
use super::path::PodPath;
use super::SOURCE;
use crate::contract::{BuildError, Claim, RunningSource, SourceContext, ValidSource};
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

/// Pod metadata of a log file, from its path.
struct PodFiles {
    node: Option<String>,
    own: Option<OwnPod>,
    exclude_namespaces: Vec<String>,
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
        meta.service_name = Some(p.container.clone());
        let r = &mut meta.resource;
        r.push(("k8s.namespace.name".into(), p.namespace));
        r.push(("k8s.pod.name".into(), p.pod));
        r.push(("k8s.pod.uid".into(), p.uid));
        r.push(("k8s.container.name".into(), p.container));
        if let Some(n) = p.restart_count {
            r.push(("k8s.container.restart_count".into(), n.to_string()));
        }
        Some(meta)
    }
}

impl ValidSource for ValidKubernetesLogs {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn claims(&self) -> Vec<Claim> {
        Vec::new()
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
        let describe = PodFiles {
            node,
            own: c.exclude_own_pod.then(OwnPod::from_env),
            exclude_namespaces: c.exclude_namespaces.clone(),
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
        let mut running = RunningSource::new(SOURCE);
        running.tasks.push(Box::pin(tail::run(
            engine,
            c.tail.poll_interval.0,
            ctx.shutdown.clone(),
        )));
        Ok(running)
    }
}
