//! Compaction leases: planning, commits, expiry, abandonment and racing compactors.

use super::*;

pub(crate) async fn lease_and_commit(cat: Arc<dyn Catalog>) {
    let t = tenant("c");
    let p0 = "dt=2026-01-01/hour=00";
    let p1 = "dt=2026-01-01/hour=01";
    let small: Vec<SegmentRecord> = (0..5)
        .map(|i| seg(&t, "logs", p0, i, i + 10, "api"))
        .collect();
    let mut big = seg(&t, "logs", p0, 0, 5, "api");
    big.bytes = 10_000;
    let lonely = seg(&t, "logs", p1, HOUR, HOUR + 1, "api");
    let other_signal = seg(&t, "traces", p0, 0, 1, "api");
    let mut all = small.clone();
    all.extend([big.clone(), lonely.clone(), other_signal.clone()]);
    cat.register(&all).await.unwrap();

    // A compactor of another schema version gets nothing.
    let mut other_version = lease_req(&t, 350);
    other_version.schema_version = Some(2);
    assert!(cat
        .lease_compaction(&other_version)
        .await
        .unwrap()
        .is_none());
    // Target 350 bytes: three of the 100-byte segments, never the big one.
    let lease = cat
        .lease_compaction(&lease_req(&t, 350))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.partition, p0);
    assert_eq!(lease.signal, "logs");
    let got: Vec<Uuid> = lease.inputs.iter().map(|s| s.id).collect();
    assert_eq!(got, small[..3].iter().map(|s| s.id).collect::<Vec<_>>());
    // The rest of the partition is still offered, the leased inputs are not.
    let second = cat
        .lease_compaction(&lease_req(&t, 350))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second.inputs.iter().map(|s| s.id).collect::<Vec<_>>(),
        small[3..].iter().map(|s| s.id).collect::<Vec<_>>()
    );
    assert!(cat
        .lease_compaction(&lease_req(&t, 350))
        .await
        .unwrap()
        .is_none());

    // Outputs must hold exactly the inputs' rows and stay in the partition.
    let mut wrong = merged(&lease.inputs);
    wrong.row_count += 1;
    assert!(matches!(
        cat.commit_compaction(lease.lease_id, &[wrong]).await,
        Err(CatalogError::Invalid(_))
    ));
    let mut moved = merged(&lease.inputs);
    moved.partition = p1.into();
    assert!(matches!(
        cat.commit_compaction(lease.lease_id, &[moved]).await,
        Err(CatalogError::Invalid(_))
    ));

    let out = merged(&lease.inputs);
    cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
        .await
        .unwrap();
    // A retried commit of the same outputs is fine; other outputs are refused.
    cat.commit_compaction(lease.lease_id, std::slice::from_ref(&out))
        .await
        .unwrap();
    assert!(matches!(
        cat.commit_compaction(lease.lease_id, &[merged(&lease.inputs)])
            .await,
        Err(CatalogError::LeaseLost { .. })
    ));

    let listed: HashSet<Uuid> = list_all(cat.as_ref(), &t)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(listed.contains(&out.id));
    for i in &lease.inputs {
        assert!(!listed.contains(&i.id), "input {} still active", i.id);
    }
    let inputs = cat.lookup(&got).await.unwrap();
    assert_eq!(inputs.len(), 3);
    for i in inputs {
        assert_eq!(i.state, SegmentState::Compacted);
        assert_eq!(i.replaced_by, Some(out.id));
        assert!(i.retired_at.is_some());
    }
    // Re-registering a compacted input (an agent's retried registration) changes nothing.
    cat.register(&small[..1]).await.unwrap();
    assert!(!list_all(cat.as_ref(), &t)
        .await
        .iter()
        .any(|s| s.id == small[0].id));

    // The garbage queue offers the inputs once retired; purging takes them out of it.
    let garbage: Vec<SegmentRecord> = cat
        .garbage(i64::MAX, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.tenant == t)
        .collect();
    assert_eq!(garbage.len(), 3);
    assert!(matches!(
        cat.mark_purged(&[out.id], 1).await,
        Err(CatalogError::Invalid(_))
    ));
    cat.mark_purged(&garbage.iter().map(|s| s.id).collect::<Vec<_>>(), 1)
        .await
        .unwrap();
    assert!(!cat
        .garbage(i64::MAX, 100_000)
        .await
        .unwrap()
        .iter()
        .any(|s| s.tenant == t));
}

pub(crate) async fn expired_leases_are_reoffered(cat: Arc<dyn Catalog>) {
    let t = tenant("e");
    let p = "dt=2026-01-01/hour=00";
    let segs: Vec<SegmentRecord> = (0..2)
        .map(|i| seg(&t, "logs", p, i, i + 1, "api"))
        .collect();
    cat.register(&segs).await.unwrap();
    let mut req = lease_req(&t, 1000);
    req.ttl_ms = 1000;
    let first = cat.lease_compaction(&req).await.unwrap().unwrap();
    assert!(cat.lease_compaction(&req).await.unwrap().is_none());
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second = cat.lease_compaction(&req).await.unwrap().unwrap();
    assert_eq!(
        first.inputs.iter().map(|s| s.id).collect::<Vec<_>>(),
        second.inputs.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    // The first lessee lost its inputs: its commit is refused, the second's succeeds.
    assert!(matches!(
        cat.commit_compaction(first.lease_id, &[merged(&first.inputs)])
            .await,
        Err(CatalogError::LeaseLost { .. })
    ));
    cat.commit_compaction(second.lease_id, &[merged(&second.inputs)])
        .await
        .unwrap();
    // The first lease is abandoned once: the sweeper deletes its output, then it is done.
    let mine = |ls: Vec<weir_control_plane::CompactionLease>| -> Vec<Uuid> {
        ls.into_iter()
            .filter(|l| l.tenant == t)
            .map(|l| l.lease_id)
            .collect()
    };
    let abandoned = mine(
        cat.abandon_expired_leases(weir_control_plane::now_ns(), 10_000)
            .await
            .unwrap(),
    );
    assert_eq!(abandoned, vec![first.lease_id]);
    cat.mark_leases_cleaned(&abandoned).await.unwrap();
    assert!(mine(
        cat.abandon_expired_leases(weir_control_plane::now_ns(), 10_000)
            .await
            .unwrap()
    )
    .is_empty());
}

pub(crate) async fn abandoned_leases_cannot_commit(cat: Arc<dyn Catalog>) {
    let t = tenant("ab");
    let p = "dt=2026-01-01/hour=00";
    let segs: Vec<SegmentRecord> = (0..3)
        .map(|i| seg(&t, "logs", p, i, i + 1, "api"))
        .collect();
    cat.register(&segs).await.unwrap();
    let mut req = lease_req(&t, 1000);
    req.ttl_ms = 1000;
    let lease = cat.lease_compaction(&req).await.unwrap().unwrap();
    assert!(lease
        .output_key()
        .unwrap()
        .ends_with(&format!("{p}/{}.parquet", lease.lease_id)));
    // Not expired yet: not abandoned.
    let now = weir_control_plane::now_ns();
    assert!(!cat
        .abandon_expired_leases(now, 10_000)
        .await
        .unwrap()
        .iter()
        .any(|l| l.lease_id == lease.lease_id));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let now = weir_control_plane::now_ns();
    let abandoned = cat.abandon_expired_leases(now, 10_000).await.unwrap();
    let mine: Vec<_> = abandoned
        .iter()
        .filter(|l| l.lease_id == lease.lease_id)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].output_key().unwrap(), lease.output_key().unwrap());
    // The late compactor's commit is refused; its inputs can be leased again.
    assert!(matches!(
        cat.commit_compaction(lease.lease_id, &[merged(&lease.inputs)])
            .await,
        Err(CatalogError::LeaseLost { .. })
    ));
    let again = cat.lease_compaction(&req).await.unwrap().unwrap();
    assert_eq!(again.inputs.len(), 3);
    // A committed lease is never abandoned.
    cat.commit_compaction(again.lease_id, &[merged(&again.inputs)])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = cat
        .abandon_expired_leases(weir_control_plane::now_ns(), 10_000)
        .await
        .unwrap();
    assert!(!later.iter().any(|l| l.lease_id == again.lease_id));
    // Finished leases are forgotten after their history window; a retried commit then fails.
    cat.mark_leases_cleaned(&[lease.lease_id]).await.unwrap();
    assert!(
        cat.prune_leases(weir_control_plane::now_ns())
            .await
            .unwrap()
            >= 2
    );
    assert!(matches!(
        cat.commit_compaction(again.lease_id, &[merged(&again.inputs)])
            .await,
        Err(CatalogError::LeaseLost { .. })
    ));
}

pub(crate) async fn racing_compactors(cat: Arc<dyn Catalog>) {
    let t = tenant("r");
    let mut segs = Vec::new();
    for hour in 0..4 {
        let p = format!("dt=2026-01-01/hour={hour:02}");
        for i in 0..12 {
            segs.push(seg(
                &t,
                "logs",
                &p,
                hour * HOUR + i,
                hour * HOUR + i + 1,
                "api",
            ));
        }
    }
    cat.register(&segs).await.unwrap();
    let rows_before: u64 = segs.iter().map(|s| s.row_count).sum();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let cat = cat.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            // Every compactor loops until nothing is left, so they collide all the time.
            while let Some(lease) = cat.lease_compaction(&lease_req(&t, 450)).await.unwrap() {
                let out = merged(&lease.inputs);
                match cat
                    .commit_compaction(lease.lease_id, std::slice::from_ref(&out))
                    .await
                {
                    Ok(()) => committed.push(lease.inputs.iter().map(|s| s.id).collect::<Vec<_>>()),
                    Err(CatalogError::LeaseLost { .. }) => {}
                    Err(e) => panic!("commit failed: {e}"),
                }
            }
            committed
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for inputs in t.await.unwrap() {
            for id in inputs {
                assert!(seen.insert(id), "input {id} was committed twice");
            }
        }
    }
    // A lessee may see nothing while another holds the rows (SKIP LOCKED) and stop early:
    // drain what is left, then every input must have been compacted exactly once.
    while let Some(lease) = cat.lease_compaction(&lease_req(&t, 450)).await.unwrap() {
        cat.commit_compaction(lease.lease_id, &[merged(&lease.inputs)])
            .await
            .unwrap();
        for i in &lease.inputs {
            assert!(seen.insert(i.id), "input {} was committed twice", i.id);
        }
    }
    let active = list_all(cat.as_ref(), &t).await;
    let rows_after: u64 = active.iter().map(|s| s.row_count).sum();
    assert_eq!(rows_after, rows_before, "rows lost or doubled");
    for s in &active {
        assert!(
            !seen.contains(&s.id),
            "compacted input {} still active",
            s.id
        );
    }
    // Every original is either compacted exactly once or still active, never both.
    let originals_left = active
        .iter()
        .filter(|s| segs.iter().any(|o| o.id == s.id))
        .count();
    assert_eq!(seen.len() + originals_left, segs.len());
    assert!(
        seen.len() >= segs.len() / 2,
        "only {} inputs compacted",
        seen.len()
    );
}
