//! The wire path against the prost path (prost decode + `decode_logs`) on generated requests,
//! rewritten bodies (fields reordered, unknown fields of every wire type, duplicated fields),
//! mutated and truncated bodies, and hand-made malformed ones.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::encoding::{encode_key, encode_varint, WireType as PW};
use prost::Message;

use super::decode_logs_protobuf;
use crate::budget::DecodeBudget;
use crate::otlp::wire_testing::*;
use crate::otlp::{decode_logs, DecodeError, WireErrorKind};

const RECEIVED: i64 = 1_750_000_000_000_000_000;

fn old(bytes: &[u8], budget: &DecodeBudget) -> Outcome {
    match ExportLogsServiceRequest::decode(bytes) {
        Ok(req) => Outcome::of(decode_logs(&req, RECEIVED, budget)),
        Err(_) => Outcome::Malformed,
    }
}

fn new(bytes: &[u8], budget: &DecodeBudget) -> Outcome {
    Outcome::of(decode_logs_protobuf(bytes, RECEIVED, budget))
}

fn unlimited() -> DecodeBudget {
    DecodeBudget::unlimited()
}

fn error_of(bytes: &[u8]) -> String {
    match decode_logs_protobuf(bytes, RECEIVED, &unlimited()) {
        Err(DecodeError::Malformed(e)) => e.to_string(),
        other => panic!("expected malformed, got {other:?}"),
    }
}

// ---- Generated requests.

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (
            time(),
            time(),
            any::<i32>(),
            "[A-Z]{0,5}",
            option::of(any_value()),
        ),
        (
            vec(key_value(), 0..4),
            any::<u32>(),
            any::<u32>(),
            id(),
            id(),
            "[a-z.]{0,4}",
        ),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body),
                (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

fn scope_logs() -> impl Strategy<Value = ScopeLogs> {
    let scope = option::of(scope());
    (scope, vec(log_record(), 0..4), "[a-z:/]{0,6}").prop_map(|(scope, log_records, schema_url)| {
        ScopeLogs {
            scope,
            log_records,
            schema_url,
        }
    })
}

fn resource_logs() -> impl Strategy<Value = ResourceLogs> {
    let resource = option::of(resource());
    (resource, vec(scope_logs(), 0..3), "[a-z:/]{0,6}").prop_map(
        |(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        },
    )
}

fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    vec(resource_logs(), 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// On any request, rewritten with its fields reordered, unknown fields of every wire type
    /// and some fields written twice (merged or appended by prost's rules), the wire path gives
    /// what prost decode + `decode_logs` gives: rows, rejections, first reason, budget refusal.
    #[test]
    fn wire_path_matches_prost_path(
        req in request(),
        budget in budget(),
        reverse in any::<bool>(),
        unknown in prop_oneof![Just(0u64), 1u64..4],
        dup in prop_oneof![Just(0u64), 2u64..6],
        seed in any::<u64>(),
    ) {
        let bytes = req.encode_to_vec();
        prop_assert_eq!(new(&bytes, &budget), old(&bytes, &budget));
        let mut rewrite = Rewrite::new(reverse, unknown, dup, seed);
        let rewritten = rewrite.message(&bytes, Msg::Request);
        let want = old(&rewritten, &budget);
        prop_assert_eq!(new(&rewritten, &budget), want);
        if dup == 0 {
            // Reordering and unknown fields change nothing.
            prop_assert_eq!(old(&rewritten, &budget), old(&bytes, &budget));
        }
    }

    /// Flipped bytes and cuts: both paths refuse the same bodies, and agree on the others.
    #[test]
    fn mutated_bodies_agree(
        req in request(),
        flips in vec((any::<usize>(), 1u8..=255), 0..4),
        cut in any::<usize>(),
    ) {
        let mut bytes = req.encode_to_vec();
        let n = bytes.len();
        if n > 0 {
            for (i, x) in flips {
                bytes[i % n] ^= x;
            }
            bytes.truncate(cut % (n + 1));
        }
        prop_assert_eq!(new(&bytes, &unlimited()), old(&bytes, &unlimited()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Singular fields sent twice with different values, which prost merges: two resources
    /// around the scopes (attributes appended; the first `service.name` counts), two scopes
    /// after the records (name and version: the last wins), a record that is two records'
    /// bytes end to end (scalars: the last wins; bodies: merged oneof), and an attribute that
    /// is two key-values' bytes end to end (key: the last wins; values merged).
    #[test]
    fn merged_fields_match_prost(
        (r1, r2) in (resource(), resource()),
        (s1, s2) in (scope(), scope()),
        (a, b) in (log_record(), log_record()),
        (k1, k2) in (key_value(), key_value()),
    ) {
        let record = [
            a.encode_to_vec(),
            b.encode_to_vec(),
            field(6, &[k1.encode_to_vec(), k2.encode_to_vec()].concat()),
        ]
        .concat();
        let scope_logs = [
            field(2, &record),
            field(1, &s1.encode_to_vec()),
            field(1, &s2.encode_to_vec()),
        ]
        .concat();
        let resource_logs = [
            field(1, &r1.encode_to_vec()),
            field(2, &scope_logs),
            field(1, &r2.encode_to_vec()),
        ]
        .concat();
        let body = field(1, &resource_logs);
        prop_assert_eq!(new(&body, &unlimited()), old(&body, &unlimited()));
    }
}

// ---- Hand-made cases.

#[test]
fn reversed_fields_and_unknown_fields_of_every_wire_type_decode_the_same() {
    let bytes = logs_request(3).encode_to_vec();
    let want = old(&bytes, &unlimited());
    assert!(matches!(&want, Outcome::Rows { records, .. } if records.num_rows() == 3));
    // Resource after the scopes, scope after the records, key after value, ...
    let reversed = Rewrite::new(true, 0, 0, 1).message(&bytes, Msg::Request);
    assert_ne!(reversed, bytes);
    assert_eq!(new(&reversed, &unlimited()), want);
    // An unknown field before every field, cycling through the wire types.
    let mut rewrite = Rewrite::new(true, 1, 0, 1);
    let unknown = rewrite.message(&bytes, Msg::Request);
    assert!(rewrite.unknowns_written >= 6);
    assert_eq!(new(&unknown, &unlimited()), want);
}

#[test]
fn every_truncation_is_refused_or_means_the_same() {
    let bytes = logs_request(3).encode_to_vec();
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        let (ours, theirs) = (new(part, &unlimited()), old(part, &unlimited()));
        assert_eq!(ours, theirs, "cut at {cut}");
    }
}

#[test]
fn an_empty_body_is_an_empty_batch() {
    match new(&[], &unlimited()) {
        Outcome::Rows {
            records, rejected, ..
        } => {
            assert_eq!((records.num_rows(), rejected), (0, 0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_utf8_names_the_field() {
    let mut bytes = logs_request(2).encode_to_vec();
    let at = bytes
        .windows(4)
        .position(|w| w == b"INFO")
        .expect("severity text");
    bytes[at] = 0xff;
    let e = error_of(&bytes);
    assert_eq!(
        e,
        "resource_logs[0].scope_logs[0].log_records[0].severity_text: invalid string value: data \
         is not UTF-8 encoded"
    );
    assert_eq!(old(&bytes, &unlimited()), Outcome::Malformed);
}

/// Wraps `record` (the bytes of one `LogRecord`) into a request.
fn wrap_record(record: &[u8]) -> Vec<u8> {
    field(1, &field(2, &field(2, record)))
}

#[test]
fn malformed_records_are_named() {
    // time_unix_nano (fixed64) sent as a varint.
    let e = error_of(&wrap_record(&[0x08, 0x05]));
    assert!(
        e.ends_with(
            "log_records[0].time_unix_nano: wire type Varint where SixtyFourBit was expected"
        ),
        "{e}"
    );
    // A body whose length runs past the end of the record.
    let e = error_of(&wrap_record(&[0x2a, 0x09, 0x0a, 0x01]));
    assert!(
        e.ends_with(
            "log_records[0].body: a value of 9 bytes runs past the end of its message (2 bytes left)"
        ),
        "{e}"
    );
    // A truncated varint (severity_number).
    let e = error_of(&wrap_record(&[0x10, 0x80]));
    assert!(e.contains("severity_number: invalid varint"), "{e}");
    // Wire type 7 at the top level, the garbage the integration test sends.
    let e = error_of(b"\xff\xff\xff\xff\x0f garbage");
    assert_eq!(e, "invalid wire type value 7");
    // An attribute value's string.
    let mut kv = Vec::new();
    encode_key(2, PW::LengthDelimited, &mut kv);
    kv.extend_from_slice(&[3, 0x0a, 1, 0xc3]);
    let mut rec = Vec::new();
    encode_key(6, PW::LengthDelimited, &mut rec);
    encode_varint(kv.len() as u64, &mut rec);
    rec.extend_from_slice(&kv);
    let e = error_of(&wrap_record(&rec));
    assert!(
        e.ends_with("log_records[0].attributes[0].value.string_value: invalid string value: data is not UTF-8 encoded"),
        "{e}"
    );
    for bad in [
        &[0x08, 0x05][..],
        &[0x2a, 0x09, 0x0a, 0x01],
        &[0x10, 0x80],
        &rec,
    ] {
        assert_eq!(old(&wrap_record(bad), &unlimited()), Outcome::Malformed);
    }
}

#[test]
fn nesting_is_limited_as_prost_limits_it() {
    for depth in 90..=100 {
        let mut v = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..depth {
            v = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let mut req = logs_request(1);
        req.resource_logs[0].scope_logs[0].log_records[0].body = Some(v);
        let bytes = req.encode_to_vec();
        let ours = new(&bytes, &unlimited());
        assert_eq!(ours, old(&bytes, &unlimited()), "depth {depth}");
        if ours == Outcome::Malformed {
            assert!(error_of(&bytes).contains("recursion limit"));
        }
    }
}

#[test]
fn a_resource_attribute_copied_to_every_row_is_over_budget() {
    let budget = DecodeBudget::new(8 << 20, "sources.otlp.max_row_bytes");
    let mut req = logs_request(0);
    let rl = &mut req.resource_logs[0];
    if let Some(r) = rl.resource.as_mut() {
        r.attributes.push(kv("big", &"x".repeat(1 << 20)));
    }
    rl.scope_logs[0].log_records = vec![LogRecord::default(); 20_000];
    let bytes = req.encode_to_vec();
    match decode_logs_protobuf(&bytes, RECEIVED, &budget) {
        Err(DecodeError::OverBudget(e)) => {
            assert_eq!((e.key, e.limit), ("sources.otlp.max_row_bytes", 8 << 20));
        }
        other => panic!("expected over budget, got {other:?}"),
    }
    // Malformed wins over the budget, as prost refuses the body before any row is built.
    let mut broken = bytes.clone();
    broken.extend_from_slice(&[0x0a, 0x05]);
    assert!(matches!(
        decode_logs_protobuf(&broken, RECEIVED, &budget),
        Err(DecodeError::Malformed(e)) if matches!(e.kind(), WireErrorKind::Truncated { .. })
    ));
    // The same resource over a few records fits.
    req.resource_logs[0].scope_logs[0].log_records.truncate(5);
    let d = decode_logs_protobuf(&req.encode_to_vec(), RECEIVED, &budget).unwrap();
    assert_eq!(d.records.num_rows(), 5);
}

#[test]
fn bad_ids_are_rejected_one_by_one_with_the_same_reason() {
    let mut req = logs_request(3);
    req.resource_logs[0].scope_logs[0].log_records[1].trace_id = vec![1, 2, 3];
    req.resource_logs[0].scope_logs[0].log_records[2].span_id = vec![1];
    let d = decode_logs_protobuf(&req.encode_to_vec(), RECEIVED, &unlimited()).unwrap();
    assert_eq!((d.records.num_rows(), d.rejected), (1, 2));
    assert_eq!(
        d.error.as_deref(),
        Some("log record trace_id has 3 bytes, expected 16")
    );
}

#[test]
fn a_record_listing_millions_of_empty_attributes_is_refused_before_it_is_read() {
    // One log record of a million empty attributes: 2 MB on the wire, about 8 MB of rows,
    // but some 40 MB listed before the row is built.
    let record = [0x32u8, 0x00].repeat(1_000_000);
    let scope = len_field(2, &record);
    let resource = len_field(2, &scope);
    let body = len_field(1, &resource);
    let budget = DecodeBudget::new(16 << 20, "sources.otlp.max_row_bytes");
    match decode_logs_protobuf(&body, RECEIVED, &budget) {
        Err(DecodeError::OverBudget(o)) => assert_eq!(o.limit, 16 << 20),
        other => panic!(
            "expected over budget, got {:?}",
            other.map(|d| d.records.num_rows())
        ),
    }
    // The same record within a budget that holds its list is taken.
    let roomy = DecodeBudget::new(256 << 20, "k");
    let rows = decode_logs_protobuf(&body, RECEIVED, &roomy).unwrap();
    assert_eq!(rows.records.num_rows(), 1);
}

#[test]
fn a_resource_listing_millions_of_empty_attributes_is_refused_before_it_is_read() {
    let resource_attrs = [0x0au8, 0x00].repeat(1_000_000);
    let resource = len_field(1, &resource_attrs);
    let scope = len_field(2, &len_field(2, &[]));
    let body = len_field(1, &[resource, scope].concat());
    let budget = DecodeBudget::new(16 << 20, "sources.otlp.max_row_bytes");
    assert!(matches!(
        decode_logs_protobuf(&body, RECEIVED, &budget),
        Err(DecodeError::OverBudget(_))
    ));
}

#[test]
fn a_resource_split_into_many_small_occurrences_is_counted_whole() {
    // 40 occurrences of the resource field, each under 64 KiB of empty attributes: merged
    // into one list of 1.2 million entries.
    let occurrence = len_field(1, &[0x0au8, 0x00].repeat(30_000));
    let scope = len_field(2, &len_field(2, &[]));
    let body = len_field(1, &[occurrence.repeat(40), scope].concat());
    let budget = DecodeBudget::new(16 << 20, "sources.otlp.max_row_bytes");
    assert!(matches!(
        decode_logs_protobuf(&body, RECEIVED, &budget),
        Err(DecodeError::OverBudget(_))
    ));
}

#[test]
fn a_million_empty_scopes_are_counted_as_they_are_listed() {
    let body = len_field(1, &[0x12u8, 0x00].repeat(1_000_000));
    let budget = DecodeBudget::new(16 << 20, "sources.otlp.max_row_bytes");
    assert!(matches!(
        decode_logs_protobuf(&body, RECEIVED, &budget),
        Err(DecodeError::OverBudget(_))
    ));
    // Within a budget that holds them, they decode to nothing.
    let roomy = DecodeBudget::new(64 << 20, "k");
    assert_eq!(
        decode_logs_protobuf(&body, RECEIVED, &roomy)
            .unwrap()
            .records
            .num_rows(),
        0
    );
}
