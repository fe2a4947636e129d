//! A scan of the protobuf wire format that counts the labels of every series before prost
//! materializes them, so a request of a few megabytes declaring millions of labels is refused
//! without allocating a `Label` for each (an empty label costs 2 bytes on the wire and about
//! 50 in memory).

/// Wire types.
const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf
            .split_first()
            .ok_or_else(|| "truncated protobuf: a varint runs past the end".to_string())?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("malformed protobuf: a varint is longer than 10 bytes".into())
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], String> {
    let n = usize::try_from(n).map_err(|_| "malformed protobuf: field length".to_string())?;
    if n > buf.len() {
        return Err(format!(
            "truncated protobuf: a field of {n} bytes with {} left",
            buf.len()
        ));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// One field: its number, wire type, and the bytes of a length-delimited value.
fn field<'a>(buf: &mut &'a [u8]) -> Result<(u64, u64, &'a [u8]), String> {
    let key = varint(buf)?;
    let (number, wire) = (key >> 3, key & 7);
    let value = match wire {
        VARINT => {
            varint(buf)?;
            &[][..]
        }
        I64 => take(buf, 8)?,
        LEN => {
            let n = varint(buf)?;
            take(buf, n)?
        }
        I32 => take(buf, 4)?,
        w => return Err(format!("malformed protobuf: wire type {w} of field {number}")),
    };
    Ok((number, wire, value))
}

/// Calls `series` with the bytes of every `field` of the message `body`.
fn each(body: &[u8], number: u64, mut f: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut buf = body;
    while !buf.is_empty() {
        let (n, wire, value) = field(&mut buf)?;
        if n == number && wire == LEN {
            f(value)?;
        }
    }
    Ok(())
}

fn too_many(labels: u64, max: usize, key: &str) -> Result<(), String> {
    if labels > max as u64 {
        return Err(format!(
            "a series has {labels} labels, over {key}.max_labels_per_series ({max})"
        ));
    }
    Ok(())
}

/// Checks the label count of every series of a 1.0 `WriteRequest` (labels are field 1 of
/// `TimeSeries`, which is field 1 of the request).
pub fn check_v1(body: &[u8], max_labels: usize, key: &str) -> Result<(), String> {
    each(body, 1, |series| {
        let mut labels = 0u64;
        let mut buf = series;
        while !buf.is_empty() {
            let (n, wire, _) = field(&mut buf)?;
            if n == 1 && wire == LEN {
                labels += 1;
            }
        }
        too_many(labels, max_labels, key)
    })
}

/// Checks the label count of every series of a 2.0 `Request` (`labels_refs`, field 1 of
/// `TimeSeries`, packed or not, holds two references per label; series are field 5).
pub fn check_v2(body: &[u8], max_labels: usize, key: &str) -> Result<(), String> {
    each(body, 5, |series| {
        let mut refs = 0u64;
        let mut buf = series;
        while !buf.is_empty() {
            let (n, wire, value) = field(&mut buf)?;
            if n == 1 {
                refs += match wire {
                    VARINT => 1,
                    // Packed: one varint ends at each byte without the continuation bit.
                    LEN => value.iter().filter(|b| **b & 0x80 == 0).count() as u64,
                    _ => 0,
                };
            }
        }
        too_many(refs / 2, max_labels, key)
    })
}

/// Bytes the decoded messages of a request take in memory, estimated from the wire before
/// prost builds them: a field of two wire bytes can become a struct of hundreds (an empty
/// `Histogram`), so a small body of empty sub-messages would otherwise decode to gigabytes.
/// Each message counts its struct size, strings and packed numbers their decoded size.
pub fn decoded_size_v1(body: &[u8]) -> Result<u64, String> {
    let mut total = 0u64;
    walk(body, &mut |n, v| {
        match n {
            1 => {
                total += 80;
                walk(v, &mut |n, v| {
                    total += match n {
                        1 => 56 + v.len() as u64,
                        2 => 24,
                        3 => 64 + exemplar_labels(v)?,
                        4 => 240 + histogram_parts(v)?,
                        _ => 0,
                    };
                    Ok(())
                })?;
            }
            3 => total += 80 + v.len() as u64,
            _ => {}
        }
        Ok(())
    })?;
    Ok(total)
}

/// [`decoded_size_v1`] for remote write 2.0.
pub fn decoded_size_v2(body: &[u8]) -> Result<u64, String> {
    let mut total = 0u64;
    walk(body, &mut |n, v| {
        match n {
            4 => total += 24 + v.len() as u64,
            5 => {
                total += 120;
                walk(v, &mut |n, v| {
                    total += match n {
                        1 => 4 * v.len() as u64,
                        2 => 24,
                        3 => 240 + histogram_parts(v)?,
                        4 => 64 + 4 * v.len() as u64,
                        _ => 16,
                    };
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(total)
}

/// What [`walk`] calls for each field: its number and bytes.
type OnField<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Calls `f` with the number and bytes of each length-delimited field of `body`.
fn walk(body: &[u8], f: &mut OnField<'_>) -> Result<(), String> {
    let mut buf = body;
    while !buf.is_empty() {
        let (n, wire, value) = field(&mut buf)?;
        if wire == LEN {
            f(n, value)?;
        }
    }
    Ok(())
}

/// Spans (messages) and packed counts of a native histogram, as decoded.
fn histogram_parts(h: &[u8]) -> Result<u64, String> {
    let mut total = 0u64;
    walk(h, &mut |_, v| {
        // A span is a small struct; packed deltas and counts are 8 bytes per element, and
        // an element takes at least one wire byte.
        total += 16 + 8 * v.len() as u64;
        Ok(())
    })?;
    Ok(total)
}

/// Labels of a 1.0 exemplar, as decoded.
fn exemplar_labels(e: &[u8]) -> Result<u64, String> {
    let mut total = 0u64;
    walk(e, &mut |n, v| {
        if n == 1 {
            total += 56 + v.len() as u64;
        }
        Ok(())
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus_remote_write::proto::*;
    use prost::Message;

    #[test]
    fn counts_labels_of_each_series() {
        let series = |n: usize| TimeSeries {
            labels: (0..n)
                .map(|i| Label {
                    name: format!("l{i}"),
                    value: "v".into(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1,
            }],
            ..Default::default()
        };
        let req = WriteRequest {
            timeseries: vec![series(3), series(5)],
            metadata: vec![],
        }
        .encode_to_vec();
        assert!(check_v1(&req, 5, "k").is_ok());
        let e = check_v1(&req, 4, "k").unwrap_err();
        assert!(e.contains("5 labels, over k.max_labels_per_series (4)"), "{e}");
        let v2 = RequestV2 {
            symbols: vec!["".into(), "a".into()],
            timeseries: vec![TimeSeriesV2 {
                labels_refs: vec![1; 200 * 2],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        assert!(check_v2(&v2, 200, "k").is_ok());
        assert!(check_v2(&v2, 199, "k").unwrap_err().contains("200 labels"));
        // What decoding would build is estimated from the wire: above the real struct sizes.
        assert!(decoded_size_v2(&v2).unwrap() >= 120 + 200 * 4);
        assert!(check_v1(&req[..req.len() - 3], 10, "k")
            .unwrap_err()
            .contains("truncated protobuf"));
    }

    #[test]
    fn empty_sub_messages_are_estimated_at_their_decoded_size() {
        // One series holding 100,000 empty histograms: 200 KB on the wire.
        let mut series = Vec::new();
        for _ in 0..100_000 {
            series.extend_from_slice(&[0x22, 0x00]);
        }
        let mut req = vec![0x0a];
        let mut n = series.len();
        while n >= 0x80 {
            req.push((n as u8) | 0x80);
            n >>= 7;
        }
        req.push(n as u8);
        req.extend_from_slice(&series);
        let est = decoded_size_v1(&req).unwrap();
        assert!(est >= 100_000 * 240, "{est}");
        assert!(decoded_size_v1(&req[..req.len() - 1]).is_err(), "truncated");
    }
}
