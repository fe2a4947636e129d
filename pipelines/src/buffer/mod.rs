//! The durable buffer between the sources and the flusher.
//!
//! Every accepted batch is appended here before the client gets its response; the flusher
//! reads entries in order and removes them only after their rows are in a registered Parquet
//! segment. The [`Buffer`] trait keeps the guarantees testable by one conformance suite and
//! keeps sled replaceable.
//!
//! # Entry format (version 2)
//!
//! Keys are the entry's sequence number as 8 big-endian bytes, so iteration is FIFO. The value
//! is a pointer to the entry's bytes in a payload file (`payloads.rs`, which says why and how
//! they are made durable), or, for entries written before payload files, the bytes themselves.
//! The bytes are
//!
//! ```text
//! offset size  field
//! 0      1     format version (2; version 1 has no dead-letter reason)
//! 1      4     CRC32C (big-endian) of every byte after this field
//! 5      1     signal code (0 logs, 1 metrics, 2 traces)
//! 6      8     received_at, unix nanoseconds (i64 BE)
//! 14     8     partition hour, hours since the epoch (i64 BE)
//! 22     1     tenant length T, then T bytes of tenant
//! ..     1     source length S, then S bytes of source name
//! ..     2     dead-letter reason length R (u16 BE, 0 for none), then R bytes of reason
//! ..     ..    the rows: one Arrow IPC stream (schema + one record batch), LZ4-frame buffers
//! ```
//!
//! Every entry holds the rows of a single hour partition (sources split batches that straddle
//! an hour), so an entry is removed as a whole once its partition's segment is registered.
//! docs/operations.md documents the files on disk for operators.

mod format;
mod payloads;
mod sled_buffer;

#[cfg(test)]
mod payload_tests;
#[cfg(test)]
mod tests;

pub use format::{decode_entry, encode_entry};
#[cfg(test)]
use sled_buffer::SEGMENT_SIZE;
pub use sled_buffer::{split_for_entries, SledBuffer, SledBufferConfig, MAX_ENTRY_BYTES};
#[cfg(test)]
use weir_catalog::sled_durable::FileSync;

use crate::{Batch, Partition};

/// When a request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the batch is fsynced (group commit across concurrent requests). The default.
    #[default]
    Durable,
    /// After the batch is in the buffer, before any fsync: a crash or a power cut may take the
    /// last second of answers (sled writes its log out, and the payload files are synced,
    /// every ~500 ms).
    Buffered,
}

/// Errors of the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Appending would take the buffer past `max_bytes`: retry later.
    #[error("buffer full: {used} of {max} bytes used, entry needs {needed}")]
    Full {
        /// Live bytes in the buffer.
        used: u64,
        /// `buffer.max_bytes`.
        max: u64,
        /// Size of the refused entry.
        needed: u64,
    },
    /// A single entry is larger than the whole buffer can ever hold.
    #[error("entry of {needed} bytes is larger than buffer.max_bytes ({max})")]
    TooLarge {
        /// Size of the refused entry.
        needed: u64,
        /// `buffer.max_bytes`.
        max: u64,
    },
    /// The storage engine failed.
    #[error("buffer storage error: {0}")]
    Storage(String),
    /// A durable commit failed (an fsync, or sled's write of its log): the kernel may have
    /// dropped pages written since the last commit, and a retry that succeeds would not
    /// bring them back. Nothing is acknowledged any more until the buffer is reopened.
    #[error("buffer refuses writes until reopened (restart the agent): {0}")]
    SyncFailed(String),
    /// Encoding a batch failed.
    #[error("cannot encode batch: {0}")]
    Encode(String),
    /// An entry failed its checks.
    #[error("corrupt buffer entry {seq}: {reason}")]
    Corrupt {
        /// Sequence number of the entry.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
}

impl From<sled::Error> for BufferError {
    fn from(e: sled::Error) -> Self {
        BufferError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for BufferError {
    fn from(e: std::io::Error) -> Self {
        BufferError::Storage(e.to_string())
    }
}

/// One buffered batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Sequence number (FIFO order).
    pub seq: u64,
    /// Hour partition of every row.
    pub partition: Partition,
    /// The batch.
    pub batch: Batch,
    /// Encoded size in the buffer.
    pub bytes: u64,
}

/// Runs a blocking buffer operation on tokio's blocking pool (every [`Buffer`] method blocks).
pub async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BufferError::Storage(format!("blocking task failed: {e}")))?
}

/// A ledger record: its id and its value.
pub type JournalEntry = (Vec<u8>, Vec<u8>);

/// The small durable ledgers kept beside the entries, in the buffer's database so that one
/// fsync covers them and the entries together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    /// Flushes in progress: segment record and the entries it covers (see the flusher).
    FlushJournal,
    /// Segments uploaded but not yet acknowledged by the control plane.
    Outbox,
    /// Segments whose interrupted flush was dropped at a restart (their object was absent,
    /// their rows flushed again under another id): if the upload still lands later, that
    /// object is never registered (reconciliation skips these ids). Pruned after 7 days.
    FlushDropped,
    /// Segments the control plane refused for good (invalid, conflicting, too large, or a
    /// tenant the token may not write), each with its reason: kept, never dropped, and put
    /// back in the outbox at the next start.
    OutboxRefused,
    /// Read positions of the file-tailing sources: written by [`Buffer::append_with`] in the
    /// same atomic commit as the entries holding the lines read up to them.
    Checkpoints,
}

/// Live contents of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Bytes of live entries (what `max_bytes` bounds).
    pub bytes: u64,
    /// Live entries.
    pub entries: u64,
}

/// The durable buffer. Every method blocks: call them off the async threads.
pub trait Buffer: Send + Sync + 'static {
    /// Appends batches, each of whose rows all belong to its partition, as consecutive
    /// entries; returns the last sequence number. All or nothing with respect to
    /// `max_bytes`: either every entry fits or none is written. Entries are not durable until
    /// [`Buffer::sync`] returns for a sequence at or past them.
    fn append(&self, batches: &[(Partition, Batch)]) -> Result<u64, BufferError>;

    /// Appends like [`Buffer::append`] and writes `records` into `ledger` in the same atomic
    /// write: after a crash both are there or neither is, and the sync that makes the
    /// entries durable makes the records durable too. `batches` may be empty (then nothing
    /// needs a sync of its own: the records become durable with the next commit) and the
    /// result is `None`; otherwise the last sequence number.
    fn append_with(
        &self,
        batches: &[(Partition, Batch)],
        ledger: Ledger,
        records: &[JournalEntry],
    ) -> Result<Option<u64>, BufferError>;

    /// Makes every entry up to `seq` durable. Concurrent callers share one fsync
    /// (group commit).
    fn sync(&self, seq: u64) -> Result<(), BufferError>;

    /// Makes everything written so far (appends, removals, journal) durable.
    fn sync_all(&self) -> Result<(), BufferError>;

    /// Up to `max` entries with sequence numbers after `after`, in order. Corrupt entries are
    /// moved aside (see [`Buffer::corrupt_entries`]) and skipped.
    fn read(&self, after: Option<u64>, max: usize) -> Result<Vec<Entry>, BufferError>;

    /// Removes entries (after their rows are in a registered segment).
    fn remove(&self, seqs: &[u64]) -> Result<(), BufferError>;

    /// Live bytes and entries.
    fn stats(&self) -> BufferStats;

    /// Changes the bound on live bytes (a configuration reload). Below the live bytes,
    /// appends are refused as full until flushes bring the buffer under it; nothing buffered
    /// is dropped.
    fn set_max_bytes(&self, max_bytes: u64);

    /// Entries moved aside because they failed their checks.
    fn corrupt_entries(&self) -> u64;

    /// Why the buffer stopped acknowledging writes (a failed fsync), if it did; only a reopen
    /// (a restart of the agent) clears it.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Writes a ledger record (durable at the next [`Buffer::sync_all`]).
    fn ledger_put(&self, ledger: Ledger, id: &[u8], value: &[u8]) -> Result<(), BufferError>;

    /// Removes a ledger record.
    fn ledger_remove(&self, ledger: Ledger, id: &[u8]) -> Result<(), BufferError>;

    /// Every record of a ledger, in id order.
    fn ledger_list(&self, ledger: Ledger) -> Result<Vec<JournalEntry>, BufferError>;

    /// Records in a ledger.
    fn ledger_len(&self, ledger: Ledger) -> usize;
}
