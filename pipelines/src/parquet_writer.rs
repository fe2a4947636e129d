//! Parquet encoding of the lake: one sorted file per partition flush.

use arrow_array::cast::AsArray;
use arrow_array::{RecordBatch, UInt32Array};
use arrow_ord::sort::{lexsort_to_indices, SortColumn};
use arrow_schema::ArrowError;
use arrow_select::take::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use weir_catalog::layout::{
    FileFacts, META_MAX_TIMESTAMP, META_MIN_TIMESTAMP, META_SCHEMA_VERSION, META_SERVICES,
    META_SIGNAL, META_TENANT,
};
use weir_schema::{Signal, SCHEMA_VERSION};

use crate::batch::time_bounds;

/// Writer settings of the lake's Parquet files.
#[derive(Debug, Clone)]
pub struct ParquetConfig {
    /// ZSTD level (1-22).
    pub zstd_level: i32,
    /// Rows per row group.
    pub row_group_rows: usize,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            zstd_level: 3,
            row_group_rows: 128 * 1024,
        }
    }
}

/// Errors of Parquet encoding.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Arrow failed (concatenation, sorting).
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The Parquet writer failed.
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// Nothing to encode.
    #[error("no rows to encode")]
    Empty,
}

/// What the file holds, for its segment record.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// Rows written.
    pub rows: u64,
    /// Smallest row timestamp.
    pub min_timestamp: i64,
    /// Largest row timestamp.
    pub max_timestamp: i64,
    /// Distinct service names.
    pub services: Vec<String>,
}

impl FileSummary {
    /// What the index records of the file once it is written as `bytes` bytes.
    pub fn into_facts(self, bytes: u64) -> FileFacts {
        FileFacts {
            rows: self.rows,
            bytes,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            services: self.services,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// Concatenates and sorts record batches of one signal by the signal's sort order.
pub fn sort_rows(signal: Signal, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    match order_rows(signal, batches)? {
        Ordered::AsIs(batches) => arrow_select::concat::concat_batches(&signal.schema(), batches),
        Ordered::Indexed(merged, indices) => take_record_batch(&merged, &indices),
    }
}

/// The rows of a flush in the signal's sort order.
enum Ordered<'a> {
    /// Already in order, batch after batch: written as they are, without a copy.
    AsIs(&'a [RecordBatch]),
    /// Concatenated, and the order to take their rows in.
    Indexed(RecordBatch, UInt32Array),
}

fn sort_columns(signal: Signal, rows: &RecordBatch) -> Result<Vec<SortColumn>, ArrowError> {
    signal
        .sort_columns()
        .iter()
        .map(|name| {
            rows.column_by_name(name)
                .map(|c| SortColumn {
                    values: c.clone(),
                    options: None,
                })
                .ok_or_else(|| ArrowError::SchemaError(format!("missing sort column {name}")))
        })
        .collect()
}

/// Puts the rows in order. Most flushes arrive in order (one service's records in time
/// order): checking costs a comparison per row and stops at the first row out of order, where
/// sorting costs n log n comparisons, a concatenated copy of every column and a taken one.
fn order_rows(signal: Signal, batches: &[RecordBatch]) -> Result<Ordered<'_>, ArrowError> {
    let mut previous: Option<Vec<SortColumn>> = None;
    let mut in_order_so_far = true;
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let columns = sort_columns(signal, batch)?;
        let follows = match &previous {
            None => true,
            Some(prev) => boundary_in_order(prev, &columns)?,
        };
        if !follows || !in_order(&columns)? {
            in_order_so_far = false;
            break;
        }
        previous = Some(columns);
    }
    if in_order_so_far {
        return Ok(Ordered::AsIs(batches));
    }
    let merged = arrow_select::concat::concat_batches(&signal.schema(), batches)?;
    let indices = lexsort_to_indices(&sort_columns(signal, &merged)?, None)?;
    Ok(Ordered::Indexed(merged, indices))
}

/// Whether the last row of `before` sorts at or before the first row of `after`.
fn boundary_in_order(before: &[SortColumn], after: &[SortColumn]) -> Result<bool, ArrowError> {
    let last = before.first().map(|c| c.values.len()).unwrap_or(0);
    if last == 0 {
        return Ok(true);
    }
    for (b, a) in before.iter().zip(after) {
        let cmp = arrow_ord::ord::make_comparator(
            b.values.as_ref(),
            a.values.as_ref(),
            b.options.unwrap_or_default(),
        )?;
        match cmp(last - 1, 0) {
            std::cmp::Ordering::Less => return Ok(true),
            std::cmp::Ordering::Equal => continue,
            std::cmp::Ordering::Greater => return Ok(false),
        }
    }
    Ok(true)
}

/// Whether the rows are already in the order `lexsort_to_indices` gives (ascending, nulls
/// first, column by column).
fn in_order(columns: &[SortColumn]) -> Result<bool, ArrowError> {
    let len = columns.first().map(|c| c.values.len()).unwrap_or(0);
    if len < 2 {
        return Ok(true);
    }
    let compare = columns
        .iter()
        .map(|c| {
            arrow_ord::ord::make_comparator(
                c.values.as_ref(),
                c.values.as_ref(),
                c.options.unwrap_or_default(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for i in 1..len {
        for cmp in &compare {
            match cmp(i - 1, i) {
                std::cmp::Ordering::Less => break,
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Greater => return Ok(false),
            }
        }
    }
    Ok(true)
}

pub(crate) fn writer_properties(
    cfg: &ParquetConfig,
    signal: Signal,
    tenant: &str,
    s: &FileSummary,
    extra: &[(String, String)],
) -> Result<WriterProperties, ParquetError> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(cfg.zstd_level)?))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_key_value_metadata(Some(
            vec![
                KeyValue::new(META_SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string()),
                KeyValue::new(META_TENANT.into(), tenant.to_string()),
                KeyValue::new(META_SIGNAL.into(), signal.as_str().to_string()),
                KeyValue::new(META_MIN_TIMESTAMP.into(), s.min_timestamp.to_string()),
                KeyValue::new(META_MAX_TIMESTAMP.into(), s.max_timestamp.to_string()),
                KeyValue::new(
                    META_SERVICES.into(),
                    serde_json::to_string(&s.services).unwrap_or_default(),
                ),
            ]
            .into_iter()
            .chain(
                extra
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .collect(),
        ));
    if matches!(signal, Signal::Logs | Signal::Traces) {
        b = b.set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true);
    }
    Ok(b.build())
}

fn summarize(signal: Signal, batches: &[RecordBatch]) -> FileSummary {
    let (min_timestamp, max_timestamp) = batches
        .iter()
        .filter_map(|b| time_bounds(signal, b))
        .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
        .unwrap_or((0, 0));
    let services = weir_catalog::bound_services(
        batches
            .iter()
            .filter_map(|b| {
                b.column_by_name("service_name")
                    .and_then(|c| c.as_string_opt::<i32>())
            })
            .flat_map(|col| col.iter().flatten()),
    );
    FileSummary {
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        min_timestamp,
        max_timestamp,
        services,
    }
}

/// Encodes the rows of one partition as one sorted Parquet file, with `extra_metadata` added
/// to the footer.
pub fn encode_parquet(
    cfg: &ParquetConfig,
    signal: Signal,
    tenant: &str,
    batches: &[RecordBatch],
    extra_metadata: &[(String, String)],
) -> Result<(Vec<u8>, FileSummary), EncodeError> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(EncodeError::Empty);
    }
    let summary = summarize(signal, batches);
    let props = writer_properties(cfg, signal, tenant, &summary, extra_metadata)?;
    let mut out = Vec::new();
    // The file schema carries the Iceberg field ids (`Signal::file_schema`); the rows are of
    // the lake schema, the same types without the ids.
    let mut writer = ArrowWriter::try_new(&mut out, signal.file_schema(), Some(props))?;
    // The writer cuts row groups at `row_group_rows` whatever the batches it is given, so
    // rows in order go in as they are, and sorted rows are taken a row group at a time: the
    // flush never holds a sorted copy of all its rows.
    match order_rows(signal, batches)? {
        Ordered::AsIs(batches) => {
            for batch in batches.iter().filter(|b| b.num_rows() > 0) {
                writer.write(batch)?;
            }
        }
        Ordered::Indexed(merged, indices) => {
            let step = cfg.row_group_rows.max(1);
            for start in (0..indices.len()).step_by(step) {
                let chunk = indices.slice(start, step.min(indices.len() - start));
                writer.write(&take_record_batch(&merged, &chunk)?)?;
            }
        }
    }
    writer.close()?;
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logrows::{LogFields, LogsBuilder};
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampNanosecondType;
    use arrow_array::Array;
    use proptest::prelude::*;

    fn logs(rows: &[(Option<&str>, i64)]) -> RecordBatch {
        let mut b = LogsBuilder::with_capacity(0);
        for (service, ts) in rows {
            b.append(
                &LogFields {
                    timestamp: *ts,
                    observed: *ts,
                    severity_number: 9,
                    severity_text: None,
                    body: Some("b"),
                    trace_id: None,
                    span_id: None,
                    flags: 0,
                    event_name: None,
                    service_name: *service,
                    scope_name: None,
                },
                None,
                0,
                |_| {},
                |_| {},
            );
        }
        b.finish().unwrap()
    }

    fn keys(batch: &RecordBatch) -> Vec<(Option<String>, i64)> {
        let svc = batch
            .column_by_name("service_name")
            .unwrap()
            .as_string::<i32>();
        let ts = batch
            .column_by_name("timestamp")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        (0..batch.num_rows())
            .map(|i| {
                (
                    svc.is_valid(i).then(|| svc.value(i).to_string()),
                    ts.value(i),
                )
            })
            .collect()
    }

    proptest! {
        /// Sorted or not, the output is the rows in (service, time) order, nulls first: the
        /// in-order shortcut never changes what is written.
        #[test]
        fn sort_rows_orders_every_input(
            rows in proptest::collection::vec((proptest::option::of(0u8..3), 0i64..50), 0..200),
            split in 0usize..200,
        ) {
            let names = ["api", "db", "web"];
            let rows: Vec<(Option<&str>, i64)> =
                rows.iter().map(|(s, t)| (s.map(|s| names[s as usize]), *t)).collect();
            let cut = split.min(rows.len());
            let batches = [logs(&rows[..cut]), logs(&rows[cut..])];
            let out = sort_rows(Signal::Logs, &batches).unwrap();
            let mut want: Vec<(Option<String>, i64)> =
                rows.iter().map(|(s, t)| (s.map(str::to_string), *t)).collect();
            want.sort();
            prop_assert_eq!(keys(&out), want.clone());
            // Already sorted input goes through the shortcut and stays as it is.
            let sorted: Vec<(Option<&str>, i64)> =
                want.iter().map(|(s, t)| (s.as_deref(), *t)).collect();
            let again = sort_rows(Signal::Logs, &[logs(&sorted)]).unwrap();
            prop_assert_eq!(keys(&again), want);
        }

        /// The file holds the rows in sort order, and the same rows whether they went in as
        /// they were (in order across several batches, no copy) or were taken a row group at
        /// a time (out of order); row groups are cut at `row_group_rows` either way.
        #[test]
        fn encoded_files_hold_the_sorted_rows(
            rows in proptest::collection::vec((proptest::option::of(0u8..3), 0i64..50), 1..120),
            cuts in proptest::collection::vec(0usize..120, 0..4),
            presorted in any::<bool>(),
        ) {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let names = ["api", "db", "web"];
            let mut rows: Vec<(Option<&str>, i64)> =
                rows.iter().map(|(s, t)| (s.map(|s| names[s as usize]), *t)).collect();
            if presorted {
                rows.sort();
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
            cuts.push(0);
            cuts.push(rows.len());
            cuts.sort();
            let batches: Vec<RecordBatch> =
                cuts.windows(2).map(|w| logs(&rows[w[0]..w[1]])).collect();
            let cfg = ParquetConfig { zstd_level: 1, row_group_rows: 7 };
            let (bytes, summary) =
                encode_parquet(&cfg, Signal::Logs, "t", &batches, &[]).unwrap();
            prop_assert_eq!(summary.rows, rows.len() as u64);
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap();
            let groups: Vec<usize> = reader
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows() as usize)
                .collect();
            let want_groups: Vec<usize> =
                (0..rows.len()).step_by(7).map(|s| 7.min(rows.len() - s)).collect();
            prop_assert_eq!(groups, want_groups);
            let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
            let got: Vec<(Option<String>, i64)> = read.iter().flat_map(keys).collect();
            // The order is checked against a plain sort, not the code under test.
            let mut want: Vec<(Option<String>, i64)> =
                rows.iter().map(|(s, t)| (s.map(str::to_string), *t)).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
