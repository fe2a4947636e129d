//! Series (from a remote write request or a scraped page) → rows: classic histograms and
//! summaries are reassembled from their series, native histograms become exponential
//! histograms, and every row goes through the shared mapping of the parent module. Samples
//! and native histograms are remote write's protobuf messages, which a scraped page's samples
//! are turned into.

use std::collections::HashMap;

use weir_pipelines::metricrows::{ExpBuckets, MetricFields, MetricsBuilder, Point};

use super::{append_row, grouped, label, scalar, whole, Group, Kind, Scalar, CUMULATIVE};
use crate::prometheus_remote_write::proto::{Count, Histogram, Sample, ZeroCount};

/// The stale marker: a NaN Prometheus writes when a series disappears.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Limits on one request, named after their keys.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The key prefix in messages (`sources.prometheus_remote_write`).
    pub key: &'static str,
    /// Scope name of every row (the source's name).
    pub scope: &'static str,
    /// Labels per series (`__name__` included).
    pub max_labels_per_series: usize,
    /// Bytes of label names and values per series.
    pub max_label_bytes_per_series: usize,
    /// Bytes of rows one request may expand to (labels are copied to every sample's row,
    /// native histogram buckets are filled between spans).
    pub max_row_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key: "sources.prometheus_remote_write",
            scope: "prometheus_remote_write",
            max_labels_per_series: 128,
            max_label_bytes_per_series: 16 << 10,
            max_row_bytes: 256 << 20,
        }
    }
}

/// What a request carried, for the 2.0 response headers and the agent's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Float samples accepted (stale markers included: they are consumed, not stored).
    pub samples: u64,
    /// Native histogram samples accepted (stale markers included).
    pub histograms: u64,
    /// Exemplars received (not stored).
    pub exemplars: u64,
    /// Stale markers dropped.
    pub stale: u64,
}

/// Label pairs, `__name__` apart.
pub type Labels<'a> = Vec<(&'a str, &'a str)>;

/// One series, whichever protocol version or page it came from.
pub struct Series<'a> {
    /// `__name__`.
    pub name: &'a str,
    /// Labels but `__name__`.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Bytes of label names and values (the row budget counts them per sample).
    pub label_bytes: usize,
    /// Float samples (a timestamp of 0 means the receive time).
    pub samples: &'a [Sample],
    /// Native histogram samples.
    pub histograms: &'a [Histogram],
    /// The type its metadata gives.
    pub kind: Kind,
    /// `# HELP`.
    pub help: Option<&'a str>,
    /// `# UNIT`.
    pub unit: Option<&'a str>,
    /// Created timestamp, unix nanoseconds.
    pub start: Option<i64>,
}

/// `None` for an empty string.
pub fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Milliseconds to nanoseconds.
pub fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// The part a series plays in a classic histogram or summary.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Bucket(f64),
    Quantile(f64),
    Sum,
    Count,
}

fn parse_bound(s: &str, what: &str, name: &str) -> Result<f64, String> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        t => t
            .parse::<f64>()
            .ok()
            .filter(|v| !v.is_nan())
            .ok_or_else(|| format!("series {name:?}: {what}={s:?} is not a number")),
    }
}

/// Tracks the bytes of rows a request expands to.
struct Budget<'l> {
    used: usize,
    limits: &'l Limits,
}

impl Budget<'_> {
    fn add(&mut self, bytes: usize) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limits.max_row_bytes {
            return Err(format!(
                "the request expands to more than {}.max_row_bytes ({} bytes) of rows: labels are copied to every sample and native histogram buckets are filled between spans",
                self.limits.key, self.limits.max_row_bytes
            ));
        }
        Ok(())
    }

    fn row(&mut self, name: &str, label_bytes: usize) -> Result<(), String> {
        self.add(128 + name.len() + label_bytes)
    }
}

/// Appends every series of a request (see the module docs for the mapping).
pub fn append(
    all: &[Series<'_>],
    received_at: i64,
    limits: &Limits,
    b: &mut MetricsBuilder,
) -> Result<Stats, String> {
    let mut stats = Stats::default();
    let mut budget = Budget { used: 0, limits };
    // Which families are classic histograms and summaries: by metadata, else by the `le` and
    // `quantile` labels.
    let mut histograms: HashMap<&str, bool> = HashMap::new();
    for s in all {
        let base = |suffix: &str| s.name.strip_suffix(suffix);
        match s.kind {
            Kind::Histogram | Kind::GaugeHistogram => {
                if let Some(base) = base("_bucket").or(base("_sum")).or(base("_count")) {
                    histograms.insert(base, true);
                }
            }
            Kind::Summary => {
                if let Some(base) = base("_sum").or(base("_count")) {
                    histograms.entry(base).or_insert(false);
                } else {
                    histograms.entry(s.name).or_insert(false);
                }
            }
            Kind::Unknown => {
                if let Some(base) = base("_bucket").filter(|_| label(&s.labels, "le").is_some()) {
                    histograms.insert(base, true);
                } else if label(&s.labels, "quantile").is_some() {
                    histograms.entry(s.name).or_insert(false);
                }
            }
            _ => {}
        }
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut index: HashMap<(&str, Labels<'_>, i64), usize> = HashMap::new();
    for s in all {
        let role = role(s, &histograms)?;
        for h in s.histograms {
            stats.histograms += 1;
            if h.sum.to_bits() == STALE_NAN {
                stats.stale += 1;
                continue;
            }
            native(s, h, received_at, &mut budget, b)?;
        }
        for sample in s.samples {
            stats.samples += 1;
            if sample.value.to_bits() == STALE_NAN {
                stats.stale += 1;
                continue;
            }
            let timestamp = if sample.timestamp == 0 {
                received_at
            } else {
                ms_to_ns(sample.timestamp)
            };
            let Some((base, role)) = role else {
                budget.row(s.name, s.label_bytes)?;
                let series = Scalar {
                    scope: limits.scope,
                    name: s.name,
                    labels: &s.labels,
                    kind: s.kind,
                    help: s.help,
                    unit: s.unit,
                    start: s.start,
                };
                scalar(&series, timestamp, sample.value, b);
                continue;
            };
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .copied()
                .filter(|(k, _)| !matches!(role, Role::Bucket(_)) || *k != "le")
                .filter(|(k, _)| !matches!(role, Role::Quantile(_)) || *k != "quantile")
                .collect();
            let key = (base, labels, timestamp);
            let i = match index.get(&key) {
                Some(&i) => i,
                None => {
                    // Charged when the group is made, not after all of them exist: a request
                    // of many small samples cannot build unbounded groups first.
                    let label_bytes: usize = key.1.iter().map(|(k, v)| k.len() + v.len()).sum();
                    budget.row(base, label_bytes + 32 * key.1.len())?;
                    groups.push(Group {
                        base,
                        labels: key.1.clone(),
                        timestamp,
                        start: s.start,
                        help: None,
                        unit: None,
                        histogram: histograms.get(base).copied().unwrap_or(false),
                        buckets: Vec::new(),
                        quantiles: Vec::new(),
                        sum: None,
                        count: None,
                    });
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let g = &mut groups[i];
            g.help = g.help.or(s.help);
            g.unit = g.unit.or(s.unit);
            g.start = g.start.or(s.start);
            let v = sample.value;
            match role {
                Role::Bucket(le) => {
                    budget.add(16)?;
                    g.buckets.push((le, v))
                }
                Role::Quantile(q) => {
                    budget.add(16)?;
                    g.quantiles.push((q, v))
                }
                Role::Sum => g.sum = Some(v),
                Role::Count => g.count = Some(v),
            }
        }
    }
    for g in &mut groups {
        grouped(limits.scope, g, b);
    }
    Ok(stats)
}

/// The family and part of a series that belongs to a classic histogram or summary.
fn role<'a>(
    s: &Series<'a>,
    families: &HashMap<&str, bool>,
) -> Result<Option<(&'a str, Role)>, String> {
    let is = |base: &str, histogram: Option<bool>| {
        families
            .get(base)
            .is_some_and(|h| histogram.is_none_or(|want| *h == want))
    };
    if let Some(base) = s.name.strip_suffix("_bucket") {
        if let (true, Some(le)) = (is(base, Some(true)), label(&s.labels, "le")) {
            return Ok(Some((base, Role::Bucket(parse_bound(le, "le", s.name)?))));
        }
    }
    if let Some(base) = s.name.strip_suffix("_sum").filter(|b| is(b, None)) {
        return Ok(Some((base, Role::Sum)));
    }
    if let Some(base) = s.name.strip_suffix("_count").filter(|b| is(b, None)) {
        return Ok(Some((base, Role::Count)));
    }
    if let (true, Some(q)) = (is(s.name, Some(false)), label(&s.labels, "quantile")) {
        let q = parse_bound(q, "quantile", s.name)?;
        return Ok(Some((s.name, Role::Quantile(q))));
    }
    Ok(None)
}

/// Bucket counts of one side of a native histogram: `(first Prometheus index, dense
/// counts)`, zeros filled between spans.
fn expand(
    spans: &[crate::prometheus_remote_write::proto::BucketSpan],
    deltas: &[i64],
    floats: &[f64],
    float: bool,
    side: &str,
    budget: &mut Budget<'_>,
) -> Result<Option<(i64, Vec<u64>)>, String> {
    let expected: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    let given = if float { floats.len() } else { deltas.len() } as u64;
    if expected != given {
        return Err(format!(
            "native histogram: {side} spans cover {expected} buckets but {given} counts are given"
        ));
    }
    if expected == 0 {
        return Ok(None);
    }
    let mut first = None;
    let mut next: i64 = 0;
    let mut out: Vec<u64> = Vec::new();
    let mut k = 0usize;
    let mut running: i64 = 0;
    for (i, span) in spans.iter().enumerate() {
        let start = if i == 0 {
            i64::from(span.offset)
        } else {
            next + i64::from(span.offset)
        };
        if i > 0 && start < next {
            return Err(format!(
                "native histogram: {side} span {i} has a negative gap"
            ));
        }
        let first_index = *first.get_or_insert(start);
        let gap = usize::try_from(start - first_index).unwrap_or(usize::MAX);
        let end = gap.saturating_add(span.length as usize);
        if end > out.len() {
            budget.add(8 * (end - out.len()))?;
            out.resize(end, 0);
        }
        for j in 0..span.length as usize {
            let count = if float {
                let c = floats[k];
                if !(c.is_finite() && c >= 0.0) {
                    return Err(format!(
                        "native histogram: {side} bucket count {c} is not a count"
                    ));
                }
                c.round() as u64
            } else {
                running = running.saturating_add(deltas[k]);
                u64::try_from(running).map_err(|_| {
                    format!("native histogram: {side} bucket deltas add up to a negative count")
                })?
            };
            out[gap + j] = count;
            k += 1;
        }
        next = start + i64::from(span.length);
    }
    Ok(first.map(|f| (f, out)))
}

fn otel_offset(prom_first: i64) -> Result<i32, String> {
    i32::try_from(prom_first - 1)
        .map_err(|_| format!("native histogram bucket index {prom_first} is out of range"))
}

/// A native histogram sample: an exponential histogram, or an explicit-bounds histogram for
/// custom buckets.
fn native(
    s: &Series<'_>,
    h: &Histogram,
    received_at: i64,
    budget: &mut Budget<'_>,
    b: &mut MetricsBuilder,
) -> Result<(), String> {
    let float = matches!(h.count, Some(Count::Float(_)));
    let count = match h.count {
        Some(Count::Int(c)) => c,
        Some(Count::Float(c)) => whole(c),
        None => 0,
    };
    let zero_count = match h.zero_count {
        Some(ZeroCount::Int(c)) => c,
        Some(ZeroCount::Float(c)) => whole(c),
        None => 0,
    };
    let timestamp = if h.timestamp == 0 {
        received_at
    } else {
        ms_to_ns(h.timestamp)
    };
    budget.row(s.name, s.label_bytes)?;
    let fields = MetricFields {
        unit: s.unit,
        description: s.help,
        timestamp,
        start_timestamp: s.start,
        ..Default::default()
    };
    let positive = expand(
        &h.positive_spans,
        &h.positive_deltas,
        &h.positive_counts,
        float,
        "positive",
        budget,
    )?;
    match h.schema {
        -53 => {
            let n = h.custom_values.len();
            let mut counts = vec![0u64; n + 1];
            budget.add(16 * (n + 1))?;
            if let Some((first, dense)) = &positive {
                for (j, c) in dense.iter().enumerate() {
                    let i = usize::try_from(*first)
                        .ok()
                        .and_then(|f| f.checked_add(j))
                        .filter(|i| *i <= n)
                        .ok_or_else(|| {
                            format!("native histogram with custom buckets: bucket {} is outside its {n} custom_values", first + j as i64)
                        })?;
                    counts[i] = *c;
                }
            }
            let point = Point::Histogram {
                temporality: CUMULATIVE,
                count,
                sum: Some(h.sum),
                min: None,
                max: None,
                bucket_counts: &counts,
                bounds: &h.custom_values,
            };
            append_row(budget.limits.scope, s.name, &s.labels, fields, &point, b);
        }
        -4..=8 => {
            let negative = expand(
                &h.negative_spans,
                &h.negative_deltas,
                &h.negative_counts,
                float,
                "negative",
                budget,
            )?;
            let pos_offset = positive.as_ref().map(|(f, _)| otel_offset(*f)).transpose()?;
            let neg_offset = negative.as_ref().map(|(f, _)| otel_offset(*f)).transpose()?;
            let point = Point::Exponential {
                temporality: CUMULATIVE,
                count,
                sum: Some(h.sum),
                min: None,
                max: None,
                scale: h.schema,
                zero_count,
                zero_threshold: h.zero_threshold,
                positive: positive.as_ref().zip(pos_offset).map(|((_, c), o)| ExpBuckets {
                    offset: o,
                    counts: c,
                }),
                negative: negative.as_ref().zip(neg_offset).map(|((_, c), o)| ExpBuckets {
                    offset: o,
                    counts: c,
                }),
            };
            append_row(budget.limits.scope, s.name, &s.labels, fields, &point, b);
        }
        other => {
            return Err(format!(
                "native histogram of {:?} has schema {other}: only -4..=8 and -53 (custom buckets) exist",
                s.name
            ))
        }
    }
    Ok(())
}
