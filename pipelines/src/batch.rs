//! The batch: one tenant, one signal, one Arrow record batch in the signal's lake schema.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow_schema::ArrowError;
use arrow_select::take::take_record_batch;
use weir_schema::Signal;

use crate::columns::AttributesBuilder;

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

    /// Re-times the rows whose own timestamps fall outside `[received_at - late,
    /// received_at + future]` (nanoseconds): their time column becomes `received_at` and
    /// their own timestamp is kept, as RFC 3339 with nanoseconds, in the
    /// [`ORIGINAL_TIMESTAMP`] attribute (replacing an entry of that key the row had). So the
    /// rows of one batch fall in at most `(late + future) / 1h + 2` hours whatever their
    /// senders wrote, and nothing of a record is dropped. Returns how many rows were
    /// re-timed; a batch with none is left untouched (no copy).
    pub fn retime_outside(&mut self, late: i64, future: i64) -> Result<usize, ArrowError> {
        let (lo, hi) = (
            self.received_at.saturating_sub(late),
            self.received_at.saturating_add(future),
        );
        let Some(ts) = self.timestamps() else {
            return Ok(0);
        };
        let outside = |t: i64| t < lo || t > hi;
        let count = ts.values().iter().filter(|&&t| outside(t)).count();
        if count == 0 {
            return Ok(0);
        }
        let times: Vec<i64> = ts
            .values()
            .iter()
            .map(|&t| if outside(t) { self.received_at } else { t })
            .collect();
        let times: ArrayRef = Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC"));
        let schema = self.records.schema();
        let time_index = schema.index_of(self.signal.time_column())?;
        let attrs_index = schema.index_of("attributes")?;
        let old = self
            .records
            .column(attrs_index)
            .as_map_opt()
            .ok_or_else(|| ArrowError::SchemaError("the attributes column is not a map".into()))?;
        let (keys, values) = (
            old.keys().as_string::<i32>(),
            old.values().as_string::<i32>(),
        );
        let mut attrs = AttributesBuilder::with_capacity(ts.len());
        for (row, &t) in ts.values().iter().enumerate() {
            let range = old.value_offsets()[row] as usize..old.value_offsets()[row + 1] as usize;
            let retimed = outside(t);
            for i in range {
                let key = keys.value(i);
                if retimed && key == ORIGINAL_TIMESTAMP {
                    continue;
                }
                attrs.entry(key, values.is_valid(i).then(|| values.value(i)));
            }
            if retimed {
                let original = chrono::DateTime::from_timestamp_nanos(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                attrs.entry(ORIGINAL_TIMESTAMP, Some(&original));
            }
            attrs.finish_row();
        }
        let mut columns = self.records.columns().to_vec();
        columns[time_index] = times;
        columns[attrs_index] = attrs.finish();
        self.records = RecordBatch::try_new(schema, columns)?;
        Ok(count)
    }
}

/// The attribute that keeps a record's own timestamp when [`Batch::retime_outside`] moved it
/// to the time it was received.
pub const ORIGINAL_TIMESTAMP: &str = "weir.original_timestamp";

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

    const NOW: i64 = 1_767_229_200_000_000_000; // 2026-01-01T01:00:00Z

    /// Log rows at `times`, each with attributes `n` = its index (and `extra` on the first).
    fn logs(times: &[i64], extra: Option<(&str, &str)>) -> Batch {
        let mut b = crate::logrows::LogsBuilder::default();
        for (i, &t) in times.iter().enumerate() {
            let f = crate::logrows::LogFields {
                timestamp: t,
                observed: NOW,
                body: Some("x"),
                ..Default::default()
            };
            b.append(
                &f,
                None,
                0,
                |_| {},
                |a| {
                    a.entry("n", Some(&i.to_string()));
                    if let (0, Some((k, v))) = (i, extra) {
                        a.entry(k, Some(v));
                    }
                },
            );
        }
        Batch::new("t", Signal::Logs, "syslog", NOW, b.finish().unwrap())
    }

    fn attributes(batch: &Batch, row: usize) -> Vec<(String, Option<String>)> {
        let map = batch.records.column_by_name("attributes").unwrap().as_map();
        let entries = map.value(row);
        let (k, v) = (
            entries.column(0).as_string::<i32>(),
            entries.column(1).as_string::<i32>(),
        );
        (0..entries.len())
            .map(|i| {
                (
                    k.value(i).to_string(),
                    v.is_valid(i).then(|| v.value(i).to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn records_outside_the_window_are_stored_at_receipt_with_their_own_time_kept() {
        let hour = HOUR_NANOS;
        let times = [
            NOW - 2 * hour,
            NOW - 30 * 24 * hour,
            NOW + 5 * hour,
            NOW + hour / 2,
            0,
        ];
        let mut batch = logs(&times, Some((ORIGINAL_TIMESTAMP, "forged")));
        let retimed = batch.retime_outside(24 * hour, hour).unwrap();
        assert_eq!(retimed, 3);
        let ts = batch.timestamps().unwrap().values().to_vec();
        assert_eq!(ts, vec![NOW - 2 * hour, NOW, NOW, NOW + hour / 2, NOW]);
        // In-window rows keep their attributes as they were (the first one's forged entry
        // too: it was not re-timed).
        assert_eq!(
            attributes(&batch, 0),
            vec![
                ("n".into(), Some("0".into())),
                (ORIGINAL_TIMESTAMP.into(), Some("forged".into()))
            ]
        );
        assert_eq!(attributes(&batch, 3), vec![("n".into(), Some("3".into()))]);
        assert_eq!(
            attributes(&batch, 1),
            vec![
                ("n".into(), Some("1".into())),
                (
                    ORIGINAL_TIMESTAMP.into(),
                    Some("2025-12-02T01:00:00.000000000Z".into())
                )
            ]
        );
        assert_eq!(
            attributes(&batch, 4),
            vec![
                ("n".into(), Some("4".into())),
                (
                    ORIGINAL_TIMESTAMP.into(),
                    Some("1970-01-01T00:00:00.000000000Z".into())
                )
            ]
        );
        // The batch still has the lake schema and splits into the window's hours only.
        assert_eq!(batch.records.schema(), Signal::Logs.schema());
        assert_eq!(batch.split_by_partition().unwrap().len(), 2);
    }

    #[test]
    fn a_re_timed_record_replaces_a_sent_original_timestamp_entry() {
        let mut batch = logs(&[i64::MIN], Some((ORIGINAL_TIMESTAMP, "forged")));
        assert_eq!(batch.retime_outside(HOUR_NANOS, HOUR_NANOS).unwrap(), 1);
        let attrs = attributes(&batch, 0);
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], ("n".into(), Some("0".into())));
        assert_eq!(attrs[1].0, ORIGINAL_TIMESTAMP);
        assert_ne!(attrs[1].1.as_deref(), Some("forged"));
    }

    #[test]
    fn a_batch_inside_the_window_is_not_copied() {
        let mut batch = logs(&[NOW, NOW - HOUR_NANOS], None);
        let before = batch.records.column(0).to_data();
        assert_eq!(batch.retime_outside(2 * HOUR_NANOS, 0).unwrap(), 0);
        assert!(batch.records.column(0).to_data().ptr_eq(&before));
    }

    #[test]
    fn hours_of_a_hostile_batch_are_bounded_by_the_window() {
        // 100,000 records, each in an hour of its own.
        let times: Vec<i64> = (0..100_000).map(|i| NOW - i * HOUR_NANOS).collect();
        let mut batch = logs(&times, None);
        let (late, future) = (7 * 24 * HOUR_NANOS, HOUR_NANOS);
        batch.retime_outside(late, future).unwrap();
        let hours = batch.split_by_partition().unwrap().len() as i64;
        assert!(hours <= (late + future) / HOUR_NANOS + 2, "{hours} hours");
        assert_eq!(hours, 7 * 24 + 1);
    }
}
