//! The catalog conformance suite: every backend behind the `Catalog` trait must pass it.
//!
//! The sled backend always runs, alone and behind the HTTP API through the `RemoteCatalog`
//! client (what `weir agent` and `weir compactor` use). The PostgreSQL backend runs against
//! `TEST_WEIR_PG_URL` (the test command starts a throwaway cluster and sets it); when
//! `TEST_WEIR_REQUIRE_PG` is set, a missing URL fails the suite instead of skipping it. Each
//! test works in tenants of its own, so tests share one database.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;
use weir_control_plane::{
    AgentHeartbeat, Catalog, CatalogError, IcebergPointer, LeaseRequest, PgCatalog, PgConfig,
    RetentionPolicy, RetentionRule, SegmentQuery, SegmentRecord, SegmentState, SledCatalog,
};

mod backends;
mod crash;
mod leases;

use crash::a_failed_change_leaves_nothing_behind;
use leases::{
    abandoned_leases_cannot_commit, expired_leases_are_reoffered, lease_and_commit,
    racing_compactors,
};

const HOUR: i64 = 3_600_000_000_000;

fn tenant(name: &str) -> String {
    format!("{name}-{}", &Uuid::now_v7().simple().to_string()[24..])
}

fn seg(
    tenant: &str,
    signal: &str,
    partition: &str,
    min: i64,
    max: i64,
    svc: &str,
) -> SegmentRecord {
    let id = Uuid::now_v7();
    SegmentRecord {
        id,
        tenant: tenant.into(),
        signal: signal.into(),
        object_key: format!("tenant={tenant}/signal={signal}/{partition}/{id}.parquet"),
        partition: partition.into(),
        min_timestamp: min,
        max_timestamp: max,
        row_count: 10,
        bytes: 100,
        services: vec![svc.into()],
        schema_version: 1,
        agent_id: "a".into(),
        created_at: 0,
        state: SegmentState::Active,
        replaced_by: None,
        retired_at: None,
        purged_at: None,
    }
}

fn lease_req(tenant: &str, target: u64) -> LeaseRequest {
    LeaseRequest {
        agent_id: "compactor".into(),
        ttl_ms: 60_000,
        target_bytes: target,
        min_inputs: 2,
        max_inputs: 256,
        min_age_ms: 0,
        tenant: Some(tenant.into()),
        schema_version: None,
    }
}

fn merged(inputs: &[SegmentRecord]) -> SegmentRecord {
    let first = &inputs[0];
    let mut out = seg(
        &first.tenant,
        &first.signal,
        &first.partition,
        inputs.iter().map(|s| s.min_timestamp).min().unwrap(),
        inputs.iter().map(|s| s.max_timestamp).max().unwrap(),
        "api",
    );
    out.row_count = inputs.iter().map(|s| s.row_count).sum();
    out.bytes = inputs.iter().map(|s| s.bytes).sum();
    out
}

async fn list_all(cat: &dyn Catalog, tenant: &str) -> Vec<SegmentRecord> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = cat
            .list(&SegmentQuery {
                tenant: tenant.into(),
                limit: Some(2),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.segments);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

async fn register_and_query(cat: Arc<dyn Catalog>) {
    let t1 = tenant("t1");
    let t2 = tenant("t2");
    let p = "dt=2026-01-01/hour=00";
    let a = seg(&t1, "logs", p, 0, 100, "api");
    let b = seg(&t1, "logs", p, 200, 300, "web");
    // A file with more services than a record lists matches every service filter.
    let c = seg(&t1, "traces", p, 0, 100, weir_catalog::MANY_SERVICES);
    let d = seg(&t2, "logs", p, 0, 100, "api");
    cat.register(&[a.clone(), b.clone(), c.clone(), d.clone()])
        .await
        .unwrap();
    cat.register(std::slice::from_ref(&a)).await.unwrap();
    let mut changed = a.clone();
    changed.row_count = 11;
    assert!(matches!(
        cat.register(&[changed]).await,
        Err(CatalogError::Conflict(id)) if id == a.id
    ));

    let q = |f: &dyn Fn(&mut SegmentQuery)| {
        let mut q = SegmentQuery {
            tenant: t1.clone(),
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let all = cat.list(&q(&|_| {})).await.unwrap();
    assert_eq!(all.segments, vec![a.clone(), b.clone(), c.clone()]);
    let logs = cat
        .list(&q(&|q| q.signal = Some("logs".into())))
        .await
        .unwrap();
    assert_eq!(logs.segments, vec![a.clone(), b.clone()]);
    let late = cat
        .list(&q(&|q| {
            q.signal = Some("logs".into());
            q.from = Some(150);
        }))
        .await
        .unwrap();
    assert_eq!(late.segments, vec![b.clone()]);
    let early = cat.list(&q(&|q| q.to = Some(150))).await.unwrap();
    assert_eq!(early.segments, vec![a.clone(), c.clone()]);
    let web = cat
        .list(&q(&|q| q.service = Some("web".into())))
        .await
        .unwrap();
    assert_eq!(web.segments, vec![b.clone(), c.clone()]);

    // Paging walks every segment once, in order.
    let paged: Vec<Uuid> = list_all(cat.as_ref(), &t1)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(paged, vec![a.id, b.id, c.id]);

    let found = cat.lookup(&[a.id, d.id, Uuid::now_v7()]).await.unwrap();
    let ids: HashSet<Uuid> = found.iter().map(|s| s.id).collect();
    assert_eq!(ids, HashSet::from([a.id, d.id]));
}

async fn invalid_requests(cat: Arc<dyn Catalog>) {
    let p = "dt=2026-01-01/hour=00";
    let bad = seg("../x", "logs", p, 0, 1, "a");
    assert!(matches!(
        cat.register(&[bad]).await,
        Err(CatalogError::Invalid(_))
    ));
    let mut bad = seg("t", "bogus", p, 0, 1, "a");
    assert!(matches!(
        cat.register(std::slice::from_ref(&bad)).await,
        Err(CatalogError::Invalid(_))
    ));
    bad.signal = "logs".into();
    bad.min_timestamp = 5;
    assert!(matches!(
        cat.register(std::slice::from_ref(&bad)).await,
        Err(CatalogError::Invalid(_))
    ));
    bad.min_timestamp = 0;
    bad.state = SegmentState::Compacted;
    assert!(matches!(
        cat.register(&[bad]).await,
        Err(CatalogError::Invalid(_))
    ));
    let q = SegmentQuery {
        tenant: "t".into(),
        limit: Some(0),
        ..Default::default()
    };
    assert!(matches!(cat.list(&q).await, Err(CatalogError::Invalid(_))));
    let q = SegmentQuery {
        tenant: "t".into(),
        cursor: Some("garbage".into()),
        ..Default::default()
    };
    assert!(matches!(cat.list(&q).await, Err(CatalogError::Invalid(_))));
    let mut r = lease_req("t", 100);
    r.ttl_ms = 1;
    assert!(matches!(
        cat.lease_compaction(&r).await,
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        cat.commit_compaction(Uuid::now_v7(), &[seg("t", "logs", p, 0, 1, "a")])
            .await,
        Err(CatalogError::LeaseLost { .. })
    ));
}

/// A segment must live at the key the lake layout derives from its tenant, signal, partition
/// and id: a writer cannot register (and so have listed to its readers, and later swept)
/// another tenant's object, nor any other key.
async fn object_keys_follow_the_layout(cat: Arc<dyn Catalog>) {
    let (a, b) = (tenant("keys-a"), tenant("keys-b"));
    let p = "dt=2026-01-01/hour=00";
    let theirs = seg(&b, "logs", p, 0, 1, "x");
    let mut attack = seg(&a, "logs", p, 0, 1, "x");
    attack.object_key = theirs.object_key.clone();
    assert!(matches!(
        cat.register(std::slice::from_ref(&attack)).await,
        Err(CatalogError::Invalid(_))
    ));
    for key in [
        format!("tenant={a}/signal=logs/{p}/other.parquet"),
        format!("tenant={a}/signal=traces/{p}/{}.parquet", attack.id),
        format!(
            "tenant={a}/signal=logs/dt=2026-01-01/hour=01/{}.parquet",
            attack.id
        ),
        // Its own dead-letter key is fine (`dead_letters`); another tenant's is not.
        format!(
            "_dead_letter/tenant={b}/signal=logs/{p}/{}.parquet",
            attack.id
        ),
    ] {
        attack.object_key = key;
        assert!(matches!(
            cat.register(std::slice::from_ref(&attack)).await,
            Err(CatalogError::Invalid(_))
        ));
    }
    let mut bad_partition = seg(&a, "logs", "dt=2026-01-01", 0, 1, "x");
    bad_partition.object_key = format!(
        "tenant={a}/signal=logs/dt=2026-01-01/{}.parquet",
        bad_partition.id
    );
    assert!(matches!(
        cat.register(&[bad_partition]).await,
        Err(CatalogError::Invalid(_))
    ));
    assert!(list_all(cat.as_ref(), &a).await.is_empty());
    cat.register(std::slice::from_ref(&theirs)).await.unwrap();
    assert_eq!(list_all(cat.as_ref(), &b).await, vec![theirs]);
}

async fn retention(cat: Arc<dyn Catalog>) {
    let t = tenant("ret");
    let keep_forever = tenant("keep");
    let now = 100 * 24 * HOUR;
    let day = 24 * HOUR;
    let p = "dt=2026-01-01/hour=00";
    let old_logs = seg(&t, "logs", p, now - 10 * day, now - 9 * day, "api");
    let new_logs = seg(&t, "logs", p, now - day, now - day + 1, "api");
    let old_traces = seg(&t, "traces", p, now - 10 * day, now - 9 * day, "api");
    let other = seg(&keep_forever, "logs", p, 0, 1, "api");
    cat.register(&[
        old_logs.clone(),
        new_logs.clone(),
        old_traces.clone(),
        other.clone(),
    ])
    .await
    .unwrap();
    let policy = RetentionPolicy {
        default_max_age_ns: None,
        rules: vec![
            RetentionRule {
                tenant: Some(t.clone()),
                signal: Some("logs".into()),
                max_age_ns: 7 * day,
            },
            RetentionRule {
                tenant: Some(t.clone()),
                signal: Some("traces".into()),
                max_age_ns: 30 * day,
            },
        ],
    };
    let dry = cat.expire(&policy, now, true).await.unwrap();
    assert_eq!(
        dry.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![old_logs.id]
    );
    assert_eq!(
        list_all(cat.as_ref(), &t).await.len(),
        3,
        "dry run changed the index"
    );
    let gone = cat.expire(&policy, now, false).await.unwrap();
    assert_eq!(
        gone.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![old_logs.id]
    );
    let left: HashSet<Uuid> = list_all(cat.as_ref(), &t)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, HashSet::from([new_logs.id, old_traces.id]));
    assert_eq!(list_all(cat.as_ref(), &keep_forever).await.len(), 1);
    let state = cat.lookup(&[old_logs.id]).await.unwrap();
    assert_eq!(state[0].state, SegmentState::Deleted);
    assert!(cat
        .garbage(i64::MAX, 100_000)
        .await
        .unwrap()
        .iter()
        .any(|s| s.id == old_logs.id));
    assert!(cat.expire(&policy, now, false).await.unwrap().is_empty());
}

async fn heartbeats(cat: Arc<dyn Catalog>) {
    let id = tenant("node");
    let host = tenant("host");
    let mut hb = AgentHeartbeat {
        agent_id: id.clone(),
        labels: [("host.name".to_string(), host.clone())].into(),
        version: "0.1.0".into(),
        role: "agent".into(),
        buffer_bytes: 10,
        buffer_entries: 1,
        outbox: 0,
        last_flush_at: Some(5),
        started_at: 1,
    };
    cat.heartbeat(&hb).await.unwrap();
    hb.buffer_bytes = 20;
    cat.heartbeat(&hb).await.unwrap();
    let agents = cat.agents().await.unwrap();
    let mine: Vec<_> = agents
        .iter()
        .filter(|a| a.heartbeat.agent_id == id)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].heartbeat, hb);
    // A second agent on the same host (another data directory) is another entry.
    let mut neighbour = hb.clone();
    neighbour.agent_id = tenant("node");
    cat.heartbeat(&neighbour).await.unwrap();
    let on_host: HashSet<String> = cat
        .agents()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.heartbeat.labels.get("host.name") == Some(&host))
        .map(|a| a.heartbeat.agent_id)
        .collect();
    assert_eq!(on_host, HashSet::from([id, neighbour.agent_id.clone()]));
    for bad in [
        (0..=weir_control_plane::MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect(),
        [(String::new(), "v".to_string())].into(),
        [("k".to_string(), "v".repeat(257))].into(),
    ] {
        let mut labelled = hb.clone();
        labelled.labels = bad;
        assert!(matches!(
            cat.heartbeat(&labelled).await,
            Err(CatalogError::Invalid(_))
        ));
    }
    hb.agent_id = String::new();
    assert!(matches!(
        cat.heartbeat(&hb).await,
        Err(CatalogError::Invalid(_))
    ));
}

/// Dead-letter files (rows a transform failed on) are indexed under their marker: listed
/// only when asked for, never compacted, and bound to their tenant like any segment.
async fn dead_letters(cat: Arc<dyn Catalog>) {
    let t = tenant("dl");
    let p = "dt=2026-01-01/hour=00";
    let lake = seg(&t, "logs", p, 0, 1, "api");
    let dead: Vec<SegmentRecord> = (0..3)
        .map(|i| {
            let mut s = seg(&t, "logs", p, i, i + 1, "api");
            s.object_key = format!("_dead_letter/{}", s.object_key);
            s
        })
        .collect();
    let mut all = vec![lake.clone()];
    all.extend(dead.iter().cloned());
    cat.register(&all).await.unwrap();
    let q = |dead_letter| SegmentQuery {
        tenant: t.clone(),
        dead_letter,
        ..Default::default()
    };
    assert_eq!(cat.list(&q(false)).await.unwrap().segments, vec![lake]);
    assert_eq!(cat.list(&q(true)).await.unwrap().segments, dead);
    // Three dead-letter files and one lake file in a partition: nothing to compact.
    assert!(cat
        .lease_compaction(&lease_req(&t, 1 << 30))
        .await
        .unwrap()
        .is_none());
    // Service names a record may not carry: refused with 400 on every backend (PostgreSQL
    // cannot store a NUL, nor index a name longer than about 2.7 KB).
    for bad in [
        vec!["a\0b".to_string()],
        vec!["x".repeat(weir_catalog::MAX_SERVICE_NAME_BYTES + 1)],
        (0..=weir_catalog::MAX_SERVICES)
            .map(|i| format!("s{i}"))
            .collect(),
    ] {
        let mut s = seg(&t, "logs", p, 0, 1, "api");
        s.services = bad;
        assert!(matches!(
            cat.register(&[s]).await,
            Err(CatalogError::Invalid(_))
        ));
    }
    let mut elsewhere = seg(&t, "logs", p, 0, 1, "api");
    elsewhere.object_key = format!(
        "_dead_letter/tenant=other/signal=logs/{p}/{}.parquet",
        elsewhere.id
    );
    assert!(matches!(
        cat.register(&[elsewhere]).await,
        Err(CatalogError::Invalid(_))
    ));
}

/// The tables to publish: (tenant, signal) pairs with active lake segments, ordered; a pair
/// with only dead letters or only retired segments is not one, and a tenant whose name
/// extends another's is its own.
async fn active_tables(cat: Arc<dyn Catalog>) {
    let a = tenant("tab");
    let ab = format!("{a}-b");
    let p = "dt=2026-01-01/hour=00";
    let mut dead = seg(&a, "metrics", p, 0, 1, "x");
    dead.object_key = format!("_dead_letter/{}", dead.object_key);
    let gone = seg(&a, "traces", p, 0, 1, "x");
    cat.register(&[
        seg(&a, "logs", p, 0, 1, "x"),
        seg(&ab, "logs", p, 0, 1, "x"),
        seg(&ab, "traces", p, 5, 6, "x"),
        dead,
        gone.clone(),
    ])
    .await
    .unwrap();
    let policy = RetentionPolicy {
        default_max_age_ns: None,
        rules: vec![RetentionRule {
            tenant: Some(a.clone()),
            signal: Some("traces".into()),
            max_age_ns: 1,
        }],
    };
    let expired = cat.expire(&policy, 10, false).await.unwrap();
    assert_eq!(
        expired.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![gone.id]
    );
    let mine: Vec<(String, String)> = cat
        .active_tables()
        .await
        .unwrap()
        .into_iter()
        .filter(|(t, _)| t.starts_with(&a))
        .collect();
    assert_eq!(
        mine,
        vec![
            (a.clone(), "logs".to_string()),
            (ab.clone(), "logs".to_string()),
            (ab.clone(), "traces".to_string()),
        ]
    );
}

/// The Iceberg table pointers: a compare-and-set on the version, so of two writers racing
/// from the same version exactly one wins; a pointer that is not a table is refused.
async fn iceberg_pointers(cat: Arc<dyn Catalog>) {
    let t = tenant("ice");
    let pointer = |version: u64| IcebergPointer {
        tenant: t.clone(),
        signal: "logs".into(),
        version,
        metadata_key: format!("metadata/{t}/logs/{version:05}.metadata.json"),
        updated_at: version as i64,
    };
    let mine = |all: Vec<IcebergPointer>| -> Vec<IcebergPointer> {
        all.into_iter().filter(|p| p.tenant == t).collect()
    };
    assert!(mine(cat.iceberg_tables().await.unwrap()).is_empty());
    // Creating needs "no pointer yet".
    assert!(!cat.swap_iceberg_table(Some(1), &pointer(1)).await.unwrap());
    assert!(cat.swap_iceberg_table(None, &pointer(1)).await.unwrap());
    assert!(!cat.swap_iceberg_table(None, &pointer(1)).await.unwrap());
    // Two writers from version 1: one wins, the other sees it lost.
    let (p2a, p2b) = (pointer(2), pointer(2));
    let (a, b) = tokio::join!(
        cat.swap_iceberg_table(Some(1), &p2a),
        cat.swap_iceberg_table(Some(1), &p2b)
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|w| **w).count(), 1);
    assert_eq!(mine(cat.iceberg_tables().await.unwrap()), vec![pointer(2)]);
    let mut other = pointer(1);
    other.signal = "traces".into();
    assert!(cat.swap_iceberg_table(None, &other).await.unwrap());
    assert_eq!(
        mine(cat.iceberg_tables().await.unwrap()),
        vec![pointer(2), other]
    );
    let mut bad = pointer(3);
    bad.signal = "profiles".into();
    assert!(matches!(
        cat.swap_iceberg_table(Some(2), &bad).await,
        Err(CatalogError::Invalid(_))
    ));
    let mut bad = pointer(3);
    bad.metadata_key = "../elsewhere.json".into();
    assert!(matches!(
        cat.swap_iceberg_table(Some(2), &bad).await,
        Err(CatalogError::Invalid(_))
    ));
}

/// Runs each scenario against the backends named: `sled` and `pg` are the index
/// implementations; `remote` is a sled index behind the HTTP API, through the client agents
/// and compactors use.
macro_rules! conformance {
    ($backend:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some((cat, _dir)) = super::backends::$backend().await {
                    super::$name(cat).await;
                }
            }
        )*
    };
}

/// What agents and compactors do: every implementation, including the HTTP client.
macro_rules! client_scenarios {
    ($backend:ident) => {
        conformance!(
            $backend: register_and_query,
            dead_letters,
            invalid_requests,
            object_keys_follow_the_layout,
            racing_compactors,
            heartbeats,
        );
    };
}

/// What runs inside the control plane (retention, garbage, lease cleanup): the index
/// implementations only; the API refuses these (`the_api_keeps_sweeping_inside`).
macro_rules! index_scenarios {
    ($backend:ident) => {
        conformance!(
            $backend: lease_and_commit,
            expired_leases_are_reoffered,
            abandoned_leases_cannot_commit,
            retention,
            iceberg_pointers,
            active_tables,
        );
    };
}

/// What a crash inside a change leaves behind: the index implementations, closed and opened
/// again between the steps.
macro_rules! restart_scenarios {
    ($backend:ident) => {
        conformance!($backend: a_failed_change_leaves_nothing_behind);
    };
}

mod sled_backend {
    client_scenarios!(sled);
    index_scenarios!(sled);
    restart_scenarios!(sled_store);
}

mod pg_backend {
    client_scenarios!(pg);
    index_scenarios!(pg);
    restart_scenarios!(pg_store);
}

mod remote_client {
    use super::*;
    client_scenarios!(remote);

    /// Leases and commits through the API, as a remote compactor does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lease_and_commit_over_the_api() {
        let Some((cat, _dir)) = backends::remote().await else {
            return;
        };
        let t = tenant("remote-lease");
        let p = "dt=2026-01-01/hour=00";
        let inputs: Vec<SegmentRecord> =
            (0..3).map(|i| seg(&t, "logs", p, i, i + 1, "a")).collect();
        cat.register(&inputs).await.unwrap();
        let lease = cat
            .lease_compaction(&lease_req(&t, 1 << 20))
            .await
            .unwrap()
            .expect("a plan over three small segments");
        assert_eq!(lease.inputs.len(), 3);
        let out = merged(&lease.inputs);
        cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
            .await
            .unwrap();
        assert_eq!(list_all(cat.as_ref(), &t).await, vec![out.clone()]);
        // A retried commit (its answer lost on the way) is idempotent.
        cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
            .await
            .unwrap();
    }

    /// Retention, garbage collection and lease cleanup run inside the control plane: the API
    /// does not offer them, and the client says so instead of doing nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_api_keeps_sweeping_inside() {
        let Some((cat, _dir)) = backends::remote().await else {
            return;
        };
        let invalid = |r: Result<_, CatalogError>| matches!(r, Err(CatalogError::Invalid(_)));
        assert!(invalid(
            cat.expire(&RetentionPolicy::default(), 0, true)
                .await
                .map(|_| ())
        ));
        assert!(invalid(cat.garbage(0, 1).await.map(|_| ())));
        assert!(invalid(cat.mark_purged(&[], 0).await));
        assert!(invalid(cat.abandon_expired_leases(0, 1).await.map(|_| ())));
    }
}

#[tokio::test]
async fn sled_index_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenant("reopen");
    let s = seg(&t, "logs", "dt=2026-01-01/hour=00", 0, 1, "api");
    {
        let cat = SledCatalog::open(dir.path()).unwrap();
        cat.register(std::slice::from_ref(&s)).await.unwrap();
        cat.sync().await.unwrap();
    }
    let cat = SledCatalog::open(dir.path()).unwrap();
    assert_eq!(list_all(&cat, &t).await, vec![s]);
}

#[tokio::test]
async fn pg_migrations_are_idempotent() {
    let Some(url) = backends::pg_url() else {
        return;
    };
    // Several control-plane replicas starting at once all migrate safely.
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                PgCatalog::connect(&PgConfig { url, pool_size: 2 })
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
