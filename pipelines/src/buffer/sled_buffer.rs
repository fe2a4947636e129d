//! The sled implementation of [`Buffer`].
//!
//! Entries' bytes go to payload files (`payloads.rs`) and sled keeps a pointer to them, so the
//! bytes are written once instead of being copied through sled's log and page rewrites.
//!
//! # Durability
//!
//! A durable commit of sled 0.34 is more than its `flush()`, which on Linux is not durable and
//! leaves the blob files sled spills large leaf nodes to unsynced: the buffer commits through
//! [`DurableSled`] (`weir_catalog::sled_durable`, where the commit and its order are documented),
//! as the embedded segment index does, with the payload files' `fdatasync` joined to the front
//! of each commit ([`weir_catalog::sled_durable::CommitHook`]). Opening the buffer makes one commit, which also covers
//! blobs left by an earlier run, and fsyncs the names of sled's files. Concurrent
//! [`SledBuffer::sync`] calls are grouped: one caller (the leader) commits everything appended
//! so far while the others wait for it (group commit), by sequence number.
//!
//! A failed commit is final ("fsyncgate"): Linux reports a writeback error once and may have
//! dropped the dirty pages, so a retry that succeeds proves nothing. The leader and every
//! request waiting on its commit fail, and from then on every append, sync and removal fails
//! with [`BufferError::SyncFailed`], which names the failed call, until the buffer is reopened
//! (the agent restarted), which recovers what is really on disk. Reads still work.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tracing::{debug, error, warn};
use weir_catalog::sled_durable::{DurableError, DurableSled, FileSync, OsSync};

use super::format::{decode_entry, encode_entry, is_whole};
use super::payloads::{self, LiveCounts, Payloads, Pointer};
use super::{Buffer, BufferError, BufferStats, Entry, JournalEntry, Ledger};
use crate::{Batch, Partition};

/// sled segment size: log messages (values, and whole leaf nodes) above a quarter of it become
/// blob files (rare now that sled holds pointers, but entries written before payload files are
/// still values).
pub(crate) const SEGMENT_SIZE: usize = 8 << 20;
/// sled page cache of the buffer.
const CACHE_BYTES: u64 = 64 << 20;
/// Largest entry the sources should write: what one read holds in memory per entry, and what a
/// removed entry's file space waits on its neighbours.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Settings of the sled buffer.
#[derive(Debug, Clone)]
pub struct SledBufferConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// Bound on live bytes.
    pub max_bytes: u64,
}

/// The durable buffer on sled.
pub struct SledBuffer {
    durable: DurableSled,
    pub(super) entries: sled::Tree,
    pub(super) corrupt: sled::Tree,
    journal: sled::Tree,
    outbox: sled::Tree,
    outbox_refused: sled::Tree,
    flush_dropped: sled::Tree,
    checkpoints: sled::Tree,
    /// The entries' bytes (sled holds a pointer to them).
    payloads: Arc<Payloads>,
    /// Syncs the payload files every [`PERIODIC_SYNC`] (for `ack = "buffered"`); stopped
    /// when the buffer is dropped.
    _periodic: PeriodicSync,
    path: PathBuf,
    /// `buffer.max_bytes`; a configuration reload may change it ([`Buffer::set_max_bytes`]).
    max_bytes: AtomicU64,
    next_seq: AtomicU64,
    live_bytes: AtomicU64,
    live_entries: AtomicU64,
    corrupt_count: AtomicU64,
    /// Held while a sequence number is taken and its entry inserted, so entries appear in
    /// sequence order and `next_seq` read under it covers only inserted entries.
    append_lock: Mutex<()>,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    let b: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

impl SledBuffer {
    /// Opens (or creates) the buffer and counts its live entries.
    pub fn open(config: &SledBufferConfig) -> Result<SledBuffer, BufferError> {
        Self::open_with_sync(config, Arc::new(OsSync))
    }

    /// Opens the buffer with its fsyncs going through `syncer`: the fault point of tests that
    /// fail an fsync ([`SledBuffer::open`] passes the real one, so production pays nothing
    /// more than the trait call it already makes).
    ///
    /// For fault-injection tests only: a no-op [`FileSync`] turns off durability.
    #[doc(hidden)]
    pub fn open_with_sync(
        config: &SledBufferConfig,
        syncer: Arc<dyn FileSync>,
    ) -> Result<SledBuffer, BufferError> {
        // Entries are read once by the flusher, so a large page cache only costs memory
        // (sled's default is 1 GiB).
        let durable = DurableSled::open(
            &config.path,
            sled::Config::new()
                .segment_size(SEGMENT_SIZE)
                .cache_capacity(CACHE_BYTES),
            syncer,
        )
        .map_err(from_durable)?;
        let db = durable.db();
        let entries = db.open_tree("entries")?;
        let corrupt = db.open_tree("corrupt")?;
        let journal = db.open_tree("flush_journal")?;
        let outbox = db.open_tree("outbox")?;
        let outbox_refused = db.open_tree("outbox_refused")?;
        let flush_dropped = db.open_tree("flush_dropped")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let payload_synced = db.open_tree("payload_synced")?;
        let recorded = Payloads::recorded(&payload_synced);
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut next_seq = 0u64;
        let mut live = LiveCounts::new();
        let mut unwritten = 0u64;
        for item in entries.iter() {
            let (k, v) = item?;
            if let Some(s) = seq_of(&k) {
                next_seq = next_seq.max(s + 1);
            }
            let size = match Pointer::decode(&v) {
                None => v.len() as u64,
                Some(p) => {
                    // Past what a commit recorded durable: not acknowledged durably, and kept
                    // only if its bytes reached the file whole (see payloads.rs). A read that
                    // fails for another reason fails the opening: nothing is removed on a
                    // guess.
                    if !payloads::recorded_durable(&recorded, &p) {
                        let whole = match payloads::read_at_open(&config.path, &p) {
                            Ok(bytes) => is_whole(&bytes),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::NotFound
                                        | std::io::ErrorKind::UnexpectedEof
                                ) =>
                            {
                                false
                            }
                            Err(e) => {
                                return Err(BufferError::Storage(format!(
                                    "cannot read buffer entry {} from its payload file: {e}",
                                    seq_of(&k).unwrap_or_default()
                                )))
                            }
                        };
                        if !whole {
                            entries.remove(&k)?;
                            unwritten += 1;
                            continue;
                        }
                    }
                    let (n, b) = live.entry(p.file).or_default();
                    *n += 1;
                    *b += u64::from(p.len);
                    u64::from(p.len)
                }
            };
            bytes += size;
            count += 1;
        }
        if unwritten > 0 {
            warn!(
                entries = unwritten,
                "removed buffer entries whose bytes never reached the disk (written after the \
                 last sync, before a power cut: none was acknowledged with ack = \"durable\"; \
                 with ack = \"buffered\" they are the last second's)"
            );
        }
        let named = corrupt
            .iter()
            .values()
            .filter_map(|v| Some(Pointer::decode(&v.ok()?)?.file))
            .max();
        let payloads = Arc::new(
            Payloads::open(&config.path, durable.syncer(), payload_synced, &live, named).map_err(
                |e| {
                    BufferError::Storage(format!(
                        "cannot open the payload files of {}: {e}",
                        config.path.display()
                    ))
                },
            )?,
        );
        durable.set_hook(payloads.clone()).map_err(from_durable)?;
        // Makes the removals above and the payload files' recorded lengths durable.
        durable.commit().map_err(from_durable)?;
        durable.set_synced_below(next_seq);
        let buffer = SledBuffer {
            durable,
            entries,
            corrupt_count: AtomicU64::new(corrupt.len() as u64),
            corrupt,
            journal,
            outbox,
            outbox_refused,
            flush_dropped,
            checkpoints,
            _periodic: PeriodicSync::spawn(payloads.clone())?,
            payloads,
            path: config.path.clone(),
            max_bytes: AtomicU64::new(config.max_bytes),
            next_seq: AtomicU64::new(next_seq),
            live_bytes: AtomicU64::new(bytes),
            live_entries: AtomicU64::new(count),
            append_lock: Mutex::new(()),
        };
        Ok(buffer)
    }

    /// Turns on the periodic sync of the payload files (unit tests start with it off).
    #[cfg(test)]
    pub(super) fn set_sync_period(&self, period: std::time::Duration) {
        self._periodic.set_period(period);
    }

    /// How many payload files had their entries moved.
    #[cfg(test)]
    pub(super) fn relocations(&self) -> u64 {
        self.payloads.relocations()
    }

    /// Total size of sled's files on disk (what the soak test bounds).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Fails once a commit, or an `fdatasync` of a payload file, has failed (see the module
    /// docs).
    fn check_usable(&self) -> Result<(), BufferError> {
        self.durable.check_usable().map_err(from_durable)?;
        match self.payloads.failure() {
            Some(reason) => Err(BufferError::SyncFailed(reason)),
            None => Ok(()),
        }
    }

    /// A durable commit of everything written so far; a failure is final.
    fn durable_commit(&self) -> Result<(), BufferError> {
        self.durable.commit().map_err(from_durable)
    }

    /// Makes every entry below `target_below` durable, in a group commit (see the module
    /// docs): a leader covers every entry appended when its commit starts.
    fn sync_through(&self, target_below: u64) -> Result<(), BufferError> {
        self.durable
            .sync_through(target_below, || {
                let _g = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
                self.next_seq.load(Ordering::Acquire)
            })
            .map_err(from_durable)
    }

    /// Moves an entry aside: its bytes (or, when they cannot be read, its pointer) go to the
    /// `corrupt` tree.
    fn move_aside(&self, k: &[u8], v: &[u8], bytes: Option<&[u8]>, err: &BufferError) {
        error!(error = %err, "corrupt buffer entry moved aside");
        let pointer = Pointer::decode(v);
        let size = pointer.map_or(v.len() as u64, |p| u64::from(p.len));
        // Only the value read: an entry moved or removed meanwhile is left alone.
        if self.corrupt.insert(k, bytes.unwrap_or(v)).is_ok()
            && matches!(
                self.entries.compare_and_swap(k, Some(v), None::<&[u8]>),
                Ok(Ok(()))
            )
        {
            if let Some(p) = pointer {
                self.payloads.release(&p);
            }
            self.corrupt_count.fetch_add(1, Ordering::Relaxed);
            self.live_bytes.fetch_sub(size, Ordering::AcqRel);
            self.live_entries.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// An entry's bytes: sled's value, or the payload it points to.
    fn entry_bytes(&self, seq: u64, v: &sled::IVec) -> Result<Vec<u8>, BufferError> {
        match Pointer::decode(v) {
            None => Ok(v.to_vec()),
            Some(p) => self.payloads.read(p).map_err(|e| BufferError::Corrupt {
                seq,
                reason: format!(
                    "cannot read its {} bytes at offset {} of payload file {:016x}: {e}",
                    p.len, p.offset, p.file
                ),
            }),
        }
    }
}

impl SledBuffer {
    /// Moves the live entries of payload files that are mostly garbage to the active file
    /// ([`Payloads::sparse_file`]): their bytes are written and synced first, then each
    /// pointer is swapped if the entry is still there. The old file goes once a commit covers
    /// the swaps. An entry that cannot be read stays where it is (reading it moves it aside).
    fn relocate_sparse(&self) -> Result<(), BufferError> {
        while let Some(file) = self.payloads.sparse_file() {
            let mut moving = Vec::new();
            for item in self.entries.iter() {
                let (k, v) = item?;
                let Some(p) = Pointer::decode(&v).filter(|p| p.file == file) else {
                    continue;
                };
                // Damaged bytes stay where they are, to be moved aside when read.
                if let Ok(bytes) = self.payloads.read(p) {
                    if is_whole(&bytes) {
                        moving.push((k, p, bytes));
                    }
                }
            }
            if moving.is_empty() {
                continue;
            }
            let bytes: Vec<Vec<u8>> = moving
                .iter_mut()
                .map(|(_, _, b)| std::mem::take(b))
                .collect();
            let moved = self.write_payloads(&bytes, true)?;
            let mut failed = None;
            for ((k, old, _), new) in moving.iter().zip(&moved) {
                let swapped = match failed {
                    Some(_) => None,
                    None => self
                        .entries
                        .compare_and_swap(k, Some(&old.encode()[..]), Some(&new.encode()[..]))
                        .map_err(|e| failed = Some(e))
                        .ok(),
                };
                match swapped {
                    Some(Ok(())) => self.payloads.release(old),
                    // Removed (or moved aside) meanwhile, or not swapped after an error.
                    _ => self.payloads.release(new),
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
            debug!(
                file,
                entries = moved.len(),
                "moved live entries out of a sparse payload file"
            );
        }
        Ok(())
    }

    /// Writes the entries' bytes to the payload files; with `sync`, makes them durable too
    /// (an append carrying ledger records: see payloads.rs).
    fn write_payloads(&self, values: &[Vec<u8>], sync: bool) -> Result<Vec<Pointer>, BufferError> {
        let pointers = self.payloads.write(values).map_err(|e| {
            BufferError::Storage(format!("cannot write to the buffer's payload files: {e}"))
        })?;
        if sync {
            if let Err(reason) = self.payloads.sync_now() {
                for p in &pointers {
                    self.payloads.release(p);
                }
                return Err(BufferError::SyncFailed(reason));
            }
        }
        Ok(pointers)
    }
}

/// How often the payload files are synced when no commit does it: bounds what a power cut takes
/// from `ack = "buffered"` (sled's own log is synced about as often).
const PERIODIC_SYNC: std::time::Duration = std::time::Duration::from_millis(500);

/// The thread behind [`PERIODIC_SYNC`]; dropping it stops the thread. Unit tests start it
/// off (a sync at a random moment would change what they check) and turn it on by hand.
struct PeriodicSync {
    /// Sends a new period; dropped to stop the thread.
    stop: Option<std::sync::mpsc::SyncSender<std::time::Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeriodicSync {
    fn spawn(payloads: Arc<Payloads>) -> Result<PeriodicSync, BufferError> {
        use std::sync::mpsc::RecvTimeoutError;
        let (stop, stopped) = std::sync::mpsc::sync_channel::<std::time::Duration>(1);
        let mut period = if cfg!(test) {
            std::time::Duration::from_secs(365 * 86_400)
        } else {
            PERIODIC_SYNC
        };
        let thread = std::thread::Builder::new()
            .name("weir-buffer-sync".into())
            .spawn(move || loop {
                match stopped.recv_timeout(period) {
                    Ok(new) => period = new,
                    Err(RecvTimeoutError::Timeout) => {
                        if payloads.has_unsynced() {
                            if let Err(reason) = payloads.sync_now() {
                                // Final: the buffer refuses writes from now on.
                                error!(%reason, "periodic sync of the buffer's payload files failed");
                                return;
                            }
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| BufferError::Storage(format!("cannot start the buffer's sync thread: {e}")))?;
        Ok(PeriodicSync {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl PeriodicSync {
    #[cfg(test)]
    fn set_period(&self, period: std::time::Duration) {
        if let Some(stop) = &self.stop {
            let _ = stop.send(period);
        }
    }
}

impl Drop for PeriodicSync {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn from_durable(e: DurableError) -> BufferError {
    match e {
        DurableError::Failed(reason) => BufferError::SyncFailed(reason),
        other => BufferError::Storage(other.to_string()),
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Buffer for SledBuffer {
    fn append(&self, batches: &[(Partition, Batch)]) -> Result<u64, BufferError> {
        if batches.is_empty() {
            return Err(BufferError::Encode("nothing to append".into()));
        }
        self.append_with(batches, Ledger::Checkpoints, &[])?
            .ok_or_else(|| BufferError::Encode("nothing to append".into()))
    }

    fn append_with(
        &self,
        batches: &[(Partition, Batch)],
        ledger: Ledger,
        records: &[JournalEntry],
    ) -> Result<Option<u64>, BufferError> {
        self.check_usable()?;
        let values = batches
            .iter()
            .map(|(p, b)| encode_entry(*p, b))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            if !records.is_empty() {
                let mut batch = sled::Batch::default();
                for (k, v) in records {
                    batch.insert(k.as_slice(), v.as_slice());
                }
                self.ledger(ledger).apply_batch(batch)?;
            }
            return Ok(None);
        }
        let needed: u64 = values.iter().map(|v| v.len() as u64).sum();
        let max = self.max_bytes.load(Ordering::Relaxed);
        if needed > max {
            return Err(BufferError::TooLarge { needed, max });
        }
        let used = self.live_bytes.fetch_add(needed, Ordering::AcqRel);
        if used + needed > max {
            self.live_bytes.fetch_sub(needed, Ordering::AcqRel);
            return Err(BufferError::Full { used, max, needed });
        }
        let pointers = match self.write_payloads(&values, !records.is_empty()) {
            Ok(pointers) => pointers,
            Err(e) => {
                self.live_bytes.fetch_sub(needed, Ordering::AcqRel);
                return Err(e);
            }
        };
        let values: Vec<[u8; 21]> = pointers.iter().map(Pointer::encode).collect();
        let guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let first = self.next_seq.load(Ordering::Acquire);
        let written = if records.is_empty() {
            let mut batch = sled::Batch::default();
            for (i, v) in values.iter().enumerate() {
                batch.insert(&key(first + i as u64), v.as_slice());
            }
            self.entries.apply_batch(batch).map_err(BufferError::from)
        } else {
            // One transaction over both trees: sled logs it as one atomic batch, so recovery
            // after a crash sees the entries and the ledger records together or not at all.
            (&self.entries, self.ledger(ledger))
                .transaction(|(entries, ledger)| {
                    for (i, v) in values.iter().enumerate() {
                        entries.insert(&key(first + i as u64), v.as_slice())?;
                    }
                    for (k, v) in records {
                        ledger.insert(k.as_slice(), v.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => BufferError::from(e),
                    TransactionError::Abort(()) => {
                        BufferError::Storage("transaction aborted".into())
                    }
                })
        };
        if let Err(e) = written {
            drop(guard);
            for p in &pointers {
                self.payloads.release(p);
            }
            self.live_bytes.fetch_sub(needed, Ordering::AcqRel);
            return Err(e);
        }
        let last = first + values.len() as u64 - 1;
        self.next_seq.store(last + 1, Ordering::Release);
        drop(guard);
        self.live_entries
            .fetch_add(values.len() as u64, Ordering::AcqRel);
        Ok(Some(last))
    }

    fn sync(&self, seq: u64) -> Result<(), BufferError> {
        self.sync_through(seq.saturating_add(1))
    }

    fn sync_all(&self) -> Result<(), BufferError> {
        self.sync_through(self.next_seq.load(Ordering::Acquire))?;
        // Removals and journal changes carry no sequence number: always sync once more.
        self.durable_commit()
    }

    fn read(&self, after: Option<u64>, max: usize) -> Result<Vec<Entry>, BufferError> {
        let start = after.map(|s| s.saturating_add(1)).unwrap_or(0);
        let mut out = Vec::new();
        for item in self.entries.range(key(start)..) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let Some(seq) = seq_of(&k) else {
                let err = BufferError::Corrupt {
                    seq: 0,
                    reason: format!("bad key of {} bytes", k.len()),
                };
                self.move_aside(&k, &v, None, &err);
                continue;
            };
            let bytes = match self.entry_bytes(seq, &v) {
                Ok(bytes) => bytes,
                Err(err) => {
                    self.move_aside(&k, &v, None, &err);
                    continue;
                }
            };
            match decode_entry(seq, &bytes) {
                Ok((partition, batch)) => out.push(Entry {
                    seq,
                    partition,
                    batch,
                    bytes: bytes.len() as u64,
                }),
                Err(err) => self.move_aside(&k, &v, Some(&bytes), &err),
            }
        }
        Ok(out)
    }

    fn remove(&self, seqs: &[u64]) -> Result<(), BufferError> {
        self.check_usable()?;
        for &seq in seqs {
            if let Some(old) = self.entries.remove(key(seq))? {
                let size = match Pointer::decode(&old) {
                    Some(p) => {
                        self.payloads.release(&p);
                        u64::from(p.len)
                    }
                    None => old.len() as u64,
                };
                self.live_bytes.fetch_sub(size, Ordering::AcqRel);
                self.live_entries.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // Best effort: the removals above stand whatever happens to the relocation.
        if let Err(e) = self.relocate_sparse() {
            warn!(error = %e, "cannot move live entries out of a sparse payload file");
        }
        Ok(())
    }

    fn stats(&self) -> BufferStats {
        BufferStats {
            bytes: self.live_bytes.load(Ordering::Acquire),
            entries: self.live_entries.load(Ordering::Acquire),
        }
    }

    fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    fn corrupt_entries(&self) -> u64 {
        self.corrupt_count.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<String> {
        self.durable.failure().or_else(|| self.payloads.failure())
    }

    fn ledger_put(&self, ledger: Ledger, id: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.check_usable()?;
        self.ledger(ledger).insert(id, value)?;
        Ok(())
    }

    fn ledger_remove(&self, ledger: Ledger, id: &[u8]) -> Result<(), BufferError> {
        self.check_usable()?;
        self.ledger(ledger).remove(id)?;
        Ok(())
    }

    fn ledger_len(&self, ledger: Ledger) -> usize {
        self.ledger(ledger).len()
    }

    fn ledger_list(&self, ledger: Ledger) -> Result<Vec<JournalEntry>, BufferError> {
        self.ledger(ledger)
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
            .collect()
    }
}

impl SledBuffer {
    fn ledger(&self, ledger: Ledger) -> &sled::Tree {
        match ledger {
            Ledger::FlushJournal => &self.journal,
            Ledger::Outbox => &self.outbox,
            Ledger::OutboxRefused => &self.outbox_refused,
            Ledger::FlushDropped => &self.flush_dropped,
            Ledger::Checkpoints => &self.checkpoints,
        }
    }
}

/// Splits a batch into pieces whose encoded entries stay under [`MAX_ENTRY_BYTES`], judged by
/// the rows' in-memory size (entries are LZ4-compressed, so they come out smaller).
pub fn split_for_entries(batch: Batch) -> Vec<Batch> {
    let rows = batch.records.num_rows();
    let size = batch.records.get_array_memory_size();
    if rows <= 1 || size <= MAX_ENTRY_BYTES {
        return vec![batch];
    }
    let pieces = size.div_ceil(MAX_ENTRY_BYTES).min(rows);
    let per = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per)
        .map(|off| Batch {
            records: batch.records.slice(off, per.min(rows - off)),
            tenant: batch.tenant.clone(),
            signal: batch.signal,
            source: batch.source.clone(),
            received_at: batch.received_at,
            dead_letter: batch.dead_letter.clone(),
        })
        .collect()
}
