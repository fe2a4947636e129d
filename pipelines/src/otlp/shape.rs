//! What prost allocates to decode a protobuf body, counted from the wire before it decodes it.
//!
//! An empty embedded message is two bytes on the wire and a whole struct (a hundred bytes or
//! more) once decoded, so a 16 MiB body of empty metrics or data points would become gigabytes
//! of structs before a single row is built and checked against the request's
//! [`DecodeBudget`](crate::DecodeBudget). The paths that still decode through prost (OTLP
//! metrics, Loki's push) walk the body first with [`struct_bytes`] over the message's
//! [`Shape`]: the size of every struct a repeated field adds and of every element a repeated
//! scalar field adds (a packed varint of one byte is an 8-byte `u64`, an empty repeated string
//! a 24-byte `String`). Strings and bytes are copied as they are, so the body's own size bounds
//! them; a vector's spare capacity is not counted.
//!
//! OTLP JSON bodies are decoded through serde into the same structs; [`json_elements_bytes`]
//! bounds them without a schema: every element of a JSON array becomes one struct at most as
//! large as the signal's largest repeated struct (an object) or an 8-byte number, and objects
//! that are not array elements live inside their parent's struct.

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint,
};

use super::wire::{Depth, Reader, WireError, WireType};

/// A protobuf message as far as decoding it allocates: the fields that add to it.
#[derive(Debug)]
pub struct Shape {
    /// The fields that allocate, by field number.
    pub fields: &'static [(u32, Field)],
}

/// How a field allocates when prost decodes it.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A singular embedded message: held inside its parent (no allocation of its own), its own
    /// fields counted.
    Message(&'static Shape),
    /// A repeated embedded message: a struct of `bytes` per occurrence, and its fields.
    Repeated(usize, &'static Shape),
    /// A repeated varint or string of `bytes` per element, packed (a length-delimited run of
    /// varints) or not. Repeated fixed-width scalars take no more than their wire bytes and
    /// are not listed.
    Scalars(usize),
}

/// Bytes of the structs and repeated elements prost allocates to decode `body` as `shape`.
/// A body that is not valid protobuf is counted up to the fault: prost then refuses it with
/// its own error.
pub fn struct_bytes(body: &[u8], shape: &Shape) -> usize {
    let mut total = 0usize;
    // A malformed body stops the count; prost names the fault when it decodes.
    let _ = walk(Reader::new(body), shape, Depth::TOP, &mut total);
    total
}

fn walk(
    mut r: Reader<'_>,
    shape: &Shape,
    depth: Depth,
    total: &mut usize,
) -> Result<(), WireError> {
    while !r.is_empty() {
        let (tag, wire_type) = r.key()?;
        let field = shape
            .fields
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, f)| *f);
        match (field, wire_type) {
            (Some(Field::Message(inner)), WireType::LengthDelimited) => {
                let (bytes, d) = r.message(wire_type, depth)?;
                walk(Reader::new(bytes), inner, d, total)?;
            }
            (Some(Field::Repeated(size, inner)), WireType::LengthDelimited) => {
                *total = total.saturating_add(size);
                let (bytes, d) = r.message(wire_type, depth)?;
                walk(Reader::new(bytes), inner, d, total)?;
            }
            (Some(Field::Scalars(size)), WireType::LengthDelimited) => {
                // Packed varints: one element per byte below 0x80 (the last of each varint).
                let run = r.bytes(wire_type)?;
                let elements = run.iter().filter(|&&b| b < 0x80).count();
                *total = total.saturating_add(elements.saturating_mul(size));
            }
            (Some(Field::Scalars(size)), _) => {
                *total = total.saturating_add(size);
                r.skip(wire_type, tag, depth)?;
            }
            _ => r.skip(wire_type, tag, depth)?,
        }
    }
    Ok(())
}

/// Bytes of the elements of every array in the JSON `body`: `object_bytes` per object
/// element, 8 per other element (a number, or a string's 24-byte header less its own bytes,
/// which the body bounds). A cheap upper bound of what serde allocates decoding an OTLP JSON
/// body into its structs, computed in one pass over the bytes without decoding them; a
/// body that is not JSON is counted as far as it goes (serde then refuses it).
pub fn json_elements_bytes(body: &[u8], object_bytes: usize) -> usize {
    // One bit per open container: set for an array.
    let mut arrays: Vec<bool> = Vec::new();
    let mut total = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Whether the next value in the innermost array starts an element.
    let mut element_due = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        let starts_value = !b.is_ascii_whitespace() && !matches!(b, b',' | b':' | b']' | b'}');
        if element_due && starts_value {
            element_due = false;
            let bytes = if b == b'{' { object_bytes } else { 8 };
            total = total.saturating_add(bytes);
        }
        match b {
            b'"' => in_string = true,
            b'{' => arrays.push(false),
            b'[' => {
                arrays.push(true);
                element_due = true;
            }
            b']' | b'}' => {
                arrays.pop();
            }
            b',' => element_due = arrays.last() == Some(&true),
            _ => {}
        }
    }
    total
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The largest struct a repeated field of each signal's request holds: what one element of
/// an OTLP JSON array may become ([`json_elements_bytes`]).
pub mod largest {
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

    const COMMON: usize = max(
        max(size::<AnyValue>(), size::<KeyValue>()),
        size::<EntityRef>(),
    );
    /// Logs.
    pub const LOGS: usize = max(
        COMMON,
        max(
            size::<LogRecord>(),
            max(size::<ResourceLogs>(), size::<ScopeLogs>()),
        ),
    );
    /// Traces.
    pub const TRACES: usize = max(
        COMMON,
        max(
            max(size::<Span>(), max(size::<Event>(), size::<Link>())),
            max(size::<ResourceSpans>(), size::<ScopeSpans>()),
        ),
    );
    /// Metrics.
    pub const METRICS: usize = max(
        max(COMMON, max(size::<Metric>(), size::<Exemplar>())),
        max(
            max(
                max(size::<NumberDataPoint>(), size::<HistogramDataPoint>()),
                max(
                    size::<ExponentialHistogramDataPoint>(),
                    size::<SummaryDataPoint>(),
                ),
            ),
            max(
                size::<ValueAtQuantile>(),
                max(size::<ResourceMetrics>(), size::<ScopeMetrics>()),
            ),
        ),
    );
}

const fn size<T>() -> usize {
    std::mem::size_of::<T>()
}

const STRINGS: Field = Field::Scalars(size::<String>());
const U64S: Field = Field::Scalars(size::<u64>());

static ANY: Shape = Shape {
    fields: &[(5, Field::Message(&ARRAY)), (6, Field::Message(&KVLIST))],
};
static ARRAY: Shape = Shape {
    fields: &[(1, Field::Repeated(size::<AnyValue>(), &ANY))],
};
static KVLIST: Shape = Shape {
    fields: &[(1, Field::Repeated(size::<KeyValue>(), &KV))],
};
static KV: Shape = Shape {
    fields: &[(2, Field::Message(&ANY))],
};
const ATTRIBUTES: Field = Field::Repeated(size::<KeyValue>(), &KV);
static ENTITY_REF: Shape = Shape {
    fields: &[(3, STRINGS), (4, STRINGS)],
};
static RESOURCE: Shape = Shape {
    fields: &[
        (1, ATTRIBUTES),
        (3, Field::Repeated(size::<EntityRef>(), &ENTITY_REF)),
    ],
};
static SCOPE: Shape = Shape {
    fields: &[(3, ATTRIBUTES)],
};
static EXEMPLAR: Shape = Shape {
    fields: &[(7, ATTRIBUTES)],
};
const EXEMPLARS: Field = Field::Repeated(size::<Exemplar>(), &EXEMPLAR);
static NUMBER_POINT: Shape = Shape {
    fields: &[(7, ATTRIBUTES), (5, EXEMPLARS)],
};
// bucket_counts and explicit_bounds are fixed-width: 8 bytes on the wire per element.
static HISTOGRAM_POINT: Shape = Shape {
    fields: &[(9, ATTRIBUTES), (8, EXEMPLARS)],
};
static BUCKETS: Shape = Shape {
    fields: &[(2, U64S)],
};
static EXPONENTIAL_POINT: Shape = Shape {
    fields: &[
        (1, ATTRIBUTES),
        (8, Field::Message(&BUCKETS)),
        (9, Field::Message(&BUCKETS)),
        (11, EXEMPLARS),
    ],
};
static SUMMARY_POINT: Shape = Shape {
    fields: &[
        (7, ATTRIBUTES),
        (6, Field::Repeated(size::<ValueAtQuantile>(), &NOTHING)),
    ],
};
static NOTHING: Shape = Shape { fields: &[] };
static NUMBER_POINTS: Shape = Shape {
    fields: &[(1, Field::Repeated(size::<NumberDataPoint>(), &NUMBER_POINT))],
};
static HISTOGRAM_POINTS: Shape = Shape {
    fields: &[(
        1,
        Field::Repeated(size::<HistogramDataPoint>(), &HISTOGRAM_POINT),
    )],
};
static EXPONENTIAL_POINTS: Shape = Shape {
    fields: &[(
        1,
        Field::Repeated(size::<ExponentialHistogramDataPoint>(), &EXPONENTIAL_POINT),
    )],
};
static SUMMARY_POINTS: Shape = Shape {
    fields: &[(
        1,
        Field::Repeated(size::<SummaryDataPoint>(), &SUMMARY_POINT),
    )],
};
static METRIC: Shape = Shape {
    fields: &[
        (5, Field::Message(&NUMBER_POINTS)),
        (7, Field::Message(&NUMBER_POINTS)),
        (9, Field::Message(&HISTOGRAM_POINTS)),
        (10, Field::Message(&EXPONENTIAL_POINTS)),
        (11, Field::Message(&SUMMARY_POINTS)),
        (12, ATTRIBUTES),
    ],
};
static SCOPE_METRICS: Shape = Shape {
    fields: &[
        (1, Field::Message(&SCOPE)),
        (2, Field::Repeated(size::<Metric>(), &METRIC)),
    ],
};
static RESOURCE_METRICS: Shape = Shape {
    fields: &[
        (1, Field::Message(&RESOURCE)),
        (2, Field::Repeated(size::<ScopeMetrics>(), &SCOPE_METRICS)),
    ],
};

/// `ExportMetricsServiceRequest`.
pub static METRICS_REQUEST: Shape = Shape {
    fields: &[(
        1,
        Field::Repeated(size::<ResourceMetrics>(), &RESOURCE_METRICS),
    )],
};

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::metrics::v1::{metric, Gauge};
    use prost::Message;

    #[test]
    fn empty_data_points_count_a_struct_each() {
        let point = NumberDataPoint::default();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point; 1000],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        assert!(body.len() < 2100, "{}", body.len());
        let counted = struct_bytes(&body, &METRICS_REQUEST);
        let expected = size::<ResourceMetrics>()
            + size::<ScopeMetrics>()
            + size::<Metric>()
            + 1000 * size::<NumberDataPoint>();
        assert_eq!(counted, expected);
        assert!(
            counted > 40 * body.len(),
            "{counted} for {} bytes",
            body.len()
        );
    }

    #[test]
    fn nested_attribute_values_and_packed_varints_are_counted() {
        let kv = |v: Value| KeyValue {
            key: "k".into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let nested = kv(Value::ArrayValue(
            opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![AnyValue::default(); 10],
            },
        ));
        let point = ExponentialHistogramDataPoint {
            attributes: vec![nested, kv(Value::IntValue(1))],
            positive: Some(
                opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets {
                    offset: 0,
                    bucket_counts: vec![0; 100],
                },
            ),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        data: Some(metric::Data::ExponentialHistogram(
                            opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                                data_points: vec![point],
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let counted = struct_bytes(&request.encode_to_vec(), &METRICS_REQUEST);
        let expected = size::<ResourceMetrics>()
            + size::<ScopeMetrics>()
            + size::<Metric>()
            + size::<ExponentialHistogramDataPoint>()
            + 2 * size::<KeyValue>()
            + 10 * size::<AnyValue>()
            + 100 * 8;
        assert_eq!(counted, expected);
    }

    #[test]
    fn json_array_elements_count_and_strings_hide_brackets() {
        let body = br#"{"a":[{}, {"x":"[{,}]"}, 1, "s", [2, {}]], "b": {"c": []}}"#;
        // The outer array: two objects, a number, a string, an array; the inner one: a
        // number and an object. Brackets and commas inside the string are not structure.
        assert_eq!(
            json_elements_bytes(body, 100),
            100 + 100 + 8 + 8 + 8 + 8 + 100
        );
        assert_eq!(json_elements_bytes(br#"{"a":[]}"#, 100), 0);
        assert_eq!(json_elements_bytes(br#"["\"", {}]"#, 100), 8 + 100);
        // Many empty records: two bytes each, a whole LogRecord each decoded.
        let mut many = b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[".to_vec();
        many.extend(std::iter::repeat_n(&b"{},"[..], 1000).flatten());
        many.extend_from_slice(b"{}]}]}]}");
        assert_eq!(
            json_elements_bytes(&many, largest::LOGS),
            1003 * largest::LOGS
        );
    }

    #[test]
    fn a_malformed_body_is_counted_up_to_its_fault() {
        // A ResourceMetrics whose length runs past the end.
        assert_eq!(
            struct_bytes(&[0x0a, 0x05, 0x12], &METRICS_REQUEST),
            size::<ResourceMetrics>()
        );
        assert_eq!(struct_bytes(&[], &METRICS_REQUEST), 0);
    }
}
