//! Running transforms natively, for `cargo test` without wasm: the same IPC round trip and
//! code path the wasm exports use, minus the FFI.

use arrow_array::RecordBatch;
use weir_schema::Signal;

use crate::{abi, Error, Transform};

/// Builds `T` from a JSON config and runs it once on `batch` (through an IPC round trip, as
/// in the agent).
pub fn run<T: Transform>(
    config: &str,
    signal: Signal,
    batch: &RecordBatch,
) -> Result<RecordBatch, Error> {
    let mut t: T = abi::init(config.as_bytes())?;
    let input = abi::write_batch(batch, 0)?;
    let out = abi::transform(&mut t, signal.code() as i32, &input)?;
    if out.is_empty() {
        return Ok(RecordBatch::new_empty(signal.schema()));
    }
    abi::read_batch(&out)
}

/// One test row: `(severity_number, body, attributes)`.
pub type TestLog<'a> = (i32, &'a str, &'a [(&'a str, &'a str)]);

/// A logs batch from `(severity_number, body, attributes)` rows, for transform tests.
pub fn logs(rows: &[TestLog<'_>]) -> RecordBatch {
    use std::sync::Arc;

    use arrow_array::builder::{Int32Builder, StringBuilder, TimestampNanosecondBuilder};
    use arrow_array::{ArrayRef, MapArray, StringArray, StructArray};
    use arrow_buffer::OffsetBuffer;
    use weir_schema::{attribute_entries_field, attribute_entry_fields, logs_schema};

    let n = rows.len();
    let map = |entries: Vec<Vec<(&str, &str)>>| -> ArrayRef {
        let mut offsets = vec![0i32];
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for e in entries {
            for (a, b) in e {
                k.push(a.to_string());
                v.push(Some(b.to_string()));
            }
            offsets.push(k.len() as i32);
        }
        let s = StructArray::new(
            attribute_entry_fields(),
            vec![
                Arc::new(StringArray::from(k)) as ArrayRef,
                Arc::new(StringArray::from(v)),
            ],
            None,
        );
        Arc::new(MapArray::new(
            attribute_entries_field(),
            OffsetBuffer::new(offsets.into()),
            s,
            None,
            false,
        ))
    };
    let ts = || {
        let mut b = TimestampNanosecondBuilder::new().with_timezone("UTC");
        for i in 0..n {
            b.append_value(1_700_000_000_000_000_000 + i as i64);
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let nulls = || {
        let mut b = StringBuilder::new();
        for _ in 0..n {
            b.append_null();
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let mut sev = Int32Builder::new();
    let mut body = StringBuilder::new();
    for (s, b, _) in rows {
        sev.append_value(*s);
        body.append_value(b);
    }
    let u32s = || Arc::new(arrow_array::UInt32Array::from(vec![0u32; n])) as ArrayRef;
    let columns = vec![
        ts(),
        ts(),
        Arc::new(sev.finish()) as ArrayRef,
        nulls(),
        Arc::new(body.finish()),
        nulls(),
        nulls(),
        u32s(),
        nulls(),
        u32s(),
        nulls(),
        map(rows.iter().map(|_| Vec::new()).collect()),
        nulls(),
        nulls(),
        map(rows.iter().map(|(_, _, a)| a.to_vec()).collect()),
    ];
    RecordBatch::try_new(logs_schema(), columns).unwrap_or_else(|e| panic!("test batch: {e}"))
}

/// The bodies of a logs batch, for assertions.
pub fn bodies(batch: &RecordBatch) -> Vec<String> {
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    let Some(b) = batch
        .column_by_name("body")
        .and_then(|c| c.as_string_opt::<i32>())
    else {
        return Vec::new();
    };
    (0..b.len()).map(|i| b.value(i).to_string()).collect()
}

/// Wraps a logs batch for reading records in tests.
pub fn wrap_logs(batch: RecordBatch) -> crate::Logs {
    crate::Logs::from_batch(batch)
}
