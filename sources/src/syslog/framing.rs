//! TCP syslog framing (RFC 6587): octet counting (`LEN SP MSG`) when a frame starts with a
//! digit, else non-transparent framing ending at a newline (or NUL).

use bytes::{Buf, Bytes, BytesMut};

/// Why a TCP stream cannot be framed; the connection is closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame is larger than `max_frame_bytes`.
    #[error("syslog frame of {0} bytes exceeds sources.syslog.max_frame_bytes ({1})")]
    TooLarge(usize, usize),
    /// The octet count is not a number.
    #[error("invalid octet count {0:?}")]
    BadCount(String),
}

/// The next complete frame in `buf`, if any. At `eof` a trailing unterminated line is a frame.
/// `scanned` is how much of an unterminated line earlier calls searched for its newline: the
/// search resumes there, so a line trickled byte by byte costs time linear in its length
/// (start it at 0 and keep it with the buffer).
pub fn next_frame(
    buf: &mut BytesMut,
    max: usize,
    eof: bool,
    scanned: &mut usize,
) -> Result<Option<Bytes>, FrameError> {
    // Skip separators left between frames.
    while buf
        .first()
        .is_some_and(|&b| b == b'\n' || b == b'\r' || b == 0)
    {
        buf.advance(1);
    }
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first.is_ascii_digit() {
        let Some(sp) = buf.iter().take(12).position(|&b| b == b' ') else {
            if buf.len() >= 12 || eof {
                return Err(FrameError::BadCount(
                    String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned(),
                ));
            }
            return Ok(None);
        };
        let digits = &buf[..sp];
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| FrameError::BadCount(String::from_utf8_lossy(digits).into_owned()))?;
        if len > max {
            return Err(FrameError::TooLarge(len, max));
        }
        if buf.len() < sp + 1 + len {
            return Ok(None);
        }
        buf.advance(sp + 1);
        return Ok(Some(buf.split_to(len).freeze()));
    }
    let from = (*scanned).min(buf.len());
    let found = buf[from..].iter().position(|&b| b == b'\n' || b == 0);
    *scanned = buf.len();
    match found.map(|i| from + i) {
        Some(end) if end > max => Err(FrameError::TooLarge(end, max)),
        Some(end) => {
            *scanned = 0;
            let frame = buf.split_to(end).freeze();
            buf.advance(1);
            Ok(Some(frame))
        }
        None if buf.len() > max => Err(FrameError::TooLarge(buf.len(), max)),
        None if eof => {
            *scanned = 0;
            Ok(Some(buf.split().freeze()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize) -> Result<Vec<Bytes>, FrameError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let mut scanned = 0;
        while let Some(f) = next_frame(&mut buf, max, true, &mut scanned)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn newline_and_octet_counting() {
        assert_eq!(
            frames(b"<13>a\n<13>b\r\n<13>c", 100).unwrap(),
            vec!["<13>a", "<13>b\r", "<13>c"]
        );
        assert_eq!(
            frames(b"5 <13>a10 <13>b\nc d\n", 100).unwrap(),
            vec!["<13>a", "<13>b\nc d\n"]
        );
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut s = 0;
        let mut buf = BytesMut::from(&b"10 <13>ab"[..]);
        assert_eq!(next_frame(&mut buf, 100, false, &mut s).unwrap(), None);
        buf.extend_from_slice(b"cdef");
        assert_eq!(
            next_frame(&mut buf, 100, false, &mut s).unwrap().unwrap(),
            "<13>abcdef"
        );
        let mut buf = BytesMut::from(&b"<13>no newline yet"[..]);
        assert_eq!(next_frame(&mut buf, 100, false, &mut s).unwrap(), None);
        buf.extend_from_slice(b" but now\n<13>next\n");
        assert_eq!(
            next_frame(&mut buf, 100, false, &mut s).unwrap().unwrap(),
            "<13>no newline yet but now"
        );
        assert_eq!(s, 0);
        assert_eq!(
            next_frame(&mut buf, 100, false, &mut s).unwrap().unwrap(),
            "<13>next"
        );
    }

    /// A line trickled byte by byte is searched once: each call looks only at the new bytes.
    #[test]
    fn trickled_line_is_searched_once() {
        let line = vec![b'a'; 60_000];
        let mut buf = BytesMut::new();
        let mut scanned = 0;
        let mut searched = 0;
        for &b in &line {
            buf.extend_from_slice(&[b]);
            searched += buf.len() - scanned;
            assert_eq!(
                next_frame(&mut buf, 64 << 10, false, &mut scanned).unwrap(),
                None
            );
            assert_eq!(scanned, buf.len());
        }
        assert_eq!(searched, line.len());
        buf.extend_from_slice(b"\n");
        let frame = next_frame(&mut buf, 64 << 10, false, &mut scanned)
            .unwrap()
            .unwrap();
        assert_eq!(frame.len(), line.len());
    }

    #[test]
    fn limits_and_bad_counts() {
        assert_eq!(frames(b"500 x", 100), Err(FrameError::TooLarge(500, 100)));
        assert!(matches!(
            frames(&[b'a'; 200], 100),
            Err(FrameError::TooLarge(..))
        ));
        assert!(matches!(
            frames(b"12x34 <13>a", 100),
            Err(FrameError::BadCount(_))
        ));
    }
}
