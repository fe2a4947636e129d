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
//! incompressible 400 KiB entries, whose leaves sled spills to blob files about every tenth
//! insert:
//! - `old_commit` (baseline): the commit before blob files were made durable: sled insert,
//!   `flush()`, `fdatasync` of the data file;
//! - `sled_buffer`: `SledBuffer::append` + `sync`, which also lists `blobs/` and fsyncs the
//!   blob files written since the last commit and their directory.
//!
//! Compare `sled_buffer` with `old_commit` as a ratio.

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

fn durable_append(c: &mut Criterion) {
    /// How far behind the appends entries are removed.
    const KEEP: u64 = 32;
    let typical = Batch::new(
        "default",
        Signal::Logs,
        "bench",
        0,
        decode_logs(&request(1000), 0, &DecodeBudget::unlimited())
            .expect("decodes")
            .records,
    );
    let partition = Partition::of(1_700_000_000_000_000_000);
    for (name, batch) in [
        ("logs_1000", typical),
        ("incompressible_400k", incompressible(400 << 10)),
    ] {
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

criterion_group!(decode_encode, benches, metrics, traces, durable_append);
criterion_main!(decode_encode);
