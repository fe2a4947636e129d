//! The batch: one tenant, one signal, one Arrow record batch in the signal's lake schema.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{RecordBatch, UInt32Array};
use arrow_schema::ArrowError;
use arrow_select::take::take_record_batch;
use weir_schema::Signal;

pub use weir_catalog::layout::{Partition, HOUR_NANOS};

/// A batch of telemetry as it flows through Weir.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Tenant of every row (validated `[A-Za-z0-9_-]{1,64}`).
    pub tenant: String,
    /// Signal of every row.
    pub signal: Signal,
    /// Name of the source that decoded it (`otlp_grpc`, `otlp_http`, ...).
    pub source: String,
    /// When the agent received it, unix nanoseconds.
    pub received_at: i64,
    /// The rows, in `signal.schema()`.
    pub records: RecordBatch,
    /// Set when a transform failed with `on_error = "dead_letter"`: why. Such a batch is
    /// written under the lake's `_dead_letter/` prefix instead of the tenant's data.
    pub dead_letter: Option<String>,
}

impl Batch {
    /// A batch as a source decoded it (not dead-lettered).
    pub fn new(
        tenant: impl Into<String>,
        signal: Signal,
        source: impl Into<String>,
        received_at: i64,
        records: RecordBatch,
    ) -> Batch {
        Batch {
            tenant: tenant.into(),
            signal,
            source: source.into(),
            received_at,
            records,
            dead_letter: None,
        }
    }

    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.records.num_rows()
    }

    /// The row timestamps (unix nanoseconds) that decide partitions.
    pub fn timestamps(&self) -> Option<&arrow_array::PrimitiveArray<TimestampNanosecondType>> {
        timestamps(self.signal, &self.records)
    }

    /// Splits the batch by hour partition. A batch whose rows all fall in one hour (the
    /// common case) is returned as it is, without copying.
    pub fn split_by_partition(self) -> Result<Vec<(Partition, Batch)>, ArrowError> {
        let Some(ts) = self.timestamps() else {
            return Err(ArrowError::SchemaError(format!(
                "{} batch has no {} column",
                self.signal,
                self.signal.time_column()
            )));
        };
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        let first = Partition::of(ts.value(0));
        if ts.values().iter().all(|&t| Partition::of(t) == first) {
            return Ok(vec![(first, self)]);
        }
        let mut groups: BTreeMap<Partition, Vec<u32>> = BTreeMap::new();
        for (i, &t) in ts.values().iter().enumerate() {
            groups.entry(Partition::of(t)).or_default().push(i as u32);
        }
        groups
            .into_iter()
            .map(|(p, idx)| {
                let records = take_record_batch(&self.records, &UInt32Array::from(idx))?;
                Ok((
                    p,
                    Batch {
                        records,
                        tenant: self.tenant.clone(),
                        signal: self.signal,
                        source: self.source.clone(),
                        received_at: self.received_at,
                        dead_letter: self.dead_letter.clone(),
                    },
                ))
            })
            .collect()
    }

    /// Smallest and largest row timestamps.
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        time_bounds(self.signal, &self.records)
    }
}

/// The row timestamps of a signal's rows (its time column).
pub fn timestamps(
    signal: Signal,
    rows: &RecordBatch,
) -> Option<&arrow_array::PrimitiveArray<TimestampNanosecondType>> {
    rows.column_by_name(signal.time_column())
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
}

/// Smallest and largest row timestamps of a signal's rows.
pub fn time_bounds(signal: Signal, rows: &RecordBatch) -> Option<(i64, i64)> {
    let ts = timestamps(signal, rows)?;
    let min = ts.values().iter().copied().min()?;
    let max = ts.values().iter().copied().max()?;
    Some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        assert_eq!(Partition::of(0).path(), "dt=1970-01-01/hour=00");
        let t = 1_767_229_200_000_000_000; // 2026-01-01T01:00:00Z
        assert_eq!(Partition::of(t).path(), "dt=2026-01-01/hour=01");
        assert_eq!(Partition::of(t - 1).path(), "dt=2026-01-01/hour=00");
    }
}
