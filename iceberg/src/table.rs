//! One signal's lake schema as an Iceberg table: the schema with field ids, the partition
//! spec (hour of the time column), the sort order of the files, the name mapping for files
//! written without field ids, and a segment record as an Iceberg data file.
//!
//! Type mapping (format version 2, what pyiceberg 0.12 and DuckDB's iceberg extension read):
//! the files' `timestamp(ns, UTC)` columns are `timestamptz` (microseconds: readers truncate
//! the nanoseconds), `uint32`/`uint64` are `long`, maps of strings are `map<string, string>`,
//! lists and structs map one to one. Version 3's `timestamptz_ns` would keep the nanoseconds,
//! but pyiceberg 0.12 cannot read version 3 metadata yet.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, ListType, Literal, MapType,
    NestedField, NestedFieldRef, NullOrder, PrimitiveType, Schema, SortDirection, SortField,
    SortOrder, Struct, StructType, Transform, Type, UnboundPartitionSpec,
};
use parquet::file::metadata::ParquetMetaData;
use weir_catalog::layout::Partition;
use weir_catalog::{SegmentRecord, MANY_SERVICES};
use weir_schema::Signal;

use crate::IcebergError;

/// Name of the partition field (`hour(time column)`).
pub const PARTITION_FIELD: &str = "hour";

fn unsupported(field: &Field) -> IcebergError {
    IcebergError::Schema(format!(
        "column {} has type {} with no Iceberg mapping",
        field.name(),
        field.data_type()
    ))
}

/// The id a field of [`Signal::file_schema`] carries.
fn id_of(field: &Field) -> Result<i32, IcebergError> {
    field
        .metadata()
        .get(weir_schema::FIELD_ID_KEY)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| IcebergError::Schema(format!("column {} has no field id", field.name())))
}

fn iceberg_type(field: &Field) -> Result<Type, IcebergError> {
    let primitive = |p| Ok(Type::Primitive(p));
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => primitive(PrimitiveType::String),
        DataType::Boolean => primitive(PrimitiveType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            primitive(PrimitiveType::Int)
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => primitive(PrimitiveType::Long),
        DataType::Float32 => primitive(PrimitiveType::Float),
        DataType::Float64 => primitive(PrimitiveType::Double),
        DataType::Binary | DataType::LargeBinary => primitive(PrimitiveType::Binary),
        DataType::Timestamp(TimeUnit::Nanosecond | TimeUnit::Microsecond, Some(_)) => {
            primitive(PrimitiveType::Timestamptz)
        }
        DataType::Timestamp(TimeUnit::Nanosecond | TimeUnit::Microsecond, None) => {
            primitive(PrimitiveType::Timestamp)
        }
        DataType::List(item) | DataType::LargeList(item) => {
            Ok(Type::List(ListType::new(nested(item)?)))
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(unsupported(field));
            };
            let [key, value] = kv.iter().collect::<Vec<_>>()[..] else {
                return Err(unsupported(field));
            };
            Ok(Type::Map(MapType::new(nested(key)?, nested(value)?)))
        }
        DataType::Struct(fields) => {
            let members = fields
                .iter()
                .map(|f| nested(f))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Type::Struct(StructType::new(members)))
        }
        _ => Err(unsupported(field)),
    }
}

fn nested(field: &Field) -> Result<NestedFieldRef, IcebergError> {
    Ok(Arc::new(NestedField::new(
        id_of(field)?,
        field.name(),
        iceberg_type(field)?,
        !field.is_nullable(),
    )))
}

/// The Iceberg schema of a signal's lake files, with the field ids the files carry
/// ([`Signal::file_schema`]; a new table's metadata gives the same ids, as tested).
pub fn schema(signal: Signal) -> Result<Schema, IcebergError> {
    let arrow = signal.file_schema();
    let fields = arrow
        .fields()
        .iter()
        .map(|f| nested(f))
        .collect::<Result<Vec<_>, _>>()?;
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields)
        .build()
        .map_err(IcebergError::from)
}

fn field_id(schema: &Schema, name: &str) -> Result<i32, IcebergError> {
    schema
        .field_by_name(name)
        .map(|f| f.id)
        .ok_or_else(|| IcebergError::Schema(format!("the schema has no column {name}")))
}

/// The partition spec: the hour of the signal's time column (the lake's `dt=/hour=` path).
pub fn partition_spec(
    signal: Signal,
    schema: &Schema,
) -> Result<UnboundPartitionSpec, IcebergError> {
    Ok(UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(
            field_id(schema, signal.time_column())?,
            PARTITION_FIELD,
            Transform::Hour,
        )?
        .build())
}

/// The files' sort order: the signal's sort columns, ascending, nulls first (as the writer
/// sorts them).
pub fn sort_order(signal: Signal, schema: &Schema) -> Result<SortOrder, IcebergError> {
    let fields = signal
        .sort_columns()
        .iter()
        .map(|c| {
            Ok(SortField {
                source_id: field_id(schema, c)?,
                transform: Transform::Identity,
                direction: SortDirection::Ascending,
                null_order: NullOrder::First,
            })
        })
        .collect::<Result<Vec<_>, IcebergError>>()?;
    Ok(SortOrder {
        order_id: 1,
        fields,
    })
}

/// The name mapping (`schema.name-mapping.default`) of a schema: files written before the
/// lake carried field ids have none, so readers find their columns by these names. A list's element is named `item` by the
/// lake's writer and `element` by others: both map.
pub fn name_mapping(schema: &Schema) -> serde_json::Value {
    fn mapped(field: &NestedField) -> serde_json::Value {
        let mut names = vec![field.name.clone()];
        if field.name == "item" || field.name == "element" {
            names = vec!["element".into(), "item".into()];
        }
        let children: Vec<serde_json::Value> = match field.field_type.as_ref() {
            Type::Struct(s) => s.fields().iter().map(|f| mapped(f)).collect(),
            Type::List(l) => vec![mapped(&l.element_field)],
            Type::Map(m) => vec![mapped(&m.key_field), mapped(&m.value_field)],
            Type::Primitive(_) => Vec::new(),
        };
        let mut v = serde_json::json!({"field-id": field.id, "names": names});
        if !children.is_empty() {
            v["fields"] = serde_json::Value::Array(children);
        }
        v
    }
    serde_json::Value::Array(
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| mapped(f))
            .collect(),
    )
}

/// Hours since the epoch of a partition (`dt=YYYY-MM-DD/hour=HH`), the value of the hour
/// transform.
pub fn partition_hours(partition: &str) -> Result<i32, IcebergError> {
    let p = Partition::parse(partition)
        .ok_or_else(|| IcebergError::Schema(format!("bad partition {partition:?}")))?;
    i32::try_from(p.hour)
        .map_err(|_| IcebergError::Schema(format!("partition {partition:?} out of range")))
}

/// A segment as an Iceberg data file: its path under the lake URL, rows, bytes, partition,
/// and the bounds of the time column (microseconds) and of `service_name` when the record
/// lists the file's services.
pub fn data_file(
    signal: Signal,
    schema: &Schema,
    lake_url: &str,
    s: &SegmentRecord,
    counts: Option<&ColumnCounts>,
) -> Result<DataFile, IcebergError> {
    let time_id = field_id(schema, signal.time_column())?;
    let mut lower = HashMap::from([(
        time_id,
        Datum::timestamptz_micros(s.min_timestamp.div_euclid(1000)),
    )]);
    // Bounds may be loose, never tight: the upper one rounds up (a reader truncating
    // nanoseconds toward zero must not land above it).
    let upper_micros =
        s.max_timestamp.div_euclid(1000) + i64::from(s.max_timestamp.rem_euclid(1000) != 0);
    let mut upper = HashMap::from([(time_id, Datum::timestamptz_micros(upper_micros))]);
    if let (Some(first), Some(last)) = (s.services.first(), s.services.last()) {
        if !s.services.iter().any(|x| x == MANY_SERVICES) {
            let svc = field_id(schema, "service_name")?;
            lower.insert(svc, Datum::string(first));
            upper.insert(svc, Datum::string(last));
        }
    }
    let mut file = DataFileBuilder::default();
    if let Some(c) = counts {
        file.value_counts(c.values.clone())
            .null_value_counts(c.nulls.clone());
    }
    file.content(DataContentType::Data)
        .file_path(object_uri(lake_url, &s.object_key))
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::from_iter([Some(Literal::int(partition_hours(
            &s.partition,
        )?))]))
        .partition_spec_id(0)
        .record_count(s.row_count)
        .file_size_in_bytes(s.bytes)
        .lower_bounds(lower)
        .upper_bounds(upper)
        .sort_order_id(1)
        .build()
        .map_err(|e| IcebergError::Schema(format!("data file of {}: {e}", s.id)))
}

/// Per column of a file, by field id: values (nulls included) and nulls, summed over its row
/// groups from the Parquet footer. Top-level primitive columns only (maps and lists have no
/// column chunk of their own), and only those whose every column chunk states its null count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnCounts {
    /// Values of each column, nulls included.
    pub values: HashMap<i32, u64>,
    /// Nulls of each column.
    pub nulls: HashMap<i32, u64>,
}

impl ColumnCounts {
    /// The counts in a lake file's footer, keyed by the ids of `schema` (the table's). Columns
    /// are matched by name, so files written before the field ids count too.
    pub fn of_footer(schema: &Schema, footer: &ParquetMetaData) -> ColumnCounts {
        let ids: HashMap<&str, i32> = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.name.as_str(), f.id))
            .collect();
        let mut values: HashMap<i32, u64> = HashMap::new();
        let mut nulls: HashMap<i32, Option<u64>> = HashMap::new();
        for rg in footer.row_groups() {
            for cc in rg.columns() {
                let parts = cc.column_descr().path().parts();
                let [name] = parts else { continue };
                let Some(&id) = ids.get(name.as_str()) else {
                    continue;
                };
                *values.entry(id).or_default() += u64::try_from(cc.num_values()).unwrap_or(0);
                let n = cc.statistics().and_then(|st| st.null_count_opt());
                let total = nulls.entry(id).or_insert(Some(0));
                *total = match (*total, n) {
                    (Some(t), Some(n)) => Some(t + n),
                    _ => None,
                };
            }
        }
        let nulls: HashMap<i32, u64> = nulls
            .into_iter()
            .filter_map(|(id, n)| Some((id, n?)))
            .collect();
        values.retain(|id, _| nulls.contains_key(id));
        ColumnCounts { values, nulls }
    }
}

/// The URI of a lake object: the lake URL and the key.
pub fn object_uri(lake_url: &str, key: &str) -> String {
    format!("{}/{}", lake_url.trim_end_matches('/'), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_maps() {
        for signal in Signal::ALL {
            let s = schema(signal).unwrap();
            assert_eq!(s.as_struct().fields().len(), signal.schema().fields().len());
            partition_spec(signal, &s).unwrap();
            let order = sort_order(signal, &s).unwrap();
            assert_eq!(order.fields.len(), signal.sort_columns().len());
            let mapping = name_mapping(&s);
            assert_eq!(
                mapping.as_array().unwrap().len(),
                signal.schema().fields().len()
            );
        }
        let logs = schema(Signal::Logs).unwrap();
        assert_eq!(
            logs.field_by_name("timestamp").unwrap().field_type.as_ref(),
            &Type::Primitive(PrimitiveType::Timestamptz)
        );
        assert_eq!(
            logs.field_by_name("flags").unwrap().field_type.as_ref(),
            &Type::Primitive(PrimitiveType::Long)
        );
    }

    /// A new table's metadata numbers its schema afresh; the ids must come out as the ones
    /// the Parquet files carry, or readers that match columns by id read nulls.
    #[test]
    fn a_new_table_keeps_the_files_field_ids() {
        use iceberg::spec::{FormatVersion, TableMetadataBuilder};
        for signal in Signal::ALL {
            let s = schema(signal).unwrap();
            let md = TableMetadataBuilder::new(
                s.clone(),
                partition_spec(signal, &s).unwrap(),
                sort_order(signal, &s).unwrap(),
                "file:///lake/t".to_string(),
                FormatVersion::V2,
                HashMap::new(),
            )
            .unwrap()
            .build()
            .unwrap()
            .metadata;
            assert_eq!(
                md.current_schema().as_struct(),
                s.as_struct(),
                "{signal}: the table renumbered the fields"
            );
            assert!(md.current_schema().highest_field_id() > 0);
        }
    }

    #[test]
    fn column_counts_come_from_the_footer_by_field_id() {
        use weir_pipelines::logrows::{LogFields, LogsBuilder};
        use weir_pipelines::parquet_writer::{encode_parquet, ParquetConfig};
        let mut b = LogsBuilder::with_capacity(0);
        for i in 0..5i64 {
            b.append(
                &LogFields {
                    timestamp: i,
                    observed: i,
                    severity_number: 9,
                    severity_text: (i % 2 == 0).then_some("INFO"),
                    body: Some("b"),
                    trace_id: None,
                    span_id: None,
                    flags: 0,
                    event_name: None,
                    service_name: Some("api"),
                    scope_name: None,
                },
                None,
                0,
                |_| {},
                |_| {},
            );
        }
        let rows = b.finish().unwrap();
        let config = ParquetConfig {
            row_group_rows: 2,
            ..ParquetConfig::default()
        };
        let (bytes, _) = encode_parquet(&config, Signal::Logs, "t", &[rows], &[]).unwrap();
        let footer = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        assert!(
            footer.num_row_groups() > 1,
            "counts are summed over row groups"
        );
        let s = schema(Signal::Logs).unwrap();
        let c = ColumnCounts::of_footer(&s, &footer);
        let id = |n| field_id(&s, n).unwrap();
        assert_eq!(c.nulls.get(&id("severity_text")), Some(&2));
        assert_eq!(c.nulls.get(&id("trace_id")), Some(&5));
        assert_eq!(c.nulls.get(&id("body")), Some(&0));
        assert_eq!(c.values.get(&id("body")), Some(&5));
        // Nested columns (the attribute maps) are not counted.
        assert!(!c.nulls.contains_key(&id("attributes")));
    }

    #[test]
    fn partitions_are_hours_since_the_epoch() {
        assert_eq!(partition_hours("dt=1970-01-01/hour=00").unwrap(), 0);
        assert_eq!(partition_hours("dt=1970-01-02/hour=03").unwrap(), 27);
        assert!(partition_hours("dt=nope").is_err());
    }
}
