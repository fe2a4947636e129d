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
    let rows: Vec<crate::NewLog> = rows
        .iter()
        .enumerate()
        .map(|(i, (sev, body, attrs))| crate::NewLog {
            timestamp: 1_700_000_000_000_000_000 + i as i64,
            severity_number: *sev,
            body: Some(body.to_string()),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .collect();
    crate::logs::build_logs(&rows).unwrap_or_else(|e| panic!("test batch: {e}"))
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
