//! Exactly once across faults of the buffer itself (issue #15 item 5), as `flush_retries.rs`
//! checks it across faults of the lake: the buffer's group-commit fsync failing under a write,
//! and each step of the flusher's commit (`Flusher::commit_flush`: outbox the segment, remove
//! its entries, drop its journal record, fsync) failing once. Whatever fails, every
//! acknowledged row ends in exactly one object of the lake, and that object is the one the
//! index lists, once; and a failed fsync acknowledges nothing more until the buffer is
//! reopened (item 3). A reopened buffer holds whatever sled wrote out when it closed, so the
//! power-cut case (the commit after an upload lost with its failed fsync) reopens a copy of
//! the directory taken at the last good fsync instead.
//!
//! The faults go through what production already calls: the buffer's [`FileSync`] (the fsync
//! of sled's files) and the [`Buffer`] trait the flusher holds (a wrapper failing chosen calls
//! once), so the production path carries no test hook.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_catalog::sled_durable::FileSync;
use weir_catalog::{Catalog, SegmentQuery};
use weir_control_plane::SledCatalog;
use weir_pipelines::buffer::{
    AckMode, Buffer, BufferError, BufferStats, Entry, JournalEntry, Ledger, SledBuffer,
    SledBufferConfig,
};
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::outbox::Outbox;
use weir_pipelines::{Batch, Partition, Signal};

mod common;
use common::{flusher, log_batch};

/// Fails the next `fdatasync` of sled's data file once it is armed, as Linux reports a
/// writeback error once (a retry would succeed although the kernel may have dropped pages).
///
/// With a snapshot path set, every successful `fdatasync` of the data file first copies the
/// database's directory there: when a later fsync fails, the copy is what a power cut leaves
/// on disk (the last durable state), whereas the directory itself gets whatever sled writes
/// out later (it flushes everything when its last handle drops).
#[derive(Default)]
struct FaultySync {
    armed: AtomicBool,
    fired: AtomicBool,
    snapshot: Mutex<Option<PathBuf>>,
}

impl FaultySync {
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn snapshot_to(&self, to: PathBuf) {
        *self.snapshot.lock().unwrap() = Some(to);
    }
}

impl FileSync for FaultySync {
    fn sync_data(&self, file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
        if path.ends_with("db") && self.armed.swap(false, Ordering::SeqCst) {
            self.fired.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("injected EIO"));
        }
        file.sync_data()?;
        if path.ends_with("db") {
            if let (Some(to), Some(dir)) = (self.snapshot.lock().unwrap().as_ref(), path.parent()) {
                // Under the commit: sled was just flushed and nothing else writes meanwhile
                // (the flusher is the one writer, and it waits for this commit).
                copy_dir(dir, to)?;
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
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

/// The buffer with faults at the steps of `commit_flush`, each armed for one call:
/// `outbox_put` fails putting the segment in the outbox, `remove` removes half of the entries
/// and fails, `journal_remove` fails dropping the journal record, and `commit_sync` arms
/// `sync` when the segment is outboxed, so the commit's own fsync is the one that fails.
struct Faults {
    inner: Arc<SledBuffer>,
    sync: Arc<FaultySync>,
    outbox_put: AtomicBool,
    remove: AtomicBool,
    journal_remove: AtomicBool,
    commit_sync: AtomicBool,
}

fn take(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::SeqCst)
}

fn injected(what: &str) -> BufferError {
    BufferError::Storage(format!("injected: {what}"))
}

impl Faults {
    fn new(inner: Arc<SledBuffer>, sync: Arc<FaultySync>) -> Faults {
        Faults {
            inner,
            sync,
            outbox_put: AtomicBool::new(false),
            remove: AtomicBool::new(false),
            journal_remove: AtomicBool::new(false),
            commit_sync: AtomicBool::new(false),
        }
    }

    fn all_fired(&self) -> bool {
        !self.outbox_put.load(Ordering::SeqCst)
            && !self.remove.load(Ordering::SeqCst)
            && !self.journal_remove.load(Ordering::SeqCst)
            && !self.commit_sync.load(Ordering::SeqCst)
    }
}

impl Buffer for Faults {
    fn append(&self, batches: &[(Partition, Batch)]) -> Result<u64, BufferError> {
        self.inner.append(batches)
    }

    fn append_with(
        &self,
        batches: &[(Partition, Batch)],
        ledger: Ledger,
        records: &[JournalEntry],
    ) -> Result<Option<u64>, BufferError> {
        self.inner.append_with(batches, ledger, records)
    }

    fn sync(&self, seq: u64) -> Result<(), BufferError> {
        self.inner.sync(seq)
    }

    fn sync_all(&self) -> Result<(), BufferError> {
        self.inner.sync_all()
    }

    fn read(&self, after: Option<u64>, max: usize) -> Result<Vec<Entry>, BufferError> {
        self.inner.read(after, max)
    }

    fn remove(&self, seqs: &[u64]) -> Result<(), BufferError> {
        if take(&self.remove) {
            self.inner.remove(&seqs[..seqs.len() / 2])?;
            return Err(injected("remove failed halfway"));
        }
        self.inner.remove(seqs)
    }

    fn stats(&self) -> BufferStats {
        self.inner.stats()
    }

    fn set_max_bytes(&self, max_bytes: u64) {
        self.inner.set_max_bytes(max_bytes)
    }

    fn corrupt_entries(&self) -> u64 {
        self.inner.corrupt_entries()
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    fn ledger_put(&self, ledger: Ledger, id: &[u8], value: &[u8]) -> Result<(), BufferError> {
        if ledger == Ledger::Outbox {
            if take(&self.outbox_put) {
                return Err(injected("outbox put failed"));
            }
            if take(&self.commit_sync) {
                self.sync.arm();
            }
        }
        self.inner.ledger_put(ledger, id, value)
    }

    fn ledger_remove(&self, ledger: Ledger, id: &[u8]) -> Result<(), BufferError> {
        if ledger == Ledger::FlushJournal && take(&self.journal_remove) {
            return Err(injected("journal remove failed"));
        }
        self.inner.ledger_remove(ledger, id)
    }

    fn ledger_list(&self, ledger: Ledger) -> Result<Vec<JournalEntry>, BufferError> {
        self.inner.ledger_list(ledger)
    }

    fn ledger_len(&self, ledger: Ledger) -> usize {
        self.inner.ledger_len(ledger)
    }
}

fn logs(first: usize, rows: usize) -> RecordBatch {
    let base = 1_700_000_000_000_000_000i64;
    log_batch(
        (first..first + rows).map(|i| (base + i as i64 * 1_000, format!("record {i}"), "api")),
    )
}

fn batch(first: usize, rows: usize) -> Batch {
    Batch::new("acme", Signal::Logs, "test", 0, logs(first, rows))
}

fn config(dir: &std::path::Path) -> SledBufferConfig {
    SledBufferConfig {
        path: dir.join("buffer"),
        max_bytes: 1 << 30,
    }
}

fn faulty_buffer(dir: &std::path::Path) -> (Arc<Faults>, Arc<FaultySync>) {
    let sync = Arc::new(FaultySync::default());
    let inner = Arc::new(SledBuffer::open_with_sync(&config(dir), sync.clone()).unwrap());
    (Arc::new(Faults::new(inner, sync.clone())), sync)
}

fn ingest(buffer: Arc<dyn Buffer>) -> Ingest {
    Ingest::new(
        buffer,
        AckMode::Durable,
        Metrics::new(),
        Arc::new(Notify::new()),
    )
}

fn memory_lake(store: &Arc<dyn ObjectStore>) -> Lake {
    let store = store.clone();
    Lake::open("memory://", &HashMap::new())
        .unwrap()
        .map_store(|_| store)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Flushes everything in `buffer` (a flusher until the buffer and its journal are empty).
async fn flush_all(buffer: Arc<dyn Buffer>, store: &Arc<dyn ObjectStore>, what: &str) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        flusher(buffer.clone(), memory_lake(store)).run(shutdown.clone(), Duration::from_secs(5)),
    );
    wait_until(what, || {
        buffer.stats().entries == 0 && buffer.ledger_len(Ledger::FlushJournal) == 0
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
}

/// Registers the outbox in a fresh sled index, then reads the lake through it (see
/// [`rows_through`]).
async fn rows_through_the_index(
    buffer: Arc<dyn Buffer>,
    store: &Arc<dyn ObjectStore>,
) -> HashMap<String, usize> {
    let index = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(SledCatalog::open(index.path()).unwrap());
    rows_through(buffer, store, &catalog).await
}

/// Registers the outbox in `catalog`, then reads the lake through it: every `record N` body
/// of the objects the index lists, with how many of them hold it. Also checks that nothing
/// was refused, and that the index lists each object once and exactly the lake's objects.
async fn rows_through(
    buffer: Arc<dyn Buffer>,
    store: &Arc<dyn ObjectStore>,
    catalog: &Arc<dyn Catalog>,
) -> HashMap<String, usize> {
    let outbox = Outbox::new(
        buffer.clone(),
        catalog.clone(),
        Metrics::new(),
        Arc::new(Notify::new()),
    );
    outbox.send_once().await.unwrap();
    assert_eq!(outbox.len(), 0, "every outboxed segment registered");
    assert_eq!(
        buffer.ledger_len(Ledger::OutboxRefused),
        0,
        "the index refused a segment"
    );
    let page = catalog
        .list(&SegmentQuery {
            tenant: "acme".into(),
            ..SegmentQuery::default()
        })
        .await
        .unwrap();
    assert!(page.next_cursor.is_none());
    let listed: Vec<String> = page.segments.iter().map(|s| s.object_key.clone()).collect();
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "an object is indexed twice");
    let mut in_lake = HashSet::new();
    let mut listing = store.list(None);
    while let Some(meta) = listing.next().await {
        in_lake.insert(meta.unwrap().location.to_string());
    }
    assert_eq!(
        unique,
        in_lake.iter().collect(),
        "the index lists exactly the lake's objects"
    );
    let mut rows = HashMap::new();
    for segment in &page.segments {
        let path = object_store::path::Path::from(segment.object_key.as_str());
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut n = 0u64;
        for batch in reader {
            let batch = batch.unwrap();
            let body = batch.column_by_name("body").unwrap();
            let body = arrow_array::cast::AsArray::as_string::<i32>(body.as_ref());
            for i in 0..batch.num_rows() {
                *rows.entry(body.value(i).to_string()).or_insert(0) += 1;
            }
            n += batch.num_rows() as u64;
        }
        assert_eq!(n, segment.row_count, "{}: row count", segment.object_key);
    }
    rows
}

fn records(range: std::ops::Range<usize>) -> HashSet<String> {
    range.map(|i| format!("record {i}")).collect()
}

/// `commit_flush` failing once at each of its steps (outbox put, a removal that fails
/// halfway, the journal record's removal) is retried under the same segment: every row once
/// in the lake, the one object indexed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_flush_failing_once_at_each_step_ends_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _sync) = faulty_buffer(dir.path());
    let writes = ingest(buffer.clone());
    for first in [0, 100, 200] {
        writes.write(batch(first, 100), 0).unwrap();
    }
    for flag in [&buffer.outbox_put, &buffer.remove, &buffer.journal_remove] {
        flag.store(true, Ordering::SeqCst);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    flush_all(buffer.clone(), &store, "a flush through three faults").await;
    assert!(buffer.all_fired(), "every fault fired");
    assert_eq!(buffer.failure(), None, "no fsync failed");
    let rows = rows_through_the_index(buffer.clone(), &store).await;
    assert_eq!(
        rows.keys().cloned().collect::<HashSet<_>>(),
        records(0..300)
    );
    assert!(rows.values().all(|&n| n == 1), "a row is in two objects");
}

/// The fsync of `commit_flush` fails: the buffer acknowledges no write from then on (the
/// flusher's retries fail too), and a restart (a reopened buffer) finishes the flush from the
/// journal or the committed state, whichever reached the disk: every acknowledged row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_in_commit_flush_stops_acks_until_reopened_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    {
        let (buffer, sync) = faulty_buffer(dir.path());
        let writes = ingest(buffer.clone());
        writes.write(batch(0, 300), 0).unwrap();
        buffer.commit_sync.store(true, Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            flusher(buffer.clone(), memory_lake(&store))
                .run(shutdown.clone(), Duration::from_secs(2)),
        );
        wait_until("the commit's fsync fails", || buffer.failure().is_some()).await;
        assert!(sync.fired.load(Ordering::SeqCst));
        // Nothing is acknowledged any more.
        match writes.write(batch(1_000, 10), 0) {
            Err(IngestError::Storage(BufferError::SyncFailed(reason))) => {
                assert!(reason.contains("injected EIO"), "{reason}")
            }
            other => panic!("a write after a failed fsync: want SyncFailed, got {other:?}"),
        }
        shutdown.cancel();
        task.await.unwrap();
        assert!(
            buffer.failure().is_some(),
            "only a reopen clears the failure"
        );
    }
    // The restart: the buffer reopened on what is on disk.
    let buffer: Arc<dyn Buffer> = Arc::new(SledBuffer::open(&config(dir.path())).unwrap());
    assert_eq!(buffer.failure(), None);
    ingest(buffer.clone()).write(batch(300, 100), 0).unwrap();
    flush_all(buffer.clone(), &store, "the flush after the restart").await;
    let rows = rows_through_the_index(buffer, &store).await;
    assert_eq!(
        rows.keys().cloned().collect::<HashSet<_>>(),
        records(0..400)
    );
    assert!(rows.values().all(|&n| n == 1), "a row is in two objects");
}

/// The fsync of `commit_flush` fails after the upload, and a power cut then loses the
/// commit: the buffer comes back as it was at its last good fsync (the journal record and the
/// entries back, nothing in the outbox), while the object is in the lake and, when
/// `registered_before_the_cut`, already in the index (the outbox sent what the failed commit
/// left in memory). The restart's recovery commits the journaled segment again under the same
/// id, so the registration is idempotent: every row once, no second object, nothing lost.
async fn a_commit_lost_in_a_power_cut_after_its_upload(registered_before_the_cut: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let index = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(SledCatalog::open(index.path()).unwrap());
    let on_disk = dir.path().join("after-the-power-cut");
    let uploaded = {
        let (buffer, sync) = faulty_buffer(dir.path());
        let writes = ingest(buffer.clone());
        writes.write(batch(0, 300), 0).unwrap();
        // From here on each good fsync leaves its copy: the last one, the journal record's,
        // is what the disk holds when the commit's fsync fails.
        sync.snapshot_to(on_disk.clone());
        buffer.commit_sync.store(true, Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            flusher(buffer.clone(), memory_lake(&store))
                .run(shutdown.clone(), Duration::from_secs(2)),
        );
        wait_until("the commit's fsync fails", || buffer.failure().is_some()).await;
        assert!(sync.fired.load(Ordering::SeqCst));
        shutdown.cancel();
        task.await.unwrap();
        let objects: Vec<String> = store
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        assert_eq!(objects.len(), 1, "one object uploaded: {objects:?}");
        // In memory the commit went through.
        assert_eq!(buffer.ledger_len(Ledger::Outbox), 1);
        assert_eq!(buffer.ledger_len(Ledger::FlushJournal), 0);
        if registered_before_the_cut {
            let outbox = Outbox::new(
                buffer.clone(),
                catalog.clone(),
                Metrics::new(),
                Arc::new(Notify::new()),
            );
            // Registered, but the failed buffer cannot drop the outbox record.
            match outbox.send_once().await {
                Err(weir_catalog::CatalogError::Storage(reason)) => {
                    assert!(reason.contains("injected EIO"), "{reason}")
                }
                other => panic!("want the buffer's failure, got {other:?}"),
            }
            let listed = catalog
                .list(&SegmentQuery {
                    tenant: "acme".into(),
                    ..SegmentQuery::default()
                })
                .await
                .unwrap();
            let keys: Vec<&str> = listed
                .segments
                .iter()
                .map(|s| s.object_key.as_str())
                .collect();
            assert_eq!(keys, [objects[0].as_str()], "registered before the cut");
        }
        objects[0].clone()
    };
    // The power cut: the buffer reopened on what its last good fsync made durable.
    let buffer: Arc<dyn Buffer> = Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: on_disk,
            max_bytes: 1 << 30,
        })
        .unwrap(),
    );
    assert_eq!(buffer.ledger_len(Ledger::Outbox), 0, "the commit is lost");
    let journal = buffer.ledger_list(Ledger::FlushJournal).unwrap();
    assert_eq!(journal.len(), 1, "the journal record is back");
    let id = uuid::Uuid::from_slice(&journal[0].0).unwrap();
    assert!(uploaded.ends_with(&format!("{id}.parquet")), "{uploaded}");
    let back: usize = buffer
        .read(None, 1_000)
        .unwrap()
        .iter()
        .map(|e| e.batch.records.num_rows())
        .sum();
    assert_eq!(back, 300, "the flushed entries are back");
    ingest(buffer.clone()).write(batch(300, 100), 0).unwrap();
    flush_all(buffer.clone(), &store, "the flush after the power cut").await;
    let rows = rows_through(buffer, &store, &catalog).await;
    assert_eq!(
        rows.keys().cloned().collect::<HashSet<_>>(),
        records(0..400)
    );
    assert!(rows.values().all(|&n| n == 1), "a row is in two objects");
    let listed = catalog
        .lookup(&[id])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.object_key)
        .collect::<Vec<_>>();
    assert_eq!(
        listed,
        [uploaded],
        "the uploaded object under its journaled id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_a_power_cut_after_upload_and_registration_ends_exactly_once() {
    a_commit_lost_in_a_power_cut_after_its_upload(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_a_power_cut_after_upload_ends_exactly_once() {
    a_commit_lost_in_a_power_cut_after_its_upload(false).await;
}

/// The group-commit fsync under a write fails: that write is not acknowledged, nor is any
/// later one until the buffer is reopened; after it, every acknowledged row is in the lake
/// once. The failed write's rows may or may not have reached the disk (they were not
/// acknowledged, so a client retries them), but never twice; the refused later write's are
/// not there at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_under_a_write_fails_it_and_later_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (buffer, sync) = faulty_buffer(dir.path());
        let writes = ingest(buffer.clone());
        writes.write(batch(0, 100), 0).unwrap();
        sync.arm();
        let failed = writes.write(batch(100, 100), 0);
        assert!(
            matches!(
                failed,
                Err(IngestError::Storage(BufferError::SyncFailed(_)))
            ),
            "{failed:?}"
        );
        let later = writes.write(batch(200, 100), 0);
        assert!(
            matches!(later, Err(IngestError::Storage(BufferError::SyncFailed(_)))),
            "{later:?}"
        );
        assert!(buffer.failure().is_some_and(|f| f.contains("injected EIO")));
    }
    let buffer: Arc<dyn Buffer> = Arc::new(SledBuffer::open(&config(dir.path())).unwrap());
    ingest(buffer.clone()).write(batch(300, 100), 0).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    flush_all(buffer.clone(), &store, "the flush after the reopen").await;
    let rows = rows_through_the_index(buffer, &store).await;
    let got: HashSet<String> = rows.keys().cloned().collect();
    let acked: HashSet<String> = records(0..100).union(&records(300..400)).cloned().collect();
    assert!(got.is_superset(&acked), "an acknowledged row is missing");
    assert!(
        got.is_subset(&acked.union(&records(100..200)).cloned().collect()),
        "a row of the refused write is in the lake"
    );
    assert!(rows.values().all(|&n| n == 1), "a row is in two objects");
}
