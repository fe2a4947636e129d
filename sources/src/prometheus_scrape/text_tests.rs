use super::*;

const WIDE: Bounds = Bounds {
    max_samples: 1000,
    max_labels_per_series: 64,
    max_label_bytes_per_series: 4096,
};

fn text(page: &str) -> Page<'_> {
    parse(page, Format::Text, &WIDE).unwrap()
}

fn labels<'a>(s: &'a Sample<'_>) -> Vec<(&'a str, &'a str)> {
    s.labels.iter().map(|(k, v)| (&**k, &**v)).collect()
}

#[test]
fn families_types_and_members() {
    let p = text(
        "# HELP h Latency\\nin seconds.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\n# TYPE c counter\nc_total 7 1700000000123\nloose 4\n",
    );
    assert_eq!(p.families.len(), 2);
    assert_eq!(p.families[0].kind, FamilyType::Histogram);
    assert_eq!(p.families[0].help.as_deref(), Some("Latency\nin seconds."));
    let fam: Vec<Option<usize>> = p.samples.iter().map(|s| s.family).collect();
    // `c_total` belongs to counter `c`; `loose` has no family.
    assert_eq!(fam, vec![Some(0), Some(0), Some(0), Some(0), Some(1), None]);
    assert_eq!(p.samples[1].value, 3.0);
    assert_eq!(p.samples[4].timestamp, Some(1_700_000_000_123.0));
    assert_eq!(labels(&p.samples[1]), vec![("le", "+Inf")]);
}

#[test]
fn label_values_keep_what_naive_splitting_breaks() {
    let p = text("m{a=\"x,y=z\",b=\"q\\\"uote\\\\ \\n\", c=\"\"} -1e3\n");
    assert_eq!(
        labels(&p.samples[0]),
        vec![("a", "x,y=z"), ("b", "q\"uote\\ \n"), ("c", "")]
    );
    assert_eq!(p.samples[0].value, -1000.0);
}

#[test]
fn lenient_where_prometheus_is() {
    // Different label names in one family, an empty family, an undeclared series after a
    // declared one, trailing comma, tabs, CRLF, NaN, no final newline, an empty page.
    let p = text("# TYPE a gauge\na{x=\"1\"} 1\na{y=\"2\",} 2\n# TYPE empty counter\n# HELP empty Nothing yet.\nb\t3\r\nc NaN");
    assert_eq!(p.samples.len(), 4);
    assert!(p.samples[3].value.is_nan());
    assert_eq!(p.samples[2].family, None);
    assert!(text("").samples.is_empty());
    assert!(text("# just a comment\n\n").samples.is_empty());
}

#[test]
fn utf8_quoted_names() {
    let p = text("# TYPE \"http.requests\" counter\n{\"http.requests\", code=\"200\"} 5\n");
    assert_eq!(p.samples[0].name, "http.requests");
    assert_eq!(p.samples[0].family, Some(0));
    assert_eq!(labels(&p.samples[0]), vec![("code", "200")]);
}

#[test]
fn openmetrics_needs_eof_and_skips_exemplars() {
    let page = "# TYPE r counter\n# UNIT r seconds\nr_total{a=\"b\"} 1 1700000000.5 # {trace_id=\"x\"} 1 1700000000\nr_created{a=\"b\"} 1600000000\n# TYPE empty gauge\n# EOF\n";
    let p = parse(page, Format::OpenMetrics, &WIDE).unwrap();
    assert_eq!(p.samples.len(), 2);
    assert_eq!(p.samples[0].family, Some(0));
    assert_eq!(p.samples[1].family, Some(0));
    assert_eq!(p.samples[0].timestamp, Some(1_700_000_000.5));
    assert_eq!(p.families[0].unit.as_deref(), Some("seconds"));
    assert_eq!(
        parse("a 1\n", Format::OpenMetrics, &WIDE).unwrap_err(),
        PageError::NoEof
    );
    assert!(parse("# EOF\nx 1\n", Format::OpenMetrics, &WIDE).is_err());
    assert!(parse("# EOF\n", Format::OpenMetrics, &WIDE).unwrap().samples.is_empty());
}

#[test]
fn garbage_names_its_line() {
    for (page, want) in [
        ("ok 1\n<html>\n", "line 2: expected a metric name"),
        ("m{a=1} 2\n", "line 1: the value of label \"a\" is not quoted"),
        ("m{a=\"1\" 2\n", "line 1: expected ',' or '}'"),
        ("m{a=\"1} 2\n", "line 1: a quoted string is not closed"),
        ("m one\n", "line 1: value \"one\" is not a number"),
        ("m\n", "line 1: series \"m\" has no value"),
        ("m 1 2 3\n", "line 1: unexpected \"3\""),
        ("# TYPE m bogus\n", "line 1: unknown metric type \"bogus\""),
    ] {
        let e = parse(page, Format::Text, &WIDE).unwrap_err().to_string();
        assert!(e.starts_with(want), "{page:?}: {e}");
    }
}

#[test]
fn limits_stop_reading_early() {
    let tight = Bounds {
        max_samples: 3,
        max_labels_per_series: 3,
        max_label_bytes_per_series: 20,
    };
    let e = parse("a 1\nb 1\nc 1\nd 1\n", Format::Text, &tight).unwrap_err();
    assert_eq!(e, PageError::TooManySamples { max: 3 });
    let e = parse("w{a=\"1\",b=\"2\",c=\"3\"} 1\n", Format::Text, &tight)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 labels, over sources.prometheus_scrape.max_labels_per_series (3)"), "{e}");
    let e = parse("w{a=\"0123456789012345678\"} 1\n", Format::Text, &tight)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_label_bytes_per_series (20)"), "{e}");
}
