use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn owner(kind: &str, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: "owner-uid".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }
}

fn pod(uid: &str, labels: &[(&str, &str)], owners: Vec<OwnerReference>) -> Pod {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some("web-7d9f8c-x2x4p".into()),
            namespace: Some("shop".into()),
            labels: Some(map(labels)),
            annotations: Some(map(&[("team", "payments"), ("secret-ish", "no")])),
            owner_references: Some(owners),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![
                Container {
                    name: "app".into(),
                    image: Some("registry.local:5000/shop/web:1.4.2".into()),
                    ..Container::default()
                },
                Container {
                    name: "sidecar".into(),
                    image: Some("envoy".into()),
                    ..Container::default()
                },
            ],
            init_containers: Some(vec![Container {
                name: "migrate".into(),
                image: Some("shop/migrate@sha256:abcd".into()),
                ..Container::default()
            }]),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn attrs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn owners_are_derived_as_k8sattributes_does() {
    let rs = owner_attributes(&[owner("ReplicaSet", "web-7d9f8c")], None);
    assert_eq!(
        attrs(&rs),
        [
            ("k8s.replicaset.name", "web-7d9f8c"),
            ("k8s.deployment.name", "web")
        ]
    );
    // The pod-template-hash label says exactly which suffix to strip.
    let rs = owner_attributes(&[owner("ReplicaSet", "my-app-v2-5f7b9")], Some("5f7b9"));
    assert_eq!(rs[1], ("k8s.deployment.name", "my-app-v2".to_string()));
    // A name without a suffix has no deployment.
    let rs = owner_attributes(&[owner("ReplicaSet", "plain")], None);
    assert_eq!(attrs(&rs), [("k8s.replicaset.name", "plain")]);

    let job = owner_attributes(&[owner("Job", "backup-28391820")], None);
    assert_eq!(
        attrs(&job),
        [("k8s.job.name", "backup-28391820"), ("k8s.cronjob.name", "backup")]
    );
    let job = owner_attributes(&[owner("Job", "migrate-once")], None);
    assert_eq!(attrs(&job), [("k8s.job.name", "migrate-once")]);

    assert_eq!(
        attrs(&owner_attributes(&[owner("DaemonSet", "fluent")], None)),
        [("k8s.daemonset.name", "fluent")]
    );
    assert_eq!(
        attrs(&owner_attributes(&[owner("StatefulSet", "db")], None)),
        [("k8s.statefulset.name", "db")]
    );
    assert!(owner_attributes(&[owner("Node", "node-a")], None).is_empty());
}

#[test]
fn images_split_into_name_and_tag() {
    assert_eq!(split_image("nginx:1.25"), ("nginx", Some("1.25")));
    assert_eq!(split_image("nginx"), ("nginx", Some("latest")));
    assert_eq!(
        split_image("registry.local:5000/shop/web"),
        ("registry.local:5000/shop/web", Some("latest"))
    );
    assert_eq!(
        split_image("registry.local:5000/shop/web:1.4.2"),
        ("registry.local:5000/shop/web", Some("1.4.2"))
    );
    assert_eq!(split_image("shop/migrate@sha256:abcd"), ("shop/migrate", None));
    assert_eq!(split_image("app:2@sha256:abcd"), ("app", Some("2")));
}

#[test]
fn pod_attributes_map_to_the_semantic_conventions() {
    let p = pod(
        "u1",
        &[
            ("app.kubernetes.io/name", "storefront"),
            ("tier", "frontend"),
            ("pod-template-hash", "7d9f8c"),
        ],
        vec![owner("ReplicaSet", "web-7d9f8c")],
    );
    let meta = PodMeta::from_pod(&p, &["team".into(), "absent".into()], "weir.dev/exclude")
        .unwrap();
    assert!(!meta.excluded);
    let mut file = FileMeta {
        service_name: Some("app".into()),
        ..FileMeta::default()
    };
    enrich(&mut file, &meta, "app");
    let got: BTreeMap<&str, &str> = file
        .resource
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let want: BTreeMap<&str, &str> = [
        ("k8s.pod.label.app.kubernetes.io/name", "storefront"),
        ("k8s.pod.label.tier", "frontend"),
        ("k8s.pod.label.pod-template-hash", "7d9f8c"),
        ("k8s.pod.annotation.team", "payments"),
        ("k8s.replicaset.name", "web-7d9f8c"),
        ("k8s.deployment.name", "web"),
        ("container.image.name", "registry.local:5000/shop/web"),
        ("container.image.tag", "1.4.2"),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(file.service_name.as_deref(), Some("storefront"));

    // The init container's image; no app.kubernetes.io/name: service.name stays.
    let p = pod("u2", &[], vec![]);
    let meta = PodMeta::from_pod(&p, &[], "weir.dev/exclude").unwrap();
    let mut file = FileMeta {
        service_name: Some("migrate".into()),
        ..FileMeta::default()
    };
    enrich(&mut file, &meta, "migrate");
    assert_eq!(
        file.resource,
        [("container.image.name".to_string(), "shop/migrate".to_string())]
    );
    assert_eq!(file.service_name.as_deref(), Some("migrate"));
}

#[test]
fn the_exclude_label_must_be_true() {
    let excluded = pod("u", &[("weir.dev/exclude", "true")], vec![]);
    assert!(PodMeta::from_pod(&excluded, &[], "weir.dev/exclude").unwrap().excluded);
    let not = pod("u", &[("weir.dev/exclude", "false")], vec![]);
    assert!(!PodMeta::from_pod(&not, &[], "weir.dev/exclude").unwrap().excluded);
    let other = pod("u", &[("skip", "true")], vec![]);
    assert!(PodMeta::from_pod(&other, &[], "skip").unwrap().excluded);
    let mut no_uid = pod("u", &[], vec![]);
    no_uid.metadata.uid = None;
    assert!(PodMeta::from_pod(&no_uid, &[], "weir.dev/exclude").is_none());
}

fn path(uid: &str) -> PodPath {
    PodPath::parse(Path::new(&format!(
        "/var/log/pods/shop_web-7d9f8c-x2x4p_{uid}/app/0.log"
    )))
    .unwrap()
}

fn meta(name: &str) -> PodMeta {
    PodMeta {
        namespace: "shop".into(),
        name: name.into(),
        ..PodMeta::default()
    }
}

#[test]
fn lookup_waits_for_unknown_pods_then_reads_with_path_metadata() {
    let cache = PodCache::new();
    let lookup = PodLookup::new(cache.clone(), Duration::from_secs(5));
    let t0 = Instant::now();
    // Not synced (the sync timeout passed): path metadata at once.
    assert_eq!(lookup.lookup(&path("early"), t0), Lookup::PathOnly);

    cache.replace(vec![("u1".into(), meta("web-7d9f8c-x2x4p"))]);
    cache.set_state(SyncState::Synced);
    assert!(matches!(lookup.lookup(&path("u1"), t0), Lookup::Known(m) if m.name == "web-7d9f8c-x2x4p"));
    // Unknown after the sync: wait for its watch event, then give up on it.
    assert_eq!(lookup.lookup(&path("u9"), t0), Lookup::Wait);
    assert_eq!(
        lookup.lookup(&path("u9"), t0 + Duration::from_secs(4)),
        Lookup::Wait
    );
    assert_eq!(
        lookup.lookup(&path("u9"), t0 + Duration::from_secs(5)),
        Lookup::PathOnly
    );
    // Its event arrives late: metadata from then on.
    cache.apply("u9".into(), meta("late"));
    assert!(matches!(
        lookup.lookup(&path("u9"), t0 + Duration::from_secs(6)),
        Lookup::Known(m) if m.name == "late"
    ));
    // Deleted: the last metadata stays while its files are asked about.
    cache.delete("u1");
    assert!(cache.get("u1", "x", "y").is_none());
    assert!(matches!(
        lookup.lookup(&path("u1"), t0 + Duration::from_secs(7)),
        Lookup::Known(_)
    ));
    // Forgotten once nobody asked for FORGET_AFTER.
    let later = t0 + FORGET_AFTER + Duration::from_secs(8);
    assert_eq!(lookup.lookup(&path("u1"), later), Lookup::Wait);

    cache.set_state(SyncState::Unavailable);
    assert_eq!(lookup.lookup(&path("u9"), later), Lookup::PathOnly);
}

#[test]
fn static_pods_are_found_by_namespace_and_name() {
    let cache = PodCache::new();
    let mut etcd = pod("mirror-uid", &[], vec![]);
    etcd.metadata.name = Some("etcd-node-a".into());
    etcd.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.mirror".to_string(),
        "0f1e2d".to_string(),
    )]));
    let etcd = PodMeta::from_pod(&etcd, &[], "weir.dev/exclude").unwrap();
    assert!(etcd.mirror);
    cache.apply("mirror-uid".into(), etcd);
    assert!(cache.get("manifest-hash", "shop", "etcd-node-a").is_some());
    assert!(cache.get("manifest-hash", "other", "etcd-node-a").is_none());
    // Other pods are found by UID only (a recreated pod of the same name is another pod).
    cache.apply("u1".into(), meta("web-0"));
    assert!(cache.get("old-uid", "shop", "web-0").is_none());
    // A full relist replaces everything (pods deleted while disconnected go).
    cache.replace(vec![("u2".into(), meta("b"))]);
    assert_eq!(cache.len(), 1);
    assert!(cache.get("mirror-uid", "shop", "etcd-node-a").is_none());
    cache.delete("u2");
    assert!(cache.is_empty());
}
