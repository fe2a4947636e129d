//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, read in one
//! linear pass, line by line, with the limits checked while reading (so a page over them
//! costs no more than its body). Lenient where Prometheus is: samples without a `# TYPE`,
//! families whose series have different label names, empty families, negative sums, and
//! an empty page all read; OpenMetrics exemplars are skipped.
//!
//! No crate fits here: `prometheus-parse` splits label values on `,` and `=` and skips lines
//! it cannot read, and `openmetrics-parser` is LGPL-3.0, refuses pages Prometheus reads, and
//! spends time and memory superlinear in the page.

use std::borrow::Cow;
use std::collections::HashMap;

/// Which text format a page is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (timestamps in milliseconds).
    Text,
    /// OpenMetrics 1.0 text (timestamps in seconds, `# EOF` at the end).
    OpenMetrics,
}

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `untyped` / `unknown`.
    Unknown,
}

impl FamilyType {
    fn parse(s: &str) -> Option<FamilyType> {
        Some(match s {
            "counter" => FamilyType::Counter,
            "gauge" => FamilyType::Gauge,
            "histogram" => FamilyType::Histogram,
            "gaugehistogram" => FamilyType::GaugeHistogram,
            "summary" => FamilyType::Summary,
            "info" => FamilyType::Info,
            "stateset" => FamilyType::StateSet,
            "untyped" | "unknown" => FamilyType::Unknown,
            _ => return None,
        })
    }

    /// The suffixes its series may add to the family name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            FamilyType::Counter => &["_total", "_created"],
            FamilyType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            FamilyType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            FamilyType::Summary => &["_sum", "_count", "_created"],
            FamilyType::Info => &["_info"],
            FamilyType::Gauge | FamilyType::StateSet | FamilyType::Unknown => &[],
        }
    }
}

/// A metric family's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    /// The family name.
    pub name: Cow<'a, str>,
    /// `# TYPE` (unknown without one).
    pub kind: FamilyType,
    /// `# HELP`, unescaped.
    pub help: Option<Cow<'a, str>>,
    /// `# UNIT`.
    pub unit: Option<Cow<'a, str>>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The family it belongs to (an index into [`Page::families`]), if any declared it.
    pub family: Option<usize>,
    /// The series name (`x_bucket`, `x_total`, ...).
    pub name: Cow<'a, str>,
    /// Its labels, unescaped, in page order.
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The value.
    pub value: f64,
    /// The timestamp as written (milliseconds in the text format, seconds in OpenMetrics).
    pub timestamp: Option<f64>,
}

/// A parsed page.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Page<'a> {
    /// Families declared by `# TYPE`, `# HELP` or `# UNIT`.
    pub families: Vec<Family<'a>>,
    /// Samples in page order.
    pub samples: Vec<Sample<'a>>,
}

/// Bounds checked while reading.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most samples.
    pub max_samples: usize,
    /// Most labels per series, the name included.
    pub max_labels_per_series: usize,
    /// Most bytes of the name, label names and values of a series.
    pub max_label_bytes_per_series: usize,
}

/// Why a page was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// A line that does not follow the format.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// More samples than `max_samples`.
    #[error("the page has more than {max} samples (sources.prometheus_scrape.max_samples)")]
    TooManySamples {
        /// The limit.
        max: usize,
    },
    /// A series over a label limit.
    #[error("line {line}: series {name:?} has {what}, over sources.prometheus_scrape.{key} ({max})")]
    Labels {
        /// 1-based line number.
        line: usize,
        /// The series name.
        name: String,
        /// What it has.
        what: String,
        /// The key of the limit.
        key: &'static str,
        /// The limit.
        max: usize,
    },
    /// An OpenMetrics page without `# EOF` (cut short).
    #[error("the OpenMetrics page does not end with # EOF (cut short?)")]
    NoEof,
    /// The page's series do not map to rows (over the row budget).
    #[error("{0}")]
    Rows(String),
}

/// Parses a page.
pub fn parse<'a>(body: &'a str, format: Format, bounds: &Bounds) -> Result<Page<'a>, PageError> {
    let mut page = Page::default();
    let mut by_name: HashMap<Cow<'_, str>, usize> = HashMap::new();
    let mut eof = false;
    for (i, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let n = i + 1;
        let syntax = |reason: String| PageError::Syntax { line: n, reason };
        if eof {
            if line.is_empty() {
                continue;
            }
            return Err(syntax("text after # EOF".into()));
        }
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            if format == Format::OpenMetrics && comment.trim_end() == "EOF" {
                eof = true;
                continue;
            }
            descriptor(comment, format, &mut page, &mut by_name).map_err(syntax)?;
            continue;
        }
        if page.samples.len() == bounds.max_samples {
            return Err(PageError::TooManySamples {
                max: bounds.max_samples,
            });
        }
        let mut s = sample(trimmed, format).map_err(syntax)?;
        check(&s, n, bounds)?;
        s.family = family_of(&s.name, &page.families, &by_name);
        page.samples.push(s);
    }
    if format == Format::OpenMetrics && !eof {
        return Err(PageError::NoEof);
    }
    Ok(page)
}

/// The family a series belongs to: the one of its own name, else the one its name ends a
/// suffix of (`x_bucket` of histogram `x`).
fn family_of(
    name: &str,
    families: &[Family<'_>],
    by_name: &HashMap<Cow<'_, str>, usize>,
) -> Option<usize> {
    if let Some(&i) = by_name.get(name) {
        return Some(i);
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount",
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(&i) = by_name.get(base) {
                if families[i].kind.suffixes().contains(&suffix) {
                    return Some(i);
                }
            }
        }
    }
    None
}

fn check(s: &Sample<'_>, line: usize, bounds: &Bounds) -> Result<(), PageError> {
    let count = s.labels.len() + 1;
    let err = |what: String, key, max| PageError::Labels {
        line,
        name: s.name.to_string(),
        what,
        key,
        max,
    };
    if count > bounds.max_labels_per_series {
        return Err(err(
            format!("{count} labels"),
            "max_labels_per_series",
            bounds.max_labels_per_series,
        ));
    }
    let bytes = s.name.len()
        + s.labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if bytes > bounds.max_label_bytes_per_series {
        return Err(err(
            format!("{bytes} bytes of labels"),
            "max_label_bytes_per_series",
            bounds.max_label_bytes_per_series,
        ));
    }
    Ok(())
}

/// A `# HELP`, `# TYPE` or `# UNIT` line (anything else after `#` is a comment).
fn descriptor<'a>(
    comment: &'a str,
    format: Format,
    page: &mut Page<'a>,
    by_name: &mut HashMap<Cow<'a, str>, usize>,
) -> Result<(), String> {
    let (keyword, rest) = split_word(comment);
    if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
        return Ok(());
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let (name, rest) = if rest.starts_with('"') {
        let (name, used) = quoted(rest)?;
        (name, &rest[used..])
    } else {
        let (name, rest) = split_word(rest);
        if !valid_metric_name(name) {
            return Err(format!("# {keyword}: {name:?} is not a metric name"));
        }
        (Cow::Borrowed(name), rest)
    };
    let text = rest.strip_prefix([' ', '\t']).unwrap_or(rest);
    let i = match by_name.get(&name) {
        Some(&i) => i,
        None => {
            page.families.push(Family {
                name: name.clone(),
                kind: FamilyType::Unknown,
                help: None,
                unit: None,
            });
            by_name.insert(name, page.families.len() - 1);
            page.families.len() - 1
        }
    };
    let f = &mut page.families[i];
    match keyword {
        "TYPE" => {
            let t = text.trim();
            f.kind = FamilyType::parse(t).ok_or_else(|| format!("unknown metric type {t:?}"))?;
        }
        "HELP" => f.help = Some(unescape(text, format == Format::OpenMetrics)),
        _ => f.unit = Some(Cow::Borrowed(text.trim())),
    }
    Ok(())
}

fn split_word(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Unescapes `\\`, `\n` (and `\"` in label values and OpenMetrics text); other escapes stay
/// as written.
fn unescape(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// A quoted string at the start of `s` (after its opening `"`): its unescaped value and the
/// bytes it took, quotes included.
fn quoted(s: &str) -> Result<(Cow<'_, str>, usize), String> {
    let body = &s[1..];
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok((unescape(&body[..i], true), i + 2)),
            _ => i += 1,
        }
    }
    Err("a quoted string is not closed".into())
}

/// A sample line: `name{labels} value [timestamp] [# exemplar]`, or `{"name", labels} ...`.
fn sample(line: &str, format: Format) -> Result<Sample<'_>, String> {
    let mut rest = line;
    let mut name: Option<Cow<'_, str>> = None;
    if !rest.starts_with('{') {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let n = &rest[..end];
        if !valid_metric_name(n) {
            return Err(format!(
                "expected a metric name, found {:?}",
                rest.chars().take(20).collect::<String>()
            ));
        }
        name = Some(Cow::Borrowed(n));
        rest = rest[end..].trim_start_matches([' ', '\t']);
    }
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (n, used) = label_set(inner, &mut labels, name.is_none())?;
        if let Some(n) = n {
            name = Some(n);
        }
        rest = &inner[used..];
    }
    let name = name.ok_or("the braces name no metric")?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (value, rest) = split_word(rest);
    if value.is_empty() {
        return Err(format!("series {name:?} has no value"));
    }
    let value = parse_number(value).ok_or_else(|| format!("value {value:?} is not a number"))?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (ts, rest) = if rest.is_empty() || rest.starts_with('#') {
        (None, rest)
    } else {
        let (t, rest) = split_word(rest);
        let t = parse_number(t)
            .filter(|t| t.is_finite())
            .ok_or_else(|| format!("timestamp {t:?} is not a number"))?;
        (Some(t), rest.trim_start_matches([' ', '\t']))
    };
    // What may follow: an OpenMetrics exemplar (`# {...} value [ts]`), which is not stored.
    let exemplar = format == Format::OpenMetrics && rest.starts_with('#');
    if !(rest.is_empty() || exemplar) {
        return Err(format!(
            "unexpected {:?} after the sample",
            rest.chars().take(20).collect::<String>()
        ));
    }
    Ok(Sample {
        family: None,
        name,
        labels,
        value,
        timestamp: ts,
    })
}

/// The labels after `{`, up to and including `}`; returns a quoted metric name given first
/// (when `name_allowed`) and the bytes used.
fn label_set<'a>(
    s: &'a str,
    labels: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    name_allowed: bool,
) -> Result<(Option<Cow<'a, str>>, usize), String> {
    let mut name = None;
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while s[*i..].starts_with([' ', '\t']) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if s[i..].starts_with('}') {
            return Ok((name, i + 1));
        }
        let was_quoted = s[i..].starts_with('"');
        let key: Cow<'a, str> = if was_quoted {
            let (k, used) = quoted(&s[i..])?;
            i += used;
            k
        } else {
            let end = s[i..]
                .find(|c: char| !label_name_char(c))
                .map_or(s.len(), |e| i + e);
            if end == i {
                return Err(format!(
                    "expected a label name, found {:?}",
                    s[i..].chars().take(20).collect::<String>()
                ));
            }
            let k = &s[i..end];
            i = end;
            Cow::Borrowed(k)
        };
        skip_ws(&mut i);
        if let Some(after) = s[i..].strip_prefix('=') {
            i = s.len() - after.len();
            skip_ws(&mut i);
            if !s[i..].starts_with('"') {
                return Err(format!("the value of label {key:?} is not quoted"));
            }
            let (v, used) = quoted(&s[i..])?;
            i += used;
            labels.push((key, v));
        } else if was_quoted && name_allowed && name.is_none() && labels.is_empty() {
            // `{"metric.name", ...}`: a quoted name alone, first, is the metric's name.
            name = Some(key);
        } else {
            return Err(format!("label {key:?} has no '='"));
        }
        skip_ws(&mut i);
        if s[i..].starts_with(',') {
            i += 1;
        } else if !s[i..].starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// A number as Go's `ParseFloat` reads it (`+Inf`, `-Inf`, `NaN`, exponents).
fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
