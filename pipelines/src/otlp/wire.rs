//! A reader of the protobuf wire format over a borrowed slice, for decoders that walk an OTLP
//! body once and append to Arrow builders without building prost structs.
//!
//! It accepts exactly what prost accepts, so that both paths agree on every body: varints of at
//! most 10 bytes (the tenth at most 1), field keys that fit a `u32` with a wire type of 0–5 and a
//! field number above 0, lengths within the enclosing message, UTF-8 in string fields, the wire
//! type of every known field, unknown fields of any wire type (groups included) skipped, and
//! prost's limit of 100 nested messages (skipping an unknown field counts as a level, as in
//! prost's `skip_field`). Values are borrowed from the body; nothing is allocated from a length
//! prefix.

use std::fmt;

/// The wire type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// Varint (int32, int64, uint32, bool, enum).
    Varint,
    /// 8 bytes (fixed64, double).
    SixtyFourBit,
    /// Length-delimited (string, bytes, embedded message).
    LengthDelimited,
    /// Start of a group (deprecated; only ever skipped).
    StartGroup,
    /// End of a group.
    EndGroup,
    /// 4 bytes (fixed32, float).
    ThirtyTwoBit,
}

/// What is wrong with a protobuf body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireErrorKind {
    /// A varint runs past the end of its message or over 10 bytes.
    #[error("invalid varint: cut short by the end of its message or longer than 10 bytes")]
    InvalidVarint,
    /// A field key over `u32::MAX`.
    #[error("invalid field key {0}")]
    InvalidKey(u64),
    /// A wire type other than 0–5.
    #[error("invalid wire type value {0}")]
    InvalidWireType(u64),
    /// Field number 0.
    #[error("invalid field number 0")]
    InvalidTag,
    /// A known field with another wire type than its type's.
    #[error("wire type {actual:?} where {expected:?} was expected")]
    UnexpectedWireType {
        /// What the body has.
        actual: WireType,
        /// What the field's type needs.
        expected: WireType,
    },
    /// A length (or fixed-width value) past the end of its message.
    #[error("a value of {needed} bytes runs past the end of its message ({left} bytes left)")]
    Truncated {
        /// Bytes the value needs.
        needed: u64,
        /// Bytes left in the message.
        left: usize,
    },
    /// An end-group key without its start group.
    #[error("unexpected end group tag")]
    UnexpectedEndGroup,
    /// A string field that is not UTF-8.
    #[error("invalid string value: data is not UTF-8 encoded")]
    InvalidUtf8,
    /// Messages nested deeper than prost's limit.
    #[error("recursion limit reached: messages nested more than 100 deep")]
    RecursionLimit,
}

/// A malformed protobuf body: what is wrong and in which field, like
/// `resource_logs[0].scope_logs[2].log_records[7].severity_text: invalid string value: data is
/// not UTF-8 encoded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", .0.path, .0.kind)]
pub struct WireError(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    kind: WireErrorKind,
    path: Path,
}

/// Fields from the outermost to the innermost, as they were pushed innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Path(Vec<(&'static str, Option<usize>)>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, index)) in self.0.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(field)?;
            if let Some(n) = index {
                write!(f, "[{n}]")?;
            }
        }
        if !self.0.is_empty() {
            f.write_str(": ")?;
        }
        Ok(())
    }
}

impl WireError {
    /// What is wrong.
    pub fn kind(&self) -> &WireErrorKind {
        &self.0.kind
    }

    /// The error inside field `field` of the enclosing message.
    #[cold]
    pub(crate) fn at(mut self, field: &'static str) -> WireError {
        self.0.path.0.push((field, None));
        self
    }

    /// The error inside item `index` of the repeated field `field`.
    #[cold]
    pub(crate) fn at_index(mut self, field: &'static str, index: usize) -> WireError {
        self.0.path.0.push((field, Some(index)));
        self
    }
}

impl From<WireErrorKind> for WireError {
    #[cold]
    fn from(kind: WireErrorKind) -> WireError {
        WireError(Box::new(Inner {
            kind,
            path: Path::default(),
        }))
    }
}

/// Nesting levels left, as prost's `DecodeContext` counts them: the fields of a top-level
/// message are read at [`Depth::TOP`]; entering an embedded message, or skipping an unknown
/// field, needs a level left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depth(u32);

impl Depth {
    /// The depth of a top-level message's fields (prost's `RECURSION_LIMIT`).
    pub const TOP: Depth = Depth(100);

    /// The depth of the fields of a message embedded at this depth.
    #[inline]
    pub fn enter(self) -> Result<Depth, WireError> {
        match self.0.checked_sub(1) {
            Some(n) => Ok(Depth(n)),
            None => Err(WireErrorKind::RecursionLimit.into()),
        }
    }
}

/// Reads fields from a message's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of the fields in `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Whether every field was read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A varint.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, WireError> {
        match self.buf.first() {
            Some(&b) if b < 0x80 => {
                self.buf = &self.buf[1..];
                Ok(u64::from(b))
            }
            _ => self.varint_slow(),
        }
    }

    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    break;
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(WireErrorKind::InvalidVarint.into())
    }

    /// A field key: its number and wire type.
    #[inline]
    pub fn key(&mut self) -> Result<(u32, WireType), WireError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| WireErrorKind::InvalidKey(key))?;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            other => return Err(WireErrorKind::InvalidWireType(u64::from(other)).into()),
        };
        let tag = key >> 3;
        if tag == 0 {
            return Err(WireErrorKind::InvalidTag.into());
        }
        Ok((tag, wire_type))
    }

    /// The next `n` bytes.
    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        match usize::try_from(n) {
            Ok(n) if n <= self.buf.len() => {
                let (head, rest) = self.buf.split_at(n);
                self.buf = rest;
                Ok(head)
            }
            _ => Err(WireErrorKind::Truncated {
                needed: n,
                left: self.buf.len(),
            }
            .into()),
        }
    }

    #[inline]
    fn expect(actual: WireType, expected: WireType) -> Result<(), WireError> {
        if actual == expected {
            Ok(())
        } else {
            Err(WireErrorKind::UnexpectedWireType { actual, expected }.into())
        }
    }

    /// A varint field (int32, int64, uint32, bool, enum: the caller casts as prost does).
    #[inline]
    pub fn varint_field(&mut self, wire_type: WireType) -> Result<u64, WireError> {
        Self::expect(wire_type, WireType::Varint)?;
        self.varint()
    }

    /// A fixed64 or double field.
    #[inline]
    pub fn fixed64(&mut self, wire_type: WireType) -> Result<u64, WireError> {
        Self::expect(wire_type, WireType::SixtyFourBit)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A fixed32 field.
    #[inline]
    pub fn fixed32(&mut self, wire_type: WireType) -> Result<u32, WireError> {
        Self::expect(wire_type, WireType::ThirtyTwoBit)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    /// A bytes field.
    #[inline]
    pub fn bytes(&mut self, wire_type: WireType) -> Result<&'a [u8], WireError> {
        Self::expect(wire_type, WireType::LengthDelimited)?;
        let n = self.varint()?;
        self.take(n)
    }

    /// A string field.
    #[inline]
    pub fn string(&mut self, wire_type: WireType) -> Result<&'a str, WireError> {
        let b = self.bytes(wire_type)?;
        std::str::from_utf8(b).map_err(|_| WireErrorKind::InvalidUtf8.into())
    }

    /// An embedded message field read at `depth`: its bytes and the depth of its fields.
    #[inline]
    pub fn message(
        &mut self,
        wire_type: WireType,
        depth: Depth,
    ) -> Result<(&'a [u8], Depth), WireError> {
        Self::expect(wire_type, WireType::LengthDelimited)?;
        let inner = depth.enter()?;
        let n = self.varint()?;
        Ok((self.take(n)?, inner))
    }

    /// Skips an unknown field `tag` read at `depth`, as prost's `skip_field` does.
    pub fn skip(&mut self, wire_type: WireType, tag: u32, depth: Depth) -> Result<(), WireError> {
        if depth.0 == 0 {
            return Err(WireErrorKind::RecursionLimit.into());
        }
        match wire_type {
            WireType::Varint => {
                self.varint()?;
            }
            WireType::SixtyFourBit => {
                self.take(8)?;
            }
            WireType::ThirtyTwoBit => {
                self.take(4)?;
            }
            WireType::LengthDelimited => {
                let n = self.varint()?;
                self.take(n)?;
            }
            WireType::StartGroup => loop {
                let (inner_tag, inner_type) = self.key()?;
                if inner_type == WireType::EndGroup {
                    if inner_tag != tag {
                        return Err(WireErrorKind::UnexpectedEndGroup.into());
                    }
                    break;
                }
                self.skip(inner_type, inner_tag, Depth(depth.0 - 1))?;
            },
            WireType::EndGroup => return Err(WireErrorKind::UnexpectedEndGroup.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{decode_varint, encode_varint};

    #[test]
    fn varints_agree_with_prost() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0x80],
            vec![0x80, 0x00],
            vec![0xff; 9],
            [vec![0xff; 9], vec![0x01]].concat(),
            [vec![0xff; 9], vec![0x02]].concat(),
            vec![0xff; 10],
            vec![0xff; 11],
            [vec![0x80; 9], vec![0x00]].concat(),
        ];
        for case in cases {
            let ours = Reader::new(&case).varint().ok();
            let theirs = decode_varint(&mut &case[..]).ok();
            assert_eq!(ours, theirs, "{case:?}");
        }
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            encode_varint(v, &mut b);
            let mut r = Reader::new(&b);
            assert_eq!(r.varint().ok(), Some(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn errors_name_the_field_path() {
        let e = WireError::from(WireErrorKind::InvalidUtf8)
            .at("severity_text")
            .at_index("log_records", 3)
            .at_index("resource_logs", 0);
        assert_eq!(
            e.to_string(),
            "resource_logs[0].log_records[3].severity_text: invalid string value: data is not \
             UTF-8 encoded"
        );
        assert_eq!(
            WireError::from(WireErrorKind::InvalidTag).to_string(),
            "invalid field number 0"
        );
    }

    #[test]
    fn lengths_past_the_end_are_refused_before_allocating() {
        // A string field claiming u64::MAX bytes.
        let mut b = vec![0x0a];
        encode_varint(u64::MAX, &mut b);
        let mut r = Reader::new(&b);
        let (tag, wt) = r.key().unwrap();
        assert_eq!(tag, 1);
        assert!(matches!(
            r.string(wt).unwrap_err().kind(),
            WireErrorKind::Truncated { .. }
        ));
    }

    #[test]
    fn groups_are_skipped_and_must_match() {
        // field 9 start group, inner field 1 varint 5, field 9 end group.
        let ok = [0x4b, 0x08, 0x05, 0x4c];
        let mut r = Reader::new(&ok);
        let (tag, wt) = r.key().unwrap();
        r.skip(wt, tag, Depth::TOP).unwrap();
        assert!(r.is_empty());
        // Ends with field 8's end group.
        let bad = [0x4b, 0x08, 0x05, 0x44];
        let mut r = Reader::new(&bad);
        let (tag, wt) = r.key().unwrap();
        assert_eq!(
            r.skip(wt, tag, Depth::TOP).unwrap_err().kind(),
            &WireErrorKind::UnexpectedEndGroup
        );
    }
}
