//! Checks a guest's output IPC stream before arrow-ipc reads it.
//!
//! An IPC stream declares sizes that arrow-ipc 60's reader trusts: a message's body length is
//! reserved (up to 64 MiB) before the body is read, buffer offsets and lengths slice the body
//! with an assertion (a panic when they point outside it), and the first 8 bytes of a
//! compressed buffer are its uncompressed length, reserved whole before decompressing (an
//! abort when it is huge). A guest controls all of them. This module walks every message's
//! flatbuffer header (which the flatbuffer verifier bounds by the output's own size) and
//! refuses, before any of those declarations is acted on:
//! - a metadata or body length past the end of the output (the output is already capped by
//!   `max_output_bytes`, so nothing declared can exceed it either);
//! - a buffer that does not lie inside its message's body;
//! - compressed buffers (the ABI requires uncompressed ones), dictionary batches and any
//!   message but one schema followed by record batches;
//! - a schema other than the signal's;
//! - row counts and field lengths larger than their buffers can hold (rows × width for
//!   fixed-width columns, rows + 1 offsets for strings and lists, one bit per row for
//!   booleans and validity bitmaps), and a batch whose columns do not all have its row count.
//!
//! What passes decodes into arrays no larger than the output: arrow-ipc's own validation
//! (offsets, UTF-8, null counts) then runs on sizes that are all backed by real bytes.

use arrow_ipc::{root_as_message, MessageHeader};
use arrow_schema::{DataType, Field, Schema};
use weir_schema::Signal;

/// Checks `bytes`, a guest's output for `signal`. The error says what is wrong.
pub(crate) fn check_output(signal: Signal, bytes: &[u8]) -> Result<(), String> {
    let expected = signal.schema();
    let mut pos = 0usize;
    let mut schema_seen = false;
    for index in 0usize.. {
        let Some(meta) = next_metadata(bytes, &mut pos, index)? else {
            break;
        };
        let message = root_as_message(meta)
            .map_err(|e| format!("not an Arrow IPC stream: message {index}: {e}"))?;
        let remaining = bytes.len() - pos;
        let declared = message.bodyLength();
        let body_len = usize::try_from(declared)
            .ok()
            .filter(|&l| l <= remaining)
            .ok_or_else(|| {
                format!(
                    "IPC message {index} declares a body of {declared} bytes, but only {remaining} bytes of the output follow"
                )
            })?;
        pos += body_len;
        match message.header_type() {
            MessageHeader::Schema if !schema_seen => {
                let fb = message.header_as_schema().ok_or_else(|| {
                    format!("not an Arrow IPC stream: message {index} has no schema")
                })?;
                let schema = arrow_ipc::convert::try_fb_to_schema(fb)
                    .map_err(|e| format!("not an Arrow IPC stream: bad schema: {e}"))?;
                if schema != *expected {
                    return Err(format!("output schema is not the {signal} schema"));
                }
                schema_seen = true;
            }
            MessageHeader::Schema => {
                return Err(format!(
                    "IPC message {index} is a second schema; a stream has one"
                ))
            }
            _ if !schema_seen => {
                return Err(format!(
                    "not an Arrow IPC stream: message {index} comes before the schema"
                ))
            }
            MessageHeader::RecordBatch => {
                let batch = message.header_as_record_batch().ok_or_else(|| {
                    format!("IPC message {index} has no record batch header")
                })?;
                check_batch(&expected, &batch, body_len)
                    .map_err(|e| format!("IPC record batch (message {index}) {e}"))?;
            }
            MessageHeader::DictionaryBatch => {
                return Err(format!(
                    "IPC message {index} is a dictionary batch; the {signal} schema has no dictionary columns"
                ))
            }
            other => {
                return Err(format!(
                    "IPC message {index} is a {other:?} message, not a record batch"
                ))
            }
        }
    }
    if !schema_seen {
        return Err("not an Arrow IPC stream: no schema message".into());
    }
    Ok(())
}

/// Reads the framing of the message at `*pos` (an optional continuation marker and the
/// metadata length) and returns its metadata, which must lie inside `bytes`; `*pos` is then
/// where the body starts. `None` at the end of the stream: the end of the bytes, or a zero
/// metadata length.
fn next_metadata<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    index: usize,
) -> Result<Option<&'a [u8]>, String> {
    if *pos == bytes.len() {
        return Ok(None);
    }
    let mut word = || -> Result<[u8; 4], String> {
        let w = bytes
            .get(*pos..pos.saturating_add(4))
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .ok_or_else(|| format!("not an Arrow IPC stream: truncated at message {index}"))?;
        *pos += 4;
        Ok(w)
    };
    let mut w = word()?;
    if w == [0xff; 4] {
        w = word()?;
    }
    let meta_len = i32::from_le_bytes(w);
    if meta_len == 0 {
        return Ok(None);
    }
    let remaining = bytes.len() - *pos;
    let meta_len = usize::try_from(meta_len)
        .ok()
        .filter(|&l| l <= remaining)
        .ok_or_else(|| {
            format!(
                "IPC message {index} declares {meta_len} metadata bytes, but only {remaining} bytes of the output follow"
            )
        })?;
    let meta = &bytes[*pos..*pos + meta_len];
    *pos += meta_len;
    Ok(Some(meta))
}

fn check_batch(
    schema: &Schema,
    batch: &arrow_ipc::RecordBatch<'_>,
    body_len: usize,
) -> Result<(), String> {
    if batch.compression().is_some() {
        return Err("has compressed buffers; the ABI requires uncompressed ones".into());
    }
    let mut walk = Walk {
        nodes: batch
            .nodes()
            .map(|v| v.iter().map(|n| (n.length(), n.null_count())).collect())
            .unwrap_or_default(),
        buffers: batch
            .buffers()
            .map(|v| v.iter().map(|b| (b.offset(), b.length())).collect())
            .unwrap_or_default(),
        next_node: 0,
        next_buffer: 0,
        body_len: body_len as u64,
    };
    let rows = batch.length();
    let rows = u64::try_from(rows).map_err(|_| format!("declares {rows} rows"))?;
    for field in schema.fields() {
        let len = walk.field(field)?;
        if len != rows {
            return Err(format!(
                "declares {rows} rows, but column {} holds {len}",
                field.name()
            ));
        }
    }
    Ok(())
}

/// The field nodes and buffers of one record batch, consumed in the order arrow-ipc reads
/// them (depth first, each node's buffers before its children's).
struct Walk {
    nodes: Vec<(i64, i64)>,
    buffers: Vec<(i64, i64)>,
    next_node: usize,
    next_buffer: usize,
    body_len: u64,
}

impl Walk {
    /// The next field node: its length and null count.
    fn node(&mut self, field: &Field) -> Result<(u64, u64), String> {
        let (len, nulls) = *self
            .nodes
            .get(self.next_node)
            .ok_or_else(|| format!("no field node for column {}", field.name()))?;
        self.next_node += 1;
        let len = u64::try_from(len)
            .map_err(|_| format!("column {} declares length {len}", field.name()))?;
        let nulls = u64::try_from(nulls)
            .ok()
            .filter(|&n| n <= len)
            .ok_or_else(|| {
                format!(
                    "column {} declares {nulls} nulls in {len} values",
                    field.name()
                )
            })?;
        Ok((len, nulls))
    }

    /// The length of the next buffer, which must lie inside the body.
    fn buffer(&mut self, field: &Field) -> Result<u64, String> {
        let (offset, len) = *self
            .buffers
            .get(self.next_buffer)
            .ok_or_else(|| format!("too few buffers for column {}", field.name()))?;
        self.next_buffer += 1;
        let inside = u64::try_from(offset)
            .ok()
            .zip(u64::try_from(len).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|end| end <= self.body_len);
        match (u64::try_from(len), inside) {
            (Ok(len), true) => Ok(len),
            _ => Err(format!(
                "column {} declares a buffer of {len} bytes at offset {offset}, outside the {}-byte body",
                field.name(),
                self.body_len
            )),
        }
    }

    /// An offsets buffer of `width`-byte offsets for `len` values: at least `len + 1` offsets
    /// (none when `len` is 0), and a whole number of them (arrow-data's validation views the
    /// whole buffer as offsets and asserts that it divides evenly).
    fn offsets(&mut self, field: &Field, len: u64, width: u64) -> Result<(), String> {
        let have = self.buffer(field)?;
        let need = if len == 0 {
            Some(0)
        } else {
            len.checked_add(1).and_then(|n| n.checked_mul(width))
        };
        Self::holds(field, "offsets", len, need, have)?;
        if !have.is_multiple_of(width) {
            return Err(format!(
                "column {} has a {have}-byte offsets buffer, not a multiple of {width}",
                field.name()
            ));
        }
        Ok(())
    }

    /// Fails unless a buffer of `have` bytes holds `need` (`None`: overflowed) bytes.
    fn holds(
        field: &Field,
        what: &str,
        len: u64,
        need: Option<u64>,
        have: u64,
    ) -> Result<(), String> {
        match need {
            Some(need) if need <= have => Ok(()),
            _ => Err(format!(
                "column {} declares {len} values, but its {have}-byte {what} buffer cannot hold them",
                field.name()
            )),
        }
    }

    /// Checks one field (and its children) and returns its length.
    fn field(&mut self, field: &Field) -> Result<u64, String> {
        let (len, nulls) = self.node(field)?;
        let validity = self.buffer(field)?;
        if nulls > 0 {
            Self::holds(field, "validity", len, Some(len.div_ceil(8)), validity)?;
        }
        match field.data_type() {
            DataType::Boolean => {
                let data = self.buffer(field)?;
                Self::holds(field, "data", len, Some(len.div_ceil(8)), data)?;
            }
            DataType::FixedSizeBinary(width) => {
                let data = self.buffer(field)?;
                let need = u64::try_from(*width).ok().and_then(|w| len.checked_mul(w));
                Self::holds(field, "data", len, need, data)?;
            }
            DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary => {
                let width = if matches!(field.data_type(), DataType::Utf8 | DataType::Binary) {
                    4
                } else {
                    8
                };
                self.offsets(field, len, width)?;
                self.buffer(field)?;
            }
            DataType::List(child) | DataType::Map(child, _) | DataType::LargeList(child) => {
                let width = if matches!(field.data_type(), DataType::LargeList(_)) {
                    8
                } else {
                    4
                };
                self.offsets(field, len, width)?;
                self.field(child)?;
            }
            DataType::Struct(children) => {
                if children.is_empty() {
                    return Err(format!(
                        "column {} is a struct without fields",
                        field.name()
                    ));
                }
                for child in children {
                    let child_len = self.field(child)?;
                    if child_len < len {
                        return Err(format!(
                            "column {} declares {len} values, but its field {} holds {child_len}",
                            field.name(),
                            child.name()
                        ));
                    }
                }
            }
            other => {
                let width = other.primitive_width().ok_or_else(|| {
                    format!(
                        "column {} has type {other}, which the host does not accept in an output",
                        field.name()
                    )
                })?;
                let data = self.buffer(field)?;
                Self::holds(field, "data", len, len.checked_mul(width as u64), data)?;
            }
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::UInt64Type;
    use arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, MapArray,
        RecordBatch, StringArray, StructArray, TimestampNanosecondArray, UInt32Array, UInt64Array,
    };
    use arrow_ipc::reader::StreamReader;
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{DataType, Field, TimeUnit};
    use weir_schema::Signal;

    use super::check_output;

    /// `n` values of `field`'s type (every third one null where the field allows it); lists
    /// and maps hold two entries per row.
    fn filled(field: &Field, n: usize) -> ArrayRef {
        let valid = |i: usize| !field.is_nullable() || !i.is_multiple_of(3);
        let offsets = || {
            ListArray::from_iter_primitive::<UInt64Type, _, _>(
                (0..n).map(|_| Some([Some(0u64), Some(0)])),
            )
            .offsets()
            .clone()
        };
        match field.data_type() {
            DataType::Boolean => Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| valid(i).then_some(i % 2 == 0)),
            )),
            DataType::Int32 => Arc::new(Int32Array::from_iter(
                (0..n).map(|i| valid(i).then_some(i as i32)),
            )),
            DataType::UInt32 => Arc::new(UInt32Array::from_iter(
                (0..n).map(|i| valid(i).then_some(i as u32)),
            )),
            DataType::Int64 => Arc::new(Int64Array::from_iter(
                (0..n).map(|i| valid(i).then_some(i as i64)),
            )),
            DataType::UInt64 => Arc::new(UInt64Array::from_iter(
                (0..n).map(|i| valid(i).then_some(i as u64)),
            )),
            DataType::Float64 => Arc::new(Float64Array::from_iter(
                (0..n).map(|i| valid(i).then_some(i as f64)),
            )),
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => Arc::new(
                TimestampNanosecondArray::from_iter((0..n).map(|i| valid(i).then_some(i as i64)))
                    .with_timezone_opt(tz.clone()),
            ),
            DataType::Utf8 => Arc::new(StringArray::from_iter(
                (0..n).map(|i| valid(i).then(|| format!("value {i}"))),
            )),
            DataType::List(child) => Arc::new(ListArray::new(
                child.clone(),
                offsets(),
                filled(child, 2 * n),
                None,
            )),
            DataType::Map(entries, ordered) => {
                let DataType::Struct(fields) = entries.data_type() else {
                    panic!("map entries are a struct");
                };
                let children = fields.iter().map(|f| filled(f, 2 * n)).collect();
                let entries_array = StructArray::new(fields.clone(), children, None);
                Arc::new(MapArray::new(
                    entries.clone(),
                    offsets(),
                    entries_array,
                    None,
                    *ordered,
                ))
            }
            DataType::Struct(fields) => {
                let children = fields.iter().map(|f| filled(f, n)).collect();
                Arc::new(StructArray::new(fields.clone(), children, None))
            }
            other => panic!("no test values for {other}"),
        }
    }

    fn batch(signal: Signal, n: usize) -> RecordBatch {
        let schema = signal.schema();
        let columns = schema.fields().iter().map(|f| filled(f, n)).collect();
        RecordBatch::try_new(schema, columns).expect("valid batch")
    }

    fn stream(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &batches[0].schema()).expect("writer");
        for b in batches {
            w.write(b).expect("write");
        }
        w.finish().expect("finish");
        drop(w);
        out
    }

    #[test]
    fn valid_outputs_of_every_signal_pass() {
        for signal in [Signal::Logs, Signal::Metrics, Signal::Traces] {
            for n in [0, 1, 7, 100] {
                let out = stream(&[batch(signal, n), batch(signal, 3)]);
                check_output(signal, &out).unwrap_or_else(|e| panic!("{signal}, {n} rows: {e}"));
            }
            // The end-of-stream marker is optional.
            let out = stream(&[batch(signal, 2)]);
            check_output(signal, &out[..out.len() - 8]).expect("no end marker");
        }
    }

    #[test]
    fn a_wrong_schema_and_junk_are_refused() {
        let out = stream(&[batch(Signal::Logs, 2)]);
        let err = check_output(Signal::Traces, &out).unwrap_err();
        assert_eq!(err, "output schema is not the traces schema");
        for junk in [
            &b"\x00\x00\x00"[..],
            b"\xff\xff\xff\xff",
            b"\x10\x00\x00\x00abc",
            b"",
        ] {
            let err = check_output(Signal::Logs, junk).unwrap_err();
            assert!(err.contains("IPC"), "{err}");
        }
    }

    /// Every truncation and every single-byte corruption of a valid output is either refused
    /// by the check or decoded by arrow-ipc without a panic.
    #[test]
    fn corrupted_outputs_never_reach_a_panic() {
        for signal in [Signal::Logs, Signal::Metrics, Signal::Traces] {
            let out = stream(&[batch(signal, 3)]);
            let mut cases: Vec<Vec<u8>> = (0..out.len()).map(|n| out[..n].to_vec()).collect();
            for i in 0..out.len() {
                for b in [0x00, 0xff, out[i] ^ 0x01] {
                    let mut c = out.clone();
                    c[i] = b;
                    cases.push(c);
                }
            }
            for c in cases {
                if check_output(signal, &c).is_err() {
                    continue;
                }
                let decoded = std::panic::catch_unwind(|| {
                    StreamReader::try_new(c.as_slice(), None)
                        .map(|r| r.collect::<Result<Vec<_>, _>>().map(|_| ()))
                });
                assert!(
                    decoded.is_ok(),
                    "{signal}: a checked output panicked arrow-ipc"
                );
            }
        }
    }
}
