//! Compaction end to end inside one process: real Parquet files in a file:// lake, the sled
//! index, the streaming k-way merge, the commit, and the sweeper deleting the inputs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use uuid::Uuid;
use weir_catalog::layout::{self, Partition, SegmentKey};
use weir_catalog::{Catalog, RetentionPolicy, SegmentQuery, SegmentRecord, SegmentState};
use weir_control_plane::SledCatalog;
use weir_pipelines::compactor::{Compactor, CompactorConfig};
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::parquet_writer::{encode_parquet, ParquetConfig};
use weir_pipelines::sweeper::{Sweeper, SweeperConfig};
use weir_schema::Signal;

mod common;
use common::log_batch;

const BASE: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const PARTITION: &str = "dt=2026-01-01/hour=00";

fn partition() -> Partition {
    Partition::parse(PARTITION).unwrap()
}

/// A small pseudo-random generator (deterministic, no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn batch(rng: &mut Lcg, file: usize, rows: usize) -> RecordBatch {
    let services = ["api", "web", "db", "queue"];
    log_batch((0..rows).map(|i| {
        let svc = services[(rng.next() % 4) as usize];
        let ts = BASE + (rng.next() % 3_000_000_000_000) as i64;
        (ts, format!("file {file} row {i}"), svc)
    }))
}

async fn write_segment(lake: &Lake, tenant: &str, rows: RecordBatch) -> SegmentRecord {
    write_segment_with(lake, &ParquetConfig::default(), tenant, rows).await
}

/// A log segment of `rows` written with these Parquet settings (row groups, mostly).
async fn write_segment_with(
    lake: &Lake,
    cfg: &ParquetConfig,
    tenant: &str,
    rows: RecordBatch,
) -> SegmentRecord {
    let (bytes, summary) = encode_parquet(cfg, Signal::Logs, tenant, &[rows], &[]).unwrap();
    let key = SegmentKey::new(tenant, Signal::Logs, partition(), Uuid::now_v7());
    let size = bytes.len() as u64;
    lake.put(&key.to_string(), bytes).await.unwrap();
    layout::segment_record(&key, summary.into_facts(size), "test", 0)
}

fn rows_of(bytes: bytes::Bytes) -> Vec<(String, i64, String)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let svc = b
            .column_by_name("service_name")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let ts = b
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>()
            .clone();
        let body = b.column_by_name("body").unwrap().as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            out.push((
                svc.value(i).to_string(),
                ts.value(i),
                body.value(i).to_string(),
            ));
        }
    }
    out
}

/// `files` random files of `rows` rows each, written to the lake and registered.
async fn registered_files(
    lake: &Lake,
    catalog: &dyn Catalog,
    seed: u64,
    files: usize,
    rows: usize,
) -> Vec<SegmentRecord> {
    let mut rng = Lcg(seed);
    let mut segs = Vec::new();
    for file in 0..files {
        segs.push(write_segment(lake, "acme", batch(&mut rng, file, rows)).await);
    }
    catalog.register(&segs).await.unwrap();
    segs
}

/// A file:// lake and a sled index in a temporary directory.
fn lake_and_index() -> (tempfile::TempDir, Lake, Arc<dyn Catalog>) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &format!("file://{}", dir.path().join("lake").display()),
        &HashMap::new(),
    )
    .unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(SledCatalog::open(&dir.path().join("index")).unwrap());
    (dir, lake, catalog)
}

fn config(read_batch_rows: usize) -> CompactorConfig {
    CompactorConfig {
        agent_id: "compactor".into(),
        target_bytes: 64 << 20,
        lease_ttl: Duration::from_secs(60),
        interval: Duration::from_millis(100),
        min_age: Duration::ZERO,
        min_inputs: 2,
        parquet: ParquetConfig {
            zstd_level: 3,
            // Several row groups per file, so the merge crosses row-group boundaries.
            row_group_rows: 700,
        },
        read_batch_rows,
        memory_bytes: 64 << 20,
        max_inputs: 256,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_every_row_and_the_sort_order_then_the_sweeper_deletes_inputs() {
    let (_dir, lake, catalog) = lake_and_index();
    let mut rng = Lcg(42);
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for (file, rows) in [1500usize, 1, 2600, 333, 900].into_iter().enumerate() {
        let seg = write_segment(&lake, "acme", batch(&mut rng, file, rows)).await;
        expected.extend(rows_of(lake.get(&seg.object_key).await.unwrap()));
        inputs.push(seg);
    }
    catalog.register(&inputs).await.unwrap();

    // A small read batch makes inputs run out of batches at different times.
    let compactor = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), config(256));
    let done = compactor.run_once().await.unwrap().expect("a plan");
    assert_eq!(done.inputs.len(), inputs.len());
    assert!(
        compactor.run_once().await.unwrap().is_none(),
        "one output left nothing to merge"
    );

    let out = &done.output;
    assert_eq!(out.row_count, expected.len() as u64);
    let merged = rows_of(lake.get(&out.object_key).await.unwrap());
    // Sorted by (service_name, timestamp) like every flushed file.
    for w in merged.windows(2) {
        assert!(
            (&w[0].0, w[0].1) <= (&w[1].0, w[1].1),
            "out of order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let (mut a, mut b) = (merged.clone(), expected.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "rows lost, doubled or changed");

    // The index lists only the output; the inputs are compacted and replaced by it.
    let page = catalog
        .list(&SegmentQuery {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![out.id]
    );
    assert_eq!(
        out.min_timestamp,
        inputs.iter().map(|s| s.min_timestamp).min().unwrap()
    );
    assert_eq!(
        out.max_timestamp,
        inputs.iter().map(|s| s.max_timestamp).max().unwrap()
    );
    for s in catalog.lookup(&done.inputs).await.unwrap() {
        assert_eq!(s.state, SegmentState::Compacted);
        assert_eq!(s.replaced_by, Some(out.id));
    }

    // Inputs' objects go only after the grace period.
    let sweeper = |grace| {
        Sweeper::new(
            lake.clone(),
            catalog.clone(),
            Metrics::new(),
            SweeperConfig {
                policy: RetentionPolicy::default(),
                interval: Duration::from_secs(60),
                grace,
                dry_run: false,
                gate: None,
            },
        )
    };
    let report = sweeper(Duration::from_secs(3600))
        .sweep(weir_catalog::now_ns())
        .await
        .unwrap();
    assert!(report.deleted_objects.is_empty());
    assert_eq!(lake.list("").await.unwrap().len(), inputs.len() + 1);
    let report = sweeper(Duration::ZERO)
        .sweep(weir_catalog::now_ns())
        .await
        .unwrap();
    assert_eq!(report.deleted_objects.len(), inputs.len());
    let left: Vec<String> = lake
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, vec![out.object_key.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compactors_never_commit_the_same_inputs() {
    let (_dir, lake, catalog) = lake_and_index();
    let segs = registered_files(&lake, catalog.as_ref(), 7, 12, 200).await;
    let total: u64 = segs.iter().map(|s| s.row_count).sum();
    let mut cfg = config(8192);
    // Each plan takes about four of the files.
    cfg.target_bytes = segs.iter().take(4).map(|s| s.bytes).sum::<u64>() + 1;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let c = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), cfg.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                while let Ok(Some(d)) = c.run_once().await {
                    done.push(d);
                }
                done
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for t in tasks {
        for d in t.await.unwrap() {
            for id in d.inputs {
                assert!(seen.insert(id), "input {id} committed twice");
            }
        }
    }
    let active = catalog
        .list(&SegmentQuery {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .segments;
    assert_eq!(active.iter().map(|s| s.row_count).sum::<u64>(), total);
    let mut rows = 0;
    for s in &active {
        rows += rows_of(lake.get(&s.object_key).await.unwrap()).len() as u64;
    }
    assert_eq!(
        rows, total,
        "the active files do not hold every row exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_what_a_dead_compactor_uploaded() {
    let (_dir, lake, catalog) = lake_and_index();
    registered_files(&lake, catalog.as_ref(), 3, 3, 100).await;
    // A compactor leases, uploads its output, and dies before committing.
    let lease = catalog
        .lease_compaction(&weir_catalog::LeaseRequest {
            agent_id: "doomed".into(),
            ttl_ms: 1000,
            target_bytes: 64 << 20,
            min_inputs: 2,
            max_inputs: 256,
            min_age_ms: 0,
            tenant: None,
            schema_version: None,
        })
        .await
        .unwrap()
        .unwrap();
    lake.put(&lease.output_key().unwrap(), b"half a merge".to_vec())
        .await
        .unwrap();
    let sweeper = Sweeper::new(
        lake.clone(),
        catalog.clone(),
        Metrics::new(),
        SweeperConfig {
            policy: RetentionPolicy::default(),
            interval: Duration::from_secs(60),
            grace: Duration::ZERO,
            dry_run: false,
            gate: None,
        },
    );
    // While the lease lives, the output is left alone.
    let report = sweeper.sweep(weir_catalog::now_ns()).await.unwrap();
    assert!(report.abandoned_outputs.is_empty());
    assert!(lake.exists(&lease.output_key().unwrap()).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = sweeper.sweep(weir_catalog::now_ns()).await.unwrap();
    assert_eq!(report.abandoned_outputs, vec![lease.output_key().unwrap()]);
    assert!(!lake.exists(&lease.output_key().unwrap()).await.unwrap());
    // The inputs are untouched and a live compactor merges them.
    let c = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), config(8192));
    let done = c.run_once().await.unwrap().unwrap();
    assert_eq!(done.inputs.len(), 3);
    assert_eq!(done.output.row_count, 300);
}

/// What the tracking store saw of multipart uploads.
#[derive(Debug, Default)]
struct Uploads {
    parts: std::sync::atomic::AtomicUsize,
    aborted: std::sync::atomic::AtomicBool,
    completed: std::sync::atomic::AtomicBool,
}

/// A store that records multipart uploads and, once a part went up, fails every ranged read
/// (the compactor's input reads): a compaction that dies half-way through its output.
#[derive(Debug)]
struct FailingReads {
    inner: Arc<dyn object_store::ObjectStore>,
    uploads: Arc<Uploads>,
}

impl std::fmt::Display for FailingReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailingReads({})", self.inner)
    }
}

#[derive(Debug)]
struct TrackedUpload {
    inner: Box<dyn object_store::MultipartUpload>,
    uploads: Arc<Uploads>,
}

#[async_trait::async_trait]
impl object_store::MultipartUpload for TrackedUpload {
    fn put_part(&mut self, data: object_store::PutPayload) -> object_store::UploadPart {
        self.uploads
            .parts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
        self.uploads
            .completed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.uploads
            .aborted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for FailingReads {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(TrackedUpload {
            inner,
            uploads: self.uploads.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if options.range.is_some()
            && self.uploads.parts.load(std::sync::atomic::Ordering::SeqCst) > 0
        {
            return Err(object_store::Error::Generic {
                store: "failing-reads",
                source: "injected: input read failed".into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &object_store::path::Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        if self.uploads.parts.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Err(object_store::Error::Generic {
                store: "failing-reads",
                source: "injected: input read failed".into(),
            });
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Rows with incompressible bodies, so a few files make an output past the multipart size.
fn bulky(rng: &mut Lcg, file: usize, rows: usize) -> RecordBatch {
    log_batch((0..rows).map(|i| {
        let ts = BASE + (rng.next() % 3_000_000_000_000) as i64;
        let body: String = (0..2048)
            .map(|_| char::from(b'!' + (rng.next() % 94) as u8))
            .collect();
        (ts, format!("file {file} row {i} {body}"), "api")
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_that_fails_mid_output_aborts_its_multipart_upload() {
    let dir = tempfile::tempdir().unwrap();
    let uploads = Arc::new(Uploads::default());
    let tracked = uploads.clone();
    let lake = Lake::open("memory://", &HashMap::new())
        .unwrap()
        .map_store(move |inner| {
            Arc::new(FailingReads {
                inner,
                uploads: tracked,
            })
        });
    let catalog: Arc<dyn Catalog> = Arc::new(SledCatalog::open(&dir.path().join("index")).unwrap());
    let mut rng = Lcg(42);
    let mut segs = Vec::new();
    for file in 0..4 {
        // Small row groups, so inputs are still being read when the output's parts go up.
        let small_groups = ParquetConfig {
            row_group_rows: 300,
            ..ParquetConfig::default()
        };
        let rows = bulky(&mut rng, file, 3000);
        segs.push(write_segment_with(&lake, &small_groups, "acme", rows).await);
    }
    catalog.register(&segs).await.unwrap();
    let compactor = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), config(256));
    let err = compactor.run_once().await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let ord = std::sync::atomic::Ordering::SeqCst;
    assert!(uploads.parts.load(ord) > 0, "the output went up in parts");
    assert!(!uploads.completed.load(ord));
    assert!(
        uploads.aborted.load(ord),
        "the half-written upload was aborted"
    );
    // Nothing but the inputs is in the lake, and they are still the index's.
    assert_eq!(lake.list("").await.unwrap().len(), segs.len());
    let page = catalog
        .list(&SegmentQuery {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.segments.len(), segs.len());
}

/// A file as the flusher wrote it before the lake carried Iceberg field ids: the lake schema
/// with no ids.
async fn write_segment_without_field_ids(lake: &Lake, rows: RecordBatch) -> SegmentRecord {
    let mut bytes = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, Signal::Logs.schema(), None).unwrap();
    w.write(&rows).unwrap();
    w.close().unwrap();
    let (_, summary) = encode_parquet(
        &ParquetConfig::default(),
        Signal::Logs,
        "acme",
        std::slice::from_ref(&rows),
        &[],
    )
    .unwrap();
    let key = SegmentKey::new("acme", Signal::Logs, partition(), Uuid::now_v7());
    let size = bytes.len() as u64;
    lake.put(&key.to_string(), bytes).await.unwrap();
    layout::segment_record(&key, summary.into_facts(size), "test", 0)
}

/// The field ids of a Parquet file's columns, leaves and groups, by path.
fn field_ids(bytes: bytes::Bytes) -> HashMap<String, i32> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let mut out = HashMap::new();
    fn walk(t: &parquet::schema::types::Type, path: String, out: &mut HashMap<String, i32>) {
        let info = t.get_basic_info();
        if info.has_id() {
            out.insert(path.clone(), info.id());
        }
        if t.is_group() {
            for f in t.get_fields() {
                let p = if path.is_empty() {
                    f.name().to_string()
                } else {
                    format!("{path}.{}", f.name())
                };
                walk(f, p, out);
            }
        }
    }
    walk(
        reader.metadata().file_metadata().schema(),
        String::new(),
        &mut out,
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_without_field_ids_merge_with_files_that_have_them() {
    let (_dir, lake, catalog) = lake_and_index();
    let mut rng = Lcg(7);
    let new = write_segment(&lake, "acme", batch(&mut rng, 0, 700)).await;
    let new_bytes = lake.get(&new.object_key).await.unwrap();
    let ids = field_ids(new_bytes.clone());
    assert_eq!(ids.get("timestamp"), Some(&1), "{ids:?}");
    assert_eq!(ids.get("attributes.key_value.value"), Some(&19), "{ids:?}");
    // Rows of one service in time order: a sorted file.
    let old_rows = log_batch((0..400).map(|i| (BASE + i * 1000, format!("old {i}"), "api")));
    let old = write_segment_without_field_ids(&lake, old_rows).await;
    assert!(field_ids(lake.get(&old.object_key).await.unwrap()).is_empty());
    let mut expected = rows_of(new_bytes);
    expected.extend(rows_of(lake.get(&old.object_key).await.unwrap()));
    catalog.register(&[new, old]).await.unwrap();

    let compactor = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), config(128));
    let done = compactor.run_once().await.unwrap().expect("a plan");
    let out = lake.get(&done.output.object_key).await.unwrap();
    let mut merged = rows_of(out.clone());
    merged.sort();
    expected.sort();
    assert_eq!(merged, expected);
    assert_eq!(
        field_ids(out),
        ids,
        "the output carries the lake's field ids"
    );
}

/// The merge's memory follows `memory_bytes`, not the plan: many inputs read with a small
/// budget hold their decoded batches within half of it, and the output is still every row in
/// order. The same plan with the default read size holds several times more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_holds_its_inputs_within_the_memory_budget() {
    const FILES: usize = 48;
    const ROWS: usize = 3_000;
    let budget = 8 << 20;
    let mut peaks = Vec::new();
    for memory_bytes in [budget, 1 << 30] {
        let (_dir, lake, catalog) = lake_and_index();
        let segs = registered_files(&lake, catalog.as_ref(), 7, FILES, ROWS).await;
        let mut expected = Vec::new();
        for seg in &segs {
            expected.extend(rows_of(lake.get(&seg.object_key).await.unwrap()));
        }
        let cfg = CompactorConfig {
            memory_bytes,
            ..config(8192)
        };
        let compactor = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), cfg);
        let done = compactor.run_once().await.unwrap().expect("a plan");
        assert_eq!(done.inputs.len(), FILES);
        let merged = rows_of(lake.get(&done.output.object_key).await.unwrap());
        for w in merged.windows(2) {
            assert!((&w[0].0, w[0].1) <= (&w[1].0, w[1].1), "out of order");
        }
        let (mut a, mut b) = (merged, expected);
        a.sort();
        b.sort();
        assert_eq!(a, b, "rows lost, doubled or changed");
        peaks.push(done.peak_input_bytes);
    }
    let (bounded, unbounded) = (peaks[0], peaks[1]);
    println!("peak input bytes: {bounded} with a {budget}-byte budget, {unbounded} unbounded");
    assert!(
        bounded <= budget / 2,
        "{FILES} inputs held {bounded} bytes, over half of the {budget}-byte budget"
    );
    assert!(
        unbounded > 3 * bounded,
        "the default read size held {unbounded} bytes, bounded {bounded}: the test no longer tells them apart"
    );
}

/// Wide rows cluster (files are sorted by service first), so every input reaches them at about
/// the same time: batch sizes follow the widest page of each file, not its average row. Here
/// a quarter of each file's rows are 4 KB wide, in their own row group; sized from the file
/// average, the inputs' batches of wide rows would together take over three times the share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_of_a_file_size_its_batches_not_its_average_row() {
    const FILES: usize = 16;
    let budget = 16 << 20;
    let (_dir, lake, catalog) = lake_and_index();
    let wide = "w".repeat(4000);
    let mut segs = Vec::new();
    for file in 0..FILES {
        let rows = log_batch((0..2000).map(|i| {
            let ts = BASE + (i * FILES + file) as i64;
            if i < 1500 {
                (ts, format!("narrow {file} {i}"), "api")
            } else {
                (ts, format!("{wide} {file} {i}"), "zz")
            }
        }));
        let cfg = ParquetConfig {
            zstd_level: 3,
            row_group_rows: 500,
        };
        segs.push(write_segment_with(&lake, &cfg, "acme", rows).await);
    }
    catalog.register(&segs).await.unwrap();
    let cfg = CompactorConfig {
        memory_bytes: budget,
        ..config(8192)
    };
    let compactor = Compactor::new(lake.clone(), catalog.clone(), Metrics::new(), cfg);
    let done = compactor.run_once().await.unwrap().expect("a plan");
    assert_eq!(done.output.row_count, (FILES * 2000) as u64);
    println!(
        "peak input bytes: {} with a {budget}-byte budget",
        done.peak_input_bytes
    );
    assert!(
        done.peak_input_bytes <= budget / 2,
        "{FILES} inputs held {} bytes, over half of the {budget}-byte budget",
        done.peak_input_bytes
    );
}
