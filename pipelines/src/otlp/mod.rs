//! OTLP → Arrow decoding (and the one mapping back, for printing OTLP).
//!
//! The mapping of every OTLP field to a lake column is written out in `docs/schemas.md`.
//! Records that cannot be stored (a trace or span id of the wrong length) are rejected one by
//! one and reported as the OTLP partial success; the rest of the request is kept. A request
//! whose rows grow over its [`DecodeBudget`](crate::DecodeBudget) is refused whole
//! ([`DecodeError::OverBudget`]), checked after each record.
//!
//! Two ways in: from the prost structs of a request (`decode_logs`, `decode_metrics`,
//! `decode_traces`: OTLP/gRPC, whose codec is tonic's prost codec, and the OTLP JSON mapping),
//! or straight from the protobuf bytes of an OTLP/HTTP body (`decode_logs_protobuf`,
//! `decode_traces_protobuf`), which
//! walks the wire format once ([`wire`]) and builds no structs, with the same result.

mod anyvalue;
mod common_wire;
pub mod json_shape;
mod logs;
mod logs_wire;
mod metrics;
pub mod shape;
mod traces;
mod traces_wire;
pub mod wire;
#[cfg(test)]
mod wire_testing;

pub use anyvalue::{any_value_to_string, attributes_into};
pub use logs::{decode_logs, logs_to_otlp};
pub use logs_wire::decode_logs_protobuf;
pub use metrics::decode_metrics;
pub use traces::decode_traces;
pub use traces_wire::decode_traces_protobuf;
pub use wire::{WireError, WireErrorKind};

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use crate::budget::OverBudget;

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The rows do not form a batch of the lake schema.
    #[error("cannot map request to the lake schema: {0}")]
    Arrow(#[from] ArrowError),
    /// The rows are over the request's budget.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// The protobuf body is malformed (the message names the field and the problem).
    #[error(transparent)]
    Malformed(#[from] WireError),
}

/// A decoded request: the rows that were kept and what was rejected.
#[derive(Debug)]
pub struct Decoded {
    /// The accepted rows in the signal's lake schema.
    pub records: RecordBatch,
    /// Rows rejected.
    pub rejected: u64,
    /// Why the first rejected row was rejected.
    pub error: Option<String>,
}

impl Decoded {
    /// The kept `records` and what was rejected on the way.
    pub(crate) fn new(records: RecordBatch, rejected: Rejections) -> Decoded {
        Decoded {
            records,
            rejected: rejected.count,
            error: rejected.first,
        }
    }
}

/// Lowercase hex of an id, or `None` when it is empty.
pub(crate) fn hex_id(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        None
    } else {
        Some(hex::encode(bytes))
    }
}

/// Time of a record: its own, else the observed time, else the time it was received.
pub(crate) fn pick_time(own: u64, observed: u64, received: i64) -> i64 {
    let t = if own != 0 { own } else { observed };
    if t == 0 {
        received
    } else {
        i64::try_from(t).unwrap_or(i64::MAX)
    }
}

/// Tracks rejected rows and the first reason.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    pub count: u64,
    pub first: Option<String>,
}

impl Rejections {
    pub fn reject(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(reason());
        }
    }
}
