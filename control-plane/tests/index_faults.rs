//! A failed fsync of the embedded sled index (issue #15 item 3): the index acknowledges a
//! change only after a durable commit that covers it, so when that commit fails, the change
//! and every change waiting on the same group commit fail; from then on the index refuses
//! every change (and answers no read from memory) until it is reopened, without trying the
//! fsync again ("fsyncgate": a retried fsync that succeeds proves nothing). After the reopen,
//! what was acknowledged before is there, and each failed change is absent or present once:
//! retried with the same ids, it ends exactly once.
//!
//! The fault goes through the index's [`FileSync`] (`SledCatalog::open_with_sync`), the call
//! production makes for every commit, as `pipelines/tests/buffer_faults.rs` does for the
//! buffer.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;
use weir_control_plane::sled_durable::FileSync;
use weir_control_plane::{
    AgentHeartbeat, Catalog, CatalogError, CompactionLease, IcebergPointer, LeaseRequest,
    SegmentQuery, SegmentRecord, SegmentState, SledCatalog,
};

const TENANT: &str = "acme";
const PARTITION: &str = "dt=2026-01-01/hour=00";

/// Fails the next `fdatasync` of sled's data file once armed; the failing call first waits
/// until `release`, so other changes can queue behind the group commit it belongs to. Counts
/// the fsyncs asked for after the failure (there must be none).
#[derive(Default)]
struct FaultySync {
    state: Mutex<Fault>,
    changed: Condvar,
}

#[derive(Default)]
struct Fault {
    armed: bool,
    held: bool,
    released: bool,
    failed: bool,
    syncs_after_failure: u64,
}

impl FaultySync {
    fn fail_next_db_sync(&self) {
        self.state.lock().unwrap().armed = true;
    }

    fn wait_until_held(&self) {
        let s = self.state.lock().unwrap();
        drop(self.changed.wait_while(s, |s| !s.held).unwrap());
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.changed.notify_all();
    }

    fn syncs_after_failure(&self) -> u64 {
        self.state.lock().unwrap().syncs_after_failure
    }
}

impl FileSync for FaultySync {
    fn sync_data(&self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.failed {
            s.syncs_after_failure += 1;
        }
        if s.armed && path.ends_with("db") {
            s.armed = false;
            s.held = true;
            self.changed.notify_all();
            s = self.changed.wait_while(s, |s| !s.released).unwrap();
            s.failed = true;
            return Err(std::io::Error::other("injected EIO"));
        }
        drop(s);
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.failed {
            s.syncs_after_failure += 1;
        }
        drop(s);
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Replaces `to` with a copy of the directory tree `from`.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_dir(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), target)?;
        }
    }
    Ok(())
}

fn seg(partition: &str, min: i64, rows: u64) -> SegmentRecord {
    let id = Uuid::now_v7();
    SegmentRecord {
        id,
        tenant: TENANT.into(),
        signal: "logs".into(),
        object_key: format!("tenant={TENANT}/signal=logs/{partition}/{id}.parquet"),
        partition: partition.into(),
        min_timestamp: min,
        max_timestamp: min + 1,
        row_count: rows,
        bytes: 100,
        services: vec!["api".into()],
        schema_version: 1,
        agent_id: "a".into(),
        created_at: 0,
        state: SegmentState::Active,
        replaced_by: None,
        retired_at: None,
        purged_at: None,
    }
}

fn pointer(version: u64) -> IcebergPointer {
    IcebergPointer {
        tenant: TENANT.into(),
        signal: "logs".into(),
        version,
        metadata_key: format!("metadata/{TENANT}/logs/{version:05}.metadata.json"),
        updated_at: version as i64,
    }
}

fn heartbeat() -> AgentHeartbeat {
    AgentHeartbeat {
        agent_id: "node".into(),
        labels: Default::default(),
        version: "0.1.0".into(),
        role: "agent".into(),
        buffer_bytes: 0,
        buffer_entries: 0,
        outbox: 0,
        last_flush_at: None,
        started_at: 1,
    }
}

/// The active segments' ids, each as often as the index lists it.
async fn active(cat: &dyn Catalog) -> Vec<Uuid> {
    let page = cat
        .list(&SegmentQuery {
            tenant: TENANT.into(),
            ..SegmentQuery::default()
        })
        .await
        .unwrap();
    assert!(page.next_cursor.is_none());
    let mut ids: Vec<Uuid> = page.segments.iter().map(|s| s.id).collect();
    ids.sort();
    ids
}

fn sorted(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort();
    ids
}

/// The failure every change meets once the index's commit failed: it names the reopen and
/// the failed call.
fn assert_refused<T: std::fmt::Debug>(what: &str, r: Result<T, CatalogError>) {
    match r {
        Err(CatalogError::Storage(reason)) => assert!(
            reason.contains("until it is reopened") && reason.contains("injected EIO"),
            "{what}: {reason}"
        ),
        other => panic!("{what} after a failed fsync: want the index's failure, got {other:?}"),
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What was acknowledged before the failure, and the changes that failed with it.
struct Story {
    acked: SegmentRecord,
    inputs: Vec<SegmentRecord>,
    lease: CompactionLease,
    failed: Vec<SegmentRecord>,
    output: SegmentRecord,
}

/// After a reopen: what was acknowledged is there, and each failed change is absent or
/// present once; retried (twice, as after a lost answer) with the same ids it ends exactly
/// once, and the pointer swap that failed can be made again on the version it expected.
async fn check_and_retry(cat: &dyn Catalog, story: &Story) {
    let listed = active(cat).await;
    let once: HashSet<Uuid> = listed.iter().copied().collect();
    assert_eq!(once.len(), listed.len(), "a segment is listed twice");
    assert!(
        once.contains(&story.acked.id),
        "an acknowledged segment is lost"
    );
    let compacted = once.contains(&story.output.id);
    for input in &story.inputs {
        // The compaction is whole or absent: its inputs active exactly when its output is not.
        assert_eq!(once.contains(&input.id), !compacted, "a half compaction");
    }
    let version = cat
        .iceberg_tables()
        .await
        .unwrap()
        .iter()
        .map(|p| p.version)
        .collect::<Vec<_>>();
    assert!(
        version == [1] || version == [2],
        "the acknowledged pointer is lost: {version:?}"
    );
    if version == [1] {
        assert!(cat.swap_iceberg_table(Some(1), &pointer(2)).await.unwrap());
    }
    for _ in 0..2 {
        cat.register(&story.failed).await.unwrap();
        cat.commit_compaction(story.lease.lease_id, std::slice::from_ref(&story.output))
            .await
            .unwrap();
    }
    let want = sorted(
        [story.acked.id, story.output.id]
            .into_iter()
            .chain(story.failed.iter().map(|s| s.id)),
    );
    assert_eq!(active(cat).await, want);
    let inputs: Vec<Uuid> = story.inputs.iter().map(|s| s.id).collect();
    for input in cat.lookup(&inputs).await.unwrap() {
        assert_eq!(input.state, SegmentState::Compacted, "{}", input.id);
        assert_eq!(input.replaced_by, Some(story.output.id));
    }
    assert_eq!(cat.iceberg_tables().await.unwrap(), vec![pointer(2)]);
}

/// The index's commit fsync fails under a registration while a second registration, a
/// compaction commit and an Iceberg pointer swap wait on the same group commit: all four fail
/// (none is acknowledged), and so does every later change, an idempotent retry of an
/// acknowledged one included, with no fsync tried again; reads are refused too. Reopened
/// after a power cut (a copy of the directory as of the last good commit) and after a plain
/// restart (the directory sled wrote out when it closed), what was acknowledged is there and
/// the failed changes, retried, end exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_index_fsync_fails_pending_and_later_changes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let power_cut = dir.path().join("after-the-power-cut");
    let sync = Arc::new(FaultySync::default());
    let story = {
        let cat = SledCatalog::open_with_sync(&path, sync.clone()).unwrap();
        let acked = seg("dt=2026-01-01/hour=01", 10, 10);
        let inputs: Vec<SegmentRecord> = (0..2).map(|i| seg(PARTITION, i, 10)).collect();
        cat.register(std::slice::from_ref(&acked)).await.unwrap();
        cat.register(&inputs).await.unwrap();
        let lease = cat
            .lease_compaction(&LeaseRequest {
                agent_id: "compactor".into(),
                ttl_ms: 600_000,
                target_bytes: 1 << 20,
                min_inputs: 2,
                max_inputs: 16,
                min_age_ms: 0,
                tenant: Some(TENANT.into()),
                schema_version: None,
            })
            .await
            .unwrap()
            .expect("a lease over the two inputs");
        assert_eq!(
            sorted(lease.inputs.iter().map(|s| s.id)),
            sorted(inputs.iter().map(|s| s.id))
        );
        assert!(cat.swap_iceberg_table(None, &pointer(1)).await.unwrap());
        // Everything so far is acknowledged, so durable, and nothing is written after it:
        // what a power cut from here on leaves on disk.
        copy_dir(&path, &power_cut).unwrap();

        let failed: Vec<SegmentRecord> = (0..2)
            .map(|i| seg("dt=2026-01-01/hour=02", i, 10))
            .collect();
        let mut output = seg(PARTITION, 0, 20);
        output.max_timestamp = 2;
        sync.fail_next_db_sync();
        let leader = {
            let (cat, s) = (cat.clone(), failed[0].clone());
            tokio::spawn(async move { cat.register(&[s]).await })
        };
        let held = sync.clone();
        tokio::task::spawn_blocking(move || held.wait_until_held())
            .await
            .unwrap();
        // The leader's commit hangs in its fsync: these write and queue behind it.
        let waiting_register = {
            let (cat, s) = (cat.clone(), failed[1].clone());
            tokio::spawn(async move { cat.register(&[s]).await })
        };
        let waiting_commit = {
            let (cat, id, o) = (cat.clone(), lease.lease_id, output.clone());
            tokio::spawn(async move { cat.commit_compaction(id, &[o]).await })
        };
        let waiting_swap = {
            let cat = cat.clone();
            tokio::spawn(async move { cat.swap_iceberg_table(Some(1), &pointer(2)).await })
        };
        let (queued, reader) = (&[failed[1].id, output.id], &cat);
        wait_until("the queued changes are written", || async move {
            reader.lookup(queued).await.unwrap().len() == 2
                && reader.iceberg_tables().await.unwrap() == vec![pointer(2)]
        })
        .await;
        assert!(!waiting_register.is_finished() && !waiting_commit.is_finished());
        assert!(!waiting_swap.is_finished());
        sync.release();
        assert_refused("the leading registration", leader.await.unwrap());
        assert_refused(
            "a registration in the group",
            waiting_register.await.unwrap(),
        );
        assert_refused(
            "a compaction commit in the group",
            waiting_commit.await.unwrap(),
        );
        assert_refused("a pointer swap in the group", waiting_swap.await.unwrap());

        // Every later change fails, whether it changes something or not.
        assert_refused(
            "a new registration",
            cat.register(&[seg(PARTITION, 5, 1)]).await,
        );
        assert_refused(
            "an acknowledged registration again",
            cat.register(std::slice::from_ref(&acked)).await,
        );
        assert_refused(
            "the compaction commit again",
            cat.commit_compaction(lease.lease_id, std::slice::from_ref(&output))
                .await,
        );
        assert_refused(
            "the pointer swap again",
            cat.swap_iceberg_table(Some(1), &pointer(2)).await,
        );
        assert_refused("a heartbeat", cat.heartbeat(&heartbeat()).await);
        assert_refused("an explicit sync", cat.sync().await);
        // Nor is anything answered from the trees in memory, which the disk may not hold.
        assert_refused(
            "a listing",
            cat.list(&SegmentQuery {
                tenant: TENANT.into(),
                ..SegmentQuery::default()
            })
            .await,
        );
        assert!(cat.failure().is_some_and(|f| f.contains("injected EIO")));
        assert_eq!(
            sync.syncs_after_failure(),
            0,
            "an fsync tried after the failure"
        );
        Story {
            acked,
            inputs,
            lease,
            failed,
            output,
        }
    };

    // A power cut: the disk holds the last good commit, none of the failed changes.
    {
        let cat = SledCatalog::open(&power_cut).unwrap();
        let listed = active(&cat).await;
        assert_eq!(
            listed,
            sorted(
                [story.acked.id]
                    .into_iter()
                    .chain(story.inputs.iter().map(|s| s.id))
            ),
            "after the power cut: exactly what was acknowledged"
        );
        assert_eq!(cat.iceberg_tables().await.unwrap(), vec![pointer(1)]);
        check_and_retry(&cat, &story).await;
    }
    // A restart without a power cut: the directory as sled left it when the handle closed.
    let cat = SledCatalog::open(&path).unwrap();
    check_and_retry(&cat, &story).await;
}
