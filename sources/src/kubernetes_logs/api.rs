//! Pod metadata from the Kubernetes API: a watch of this node's pods (field selector
//! `spec.nodeName=<node>`), kept as a map from pod UID to what records need (labels, the
//! selected annotations, owner, container images, the exclusion flag).
//!
//! Memory is bounded by the node's pods: each pod is reduced to a [`PodMeta`] as it arrives
//! and dropped when it is deleted (or missing from a relist). The watch (kube-runtime's
//! `watcher`: a list, then a watch from its `resourceVersion`, relisting when the version is
//! too old) restarts with an exponential back-off after errors, which it logs; it never ends
//! the agent, and it stops on the source's shutdown token.
//!
//! [`PodLookup`] is what the tailing engine's `describe` asks, at every rescan and for every
//! file: known pods give their metadata; a pod the API does not know (yet) waits
//! `unknown_pod_wait` for it (its watch event may come after its first lines), then is read
//! with path metadata. The last metadata seen for a pod is remembered while its files are on
//! disk, so the end of a deleted pod's logs keeps its labels, and an excluded pod stays
//! excluded.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::path::PodPath;
use crate::contract::ServeError;
use crate::tail::FileMeta;

/// Label the Deployment controller puts on its pods; the ReplicaSet is named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Label whose value, when present, is the record's `service.name`.
const SERVICE_LABEL: &str = "app.kubernetes.io/name";

/// Annotation of a static pod's mirror in the API.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How often a long run of watch errors is logged at warn (the others at debug).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Entries of [`PodLookup`]'s memory not asked about for this long are forgotten (their files
/// are gone).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Errors reaching the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kubeconfig named by `KUBECONFIG` cannot be used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// The in-cluster service account cannot be used.
    #[error("in-cluster config: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    /// The client cannot be built from the config.
    #[error("client: {0}")]
    Client(#[from] kube::Error),
}

/// What records of one pod carry, from the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodMeta {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// The selected annotations, in the configured order.
    pub annotations: Vec<(String, String)>,
    /// Owner attributes (`k8s.deployment.name`, ...).
    pub owner: Vec<(&'static str, String)>,
    /// Image of each container (init and ephemeral ones included), by container name.
    pub images: Vec<(String, String)>,
    /// Labelled `<exclude_label>=true`: its logs are not read.
    pub excluded: bool,
    /// The mirror of a static pod (annotation `kubernetes.io/config.mirror`): its log
    /// directory carries the UID of the kubelet's manifest, so it is found by name.
    pub mirror: bool,
}

impl PodMeta {
    /// Reduces a pod to what records need; `None` for a pod without UID.
    pub fn from_pod(pod: &Pod, annotations: &[String], exclude_label: &str) -> Option<PodMeta> {
        let m = &pod.metadata;
        m.uid.as_ref()?;
        let labels: Vec<(String, String)> = m
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let label = |k: &str| labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v.as_str());
        let excluded = label(exclude_label) == Some("true");
        let owner = owner_attributes(
            m.owner_references.as_deref().unwrap_or_default(),
            label(POD_TEMPLATE_HASH),
        );
        let mirror = m
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
        let annotations = match &m.annotations {
            Some(a) => annotations
                .iter()
                .filter_map(|k| a.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
            None => Vec::new(),
        };
        let mut images = Vec::new();
        if let Some(spec) = &pod.spec {
            let all = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .map(|c| (&c.name, &c.image))
                .chain(
                    spec.ephemeral_containers
                        .iter()
                        .flatten()
                        .map(|c| (&c.name, &c.image)),
                );
            for (name, image) in all {
                if let Some(image) = image {
                    images.push((name.clone(), image.clone()));
                }
            }
        }
        Some(PodMeta {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            labels,
            annotations,
            owner,
            images,
            excluded,
            mirror,
        })
    }
}

/// The owner attributes of a pod, as the OpenTelemetry Collector's k8sattributes processor
/// derives them from its owner references: a ReplicaSet gives `k8s.replicaset.name` and
/// `k8s.deployment.name` (the ReplicaSet's name without its `-<pod-template-hash>` suffix);
/// a Job gives `k8s.job.name` and, when its name ends in `-<digits>` (the CronJob's scheduled
/// time), `k8s.cronjob.name`; a DaemonSet or StatefulSet gives its name.
pub fn owner_attributes(
    owners: &[OwnerReference],
    pod_template_hash: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for o in owners {
        match o.kind.as_str() {
            "ReplicaSet" => {
                out.push(("k8s.replicaset.name", o.name.clone()));
                if let Some(d) = deployment_of(&o.name, pod_template_hash) {
                    out.push(("k8s.deployment.name", d.to_string()));
                }
            }
            "DaemonSet" => out.push(("k8s.daemonset.name", o.name.clone())),
            "StatefulSet" => out.push(("k8s.statefulset.name", o.name.clone())),
            "Job" => {
                out.push(("k8s.job.name", o.name.clone()));
                if let Some(c) = cronjob_of(&o.name) {
                    out.push(("k8s.cronjob.name", c.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// `web-7d9f8c` → `web`: the suffix is the pod's `pod-template-hash` when it has one, else
/// (k8sattributes' rule) any trailing `-<alphanumerics>`.
fn deployment_of<'a>(replicaset: &'a str, hash: Option<&str>) -> Option<&'a str> {
    if let Some(d) = hash
        .filter(|h| !h.is_empty())
        .and_then(|h| replicaset.strip_suffix(h))
        .and_then(|s| s.strip_suffix('-'))
        .filter(|d| !d.is_empty())
    {
        return Some(d);
    }
    let (d, suffix) = replicaset.rsplit_once('-')?;
    (!d.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(d)
}

/// `backup-28391820` → `backup`: a CronJob names its Jobs `<cronjob>-<scheduled minute>`.
fn cronjob_of(job: &str) -> Option<&str> {
    let (c, suffix) = job.rsplit_once('-')?;
    (!c.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
        .then_some(c)
}

/// An image reference split into `container.image.name` and `container.image.tag`:
/// `registry:5000/team/app:1.2@sha256:…` → (`registry:5000/team/app`, `1.2`); without tag or
/// digest the tag is `latest` (what the runtime pulls); with a digest only, no tag.
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, _)) => (r, true),
        None => (image, false),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None if digest => (rest, None),
        None => (rest, Some("latest")),
    }
}

/// Adds a pod's API metadata to a file's: `k8s.pod.label.<key>`, `k8s.pod.annotation.<key>`,
/// the owner, `container.image.name` and `container.image.tag` of `container` (resource
/// attributes), and `service.name` from the `app.kubernetes.io/name` label when it is set.
pub fn enrich(meta: &mut FileMeta, pod: &PodMeta, container: &str) {
    let r = &mut meta.resource;
    for (k, v) in &pod.labels {
        r.push((format!("k8s.pod.label.{k}"), v.clone()));
        if k == SERVICE_LABEL && !v.is_empty() {
            meta.service_name = Some(v.clone());
        }
    }
    for (k, v) in &pod.annotations {
        r.push((format!("k8s.pod.annotation.{k}"), v.clone()));
    }
    for (k, v) in &pod.owner {
        r.push(((*k).to_string(), v.clone()));
    }
    if let Some((_, image)) = pod.images.iter().find(|(c, _)| c == container) {
        let (name, tag) = split_image(image);
        r.push(("container.image.name".into(), name.to_string()));
        if let Some(tag) = tag {
            r.push(("container.image.tag".into(), tag.to_string()));
        }
    }
}

/// Whether the cache can be trusted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// The first list has not arrived.
    Pending,
    /// The cache holds a full list of this node's pods (kept current by the watch).
    Synced,
    /// There is no API to ask: path metadata only.
    Unavailable,
}

#[derive(Default)]
struct Pods {
    by_uid: HashMap<String, Arc<PodMeta>>,
    /// (namespace, name) → UID of mirror pods: static pods' log directories carry the UID of
    /// the kubelet's manifest, not the UID of their mirror pod in the API.
    by_name: HashMap<(String, String), String>,
}

impl Pods {
    fn insert(&mut self, uid: String, meta: PodMeta) {
        if meta.mirror {
            self.by_name
                .insert((meta.namespace.clone(), meta.name.clone()), uid.clone());
        }
        self.by_uid.insert(uid, Arc::new(meta));
    }

    fn remove(&mut self, uid: &str) {
        if let Some(m) = self.by_uid.remove(uid) {
            let key = (m.namespace.clone(), m.name.clone());
            if self.by_name.get(&key).is_some_and(|u| u == uid) {
                self.by_name.remove(&key);
            }
        }
    }
}

/// This node's pods as the API last said, shared by the watch (writer) and the engine's
/// `describe` (reader).
pub struct PodCache {
    pods: RwLock<Pods>,
    state: watch::Sender<SyncState>,
}

impl PodCache {
    /// An empty cache, not synced.
    pub fn new() -> Arc<PodCache> {
        Arc::new(PodCache {
            pods: RwLock::new(Pods::default()),
            state: watch::Sender::new(SyncState::Pending),
        })
    }

    /// The pod with this UID, else the mirror pod with this namespace and name (a static pod).
    pub fn get(&self, uid: &str, namespace: &str, name: &str) -> Option<Arc<PodMeta>> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = pods.by_uid.get(uid) {
            return Some(m.clone());
        }
        let uid = pods
            .by_name
            .get(&(namespace.to_string(), name.to_string()))?;
        pods.by_uid.get(uid).cloned()
    }

    /// Pods held.
    pub fn len(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_uid
            .len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sync state now.
    pub fn state(&self) -> SyncState {
        *self.state.borrow()
    }

    /// Follows the sync state.
    pub fn subscribe(&self) -> watch::Receiver<SyncState> {
        self.state.subscribe()
    }

    fn set_state(&self, s: SyncState) {
        self.state.send_replace(s);
    }

    fn apply(&self, uid: String, meta: PodMeta) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        pods.insert(uid, meta);
    }

    fn delete(&self, uid: &str) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        pods.remove(uid);
    }

    /// Replaces everything with a full list (pods missing from it were deleted meanwhile).
    fn replace(&self, list: Vec<(String, PodMeta)>) {
        let mut fresh = Pods::default();
        for (uid, meta) in list {
            fresh.insert(uid, meta);
        }
        *self.pods.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }
}

/// What the watch needs.
pub struct PodWatch {
    /// This node's name (the field selector).
    pub node: String,
    /// Annotation keys to keep.
    pub annotations: Vec<String>,
    /// The exclusion label.
    pub exclude_label: String,
    /// Where pods go.
    pub cache: Arc<PodCache>,
}

/// The cluster's client from `KUBECONFIG`, else from the in-cluster service account; `None`
/// when neither is there.
pub(crate) async fn connect() -> Result<Option<kube::Client>, ApiError> {
    // kube's client builds its rustls config from the process-wide crypto provider, which
    // rustls cannot pick by itself when both of its providers are linked (object_store brings
    // aws-lc-rs): use ring, as Weir's own TLS does. A provider already installed stays.
    let _ = tokio_rustls::rustls::crypto::CryptoProvider::install_default(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    );
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let config = if set("KUBECONFIG") {
        kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions::default()).await?
    } else if set("KUBERNETES_SERVICE_HOST") {
        kube::Config::incluster()?
    } else {
        return Ok(None);
    };
    Ok(Some(kube::Client::try_from(config)?))
}

/// Watches this node's pods into the cache until `shutdown`. Never fails: without a cluster
/// it marks the cache unavailable (said once at warn) and waits for shutdown.
pub async fn run(w: PodWatch, shutdown: CancellationToken) -> Result<(), ServeError> {
    let client = match connect().await {
        Ok(Some(c)) => c,
        Ok(None) => {
            warn!("sources.kubernetes_logs.api: no cluster config (neither KUBECONFIG nor an in-cluster service account); pod metadata from log paths only");
            w.cache.set_state(SyncState::Unavailable);
            // A source's tasks run until shutdown (one that ends stops the agent).
            shutdown.cancelled().await;
            return Ok(());
        }
        Err(e) => {
            warn!(error = %e, "sources.kubernetes_logs.api: cannot use the cluster config; pod metadata from log paths only");
            w.cache.set_state(SyncState::Unavailable);
            // A source's tasks run until shutdown (one that ends stops the agent).
            shutdown.cancelled().await;
            return Ok(());
        }
    };
    let api: kube::Api<Pod> = kube::Api::all(client);
    let selector = format!("spec.nodeName={}", w.node);
    let config = watcher::Config::default().fields(&selector);
    let mut events = pin!(watcher(api, config).default_backoff());
    info!(field_selector = %selector, "watching this node's pods");
    let mut listing: Option<Vec<(String, PodMeta)>> = None;
    let mut failing: Option<(Instant, Instant)> = None; // (since, last warn)
    let reduce = |p: &Pod| {
        let uid = p.metadata.uid.clone()?;
        Some((
            uid,
            PodMeta::from_pod(p, &w.annotations, &w.exclude_label)?,
        ))
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = events.next() => e,
        };
        let Some(event) = event else {
            warn!("the pod watch ended; pod metadata is no longer updated");
            shutdown.cancelled().await;
            return Ok(());
        };
        match event {
            Ok(Event::Init) => listing = Some(Vec::new()),
            Ok(Event::InitApply(p)) => {
                if let (Some(l), Some(entry)) = (listing.as_mut(), reduce(&p)) {
                    l.push(entry);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(l) = listing.take() {
                    w.cache.replace(l);
                }
                if let Some((since, _)) = failing.take() {
                    info!(after = ?since.elapsed(), "pod watch recovered");
                }
                if w.cache.state() != SyncState::Synced {
                    info!(pods = w.cache.len(), "pod metadata synced from the Kubernetes API");
                    w.cache.set_state(SyncState::Synced);
                }
            }
            Ok(Event::Apply(p)) => {
                if let Some((uid, meta)) = reduce(&p) {
                    debug!(pod = %meta.name, namespace = %meta.namespace, "pod updated");
                    w.cache.apply(uid, meta);
                }
            }
            Ok(Event::Delete(p)) => {
                if let Some(uid) = &p.metadata.uid {
                    w.cache.delete(uid);
                }
            }
            Err(e) => {
                let now = Instant::now();
                match &mut failing {
                    Some((_, last)) if now.duration_since(*last) < ERROR_LOG_EVERY => {
                        debug!(error = %e, "pod watch failed; retrying with back-off");
                    }
                    Some((since, last)) => {
                        *last = now;
                        warn!(error = %e, failing_for = ?now.duration_since(*since), "pod watch still failing; retrying with back-off");
                    }
                    None => {
                        failing = Some((now, now));
                        warn!(error = %e, "pod watch failed; retrying with back-off (records keep the metadata last seen, or path metadata)");
                    }
                }
            }
        }
    }
}

/// What [`PodLookup::lookup`] says of a file's pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The API's metadata (possibly of a pod since deleted).
    Known(Arc<PodMeta>),
    /// Unknown so far: leave the file unread for now.
    Wait,
    /// Read it with path metadata.
    PathOnly,
}

struct Seen {
    meta: Option<Arc<PodMeta>>,
    first: Instant,
    last: Instant,
}

/// The engine's side of the cache: remembers, per pod UID on disk, the metadata last seen and
/// since when it has been asked about.
pub struct PodLookup {
    cache: Arc<PodCache>,
    wait: Duration,
    seen: Mutex<(HashMap<String, Seen>, Instant)>,
}

impl PodLookup {
    /// Looks pods up in `cache`; unknown pods wait `wait` for their metadata.
    pub fn new(cache: Arc<PodCache>, wait: Duration) -> PodLookup {
        PodLookup {
            cache,
            wait,
            seen: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    /// What to do with a file of pod `p` at `now`.
    pub fn lookup(&self, p: &PodPath, now: Instant) -> Lookup {
        let state = self.cache.state();
        if state == SyncState::Unavailable {
            return Lookup::PathOnly;
        }
        let current = self.cache.get(&p.uid, &p.namespace, &p.pod);
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, pruned) = &mut *guard;
        if now.saturating_duration_since(*pruned) >= FORGET_AFTER / 10 {
            *pruned = now;
            seen.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
        }
        let s = seen.entry(p.uid.clone()).or_insert(Seen {
            meta: None,
            first: now,
            last: now,
        });
        s.last = now;
        if current.is_some() {
            s.meta = current;
        }
        match &s.meta {
            Some(m) => Lookup::Known(m.clone()),
            None if state == SyncState::Synced
                && now.saturating_duration_since(s.first) < self.wait =>
            {
                Lookup::Wait
            }
            None => Lookup::PathOnly,
        }
    }
}

#[cfg(test)]
mod tests;
