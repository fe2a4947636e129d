use super::*;
use crate::prometheus_scrape::text::Bounds;
use crate::prometheus::testing::*;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::RecordBatch;

const AT: i64 = 1_700_000_000_000_000_000;

fn target() -> Vec<(String, String)> {
    vec![
        ("instance".into(), "10.0.0.1:9100".into()),
        ("job".into(), "node".into()),
    ]
}

fn shape(t: &[(String, String)]) -> Shape<'_> {
    Shape {
        target: t,
        honor_labels: false,
        honor_timestamps: true,
        scraped_at: AT,
        bounds: Bounds {
            max_samples: 1000,
            max_labels_per_series: 16,
            max_label_bytes_per_series: 1024,
        },
        max_row_bytes: 1 << 20,
    }
}

fn rows(page: &str, om: bool, shape: &Shape<'_>) -> Result<(RecordBatch, usize), String> {
    let mut b = MetricsBuilder::default();
    let n = append_page(page, om, shape, &mut b).map_err(|e| e.to_string())?;
    Ok((b.finish().map_err(|e| e.to_string())?, n.samples))
}

fn timestamp(rb: &RecordBatch, row: usize) -> i64 {
    rb.column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>()
        .value(row)
}

const TEXT: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 12345.5
node_cpu_seconds_total{cpu="0",mode="user"} 42
# TYPE node_load1 gauge
node_load1 0.5 1700000000123
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{handler="/q",le="0.1"} 3
http_request_duration_seconds_bucket{handler="/q",le="1"} 5
http_request_duration_seconds_bucket{handler="/q",le="+Inf"} 6
http_request_duration_seconds_sum{handler="/q"} 2.5
http_request_duration_seconds_count{handler="/q"} 6
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.1
rpc_seconds{quantile="0.99"} 0.7
rpc_seconds_sum 12
rpc_seconds_count 40
untyped_thing{path="a,b=c \"q\""} 7
"#;

#[test]
fn text_format_maps_every_type() {
    let t = target();
    let (rb, n) = rows(TEXT, false, &shape(&t)).unwrap();
    // 2 counters + 1 gauge + (3 buckets + sum + count) + (2 quantiles + sum + count) + 1.
    assert_eq!(n, 2 + 1 + 5 + 4 + 1);
    assert_eq!(rb.num_rows(), 6);
    let r = row_of(&rb, "node_cpu_seconds_total");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("sum"));
    assert_eq!(s(&rb, "description", r).as_deref(), Some("Seconds the CPUs spent in each mode."));
    assert_eq!(s(&rb, "service_name", r).as_deref(), Some("node"));
    assert_eq!(
        map(&rb, "resource_attributes", r),
        vec![
            ("service.name".into(), "node".into()),
            ("service.instance.id".into(), "10.0.0.1:9100".into())
        ]
    );
    assert_eq!(timestamp(&rb, r), AT);
    let g = row_of(&rb, "node_load1");
    assert_eq!(s(&rb, "metric_type", g).as_deref(), Some("gauge"));
    // The text format's timestamps are milliseconds.
    assert_eq!(timestamp(&rb, g), 1_700_000_000_123_000_000);
    let h = row_of(&rb, "http_request_duration_seconds");
    assert_eq!(s(&rb, "metric_type", h).as_deref(), Some("histogram"));
    assert_eq!(list_f(&rb, "explicit_bounds", h), vec![0.1, 1.0]);
    assert_eq!(list_u(&rb, "bucket_counts", h), vec![3, 2, 1]);
    assert_eq!(u(&rb, "count", h), Some(6));
    assert_eq!(f(&rb, "sum", h), Some(2.5));
    assert_eq!(map(&rb, "attributes", h), vec![("handler".into(), "/q".into())]);
    let q = row_of(&rb, "rpc_seconds");
    assert_eq!(s(&rb, "metric_type", q).as_deref(), Some("summary"));
    assert_eq!(u(&rb, "count", q), Some(40));
    let x = row_of(&rb, "untyped_thing");
    assert_eq!(s(&rb, "metric_type", x).as_deref(), Some("gauge"));
    // Escapes and separators inside a quoted value survive.
    assert_eq!(map(&rb, "attributes", x), vec![("path".into(), "a,b=c \"q\"".into())]);
}

#[test]
fn target_labels_win_unless_honor_labels() {
    let t = target();
    let page = "# TYPE jobs gauge\njobs{job=\"batch\",instance=\"x\"} 1\n";
    let (rb, _) = rows(page, false, &shape(&t)).unwrap();
    assert_eq!(s(&rb, "service_name", 0).as_deref(), Some("node"));
    let attrs = map(&rb, "attributes", 0);
    assert!(attrs.contains(&("exported_job".into(), "batch".into())), "{attrs:?}");
    assert!(attrs.contains(&("exported_instance".into(), "x".into())), "{attrs:?}");
    let honor = Shape {
        honor_labels: true,
        ..shape(&t)
    };
    let (rb, _) = rows(page, false, &honor).unwrap();
    assert_eq!(s(&rb, "service_name", 0).as_deref(), Some("batch"));
    assert!(map(&rb, "attributes", 0).is_empty());
}

#[test]
fn honor_timestamps_off_uses_the_scrape_time() {
    let t = target();
    let off = Shape {
        honor_timestamps: false,
        ..shape(&t)
    };
    let (rb, _) = rows("g 1 1600000000000\n", false, &off).unwrap();
    assert_eq!(timestamp(&rb, 0), AT);
    // Honoured, a timestamp far from the scrape is dropped (it would open an hour of its own).
    let mut b = MetricsBuilder::default();
    let n = append_page("g 1 1600000000000\nh 2 1700000000000\n", false, &shape(&t), &mut b).unwrap();
    assert_eq!(n, Scraped { samples: 2, out_of_bounds: 1 });
    assert_eq!(b.finish().unwrap().num_rows(), 1);
}

#[test]
fn openmetrics_counters_keep_total_and_created() {
    let t = target();
    let page = "# TYPE requests counter\n# HELP requests Requests.\nrequests_total{code=\"200\"} 10\nrequests_created{code=\"200\"} 1600000000.5\n# TYPE build info\nbuild_info{version=\"1.2\"} 1\n# TYPE temp_celsius gauge\n# UNIT temp_celsius celsius\ntemp_celsius 21.5\n# EOF\n";
    let (rb, n) = rows(page, true, &shape(&t)).unwrap();
    assert_eq!(n, 3);
    let r = row_of(&rb, "requests_total");
    assert_eq!(s(&rb, "metric_type", r).as_deref(), Some("sum"));
    let start = rb
        .column_by_name("start_timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(start.value(r), 1_600_000_000_500_000_000);
    assert_eq!(s(&rb, "unit", row_of(&rb, "temp_celsius")).as_deref(), Some("celsius"));
    let i = row_of(&rb, "build_info");
    assert_eq!(f(&rb, "value", i), Some(1.0));
    assert_eq!(map(&rb, "attributes", i), vec![("version".into(), "1.2".into())]);
}

#[test]
fn garbage_and_limits_fail_the_scrape_with_a_reason() {
    let t = target();
    let e = rows("<html>not metrics</html>\n", false, &shape(&t)).unwrap_err();
    assert!(e.contains("line 1: expected a metric name"), "{e}");
    let e = rows("# TYPE a gauge\na 1\n", true, &shape(&t)).unwrap_err();
    assert!(e.contains("does not end with # EOF"), "{e}");
    let many: String = (0..20).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
    let mut small = shape(&t);
    small.bounds.max_samples = 10;
    let e = rows(&many, false, &small).unwrap_err();
    assert!(e.contains("more than 10 samples (sources.prometheus_scrape.max_samples)"), "{e}");
    assert_eq!(count_sample_lines(&many), 20);
    let wide: String = format!(
        "w{{{}}} 1\n",
        (0..20).map(|i| format!("l{i}=\"v\"")).collect::<Vec<_>>().join(",")
    );
    let e = rows(&wide, false, &shape(&t)).unwrap_err();
    assert!(e.contains("max_labels_per_series"), "{e}");
}

#[test]
fn undeclared_series_and_empty_families_read() {
    let page = "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n# TYPE e counter\nloose 4\nother{a=\"b\"} 5\n";
    let t = target();
    let (rb, n) = rows(page, false, &shape(&t)).unwrap();
    assert_eq!((rb.num_rows(), n), (3, 5));
    assert_eq!(s(&rb, "metric_type", row_of(&rb, "loose")).as_deref(), Some("gauge"));
    assert_eq!(s(&rb, "metric_type", row_of(&rb, "s")).as_deref(), Some("summary"));
}

#[test]
fn openmetrics_sample_timestamps_are_seconds_and_gauge_histograms_read() {
    let page = "# TYPE g gauge\ng 1 1700000000.25\n# TYPE q gaugehistogram\nq_bucket{le=\"1\"} 2\nq_bucket{le=\"+Inf\"} 3\nq_gsum 1.5\nq_gcount 3\n# EOF\n";
    let t = target();
    let (rb, n) = rows(page, true, &shape(&t)).unwrap();
    assert_eq!(n, 5);
    assert_eq!(timestamp(&rb, row_of(&rb, "g")), 1_700_000_000_250_000_000);
    let q = row_of(&rb, "q");
    assert_eq!(s(&rb, "metric_type", q).as_deref(), Some("histogram"));
    assert_eq!(u(&rb, "count", q), Some(3));
    assert_eq!(f(&rb, "sum", q), Some(1.5));
}

#[test]
fn a_last_line_without_newline_is_read() {
    let t = target();
    let (rb, n) = rows("a 1\nb 2", false, &shape(&t)).unwrap();
    assert_eq!((rb.num_rows(), n), (2, 2));
}

#[test]
fn the_report_carries_the_target_labels() {
    let t = target();
    let mut b = MetricsBuilder::default();
    append_report(&t, AT, false, 0.25, 0, &mut b);
    let rb = b.finish().unwrap();
    let up = row_of(&rb, "up");
    assert_eq!(f(&rb, "value", up), Some(0.0));
    assert_eq!(s(&rb, "service_name", up).as_deref(), Some("node"));
    let d = row_of(&rb, "scrape_duration_seconds");
    assert_eq!(f(&rb, "value", d), Some(0.25));
    let n = row_of(&rb, "scrape_samples_scraped");
    assert_eq!(f(&rb, "value", n), Some(0.0));
}
