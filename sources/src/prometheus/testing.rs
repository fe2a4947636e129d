//! Reading rows back in tests.
#![allow(missing_docs)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};

pub fn row_of(rb: &RecordBatch, name: &str) -> usize {
    let names = rb.column_by_name("metric_name").unwrap().as_string::<i32>();
    (0..rb.num_rows())
        .find(|i| names.value(*i) == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

pub fn s(rb: &RecordBatch, col: &str, row: usize) -> Option<String> {
    let c = rb.column_by_name(col).unwrap().as_string::<i32>();
    c.is_valid(row).then(|| c.value(row).to_string())
}

pub fn f(rb: &RecordBatch, col: &str, row: usize) -> Option<f64> {
    let c = rb
        .column_by_name(col)
        .unwrap()
        .as_primitive::<Float64Type>();
    c.is_valid(row).then(|| c.value(row))
}

pub fn u(rb: &RecordBatch, col: &str, row: usize) -> Option<u64> {
    let c = rb.column_by_name(col).unwrap().as_primitive::<UInt64Type>();
    c.is_valid(row).then(|| c.value(row))
}

pub fn i32c(rb: &RecordBatch, col: &str, row: usize) -> Option<i32> {
    let c = rb.column_by_name(col).unwrap().as_primitive::<Int32Type>();
    c.is_valid(row).then(|| c.value(row))
}

pub fn list_u(rb: &RecordBatch, col: &str, row: usize) -> Vec<u64> {
    let l = rb.column_by_name(col).unwrap().as_list::<i32>();
    l.value(row).as_primitive::<UInt64Type>().values().to_vec()
}

pub fn list_f(rb: &RecordBatch, col: &str, row: usize) -> Vec<f64> {
    let l = rb.column_by_name(col).unwrap().as_list::<i32>();
    l.value(row).as_primitive::<Float64Type>().values().to_vec()
}

pub fn map(rb: &RecordBatch, col: &str, row: usize) -> Vec<(String, String)> {
    let m = rb.column_by_name(col).unwrap().as_map();
    let e = m.value(row);
    let k = e.column(0).as_string::<i32>();
    let v = e.column(1).as_string::<i32>();
    (0..e.len())
        .map(|i| (k.value(i).to_string(), v.value(i).to_string()))
        .collect()
}
