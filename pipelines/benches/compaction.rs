//! Compaction: the streaming k-way merge against the naive way, on 8 sorted logs files of
//! 20,000 rows (five services, interleaved timestamps) in an in-memory object store:
//! - `read_concat_sort_encode` (baseline): read every input whole, concatenate, sort, encode;
//! - `kway_merge`: `Compactor::run_once` (lease, streaming merge, upload, commit) on a sled
//!   index.
//!
//! Throughput is reported in rows; compare `kway_merge` with the baseline as a ratio. The merge
//! also bounds memory to about one read batch per input plus the writer's row group, where the
//! baseline holds every input and the sorted copy at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use uuid::Uuid;
use weir_catalog::layout::{self, Partition, SegmentKey};
use weir_catalog::{Catalog, SegmentRecord};
use weir_control_plane::SledCatalog;
use weir_pipelines::compactor::{Compactor, CompactorConfig};
use weir_pipelines::lake::Lake;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::parquet_writer::{encode_parquet, ParquetConfig};
use weir_pipelines::Signal;

const FILES: usize = 8;
const ROWS: usize = 20_000;
const PARTITION: &str = "dt=2026-01-01/hour=00";

fn file(n: usize) -> RecordBatch {
    let services = ["api", "auth", "db", "queue", "web"];
    let mut b = LogsBuilder::with_capacity(ROWS);
    for i in 0..ROWS {
        let ts = 1_767_225_600_000_000_000 + (i * FILES + n) as i64 * 1_000;
        let body = format!("request {i} from file {n} took {} ms", i % 997);
        b.append(
            &LogFields {
                timestamp: ts,
                observed: ts,
                severity_number: 9,
                body: Some(&body),
                service_name: Some(services[(i + n) % services.len()]),
                ..Default::default()
            },
            None,
            0,
            |_| {},
            |_| {},
        );
    }
    b.finish().expect("batch")
}

fn setup(rt: &tokio::runtime::Runtime) -> (Lake, Vec<SegmentRecord>) {
    let lake = Lake::open("memory://", &HashMap::new()).expect("lake");
    let mut segs = Vec::new();
    for n in 0..FILES {
        let (bytes, s) = encode_parquet(
            &ParquetConfig::default(),
            Signal::Logs,
            "bench",
            &[file(n)],
            &[],
        )
        .expect("encode");
        let partition = Partition::parse(PARTITION).expect("partition");
        let key = SegmentKey::new("bench", Signal::Logs, partition, Uuid::now_v7());
        let size = bytes.len() as u64;
        rt.block_on(lake.put(&key.to_string(), bytes)).expect("put");
        segs.push(layout::segment_record(&key, s.into_facts(size), "bench", 0));
    }
    (lake, segs)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (lake, segs) = setup(&rt);
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10);
    g.throughput(Throughput::Elements((FILES * ROWS) as u64));

    g.bench_function("read_concat_sort_encode", |b| {
        b.iter(|| {
            let mut batches = Vec::new();
            for s in &segs {
                let bytes = rt.block_on(lake.get(&s.object_key)).expect("get");
                // As the compactor reads: the lake schema, whatever field ids the file carries.
                let options = ArrowReaderOptions::new().with_schema(Signal::Logs.schema());
                let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
                    .expect("reader")
                    .build()
                    .expect("build");
                for batch in reader {
                    let batch = batch.expect("batch");
                    batches.push(
                        RecordBatch::try_new(Signal::Logs.schema(), batch.columns().to_vec())
                            .expect("schema"),
                    );
                }
            }
            let (bytes, _) = encode_parquet(
                &ParquetConfig::default(),
                Signal::Logs,
                "bench",
                &batches,
                &[],
            )
            .expect("encode");
            rt.block_on(lake.put("merged/baseline.parquet", bytes))
                .expect("put");
        })
    });

    g.bench_function("kway_merge", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let catalog: Arc<dyn Catalog> =
                    Arc::new(SledCatalog::open(dir.path()).expect("index"));
                rt.block_on(catalog.register(&segs)).expect("register");
                let compactor = Compactor::new(
                    lake.clone(),
                    catalog,
                    Metrics::new(),
                    CompactorConfig {
                        min_age: Duration::ZERO,
                        ..CompactorConfig::default()
                    },
                );
                (dir, compactor)
            },
            |(_dir, compactor)| {
                let done = rt
                    .block_on(compactor.run_once())
                    .expect("compaction")
                    .expect("a plan");
                assert_eq!(done.output.row_count, (FILES * ROWS) as u64);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
