//! File helpers of the engine: reading at an offset, fingerprints, finding a rotated file by
//! its inode, which paths are never read, and paths in checkpoints.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::engine::FileKey;

/// Paths in checkpoints, as UTF-8 (lossily).
pub(super) mod lossy_path {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        String::deserialize(d).map(PathBuf::from)
    }
}

/// Reads until `buf` is full or the file ends.
pub(super) fn read_full(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// CRC32C of the first `len` bytes, or `None` if the file is shorter.
pub(super) fn fingerprint(file: &File, len: u64) -> Option<u32> {
    let mut buf = vec![0u8; len as usize];
    let n = read_full(file, &mut buf, 0).ok()?;
    (n == buf.len()).then(|| crc32c::crc32c(&buf))
}

pub(super) fn last_byte(file: &File, offset: u64) -> Option<u8> {
    let mut b = [0u8];
    (file.read_at(&mut b, offset.checked_sub(1)?).ok()? == 1).then_some(b[0])
}

/// The directory part of a glob pattern before its first wildcard (`/var/log/pods` of
/// `/var/log/pods/*/*/*.log`).
pub(super) fn fixed_prefix(pattern: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(pattern).components() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            return Some(out);
        }
        out.push(c);
    }
    out.parent().map(Path::to_path_buf)
}

/// Rotated files that are never read: compressed ones.
pub(super) fn is_compressed(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("gz" | "bz2" | "xz" | "zst" | "zip" | "lz4")
    )
}

/// A file beside `path` (same directory) with the identity `key`: where rotation renamed it.
pub(super) fn find_by_inode(path: &Path, key: FileKey) -> Option<PathBuf> {
    let dir = path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| !is_compressed(p))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && FileKey::of(&m) == key)
                .unwrap_or(false)
        })
}
