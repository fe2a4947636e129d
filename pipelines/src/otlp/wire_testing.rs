//! Helpers of the wire decoders' tests: generated OTLP values and a rewriter of protobuf
//! bodies that reorders fields, adds unknown ones and doubles some, for both signals.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType as PW};

use arrow_array::RecordBatch;

use super::{DecodeError, Decoded};
use crate::budget::{DecodeBudget, OverBudget};

/// What a path made of a body.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Rows {
        records: RecordBatch,
        rejected: u64,
        error: Option<String>,
    },
    Malformed,
    OverBudget(OverBudget),
}

impl Outcome {
    pub fn of(r: Result<Decoded, DecodeError>) -> Outcome {
        match r {
            Ok(d) => Outcome::Rows {
                records: d.records,
                rejected: d.rejected,
                error: d.error,
            },
            Err(DecodeError::OverBudget(o)) => Outcome::OverBudget(o),
            Err(DecodeError::Malformed(_)) => Outcome::Malformed,
            Err(e) => panic!("cannot build the batch: {e}"),
        }
    }
}

/// The messages of a logs request, to find the embedded messages of a body.
#[derive(Debug, Clone, Copy)]
pub enum Msg {
    Request,
    TraceRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    ResourceLogs,
    Resource,
    EntityRef,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

fn child(m: Msg, tag: u32) -> Option<Msg> {
    use Msg::*;
    Some(match (m, tag) {
        (Request, 1) => ResourceLogs,
        (TraceRequest, 1) => ResourceSpans,
        (ResourceSpans, 1) => Resource,
        (ResourceSpans, 2) => ScopeSpans,
        (ScopeSpans, 1) => Scope,
        (ScopeSpans, 2) => Span,
        (Span, 9) => KeyValue,
        (Span, 11) => Event,
        (Span, 13) => Link,
        (Event, 3) => KeyValue,
        (Link, 4) => KeyValue,
        (ResourceLogs, 1) => Resource,
        (ResourceLogs, 2) => ScopeLogs,
        (Resource, 1) => KeyValue,
        (Resource, 3) => EntityRef,
        (ScopeLogs, 1) => Scope,
        (ScopeLogs, 2) => LogRecord,
        (Scope, 3) => KeyValue,
        (LogRecord, 5) => AnyValue,
        (LogRecord, 6) => KeyValue,
        (KeyValue, 2) => AnyValue,
        (AnyValue, 5) => ArrayValue,
        (AnyValue, 6) => KvList,
        (ArrayValue, 1) => AnyValue,
        (KvList, 1) => KeyValue,
        _ => return None,
    })
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Fields in descending number order (the relative order of one field's items is kept).
    reverse: bool,
    /// Put an unknown field before about every `unknown`-th field (0: never).
    unknown: u64,
    /// Write about every `dup`-th field twice (0: never).
    dup: u64,
    rng: u64,
    pub unknowns_written: u64,
}

impl Rewrite {
    pub fn new(reverse: bool, unknown: u64, dup: u64, seed: u64) -> Rewrite {
        Rewrite {
            reverse,
            unknown,
            dup,
            rng: seed | 1,
            unknowns_written: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One unknown field (numbers no message of logs or traces uses), cycling through every
    /// wire type (groups nested).
    fn unknown_field(&mut self, out: &mut Vec<u8>) {
        let kind = self.unknowns_written % 6;
        self.unknowns_written += 1;
        match kind {
            0 => {
                encode_key(21, PW::Varint, out);
                encode_varint(u64::MAX, out);
            }
            1 => {
                encode_key(18, PW::SixtyFourBit, out);
                out.extend_from_slice(&[1; 8]);
            }
            2 => {
                encode_key(19, PW::LengthDelimited, out);
                encode_varint(3, out);
                out.extend_from_slice(&[0xff, 0xfe, 0x00]);
            }
            3 => {
                encode_key(20, PW::ThirtyTwoBit, out);
                out.extend_from_slice(&[2; 4]);
            }
            4 => {
                encode_key(17, PW::StartGroup, out);
                encode_key(1, PW::Varint, out);
                encode_varint(7, out);
                encode_key(2, PW::StartGroup, out);
                encode_key(2, PW::EndGroup, out);
                encode_key(17, PW::EndGroup, out);
            }
            _ => {
                // A field number whose key takes several bytes.
                encode_key(100_000, PW::LengthDelimited, out);
                encode_varint(0, out);
            }
        }
    }

    pub fn message(&mut self, mut buf: &[u8], m: Msg) -> Vec<u8> {
        let mut fields: Vec<(u32, Vec<u8>)> = Vec::new();
        while !buf.is_empty() {
            let (tag, wt) = decode_key(&mut buf).expect("prost wrote it");
            let mut f = Vec::new();
            encode_key(tag, wt, &mut f);
            match wt {
                PW::Varint => encode_varint(decode_varint(&mut buf).expect("varint"), &mut f),
                PW::SixtyFourBit | PW::ThirtyTwoBit => {
                    let n = if wt == PW::SixtyFourBit { 8 } else { 4 };
                    f.extend_from_slice(&buf[..n]);
                    buf = &buf[n..];
                }
                PW::LengthDelimited => {
                    let n = decode_varint(&mut buf).expect("length") as usize;
                    let (v, rest) = buf.split_at(n);
                    buf = rest;
                    let v = match child(m, tag) {
                        Some(c) => self.message(v, c),
                        None => v.to_vec(),
                    };
                    encode_varint(v.len() as u64, &mut f);
                    f.extend_from_slice(&v);
                }
                PW::StartGroup | PW::EndGroup => unreachable!("prost writes no groups"),
            }
            fields.push((tag, f));
        }
        if self.reverse {
            fields.sort_by_key(|f| std::cmp::Reverse(f.0));
        }
        let mut out = Vec::new();
        for (_, f) in fields {
            if self.unknown > 0 && self.next().is_multiple_of(self.unknown) {
                self.unknown_field(&mut out);
            }
            out.extend_from_slice(&f);
            if self.dup > 0 && self.next().is_multiple_of(self.dup) {
                out.extend_from_slice(&f);
            }
        }
        if self.unknown > 0 && self.next().is_multiple_of(self.unknown) {
            self.unknown_field(&mut out);
        }
        out
    }
}

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("service.name".to_string()),
        1 => Just(String::new()),
        3 => "[a-c]{1,2}",
        1 => "[é\"\\\\\u{1F600}]{1,2}",
    ]
}

pub fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        "[a-z\"\\\\é]{0,6}".prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
        vec(any::<u8>(), 0..6).prop_map(|b| Some(Value::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values })),
            }),
            vec((key(), option::of(inner)), 0..4).prop_map(|kvs| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value,
                            key_strindex: 0,
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

pub fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        key(),
        option::of(any_value()),
        prop_oneof![3 => Just(0), 1 => any::<i32>()],
    )
        .prop_map(|(key, value, key_strindex)| KeyValue {
            key,
            value,
            key_strindex,
        })
}

/// A resource attribute: often a string `service.name`, which becomes a column of its own.
pub fn resource_attribute() -> impl Strategy<Value = KeyValue> {
    prop_oneof![
        2 => key_value(),
        1 => "[a-c]{0,2}".prop_map(|v| kv("service.name", &v)),
    ]
}

pub fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => vec(any::<u8>(), 16),
        3 => vec(any::<u8>(), 8),
        1 => Just(vec![0; 16]),
        1 => Just(vec![0; 8]),
        2 => vec(any::<u8>(), 0..20),
    ]
}

pub fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        1_600_000_000_000_000_000u64..1_800_000_000_000_000_000,
        any::<u64>(),
    ]
}

pub fn scope() -> impl Strategy<Value = InstrumentationScope> {
    (
        "[a-z]{0,4}",
        "[0-9.]{0,3}",
        vec(key_value(), 0..2),
        any::<u32>(),
    )
        .prop_map(|(name, version, attributes, dropped_attributes_count)| {
            InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            }
        })
}

pub fn resource() -> impl Strategy<Value = Resource> {
    let entity = ("[a-z]{0,3}", "[a-z]{0,3}", vec("[a-z]{0,3}", 0..2)).prop_map(
        |(schema_url, r#type, id_keys)| EntityRef {
            schema_url,
            r#type,
            description_keys: id_keys.clone(),
            id_keys,
        },
    );
    (
        vec(resource_attribute(), 0..4),
        any::<u32>(),
        vec(entity, 0..2),
    )
        .prop_map(
            |(attributes, dropped_attributes_count, entity_refs)| Resource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            },
        )
}

pub fn budget() -> impl Strategy<Value = DecodeBudget> {
    prop_oneof![
        3 => Just(DecodeBudget::unlimited()),
        1 => (0usize..3000).prop_map(|limit| DecodeBudget::new(limit, "test.max_row_bytes")),
    ]
}

/// `field` of `tag` holding `v`.
pub fn field(tag: u32, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, PW::LengthDelimited, &mut out);
    encode_varint(v.len() as u64, &mut out);
    out.extend_from_slice(v);
    out
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A logs request of `n` records of one service and scope, with valid ids.
pub fn logs_request(n: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "checkout"), kv("host.name", "n1")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        observed_time_unix_nano: 1_700_000_000_000_000_500,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!("hello {i}"))),
                        }),
                        attributes: vec![kv("k", "v")],
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A traces request of two spans of service `api`: one with an event and a link, and a copy
/// with a span id of one byte (rejected).
pub fn traces_request() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 1_500,
        attributes: vec![kv("http.route", "/")],
        events: vec![Event {
            time_unix_nano: 1_100,
            name: "ev".into(),
            attributes: vec![kv("a", "b")],
            ..Default::default()
        }],
        links: vec![Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            attributes: vec![kv("c", "d")],
            ..Default::default()
        }],
        status: Some(Status {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    let mut bad = span.clone();
    bad.span_id = vec![1];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span, bad],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Field `tag` holding `bytes`, length-delimited: hand-made bodies.
pub fn len_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(tag, PW::LengthDelimited, &mut out);
    encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}
