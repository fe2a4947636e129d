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
//! them; a vector's spare capacity is not counted. OTLP JSON has its counterpart in
//! [`super::json_shape`].

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

/// A message none of whose fields allocate (its struct is counted by its parent's field).
pub static NOTHING: Shape = Shape { fields: &[] };

/// How a field allocates when prost decodes it.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A singular embedded message: held inside its parent (no allocation of its own), its own
    /// fields counted.
    Message(&'static Shape),
    /// A repeated embedded message: a struct of `bytes` per occurrence, and its fields.
    Repeated(usize, &'static Shape),
    /// A repeated varint of `bytes` per element, packed (a length-delimited run of varints)
    /// or not. Repeated fixed-width scalars take no more than their wire bytes and are not
    /// listed.
    Varints(usize),
    /// A repeated string or bytes field: `bytes` (the `String`'s header) per occurrence, its
    /// contents bounded by the body.
    Strings(usize),
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
            (Some(Field::Varints(size)), WireType::LengthDelimited) => {
                // Packed: one element per byte below 0x80 (the last of each varint).
                let run = r.bytes(wire_type)?;
                let elements = run.iter().filter(|&&b| b < 0x80).count();
                *total = total.saturating_add(elements.saturating_mul(size));
            }
            (Some(Field::Varints(size) | Field::Strings(size)), _) => {
                *total = total.saturating_add(size);
                r.skip(wire_type, tag, depth)?;
            }
            _ => r.skip(wire_type, tag, depth)?,
        }
    }
    Ok(())
}

pub(crate) const fn size<T>() -> usize {
    std::mem::size_of::<T>()
}

const STRINGS: Field = Field::Strings(size::<String>());
const U64S: Field = Field::Varints(size::<u64>());

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
    fn empty_repeated_strings_count_a_string_each() {
        // ResourceMetrics.resource.entity_refs[0].id_keys: 1000 empty strings.
        let keys = [0x1au8, 0x00].repeat(1000);
        let resource = [&[0x1a, 0xd0, 0x0f][..], &keys].concat(); // Resource.entity_refs
        let rm = [&[0x0a, 0xd3, 0x0f][..], &resource].concat(); // ResourceMetrics.resource
        let body = [&[0x0a, 0xd6, 0x0f][..], &rm].concat();
        assert_eq!(
            struct_bytes(&body, &METRICS_REQUEST),
            size::<ResourceMetrics>() + size::<EntityRef>() + 1000 * size::<String>()
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
