//! A scraped page → rows of the metrics lake schema. The page is read by [`super::text`],
//! its samples become [`Series`] with the target's labels applied as Prometheus applies them
//! (`honor_labels`), and the series go through the mapping the remote write source uses
//! ([`crate::prometheus::series::append`]: counters, gauges, histograms and summaries
//! reassembled per label set). Every scrape also gets the series Prometheus adds (`up`,
//! `scrape_duration_seconds`, `scrape_samples_scraped`).

use std::collections::HashMap;

use weir_pipelines::metricrows::MetricsBuilder;

use super::text::{self, Bounds, FamilyType, Format, PageError};
use crate::prometheus::series::{append, Limits, Series};
use crate::prometheus::{scalar, Kind, Scalar};
use crate::prometheus_remote_write::proto::Sample;

/// Scope name of every row.
pub const SCOPE: &str = "prometheus_scrape";

/// How far before the scrape a page's own timestamp may be (older samples are dropped and
/// counted: each would open a partition, a buffer entry and a file of its own hour).
pub const MAX_SAMPLE_AGE_NS: i64 = 3_600 * 1_000_000_000;

/// How far after the scrape a page's own timestamp may be.
pub const MAX_SAMPLE_AHEAD_NS: i64 = 600 * 1_000_000_000;

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
    /// Limits on the page.
    pub bounds: Bounds,
    /// Bytes of rows the page may expand to.
    pub max_row_bytes: usize,
}

/// What a page held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scraped {
    /// Sample lines (each bucket, quantile, `_sum` and `_count` counts, as in Prometheus;
    /// OpenMetrics `_created` lines, which become start times, do not).
    pub samples: usize,
    /// Samples dropped for a timestamp outside the window around the scrape.
    pub out_of_bounds: usize,
}

/// Which format a response's `Content-Type` names.
pub fn is_openmetrics(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/openmetrics-text")
    })
}

/// Sample lines of a page, counted without parsing it (for `scrape_samples_scraped` of a
/// page refused for having too many).
pub fn count_sample_lines(body: &str) -> usize {
    body.lines()
        .map(|l| l.trim_start_matches([' ', '\t']))
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.trim_end().is_empty())
        .count()
}

/// The lake's metric type of a family type.
fn kind(t: FamilyType) -> Kind {
    match t {
        FamilyType::Counter => Kind::Counter,
        FamilyType::Gauge => Kind::Gauge,
        FamilyType::Histogram => Kind::Histogram,
        FamilyType::GaugeHistogram => Kind::GaugeHistogram,
        FamilyType::Summary => Kind::Summary,
        FamilyType::Info | FamilyType::StateSet => Kind::Other,
        FamilyType::Unknown => Kind::Unknown,
    }
}

/// Appends the rows of a scraped page. Fails on a page that does not parse or is over a
/// limit, with `b` half-filled: the caller drops it.
pub fn append_page(
    body: &str,
    openmetrics: bool,
    shape: &Shape<'_>,
    b: &mut MetricsBuilder,
) -> Result<Scraped, PageError> {
    let format = if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    let page = text::parse(body, format, &shape.bounds)?;
    let families = &page.families;
    let family_of = |s: &text::Sample<'_>| s.family.map(|i| &families[i]);

    // OpenMetrics `_created` series give their family's points a start time.
    let mut created: HashMap<(usize, GroupKey<'_>), i64> = HashMap::new();
    let is_created = |s: &text::Sample<'_>| -> Option<usize> {
        let i = s.family?;
        let f = &families[i];
        let counts = matches!(
            f.kind,
            FamilyType::Counter | FamilyType::Histogram | FamilyType::Summary
        );
        (openmetrics && counts && s.name.strip_suffix("_created") == Some(&*f.name)).then_some(i)
    };
    for s in &page.samples {
        if let Some(i) = is_created(s) {
            if s.value.is_finite() && s.value > 0.0 {
                created.insert((i, group_key(s)), seconds_to_ns(s.value));
            }
        }
    }

    // Names a gauge histogram's `_gsum` and `_gcount` take, so it reads as a histogram.
    let renamed: HashMap<usize, [String; 2]> = families
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == FamilyType::GaugeHistogram)
        .map(|(i, f)| (i, [format!("{}_sum", f.name), format!("{}_count", f.name)]))
        .collect();
    let exported: Vec<Vec<String>> = shape
        .target
        .iter()
        .map(|(k, _)| (1..=3).map(|n| format!("{}{k}", "exported_".repeat(n))).collect())
        .collect();

    // `_created` lines are consumed as start times, not counted as samples.
    let consumed = page.samples.iter().filter(|s| is_created(s).is_some()).count();
    let mut scraped = Scraped {
        samples: page.samples.len() - consumed,
        out_of_bounds: 0,
    };
    // Pass 1: the samples' values and times (the series borrow them below).
    let mut kept: Vec<usize> = Vec::with_capacity(page.samples.len());
    let mut values: Vec<Sample> = Vec::with_capacity(page.samples.len());
    for (i, s) in page.samples.iter().enumerate() {
        if is_created(s).is_some() {
            continue;
        }
        let at = match s.timestamp {
            Some(t) if shape.honor_timestamps => {
                let ns = if openmetrics {
                    seconds_to_ns(t)
                } else {
                    (t as i64).saturating_mul(1_000_000)
                };
                if ns < shape.scraped_at.saturating_sub(MAX_SAMPLE_AGE_NS)
                    || ns > shape.scraped_at.saturating_add(MAX_SAMPLE_AHEAD_NS)
                {
                    scraped.out_of_bounds += 1;
                    continue;
                }
                ns / 1_000_000
            }
            // 0: the scrape's time (`append` takes 0 for "when received").
            _ => 0,
        };
        kept.push(i);
        values.push(Sample {
            value: s.value,
            timestamp: at,
        });
    }
    // Pass 2: series with the target's labels.
    let mut all: Vec<Series<'_>> = Vec::with_capacity(kept.len());
    for (j, &i) in kept.iter().enumerate() {
        let s = &page.samples[i];
        let f = family_of(s);
        let mut name: &str = &s.name;
        if let (Some(fi), Some(f)) = (s.family, f) {
            if let Some([sum, count]) = renamed.get(&fi) {
                if s.name.strip_suffix("_gsum") == Some(&*f.name) {
                    name = sum;
                } else if s.name.strip_suffix("_gcount") == Some(&*f.name) {
                    name = count;
                }
            }
        }
        let labels = merge(s, shape, &exported)?;
        let label_bytes = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        let start = s
            .family
            .and_then(|fi| created.get(&(fi, group_key(s))).copied());
        all.push(Series {
            name,
            labels,
            label_bytes,
            samples: &values[j..j + 1],
            histograms: &[],
            kind: f.map_or(Kind::Unknown, |f| kind(f.kind)),
            help: f.and_then(|f| f.help.as_deref()).filter(|h| !h.is_empty()),
            unit: f.and_then(|f| f.unit.as_deref()).filter(|u| !u.is_empty()),
            start,
        });
    }
    let limits = Limits {
        key: super::config::KEY,
        scope: SCOPE,
        max_labels_per_series: shape.bounds.max_labels_per_series,
        max_label_bytes_per_series: shape.bounds.max_label_bytes_per_series,
        max_row_bytes: shape.max_row_bytes,
    };
    append(&all, shape.scraped_at, &limits, b).map_err(PageError::Rows)?;
    Ok(scraped)
}

/// Labels that name the point a sample is part of.
type GroupKey<'a> = Vec<(&'a str, &'a str)>;

/// A sample's labels but `le` and `quantile`, sorted: the point it is part of.
fn group_key<'a>(s: &'a text::Sample<'_>) -> GroupKey<'a> {
    let mut k: Vec<(&str, &str)> = s
        .labels
        .iter()
        .map(|(k, v)| (&**k, &**v))
        .filter(|(k, _)| *k != "le" && *k != "quantile")
        .collect();
    k.sort_unstable();
    k
}

/// OpenMetrics seconds → unix nanoseconds, whole and fractional parts apart (a product in
/// `f64` loses the last digits).
fn seconds_to_ns(t: f64) -> i64 {
    let whole = t.trunc();
    (whole as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(((t - whole) * 1e9).round() as i64)
}

/// A sample's labels merged with the target's, as Prometheus merges them: an empty label is
/// no label; a target label the page also has keeps the page's (`honor_labels`) or moves the
/// page's to `exported_<name>`.
fn merge<'a>(
    s: &'a text::Sample<'_>,
    shape: &Shape<'a>,
    exported: &'a [Vec<String>],
) -> Result<Vec<(&'a str, &'a str)>, PageError> {
    let mut out: Vec<(&str, &str)> = s
        .labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (&**k, &**v))
        .collect();
    for (t, (k, v)) in shape.target.iter().enumerate() {
        if let Some(pos) = out.iter().position(|(n, _)| n == k) {
            if shape.honor_labels {
                continue;
            }
            let free = exported[t]
                .iter()
                .find(|e| !out.iter().any(|(n, _)| n == e))
                .ok_or_else(|| {
                    PageError::Rows(format!(
                        "series {:?} has labels {k:?} and exported_{k:?} three times over",
                        s.name
                    ))
                })?;
            out[pos].0 = free;
        }
        if !v.is_empty() {
            out.push((k, v));
        }
    }
    Ok(out)
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
    let labels: Vec<(&str, &str)> = target
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (name, help, value) in [
        (
            "up",
            "1 if the target was scraped and its page read, else 0",
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
