//! Per-stage costs of the data path on OTLP logs with ~120-byte bodies, 1000 records a batch:
//! - `prost_decode` (baseline): protobuf bytes → OTLP structs;
//! - `otlp_to_arrow`: protobuf bytes → OTLP structs → Arrow batch (what a source does);
//! - `parquet_encode`: sorted ZSTD Parquet of 10 such batches (what the flusher does);
//! - `buffer_entry_encode`: Arrow IPC + LZ4 + CRC32C entry (what the buffer stores).
//!
//! Throughput is reported in records; compare `otlp_to_arrow` with `prost_decode` as a ratio.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use weir_pipelines::buffer::encode_entry;
use weir_pipelines::otlp::decode_logs;
use weir_pipelines::parquet_writer::{encode_parquet, ParquetConfig};
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

fn benches(c: &mut Criterion) {
    const N: usize = 1000;
    let bytes = request(N).encode_to_vec();
    let mut g = c.benchmark_group("logs_1000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("prost_decode", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(&bytes[..]).map(|r| r.resource_logs.len()))
    });
    g.bench_function("otlp_to_arrow", |b| {
        b.iter(|| {
            let req = ExportLogsServiceRequest::decode(&bytes[..]).expect("valid request");
            decode_logs(&req, 0).expect("decodes").records.num_rows()
        })
    });
    let records = decode_logs(&request(N), 0).expect("decodes").records;
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
    g.finish();
}

criterion_group!(decode_encode, benches);
criterion_main!(decode_encode);
