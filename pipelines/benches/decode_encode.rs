//! Per-stage costs of the data path on OTLP logs with ~120-byte bodies, 1000 records a batch:
//! - `prost_decode` (baseline): protobuf bytes → OTLP structs;
//! - `otlp_to_arrow`: protobuf bytes → OTLP structs → Arrow batch (what OTLP/gRPC does);
//! - `wire_to_arrow`: protobuf bytes → Arrow batch in one walk of the wire format, no structs
//!   (what OTLP/HTTP does with a protobuf logs body);
//! - `parquet_encode`: sorted ZSTD Parquet of 10 such batches (what the flusher does);
//! - `buffer_entry_encode`: Arrow IPC + LZ4 + CRC32C entry (what the buffer stores).
//!
//! Throughput is reported in records; compare `otlp_to_arrow` and `wire_to_arrow` with
//! `prost_decode` as ratios.
//! `metrics_1000` does the same for 1000 OTLP gauge and sum points (two attributes each),
//! which map to Arrow through the shared `MetricsBuilder`; `traces_1000` for 1000 spans (two
//! attributes and one event each), with `wire_to_arrow` as for logs.
//!
//! And the cost of a durable append (`durable_append_*`: one entry appended and committed per
//! iteration, entries removed 32 behind as the flusher would), on one such batch and on
//! incompressible 400 KiB entries:
//! - `old_commit` (baseline): the entry stored whole as a sled value, sled's `flush()` and an
//!   `fdatasync` of its data file (what the buffer did before blob files were made durable and
//!   before payload files);
//! - `sled_buffer`: `SledBuffer::append` + `sync`: the entry's bytes written to a payload file,
//!   its `fdatasync`, then sled's commit of the pointer.
//!
//! Compare `sled_buffer` with `old_commit` as a ratio.
//!
//! `buffer_write_path` is a report, not a criterion measurement: it pushes 1 GiB of entries
//! through `SledBuffer` (append, a commit every 8 entries as 8 connections share one, removal
//! 32 entries behind) and prints the process's CPU time per entry (every thread: sled's
//! flusher included) and the write amplification: bytes handed to `write`/`pwrite` (`wchar`)
//! and bytes sent to the block layer (`write_bytes`), per byte of entries. It uses the
//! buffer's public API only, so the same file runs against an older commit for a baseline.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use weir_pipelines::buffer::{encode_entry, Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::otlp::{
    decode_logs, decode_logs_protobuf, decode_metrics, decode_traces, decode_traces_protobuf,
};
use weir_pipelines::parquet_writer::{encode_parquet, sort_rows, ParquetConfig};
use weir_pipelines::DecodeBudget;
use weir_pipelines::{Batch, Partition, Signal};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(n: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: vec![kv("service.name", "checkout"), kv("host.name", "node-1")], ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue { value: Some(Value::StringValue(format!("GET /api/v1/orders/{i} completed in {}ms for user u-{} status=200 bytes=5123", i % 97, i % 13)))}),
                        attributes: vec![kv("http.route", "/api/v1/orders/:id")],
                        trace_id: vec![(i % 251) as u8; 16],
                        span_id: vec![(i % 7) as u8; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request(n: usize) -> ExportMetricsServiceRequest {
    let point = |i: usize| NumberDataPoint {
        attributes: vec![
            kv("host", "node-1"),
            kv("path", &format!("/api/{}", i % 17)),
        ],
        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
        start_time_unix_nano: 1_699_999_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(i as f64)),
        ..Default::default()
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(data),
        ..Default::default()
    };
    let half = n / 2;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "gauge",
                        metric::Data::Gauge(Gauge {
                            data_points: (0..half).map(point).collect(),
                        }),
                    ),
                    metric(
                        "requests",
                        metric::Data::Sum(Sum {
                            data_points: (half..n).map(point).collect(),
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics(c: &mut Criterion) {
    const N: usize = 1000;
    let bytes = metrics_request(N).encode_to_vec();
    let mut g = c.benchmark_group("metrics_1000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportMetricsServiceRequest::decode(&bytes[..]).map(|r| r.resource_metrics.len()))
    });
    g.bench_function("otlp_to_arrow", |b| {
        b.iter(|| {
            let req = ExportMetricsServiceRequest::decode(&bytes[..]).expect("valid request");
            decode_metrics(&req, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    g.finish();
}

fn traces_request(n: usize) -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: vec![(i % 251) as u8 + 1; 16],
        span_id: vec![(i % 7) as u8 + 1; 8],
        parent_span_id: vec![9; 8],
        name: format!("GET /api/v1/orders/{}", i % 50),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1000,
        end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64 * 1000,
        attributes: vec![
            kv("http.route", "/api/v1/orders/:id"),
            kv("http.method", "GET"),
        ],
        events: vec![span::Event {
            time_unix_nano: 1_700_000_000_000_100_000 + i as u64 * 1000,
            name: "db.query".into(),
            ..Default::default()
        }],
        status: Some(Status {
            code: 1,
            message: String::new(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("host.name", "node-1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..n).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn traces(c: &mut Criterion) {
    const N: usize = 1000;
    let bytes = traces_request(N).encode_to_vec();
    assert_eq!(
        decode_traces_protobuf(&bytes, 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records,
        decode_traces(&traces_request(N), 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records
    );
    let mut g = c.benchmark_group("traces_1000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(&bytes[..]).map(|r| r.resource_spans.len()))
    });
    g.bench_function("otlp_to_arrow", |b| {
        b.iter(|| {
            let req = ExportTraceServiceRequest::decode(&bytes[..]).expect("valid request");
            decode_traces(&req, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    g.bench_function("wire_to_arrow", |b| {
        b.iter(|| {
            decode_traces_protobuf(&bytes, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    const N: usize = 1000;
    let bytes = request(N).encode_to_vec();
    // Both paths make the same batch of these bytes.
    assert_eq!(
        decode_logs_protobuf(&bytes, 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records,
        decode_logs(&request(N), 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records
    );
    let mut g = c.benchmark_group("logs_1000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(&bytes[..]).map(|r| r.resource_logs.len()))
    });
    g.bench_function("otlp_to_arrow", |b| {
        b.iter(|| {
            let req = ExportLogsServiceRequest::decode(&bytes[..]).expect("valid request");
            decode_logs(&req, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    g.bench_function("wire_to_arrow", |b| {
        b.iter(|| {
            decode_logs_protobuf(&bytes, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    let records = decode_logs(&request(N), 0, &DecodeBudget::unlimited())
        .expect("decodes")
        .records;
    let batch = Batch::new("default", Signal::Logs, "bench", 0, records.clone());
    g.bench_function("buffer_entry_encode", |b| {
        b.iter(|| encode_entry(Partition { hour: 0 }, &batch).map(|v| v.len()))
    });
    g.finish();

    let ten: Vec<_> = (0..10).map(|_| records.clone()).collect();
    let mut g = c.benchmark_group("logs_10000");
    g.throughput(Throughput::Elements(10 * N as u64));
    g.sample_size(20);
    g.bench_function("parquet_encode", |b| {
        b.iter_batched(
            || ten.clone(),
            |t| {
                encode_parquet(&ParquetConfig::default(), Signal::Logs, "default", &t, &[])
                    .map(|(v, _)| v.len())
            },
            BatchSize::SmallInput,
        )
    });
    // The sort before encoding: rows that arrive in (service, time) order (one service's
    // records in time order, the common case) against the same rows out of order (ten copies
    // of one request: time restarts at each copy), in one run.
    let ordered = decode_logs(&request(10 * N), 0, &DecodeBudget::unlimited())
        .expect("decodes")
        .records;
    g.bench_function("sort_rows_in_order", |b| {
        b.iter(|| sort_rows(Signal::Logs, std::slice::from_ref(&ordered)).map(|r| r.num_rows()))
    });
    g.bench_function("sort_rows_out_of_order", |b| {
        b.iter(|| sort_rows(Signal::Logs, &ten).map(|r| r.num_rows()))
    });
    g.finish();
}

/// A one-record batch whose body is `bytes` random printable characters (LZ4 cannot shrink it).
fn incompressible(bytes: usize) -> Batch {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let body: String = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 94) as u8)
        })
        .collect();
    let mut req = request(1);
    req.resource_logs[0].scope_logs[0].log_records[0].body = Some(AnyValue {
        value: Some(Value::StringValue(body)),
    });
    let records = decode_logs(&req, 0, &DecodeBudget::unlimited())
        .expect("decodes")
        .records;
    Batch::new("default", Signal::Logs, "bench", 0, records)
}

/// The buffer benches' entries: 1000 typical log records, and one incompressible 400 KiB record.
fn entry_batches() -> [(&'static str, Batch); 2] {
    let typical = Batch::new(
        "default",
        Signal::Logs,
        "bench",
        0,
        decode_logs(&request(1000), 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records,
    );
    [
        ("logs_1000", typical),
        ("incompressible_400k", incompressible(400 << 10)),
    ]
}

fn durable_append(c: &mut Criterion) {
    /// How far behind the appends entries are removed.
    const KEEP: u64 = 32;
    let partition = Partition::of(1_700_000_000_000_000_000);
    for (name, batch) in entry_batches() {
        let entry = encode_entry(partition, &batch).expect("encodes").len() as u64;
        let mut g = c.benchmark_group(format!("durable_append_{name}"));
        g.throughput(Throughput::Bytes(entry));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(10));
        g.bench_function("old_commit", |b| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(8 << 20)
                .cache_capacity(64 << 20)
                .open()
                .expect("sled opens");
            let tree = db.open_tree("entries").expect("tree");
            let data = std::fs::File::open(dir.path().join("db")).expect("data file");
            let mut seq = 0u64;
            b.iter(|| {
                let value = encode_entry(partition, &batch).expect("encodes");
                tree.insert(seq.to_be_bytes(), value).expect("insert");
                if seq >= KEEP {
                    tree.remove((seq - KEEP).to_be_bytes()).expect("remove");
                }
                db.flush().expect("flush");
                data.sync_data().expect("fdatasync");
                seq += 1;
            })
        });
        g.bench_function("sled_buffer", |b| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let buffer = SledBuffer::open(&SledBufferConfig {
                path: dir.path().to_path_buf(),
                max_bytes: 1 << 40,
            })
            .expect("buffer opens");
            b.iter(|| {
                let seq = buffer
                    .append(&[(partition, batch.clone())])
                    .expect("append");
                if seq >= KEEP {
                    buffer.remove(&[seq - KEEP]).expect("remove");
                }
                buffer.sync(seq).expect("sync");
            })
        });
        g.finish();
    }
}

/// CPU seconds of the whole process (every thread) and its `wchar` and `write_bytes`.
fn process_counters() -> (f64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu = (tick(11) + tick(12)) as f64 / 100.0;
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (cpu, field("wchar:"), field("write_bytes:"))
}

fn buffer_write_path(_: &mut Criterion) {
    const KEEP: u64 = 32;
    const GROUP: u64 = 8;
    // Runs only when asked for by name (`cargo bench ... -- buffer_write_path`).
    if !std::env::args().any(|a| a.contains("buffer_write_path")) {
        return;
    }
    let partition = Partition::of(1_700_000_000_000_000_000);
    for (name, batch) in entry_batches() {
        let entry = encode_entry(partition, &batch).expect("encodes").len() as u64;
        let n = (1u64 << 30) / entry;
        let dir = tempfile::tempdir().expect("temporary directory");
        let buffer = SledBuffer::open(&SledBufferConfig {
            path: dir.path().to_path_buf(),
            max_bytes: 1 << 40,
        })
        .expect("buffer opens");
        // The entry encoding alone (Arrow IPC, LZ4, CRC), which every append does first.
        let (enc0, _, _) = process_counters();
        for _ in 0..n {
            std::hint::black_box(encode_entry(partition, &batch).expect("encodes"));
        }
        let (enc1, _, _) = process_counters();
        let (cpu0, wchar0, disk0) = process_counters();
        let wall = std::time::Instant::now();
        for i in 0..n {
            let seq = buffer
                .append(&[(partition, batch.clone())])
                .expect("append");
            if seq >= KEEP {
                buffer.remove(&[seq - KEEP]).expect("remove");
            }
            if i % GROUP == GROUP - 1 {
                buffer.sync(seq).expect("sync");
            }
        }
        let wall = wall.elapsed().as_secs_f64();
        let (cpu1, wchar1, disk1) = process_counters();
        let accepted = (n * entry) as f64;
        println!(
            "buffer_write_path/{name}: {n} entries of {entry} B in {wall:.1} s; CPU {:.1} us/entry \
             (encoding alone {:.1}; {:.2} us/KiB); written {:.2} B (wchar) and {:.2} B (block \
             layer) per byte accepted",
            (cpu1 - cpu0) * 1e6 / n as f64,
            (enc1 - enc0) * 1e6 / n as f64,
            (cpu1 - cpu0) * 1e6 / (accepted / 1024.0),
            (wchar1 - wchar0) as f64 / accepted,
            (disk1 - disk0) as f64 / accepted,
        );
    }
}

criterion_group!(
    decode_encode,
    benches,
    metrics,
    traces,
    durable_append,
    buffer_write_path
);
criterion_main!(decode_encode);
