//! Prometheus series → rows of the metrics lake schema, as the OpenTelemetry Collector's
//! Prometheus receiver maps them (docs/protocols.md has the table). Shared by the remote
//! write source and the scrape source: both turn what they receive into [`series::Series`],
//! and [`series::append`] reassembles histograms and summaries and writes the rows:
//!
//! - a counter becomes a monotonic cumulative sum, a gauge (and an info or state set) a gauge;
//! - a classic histogram's cumulative `le` counts become per-bucket counts of one histogram
//!   point; a summary's quantiles one summary point;
//! - `job` becomes `service.name` (`service.namespace` before a `/`), `instance`
//!   `service.instance.id`, every other label a point attribute.

use weir_pipelines::metricrows::{MetricFields, MetricsBuilder, Number, Point};

pub mod series;
#[cfg(test)]
pub mod testing;

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
pub const CUMULATIVE: i32 = 2;

/// A counter or gauge series, as [`scalar`] needs it.
pub struct Scalar<'a> {
    /// Scope name of the rows (the source's name).
    pub scope: &'a str,
    /// The series name.
    pub name: &'a str,
    /// Labels but `__name__`.
    pub labels: &'a [(&'a str, &'a str)],
    /// Its type.
    pub kind: Kind,
    /// `# HELP`.
    pub help: Option<&'a str>,
    /// `# UNIT`.
    pub unit: Option<&'a str>,
    /// Created timestamp, unix nanoseconds (counters only).
    pub start: Option<i64>,
}

/// The metric type of a series' metadata (the numbers of both versions' `MetricType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No type given: a name ending in `_total` is taken for a counter, anything else for a
    /// gauge.
    Unknown,
    /// A monotonic cumulative sum.
    Counter,
    /// A gauge.
    Gauge,
    /// A classic (or native) histogram.
    Histogram,
    /// A gauge histogram (mapped as a histogram).
    GaugeHistogram,
    /// A summary.
    Summary,
    /// Info and state set (gauges).
    Other,
}

impl Kind {
    /// The type of a remote write `MetricType` number.
    pub fn of(t: i32) -> Kind {
        match t {
            1 => Kind::Counter,
            2 => Kind::Gauge,
            3 => Kind::Histogram,
            4 => Kind::GaugeHistogram,
            5 => Kind::Summary,
            6 | 7 => Kind::Other,
            _ => Kind::Unknown,
        }
    }
}

/// The series of one classic histogram or summary with one label set at one time.
pub struct Group<'a> {
    /// The family name (`http_request_duration_seconds`, without `_bucket`).
    pub base: &'a str,
    /// Labels but `le` and `quantile`.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Unix nanoseconds.
    pub timestamp: i64,
    /// Created timestamp, unix nanoseconds.
    pub start: Option<i64>,
    /// `# HELP`.
    pub help: Option<&'a str>,
    /// `# UNIT`.
    pub unit: Option<&'a str>,
    /// A histogram (else a summary).
    pub histogram: bool,
    /// `(le, cumulative count)`.
    pub buckets: Vec<(f64, f64)>,
    /// `(quantile, value)`.
    pub quantiles: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: Option<f64>,
    /// `_count`.
    pub count: Option<f64>,
}

/// The value of label `name`.
pub fn label<'a>(labels: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The fields and resource of a row; `job` and `instance` are resource attributes.
pub fn append_row(
    scope: &str,
    name: &str,
    labels: &[(&str, &str)],
    fields: MetricFields<'_>,
    point: &Point<'_>,
    b: &mut MetricsBuilder,
) {
    let job = label(labels, "job");
    let instance = label(labels, "instance");
    let (namespace, service) = match job.and_then(|j| j.split_once('/')) {
        Some((ns, n)) => (Some(ns), Some(n)),
        None => (None, job),
    };
    let fields = MetricFields {
        name,
        service_name: service,
        scope_name: Some(scope),
        ..fields
    };
    b.append(
        &fields,
        point,
        |r| {
            if let Some(s) = service {
                r.entry("service.name", Some(s));
            }
            if let Some(ns) = namespace {
                r.entry("service.namespace", Some(ns));
            }
            if let Some(i) = instance {
                r.entry("service.instance.id", Some(i));
            }
        },
        |a| {
            for (k, v) in labels {
                if *k != "job" && *k != "instance" {
                    a.entry(k, Some(v));
                }
            }
        },
    );
}

/// A counter or gauge sample.
pub fn scalar(s: &Scalar<'_>, timestamp: i64, value: f64, b: &mut MetricsBuilder) {
    let counter = match s.kind {
        Kind::Counter => true,
        Kind::Unknown => s.name.ends_with("_total"),
        _ => false,
    };
    let point = if counter {
        Point::Sum {
            value: Number::Double(value),
            monotonic: true,
            temporality: CUMULATIVE,
        }
    } else {
        Point::Gauge(Number::Double(value))
    };
    let fields = MetricFields {
        unit: s.unit,
        description: s.help,
        timestamp,
        start_timestamp: if counter { s.start } else { None },
        ..Default::default()
    };
    append_row(s.scope, s.name, s.labels, fields, &point, b);
}

/// A count carried as a float (cumulative `le` buckets, `_count`, float histograms).
pub fn whole(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// A reassembled classic histogram or summary.
pub fn grouped(scope: &str, g: &mut Group<'_>, b: &mut MetricsBuilder) {
    let fields = MetricFields {
        unit: g.unit,
        description: g.help,
        timestamp: g.timestamp,
        start_timestamp: g.start,
        ..Default::default()
    };
    if g.histogram {
        g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        g.buckets.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        let inf = g
            .buckets
            .last()
            .filter(|(le, _)| *le == f64::INFINITY)
            .map(|(_, c)| *c);
        let finite: Vec<(f64, f64)> = g
            .buckets
            .iter()
            .copied()
            .filter(|(le, _)| le.is_finite())
            .collect();
        let total = g
            .count
            .or(inf)
            .or(finite.last().map(|(_, c)| *c))
            .unwrap_or(0.0);
        let bounds: Vec<f64> = finite.iter().map(|(le, _)| *le).collect();
        let mut counts = Vec::with_capacity(finite.len() + 1);
        if !g.buckets.is_empty() {
            let mut prev = 0.0;
            for (_, c) in &finite {
                counts.push(whole(c - prev));
                prev = *c;
            }
            counts.push(whole(inf.unwrap_or(total) - prev));
        }
        let point = Point::Histogram {
            temporality: CUMULATIVE,
            count: whole(total),
            sum: g.sum,
            min: None,
            max: None,
            bucket_counts: &counts,
            bounds: &bounds,
        };
        append_row(scope, g.base, &g.labels, fields, &point, b);
    } else {
        g.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        let point = Point::Summary {
            count: g.count.map(whole).unwrap_or(0),
            sum: g.sum.unwrap_or(f64::NAN),
            quantiles: &g.quantiles,
        };
        append_row(scope, g.base, &g.labels, fields, &point, b);
    }
}
