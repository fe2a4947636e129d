//! What serde allocates to decode an OTLP JSON body, counted from its structure before serde
//! runs: the struct each array element becomes, by its array's member name, and serde's
//! buffered copies of what is inside the objects it decodes through `#[serde(flatten)]`;
//! forms OTLP JSON never takes that would hide those (escaped member names, arrays in arrays,
//! nesting past serde_json's limit) are refused. The protobuf counterpart is
//! [`super::shape`].

use super::shape::size;

/// Bytes serde holds for a member of an object it buffers for `#[serde(flatten)]`: a
/// `(Content, Content)` pair.
const CONTENT_MEMBER: usize = 64;

/// Bytes serde holds for an array element it buffers: a `Content`.
const CONTENT_ELEMENT: usize = 32;

/// Deepest OTLP JSON accepted: serde_json's own recursion limit (a structured log body of
/// nested maps adds 4 levels a map, so real bodies can nest deep); the walk's stack of open
/// containers stays bounded by it.
pub const MAX_JSON_DEPTH: usize = 128;

/// Why an OTLP JSON body is refused before serde sees it: forms the OTLP JSON encoding never
/// produces that serde would accept and that would hide what it allocates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonShapeError {
    /// Nested past [`MAX_JSON_DEPTH`].
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// A member name with a `\` escape (OTLP JSON names are plain lowerCamelCase).
    #[error("member name {0:?} has an escape: OTLP JSON member names are plain field names")]
    EscapedName(String),
    /// An array directly in an array (a struct written as an array: not OTLP JSON).
    #[error("an array inside an array: OTLP JSON writes every message as an object")]
    NestedArray,
}

/// An open JSON container while [`otlp_json_bytes`] scans.
struct Open {
    /// For an array: the struct one object element becomes, whether such an element is an
    /// `AnyValue`, and whether serde decodes it through `#[serde(flatten)]`.
    array: Option<(usize, bool, bool)>,
    /// The member name this container is the value of (empty for an element).
    name: std::ops::Range<usize>,
    /// How many times serde holds what is in this container as buffered `Content`: once
    /// for each enclosing flattened object (each buffers its members in a vector of its
    /// own while its parent's buffer is still alive; an `AnyValue` inside another is even
    /// copied whole), and once more under `intValue` (an untagged helper buffers it again).
    copies: usize,
    /// `AnyValue` objects this container is in (itself included).
    any_values: usize,
}

/// An upper bound of what serde allocates to decode the OTLP JSON `body` into
/// opentelemetry-proto's structs, computed in one pass over the bytes without decoding them:
/// every array element as what it becomes (an object as `element(member)`, the struct its
/// array's member name holds; a string or array 24 bytes, another scalar 8) and, inside the
/// objects serde decodes through `#[serde(flatten)]` (an `AnyValue`: `body`, `value`, an
/// element of an `arrayValue`'s `values`; a `Metric`; a data point; an exemplar), every
/// member (64 bytes and its name), element (32) and string's bytes once per copy serde holds.
/// Forms that would hide what serde allocates are refused: see [`JsonShapeError`]. A body
/// that is not JSON is counted as far as it goes (serde then refuses it).
pub fn otlp_json_bytes(
    body: &[u8],
    element: impl Fn(&[u8]) -> usize,
) -> Result<usize, JsonShapeError> {
    let mut open: Vec<Open> = Vec::new();
    let mut total = 0usize;
    let mut add = |n: usize| total = total.saturating_add(n);
    let (mut in_string, mut escaped, mut string_start) = (false, false, 0);
    let (mut string_is_name, mut name_escaped) = (false, false);
    // The last member name read.
    let mut name = 0..0;
    // What comes next: a value (after `[`, `:`, an array's `,`, and at the top), a member
    // name (after `{` and an object's `,`).
    let (mut value_due, mut name_due) = (true, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => {
                    escaped = true;
                    name_escaped |= string_is_name;
                }
                (false, b'"') => {
                    in_string = false;
                    let copies = open.last().map_or(0, |o| o.copies);
                    let len = i - string_start;
                    if string_is_name {
                        if name_escaped {
                            let shown = &body[string_start..i.min(string_start + 64)];
                            let text = String::from_utf8_lossy(shown);
                            return Err(JsonShapeError::EscapedName(text.into_owned()));
                        }
                        name = string_start..i;
                        add(CONTENT_MEMBER.saturating_add(len).saturating_mul(copies));
                    } else {
                        add(len.saturating_mul(copies));
                    }
                }
                _ => {}
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if value_due && !matches!(b, b',' | b':' | b']' | b'}') {
            value_due = false;
            if let Some(Open {
                array: Some((object, _, _)),
                copies,
                ..
            }) = open.last()
            {
                if b == b'[' {
                    return Err(JsonShapeError::NestedArray);
                }
                add(match b {
                    b'{' => *object,
                    b'"' => 24,
                    _ => 8,
                });
                add(CONTENT_ELEMENT.saturating_mul(*copies));
            }
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
                (string_is_name, name_escaped) = (name_due, false);
                name_due = false;
            }
            b'{' | b'[' => {
                if open.len() >= MAX_JSON_DEPTH {
                    return Err(JsonShapeError::TooDeep);
                }
                let parent = open.last();
                let (copies, any_values) = parent.map_or((0, 0), |o| (o.copies, o.any_values));
                // The member name this container is the value of, and its parent's.
                let (member, own) = match parent {
                    Some(p @ Open { array: None, .. }) => (name.clone(), p.name.clone()),
                    _ => (0..0, 0..0),
                };
                let text = |r: &std::ops::Range<usize>| body.get(r.clone()).unwrap_or_default();
                let container = if b == b'{' {
                    let (any_value, flat) = match parent {
                        Some(Open {
                            array: Some((_, any_value, flat)),
                            ..
                        }) => (*any_value, *flat),
                        Some(Open { array: None, .. }) => {
                            let any_value = matches!(text(&member), b"body" | b"value");
                            (any_value, any_value)
                        }
                        None => (false, false),
                    };
                    name_due = true;
                    let copies =
                        copies + usize::from(flat) + usize::from(text(&member) == b"intValue");
                    Open {
                        array: None,
                        name: member,
                        copies,
                        any_values: any_values + usize::from(any_value),
                    }
                } else {
                    value_due = true;
                    let key = text(&member);
                    let any_value = key == b"values" && text(&own) == b"arrayValue";
                    let flat =
                        any_value || matches!(key, b"metrics" | b"dataPoints" | b"exemplars");
                    Open {
                        array: Some((element(key), any_value, flat)),
                        name: member,
                        copies: copies + usize::from(key == b"intValue"),
                        any_values,
                    }
                };
                open.push(container);
            }
            b']' | b'}' => {
                open.pop();
                (value_due, name_due) = (false, false);
            }
            b',' => match open.last() {
                Some(Open { array: Some(_), .. }) => value_due = true,
                _ => name_due = true,
            },
            b':' => value_due = true,
            _ => {}
        }
    }
    Ok(total)
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The struct one object element of an OTLP JSON array becomes, by the array's member name
/// (the JSON mapping's lowerCamelCase; opentelemetry-proto's serde takes no other spelling):
/// the argument of [`otlp_json_bytes`] for each signal. A name not known here counts as the
/// signal's largest struct.
pub mod json {
    use super::{max, size};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// Arrays every signal has: attributes, array and kvlist values, entity references.
    fn common(key: &[u8]) -> Option<usize> {
        Some(match key {
            b"attributes" | b"metadata" | b"filteredAttributes" => size::<KeyValue>(),
            b"values" => max(size::<AnyValue>(), size::<KeyValue>()),
            b"entityRefs" => size::<EntityRef>(),
            _ => return None,
        })
    }

    const POINT: usize = max(
        max(size::<NumberDataPoint>(), size::<HistogramDataPoint>()),
        max(
            size::<ExponentialHistogramDataPoint>(),
            size::<SummaryDataPoint>(),
        ),
    );
    const LARGEST_LOGS: usize = max(
        max(size::<LogRecord>(), size::<EntityRef>()),
        max(size::<ResourceLogs>(), size::<ScopeLogs>()),
    );
    const LARGEST_TRACES: usize = max(
        max(size::<Span>(), max(size::<Event>(), size::<Link>())),
        max(size::<ResourceSpans>(), size::<ScopeSpans>()),
    );
    const LARGEST_METRICS: usize = max(
        max(POINT, max(size::<Metric>(), size::<EntityRef>())),
        max(size::<ResourceMetrics>(), size::<ScopeMetrics>()),
    );

    /// Logs.
    pub fn logs(key: &[u8]) -> usize {
        common(key).unwrap_or(match key {
            b"resourceLogs" => size::<ResourceLogs>(),
            b"scopeLogs" => size::<ScopeLogs>(),
            b"logRecords" => size::<LogRecord>(),
            _ => LARGEST_LOGS,
        })
    }

    /// Traces.
    pub fn traces(key: &[u8]) -> usize {
        common(key).unwrap_or(match key {
            b"resourceSpans" => size::<ResourceSpans>(),
            b"scopeSpans" => size::<ScopeSpans>(),
            b"spans" => size::<Span>(),
            b"events" => size::<Event>(),
            b"links" => size::<Link>(),
            _ => LARGEST_TRACES,
        })
    }

    /// Metrics.
    pub fn metrics(key: &[u8]) -> usize {
        common(key).unwrap_or(match key {
            b"resourceMetrics" => size::<ResourceMetrics>(),
            b"scopeMetrics" => size::<ScopeMetrics>(),
            b"metrics" => size::<Metric>(),
            b"dataPoints" => POINT,
            b"exemplars" => size::<Exemplar>(),
            b"quantileValues" => size::<ValueAtQuantile>(),
            _ => LARGEST_METRICS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    #[test]
    fn json_array_elements_count_by_their_member_name_and_strings_hide_brackets() {
        let by_name = |k: &[u8]| match k {
            b"a" => 100,
            b"x y" => 7,
            _ => 1000,
        };
        let body =
            br#"{"a" : [{}, {"x":"[{,}]"}, 1, "s", -1.5e10, true], "b": {"c": []}, "x y": [{}]}"#;
        // "a": two objects, a number, a string, a number, a literal; "c": nothing; "x y": one
        // object. Brackets, commas and colons inside strings are not structure. Nothing is
        // flattened.
        assert_eq!(
            otlp_json_bytes(body, by_name),
            Ok(100 + 100 + 8 + 24 + 8 + 8 + 7)
        );
        assert_eq!(otlp_json_bytes(br#"{"a":[]}"#, by_name), Ok(0));
        assert_eq!(
            otlp_json_bytes(br#"{"a":["\"", {}]}"#, by_name),
            Ok(24 + 100)
        );
        // Many empty records: two bytes each, a whole LogRecord each decoded.
        let mut many = b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[".to_vec();
        many.extend(std::iter::repeat_n(&b"{},"[..], 1000).flatten());
        many.extend_from_slice(b"{}]}]}]}");
        assert_eq!(
            otlp_json_bytes(&many, json::logs),
            Ok(size::<ResourceLogs>() + size::<ScopeLogs>() + 1001 * size::<LogRecord>())
        );
    }

    #[test]
    fn flattened_objects_count_their_members_once_per_copy() {
        let records = size::<ResourceLogs>() + size::<ScopeLogs>() + size::<LogRecord>();
        let wrap = |record: &str| {
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{record}]}}]}}]}}"#)
        };
        // A body (an AnyValue) of two members, buffered once: a pair and a name's byte each.
        let body = wrap(r#"{"body":{"a":0,"b":0}}"#);
        assert_eq!(
            otlp_json_bytes(body.as_bytes(), json::logs),
            Ok(records + 2 * 65)
        );
        // The same members in an AnyValue inside the body's arrayValue: held once more. The
        // body holds "arrayValue" (a pair), "values" (a pair) and the element (a Content and
        // the struct).
        let nested = wrap(r#"{"body":{"arrayValue":{"values":[{"a":0,"b":0}]}}}"#);
        let outer = (64 + 10) + (64 + 6) + 32 + size::<AnyValue>().max(size::<KeyValue>());
        assert_eq!(
            otlp_json_bytes(nested.as_bytes(), json::logs),
            Ok(records + outer + 2 * 2 * 65)
        );
        // A string value inside a flattened object is held with its bytes.
        let text = wrap(r#"{"body":{"stringValue":"hello"}}"#);
        assert_eq!(
            otlp_json_bytes(text.as_bytes(), json::logs),
            Ok(records + (64 + 11) + 5)
        );
        // A kvlist's values are KeyValues (not flattened); their value is an AnyValue.
        let kv = wrap(r#"{"body":{"kvlistValue":{"values":[{"key":"k","value":{"a":0}}]}}}"#);
        let outer = (64 + 11) + (64 + 6) + 32 + size::<AnyValue>().max(size::<KeyValue>());
        let element = 2 * (64 + 3) + 64 + 2 + 64 + 5 + 2 * 65;
        assert!(otlp_json_bytes(kv.as_bytes(), json::logs).unwrap() <= records + outer + element);
    }

    #[test]
    fn forms_that_hide_what_serde_allocates_are_refused() {
        let deep = "[".repeat(1 << 20);
        assert_eq!(
            otlp_json_bytes(format!(r#"{{"x":{deep}"#).as_bytes(), json::logs),
            Err(JsonShapeError::NestedArray)
        );
        let objects = r#"{"x":"#.repeat(200);
        assert_eq!(
            otlp_json_bytes(objects.as_bytes(), json::logs),
            Err(JsonShapeError::TooDeep)
        );
        assert!(matches!(
            otlp_json_bytes(br#"{"b\u006fdy":{}}"#, json::logs),
            Err(JsonShapeError::EscapedName(_))
        ));
        assert_eq!(
            otlp_json_bytes(br#"{"attributes":[["k",{}]]}"#, json::logs),
            Err(JsonShapeError::NestedArray)
        );
        // A refused name is shown cut to 64 bytes.
        let long = format!(r#"{{"\\{}":0}}"#, "n".repeat(1 << 20));
        match otlp_json_bytes(long.as_bytes(), json::logs) {
            Err(JsonShapeError::EscapedName(n)) => assert_eq!(n.len(), 64),
            other => panic!("{other:?}"),
        }
        // An intValue written as an object inside a body is held once more.
        let int = br#"{"body":{"intValue":{"a":0}}}"#;
        assert_eq!(
            otlp_json_bytes(int, json::logs),
            Ok((64 + 8) + 2 * (64 + 1))
        );
        // Escapes in values are fine.
        assert!(otlp_json_bytes(br#"{"a":"\u0041\\"}"#, json::logs).is_ok());
    }
}
