use super::*;
use crate::prometheus_remote_write::proto::*;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType};
use arrow_array::RecordBatch;
use crate::prometheus::testing::*;

const T: i64 = 1_700_000_000_000;

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(n, v)| Label {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect()
}

fn ts(pairs: &[(&str, &str)], value: f64) -> TimeSeries {
    TimeSeries {
        labels: labels(pairs),
        samples: vec![Sample {
            value,
            timestamp: T,
        }],
        ..Default::default()
    }
}

fn v1(series: Vec<TimeSeries>, metadata: Vec<MetricMetadata>) -> Result<(RecordBatch, Stats), String> {
    let body = WriteRequest {
        timeseries: series,
        metadata,
    }
    .encode_to_vec();
    let mut b = MetricsBuilder::default();
    let stats = decode_v1(&body, 5, &Limits::default(), &mut b)?;
    Ok((b.finish().map_err(|e| e.to_string())?, stats))
}

#[test]
fn classic_histogram_is_reassembled_from_its_series() {
    let base = [("instance", "h:9100"), ("job", "api"), ("path", "/x")];
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        name: &'a str,
        extra: Option<(&'a str, &'a str)>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut l = vec![("__name__", name)];
        l.extend_from_slice(base);
        l.extend(extra);
        l
    }
    let series = vec![
        ts(&with(&base, "req_seconds_bucket", Some(("le", "1"))), 3.0),
        ts(&with(&base, "req_seconds_bucket", Some(("le", "0.1"))), 1.0),
        ts(&with(&base, "req_seconds_bucket", Some(("le", "+Inf"))), 4.0),
        ts(&with(&base, "req_seconds_sum", None), 2.5),
        ts(&with(&base, "req_seconds_count", None), 4.0),
    ];
    let (rb, stats) = v1(series, vec![]).unwrap();
    assert_eq!(rb.num_rows(), 1);
    assert_eq!(stats.samples, 5);
    let r = row_of(&rb, "req_seconds");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("histogram"));
    assert_eq!(list_f(&rb, "explicit_bounds", r), vec![0.1, 1.0]);
    assert_eq!(list_u(&rb, "bucket_counts", r), vec![1, 2, 1]);
    assert_eq!(u(&rb, "count", r), Some(4));
    assert_eq!(f(&rb, "sum", r), Some(2.5));
    assert_eq!(i32c(&rb, "aggregation_temporality", r), Some(2));
    assert_eq!(map(&rb, "attributes", r), vec![("path".into(), "/x".into())]);
    assert_eq!(
        map(&rb, "resource_attributes", r),
        vec![
            ("service.name".into(), "api".into()),
            ("service.instance.id".into(), "h:9100".into())
        ]
    );
    assert_eq!(s(&rb, "service_name", r).as_deref(), Some("api"));
    let t = rb
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(r), T * 1_000_000);
}

#[test]
fn histogram_without_count_takes_the_inf_bucket_and_labels_split_groups() {
    let series = vec![
        ts(&[("__name__", "h_bucket"), ("a", "1"), ("le", "5")], 2.0),
        ts(&[("__name__", "h_bucket"), ("a", "1"), ("le", "+Inf")], 7.0),
        ts(&[("__name__", "h_bucket"), ("a", "2"), ("le", "+Inf")], 1.0),
    ];
    let (rb, _) = v1(series, vec![]).unwrap();
    assert_eq!(rb.num_rows(), 2);
    assert_eq!(u(&rb, "count", 0), Some(7));
    assert_eq!(list_u(&rb, "bucket_counts", 0), vec![2, 5]);
    assert_eq!(f(&rb, "sum", 0), None);
    assert_eq!(list_f(&rb, "explicit_bounds", 1), Vec::<f64>::new());
    assert_eq!(list_u(&rb, "bucket_counts", 1), vec![1]);
}

#[test]
fn summary_is_reassembled() {
    let series = vec![
        ts(&[("__name__", "rpc"), ("quantile", "0.99")], 3.0),
        ts(&[("__name__", "rpc"), ("quantile", "0.5")], 1.0),
        ts(&[("__name__", "rpc_sum")], 10.0),
        ts(&[("__name__", "rpc_count")], 5.0),
    ];
    let (rb, _) = v1(series, vec![]).unwrap();
    assert_eq!(rb.num_rows(), 1);
    assert_eq!(s(&rb, "metric_type", 0).as_deref(), Some("summary"));
    assert_eq!(u(&rb, "count", 0), Some(5));
    assert_eq!(f(&rb, "sum", 0), Some(10.0));
    let q = rb.column_by_name("quantiles").unwrap().as_list::<i32>();
    let q = q.value(0);
    let q = q.as_struct();
    assert_eq!(
        q.column(0).as_primitive::<Float64Type>().values().to_vec(),
        vec![0.5, 0.99]
    );
    assert_eq!(
        q.column(1).as_primitive::<Float64Type>().values().to_vec(),
        vec![1.0, 3.0]
    );
}

#[test]
fn counters_gauges_metadata_and_stale_markers() {
    let series = vec![
        ts(&[("__name__", "node_cpu_seconds_total"), ("cpu", "0"), ("mode", "idle")], 12.5),
        ts(&[("__name__", "temp"), ("job", "team/node")], 20.0),
        ts(&[("__name__", "up_events")], 3.0),
        ts(&[("__name__", "gone")], f64::from_bits(STALE_NAN)),
        // `_count` of no histogram or summary in the request: a plain gauge.
        ts(&[("__name__", "queue_count")], 9.0),
    ];
    let meta = vec![MetricMetadata {
        r#type: 1,
        metric_family_name: "up_events".into(),
        help: "Events.".into(),
        unit: "".into(),
    }];
    let (rb, stats) = v1(series, meta).unwrap();
    assert_eq!(rb.num_rows(), 4);
    assert_eq!(stats.stale, 1);
    assert_eq!(stats.samples, 5);
    let r = row_of(&rb, "node_cpu_seconds_total");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("sum"));
    let mono = rb.column_by_name("is_monotonic").unwrap().as_boolean();
    assert!(mono.value(r));
    assert_eq!(i32c(&rb, "aggregation_temporality", r), Some(2));
    assert_eq!(f(&rb, "value", r), Some(12.5));
    assert_eq!(
        map(&rb, "attributes", r),
        vec![("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
    );
    let r = row_of(&rb, "temp");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("gauge"));
    assert_eq!(
        map(&rb, "resource_attributes", r),
        vec![
            ("service.name".into(), "node".into()),
            ("service.namespace".into(), "team".into())
        ]
    );
    let r = row_of(&rb, "up_events");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("sum"));
    assert_eq!(s(&rb, "description", r).as_deref(), Some("Events."));
    let r = row_of(&rb, "queue_count");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("gauge"));
}

fn native_hist() -> Histogram {
    Histogram {
        count: Some(Count::Int(15)),
        sum: 4.5,
        schema: 1,
        zero_threshold: 0.001,
        zero_count: Some(ZeroCount::Int(3)),
        // Prometheus buckets -1 and 0, a gap of 2, then bucket 3.
        positive_spans: vec![
            BucketSpan {
                offset: -1,
                length: 2,
            },
            BucketSpan {
                offset: 2,
                length: 1,
            },
        ],
        positive_deltas: vec![2, -1, 3],
        negative_spans: vec![BucketSpan {
            offset: 0,
            length: 1,
        }],
        negative_deltas: vec![5],
        timestamp: T,
        ..Default::default()
    }
}

#[test]
fn native_histogram_becomes_exponential() {
    let series = vec![TimeSeries {
        labels: labels(&[("__name__", "lat")]),
        histograms: vec![native_hist()],
        ..Default::default()
    }];
    let (rb, stats) = v1(series, vec![]).unwrap();
    assert_eq!(stats.histograms, 1);
    assert_eq!(
        s(&rb, "metric_type", 0).as_deref(),
        Some("exponential_histogram")
    );
    assert_eq!(i32c(&rb, "exp_scale", 0), Some(1));
    assert_eq!(u(&rb, "count", 0), Some(15));
    assert_eq!(f(&rb, "sum", 0), Some(4.5));
    assert_eq!(u(&rb, "exp_zero_count", 0), Some(3));
    assert_eq!(f(&rb, "exp_zero_threshold", 0), Some(0.001));
    // Prometheus bucket i is OpenTelemetry bucket i - 1: the first is -1 → -2.
    assert_eq!(i32c(&rb, "exp_positive_offset", 0), Some(-2));
    assert_eq!(
        list_u(&rb, "exp_positive_bucket_counts", 0),
        vec![2, 1, 0, 0, 4]
    );
    assert_eq!(i32c(&rb, "exp_negative_offset", 0), Some(-1));
    assert_eq!(list_u(&rb, "exp_negative_bucket_counts", 0), vec![5]);
}

#[test]
fn float_and_custom_bucket_native_histograms() {
    let float = Histogram {
        count: Some(Count::Float(3.0)),
        sum: 1.0,
        schema: 0,
        positive_spans: vec![BucketSpan {
            offset: 1,
            length: 2,
        }],
        positive_counts: vec![1.0, 2.0],
        timestamp: T,
        ..Default::default()
    };
    let custom = Histogram {
        count: Some(Count::Int(6)),
        sum: 9.0,
        schema: -53,
        custom_values: vec![0.5, 1.0],
        positive_spans: vec![BucketSpan {
            offset: 1,
            length: 2,
        }],
        positive_deltas: vec![2, 2],
        timestamp: T,
        ..Default::default()
    };
    let series = vec![
        TimeSeries {
            labels: labels(&[("__name__", "f")]),
            histograms: vec![float],
            ..Default::default()
        },
        TimeSeries {
            labels: labels(&[("__name__", "c")]),
            histograms: vec![custom.clone()],
            ..Default::default()
        },
    ];
    let (rb, _) = v1(series, vec![]).unwrap();
    let r = row_of(&rb, "f");
    assert_eq!(i32c(&rb, "exp_positive_offset", r), Some(0));
    assert_eq!(list_u(&rb, "exp_positive_bucket_counts", r), vec![1, 2]);
    let r = row_of(&rb, "c");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("histogram"));
    assert_eq!(list_f(&rb, "explicit_bounds", r), vec![0.5, 1.0]);
    assert_eq!(list_u(&rb, "bucket_counts", r), vec![0, 2, 4]);

    let outside = Histogram {
        positive_spans: vec![BucketSpan {
            offset: 2,
            length: 2,
        }],
        ..custom
    };
    let e = v1(
        vec![TimeSeries {
            labels: labels(&[("__name__", "c")]),
            histograms: vec![outside],
            ..Default::default()
        }],
        vec![],
    )
    .unwrap_err();
    assert!(e.contains("outside its 2 custom_values"), "{e}");
}

#[test]
fn bad_native_histograms_name_the_problem() {
    let one = |h: Histogram| {
        v1(
            vec![TimeSeries {
                labels: labels(&[("__name__", "x")]),
                histograms: vec![h],
                ..Default::default()
            }],
            vec![],
        )
        .unwrap_err()
    };
    let e = one(Histogram {
        schema: 9,
        ..native_hist()
    });
    assert!(e.contains("schema 9"), "{e}");
    let e = one(Histogram {
        positive_deltas: vec![2],
        ..native_hist()
    });
    assert!(e.contains("cover 3 buckets but 1 counts"), "{e}");
    let e = one(Histogram {
        positive_deltas: vec![2, -3, 0],
        ..native_hist()
    });
    assert!(e.contains("negative count"), "{e}");
    // A span far away would fill millions of zero buckets: the row budget stops it.
    let e = one(Histogram {
        positive_spans: vec![
            BucketSpan {
                offset: 0,
                length: 1,
            },
            BucketSpan {
                offset: i32::MAX,
                length: 1,
            },
        ],
        positive_deltas: vec![1, 1],
        ..native_hist()
    });
    assert!(e.contains("max_row_bytes"), "{e}");
}

#[test]
fn label_limits_name_their_keys() {
    let many: Vec<(String, String)> = (0..200).map(|i| (format!("l{i}"), "v".into())).collect();
    let mut pairs: Vec<(&str, &str)> = vec![("__name__", "m")];
    pairs.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let e = v1(vec![ts(&pairs, 1.0)], vec![]).unwrap_err();
    assert!(
        e.contains("sources.prometheus_remote_write.max_labels_per_series (128)"),
        "{e}"
    );
    let big = "x".repeat(20_000);
    let e = v1(vec![ts(&[("__name__", "m"), ("a", &big)], 1.0)], vec![]).unwrap_err();
    assert!(
        e.contains("over sources.prometheus_remote_write.max_label_bytes_per_series"),
        "{e}"
    );
    let e = v1(vec![ts(&[("a", "b")], 1.0)], vec![]).unwrap_err();
    assert!(e.contains("no __name__"), "{e}");
}

#[test]
fn labels_copied_to_many_samples_hit_the_row_budget() {
    let big = "x".repeat(10_000);
    let mut s = ts(&[("__name__", "m"), ("a", &big)], 1.0);
    s.samples = (0..2000)
        .map(|i| Sample {
            value: 1.0,
            timestamp: T + i,
        })
        .collect();
    let body = WriteRequest {
        timeseries: vec![s],
        metadata: vec![],
    }
    .encode_to_vec();
    let limits = Limits {
        max_row_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut b = MetricsBuilder::default();
    let e = decode_v1(&body, 0, &limits, &mut b).unwrap_err();
    assert!(e.contains("max_row_bytes"), "{e}");
}

fn v2(req: &RequestV2) -> Result<(RecordBatch, Stats), String> {
    let mut b = MetricsBuilder::default();
    let stats = decode_v2(&req.encode_to_vec(), 5, &Limits::default(), &mut b)?;
    Ok((b.finish().map_err(|e| e.to_string())?, stats))
}

#[test]
fn v2_resolves_symbols_metadata_and_created_timestamps() {
    let symbols: Vec<String> = [
        "", "__name__", "http_requests", "job", "api", "Requests.", "requests", "trace_id", "abc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let req = RequestV2 {
        symbols,
        timeseries: vec![
            TimeSeriesV2 {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![Sample {
                    value: 7.0,
                    timestamp: T,
                }],
                exemplars: vec![ExemplarV2 {
                    labels_refs: vec![7, 8],
                    value: 1.0,
                    timestamp: T,
                }],
                metadata: Some(MetadataV2 {
                    r#type: 1,
                    help_ref: 5,
                    unit_ref: 6,
                }),
                created_timestamp: T - 1000,
                ..Default::default()
            },
            TimeSeriesV2 {
                labels_refs: vec![1, 2, 3, 4],
                histograms: vec![native_hist()],
                ..Default::default()
            },
        ],
    };
    let (rb, stats) = v2(&req).unwrap();
    assert_eq!(
        stats,
        Stats {
            samples: 1,
            histograms: 1,
            exemplars: 1,
            stale: 0
        }
    );
    assert_eq!(rb.num_rows(), 2);
    assert_eq!(s(&rb, "metric_type", 0).as_deref(), Some("sum"));
    assert_eq!(s(&rb, "description", 0).as_deref(), Some("Requests."));
    assert_eq!(s(&rb, "unit", 0).as_deref(), Some("requests"));
    assert_eq!(s(&rb, "service_name", 0).as_deref(), Some("api"));
    let start = rb
        .column_by_name("start_timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(start.value(0), (T - 1000) * 1_000_000);
    assert_eq!(
        s(&rb, "metric_type", 1).as_deref(),
        Some("exponential_histogram")
    );
}

#[test]
fn v2_references_out_of_range_are_refused() {
    let req = |refs: Vec<u32>, meta: Option<MetadataV2>| RequestV2 {
        symbols: vec!["".into(), "__name__".into(), "m".into()],
        timeseries: vec![TimeSeriesV2 {
            labels_refs: refs,
            samples: vec![Sample {
                value: 1.0,
                timestamp: T,
            }],
            metadata: meta,
            ..Default::default()
        }],
    };
    assert!(v2(&req(vec![1, 2], None)).is_ok());
    let e = v2(&req(vec![1, 3], None)).unwrap_err();
    assert!(
        e.contains("symbol reference 3 is out of range: the symbol table has 3 entries"),
        "{e}"
    );
    let e = v2(&req(
        vec![1, 2],
        Some(MetadataV2 {
            r#type: 2,
            help_ref: 99,
            unit_ref: 0,
        }),
    ))
    .unwrap_err();
    assert!(e.contains("symbol reference 99"), "{e}");
    let e = v2(&req(vec![1, 2, 1], None)).unwrap_err();
    assert!(e.contains("not name and value pairs"), "{e}");
}

#[test]
fn truncated_protobuf_is_refused() {
    let body = WriteRequest {
        timeseries: vec![ts(&[("__name__", "m")], 1.0)],
        metadata: vec![],
    }
    .encode_to_vec();
    let mut b = MetricsBuilder::default();
    let e = decode_v1(&body[..body.len() - 4], 0, &Limits::default(), &mut b).unwrap_err();
    assert!(e.contains("truncated protobuf"), "{e}");
}
