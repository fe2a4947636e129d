//! Property-based fuzzing of every protocol decoder (run by `cargo test` in CI): arbitrary
//! bytes and mutations of valid payloads must give a result or an error, never a panic or a
//! hang, and the msgpack frame scanner must agree with a real msgpack decoder.

use proptest::prelude::*;
use weir_pipelines::logrows::LogsBuilder;

use super::datadog::{logs as dd_logs, series as dd_series};
use super::fluent::{decode as fluent_decode, frame};
use super::loki::decode as loki;
use super::prometheus_remote_write::{decode as prw, proto as prw_proto};
use super::syslog;

fn mutate(valid: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut v = valid.to_vec();
    for &(i, x) in flips {
        if !v.is_empty() {
            let n = v.len();
            v[i % n] ^= x;
        }
    }
    v.truncate(cut.min(v.len()));
    v
}

const SYSLOG: &[u8] = br#"<165>1 2026-11-22T10:00:00.1Z host app 42 ID [a@1 k="v\"x"] msg"#;
const LOKI_JSON: &[u8] = br#"{"streams":[{"stream":{"service_name":"a","level":"warn"},"values":[["1700000000000000000","line",{"k":"v"}]]}]}"#;
const DD_LOGS: &[u8] =
    br#"[{"message":"m","status":"info","ddtags":"a:b,c","timestamp":1700000000000,"x":{"y":1}}]"#;
const DD_V1: &[u8] = br#"{"series":[{"metric":"m","points":[[1700000000,1.5]],"type":"rate","interval":10,"tags":["a:b"]}]}"#;

fn fluent_sample() -> Vec<u8> {
    use rmpv::Value as V;
    let entry = V::Array(vec![
        V::Ext(0, vec![0, 0, 0, 1, 0, 0, 0, 2]),
        V::Map(vec![(V::from("log"), V::from("x"))]),
    ]);
    let mut packed = Vec::new();
    rmpv::encode::write_value(&mut packed, &entry).unwrap_or_default();
    let msg = V::Array(vec![
        V::from("t"),
        V::Binary(packed),
        V::Map(vec![(V::from("chunk"), V::from("c"))]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &msg).unwrap_or_default();
    out
}

fn loki_protobuf() -> Vec<u8> {
    use prost::Message;
    loki::PushRequest {
        streams: vec![loki::StreamAdapter {
            labels: r#"{a="b"}"#.into(),
            entries: vec![loki::EntryAdapter {
                timestamp: Some(loki::Timestamp {
                    seconds: 1,
                    nanos: 2,
                }),
                line: "l".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    }
    .encode_to_vec()
}

fn otlp_logs() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    let s = |v: &str| {
        Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        })
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: s("svc"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1,
                    body: s("line"),
                    attributes: vec![KeyValue {
                        key: "k".into(),
                        value: Some(AnyValue {
                            value: Some(Value::IntValue(3)),
                        }),
                        ..Default::default()
                    }],
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A remote write 1.0 request with a classic histogram, a summary and a native histogram.
fn remote_write_v1() -> Vec<u8> {
    use prost::Message;
    use prw_proto::*;
    let series = |name: &str, extra: (&str, &str), value: f64| TimeSeries {
        labels: [("__name__", name), ("job", "j"), extra]
            .iter()
            .map(|(n, v)| Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        samples: vec![Sample {
            value,
            timestamp: 1,
        }],
        ..Default::default()
    };
    let mut native = series("n", ("a", "b"), 0.0);
    native.samples.clear();
    native.histograms.push(Histogram {
        count: Some(Count::Int(3)),
        schema: 2,
        zero_count: Some(ZeroCount::Int(1)),
        positive_spans: vec![BucketSpan {
            offset: -2,
            length: 2,
        }],
        positive_deltas: vec![1, 0],
        negative_spans: vec![BucketSpan {
            offset: 1,
            length: 1,
        }],
        negative_deltas: vec![1],
        ..Default::default()
    });
    WriteRequest {
        timeseries: vec![
            series("h_bucket", ("le", "1"), 1.0),
            series("h_bucket", ("le", "+Inf"), 2.0),
            series("h_sum", ("a", "b"), 2.0),
            series("s", ("quantile", "0.5"), 1.0),
            series("c_total", ("a", "b"), 1.0),
            native,
        ],
        metadata: vec![],
    }
    .encode_to_vec()
}

/// A remote write 2.0 request with metadata and a native histogram.
fn remote_write_v2() -> Vec<u8> {
    use prost::Message;
    use prw_proto::*;
    RequestV2 {
        symbols: ["", "__name__", "m_total", "le", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1,
            }],
            histograms: vec![Histogram {
                count: Some(Count::Float(2.0)),
                schema: -53,
                custom_values: vec![1.0],
                positive_spans: vec![BucketSpan {
                    offset: 0,
                    length: 2,
                }],
                positive_counts: vec![1.0, 1.0],
                ..Default::default()
            }],
            metadata: Some(MetadataV2 {
                r#type: 1,
                help_ref: 2,
                unit_ref: 0,
            }),
            created_timestamp: 1,
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn all_decoders(bytes: &[u8]) {
    let limits = prw::Limits {
        max_row_bytes: 1 << 20,
        ..prw::Limits::default()
    };
    let mut b = weir_pipelines::metricrows::MetricsBuilder::default();
    let _ = prw::decode_v1(bytes, 0, &limits, &mut b);
    let _ = prw::decode_v2(bytes, 0, &limits, &mut b);
    let _ = b.finish();
    let _ = syslog::to_batch(&[bytes::Bytes::copy_from_slice(bytes)], 0, "t", "fuzz");
    // A small budget, so that the over-budget exits are exercised too.
    let budget = weir_pipelines::DecodeBudget::new(1 << 20, "fuzz");
    let mut b = LogsBuilder::default();
    let _ = loki::decode_json(bytes, 0, &budget, &mut b);
    let _ = loki::decode_protobuf(bytes, 0, &budget, &mut b);
    let _ = dd_logs::decode(bytes, 0, &budget, &mut b);
    let _ = b.finish();
    let _ = weir_pipelines::otlp::decode_logs_protobuf(bytes, 0, &budget);
    let _ = weir_pipelines::otlp::decode_traces_protobuf(bytes, 0, &budget);
    for parsed in [
        dd_series::parse_v1(bytes),
        dd_series::parse_v2_json(bytes),
        dd_series::parse_v2_protobuf(bytes),
    ]
    .into_iter()
    .flatten()
    {
        let mut b = weir_pipelines::metricrows::MetricsBuilder::default();
        let _ = dd_series::append_series(&parsed, 0, &budget, &mut b);
        let _ = b.finish();
    }
    if let Ok(Some(len)) = frame::value_len(bytes) {
        assert!(len <= bytes.len());
        let mut b = LogsBuilder::default();
        let _ = fluent_decode::decode_message(&bytes[..len], 0, 1 << 16, &budget, &mut b);
        let _ = b.finish();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_decoders(&bytes);
    }

    #[test]
    fn mutated_payloads_never_panic(
        which in 0usize..9,
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        cut in 0usize..400,
    ) {
        let fluent = fluent_sample();
        let proto = loki_protobuf();
        let (rw1, rw2) = (remote_write_v1(), remote_write_v2());
        let otlp = otlp_logs();
        let valid: &[u8] = match which {
            0 => SYSLOG,
            1 => LOKI_JSON,
            2 => &proto,
            3 => DD_LOGS,
            4 => DD_V1,
            5 => &rw1,
            6 => &rw2,
            7 => &otlp,
            _ => &fluent,
        };
        all_decoders(&mutate(valid, &flips, cut));
    }

    /// The frame scanner finds exactly the length a msgpack decoder consumes.
    #[test]
    fn frame_scanner_agrees_with_rmpv(v in arb_value()) {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &v).unwrap_or_default();
        prop_assert_eq!(frame::value_len(&bytes), Ok(Some(bytes.len())));
        if !bytes.is_empty() {
            prop_assert_eq!(frame::value_len(&bytes[..bytes.len() - 1]), Ok(None));
        }
    }
}

fn arb_value() -> impl Strategy<Value = rmpv::Value> {
    use rmpv::Value as V;
    let leaf = prop_oneof![
        Just(V::Nil),
        any::<bool>().prop_map(V::Boolean),
        any::<i64>().prop_map(V::from),
        any::<u64>().prop_map(V::from),
        any::<f64>().prop_map(V::F64),
        any::<f32>().prop_map(V::F32),
        ".{0,40}".prop_map(V::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(V::Binary),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, d)| V::Ext(t, d)),
    ];
    leaf.prop_recursive(4, 64, 20, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..20).prop_map(V::Array),
            proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(V::Map),
        ]
    })
}
