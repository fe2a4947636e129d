//! Request bodies of the HTTP sources: a size limit before and after decompression, and the
//! content codings clients use (gzip, deflate, snappy), so every HTTP source enforces
//! `max_request_bytes` the same way and a compression bomb stops at the limit.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body, or what it decompresses to, is over the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body could not be read or decompressed (400).
    #[error("{0}")]
    Invalid(String),
    /// A content coding the source does not accept (415).
    #[error("{0}")]
    Unsupported(String),
}

/// A `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No compression.
    Identity,
    /// gzip.
    Gzip,
    /// zlib deflate.
    Deflate,
    /// Raw snappy block.
    Snappy,
}

/// The request's `Content-Encoding`, among those `accepted`.
pub fn coding(headers: &HeaderMap, accepted: &[Coding]) -> Result<Coding, BodyError> {
    let c = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Coding::Identity,
        Some(e) if e.is_empty() || e == "identity" => Coding::Identity,
        Some(e) if e == "gzip" || e == "x-gzip" => Coding::Gzip,
        Some(e) if e == "deflate" => Coding::Deflate,
        Some(e) if e == "snappy" => Coding::Snappy,
        Some(e) => {
            return Err(BodyError::Unsupported(format!(
                "unsupported Content-Encoding {e:?}: {}",
                use_one_of(accepted)
            )))
        }
    };
    if c != Coding::Identity && !accepted.contains(&c) {
        return Err(BodyError::Unsupported(format!(
            "unsupported Content-Encoding {:?}: {}",
            c.name(),
            use_one_of(accepted)
        )));
    }
    Ok(c)
}

/// `use gzip, deflate or none`.
fn use_one_of(accepted: &[Coding]) -> String {
    let names: Vec<&str> = accepted.iter().map(|c| c.name()).collect();
    format!("use {} or none", names.join(", "))
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Snappy => "snappy",
        }
    }
}

/// The media type of `Content-Type`, lowercased, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// An error with its causes, `: `-separated (hyper's and reqwest's own messages say little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Reads a body of at most `limit` bytes (`key` names the limit in messages), holding a share
/// of `budget` (permits of 1 KiB) for every KiB received: when the source's bodies in flight have used it up, reading waits (TCP
/// backpressure) until a decode ends, so many slow large bodies cannot all be held at once.
/// The permit is the body's share; drop it when the body is no longer held.
pub async fn read_within(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    key: &str,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    use futures::StreamExt;

    let too_large = || BodyError::TooLarge(format!("request body exceeds {key} ({limit} bytes)"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_units = 0usize;
    let mut out = Vec::with_capacity(declared.unwrap_or(0));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            BodyError::Invalid(format!("cannot read request body: {}", error_chain(&e)))
        })?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        let units = (out.len() + chunk.len()).div_ceil(BODY_UNIT);
        if units > held_units {
            let more = u32::try_from(units - held_units).map_err(|_| too_large())?;
            let permit = budget
                .clone()
                .acquire_many_owned(more)
                .await
                .map_err(|e| BodyError::Invalid(format!("cannot read request body: {e}")))?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            held_units = units;
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out.into(), held))
}

/// The unit of the body budget's permits.
pub const BODY_UNIT: usize = 1024;

/// Decompresses a body, refusing output over `limit` bytes. Blocking: call it off the async
/// threads for large bodies.
pub fn decode(raw: Bytes, coding: Coding, limit: usize, key: &str) -> Result<Bytes, BodyError> {
    let too_large =
        || BodyError::TooLarge(format!("decompressed body exceeds {key} ({limit} bytes)"));
    let read_limited = |mut r: Box<dyn Read + '_>, what: &str| -> Result<Bytes, BodyError> {
        let mut out = Vec::new();
        (&mut r)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Invalid(format!("invalid {what} body: {e}")))?;
        if out.len() > limit {
            return Err(too_large());
        }
        Ok(out.into())
    };
    match coding {
        Coding::Identity => Ok(raw),
        Coding::Gzip => read_limited(
            Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
            "gzip",
        ),
        Coding::Deflate => read_limited(
            Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
            "deflate",
        ),
        Coding::Snappy => {
            let len = snap::raw::decompress_len(&raw)
                .map_err(|e| BodyError::Invalid(format!("invalid snappy body: {e}")))?;
            if len > limit {
                return Err(too_large());
            }
            snap::raw::Decoder::new()
                .decompress_vec(&raw)
                .map(Bytes::from)
                .map_err(|e| BodyError::Invalid(format!("invalid snappy body: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bombs_stop_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = Bytes::from(gz.finish().unwrap());
        assert!(matches!(
            decode(bomb.clone(), Coding::Gzip, 1000, "k"),
            Err(BodyError::TooLarge(_))
        ));
        assert_eq!(
            decode(bomb, Coding::Gzip, 1 << 20, "k").unwrap().len(),
            1 << 20
        );
        let sn = Bytes::from(
            snap::raw::Encoder::new()
                .compress_vec(&vec![1u8; 5000])
                .unwrap(),
        );
        assert!(matches!(
            decode(sn.clone(), Coding::Snappy, 100, "k"),
            Err(BodyError::TooLarge(_))
        ));
        assert_eq!(decode(sn, Coding::Snappy, 5000, "k").unwrap().len(), 5000);
        assert!(matches!(
            decode(Bytes::from_static(b"nope"), Coding::Gzip, 100, "k"),
            Err(BodyError::Invalid(_))
        ));
        // A snappy header declaring 4 GiB is refused before anything is allocated.
        let huge = Bytes::from_static(b"\xff\xff\xff\xff\x0f");
        assert!(matches!(
            decode(huge, Coding::Snappy, 100, "k"),
            Err(BodyError::TooLarge(_))
        ));
        let broken = Bytes::from_static(b"\x03\xff\xff");
        assert!(matches!(
            decode(broken, Coding::Snappy, 100, "k"),
            Err(BodyError::Invalid(_))
        ));
    }

    /// A body holds a KiB of the budget per KiB received; a second body waits while the
    /// first holds the budget, and reads on once it is dropped. Over the limit is 413.
    #[tokio::test]
    async fn bodies_share_a_budget() {
        let budget = Arc::new(Semaphore::new(4));
        let headers = HeaderMap::new();
        let (first, held) = read_within(&headers, Body::from(vec![1u8; 3000]), 8192, "k", &budget)
            .await
            .unwrap();
        assert_eq!(first.len(), 3000);
        assert_eq!(budget.available_permits(), 1);
        let second = read_within(&headers, Body::from(vec![2u8; 2000]), 8192, "k", &budget);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), second.as_mut())
                .await
                .is_err(),
            "waits for the budget"
        );
        drop(held);
        let (second, _held) = second.await.unwrap();
        assert_eq!(second.len(), 2000);
        assert_eq!(budget.available_permits(), 2);
        assert!(matches!(
            read_within(&headers, Body::from(vec![0u8; 9000]), 8192, "k", &budget).await,
            Err(BodyError::TooLarge(_))
        ));
        assert_eq!(
            budget.available_permits(),
            2,
            "a refused body gives its share back"
        );
    }
}
