//! Datadog `/api/v2/logs` items → the logs lake schema, following the Collector's datadog
//! receiver: the `message` (else `log`) is the body and `status`, `hostname`, `service`, `ddsource`,
//! `ddtags` are kept as attributes. In addition, `service` and `hostname` become the resource's
//! `service.name` and `host.name`, `status` sets the severity, each `ddtags` entry `k:v` becomes
//! attribute `k`, and any other field of the item becomes an attribute (non-strings as JSON).

use serde_json::Value;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::DecodeBudget;

use crate::http::DecodeFailure;
use crate::severity::severity_number;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `k:v` tags (comma-separated in logs, a list in metrics) as pairs; a tag without `:` has an
/// empty value.
pub fn split_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    tags.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.split_once(':').unwrap_or((t, "")))
        .collect()
}

const KNOWN: [&str; 7] = [
    "message",
    "status",
    "timestamp",
    "hostname",
    "service",
    "ddsource",
    "ddtags",
];

/// Decodes a (decompressed) JSON body: an array of log items, or one item; refused as soon as
/// the rows are over `budget`.
pub fn decode(
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
    b: &mut LogsBuilder,
) -> Result<usize, DecodeFailure> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed Datadog logs payload: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => return Err("Datadog logs payload must be a JSON array of log objects".into()),
    };
    for (i, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(format!("log item {i} is not a JSON object").into());
        };
        let get = |k: &str| fields.get(k).map(text);
        // Fluent Bit's datadog output keeps the record's `log` key unless `dd_message_key` is set.
        let body_key = if fields.contains_key("message") {
            "message"
        } else {
            "log"
        };
        let (message, status, hostname, service, ddtags) = (
            get(body_key),
            get("status"),
            get("hostname"),
            get("service"),
            get("ddtags"),
        );
        let ts = match fields.get("timestamp") {
            None | Some(Value::Null) => received_at,
            Some(Value::Number(n)) => n
                .as_i64()
                .map(|ms| ms.saturating_mul(1_000_000))
                .ok_or_else(|| format!("log item {i}: timestamp {n} is not milliseconds"))?,
            Some(other) => {
                return Err(format!(
                    "log item {i}: timestamp {other} is not a number of milliseconds"
                )
                .into())
            }
        };
        let f = LogFields {
            timestamp: ts,
            observed: received_at,
            severity_number: status.as_deref().map(severity_number).unwrap_or(0),
            severity_text: status.as_deref(),
            body: message.as_deref(),
            service_name: service.as_deref(),
            ..Default::default()
        };
        b.append(
            &f,
            None,
            0,
            |r| {
                if let Some(s) = &service {
                    r.entry("service.name", Some(s));
                }
                if let Some(h) = &hostname {
                    r.entry("host.name", Some(h));
                }
            },
            |a| {
                for k in KNOWN.iter().skip(1) {
                    if let Some(v) = fields.get(*k) {
                        a.entry(k, Some(&text(v)));
                    }
                }
                if let Some(tags) = &ddtags {
                    for (k, v) in split_tags(tags.split(',')) {
                        a.entry(k, Some(v));
                    }
                }
                for (k, v) in fields {
                    if !KNOWN.contains(&k.as_str()) && k != body_key {
                        a.entry(k, Some(&text(v)));
                    }
                }
            },
        );
        budget.check(b.bytes())?;
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    #[test]
    fn items_map_like_the_collector() {
        let body = br#"[{"message":"hi","status":"error","hostname":"h1","service":"api","ddsource":"python","ddtags":"env:prod,version:1.2,flag","timestamp":1700000000123,"custom":{"a":1}}]"#;
        let mut b = LogsBuilder::default();
        assert_eq!(
            decode(body, 7, &DecodeBudget::unlimited(), &mut b).unwrap(),
            1
        );
        let rb = b.finish().unwrap();
        let ts = rb
            .column(0)
            .as_primitive::<arrow_array::types::TimestampNanosecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_123_000_000);
        assert_eq!(
            rb.column_by_name("body")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "hi"
        );
        assert_eq!(
            split_tags("env:prod,flag,url:http://x".split(',')),
            vec![("env", "prod"), ("flag", ""), ("url", "http://x")]
        );
    }

    #[test]
    fn bad_payloads() {
        let mut b = LogsBuilder::default();
        let mut err = |body: &[u8]| {
            decode(body, 0, &DecodeBudget::unlimited(), &mut b)
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"[1]").contains("not a JSON object"));
        assert!(err(b"{").contains("malformed Datadog logs payload"));
        assert!(err(br#"[{"timestamp":"now"}]"#).contains("milliseconds"));
    }
}
