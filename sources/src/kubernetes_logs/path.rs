//! The kubelet's log file layout: `<root>/<namespace>_<pod>_<uid>/<container>/<restart>.log`.

use std::path::Path;

/// What a pod log file's path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub uid: String,
    /// Container name.
    pub container: String,
    /// Restart count (the file's number; rotated files keep it: `0.log.20240501-100000`).
    pub restart_count: Option<u32>,
}

impl PodPath {
    /// Parses the last three components of `path`. Namespaces and pod names cannot contain
    /// `_` (they are DNS labels and subdomains), so the directory splits unambiguously.
    pub fn parse(path: &Path) -> Option<PodPath> {
        let mut parts = path.iter().rev();
        let file = parts.next()?.to_str()?;
        let container = parts.next()?.to_str()?;
        let pod_dir = parts.next()?.to_str()?;
        let mut fields = pod_dir.splitn(3, '_');
        let (namespace, pod, uid) = (fields.next()?, fields.next()?, fields.next()?);
        if namespace.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
            return None;
        }
        let restart_count = file.split('.').next().and_then(|n| n.parse().ok());
        Some(PodPath {
            namespace: namespace.into(),
            pod: pod.into(),
            uid: uid.into(),
            container: container.into(),
            restart_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_layout() {
        let p = PodPath::parse(Path::new(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f1e2d3c-aaaa-bbbb-cccc-123456789012/coredns/3.log",
        ))
        .unwrap();
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.pod, "coredns-5d78c9869d-abcde");
        assert_eq!(p.uid, "0f1e2d3c-aaaa-bbbb-cccc-123456789012");
        assert_eq!(p.container, "coredns");
        assert_eq!(p.restart_count, Some(3));
        let rotated = PodPath::parse(Path::new("/r/ns_pod_uid/c/0.log.20240501-100000")).unwrap();
        assert_eq!(rotated.restart_count, Some(0));
        assert_eq!(PodPath::parse(Path::new("/r/not-a-pod-dir/c/0.log")), None);
    }
}
