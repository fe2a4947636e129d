//! The decoded-size budget of one request.
//!
//! A value a protocol sends once for many records (an OTLP resource attribute, a Loki stream's
//! labels, a Fluent tag, the tags of a Datadog series) is copied into the row of each record,
//! so a small request can expand to gigabytes of rows, and past 2 GiB in one string column
//! Arrow's 32-bit offsets overflow. Decoders measure the rows they have built
//! (`LogsBuilder::bytes`, `MetricsBuilder::bytes`, the spans' columns) after each record and
//! stop as soon as the total is over the budget, so a request never holds more than its budget
//! and one record of rows; the source then refuses the whole request (HTTP 413, gRPC
//! `RESOURCE_EXHAUSTED`, a closed Fluent connection) with the message of [`OverBudget`].

/// Bytes of rows one request may decode to, and the configuration key that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBudget {
    limit: usize,
    key: &'static str,
}

/// The largest budget a key may set: one string column of a batch stays well under the 2 GiB
/// its 32-bit offsets can address, even with the record that crosses the budget.
pub const MAX_DECODE_BUDGET: u64 = 1 << 30;

impl DecodeBudget {
    /// A budget of `limit` bytes, set by `key` (`sources.otlp.max_row_bytes`).
    pub const fn new(limit: usize, key: &'static str) -> DecodeBudget {
        DecodeBudget { limit, key }
    }

    /// No budget (input the operator gave, like `weir transform`'s file).
    pub const fn unlimited() -> DecodeBudget {
        DecodeBudget {
            limit: usize::MAX,
            key: "",
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Refuses `bytes` of rows when they are over the budget.
    pub fn check(&self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.limit {
            Err(OverBudget {
                key: self.key,
                limit: self.limit,
            })
        } else {
            Ok(())
        }
    }

    /// Rows worth allocating up front for a request of `rows` records of at least `row_bytes`
    /// each: never more than the budget can hold, so a request of millions of empty records
    /// does not allocate its rows before the first check.
    pub fn capacity(&self, rows: usize, row_bytes: usize) -> usize {
        rows.min(self.limit / row_bytes.max(1))
    }
}

/// A request whose rows are over its [`DecodeBudget`]; refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the request decodes to more than {key} ({limit} bytes) of rows: values sent once for many \
     records (resource attributes, stream labels, tags) are copied to every row; send smaller \
     requests or raise {key}"
)]
pub struct OverBudget {
    /// The key that sets the limit.
    pub key: &'static str,
    /// The limit in bytes.
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_key_and_the_limit() {
        let b = DecodeBudget::new(100, "sources.loki.max_row_bytes");
        assert!(b.check(100).is_ok());
        let e = b.check(101).unwrap_err().to_string();
        assert!(e.contains("sources.loki.max_row_bytes (100 bytes)"), "{e}");
        assert!(DecodeBudget::unlimited().check(usize::MAX).is_ok());
        assert_eq!(b.capacity(1_000_000, 10), 10);
        assert_eq!(b.capacity(3, 10), 3);
    }
}
