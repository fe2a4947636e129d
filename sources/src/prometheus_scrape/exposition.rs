//! A scraped page (Prometheus text format 0.0.4 or OpenMetrics 1.0, parsed by the
//! `openmetrics-parser` crate) → rows of the metrics lake schema, through the mapping the
//! remote write source uses ([`crate::prometheus`]), with the target's labels applied as
//! Prometheus applies them (`honor_labels`), and the series Prometheus adds to every scrape
//! (`up`, `scrape_duration_seconds`, `scrape_samples_scraped`).

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use openmetrics_parser::{
    MetricFamily, MetricNumber, OpenMetricsType, OpenMetricsValue, PrometheusType,
    PrometheusValue, Sample,
};
use weir_pipelines::metricrows::MetricsBuilder;

use crate::prometheus::{grouped, scalar, Group, Kind, Scalar};

/// Scope name of every row.
pub const SCOPE: &str = "prometheus_scrape";

/// How one scrape's series are labelled and bounded.
#[derive(Debug, Clone)]
pub struct Shape<'a> {
    /// The target's labels (`job`, `instance`, ...).
    pub target: &'a [(String, String)],
    /// Scraped labels win over target labels (else they are renamed `exported_<name>`).
    pub honor_labels: bool,
    /// Keep the page's timestamps (else every sample gets `scraped_at`).
    pub honor_timestamps: bool,
    /// When the scrape started, unix nanoseconds.
    pub scraped_at: i64,
    /// Most samples.
    pub max_samples: usize,
    /// Most labels per series, `__name__` included.
    pub max_labels_per_series: usize,
    /// Most bytes of label names and values per series.
    pub max_label_bytes_per_series: usize,
}

/// Which format a response's `Content-Type` names.
pub fn is_openmetrics(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
    })
}

/// Appends the rows of a scraped page; returns its sample count. Fails on a page that does
/// not parse or is over a limit, with `b` half-filled: the caller drops it.
pub fn append_page(
    body: &str,
    openmetrics: bool,
    shape: &Shape<'_>,
    b: &mut MetricsBuilder,
) -> Result<usize, String> {
    // The grammar wants every line ended, the last one too.
    let owned;
    let text = if body.is_empty() || body.ends_with('\n') {
        body
    } else {
        owned = format!("{body}\n");
        &owned
    };
    // The parser has `unwrap`s on paths its grammar should rule out: a page that reaches one
    // fails its scrape instead of the agent.
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if openmetrics {
            openmetrics_parser::openmetrics::parse_openmetrics(text).map(Page::Open)
        } else {
            openmetrics_parser::prometheus::parse_prometheus(&delimit_families(text))
                .map(Page::Text)
        }
    }))
    .map_err(|_| "the page could not be parsed (the parser gave up on it)".to_string())?;
    let page = parsed.map_err(|e| {
        let format = if openmetrics {
            "OpenMetrics"
        } else {
            "Prometheus text format"
        };
        let first = e.to_string();
        let first = first.trim();
        format!("not valid {format}: {}", first.replace('\n', " "))
    })?;
    let samples = page.samples();
    if samples > shape.max_samples {
        return Err(format!(
            "the page has {samples} samples, over sources.prometheus_scrape.max_samples ({})",
            shape.max_samples
        ));
    }
    match &page {
        Page::Text(p) => {
            let mut families: Vec<_> = p.families.values().collect();
            families.sort_by(|a, b| a.family_name.cmp(&b.family_name));
            for f in families {
                text_family(f, shape, b)?;
            }
        }
        Page::Open(p) => {
            let mut families: Vec<_> = p.families.values().collect();
            families.sort_by(|a, b| a.family_name.cmp(&b.family_name));
            for f in families {
                open_family(f, shape, b)?;
            }
        }
    }
    Ok(samples)
}

/// The text format with a `# TYPE <name> untyped` line before each sample whose family has
/// no descriptor of its own. The crate's grammar reads a family as its descriptors and then
/// every following sample, so without it an undeclared series (`a 1` after a summary, or
/// two in a row) is taken for a member of the family before it and the page is refused.
fn delimit_families(text: &str) -> Cow<'_, str> {
    // The family being read: its name and type.
    let mut family: Option<(&str, &str)> = None;
    let mut out: Option<String> = None;
    let mut done = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(comment) = t.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), kind) => {
                    family = Some((name, kind.unwrap_or("untyped")));
                }
                (Some("HELP"), Some(name), _) if family.is_none_or(|(f, _)| f != name) => {
                    family = Some((name, "untyped"));
                }
                _ => {}
            }
        } else if !t.trim().is_empty() && !t.starts_with('{') {
            let end = t
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(t.len());
            let name = &t[..end];
            if !family.is_some_and(|(f, kind)| member(name, f, kind)) {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 256));
                let at = line.as_ptr() as usize - text.as_ptr() as usize;
                o.push_str(&text[done..at]);
                done = at;
                o.push_str("# TYPE ");
                o.push_str(name);
                o.push_str(" untyped\n");
                family = Some((name, "untyped"));
            }
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[done..]);
            Cow::Owned(o)
        }
    }
}

/// Whether a sample named `name` belongs to family `family` of type `kind`.
fn member(name: &str, family: &str, kind: &str) -> bool {
    let Some(suffix) = name.strip_prefix(family) else {
        return false;
    };
    match kind {
        "histogram" => matches!(suffix, "" | "_bucket" | "_sum" | "_count"),
        "summary" => matches!(suffix, "" | "_sum" | "_count"),
        _ => suffix.is_empty(),
    }
}

/// A parsed page of either format.
enum Page {
    Text(openmetrics_parser::MetricsExposition<PrometheusType, PrometheusValue>),
    Open(openmetrics_parser::MetricsExposition<OpenMetricsType, OpenMetricsValue>),
}

impl Page {
    /// Samples as Prometheus counts them: each bucket, quantile, `_sum` and `_count`.
    fn samples(&self) -> usize {
        fn hist(h: &openmetrics_parser::HistogramValue) -> usize {
            h.buckets.len() + usize::from(h.sum.is_some()) + usize::from(h.count.is_some())
        }
        fn summ(s: &openmetrics_parser::SummaryValue) -> usize {
            s.quantiles.len() + usize::from(s.sum.is_some()) + usize::from(s.count.is_some())
        }
        match self {
            Page::Text(p) => p
                .families
                .values()
                .flat_map(|f| f.iter_samples())
                .map(|s| match &s.value {
                    PrometheusValue::Histogram(h) => hist(h),
                    PrometheusValue::Summary(v) => summ(v),
                    _ => 1,
                })
                .sum(),
            Page::Open(p) => p
                .families
                .values()
                .flat_map(|f| f.iter_samples())
                .map(|s| match &s.value {
                    OpenMetricsValue::Histogram(h) | OpenMetricsValue::GaugeHistogram(h) => {
                        hist(h)
                    }
                    OpenMetricsValue::Summary(v) => summ(v),
                    _ => 1,
                })
                .sum(),
        }
    }
}

/// A sample's labels merged with the target's, as Prometheus merges them.
fn labels<V: openmetrics_parser::RenderableMetricValue + Clone>(
    name: &str,
    sample: &Sample<V>,
    shape: &Shape<'_>,
) -> Result<Vec<(String, String)>, String> {
    let set = sample
        .get_labelset()
        .map_err(|e| format!("series {name:?}: {e}"))?;
    let mut out: Vec<(String, String)> = set
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in shape.target {
        match out.iter().position(|(n, _)| n == k) {
            Some(_) if shape.honor_labels => {}
            Some(i) => {
                // The scraped label moves aside, to `exported_<name>` (again while taken).
                let mut renamed = format!("exported_{k}");
                while out.iter().any(|(n, _)| *n == renamed) {
                    renamed.insert_str(0, "exported_");
                }
                out[i].0 = renamed;
                out.push((k.clone(), v.clone()));
            }
            None => out.push((k.clone(), v.clone())),
        }
    }
    // An empty label is no label.
    out.retain(|(_, v)| !v.is_empty());
    let count = out.len() + 1;
    if count > shape.max_labels_per_series {
        return Err(format!(
            "series {name:?} has {count} labels, over sources.prometheus_scrape.max_labels_per_series ({})",
            shape.max_labels_per_series
        ));
    }
    let bytes: usize = name.len() + out.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if bytes > shape.max_label_bytes_per_series {
        return Err(format!(
            "series {name:?} has {bytes} bytes of labels, over sources.prometheus_scrape.max_label_bytes_per_series ({})",
            shape.max_label_bytes_per_series
        ));
    }
    Ok(out)
}

fn view(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A page timestamp (`scale` nanoseconds per unit: milliseconds in the text format, seconds
/// in OpenMetrics) or the scrape's time.
fn time(ts: Option<f64>, scale: i64, shape: &Shape<'_>) -> i64 {
    match ts {
        Some(t) if shape.honor_timestamps && t.is_finite() => scaled(t, scale),
        _ => shape.scraped_at,
    }
}

/// `t` units of `scale` nanoseconds, whole and fractional parts apart (a product in `f64`
/// loses the last digits of a nanosecond timestamp).
fn scaled(t: f64, scale: i64) -> i64 {
    let whole = t.trunc();
    (whole as i64)
        .saturating_mul(scale)
        .saturating_add(((t - whole) * scale as f64).round() as i64)
}

/// OpenMetrics `_created` (seconds) → unix nanoseconds.
fn created(c: Option<f64>) -> Option<i64> {
    c.filter(|c| c.is_finite() && *c > 0.0)
        .map(|c| scaled(c, 1_000_000_000))
}

fn number(n: &MetricNumber) -> f64 {
    n.as_f64()
}

/// A family of the text format.
fn text_family(
    f: &MetricFamily<PrometheusType, PrometheusValue>,
    shape: &Shape<'_>,
    b: &mut MetricsBuilder,
) -> Result<(), String> {
    let name = f.family_name.as_str();
    let help = non_empty(&f.help);
    for s in f.iter_samples() {
        let owned = labels(name, s, shape)?;
        let labels = view(&owned);
        let timestamp = time(s.timestamp, 1_000_000, shape);
        let one = |kind: Kind, value: f64, b: &mut MetricsBuilder| {
            let series = Scalar {
                scope: SCOPE,
                name,
                labels: &labels,
                kind,
                help,
                unit: None,
                start: None,
            };
            scalar(&series, timestamp, value, b);
        };
        match &s.value {
            PrometheusValue::Counter(c) => one(Kind::Counter, number(&c.value), b),
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                one(Kind::Gauge, number(n), b)
            }
            PrometheusValue::Histogram(h) => {
                group(name, &labels, timestamp, None, help, None, Some(h), None, b)
            }
            PrometheusValue::Summary(v) => {
                group(name, &labels, timestamp, None, help, None, None, Some(v), b)
            }
        }
    }
    Ok(())
}

/// A family of OpenMetrics.
fn open_family(
    f: &MetricFamily<OpenMetricsType, OpenMetricsValue>,
    shape: &Shape<'_>,
    b: &mut MetricsBuilder,
) -> Result<(), String> {
    let family = f.family_name.as_str();
    let help = non_empty(&f.help);
    let unit = non_empty(&f.unit);
    // Series names as the text format writes them, so that a target reads the same whichever
    // format it answers in.
    let total = format!("{family}_total");
    let info = format!("{family}_info");
    for s in f.iter_samples() {
        let owned = labels(family, s, shape)?;
        let labels = view(&owned);
        let timestamp = time(s.timestamp, 1_000_000_000, shape);
        let one = |name: &str, kind: Kind, value: f64, start, b: &mut MetricsBuilder| {
            let series = Scalar {
                scope: SCOPE,
                name,
                labels: &labels,
                kind,
                help,
                unit,
                start,
            };
            scalar(&series, timestamp, value, b);
        };
        match &s.value {
            OpenMetricsValue::Counter(c) => {
                one(&total, Kind::Counter, number(&c.value), created(c.created), b)
            }
            OpenMetricsValue::Gauge(n)
            | OpenMetricsValue::Unknown(n)
            | OpenMetricsValue::StateSet(n) => one(family, Kind::Gauge, number(n), None, b),
            OpenMetricsValue::Info => one(&info, Kind::Gauge, 1.0, None, b),
            OpenMetricsValue::Histogram(h) | OpenMetricsValue::GaugeHistogram(h) => group(
                family,
                &labels,
                timestamp,
                created(h.created),
                help,
                unit,
                Some(h),
                None,
                b,
            ),
            OpenMetricsValue::Summary(v) => group(
                family,
                &labels,
                timestamp,
                created(v.created),
                help,
                unit,
                None,
                Some(v),
                b,
            ),
        }
    }
    Ok(())
}

/// A histogram or summary point.
#[allow(clippy::too_many_arguments)]
fn group(
    base: &str,
    labels: &[(&str, &str)],
    timestamp: i64,
    start: Option<i64>,
    help: Option<&str>,
    unit: Option<&str>,
    histogram: Option<&openmetrics_parser::HistogramValue>,
    summary: Option<&openmetrics_parser::SummaryValue>,
    b: &mut MetricsBuilder,
) {
    let mut g = Group {
        base,
        labels: labels.to_vec(),
        timestamp,
        start,
        help,
        unit,
        histogram: histogram.is_some(),
        buckets: Vec::new(),
        quantiles: Vec::new(),
        sum: None,
        count: None,
    };
    if let Some(h) = histogram {
        g.buckets = h
            .buckets
            .iter()
            .map(|k| (k.upper_bound, number(&k.count)))
            .collect();
        g.sum = h.sum.as_ref().map(number);
        g.count = h.count.map(|c| c as f64);
    }
    if let Some(v) = summary {
        g.quantiles = v
            .quantiles
            .iter()
            .map(|q| (q.quantile, number(&q.value)))
            .collect();
        g.sum = v.sum.as_ref().map(number);
        g.count = v.count.map(|c| c as f64);
    }
    grouped(SCOPE, &mut g, b);
}

/// The series Prometheus adds to every scrape, with the target's labels.
pub fn append_report(
    target: &[(String, String)],
    scraped_at: i64,
    up: bool,
    duration_seconds: f64,
    samples: usize,
    b: &mut MetricsBuilder,
) {
    let labels = view(target);
    for (name, help, value) in [
        (
            "up",
            "1 if the target was scraped and its page parsed, else 0",
            if up { 1.0 } else { 0.0 },
        ),
        (
            "scrape_duration_seconds",
            "Time the scrape took",
            duration_seconds,
        ),
        (
            "scrape_samples_scraped",
            "Samples the target's page held",
            samples as f64,
        ),
    ] {
        let series = Scalar {
            scope: SCOPE,
            name,
            labels: &labels,
            kind: Kind::Gauge,
            help: Some(help),
            unit: None,
            start: None,
        };
        scalar(&series, scraped_at, value, b);
    }
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
mod tests;
