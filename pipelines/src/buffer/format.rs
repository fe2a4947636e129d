//! Encoding and decoding of buffer entries (format described in the module above).

use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use weir_schema::Signal;

use super::BufferError;
use crate::{Batch, Partition};

/// Version 2 adds the dead-letter reason after the source name; version 1 entries (written
/// before it) still decode.
const VERSION: u8 = 2;
const FIXED: usize = 22;

/// Encodes a batch as a buffer entry.
pub fn encode_entry(partition: Partition, batch: &Batch) -> Result<Vec<u8>, BufferError> {
    let enc = |e: arrow_schema::ArrowError| BufferError::Encode(e.to_string());
    if batch.tenant.len() > 255 || batch.source.len() > 255 {
        return Err(BufferError::Encode(
            "tenant or source name longer than 255 bytes".into(),
        ));
    }
    // A capped guess: arrays decoded from IPC (transform output) share one buffer that
    // get_array_memory_size counts once per column.
    let mut out =
        Vec::with_capacity(256 + (batch.records.get_array_memory_size() / 2).min(2 << 20));
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.push(batch.signal.code());
    out.extend_from_slice(&batch.received_at.to_be_bytes());
    out.extend_from_slice(&partition.hour.to_be_bytes());
    out.push(batch.tenant.len() as u8);
    out.extend_from_slice(batch.tenant.as_bytes());
    out.push(batch.source.len() as u8);
    out.extend_from_slice(batch.source.as_bytes());
    let reason = batch.dead_letter.as_deref().unwrap_or("").as_bytes();
    let reason = &reason[..reason.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason);
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .map_err(enc)?;
    let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.records.schema(), options)
        .map_err(enc)?;
    writer.write(&batch.records).map_err(enc)?;
    writer.finish().map_err(enc)?;
    drop(writer);
    let crc = crc32c::crc32c(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Whether `bytes` are one whole entry: a known version and a matching CRC.
pub(super) fn is_whole(bytes: &[u8]) -> bool {
    bytes.len() >= FIXED + 2
        && (bytes[0] == VERSION || bytes[0] == 1)
        && u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
            == crc32c::crc32c(&bytes[5..])
}

/// Decodes a buffer entry, checking its version, CRC and schema.
pub fn decode_entry(seq: u64, bytes: &[u8]) -> Result<(Partition, Batch), BufferError> {
    let corrupt = |reason: String| BufferError::Corrupt { seq, reason };
    if bytes.len() < FIXED + 2 {
        return Err(corrupt(format!(
            "entry of {} bytes is too short",
            bytes.len()
        )));
    }
    if bytes[0] != VERSION && bytes[0] != 1 {
        return Err(corrupt(format!("unknown format version {}", bytes[0])));
    }
    let stored = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let actual = crc32c::crc32c(&bytes[5..]);
    if stored != actual {
        return Err(corrupt(format!(
            "crc32c mismatch: stored {stored:08x}, computed {actual:08x}"
        )));
    }
    let signal = Signal::from_code(bytes[5])
        .ok_or_else(|| corrupt(format!("unknown signal code {}", bytes[5])))?;
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        i64::from_be_bytes(b)
    };
    let received_at = i64_at(6);
    let hour = i64_at(14);
    let mut pos = FIXED;
    let mut text = |what: &str| -> Result<String, BufferError> {
        let len = *bytes
            .get(pos)
            .ok_or_else(|| corrupt(format!("truncated {what}")))? as usize;
        let s = bytes
            .get(pos + 1..pos + 1 + len)
            .ok_or_else(|| corrupt(format!("truncated {what}")))?;
        pos += 1 + len;
        String::from_utf8(s.to_vec()).map_err(|_| corrupt(format!("{what} is not UTF-8")))
    };
    let tenant = text("tenant")?;
    let source = text("source")?;
    let dead_letter = if bytes[0] >= 2 {
        let len = bytes
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| corrupt("truncated dead-letter reason".into()))?;
        let reason = bytes
            .get(pos + 2..pos + 2 + len)
            .ok_or_else(|| corrupt("truncated dead-letter reason".into()))?;
        pos += 2 + len;
        (len > 0).then(|| String::from_utf8_lossy(reason).into_owned())
    } else {
        None
    };
    let mut reader =
        StreamReader::try_new(&bytes[pos..], None).map_err(|e| corrupt(e.to_string()))?;
    let records = reader
        .next()
        .ok_or_else(|| corrupt("no record batch in entry".into()))?
        .map_err(|e| corrupt(e.to_string()))?;
    if records.schema() != signal.schema() {
        return Err(corrupt(format!("rows do not have the {signal} schema")));
    }
    Ok((
        Partition { hour },
        Batch {
            tenant,
            signal,
            source,
            received_at,
            records,
            dead_letter,
        },
    ))
}
