//! Crashes inside a change: every change of the index that writes more than one record
//! (a registration batch, a lease, a compaction commit, a retention pass) is all or nothing.
//! A fault armed between two of its writes makes the change fail there, as a crash would; the
//! index is then reopened (sled: the database is closed and opened again from its directory;
//! PostgreSQL: a new pool, the failed transaction's connection having rolled back) and must show
//! none of the change, and the retried change must then show all of it.
//!
//! This is what keeps the sweeper from deleting live data: a commit that left its output
//! active beside inputs still active (rows counted twice), or inputs compacted under an
//! uncommitted lease (whose output the sweeper deletes as an abandoned lease's leftover), would
//! lose or double rows.

use std::time::Duration;

use weir_control_plane::faults::{FaultPoint, Faults};

use super::backends::Store;
use super::*;

/// Arms `point`, runs `change`, which must fail with the injected fault, and reopens.
async fn fail_at<T: std::fmt::Debug>(
    store: &Store,
    cat: Arc<dyn Catalog>,
    point: FaultPoint,
    change: impl AsyncFnOnce(&dyn Catalog) -> Result<T, CatalogError>,
) -> Arc<dyn Catalog> {
    let faults = Faults::default();
    drop(cat);
    let cat = store.open(faults.clone()).await;
    faults.arm(point);
    match change(cat.as_ref()).await {
        Err(CatalogError::Storage(m)) if m.contains("injected fault") => {}
        other => panic!("{point:?}: want the injected fault, got {other:?}"),
    }
    drop(cat);
    store.open(Faults::default()).await
}

/// Reopens the index (a clean restart: what a caller was told succeeded must be there).
async fn reopen(store: &Store, cat: Arc<dyn Catalog>) -> Arc<dyn Catalog> {
    drop(cat);
    store.open(Faults::default()).await
}

fn ids(segs: &[SegmentRecord]) -> HashSet<Uuid> {
    segs.iter().map(|s| s.id).collect()
}

fn order(segs: &[SegmentRecord]) -> Vec<Uuid> {
    segs.iter().map(|s| s.id).collect()
}

/// The ids of a tenant's active segments, in listing order.
async fn active(cat: &dyn Catalog, tenant: &str) -> Vec<Uuid> {
    order(&list_all(cat, tenant).await)
}

pub(crate) async fn a_failed_change_leaves_nothing_behind(store: Store) {
    let t = tenant("crash");
    let p = "dt=2026-01-01/hour=00";
    let mut cat = store.open(Faults::default()).await;

    // Registration of a batch: none of it, then all of it.
    let inputs: Vec<SegmentRecord> = (0..3).map(|i| seg(&t, "logs", p, i, i + 1, "a")).collect();
    let batch = inputs.clone();
    cat = fail_at(&store, cat, FaultPoint::RegisterPartway, async |c| {
        c.register(&batch).await
    })
    .await;
    assert!(
        cat.lookup(&inputs.iter().map(|s| s.id).collect::<Vec<_>>())
            .await
            .unwrap()
            .is_empty(),
        "a failed registration left part of its batch in the index"
    );
    cat.register(&inputs).await.unwrap();
    cat = reopen(&store, cat).await;
    assert_eq!(active(cat.as_ref(), &t).await, order(&inputs));

    // A lease: no lease record may survive without its inputs marked (the sweeper would
    // abandon it and delete its output key), nor inputs held by a lease that does not exist.
    let mut short = lease_req(&t, 1 << 20);
    short.ttl_ms = 1000;
    cat = fail_at(&store, cat, FaultPoint::LeaseRecorded, async |c| {
        c.lease_compaction(&short).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let orphans: Vec<Uuid> = cat
        .abandon_expired_leases(weir_control_plane::now_ns(), 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.tenant == t)
        .map(|l| l.lease_id)
        .collect();
    assert!(orphans.is_empty(), "a failed lease left lease {orphans:?}");
    let lease = cat
        .lease_compaction(&lease_req(&t, 1 << 20))
        .await
        .unwrap()
        .expect("the inputs of the failed lease are free");
    assert_eq!(ids(&lease.inputs), ids(&inputs));

    // A compaction commit, failed at each point between its writes: the inputs stay active,
    // held by the lease; the output is nowhere; the lease can still commit.
    let out = merged(&lease.inputs);
    for point in [
        FaultPoint::CommitOutputsWritten,
        FaultPoint::CommitInputsRetired,
    ] {
        let (id, outputs) = (lease.lease_id, vec![out.clone()]);
        cat = fail_at(&store, cat, point, async |c| {
            c.commit_compaction(id, &outputs).await
        })
        .await;
        assert_eq!(
            active(cat.as_ref(), &t).await,
            order(&inputs),
            "after a commit failed at {point:?} the active segments changed"
        );
        assert!(
            cat.lookup(&[out.id]).await.unwrap().is_empty(),
            "after a commit failed at {point:?} its output is in the index"
        );
        let states: Vec<SegmentState> = cat
            .lookup(&inputs.iter().map(|s| s.id).collect::<Vec<_>>())
            .await
            .unwrap()
            .iter()
            .map(|s| s.state)
            .collect();
        assert_eq!(states, vec![SegmentState::Active; 3], "{point:?}");
        // The inputs are still held: nobody else is offered them.
        assert!(cat
            .lease_compaction(&lease_req(&t, 1 << 20))
            .await
            .unwrap()
            .is_none());
    }
    cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
        .await
        .unwrap();
    cat = reopen(&store, cat).await;
    assert_eq!(active(cat.as_ref(), &t).await, vec![out.id]);
    for s in cat
        .lookup(&inputs.iter().map(|s| s.id).collect::<Vec<_>>())
        .await
        .unwrap()
    {
        assert_eq!(s.state, SegmentState::Compacted);
        assert_eq!(s.replaced_by, Some(out.id));
    }
    // The commit is recorded as the lease's: a retry is idempotent.
    cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
        .await
        .unwrap();

    // A retention pass over two signals: none retired, then both.
    let old = tenant("crash-ret");
    let expiring = vec![
        seg(&old, "logs", p, 0, 1, "a"),
        seg(&old, "traces", p, 0, 1, "a"),
    ];
    cat.register(&expiring).await.unwrap();
    let policy = RetentionPolicy {
        default_max_age_ns: None,
        rules: vec![RetentionRule {
            tenant: Some(old.clone()),
            signal: None,
            max_age_ns: HOUR,
        }],
    };
    let now = 24 * HOUR;
    cat = fail_at(&store, cat, FaultPoint::ExpirePartway, async |c| {
        c.expire(&policy, now, false).await
    })
    .await;
    assert_eq!(
        ids(&list_all(cat.as_ref(), &old).await),
        ids(&expiring),
        "a failed retention pass retired part of its segments"
    );
    let gone = cat.expire(&policy, now, false).await.unwrap();
    assert_eq!(ids(&gone), ids(&expiring));
    cat = reopen(&store, cat).await;
    assert!(list_all(cat.as_ref(), &old).await.is_empty());
    let garbage: HashSet<Uuid> = cat
        .garbage(i64::MAX, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.tenant == old)
        .map(|s| s.id)
        .collect();
    assert_eq!(garbage, ids(&expiring));
}
