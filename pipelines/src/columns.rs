//! Small builders for the nested columns of the lake schemas: attribute maps and lists of
//! non-null items, built from flat child builders and offsets so the field names and
//! nullability match `weir_schema` exactly.

use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, StringBuilder, TimestampNanosecondBuilder};
use arrow_array::ListArray;
use arrow_array::{ArrayRef, MapArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::DataType;
use weir_schema::{attribute_entries_field, attribute_entry_fields, list_item};

/// A builder of timestamp columns in UTC nanoseconds.
pub fn timestamp_builder(capacity: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

/// Bytes a string column holds so far: its values and their offsets.
pub fn string_bytes(b: &StringBuilder) -> usize {
    b.values_slice().len() + 4 * b.len()
}

/// Builds a `MAP<STRING, STRING>` attribute column.
#[derive(Debug)]
pub struct AttributesBuilder {
    keys: StringBuilder,
    values: StringBuilder,
    offsets: Vec<i32>,
}

impl Default for AttributesBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl AttributesBuilder {
    /// A builder for about `rows` maps.
    pub fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        AttributesBuilder {
            keys: StringBuilder::new(),
            values: StringBuilder::new(),
            offsets,
        }
    }

    /// Adds one entry to the current map.
    pub fn entry(&mut self, key: &str, value: Option<&str>) {
        self.keys.append_value(key);
        self.values.append_option(value);
    }

    /// Closes the current map (one row).
    pub fn finish_row(&mut self) {
        self.offsets.push(self.keys.len() as i32);
    }

    /// Number of rows closed so far.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether no row was closed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the column holds so far: keys, values and offsets.
    pub fn bytes(&self) -> usize {
        string_bytes(&self.keys) + string_bytes(&self.values) + 4 * self.offsets.len()
    }

    /// The map column.
    pub fn finish(&mut self) -> ArrayRef {
        let keys: ArrayRef = Arc::new(self.keys.finish());
        let values: ArrayRef = Arc::new(self.values.finish());
        let entries = StructArray::new(attribute_entry_fields(), vec![keys, values], None);
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        Arc::new(MapArray::new(
            attribute_entries_field(),
            OffsetBuffer::new(offsets.into()),
            entries,
            None,
            false,
        ))
    }
}

/// Offsets and validity of a list column whose child is built separately.
#[derive(Debug)]
pub struct ListOffsets {
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl Default for ListOffsets {
    fn default() -> Self {
        ListOffsets {
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
        }
    }
}

impl ListOffsets {
    /// Closes a row whose list ends at `child_len` items.
    pub fn push(&mut self, child_len: usize) {
        self.offsets.push(child_len as i32);
        self.nulls.append_non_null();
    }

    /// Bytes of the offsets so far (the child is counted by its own builder).
    pub fn bytes(&self) -> usize {
        4 * self.offsets.len()
    }

    /// Adds a null row (no list).
    pub fn push_null(&mut self) {
        let last = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(last);
        self.nulls.append_null();
    }

    /// The list column over `values` (items of type `item_type`).
    pub fn finish(&mut self, item_type: DataType, values: ArrayRef) -> ArrayRef {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let nulls = self.nulls.finish();
        Arc::new(ListArray::new(
            list_item(item_type),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        ))
    }
}
