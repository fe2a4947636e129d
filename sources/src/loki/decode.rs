//! Loki push payloads → the logs lake schema.
//!
//! Protobuf (`logproto.PushRequest`, snappy-compressed on the wire) and JSON
//! (`{"streams":[{"stream":{labels},"values":[["<unix ns>","<line>",{metadata}]]}]}`) share one
//! mapping: stream labels become resource attributes (`service_name` also becomes
//! `service.name`), structured metadata becomes log attributes, the line is the body, and a
//! `level`/`detected_level`/`severity` label or metadata sets the severity.
//!
//! A stream's labels are copied to the row of each of its entries, so the rows are checked
//! against the request's budget after each entry.

use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::{DecodeBudget, OverBudget};

use crate::http::DecodeFailure;
use crate::severity::{severity_number, LEVEL_KEYS};
use weir_pipelines::otlp::shape::{struct_bytes, Field, Shape, NOTHING};

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// Streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// Labels in Prometheus syntax: `{app="x", env="prod"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Hash of the labels (ignored).
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    /// Entry time.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The log line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    /// Seconds since the epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Parses Prometheus label syntax: `{a="x", b="y\"z"}`.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("labels {s:?} must be enclosed in {{ }}"))?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("labels {s:?}: expected name=\"value\""))?;
        let name = rest[..eq].trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("labels {s:?}: invalid label name {name:?}"));
        }
        let after = rest[eq + 1..].trim_start();
        let body = after
            .strip_prefix('"')
            .ok_or_else(|| format!("labels {s:?}: value of {name} is not quoted"))?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, e)) => value.push(e),
                    None => break,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("labels {s:?}: unterminated value of {name}"))?;
        out.push((name.to_string(), value));
        rest = body[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

/// One stream ready to append.
struct Stream<'a> {
    labels: &'a [(String, String)],
    service: Option<&'a str>,
    level: Option<&'a str>,
}

impl<'a> Stream<'a> {
    fn new(labels: &'a [(String, String)]) -> Stream<'a> {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Stream {
            labels,
            service: get("service_name")
                .or_else(|| get("service"))
                .or_else(|| get("app"))
                .or_else(|| get("job")),
            level: LEVEL_KEYS.iter().find_map(|k| get(k)),
        }
    }

    /// Appends one entry; refused when the rows are then over `budget`.
    fn append(
        &self,
        b: &mut LogsBuilder,
        budget: &DecodeBudget,
        ts: i64,
        received_at: i64,
        line: &str,
        meta: &[(&str, &str)],
    ) -> Result<(), OverBudget> {
        let level = meta
            .iter()
            .find(|(k, _)| LEVEL_KEYS.contains(k))
            .map(|(_, v)| *v)
            .or(self.level);
        let fields = LogFields {
            timestamp: if ts == 0 { received_at } else { ts },
            observed: received_at,
            severity_number: level.map(severity_number).unwrap_or(0),
            severity_text: level,
            body: Some(line),
            service_name: self.service,
            ..Default::default()
        };
        b.append(
            &fields,
            None,
            0,
            |r| {
                for (k, v) in self.labels {
                    r.entry(k, Some(v));
                }
                if let Some(s) = self.service {
                    if !self.labels.iter().any(|(k, _)| k == "service.name") {
                        r.entry("service.name", Some(s));
                    }
                }
            },
            |a| {
                for (k, v) in meta {
                    a.entry(k, Some(v));
                }
            },
        );
        budget.check(b.bytes())
    }
}

static ENTRY: Shape = Shape {
    fields: &[(3, Field::Repeated(std::mem::size_of::<LabelPair>(), &NOTHING))],
};
static STREAM: Shape = Shape {
    fields: &[(2, Field::Repeated(std::mem::size_of::<EntryAdapter>(), &ENTRY))],
};
/// What decoding a `PushRequest` allocates ([`struct_bytes`]).
static PUSH_REQUEST: Shape = Shape {
    fields: &[(1, Field::Repeated(std::mem::size_of::<StreamAdapter>(), &STREAM))],
};

/// Decodes a (decompressed) protobuf push request, refused as soon as its rows are over
/// `budget`. The structs prost builds are counted first, against the same budget: an empty
/// entry is two bytes on the wire and a whole `EntryAdapter` decoded.
pub fn decode_protobuf(
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
    b: &mut LogsBuilder,
) -> Result<(), DecodeFailure> {
    budget.check(struct_bytes(body, &PUSH_REQUEST))?;
    let req = PushRequest::decode(body)
        .map_err(|e| format!("malformed Loki protobuf push request: {e}"))?;
    for s in &req.streams {
        let labels = parse_labels(&s.labels)?;
        let stream = Stream::new(&labels);
        for e in &s.entries {
            let ts = e
                .timestamp
                .as_ref()
                .map(|t| {
                    t.seconds
                        .saturating_mul(1_000_000_000)
                        .saturating_add(t.nanos as i64)
                })
                .unwrap_or(0);
            let meta: Vec<(&str, &str)> = e
                .structured_metadata
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect();
            stream.append(b, budget, ts, received_at, &e.line, &meta)?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: Option<BTreeMap<String, String>>,
    /// Legacy format: labels as a string.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    values: Vec<JsonValue>,
    /// Legacy format: `{"ts": RFC 3339, "line": ...}`.
    #[serde(default)]
    entries: Vec<JsonEntry>,
}

#[derive(Deserialize)]
struct JsonValue(
    JsonTime,
    String,
    #[serde(default)] Option<BTreeMap<String, String>>,
);

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTime {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
struct JsonEntry {
    ts: String,
    line: String,
}

fn json_time(t: &JsonTime) -> Result<i64, String> {
    match t {
        JsonTime::Number(n) => Ok(*n),
        JsonTime::Text(s) => s
            .parse::<i64>()
            .map_err(|_| format!("timestamp {s:?} is not unix nanoseconds")),
    }
}

/// Decodes a (decompressed) JSON push request, refused as soon as its rows are over `budget`.
pub fn decode_json(
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
    b: &mut LogsBuilder,
) -> Result<(), DecodeFailure> {
    let req: JsonPush = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Loki JSON push request: {e}"))?;
    for s in &req.streams {
        let labels: Vec<(String, String)> = match (&s.stream, &s.labels) {
            (Some(m), _) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            (None, Some(l)) => parse_labels(l)?,
            (None, None) => Vec::new(),
        };
        let stream = Stream::new(&labels);
        for v in &s.values {
            let meta: Vec<(&str, &str)> =
                v.2.iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
            stream.append(b, budget, json_time(&v.0)?, received_at, &v.1, &meta)?;
        }
        for e in &s.entries {
            let ts = chrono::DateTime::parse_from_rfc3339(&e.ts)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| format!("entry ts {:?} is not an RFC 3339 time", e.ts))?;
            stream.append(b, budget, ts, received_at, &e.line, &[])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: DecodeBudget = DecodeBudget::unlimited();

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels(r#"{app="web", msg="a \"q\" b", x_1="1"}"#).unwrap(),
            vec![
                ("app".into(), "web".into()),
                ("msg".into(), "a \"q\" b".into()),
                ("x_1".into(), "1".into())
            ]
        );
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        assert!(parse_labels("app=web").is_err());
        assert!(parse_labels(r#"{1app="x"}"#).is_err());
        assert!(parse_labels(r#"{app="x}"#).is_err());
    }

    #[test]
    fn json_and_protobuf_map_alike() {
        let json = br#"{"streams":[{"stream":{"service_name":"api","level":"warn"},"values":[["1700000000000000001","hello",{"trace_id":"abc"}]]}]}"#;
        let mut b = LogsBuilder::default();
        decode_json(json, 5, &NONE, &mut b).unwrap();
        let from_json = b.finish().unwrap();
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{level="warn", service_name="api"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 1,
                    }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPair {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
                hash: 0,
            }],
        };
        let mut b = LogsBuilder::default();
        decode_protobuf(&req.encode_to_vec(), 5, &NONE, &mut b).unwrap();
        let from_proto = b.finish().unwrap();
        assert_eq!(from_json.num_rows(), 1);
        assert_eq!(from_json, from_proto);
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        let mut b = LogsBuilder::default();
        assert!(decode_json(b"{", 0, &NONE, &mut b)
            .unwrap_err()
            .to_string()
            .contains("malformed Loki JSON"));
        assert!(decode_json(
            br#"{"streams":[{"stream":{},"values":[["soon","x"]]}]}"#,
            0,
            &NONE,
            &mut b
        )
        .unwrap_err()
        .to_string()
        .contains("not unix nanoseconds"));
        assert!(decode_protobuf(b"\xff\xff\xff", 0, &NONE, &mut b)
            .unwrap_err()
            .to_string()
            .contains("malformed Loki protobuf"));
    }

    /// A stream with a 1 MiB label and 20,000 empty entries, in both formats.
    fn hostile(entries: usize) -> (Vec<u8>, Vec<u8>) {
        let big = "x".repeat(1 << 20);
        let json = serde_json::json!({"streams": [{
            "stream": {"app": "web", "big": big},
            "values": vec![serde_json::json!(["1700000000000000000", ""]); entries],
        }]});
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: format!(r#"{{app="web", big="{big}"}}"#),
                entries: vec![EntryAdapter::default(); entries],
                hash: 0,
            }],
        };
        (json.to_string().into_bytes(), req.encode_to_vec())
    }

    #[test]
    fn stream_labels_copied_to_every_entry_are_over_budget() {
        let budget = DecodeBudget::new(8 << 20, "sources.loki.max_row_bytes");
        let (json, proto) = hostile(20_000);
        for e in [
            decode_json(&json, 0, &budget, &mut LogsBuilder::default()),
            decode_protobuf(&proto, 0, &budget, &mut LogsBuilder::default()),
        ] {
            match e {
                Err(DecodeFailure::OverBudget(e)) => {
                    assert_eq!((e.key, e.limit), ("sources.loki.max_row_bytes", 8 << 20))
                }
                other => panic!("expected over budget, got {other:?}"),
            }
        }
        let (json, proto) = hostile(3);
        let mut b = LogsBuilder::default();
        decode_json(&json, 0, &budget, &mut b).unwrap();
        decode_protobuf(&proto, 0, &budget, &mut b).unwrap();
        assert_eq!(b.finish().unwrap().num_rows(), 6);
    }
}
