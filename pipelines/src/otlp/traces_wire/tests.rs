//! The wire path against the prost path (prost decode + `decode_traces`) on generated
//! requests, rewritten, merged, mutated and truncated bodies.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::Message;

use super::decode_traces_protobuf;
use crate::budget::DecodeBudget;
use crate::otlp::wire_testing::*;
use crate::otlp::{decode_traces, DecodeError};

const RECEIVED: i64 = 1_750_000_000_000_000_000;

fn old(bytes: &[u8], budget: &DecodeBudget) -> Outcome {
    match ExportTraceServiceRequest::decode(bytes) {
        Ok(req) => Outcome::of(decode_traces(&req, RECEIVED, budget)),
        Err(_) => Outcome::Malformed,
    }
}

fn new(bytes: &[u8], budget: &DecodeBudget) -> Outcome {
    Outcome::of(decode_traces_protobuf(bytes, RECEIVED, budget))
}

fn span_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 8),
        1 => id(),
    ]
}

fn trace_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 16),
        1 => id(),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (time(), "[a-z]{0,3}", vec(key_value(), 0..2), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = Link> {
    (
        prop_oneof![8 => proptest::collection::vec(any::<u8>(), 16), 1 => id()],
        prop_oneof![8 => proptest::collection::vec(any::<u8>(), 8), 1 => id()],
        "[a-z=]{0,3}",
        vec(key_value(), 0..2),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count,
                flags,
            },
        )
}

fn span() -> impl Strategy<Value = Span> {
    (
        (
            trace_id(),
            span_id(),
            "[a-z=]{0,3}",
            prop_oneof![2 => Just(Vec::new()), 3 => span_id()],
            "[A-Z /]{0,5}",
            any::<i32>(),
            time(),
            time(),
        ),
        (
            vec(key_value(), 0..3),
            any::<u32>(),
            vec(event(), 0..3),
            any::<u32>(),
            vec(link(), 0..2),
            any::<u32>(),
            option::of((any::<i32>(), "[a-z]{0,3}")),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, trace_state, parent_span_id, name, kind, start, end),
                (
                    attributes,
                    dropped_attrs,
                    events,
                    dropped_events,
                    links,
                    dropped_links,
                    status,
                    flags,
                ),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: dropped_attrs,
                events,
                dropped_events_count: dropped_events,
                links,
                dropped_links_count: dropped_links,
                status: status.map(|(code, message)| Status { code, message }),
            },
        )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (option::of(scope()), vec(span(), 0..4), "[a-z:/]{0,6}").prop_map(
        |(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        },
    );
    let resource_spans = (option::of(resource()), vec(scope_spans, 0..3), "[a-z]{0,3}").prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 250, .. ProptestConfig::default() })]

    /// On any request, rewritten with its fields reordered, unknown fields of every wire type
    /// and some fields written twice, the wire path gives what prost decode + `decode_traces`
    /// gives.
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
        let rewritten = rewrite.message(&bytes, Msg::TraceRequest);
        prop_assert_eq!(new(&rewritten, &budget), old(&rewritten, &budget));
        if dup == 0 {
            prop_assert_eq!(old(&rewritten, &budget), old(&bytes, &budget));
        }
    }

    /// A span that is two spans' bytes end to end (scalars: the last wins; attributes, events
    /// and links appended; statuses merged).
    #[test]
    fn merged_spans_match_prost(a in span(), b in span()) {
        let span = [a.encode_to_vec(), b.encode_to_vec()].concat();
        let body = field(1, &field(2, &field(2, &span)));
        prop_assert_eq!(new(&body, &DecodeBudget::unlimited()), old(&body, &DecodeBudget::unlimited()));
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
        let unlimited = DecodeBudget::unlimited();
        prop_assert_eq!(new(&bytes, &unlimited), old(&bytes, &unlimited));
    }
}

#[test]
fn reordered_and_truncated_bodies() {
    let unlimited = DecodeBudget::unlimited();
    let bytes = traces_request().encode_to_vec();
    let want = old(&bytes, &unlimited);
    assert!(matches!(&want, Outcome::Rows { records, rejected: 1, .. } if records.num_rows() == 1));
    let mut rewrite = Rewrite::new(true, 1, 0, 7);
    let rewritten = rewrite.message(&bytes, Msg::TraceRequest);
    assert!(rewrite.unknowns_written >= 6);
    assert_eq!(new(&rewritten, &unlimited), want);
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        assert_eq!(new(part, &unlimited), old(part, &unlimited), "cut at {cut}");
    }
}

#[test]
fn malformed_spans_are_named_and_win_over_the_budget() {
    let mut bytes = traces_request().encode_to_vec();
    let at = bytes.windows(4).position(|w| w == b"boom").expect("status");
    bytes[at] = 0xff;
    match decode_traces_protobuf(&bytes, RECEIVED, &DecodeBudget::new(1, "k")) {
        Err(DecodeError::Malformed(e)) => assert_eq!(
            e.to_string(),
            "resource_spans[0].scope_spans[0].spans[0].status.message: invalid string value: \
             data is not UTF-8 encoded"
        ),
        other => panic!("expected malformed, got {other:?}"),
    }
    let ok = traces_request().encode_to_vec();
    assert!(matches!(
        decode_traces_protobuf(&ok, RECEIVED, &DecodeBudget::new(1, "k")),
        Err(DecodeError::OverBudget(_))
    ));
}

#[test]
fn a_span_listing_millions_of_empty_links_is_refused_before_it_is_read() {
    // One span of a million empty links: 2 MB on the wire, a refused span (its links have no
    // ids) with no rows at all, but tens of MB listed before that is known.
    let span = [0x6au8, 0x00].repeat(1_000_000);
    let body = len_field(1, &len_field(2, &len_field(2, &span)));
    let budget = DecodeBudget::new(16 << 20, "sources.otlp.max_row_bytes");
    match decode_traces_protobuf(&body, RECEIVED, &budget) {
        Err(DecodeError::OverBudget(o)) => assert_eq!(o.limit, 16 << 20),
        other => panic!("expected over budget, got {:?}", other.map(|d| d.rejected)),
    }
}
