//! Remote write decode → Arrow against OTLP decode → Arrow, on the same 1000 points: 500
//! gauge and 500 monotonic counter samples, each with `host`, `path` (17 values) and `job`
//! labels (the OTLP request carries `job` as the resource's `service.name`), one sample per
//! series as Prometheus sends them.
//!
//! - `otlp_to_arrow` (baseline): OTLP protobuf bytes → OTLP structs → Arrow (the OTLP path);
//! - `remote_write_v1`: `prometheus.WriteRequest` bytes → Arrow;
//! - `remote_write_v1_snappy`: the same from the snappy block the source receives;
//! - `remote_write_v2`: `io.prometheus.write.v2.Request` bytes (symbol table) → Arrow.
//!
//! Throughput is in samples; compare each with `otlp_to_arrow` as a ratio.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use weir_pipelines::metricrows::MetricsBuilder;
use weir_pipelines::otlp::decode_metrics;
use weir_pipelines::DecodeBudget;
use weir_sources::prometheus_remote_write::decode::{decode_v1, decode_v2, Limits};
use weir_sources::prometheus_remote_write::proto::{
    Label, RequestV2, Sample, TimeSeries, TimeSeriesV2, WriteRequest,
};

const N: usize = 1000;
const T_MS: i64 = 1_700_000_000_000;

fn name(i: usize) -> &'static str {
    if i < N / 2 {
        "gauge"
    } else {
        "requests_total"
    }
}

fn path(i: usize) -> String {
    format!("/api/{}", i % 17)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn otlp() -> Vec<u8> {
    let point = |i: usize| NumberDataPoint {
        attributes: vec![kv("host", "node-1"), kv("path", &path(i))],
        time_unix_nano: (T_MS as u64 + i as u64) * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(i as f64)),
        ..Default::default()
    };
    let metric = |name: &str, data| Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    };
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
                            data_points: (0..N / 2).map(point).collect(),
                        }),
                    ),
                    metric(
                        "requests_total",
                        metric::Data::Sum(Sum {
                            data_points: (N / 2..N).map(point).collect(),
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
    .encode_to_vec()
}

fn v1() -> Vec<u8> {
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    WriteRequest {
        timeseries: (0..N)
            .map(|i| TimeSeries {
                labels: vec![
                    label("__name__", name(i)),
                    label("host", "node-1"),
                    label("job", "bench"),
                    label("path", &path(i)),
                ],
                samples: vec![Sample {
                    value: i as f64,
                    timestamp: T_MS + i as i64,
                }],
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
    .encode_to_vec()
}

fn v2() -> Vec<u8> {
    let mut symbols: Vec<String> = ["", "__name__", "gauge", "requests_total", "host", "node-1"]
        .iter()
        .chain(["job", "bench", "path"].iter())
        .map(|s| s.to_string())
        .collect();
    let first_path = symbols.len() as u32;
    symbols.extend((0..17).map(|i| format!("/api/{i}")));
    RequestV2 {
        symbols,
        timeseries: (0..N)
            .map(|i| TimeSeriesV2 {
                labels_refs: vec![
                    1,
                    if i < N / 2 { 2 } else { 3 },
                    4,
                    5,
                    6,
                    7,
                    8,
                    first_path + (i % 17) as u32,
                ],
                samples: vec![Sample {
                    value: i as f64,
                    timestamp: T_MS + i as i64,
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

fn benches(c: &mut Criterion) {
    let (otlp, v1, v2) = (otlp(), v1(), v2());
    let v1_snappy = snap::raw::Encoder::new()
        .compress_vec(&v1)
        .expect("compresses");
    let limits = Limits::default();
    let mut g = c.benchmark_group("metrics_1000_remote_write");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("otlp_to_arrow", |b| {
        b.iter(|| {
            let req = ExportMetricsServiceRequest::decode(&otlp[..]).expect("valid request");
            decode_metrics(&req, 0, &DecodeBudget::unlimited())
                .expect("decodes")
                .records
                .num_rows()
        })
    });
    let rows = |f: &dyn Fn(&mut MetricsBuilder)| {
        let mut b = MetricsBuilder::default();
        f(&mut b);
        b.finish().expect("builds").num_rows()
    };
    g.bench_function("remote_write_v1", |b| {
        b.iter(|| {
            rows(&|mb| {
                decode_v1(&v1, 0, &limits, mb).expect("decodes");
            })
        })
    });
    g.bench_function("remote_write_v1_snappy", |b| {
        b.iter(|| {
            rows(&|mb| {
                let body = snap::raw::Decoder::new()
                    .decompress_vec(&v1_snappy)
                    .expect("snappy");
                decode_v1(&body, 0, &limits, mb).expect("decodes");
            })
        })
    });
    g.bench_function("remote_write_v2", |b| {
        b.iter(|| {
            rows(&|mb| {
                decode_v2(&v2, 0, &limits, mb).expect("decodes");
            })
        })
    });
    g.finish();
}

criterion_group!(all, benches);
criterion_main!(all);
