//! Finding whole msgpack values in a TCP stream without decoding them: [`value_len`] walks the
//! markers and lengths only, so a partial frame costs a scan, not an allocation.

/// Deepest nesting accepted (a hostile frame cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

/// Why the stream is not msgpack.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A byte that is not a msgpack marker.
    #[error("invalid msgpack marker 0x{0:02x}")]
    Marker(u8),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("msgpack nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// The length of the msgpack value at the start of `buf`, or `None` if it is not complete yet.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut pos = 0usize;
    // Values still to read at each open level.
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let Some(&m) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        let be = |n: usize, at: usize| -> Option<u64> {
            let b = buf.get(at..at + n)?;
            Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
        };
        // (bytes of length field, payload multiplier kind): returns skip length or children.
        let (skip, children): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (m & 0x0f) as u64),
            0x90..=0x9f => (0, (m & 0x0f) as u64),
            0xa0..=0xbf => ((m & 0x1f) as u64, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc4 | 0xd9 => match be(1, pos) {
                Some(n) => (1 + n, 0),
                None => return Ok(None),
            },
            0xc5 | 0xda => match be(2, pos) {
                Some(n) => (2 + n, 0),
                None => return Ok(None),
            },
            0xc6 | 0xdb => match be(4, pos) {
                Some(n) => (4 + n, 0),
                None => return Ok(None),
            },
            0xc7 => match be(1, pos) {
                Some(n) => (2 + n, 0),
                None => return Ok(None),
            },
            0xc8 => match be(2, pos) {
                Some(n) => (3 + n, 0),
                None => return Ok(None),
            },
            0xc9 => match be(4, pos) {
                Some(n) => (5 + n, 0),
                None => return Ok(None),
            },
            0xdc => match be(2, pos) {
                Some(n) => (2, n),
                None => return Ok(None),
            },
            0xdd => match be(4, pos) {
                Some(n) => (4, n),
                None => return Ok(None),
            },
            0xde => match be(2, pos) {
                Some(n) => (2, 2 * n),
                None => return Ok(None),
            },
            0xdf => match be(4, pos) {
                Some(n) => (4, 2 * n),
                None => return Ok(None),
            },
            0xc1 => return Err(FrameError::Marker(m)),
        };
        pos = pos.saturating_add(skip as usize);
        if pos > buf.len() {
            return Ok(None);
        }
        if children > 0 {
            if pending.len() >= MAX_DEPTH {
                return Err(FrameError::TooDeep);
            }
            pending.push(children);
        }
    }
    Ok(Some(pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn whole_values_and_prefixes() {
        use rmpv::Value as V;
        let v = V::Array(vec![
            V::from("tag"),
            V::Ext(0, vec![0, 0, 0, 1, 0, 0, 0, 2]),
            V::Map(vec![
                (V::from("log"), V::from("x".repeat(300))),
                (V::from("n"), V::from(-70000i64)),
            ]),
            V::Binary(vec![1; 70_000]),
            V::F64(1.5),
            V::Nil,
        ]);
        let bytes = enc(&v);
        assert_eq!(value_len(&bytes), Ok(Some(bytes.len())));
        for cut in [0, 1, 5, 100, bytes.len() - 1] {
            assert_eq!(value_len(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(value_len(&two), Ok(Some(bytes.len())));
    }

    #[test]
    fn hostile_input() {
        assert_eq!(value_len(&[0xc1]), Err(FrameError::Marker(0xc1)));
        assert_eq!(value_len(&[0x91; 100]), Err(FrameError::TooDeep));
        // A huge declared length is just incomplete; the caller's frame limit handles it.
        assert_eq!(value_len(&[0xdb, 0xff, 0xff, 0xff, 0xff]), Ok(None));
    }
}
