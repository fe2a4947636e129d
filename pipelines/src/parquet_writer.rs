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
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(&merged, &indices)
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
    let mut writer = ArrowWriter::try_new(&mut out, signal.schema(), Some(props))?;
    writer.write(&sorted)?;
    writer.close()?;
    Ok((out, summary))
}
