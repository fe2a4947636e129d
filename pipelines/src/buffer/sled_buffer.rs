//! The sled implementation of [`Buffer`].
//!
//! Durability: sled 0.34's `Db::flush()` writes its IO buffers with `pwrite` and
//! `sync_file_range`, which is not a durable commit on Linux, and values above
//! `segment_size / 4` go to blob files that sled never fsyncs. So [`SledBuffer::sync`] follows
//! `flush()` with an explicit `fdatasync` of sled's data file (`db`), plus the blob files when
//! an oversized entry was written, and the sources split batches into entries below the blob
//! threshold so that path is rare. Concurrent `sync` calls are grouped: one caller (the leader)
//! syncs everything appended so far while the others wait for it (group commit).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use tracing::{error, warn};

use super::format::{decode_entry, encode_entry};
use super::{Buffer, BufferError, BufferStats, Entry, JournalEntry, Ledger};
use crate::{Batch, Partition};

/// sled segment size: values above a quarter of it become blob files.
pub(crate) const SEGMENT_SIZE: usize = 8 << 20;
/// sled page cache of the buffer.
const CACHE_BYTES: u64 = 64 << 20;
/// Largest entry the sources should write (well below sled's blob threshold).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Settings of the sled buffer.
#[derive(Debug, Clone)]
pub struct SledBufferConfig {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// Bound on live bytes.
    pub max_bytes: u64,
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
    data_file: File,
    path: PathBuf,
    max_bytes: u64,
    next_seq: AtomicU64,
    live_bytes: AtomicU64,
    live_entries: AtomicU64,
    corrupt_count: AtomicU64,
    blob_written: AtomicBool,
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
        Ok(SledBuffer {
            db,
            entries,
            corrupt_count: AtomicU64::new(corrupt.len() as u64),
            corrupt,
            journal,
            outbox,
            data_file,
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            next_seq: AtomicU64::new(next_seq),
            live_bytes: AtomicU64::new(bytes),
            live_entries: AtomicU64::new(count),
            blob_written: AtomicBool::new(false),
            append_lock: Mutex::new(()),
            sync_state: Mutex::new(SyncState {
                synced_below: next_seq,
                in_progress: false,
            }),
            sync_done: Condvar::new(),
        })
    }

    /// Total size of sled's files on disk (what the soak test bounds).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }

    /// `flush()`, then `fdatasync` of the data file (and of blob files if any were written).
    fn flush_and_fdatasync(&self) -> Result<(), BufferError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        if self.blob_written.swap(false, Ordering::AcqRel) {
            let blobs = self.path.join("blobs");
            if let Ok(dir) = std::fs::read_dir(&blobs) {
                for f in dir.flatten() {
                    if let Ok(file) = File::open(f.path()) {
                        file.sync_data()?;
                    }
                }
            }
            File::open(&blobs)?.sync_all()?;
        }
        Ok(())
    }

    fn sync_through(&self, target_below: u64) -> Result<(), BufferError> {
        let mut state = self.sync_state.lock().map_err(|_| poisoned())?;
        loop {
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
        let result = self.flush_and_fdatasync();
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
        let values = batches
            .iter()
            .map(|(p, b)| encode_entry(*p, b))
            .collect::<Result<Vec<_>, _>>()?;
        if values.is_empty() {
            return Err(BufferError::Encode("nothing to append".into()));
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
        if values.iter().any(|v| v.len() > SEGMENT_SIZE / 4 - 1024) {
            warn!("buffer entry above sled's blob threshold");
            self.blob_written.store(true, Ordering::Release);
        }
        let guard = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let first = self.next_seq.load(Ordering::Acquire);
        let mut batch = sled::Batch::default();
        for (i, v) in values.iter().enumerate() {
            batch.insert(&key(first + i as u64), v.as_slice());
        }
        if let Err(e) = self.entries.apply_batch(batch) {
            drop(guard);
            self.live_bytes.fetch_sub(needed, Ordering::AcqRel);
            return Err(e.into());
        }
        let last = first + values.len() as u64 - 1;
        self.next_seq.store(last + 1, Ordering::Release);
        drop(guard);
        self.live_entries
            .fetch_add(values.len() as u64, Ordering::AcqRel);
        Ok(last)
    }

    fn sync(&self, seq: u64) -> Result<(), BufferError> {
        self.sync_through(seq.saturating_add(1))
    }

    fn sync_all(&self) -> Result<(), BufferError> {
        self.sync_through(self.next_seq.load(Ordering::Acquire))?;
        // Removals and journal changes carry no sequence number: always sync once more.
        self.flush_and_fdatasync()
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

    fn ledger_put(&self, ledger: Ledger, id: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.ledger(ledger).insert(id, value)?;
        Ok(())
    }

    fn ledger_remove(&self, ledger: Ledger, id: &[u8]) -> Result<(), BufferError> {
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
