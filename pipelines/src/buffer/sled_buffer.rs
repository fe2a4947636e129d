//! The sled implementation of [`Buffer`].
//!
//! # Durability
//!
//! What sled 0.34 writes, and does not make durable (measured with strace, and read in sled's
//! `pagecache/iobuf.rs`, `logger.rs` and `blob_io.rs`):
//! - its log, in the data file `db`, with `pwrite` and `sync_file_range`: not a durable commit
//!   on Linux (no metadata, no device cache flush). sled fsyncs `db` only from a background
//!   thread, every 500 ms.
//! - every log message over a quarter of the segment size (2 MiB here) as a file of its own
//!   under `blobs/`, named by its log sequence number, written once and never fsynced. Such a
//!   message is a large value, but also a whole leaf node: sled rewrites a page whole after
//!   about ten updates, and a leaf holds up to 16 entries, so a few entries of a few hundred KiB
//!   spill although each is far below the threshold. sled writes a blob before the log message
//!   that points to it.
//!
//! So a durable commit is, in this order:
//! 1. `Db::flush()`: the log up to now is written, and so is every blob it points to;
//! 2. `fdatasync` of every blob file not synced before at its current size (the buffer
//!    remembers the name and size of what it synced: sled writes a blob once, front to back,
//!    and never rewrites it, so a blob caught while sled was still writing it has grown by the
//!    commit that covers it), then `fsync` of `blobs/` if a name was new;
//! 3. `fdatasync` of `db`, through a descriptor opened with the buffer, so that a writeback
//!    error on it is reported here.
//!
//! Opening the buffer makes one such commit, which also covers blobs left by an earlier run,
//! and fsyncs `conf` and the directories (`blobs/`, the buffer's, its parent), so that the names
//! are durable too. Concurrent [`SledBuffer::sync`] calls are grouped: one caller (the leader)
//! commits everything appended so far while the others wait for it (group commit).
//!
//! A failed commit is final ("fsyncgate"): Linux reports a writeback error once and may have
//! dropped the dirty pages, so a retry that succeeds proves nothing. The leader and every
//! request waiting on its commit fail, and from then on every append, sync and removal fails
//! with [`BufferError::SyncFailed`], which names the failed call, until the buffer is reopened
//! (the agent restarted), which recovers what is really on disk. Reads still work.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tracing::{debug, error};

use super::format::{decode_entry, encode_entry};
use super::{Buffer, BufferError, BufferStats, Entry, JournalEntry, Ledger};
use crate::{Batch, Partition};

/// sled segment size: log messages (values, and whole leaf nodes) above a quarter of it become
/// blob files.
pub(crate) const SEGMENT_SIZE: usize = 8 << 20;
/// sled page cache of the buffer.
const CACHE_BYTES: u64 = 64 << 20;
/// Largest entry the sources should write. Below sled's blob threshold for a single value, but
/// leaves holding several such entries spill to blob files, which every commit fsyncs.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Settings of the sled buffer.
#[derive(Debug, Clone)]
pub struct SledBufferConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// Bound on live bytes.
    pub max_bytes: u64,
}

/// How the buffer makes files durable: the operating system's `fdatasync`/`fsync`, or in tests
/// a double that records the files or fails on demand (fault injection).
pub(crate) trait FileSync: Send + Sync + 'static {
    /// `fdatasync` of an open file; `path` names it.
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// `fsync` of a directory, so the entries created in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real [`FileSync`].
pub(crate) struct OsSync;

impl FileSync for OsSync {
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[derive(Default)]
struct SyncState {
    /// Every sequence number below this is durable.
    synced_below: u64,
    /// A leader is syncing.
    in_progress: bool,
}

/// The durable buffer on sled.
pub struct SledBuffer {
    db: sled::Db,
    pub(super) entries: sled::Tree,
    pub(super) corrupt: sled::Tree,
    journal: sled::Tree,
    outbox: sled::Tree,
    checkpoints: sled::Tree,
    data_file: File,
    syncer: Arc<dyn FileSync>,
    /// The blob files fsynced so far (those that still exist), with the size each had when it
    /// was: a blob that sled was still writing then has grown since, and is synced again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// The first failed commit: set once, never cleared (see the module docs).
    failure: OnceLock<String>,
    path: PathBuf,
    max_bytes: u64,
    next_seq: AtomicU64,
    live_bytes: AtomicU64,
    live_entries: AtomicU64,
    corrupt_count: AtomicU64,
    /// Held while a sequence number is taken and its entry inserted, so entries appear in
    /// sequence order and `next_seq` read under it covers only inserted entries.
    append_lock: Mutex<()>,
    sync_state: Mutex<SyncState>,
    sync_done: Condvar,
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

    /// Opens the buffer with its fsyncs going through `syncer` (tests).
    pub(crate) fn open_with_sync(
        config: &SledBufferConfig,
        syncer: Arc<dyn FileSync>,
    ) -> Result<SledBuffer, BufferError> {
        std::fs::create_dir_all(&config.path)?;
        // Entries are read once by the flusher, so a large page cache only costs memory
        // (sled's default is 1 GiB).
        let db = weir_catalog::open_sled(
            &sled::Config::new()
                .path(&config.path)
                .segment_size(SEGMENT_SIZE)
                .cache_capacity(CACHE_BYTES),
        )?;
        let entries = db.open_tree("entries")?;
        let corrupt = db.open_tree("corrupt")?;
        let journal = db.open_tree("flush_journal")?;
        let outbox = db.open_tree("outbox")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let data_file = File::open(config.path.join("db"))?;
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut next_seq = 0u64;
        for item in entries.iter() {
            let (k, v) = item?;
            bytes += v.len() as u64;
            count += 1;
            if let Some(s) = seq_of(&k) {
                next_seq = next_seq.max(s + 1);
            }
        }
        let buffer = SledBuffer {
            db,
            entries,
            corrupt_count: AtomicU64::new(corrupt.len() as u64),
            corrupt,
            journal,
            outbox,
            checkpoints,
            data_file,
            syncer,
            synced_blobs: Mutex::new(HashMap::new()),
            failure: OnceLock::new(),
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            next_seq: AtomicU64::new(next_seq),
            live_bytes: AtomicU64::new(bytes),
            live_entries: AtomicU64::new(count),
            append_lock: Mutex::new(()),
            sync_state: Mutex::new(SyncState {
                synced_below: next_seq,
                in_progress: false,
            }),
            sync_done: Condvar::new(),
        };
        buffer.sync_at_open()?;
        Ok(buffer)
    }

    /// Makes what an earlier run left durable (it may have been killed before fsyncing, and
    /// sled fsyncs no blob), and the names of sled's files.
    fn sync_at_open(&self) -> Result<(), BufferError> {
        self.commit().map_err(BufferError::Storage)?;
        let dir_failed = |dir: &Path, e: io::Error| {
            BufferError::Storage(format!("fsync of directory {} failed: {e}", dir.display()))
        };
        let conf = self.path.join("conf");
        if let Ok(f) = File::open(&conf) {
            self.syncer.sync_data(&f, &conf).map_err(|e| {
                BufferError::Storage(format!("fdatasync of {} failed: {e}", conf.display()))
            })?;
        }
        let blobs = self.path.join("blobs");
        let parent = self.path.parent().filter(|p| !p.as_os_str().is_empty());
        for dir in [Some(blobs.as_path()), Some(self.path.as_path()), parent]
            .into_iter()
            .flatten()
        {
            if dir.is_dir() {
                self.syncer.sync_dir(dir).map_err(|e| dir_failed(dir, e))?;
            }
        }
        Ok(())
    }

    /// Total size of sled's files on disk (what the soak test bounds).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Fails once a commit has failed (see the module docs).
    fn check_usable(&self) -> Result<(), BufferError> {
        match self.failure.get() {
            Some(reason) => Err(BufferError::SyncFailed(reason.clone())),
            None => Ok(()),
        }
    }

    /// A durable commit of everything written so far; a failure is final.
    fn durable_commit(&self) -> Result<(), BufferError> {
        self.check_usable()?;
        self.commit().map_err(|reason| {
            if self.failure.set(reason.clone()).is_ok() {
                error!(%reason, "buffer commit failed: no acknowledgements until the buffer is reopened");
            }
            BufferError::SyncFailed(self.failure.get().cloned().unwrap_or(reason))
        })
    }

    /// `flush()`, the new blob files and their directory, then the data file (in this order:
    /// see the module docs). The error names the call that failed.
    fn commit(&self) -> Result<(), String> {
        self.db
            .flush()
            .map_err(|e| format!("sled flush (write of its log) failed: {e}"))?;
        self.sync_new_blobs()?;
        let db = self.path.join("db");
        self.syncer
            .sync_data(&self.data_file, &db)
            .map_err(|e| format!("fdatasync of {} failed: {e}", db.display()))
    }

    /// `fdatasync` of each blob file not synced yet at its current size, then `fsync` of
    /// `blobs/` if one of them is new.
    fn sync_new_blobs(&self) -> Result<(), String> {
        let dir = self.path.join("blobs");
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashMap::with_capacity(synced.len());
        let (mut synced_now, mut new_names) = (0usize, 0usize);
        for item in listing {
            let item = item.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let (name, path) = (item.file_name(), item.path());
            // The size is read before the sync, so the sync covers at least that much.
            let size = match item.metadata() {
                Ok(m) => m.len(),
                // Removed by sled since the listing: nothing points to it any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot stat {}: {e}", path.display())),
            };
            let before = synced.get(&name).copied();
            if before != Some(size) {
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
                };
                self.syncer
                    .sync_data(&file, &path)
                    .map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))?;
                synced_now += 1;
                new_names += usize::from(before.is_none());
            }
            present.insert(name, size);
        }
        if new_names > 0 {
            self.syncer
                .sync_dir(&dir)
                .map_err(|e| format!("fsync of directory {} failed: {e}", dir.display()))?;
        }
        if synced_now > 0 {
            debug!(blobs = synced_now, "fsynced sled blob files");
        }
        *synced = present;
        Ok(())
    }

    fn sync_through(&self, target_below: u64) -> Result<(), BufferError> {
        let mut state = self.sync_state.lock().map_err(|_| poisoned())?;
        loop {
            // A failed commit fails every request waiting on it: none of them may take over
            // and acknowledge after a retry.
            self.check_usable()?;
            if state.synced_below >= target_below {
                return Ok(());
            }
            if !state.in_progress {
                break;
            }
            state = self.sync_done.wait(state).map_err(|_| poisoned())?;
        }
        // Leader: cover everything appended so far, for every waiter at once.
        state.in_progress = true;
        drop(state);
        let covering = {
            let _g = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.next_seq.load(Ordering::Acquire)
        };
        let result = self.durable_commit();
        let mut state = self.sync_state.lock().map_err(|_| poisoned())?;
        state.in_progress = false;
        if result.is_ok() {
            state.synced_below = state.synced_below.max(covering);
        }
        self.sync_done.notify_all();
        result
    }

    fn move_aside(&self, k: &[u8], v: &[u8], err: &BufferError) {
        error!(error = %err, "corrupt buffer entry moved aside");
        if self.corrupt.insert(k, v).is_ok() && self.entries.remove(k).is_ok() {
            self.corrupt_count.fetch_add(1, Ordering::Relaxed);
            self.live_bytes.fetch_sub(v.len() as u64, Ordering::AcqRel);
            self.live_entries.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn poisoned() -> BufferError {
    BufferError::Storage("buffer sync state poisoned by a panic".into())
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
        if needed > self.max_bytes {
            return Err(BufferError::TooLarge {
                needed,
                max: self.max_bytes,
            });
        }
        let used = self.live_bytes.fetch_add(needed, Ordering::AcqRel);
        if used + needed > self.max_bytes {
            self.live_bytes.fetch_sub(needed, Ordering::AcqRel);
            return Err(BufferError::Full {
                used,
                max: self.max_bytes,
                needed,
            });
        }
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
                self.move_aside(&k, &v, &err);
                continue;
            };
            match decode_entry(seq, &v) {
                Ok((partition, batch)) => out.push(Entry {
                    seq,
                    partition,
                    batch,
                    bytes: v.len() as u64,
                }),
                Err(err) => self.move_aside(&k, &v, &err),
            }
        }
        Ok(out)
    }

    fn remove(&self, seqs: &[u64]) -> Result<(), BufferError> {
        self.check_usable()?;
        for &seq in seqs {
            if let Some(old) = self.entries.remove(key(seq))? {
                self.live_bytes
                    .fetch_sub(old.len() as u64, Ordering::AcqRel);
                self.live_entries.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    fn stats(&self) -> BufferStats {
        BufferStats {
            bytes: self.live_bytes.load(Ordering::Acquire),
            entries: self.live_entries.load(Ordering::Acquire),
        }
    }

    fn corrupt_entries(&self) -> u64 {
        self.corrupt_count.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
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
