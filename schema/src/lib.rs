//! The Arrow schemas of Weir's three signals.
//!
//! These schemas are the lake's own schemas: a source decodes its protocol straight into record
//! batches of these schemas, the durable buffer stores them as Arrow IPC, transforms read and
//! write them in place, and the flusher encodes them to Parquet unchanged. They are defined once,
//! here, so that the host and every WebAssembly guest agree by construction.
//!
//! Conventions (see `docs/schemas.md` for every column):
//! - column names are snake_case, one row per log record / metric data point / span;
//! - attributes are `MAP<STRING, STRING>`: string values as they are, every other value as JSON;
//! - trace and span ids are lowercase hex strings;
//! - timestamps are `TIMESTAMP(NANOSECOND, "UTC")`.
#![warn(missing_docs)]

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the lake schemas, written in every Parquet footer as `weir.schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// Footer metadata key for the schema version.
pub const META_SCHEMA_VERSION: &str = "weir.schema_version";
/// Footer metadata key for the tenant.
pub const META_TENANT: &str = "weir.tenant";
/// Footer metadata key for the signal.
pub const META_SIGNAL: &str = "weir.signal";
/// Footer metadata key for the smallest row timestamp (unix nanoseconds, decimal).
pub const META_MIN_TIMESTAMP: &str = "weir.min_timestamp_unix_nanos";
/// Footer metadata key for the largest row timestamp (unix nanoseconds, decimal).
pub const META_MAX_TIMESTAMP: &str = "weir.max_timestamp_unix_nanos";

/// Transform ABI constants shared by the host and the guest SDK.
pub mod abi {
    /// The ABI version a guest reports from `weir_abi_version`.
    pub const ABI_VERSION: i32 = 1;
    /// Signal code passed to `weir_transform` for logs.
    pub const SIGNAL_LOGS: i32 = 0;
    /// Signal code passed to `weir_transform` for metrics.
    pub const SIGNAL_METRICS: i32 = 1;
    /// Signal code passed to `weir_transform` for traces.
    pub const SIGNAL_TRACES: i32 = 2;
}

/// The three telemetry signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
    /// Spans.
    Traces,
}

impl Signal {
    /// Every signal, in code order.
    pub const ALL: [Signal; 3] = [Signal::Logs, Signal::Metrics, Signal::Traces];

    /// The name used in paths, configs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }

    /// Parses a signal name.
    pub fn parse(name: &str) -> Option<Signal> {
        match name {
            "logs" => Some(Signal::Logs),
            "metrics" => Some(Signal::Metrics),
            "traces" => Some(Signal::Traces),
            _ => None,
        }
    }

    /// The numeric code of the signal (buffer header, transform ABI).
    pub fn code(self) -> u8 {
        match self {
            Signal::Logs => 0,
            Signal::Metrics => 1,
            Signal::Traces => 2,
        }
    }

    /// The signal of a numeric code.
    pub fn from_code(code: u8) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The lake schema of this signal.
    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Logs => logs_schema(),
            Signal::Metrics => metrics_schema(),
            Signal::Traces => traces_schema(),
        }
    }

    /// The lake schema with a field id on every field, nested ones included, under
    /// [`FIELD_ID_KEY`]: the schema the Parquet files are written with, so that Iceberg readers
    /// need no name mapping. See [`with_field_ids`] for how ids are given.
    pub fn file_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 3]> = OnceLock::new();
        let all =
            SCHEMAS.get_or_init(|| Signal::ALL.map(|s| Arc::new(with_field_ids(&s.schema()))));
        all[self.code() as usize].clone()
    }

    /// The column holding the row's own timestamp, which decides its hour partition.
    pub fn time_column(self) -> &'static str {
        match self {
            Signal::Logs | Signal::Metrics => "timestamp",
            Signal::Traces => "start_timestamp",
        }
    }

    /// The sort order of rows inside a Parquet file.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Signal::Logs => &["service_name", "timestamp"],
            Signal::Metrics => &["metric_name", "service_name", "timestamp"],
            Signal::Traces => &["service_name", "start_timestamp"],
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata key of a field's id: parquet's Arrow writer writes it as the Parquet field id,
/// which Iceberg readers match columns by.
pub const FIELD_ID_KEY: &str = "PARQUET:field_id";

/// `schema` with a field id on every field under [`FIELD_ID_KEY`], given as an Iceberg
/// catalog gives fresh ids to a new table's schema: the fields of a struct (the top level
/// first) take the next ids in order, then each one's nested fields are numbered in turn; a
/// list's element takes the next id before what it contains, a map's key and value theirs
/// (the map's entries struct, which Iceberg does not have, takes none).
///
/// The ids are part of the lake's format, pinned by a test. This numbering is schema version
/// 1's: numbering afresh a schema with one more column would move every nested id, so a later
/// version needs a numbering that keeps these ids and gives new fields the next unused ones.
pub fn with_field_ids(schema: &Schema) -> Schema {
    let mut next = 0;
    let fields = number_fields(schema.fields(), &mut next);
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn take(next: &mut i32) -> i32 {
    *next += 1;
    *next
}

fn with_id(field: &Field, id: Option<i32>, data_type: DataType) -> Field {
    let mut metadata = field.metadata().clone();
    if let Some(id) = id {
        metadata.insert(FIELD_ID_KEY.to_string(), id.to_string());
    }
    field
        .clone()
        .with_data_type(data_type)
        .with_metadata(metadata)
}

/// The fields of one struct: their ids first, then what each contains.
fn number_fields(fields: &Fields, next: &mut i32) -> Fields {
    let ids: Vec<i32> = fields.iter().map(|_| take(next)).collect();
    fields
        .iter()
        .zip(ids)
        .map(|(f, id)| with_id(f, Some(id), number_type(f.data_type(), next)))
        .collect()
}

/// The nested fields of a type, numbered.
fn number_type(data_type: &DataType, next: &mut i32) -> DataType {
    match data_type {
        DataType::Struct(fields) => DataType::Struct(number_fields(fields, next)),
        DataType::List(item) => {
            let id = take(next);
            DataType::List(Arc::new(with_id(
                item,
                Some(id),
                number_type(item.data_type(), next),
            )))
        }
        DataType::LargeList(item) => {
            let id = take(next);
            DataType::LargeList(Arc::new(with_id(
                item,
                Some(id),
                number_type(item.data_type(), next),
            )))
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return data_type.clone();
            };
            let numbered: Fields = kv
                .iter()
                .map(|f| {
                    let id = take(next);
                    with_id(f, Some(id), number_type(f.data_type(), next))
                })
                .collect();
            DataType::Map(
                Arc::new(with_id(entries, None, DataType::Struct(numbered))),
                *sorted,
            )
        }
        other => other.clone(),
    }
}

/// Field names inside the attribute map type.
pub mod map_names {
    /// Name of the map's entries struct.
    pub const ENTRIES: &str = "key_value";
    /// Name of the key field.
    pub const KEY: &str = "key";
    /// Name of the value field.
    pub const VALUE: &str = "value";
}

/// `TIMESTAMP(NANOSECOND, "UTC")`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The struct of one attribute map entry: non-null string key, nullable string value.
pub fn attribute_entry_fields() -> Fields {
    Fields::from(vec![
        Field::new(map_names::KEY, DataType::Utf8, false),
        Field::new(map_names::VALUE, DataType::Utf8, true),
    ])
}

/// The entries field of an attribute map.
pub fn attribute_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        map_names::ENTRIES,
        DataType::Struct(attribute_entry_fields()),
        false,
    ))
}

/// `MAP<STRING, STRING>`, the type of every attribute column.
pub fn attributes_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

/// The item field of a list column with non-null items.
pub fn list_item(data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", data_type, false))
}

/// `LIST<T>` with non-null items.
pub fn list_of(data_type: DataType) -> DataType {
    DataType::List(list_item(data_type))
}

fn resource_and_scope() -> Vec<Field> {
    vec![
        Field::new("service_name", DataType::Utf8, true),
        Field::new("resource_attributes", attributes_type(), false),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("scope_version", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), false),
    ]
}

/// The fields of one span event.
pub fn span_event_fields() -> Fields {
    Fields::from(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attributes_type(), false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ])
}

/// The fields of one span link.
pub fn span_link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), false),
        Field::new("flags", DataType::UInt32, false),
    ])
}

/// The fields of one summary quantile.
pub fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
    ])
}

/// The lake schema of logs: one row per log record.
pub fn logs_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("timestamp", timestamp_type(), false),
                Field::new("observed_timestamp", timestamp_type(), false),
                Field::new("severity_number", DataType::Int32, false),
                Field::new("severity_text", DataType::Utf8, true),
                Field::new("body", DataType::Utf8, true),
                Field::new("trace_id", DataType::Utf8, true),
                Field::new("span_id", DataType::Utf8, true),
                Field::new("flags", DataType::UInt32, false),
                Field::new("event_name", DataType::Utf8, true),
                Field::new("dropped_attributes_count", DataType::UInt32, false),
            ];
            fields.extend(resource_and_scope());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// The lake schema of metrics: one row per data point of any of the five point types.
pub fn metrics_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("metric_name", DataType::Utf8, false),
                Field::new("metric_type", DataType::Utf8, false),
                Field::new("unit", DataType::Utf8, true),
                Field::new("description", DataType::Utf8, true),
                Field::new("timestamp", timestamp_type(), false),
                Field::new("start_timestamp", timestamp_type(), true),
                Field::new("value", DataType::Float64, true),
                Field::new("int_value", DataType::Int64, true),
                Field::new("is_monotonic", DataType::Boolean, true),
                Field::new("aggregation_temporality", DataType::Int32, true),
                Field::new("count", DataType::UInt64, true),
                Field::new("sum", DataType::Float64, true),
                Field::new("min", DataType::Float64, true),
                Field::new("max", DataType::Float64, true),
                Field::new("bucket_counts", list_of(DataType::UInt64), true),
                Field::new("explicit_bounds", list_of(DataType::Float64), true),
                Field::new("exp_scale", DataType::Int32, true),
                Field::new("exp_zero_count", DataType::UInt64, true),
                Field::new("exp_zero_threshold", DataType::Float64, true),
                Field::new("exp_positive_offset", DataType::Int32, true),
                Field::new(
                    "exp_positive_bucket_counts",
                    list_of(DataType::UInt64),
                    true,
                ),
                Field::new("exp_negative_offset", DataType::Int32, true),
                Field::new(
                    "exp_negative_bucket_counts",
                    list_of(DataType::UInt64),
                    true,
                ),
                Field::new(
                    "quantiles",
                    list_of(DataType::Struct(quantile_fields())),
                    true,
                ),
                Field::new("flags", DataType::UInt32, false),
            ];
            fields.extend(resource_and_scope());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// The lake schema of traces: one row per span.
pub fn traces_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new("trace_id", DataType::Utf8, false),
                Field::new("span_id", DataType::Utf8, false),
                Field::new("parent_span_id", DataType::Utf8, true),
                Field::new("trace_state", DataType::Utf8, true),
                Field::new("name", DataType::Utf8, false),
                Field::new("kind", DataType::Int32, false),
                Field::new("start_timestamp", timestamp_type(), false),
                Field::new("end_timestamp", timestamp_type(), false),
                Field::new("duration_ns", DataType::Int64, false),
                Field::new("status_code", DataType::Int32, false),
                Field::new("status_message", DataType::Utf8, true),
                Field::new("flags", DataType::UInt32, false),
                Field::new(
                    "events",
                    list_of(DataType::Struct(span_event_fields())),
                    false,
                ),
                Field::new(
                    "links",
                    list_of(DataType::Struct(span_link_fields())),
                    false,
                ),
            ];
            fields.extend(resource_and_scope());
            Arc::new(Schema::new(fields))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_its_time_and_sort_columns() {
        for signal in Signal::ALL {
            let schema = signal.schema();
            assert!(schema.field_with_name(signal.time_column()).is_ok());
            for col in signal.sort_columns() {
                assert!(schema.field_with_name(col).is_ok(), "{signal}: {col}");
            }
            assert_eq!(Signal::from_code(signal.code()), Some(signal));
            assert_eq!(Signal::parse(signal.as_str()), Some(signal));
        }
    }

    #[test]
    fn column_names_are_unique_snake_case() {
        for signal in Signal::ALL {
            let schema = signal.schema();
            let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
            for n in &names {
                assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
            }
            let len = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), len);
        }
    }
}

#[cfg(test)]
mod field_id_tests {
    use super::*;

    /// `path=id` of every field with an id, in schema order.
    fn ids(fields: &Fields, prefix: &str, out: &mut Vec<String>) {
        for f in fields {
            let path = format!("{prefix}{}", f.name());
            if let Some(id) = f.metadata().get(FIELD_ID_KEY) {
                out.push(format!("{path}={id}"));
            }
            match f.data_type() {
                DataType::Struct(c) => ids(c, &format!("{path}."), out),
                DataType::List(c) | DataType::LargeList(c) | DataType::Map(c, _) => ids(
                    &Fields::from(vec![c.as_ref().clone()]),
                    &format!("{path}."),
                    out,
                ),
                _ => {}
            }
        }
    }

    /// The ids are part of the lake's format: a change that moves one fails here.
    #[test]
    fn field_ids_are_pinned() {
        let mut logs = Vec::new();
        ids(Signal::Logs.file_schema().fields(), "", &mut logs);
        assert_eq!(
            logs.join(" "),
            "timestamp=1 observed_timestamp=2 severity_number=3 severity_text=4 body=5 \
             trace_id=6 span_id=7 flags=8 event_name=9 dropped_attributes_count=10 \
             service_name=11 resource_attributes=12 resource_attributes.key_value.key=16 \
             resource_attributes.key_value.value=17 scope_name=13 scope_version=14 \
             attributes=15 attributes.key_value.key=18 attributes.key_value.value=19"
        );
        let mut metrics = Vec::new();
        ids(Signal::Metrics.file_schema().fields(), "", &mut metrics);
        assert_eq!(
            metrics.join(" "),
            "metric_name=1 metric_type=2 unit=3 description=4 timestamp=5 start_timestamp=6 \
             value=7 int_value=8 is_monotonic=9 aggregation_temporality=10 count=11 sum=12 \
             min=13 max=14 bucket_counts=15 bucket_counts.item=31 explicit_bounds=16 \
             explicit_bounds.item=32 exp_scale=17 exp_zero_count=18 exp_zero_threshold=19 \
             exp_positive_offset=20 exp_positive_bucket_counts=21 \
             exp_positive_bucket_counts.item=33 exp_negative_offset=22 \
             exp_negative_bucket_counts=23 exp_negative_bucket_counts.item=34 quantiles=24 \
             quantiles.item=35 quantiles.item.quantile=36 quantiles.item.value=37 flags=25 \
             service_name=26 resource_attributes=27 resource_attributes.key_value.key=38 \
             resource_attributes.key_value.value=39 scope_name=28 scope_version=29 \
             attributes=30 attributes.key_value.key=40 attributes.key_value.value=41"
        );
        let mut traces = Vec::new();
        ids(Signal::Traces.file_schema().fields(), "", &mut traces);
        assert_eq!(
            traces.join(" "),
            "trace_id=1 span_id=2 parent_span_id=3 trace_state=4 name=5 kind=6 \
             start_timestamp=7 end_timestamp=8 duration_ns=9 status_code=10 \
             status_message=11 flags=12 events=13 events.item=20 events.item.timestamp=21 \
             events.item.name=22 events.item.attributes=23 \
             events.item.attributes.key_value.key=25 events.item.attributes.key_value.value=26 \
             events.item.dropped_attributes_count=24 links=14 links.item=27 \
             links.item.trace_id=28 links.item.span_id=29 links.item.trace_state=30 \
             links.item.attributes=31 links.item.attributes.key_value.key=33 \
             links.item.attributes.key_value.value=34 links.item.flags=32 service_name=15 \
             resource_attributes=16 resource_attributes.key_value.key=35 \
             resource_attributes.key_value.value=36 scope_name=17 scope_version=18 \
             attributes=19 attributes.key_value.key=37 attributes.key_value.value=38"
        );
    }

    #[test]
    fn every_field_but_map_entries_has_a_unique_id_from_one_up() {
        for s in Signal::ALL {
            let mut out = Vec::new();
            ids(s.file_schema().fields(), "", &mut out);
            let mut got: Vec<i32> = out
                .iter()
                .filter_map(|p| p.rsplit('=').next()?.parse().ok())
                .collect();
            got.sort();
            assert_eq!(got, (1..=out.len() as i32).collect::<Vec<_>>(), "{s}");
            // Only the ids differ from the lake schema.
            let plain = s.schema();
            let file = s.file_schema();
            for (a, b) in plain.fields().iter().zip(file.fields()) {
                assert!(
                    a.data_type().equals_datatype(b.data_type()),
                    "{s}: {}",
                    a.name()
                );
            }
        }
    }
}
