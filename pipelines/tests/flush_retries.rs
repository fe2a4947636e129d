//! Exactly once across flush retries: a lake that fails an upload after storing it (an
//! ambiguous error: the object exists although the PUT "failed"), or hangs mid-upload until the
//! agent dies, or fails the existence check of the restart's journal replay, must still end
//! with every row in exactly one uploaded object, and that object in the outbox (what the
//! index gets) once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weir_catalog::SegmentRecord;
use weir_pipelines::buffer::{Buffer, Ledger, SledBuffer, SledBufferConfig};
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::{Batch, Signal};

mod common;
use common::{flusher, log_batch};

/// A store that misbehaves on purpose: `put_then_fail` uploads then answers an error,
/// `put_then_hang` uploads then never answers, `hang_before_put` never answers and keeps the
/// upload in `held` (to land it later, as a PUT that outlives the agent does),
/// `head_fail` fails existence checks.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    put_then_fail: AtomicUsize,
    put_then_hang: AtomicUsize,
    hang_before_put: AtomicUsize,
    held: std::sync::Mutex<Option<(ObjectPath, PutPayload)>>,
    head_fail: AtomicUsize,
}

impl Faulty {
    fn new(inner: Arc<dyn ObjectStore>) -> Faulty {
        Faulty {
            inner,
            put_then_fail: AtomicUsize::new(0),
            put_then_hang: AtomicUsize::new(0),
            hang_before_put: AtomicUsize::new(0),
            held: std::sync::Mutex::new(None),
            head_fail: AtomicUsize::new(0),
        }
    }
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("injected: {what}").into(),
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if take(&self.hang_before_put) {
            *self.held.lock().unwrap() = Some((location.clone(), payload.clone()));
            futures::future::pending::<()>().await;
        }
        let done = self.inner.put_opts(location, payload, opts).await?;
        if take(&self.put_then_hang) {
            futures::future::pending::<()>().await;
        }
        if take(&self.put_then_fail) {
            return Err(injected("connection reset after the upload"));
        }
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head && take(&self.head_fail) {
            return Err(injected("HEAD failed"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn logs(first: usize, rows: usize) -> RecordBatch {
    let base = 1_700_000_000_000_000_000i64;
    log_batch(
        (first..first + rows).map(|i| (base + i as i64 * 1_000, format!("record {i}"), "api")),
    )
}

fn open_buffer(dir: &std::path::Path) -> Arc<SledBuffer> {
    Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: dir.join("buffer"),
            max_bytes: 1 << 30,
        })
        .unwrap(),
    )
}

fn append(buffer: &SledBuffer, first: usize, rows: usize) {
    let batch = Batch::new("acme", Signal::Logs, "test", 0, logs(first, rows));
    let entries = batch.split_by_partition().unwrap();
    let seq = buffer.append(&entries).unwrap();
    buffer.sync(seq).unwrap();
}

async fn until_empty(buffer: &SledBuffer, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while buffer.stats().entries > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: the flusher did not flush"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `record N` body in the lake, with how many objects hold it, and the object keys.
async fn lake_rows(store: &Arc<dyn ObjectStore>) -> (HashMap<String, usize>, HashSet<String>) {
    let mut rows = HashMap::new();
    let mut keys = HashSet::new();
    let mut listing = store.list(None);
    while let Some(meta) = listing.next().await {
        let meta = meta.unwrap();
        keys.insert(meta.location.to_string());
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let body = batch.column_by_name("body").unwrap();
            let body = arrow_array::cast::AsArray::as_string::<i32>(body.as_ref());
            for i in 0..batch.num_rows() {
                *rows.entry(body.value(i).to_string()).or_insert(0) += 1;
            }
        }
    }
    (rows, keys)
}

fn outbox(buffer: &SledBuffer) -> Vec<SegmentRecord> {
    buffer
        .ledger_list(Ledger::Outbox)
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).unwrap())
        .collect()
}

fn assert_exactly_once(
    rows: &HashMap<String, usize>,
    keys: &HashSet<String>,
    outboxed: &[SegmentRecord],
    n: usize,
) {
    assert_eq!(rows.len(), n, "every row is in the lake");
    let twice = rows.values().filter(|c| **c > 1).count();
    assert_eq!(twice, 0, "{twice} rows are in more than one object");
    let outboxed_keys: HashSet<String> = outboxed.iter().map(|s| s.object_key.clone()).collect();
    assert_eq!(
        outboxed.len(),
        outboxed_keys.len(),
        "a segment outboxed twice"
    );
    assert_eq!(
        &outboxed_keys, keys,
        "the lake's objects are exactly the outboxed segments"
    );
    assert_eq!(
        outboxed.iter().map(|s| s.row_count).sum::<u64>(),
        n as u64,
        "the index would count every row once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_fails_after_storing_is_retried_under_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open_buffer(dir.path());
    let faulty = Arc::new(Faulty::new(Arc::new(object_store::memory::InMemory::new())));
    faulty.put_then_fail.store(2, Ordering::SeqCst);
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let lake = Lake::open("memory://", &HashMap::new())
        .unwrap()
        .map_store(|_| store.clone());
    append(&buffer, 0, 300);
    let f = flusher(buffer.clone(), lake);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(f.run(shutdown.clone(), Duration::from_secs(10)));
    // Rows arriving while the failed flush waits for its retry go to a later file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while faulty.put_then_fail.load(Ordering::SeqCst) == 2 {
        assert!(Instant::now() < deadline, "the first upload never happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    append(&buffer, 300, 200);
    until_empty(&buffer, "after two ambiguous uploads").await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        faulty.put_then_fail.load(Ordering::SeqCst),
        0,
        "both faults fired"
    );
    let (rows, keys) = lake_rows(&store).await;
    assert_exactly_once(&rows, &keys, &outbox(&buffer), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_hung_upload_commits_the_journaled_object_once() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    {
        let buffer = open_buffer(dir.path());
        append(&buffer, 0, 300);
        let faulty = Arc::new(Faulty::new(inner.clone()));
        faulty.put_then_hang.store(1, Ordering::SeqCst);
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let lake = Lake::open("memory://", &HashMap::new())
            .unwrap()
            .map_store(|_| store.clone());
        let task = tokio::spawn(
            flusher(buffer.clone(), lake).run(CancellationToken::new(), Duration::from_secs(10)),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while faulty.put_then_hang.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The agent dies with the object stored and its commit never made.
        task.abort();
        let _ = task.await;
        assert_eq!(buffer.stats().entries, 1, "the entry waits for its commit");
    }
    // The restart's replay first fails to check the object, then finds it.
    let buffer = open_buffer(dir.path());
    append(&buffer, 300, 100);
    let faulty = Arc::new(Faulty::new(inner.clone()));
    faulty.head_fail.store(1, Ordering::SeqCst);
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let lake = Lake::open("memory://", &HashMap::new())
        .unwrap()
        .map_store(|_| store.clone());
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(flusher(buffer.clone(), lake).run(shutdown.clone(), Duration::from_secs(10)));
    until_empty(&buffer, "after the restart").await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        faulty.head_fail.load(Ordering::SeqCst),
        0,
        "the HEAD fault fired"
    );
    let (rows, keys) = lake_rows(&inner).await;
    assert_exactly_once(&rows, &keys, &outbox(&buffer), 400);
}

/// A flush whose upload hung past the agent's death is dropped at the restart (its object is
/// absent) and its rows flushed again under another id. When the old upload lands afterwards,
/// reconciliation must not register it: the rows would be indexed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_landing_after_its_flush_was_dropped_is_never_registered() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = Arc::new(Faulty::new(inner.clone()));
    {
        let buffer = open_buffer(dir.path());
        append(&buffer, 0, 300);
        faulty.hang_before_put.store(1, Ordering::SeqCst);
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let lake = Lake::open("memory://", &HashMap::new())
            .unwrap()
            .map_store(|_| store.clone());
        let task = tokio::spawn(
            flusher(buffer.clone(), lake).run(CancellationToken::new(), Duration::from_secs(10)),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while faulty.held.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = task.await;
    }
    // The restart drops the journaled flush (no object) and flushes the rows again.
    let buffer = open_buffer(dir.path());
    let lake = Lake::open("memory://", &HashMap::new())
        .unwrap()
        .map_store(|_| inner.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        flusher(buffer.clone(), lake.clone()).run(shutdown.clone(), Duration::from_secs(10)),
    );
    until_empty(&buffer, "after the restart").await;
    shutdown.cancel();
    task.await.unwrap();
    // Now the hung upload lands.
    let (path, payload) = faulty.held.lock().unwrap().take().unwrap();
    inner.put(&path, payload).await.unwrap();
    // Reconciliation over an index that has nothing yet: only the re-flushed object may go
    // to the outbox (it is there already), never the late one.
    let index_dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn weir_catalog::Catalog> =
        Arc::new(weir_control_plane::SledCatalog::open(index_dir.path()).unwrap());
    let buffer_dyn: Arc<dyn Buffer> = buffer.clone();
    let queue = weir_pipelines::outbox::Outbox::new(
        buffer_dyn,
        catalog.clone(),
        Metrics::new(),
        Arc::new(Notify::new()),
    );
    let reconciler = weir_pipelines::reconcile::Reconciler {
        lake,
        catalog,
        outbox: queue,
        agent_id: "weir".into(),
        metrics: Metrics::new(),
        written_before: i64::MAX,
    };
    assert_eq!(
        reconciler.once().await.unwrap(),
        0,
        "the late object was queued"
    );
    let outboxed = outbox(&buffer);
    assert_eq!(outboxed.len(), 1);
    assert_eq!(outboxed[0].row_count, 300);
    assert_ne!(outboxed[0].object_key, path.to_string());
}
