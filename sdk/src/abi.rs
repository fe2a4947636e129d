//! The guest side of the ABI: allocation with exact sizes, the `weir` imports, IPC in and out.
//! Used by [`crate::export!`]; transforms do not call it directly.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use weir_schema::Signal;

use crate::{Error, Logs, Metrics, Traces, Transform};

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "weir")]
extern "C" {
    #[link_name = "log"]
    fn weir_log(level: i32, ptr: i32, len: i32);
    #[link_name = "error"]
    fn weir_error(ptr: i32, len: i32);
}

/// Sends a log line to the host (stderr natively).
pub fn log(level: i32, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        weir_log(level, msg.as_ptr() as i32, msg.len() as i32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[transform log {level}] {msg}");
}

/// Reports the error message of the current call and returns `-1`.
pub fn fail(e: &Error) -> i32 {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        weir_error(e.0.as_ptr() as i32, e.0.len() as i32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = e;
    -1
}

/// `weir_alloc`: a boxed slice of exactly `len` bytes, leaked to the host.
pub fn alloc(len: i32) -> i32 {
    let b = vec![0u8; len.max(0) as usize].into_boxed_slice();
    Box::into_raw(b) as *mut u8 as usize as i32
}

/// `weir_free`: takes back a slice made by [`alloc`] or [`hand_over`].
pub fn free(ptr: i32, len: i32) {
    if ptr == 0 {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len.max(0) as usize);
    drop(unsafe { Box::from_raw(slice) });
}

/// The bytes the host wrote at `ptr`.
///
/// # Safety
/// `ptr`/`len` must be an allocation the host made with `weir_alloc` and filled.
pub unsafe fn input<'a>(ptr: i32, len: i32) -> &'a [u8] {
    if len <= 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// Hands the output to the host: `(ptr << 32) | len` of an exact-size boxed slice.
pub fn hand_over(out: Vec<u8>) -> i64 {
    if out.is_empty() {
        return 0;
    }
    let len = out.len() as i64;
    let ptr = Box::into_raw(out.into_boxed_slice()) as *mut u8 as usize as i64;
    (ptr << 32) | len
}

/// Builds the transform from its JSON config (`null` or empty: the config's default form).
pub fn init<T: Transform>(config: &[u8]) -> Result<T, Error> {
    let invalid = |e: serde_json::Error| Error(format!("invalid transform config: {e}"));
    let missing = config.is_empty() || config.trim_ascii() == b"null";
    let cfg: T::Config = if missing {
        // No config: `()` or an `Option` takes null, a struct with defaults takes `{}`.
        serde_json::from_slice(b"null")
            .or_else(|_| serde_json::from_slice(b"{}"))
            .map_err(invalid)?
    } else {
        serde_json::from_slice(config).map_err(invalid)?
    };
    T::new(cfg)
}

/// Reads an IPC stream into one batch.
pub fn read_batch(bytes: &[u8]) -> Result<RecordBatch, Error> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| Error(format!("invalid input: {e}")))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    match batches.len() {
        1 => Ok(batches
            .into_iter()
            .next()
            .unwrap_or_else(|| RecordBatch::new_empty(schema))),
        0 => Ok(RecordBatch::new_empty(schema)),
        _ => Ok(arrow_select::concat::concat_batches(&schema, &batches)?),
    }
}

/// Writes one batch as an IPC stream. `size_hint` (for example the input's size) presizes the
/// output; `get_array_memory_size` is no estimate here, since arrays decoded from IPC share
/// one message buffer that it counts once per column.
pub fn write_batch(batch: &RecordBatch, size_hint: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(size_hint + 512);
    let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

/// One `weir_transform` call: IPC in, the signal's method, IPC out.
pub fn transform<T: Transform>(t: &mut T, signal: i32, input: &[u8]) -> Result<Vec<u8>, Error> {
    let batch = read_batch(input)?;
    let signal =
        Signal::from_code(signal as u8).ok_or_else(|| Error(format!("unknown signal {signal}")))?;
    let out = run_on(t, signal, batch)?;
    if out.num_rows() == 0 {
        return Ok(Vec::new());
    }
    write_batch(&out, input.len())
}

/// Runs the signal's method of `t` on a batch.
pub fn run_on<T: Transform>(
    t: &mut T,
    signal: Signal,
    batch: RecordBatch,
) -> Result<RecordBatch, Error> {
    Ok(match signal {
        Signal::Logs => {
            let mut l = Logs::new(batch)?;
            t.logs(&mut l)?;
            l.into_batch()
        }
        Signal::Metrics => {
            let mut m = Metrics::from_batch(batch);
            t.metrics(&mut m)?;
            m.into_batch()
        }
        Signal::Traces => {
            let mut x = Traces::from_batch(batch);
            t.traces(&mut x)?;
            x.into_batch()
        }
    })
}
