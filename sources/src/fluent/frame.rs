//! Finding whole msgpack values in a TCP stream without decoding them: [`Scanner`] walks the
//! markers and lengths only, so a partial frame costs a scan, not an allocation, and resumes
//! where it stopped, so a frame trickled in small reads costs time linear in its size.

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
    Scanner::default().scan(buf)
}

/// The length of the msgpack value at the start of `buf` and the number of values it holds
/// (itself, and every element, key and value inside), or `None` if it is not complete yet:
/// what decoding it into a tree will allocate, known before anything is allocated.
pub fn value_extent(buf: &[u8]) -> Result<Option<(usize, u64)>, FrameError> {
    let mut s = Scanner::default();
    Ok(s.scan(buf)?.map(|len| (len, s.steps)))
}

/// The element count of the msgpack array whose header starts `buf`, and the header's
/// length; `None` when `buf` does not start with a complete array header.
pub fn array_header(buf: &[u8]) -> Option<(usize, usize)> {
    let be = |n: usize| -> Option<usize> {
        let b = buf.get(1..1 + n)?;
        Some(b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
    };
    match *buf.first()? {
        m @ 0x90..=0x9f => Some(((m & 0x0f) as usize, 1)),
        0xdc => Some((be(2)?, 3)),
        0xdd => Some((be(4)?, 5)),
        _ => None,
    }
}

/// Finds the end of the msgpack value at the start of a growing buffer, resuming where the
/// last call stopped: a frame trickled in small reads is walked once, not once per read
/// (which made a large frame sent 1 KiB at a time cost time quadratic in its size). The
/// state is the offset reached in the value and the values still to read at each open level;
/// the buffer may grow between calls but its start must not move until a value is found.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Offset just past the last marker (and its payload) walked; past the buffer's end while
    /// a string or binary payload is still arriving.
    pos: usize,
    /// Values still to read at each open level; empty when no value is in progress.
    pending: Vec<u64>,
    /// Markers examined since the scanner was made: the work done, which tests check is
    /// linear in the input.
    steps: u64,
}

impl Scanner {
    /// The length of the value at the start of `buf` once it is complete (the next call then
    /// starts a new value at the start of the buffer the caller has advanced), `None` until
    /// then.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if self.pending.is_empty() {
            self.pos = 0;
            self.pending.push(1);
        }
        if self.pos > buf.len() {
            return Ok(None);
        }
        while let Some(top) = self.pending.last().copied() {
            if top == 0 {
                self.pending.pop();
                continue;
            }
            let pos = self.pos;
            let Some(&m) = buf.get(pos) else {
                return Ok(None);
            };
            self.steps += 1;
            let Some((skip, children)) = item(m, buf, pos + 1)? else {
                // Its length field is not all here: nothing is committed.
                return Ok(None);
            };
            if let Some(top) = self.pending.last_mut() {
                *top -= 1;
            }
            self.pos = (pos + 1).saturating_add(skip as usize);
            if children > 0 {
                if self.pending.len() >= MAX_DEPTH {
                    self.pending.clear();
                    return Err(FrameError::TooDeep);
                }
                self.pending.push(children);
            }
            if self.pos > buf.len() {
                return Ok(None);
            }
        }
        Ok(Some(std::mem::take(&mut self.pos)))
    }

    /// Markers examined since the scanner was made.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// The marker `m` whose length field starts at `at`: the bytes after the marker to skip (length
/// field and payload) and the values it contains; `None` when the length field is incomplete.
fn item(m: u8, buf: &[u8], at: usize) -> Result<Option<(u64, u64)>, FrameError> {
    let be = |n: usize| -> Option<u64> {
        let b = buf.get(at..at + n)?;
        Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    };
    let sized = |n: usize, f: fn(u64) -> (u64, u64)| -> Result<Option<(u64, u64)>, FrameError> {
        Ok(be(n).map(f))
    };
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(Some((0, 0))),
        0x80..=0x8f => Ok(Some((0, 2 * (m & 0x0f) as u64))),
        0x90..=0x9f => Ok(Some((0, (m & 0x0f) as u64))),
        0xa0..=0xbf => Ok(Some(((m & 0x1f) as u64, 0))),
        0xcc | 0xd0 => Ok(Some((1, 0))),
        0xcd | 0xd1 => Ok(Some((2, 0))),
        0xce | 0xd2 | 0xca => Ok(Some((4, 0))),
        0xcf | 0xd3 | 0xcb => Ok(Some((8, 0))),
        0xd4 => Ok(Some((2, 0))),
        0xd5 => Ok(Some((3, 0))),
        0xd6 => Ok(Some((5, 0))),
        0xd7 => Ok(Some((9, 0))),
        0xd8 => Ok(Some((17, 0))),
        0xc4 | 0xd9 => sized(1, |n| (1 + n, 0)),
        0xc5 | 0xda => sized(2, |n| (2 + n, 0)),
        0xc6 | 0xdb => sized(4, |n| (4 + n, 0)),
        0xc7 => sized(1, |n| (2 + n, 0)),
        0xc8 => sized(2, |n| (3 + n, 0)),
        0xc9 => sized(4, |n| (5 + n, 0)),
        0xdc => sized(2, |n| (2, n)),
        0xdd => sized(4, |n| (4, n)),
        0xde => sized(2, |n| (2, 2 * n)),
        0xdf => sized(4, |n| (4, 2 * n)),
        0xc1 => Err(FrameError::Marker(m)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn extents_count_every_value_and_array_headers_their_elements() {
        // [1, {"a": nil}, "xy"]: the array, 1, the map, "a", nil, "xy".
        let v = [0x93, 0x01, 0x81, 0xa1, b'a', 0xc0, 0xa2, b'x', b'y'];
        assert_eq!(super::value_extent(&v).unwrap(), Some((v.len(), 6)));
        assert_eq!(super::value_extent(&v[..4]).unwrap(), None);
        assert_eq!(super::array_header(&v), Some((3, 1)));
        assert_eq!(super::array_header(&[0xdc, 0x01, 0x00]), Some((256, 3)));
        assert_eq!(super::array_header(&[0xdd, 0, 1, 0, 0]), Some((65_536, 5)));
        assert_eq!(super::array_header(&[0xdd, 0, 1]), None);
        assert_eq!(super::array_header(&[0x81]), None);
    }

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

    /// A frame trickled in 1 KiB reads is walked once: the markers examined over all the reads
    /// are the frame's markers plus at most one re-examined per read (a length field cut by
    /// the read), not the quadratic sum of rescans from the start.
    #[test]
    fn trickled_frame_costs_linear_work() {
        use rmpv::Value as V;
        let entries: Vec<V> = (0..100_000)
            .map(|i| {
                V::Array(vec![
                    V::from(i),
                    V::Map(vec![(V::from("log"), V::from("line"))]),
                ])
            })
            .collect();
        let bytes = enc(&V::Array(vec![V::from("tag"), V::Array(entries)]));
        assert!(bytes.len() > 1 << 20, "{}", bytes.len());
        let markers = {
            let mut s = Scanner::default();
            assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())));
            s.steps()
        };
        let mut s = Scanner::default();
        let mut reads = 0u64;
        let mut found = None;
        for end in (1024..bytes.len() + 1024).step_by(1024) {
            reads += 1;
            found = s.scan(&bytes[..end.min(bytes.len())]).unwrap();
            if found.is_some() {
                break;
            }
        }
        assert_eq!(found, Some(bytes.len()));
        assert!(
            s.steps() <= markers + reads,
            "{} steps for {markers} markers in {reads} reads",
            s.steps()
        );
        // The next value starts afresh once the caller has advanced past this one.
        let mut two = bytes.clone();
        two.extend_from_slice(&enc(&V::from(7)));
        let mut s = Scanner::default();
        assert_eq!(s.scan(&two), Ok(Some(bytes.len())));
        assert_eq!(s.scan(&two[bytes.len()..]), Ok(Some(1)));
    }

    /// Cut anywhere, a value resumes to the same length as when it is whole.
    #[test]
    fn resumes_from_any_cut() {
        use rmpv::Value as V;
        let v = V::Array(vec![
            V::from("tag"),
            V::Binary(vec![3; 300]),
            V::Map(vec![(V::from("k"), V::Ext(1, vec![0; 20]))]),
            V::from(u64::MAX),
        ]);
        let bytes = enc(&v);
        for a in 0..bytes.len() {
            for b in a..bytes.len() {
                let mut s = Scanner::default();
                assert_eq!(s.scan(&bytes[..a]), Ok(None));
                assert_eq!(s.scan(&bytes[..b]), Ok(None));
                assert_eq!(s.scan(&bytes), Ok(Some(bytes.len())), "cuts {a} {b}");
            }
        }
    }
}
