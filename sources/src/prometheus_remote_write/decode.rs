//! Remote write requests → the metrics lake schema, mapped as the OpenTelemetry Collector's
//! Prometheus receiver maps scraped series (docs/protocols.md has the table):
//!
//! - a counter (metadata type counter, or without metadata a name ending in `_total`) becomes
//!   a monotonic cumulative sum; a gauge, and any series of unknown type, a gauge;
//! - the `_bucket{le}`, `_sum` and `_count` series of a classic histogram in one request are
//!   reassembled into one histogram point per label set and timestamp (cumulative `le`
//!   counts become per-bucket counts); the `{quantile}`, `_sum` and `_count` series of a
//!   summary into one summary point;
//! - a native histogram becomes an exponential histogram (scale = schema, Prometheus bucket
//!   `i` = OpenTelemetry bucket `i - 1`), or an explicit-bounds histogram for custom buckets
//!   (schema -53);
//! - `__name__` is the metric name, `job` becomes `service.name` (`service.namespace` before a
//!   `/`), `instance` becomes `service.instance.id`, every other label a point attribute;
//! - stale markers are dropped and counted; exemplars are counted, not stored (the lake has
//!   no exemplar columns yet).
//!
//! Both versions are first read into [`Series`] (2.0 through its symbol table) and share the
//! mapping.

use std::collections::HashMap;

use prost::Message;
use weir_pipelines::metricrows::MetricsBuilder;

use super::proto::{RequestV2, WriteRequest};
use super::wire;
pub use crate::prometheus::series::{Limits, Stats, STALE_NAN};
use crate::prometheus::series::{append, ms_to_ns, non_empty, Labels, Series};
use crate::prometheus::Kind;


/// Builds a series from its labels, checking the label limits.
fn series<'a>(
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Result<(&'a str, Labels<'a>, usize), String> {
    let mut name = None;
    let mut rest = Vec::new();
    let mut bytes = 0usize;
    let mut count = 0usize;
    for (k, v) in labels {
        count += 1;
        bytes += k.len() + v.len();
        if k == "__name__" {
            name = Some(v);
        } else {
            rest.push((k, v));
        }
    }
    let key = limits.key;
    if count > limits.max_labels_per_series {
        return Err(format!(
            "series {:?} has {count} labels, over {key}.max_labels_per_series ({})",
            name.unwrap_or(""),
            limits.max_labels_per_series
        ));
    }
    if bytes > limits.max_label_bytes_per_series {
        return Err(format!(
            "series {:?} has {bytes} bytes of labels, over {key}.max_label_bytes_per_series ({})",
            name.unwrap_or(""),
            limits.max_label_bytes_per_series
        ));
    }
    match name {
        Some(n) if !n.is_empty() => Ok((n, rest, bytes)),
        _ => Err("a series has no __name__ label".into()),
    }
}

/// Refuses a request whose decoded messages alone would take more than `max_row_bytes`.
fn decoded_within(estimate: u64, limits: &Limits) -> Result<(), String> {
    if estimate > limits.max_row_bytes as u64 {
        return Err(format!(
            "the request decodes to about {estimate} bytes of messages, more than {}.max_row_bytes ({} bytes)",
            limits.key, limits.max_row_bytes
        ));
    }
    Ok(())
}

/// Decodes a (decompressed) remote write 1.0 `WriteRequest`.
pub fn decode_v1(
    body: &[u8],
    received_at: i64,
    limits: &Limits,
    b: &mut MetricsBuilder,
) -> Result<Stats, String> {
    wire::check_v1(body, limits.max_labels_per_series, limits.key)?;
    decoded_within(wire::decoded_size_v1(body)?, limits)?;
    let req = WriteRequest::decode(body)
        .map_err(|e| format!("malformed remote write 1.0 WriteRequest: {e}"))?;
    let meta: HashMap<&str, _> = req
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m))
        .collect();
    let mut all = Vec::with_capacity(req.timeseries.len());
    let mut exemplars = 0u64;
    for ts in &req.timeseries {
        let (name, labels, label_bytes) = series(
            ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            limits,
        )?;
        let m = meta.get(name).or_else(|| {
            ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|s| meta.get(name.strip_suffix(s)?))
        });
        exemplars += ts.exemplars.len() as u64;
        all.push(Series {
            name,
            labels,
            label_bytes,
            samples: &ts.samples,
            histograms: &ts.histograms,
            kind: m.map(|m| Kind::of(m.r#type)).unwrap_or(Kind::Unknown),
            help: m.and_then(|m| non_empty(&m.help)),
            unit: m.and_then(|m| non_empty(&m.unit)),
            start: None,
        });
    }
    let mut stats = append(&all, received_at, limits, b)?;
    stats.exemplars = exemplars;
    Ok(stats)
}

/// Decodes a (decompressed) remote write 2.0 `io.prometheus.write.v2.Request`.
pub fn decode_v2(
    body: &[u8],
    received_at: i64,
    limits: &Limits,
    b: &mut MetricsBuilder,
) -> Result<Stats, String> {
    wire::check_v2(body, limits.max_labels_per_series, limits.key)?;
    decoded_within(wire::decoded_size_v2(body)?, limits)?;
    let req = RequestV2::decode(body)
        .map_err(|e| format!("malformed remote write 2.0 Request: {e}"))?;
    let symbols = &req.symbols;
    let sym = |r: u32| -> Result<&str, String> {
        symbols.get(r as usize).map(String::as_str).ok_or_else(|| {
            format!(
                "symbol reference {r} is out of range: the symbol table has {} entries",
                symbols.len()
            )
        })
    };
    let mut all = Vec::with_capacity(req.timeseries.len());
    let mut exemplars = 0u64;
    for ts in &req.timeseries {
        if ts.labels_refs.len() % 2 != 0 {
            return Err(format!(
                "labels_refs has {} entries, not name and value pairs",
                ts.labels_refs.len()
            ));
        }
        let pairs = ts
            .labels_refs
            .chunks_exact(2)
            .map(|p| Ok((sym(p[0])?, sym(p[1])?)))
            .collect::<Result<Vec<_>, String>>()?;
        let (name, labels, label_bytes) = series(pairs.into_iter(), limits)?;
        for e in &ts.exemplars {
            for r in &e.labels_refs {
                sym(*r)?;
            }
        }
        exemplars += ts.exemplars.len() as u64;
        let (kind, help, unit) = match &ts.metadata {
            Some(m) => (
                Kind::of(m.r#type),
                non_empty(sym(m.help_ref)?),
                non_empty(sym(m.unit_ref)?),
            ),
            None => (Kind::Unknown, None, None),
        };
        all.push(Series {
            name,
            labels,
            label_bytes,
            samples: &ts.samples,
            histograms: &ts.histograms,
            kind,
            help,
            unit,
            start: (ts.created_timestamp != 0).then(|| ms_to_ns(ts.created_timestamp)),
        });
    }
    let mut stats = append(&all, received_at, limits, b)?;
    stats.exemplars = exemplars;
    Ok(stats)
}


#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
