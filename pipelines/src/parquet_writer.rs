//! Parquet encoding of the lake: one sorted file per partition flush.

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
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
    let merged = arrow_select::concat::concat_batches(&signal.schema(), batches)?;
    let columns: Vec<SortColumn> = signal
        .sort_columns()
        .iter()
        .map(|name| {
            merged
                .column_by_name(name)
                .map(|c| SortColumn {
                    values: c.clone(),
                    options: None,
                })
                .ok_or_else(|| ArrowError::SchemaError(format!("missing sort column {name}")))
        })
        .collect::<Result<_, _>>()?;
    // Most flushes arrive in order (one service's records in time order): checking costs a
    // comparison per row and stops at the first row out of order, where sorting costs
    // n log n comparisons and a copy of every column.
    if in_order(&columns)? {
        return Ok(merged);
    }
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(&merged, &indices)
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

fn summarize(signal: Signal, rows: &RecordBatch) -> FileSummary {
    let (min_timestamp, max_timestamp) = time_bounds(signal, rows).unwrap_or((0, 0));
    let services = match rows
        .column_by_name("service_name")
        .and_then(|c| c.as_string_opt::<i32>())
    {
        Some(col) => weir_catalog::bound_services(col.iter().flatten()),
        None => Vec::new(),
    };
    FileSummary {
        rows: rows.num_rows() as u64,
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
    let sorted = sort_rows(signal, batches)?;
    let summary = summarize(signal, &sorted);
    let props = writer_properties(cfg, signal, tenant, &summary, extra_metadata)?;
    let mut out = Vec::new();
    // The file schema carries the Iceberg field ids (`Signal::file_schema`); the rows are of
    // the lake schema, the same types without the ids.
    let mut writer = ArrowWriter::try_new(&mut out, signal.file_schema(), Some(props))?;
    writer.write(&sorted)?;
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
    }
}
