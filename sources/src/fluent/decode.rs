//! Fluent forward protocol (v1) messages → the logs lake schema.
//!
//! Modes: Message `[tag, time, record, option?]`, Forward `[tag, [[time, record], …], option?]`,
//! PackedForward `[tag, bin(entries…), option?]` and CompressedPackedForward (option
//! `compressed: "gzip"`). A time is an integer (seconds), a float, the EventTime extension
//! (type 0: seconds and nanoseconds as two big-endian u32), or, as Fluent Bit sends it,
//! `[time, {metadata}]`.
//!
//! Mapping: the record's `log` (else `message`) string is the body; the other keys become
//! attributes (strings as they are, other values as JSON); a `level`/`severity`/`log_level`
//! key also sets the severity; the tag becomes attribute `fluent.tag`, Fluent Bit metadata
//! becomes `fluent.meta.{key}`.
//!
//! The tag is copied to the row of every entry of a message, so the rows are checked against
//! the message's budget after each entry.

use std::io::Read;

use base64::Engine;
use rmpv::Value;
use serde_json::Value as Json;
use weir_pipelines::columns::AttributesBuilder;
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::DecodeBudget;

use super::frame;
use crate::http::DecodeFailure;
use crate::severity::{severity_number, LEVEL_KEYS};

/// What one message asked for.
#[derive(Debug, Default, PartialEq)]
pub struct MessageInfo {
    /// The `chunk` option: answer `{"ack": chunk}` once the entries are durable.
    pub chunk: Option<String>,
    /// Entries decoded.
    pub entries: usize,
}

/// Converts a msgpack value to JSON (binary as base64, extensions as `{"ext": t, "data": b64}`).
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => serde_json::Number::from_f64(*f as f64)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::F64(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::String(s) => Json::String(
            s.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        ),
        Value::Binary(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Value::Ext(t, d) => {
            serde_json::json!({"ext": t, "data": base64::engine::general_purpose::STANDARD.encode(d)})
        }
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => to_json(other).to_string(),
    }
}

/// Text of a value: strings as they are (binary as UTF-8 if it is), the rest as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => to_json(v).to_string(),
        },
        other => to_json(other).to_string(),
    }
}

/// A msgpack map's entries.
type MsgMap = Vec<(Value, Value)>;

/// Unix nanoseconds of an entry time, and Fluent Bit metadata if the time came with it.
fn entry_time(v: &Value) -> Result<(i64, Option<&MsgMap>), String> {
    match v {
        Value::Integer(i) => Ok((
            i.as_i64()
                .ok_or("time out of range")?
                .saturating_mul(1_000_000_000),
            None,
        )),
        Value::F64(f) => Ok(((*f * 1e9) as i64, None)),
        Value::F32(f) => Ok(((*f as f64 * 1e9) as i64, None)),
        Value::Ext(0, d) if d.len() == 8 => {
            let secs = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as i64;
            let nanos = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as i64;
            Ok((secs * 1_000_000_000 + nanos, None))
        }
        Value::Array(a) if a.len() == 2 => {
            let (t, _) = entry_time(&a[0])?;
            match &a[1] {
                Value::Map(m) => Ok((t, Some(m))),
                Value::Nil => Ok((t, None)),
                _ => Err("entry metadata is not a map".into()),
            }
        }
        other => Err(format!("invalid entry time {other}")),
    }
}

/// Where entries go: the builder, the budget of its rows, the message's tag.
struct Sink<'a> {
    b: &'a mut LogsBuilder,
    budget: &'a DecodeBudget,
    tag: &'a str,
    received_at: i64,
}

fn append_entry(sink: &mut Sink<'_>, time: &Value, record: &Value) -> Result<(), DecodeFailure> {
    let (tag, received_at) = (sink.tag, sink.received_at);
    let (ts, meta) = entry_time(time)?;
    let Value::Map(fields) = record else {
        return Err(format!("record is not a map: {record}").into());
    };
    let text = |k: &Value| match k {
        Value::String(s) => s.as_str().map(str::to_string),
        _ => None,
    };
    let body_key = ["log", "message"]
        .into_iter()
        .find(|want| fields.iter().any(|(k, _)| text(k).as_deref() == Some(want)));
    let body = body_key
        .and_then(|bk| fields.iter().find(|(k, _)| text(k).as_deref() == Some(bk)))
        .map(|(_, v)| value_text(v));
    let level = fields
        .iter()
        .find(|(k, _)| text(k).is_some_and(|k| LEVEL_KEYS.contains(&k.as_str())))
        .map(|(_, v)| value_text(v));
    let service = fields
        .iter()
        .find(|(k, _)| matches!(text(k).as_deref(), Some("service.name" | "service_name")))
        .map(|(_, v)| value_text(v));
    let f = LogFields {
        timestamp: if ts == 0 { received_at } else { ts },
        observed: received_at,
        severity_number: level.as_deref().map(severity_number).unwrap_or(0),
        severity_text: level.as_deref(),
        body: body.as_deref(),
        service_name: service.as_deref(),
        ..Default::default()
    };
    let attrs = |a: &mut AttributesBuilder| {
        a.entry("fluent.tag", Some(tag));
        for (k, v) in fields {
            let key = key_text(k);
            if Some(key.as_str()) == body_key {
                continue;
            }
            a.entry(&key, Some(&value_text(v)));
        }
        for (k, v) in meta.into_iter().flatten() {
            a.entry(
                &format!("fluent.meta.{}", key_text(k)),
                Some(&value_text(v)),
            );
        }
    };
    let resource = |r: &mut AttributesBuilder| {
        if let Some(s) = &service {
            r.entry("service.name", Some(s));
        }
    };
    sink.b.append(&f, None, 0, resource, attrs);
    sink.budget.check(sink.b.bytes())?;
    Ok(())
}

/// Bytes one decoded msgpack value takes in a tree (rmpv's `Value`; a map entry is two).
const VALUE_BYTES: usize = std::mem::size_of::<Value>();

/// Decodes the msgpack value at the start of `buf` and moves `buf` past it. The values it
/// holds are counted first: one whose tree would put the rows decoded so far (`used` bytes)
/// over `budget` is refused before anything is allocated (16 MiB of nils in one array would
/// otherwise take over 500 MiB as a tree).
fn read_bounded(buf: &mut &[u8], budget: &DecodeBudget, used: usize) -> Result<Value, DecodeFailure> {
    let (len, values) = frame::value_extent(buf)
        .map_err(|e| e.to_string())?
        .ok_or("truncated msgpack value")?;
    let tree = usize::try_from(values).unwrap_or(usize::MAX).saturating_mul(VALUE_BYTES);
    budget.check(used.saturating_add(tree))?;
    let v = rmpv::decode::read_value(&mut &buf[..len]).map_err(|e| format!("invalid msgpack: {e}"))?;
    *buf = &buf[len..];
    Ok(v)
}

/// Appends the entry `[time, record]` at the start of `buf`.
fn next_entry(sink: &mut Sink<'_>, buf: &mut &[u8], what: &str) -> Result<(), DecodeFailure> {
    let entry = read_bounded(buf, sink.budget, sink.b.bytes())?;
    let Value::Array(e) = entry else {
        return Err(format!("{what} entry is not an array").into());
    };
    if e.len() != 2 {
        return Err(format!("{what} entry has {} elements, expected 2", e.len()).into());
    }
    append_entry(sink, &e[0], &e[1])
}

fn packed_entries(sink: &mut Sink<'_>, mut bytes: &[u8]) -> Result<usize, DecodeFailure> {
    let mut n = 0;
    while !bytes.is_empty() {
        if frame::value_len(bytes).map_err(|e| e.to_string())?.is_none() {
            return Err("truncated entry in PackedForward payload".into());
        }
        next_entry(sink, &mut bytes, "packed")?;
        n += 1;
    }
    Ok(n)
}

fn option_text(option: Option<&Value>, key: &str) -> Option<String> {
    let Some(Value::Map(m)) = option else {
        return None;
    };
    m.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| value_text(v))
}

/// Decodes one forward-protocol message (its msgpack bytes), appending its entries to `b`.
/// The message is walked value by value: a Forward message's entries are decoded one at a
/// time, never as one tree, and every value is checked against `budget` before it is
/// decoded. `max_decompressed` bounds a CompressedPackedForward payload; the message is
/// refused as soon as the rows of `b` are over `budget`.
pub fn decode_message(
    msg: &[u8],
    received_at: i64,
    max_decompressed: usize,
    budget: &DecodeBudget,
    b: &mut LogsBuilder,
) -> Result<MessageInfo, DecodeFailure> {
    let (parts, header) = frame::array_header(msg).ok_or("forward message is not an array")?;
    let mut rest = &msg[header..];
    if parts == 0 {
        return Err("forward message does not start with a tag string".into());
    }
    let tag = read_bounded(&mut rest, budget, b.bytes())?;
    let tag = match &tag {
        Value::String(s) => s.as_str().ok_or("tag is not UTF-8")?,
        _ => return Err("forward message does not start with a tag string".into()),
    };
    if parts < 2 {
        return Err("forward message has no entries".into());
    }
    let sink = &mut Sink {
        b,
        budget,
        tag,
        received_at,
    };
    let mut info = MessageInfo::default();
    // The values after the entries (the option, or a Message's record and option).
    let mut after = parts - 2;
    let mut next = |rest: &mut &[u8], sink: &Sink<'_>| -> Result<Option<Value>, DecodeFailure> {
        if after == 0 {
            return Ok(None);
        }
        after -= 1;
        read_bounded(rest, sink.budget, sink.b.bytes()).map(Some)
    };
    if let Some((entries, header)) = frame::array_header(rest) {
        // Forward: [tag, [[time, record], ...], option?]
        rest = &rest[header..];
        for _ in 0..entries {
            next_entry(sink, &mut rest, "forward")?;
            info.entries += 1;
        }
        info.chunk = option_text(next(&mut rest, sink)?.as_ref(), "chunk");
        return Ok(info);
    }
    let second = read_bounded(&mut rest, budget, sink.b.bytes())?;
    let option = match &second {
        Value::Binary(_) | Value::String(_) => {
            let raw: &[u8] = match &second {
                Value::Binary(bytes) => bytes,
                Value::String(s) => s.as_bytes(),
                _ => unreachable!("matched above"),
            };
            let option = next(&mut rest, sink)?;
            let compressed = option_text(option.as_ref(), "compressed");
            info.entries = match compressed.as_deref() {
                Some("gzip") => {
                    let mut out = Vec::new();
                    flate2::read::MultiGzDecoder::new(raw)
                        .take(max_decompressed as u64 + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| format!("invalid gzip in CompressedPackedForward: {e}"))?;
                    if out.len() > max_decompressed {
                        return Err(format!("decompressed payload exceeds sources.fluent.max_frame_bytes ({max_decompressed} bytes)").into());
                    }
                    packed_entries(sink, &out)?
                }
                None | Some("text") => packed_entries(sink, raw)?,
                Some(other) => return Err(format!("unsupported compression {other:?}").into()),
            };
            option
        }
        time => {
            // Message: [tag, time, record, option?]
            let record = next(&mut rest, sink)?.ok_or("message mode without a record")?;
            append_entry(sink, time, &record)?;
            info.entries = 1;
            next(&mut rest, sink)?
        }
    };
    info.chunk = option_text(option.as_ref(), "chunk");
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampNanosecondType;
    use rmpv::Value as V;

    fn event_time(secs: u32, nanos: u32) -> V {
        let mut d = secs.to_be_bytes().to_vec();
        d.extend_from_slice(&nanos.to_be_bytes());
        V::Ext(0, d)
    }

    fn record(body: &str) -> V {
        V::Map(vec![
            (V::from("log"), V::from(body)),
            (V::from("level"), V::from("error")),
            (V::from("n"), V::from(3)),
        ])
    }

    fn bytes(v: &V) -> Vec<u8> {
        pack(std::slice::from_ref(v))
    }

    fn pack(entries: &[V]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            rmpv::encode::write_value(&mut out, e).unwrap();
        }
        out
    }

    #[test]
    fn every_mode_decodes() {
        let entry = V::Array(vec![event_time(1_700_000_000, 5), record("a")]);
        let fb_entry = V::Array(vec![
            V::Array(vec![
                event_time(1_700_000_001, 0),
                V::Map(vec![(V::from("otlp"), V::from("x"))]),
            ]),
            record("b"),
        ]);
        let packed = pack(&[entry.clone(), fb_entry.clone()]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &packed).unwrap();
        let chunk = V::Map(vec![
            (V::from("chunk"), V::from("c1")),
            (V::from("compressed"), V::from("gzip")),
        ]);
        let msgs = [
            V::Array(vec![
                V::from("app.msg"),
                V::from(1_700_000_000),
                record("m"),
            ]),
            V::Array(vec![
                V::from("app.fwd"),
                V::Array(vec![entry.clone(), fb_entry.clone()]),
            ]),
            V::Array(vec![V::from("app.packed"), V::Binary(packed.clone())]),
            V::Array(vec![
                V::from("app.gz"),
                V::Binary(gz.finish().unwrap()),
                chunk,
            ]),
        ];
        let mut b = LogsBuilder::default();
        let infos: Vec<_> = msgs
            .iter()
            .map(|m| decode_message(&bytes(m), 9, 1 << 20, &DecodeBudget::unlimited(), &mut b).unwrap())
            .collect();
        assert_eq!(
            infos.iter().map(|i| i.entries).collect::<Vec<_>>(),
            vec![1, 2, 2, 2]
        );
        assert_eq!(infos[3].chunk.as_deref(), Some("c1"));
        let rb = b.finish().unwrap();
        assert_eq!(rb.num_rows(), 7);
        let ts = rb.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_000_000_000);
        assert_eq!(ts.value(1), 1_700_000_000_000_000_005);
        let body = rb.column_by_name("body").unwrap().as_string::<i32>();
        assert_eq!(body.value(2), "b");
        let sev = rb
            .column_by_name("severity_number")
            .unwrap()
            .as_primitive::<arrow_array::types::Int32Type>();
        assert_eq!(sev.value(0), 17);
    }

    #[test]
    fn a_tag_copied_to_every_entry_is_over_budget() {
        let budget = DecodeBudget::new(8 << 20, "sources.fluent.max_row_bytes");
        let tag = "t".repeat(1 << 20);
        let entry = V::Array(vec![V::from(0), V::Map(Vec::new())]);
        let forward = |n: usize| {
            V::Array(vec![
                V::from(tag.as_str()),
                V::Array(vec![entry.clone(); n]),
            ])
        };
        let packed = V::Array(vec![
            V::from(tag.as_str()),
            V::Binary(pack(&vec![entry.clone(); 20_000])),
        ]);
        for m in [forward(20_000), packed] {
            match decode_message(&bytes(&m), 0, 1 << 20, &budget, &mut LogsBuilder::default()) {
                Err(DecodeFailure::OverBudget(e)) => {
                    assert_eq!((e.key, e.limit), ("sources.fluent.max_row_bytes", 8 << 20))
                }
                other => panic!("expected over budget, got {other:?}"),
            }
        }
        let mut b = LogsBuilder::default();
        let info = decode_message(&bytes(&forward(5)), 0, 1 << 20, &budget, &mut b).unwrap();
        assert_eq!(info.entries, 5);
    }

    #[test]
    fn a_value_whose_tree_is_over_budget_is_refused_before_it_is_decoded() {
        // One byte per value on the wire, a whole rmpv::Value each once decoded: 300,000
        // nil → nil pairs are 600 KB of msgpack and about 19 MB as a tree.
        let mut huge = vec![0xdf];
        huge.extend_from_slice(&300_000u32.to_be_bytes());
        huge.extend(std::iter::repeat_n(0xc0, 600_000));
        let tag = bytes(&V::from("t"));
        let frame = |parts: &[&[u8]]| {
            let mut m = vec![0x90 | parts.len() as u8];
            parts.iter().for_each(|p| m.extend_from_slice(p));
            m
        };
        let mut entry = vec![0x92, 0x00];
        entry.extend_from_slice(&huge);
        let forward = frame(&[&tag, &[&[0x91u8][..], &entry].concat()]);
        let message = frame(&[&tag, &[0x00], &huge]);
        let option = frame(&[&tag, &bytes(&V::Binary(Vec::new())), &huge]);
        let budget = DecodeBudget::new(8 << 20, "sources.fluent.max_row_bytes");
        for m in [forward, message, option] {
            match decode_message(&m, 0, 1 << 20, &budget, &mut LogsBuilder::default()) {
                Err(DecodeFailure::OverBudget(e)) => assert_eq!(e.limit, 8 << 20),
                other => panic!("expected over budget, got {other:?}"),
            }
        }
        // Within the budget the same record decodes (its nil keys become "null" attributes).
        let mut b = LogsBuilder::default();
        let info = decode_message(&frame(&[&tag, &[0x00], &huge]), 0, 1 << 20, &DecodeBudget::new(64 << 20, "k"), &mut b);
        assert_eq!(info.unwrap().entries, 1);
    }

    #[test]
    fn bad_messages_name_the_problem() {
        let mut b = LogsBuilder::default();
        let mut err = |m: V| {
            decode_message(&bytes(&m), 0, 100, &DecodeBudget::unlimited(), &mut b)
                .unwrap_err()
                .to_string()
        };
        assert!(err(V::from(1)).contains("not an array"));
        assert!(err(V::Array(vec![V::from(1)])).contains("tag string"));
        assert!(err(V::Array(vec![V::from("t"), V::from(1), V::from("x")])).contains("not a map"));
        assert!(
            err(V::Array(vec![V::from("t"), V::Binary(vec![0x92, 0x01])])).contains("truncated")
        );
        let gz = V::Map(vec![(V::from("compressed"), V::from("gzip"))]);
        assert!(err(V::Array(vec![
            V::from("t"),
            V::Binary(b"nope".to_vec()),
            gz
        ]))
        .contains("invalid gzip"));
    }
}
