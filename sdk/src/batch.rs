//! Column helpers shared by the signal wrappers, and the metrics and traces wrappers.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, BooleanArray, MapArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_select::filter::filter_record_batch;
use weir_schema::{attribute_entries_field, attribute_entry_fields};

use crate::Error;

/// Attributes of one row as owned pairs, for editing.
pub type AttributeList = Vec<(String, Option<String>)>;

pub(crate) fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, Error> {
    b.column_by_name(name)
        .ok_or_else(|| Error(format!("batch has no column {name}")))
}

pub(crate) fn string_at<'a>(b: &'a RecordBatch, name: &str, row: usize) -> Option<&'a str> {
    let a = b.column_by_name(name)?.as_string_opt::<i32>()?;
    (!a.is_null(row)).then(|| a.value(row))
}

pub(crate) fn map_get<'a>(
    b: &'a RecordBatch,
    name: &str,
    row: usize,
    key: &str,
) -> Option<&'a str> {
    let m = b
        .column_by_name(name)?
        .as_any()
        .downcast_ref::<MapArray>()?;
    let (start, end) = (
        m.value_offsets()[row] as usize,
        m.value_offsets()[row + 1] as usize,
    );
    let keys = m.keys().as_string::<i32>();
    let values = m.values().as_string::<i32>();
    (start..end)
        .rev()
        .find(|&j| keys.value(j) == key)
        .and_then(|j| (!values.is_null(j)).then(|| values.value(j)))
}

pub(crate) fn map_entries<'a>(
    b: &'a RecordBatch,
    name: &str,
    row: usize,
) -> Vec<(&'a str, Option<&'a str>)> {
    let Some(m) = b
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<MapArray>())
    else {
        return Vec::new();
    };
    let (start, end) = (
        m.value_offsets()[row] as usize,
        m.value_offsets()[row + 1] as usize,
    );
    let keys = m.keys().as_string::<i32>();
    let values = m.values().as_string::<i32>();
    (start..end)
        .map(|j| (keys.value(j), (!values.is_null(j)).then(|| values.value(j))))
        .collect()
}

/// Rebuilds a map column, letting `f` edit each row's entries; `None` when no row changed
/// (the column is then kept as it is, which is the common case for redaction).
pub(crate) fn rebuild_map(
    b: &RecordBatch,
    name: &str,
    mut f: impl FnMut(usize, &mut AttributeList),
) -> Result<Option<ArrayRef>, Error> {
    let mut keys: Vec<String> = Vec::new();
    let mut values: Vec<Option<String>> = Vec::new();
    let mut offsets = vec![0i32];
    let mut changed = false;
    for row in 0..b.num_rows() {
        let original = map_entries(b, name, row);
        let mut entries: AttributeList = original
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        f(row, &mut entries);
        changed |= entries.len() != original.len()
            || entries
                .iter()
                .zip(&original)
                .any(|((k, v), (ok, ov))| k != ok || v.as_deref() != *ov);
        for (k, v) in entries {
            keys.push(k);
            values.push(v);
        }
        offsets.push(keys.len() as i32);
    }
    if !changed {
        return Ok(None);
    }
    let entries = StructArray::new(
        attribute_entry_fields(),
        vec![
            Arc::new(StringArray::from(keys)) as ArrayRef,
            Arc::new(StringArray::from(values)),
        ],
        None,
    );
    Ok(Some(Arc::new(MapArray::new(
        attribute_entries_field(),
        OffsetBuffer::new(offsets.into()),
        entries,
        None,
        false,
    ))))
}

/// Edits one attribute map column of `batch`: `f` gets the (unchanged) batch, the row and its
/// entries. The column is replaced only when some row changed.
pub(crate) fn edit_map(
    batch: &mut RecordBatch,
    name: &str,
    mut f: impl FnMut(&RecordBatch, usize, &mut AttributeList),
) -> Result<(), Error> {
    let before = batch.clone();
    if let Some(col) = rebuild_map(&before, name, |i, attrs| f(&before, i, attrs))? {
        *batch = replace(batch, name, col)?;
    }
    Ok(())
}

pub(crate) fn replace(b: &RecordBatch, name: &str, array: ArrayRef) -> Result<RecordBatch, Error> {
    let idx = b.schema().index_of(name)?;
    let mut cols = b.columns().to_vec();
    cols[idx] = array;
    Ok(RecordBatch::try_new(b.schema(), cols)?)
}

pub(crate) fn retain_rows(b: &RecordBatch, keep: Vec<bool>) -> Result<RecordBatch, Error> {
    Ok(filter_record_batch(b, &BooleanArray::from(keep))?)
}

/// One row of a metrics or traces batch.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    batch: &'a RecordBatch,
    row: usize,
}

impl<'a> Row<'a> {
    /// Index of the row in the batch.
    pub fn index(&self) -> usize {
        self.row
    }

    /// A string column's value.
    pub fn str(&self, column: &str) -> Option<&'a str> {
        string_at(self.batch, column, self.row)
    }

    /// A float column's value.
    pub fn f64(&self, column: &str) -> Option<f64> {
        let a = self
            .batch
            .column_by_name(column)?
            .as_primitive_opt::<Float64Type>()?;
        (!a.is_null(self.row)).then(|| a.value(self.row))
    }

    /// An integer column's value (int32, int64 or timestamp columns).
    pub fn i64(&self, column: &str) -> Option<i64> {
        let c = self.batch.column_by_name(column)?;
        if c.is_null(self.row) {
            return None;
        }
        c.as_primitive_opt::<Int64Type>()
            .map(|a| a.value(self.row))
            .or_else(|| {
                c.as_primitive_opt::<TimestampNanosecondType>()
                    .map(|a| a.value(self.row))
            })
            .or_else(|| {
                c.as_primitive_opt::<Int32Type>()
                    .map(|a| a.value(self.row) as i64)
            })
    }

    /// A point or span attribute.
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        map_get(self.batch, "attributes", self.row, key)
    }

    /// A resource attribute.
    pub fn resource_attribute(&self, key: &str) -> Option<&'a str> {
        map_get(self.batch, "resource_attributes", self.row, key)
    }

    /// The row's `service_name`.
    pub fn service_name(&self) -> Option<&'a str> {
        self.str("service_name")
    }
}

/// The methods every signal wrapper shares: size, row views, retain, attribute edits, access
/// to the Arrow batch. `$row` is the row view type (fields `batch` and `row`), `$one`/`$all`
/// the names of the single-row and all-rows accessors.
macro_rules! table {
    ($name:ident, $row:ident, $one:ident, $all:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $name {
            batch: RecordBatch,
        }

        impl $name {
            /// Wraps a batch in this signal's schema.
            pub fn from_batch(batch: RecordBatch) -> Self {
                $name { batch }
            }

            /// Rows in the batch.
            pub fn len(&self) -> usize {
                self.batch.num_rows()
            }

            /// Whether the batch has no rows.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Row `i`.
            pub fn $one(&self, i: usize) -> $row<'_> {
                $row {
                    batch: &self.batch,
                    row: i,
                }
            }

            /// Every row.
            pub fn $all(&self) -> impl Iterator<Item = $row<'_>> {
                (0..self.len()).map(move |i| self.$one(i))
            }

            /// Keeps the rows for which `f` returns true.
            pub fn retain(&mut self, mut f: impl FnMut(&$row<'_>) -> bool) -> Result<(), Error> {
                let keep: Vec<bool> = self.$all().map(|r| f(&r)).collect();
                self.batch = $crate::batch::retain_rows(&self.batch, keep)?;
                Ok(())
            }

            /// Edits the attributes of every row.
            pub fn update_attributes(
                &mut self,
                mut f: impl FnMut(&$row<'_>, &mut AttributeList),
            ) -> Result<(), Error> {
                $crate::batch::edit_map(&mut self.batch, "attributes", |batch, row, attrs| {
                    f(&$row { batch, row }, attrs)
                })
            }

            /// Edits the resource attributes of every row.
            pub fn update_resource_attributes(
                &mut self,
                mut f: impl FnMut(&$row<'_>, &mut AttributeList),
            ) -> Result<(), Error> {
                $crate::batch::edit_map(
                    &mut self.batch,
                    "resource_attributes",
                    |batch, row, attrs| f(&$row { batch, row }, attrs),
                )
            }

            /// The Arrow batch (for column-wise work with arrow directly).
            pub fn batch(&self) -> &RecordBatch {
                &self.batch
            }

            /// Replaces the batch (it must keep the signal's schema).
            pub fn set_batch(&mut self, batch: RecordBatch) {
                self.batch = batch;
            }

            pub(crate) fn into_batch(self) -> RecordBatch {
                self.batch
            }
        }
    };
}
pub(crate) use table;

table!(
    Metrics,
    Row,
    row,
    rows,
    "A metrics batch: one row per data point (see the metrics schema)."
);
table!(
    Traces,
    Row,
    row,
    rows,
    "A traces batch: one row per span (see the traces schema)."
);
