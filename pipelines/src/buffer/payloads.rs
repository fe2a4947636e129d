//! Payload files: the bytes of buffer entries, kept outside sled's pages.
//!
//! sled stores a value inside its B-tree leaves: it serialises the value into its log, copies
//! it again each time the leaf is rewritten, and spills leaves holding large values to blob
//! files. For entries of hundreds of KiB that is most of the buffer's cost. So an entry's bytes
//! are appended to a payload file instead, and sled keeps a 21-byte [`Pointer`] to them under
//! the entry's key; every other record (ledgers, checkpoints) stays in sled.
//!
//! # Files
//!
//! `payloads/<id>.wpl` under the buffer's directory, `id` a 16-digit hexadecimal number that
//! grows with each file. Entries are appended front to back at the end of the newest file (the
//! active one); a file that reached [`PAYLOAD_FILE_BYTES`] is not appended to again. The bytes
//! of an entry are exactly the entry format of the buffer module, CRC included, with nothing
//! between entries. A file is deleted once none of its entries is live and the removals of
//! its last entries are durable; a drained active file is retired at a commit. Once the files
//! hold more than twice the live bytes plus two files, the sparsest file under half live has
//! its live entries moved to the active file (their bytes written and synced first, then each
//! pointer swapped; see [`Payloads::sparse_file`]), so what the flusher cannot remove yet does
//! not keep whole files on disk. A flusher draining in order never triggers it.
//!
//! # Ordering, and what a power cut leaves
//!
//! Each durable commit of the buffer first `fdatasync`s every payload file written since the
//! last one (and `fsync`s `payloads/` when a file is new), records in sled's `payload_synced`
//! tree how far each file is now durable, and only then writes and syncs sled's log
//! ([`CommitHook`]). Every other sync of the files (an append with ledger records, the sync
//! every 500 ms for `ack = "buffered"`) records its lengths the same way. An entry is acknowledged only after a commit that started after its
//! pointer was inserted, so the bytes of every acknowledged entry are durable before the
//! pointer to them.
//!
//! sled may still write a pointer out before the bytes it points to are durable (its own
//! background flush, the kernel's writeback): after a power cut, a pointer past its file's
//! recorded durable length may point to bytes that never reached the disk. Such an entry was
//! never acknowledged durably. At open it is read and its CRC checked: kept if whole (the
//! process died, the kernel still wrote the bytes), removed if its file is gone, short or the
//! CRC fails (never written); any other read error fails the opening. A pointer inside the
//! recorded length whose bytes fail their checks is corruption and is moved aside like any
//! corrupt entry. A new file never takes an id a pointer or a record still names.
//!
//! An append that carries ledger records (the file tailers' read positions) `fdatasync`s its
//! bytes before it inserts its pointers, so a read position is never durable without the
//! lines read up to it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::{debug, warn};
use weir_catalog::sled_durable::{CommitHook, FileSync};

/// Size at which a payload file stops taking entries (one entry larger than that gets a file
/// of its own).
#[cfg(not(test))]
pub(crate) const PAYLOAD_FILE_BYTES: u64 = 32 << 20;
/// Small in unit tests, so they roll files and relocate entries with little data.
#[cfg(test)]
pub(crate) const PAYLOAD_FILE_BYTES: u64 = 256 << 10;
/// First byte of a pointer value; an entry stored in sled itself starts with its format
/// version (1 or 2).
const POINTER_TAG: u8 = 0xB1;
const DIR: &str = "payloads";
const SUFFIX: &str = ".wpl";

/// Where an entry's bytes are: sled's value for the entry's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub file: u64,
    pub offset: u64,
    pub len: u32,
}

impl Pointer {
    const ENCODED: usize = 21;

    pub fn encode(&self) -> [u8; Self::ENCODED] {
        let mut out = [0u8; Self::ENCODED];
        out[0] = POINTER_TAG;
        out[1..9].copy_from_slice(&self.file.to_be_bytes());
        out[9..17].copy_from_slice(&self.offset.to_be_bytes());
        out[17..21].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// The pointer a sled value holds, or `None` for an entry stored whole in sled.
    pub fn decode(value: &[u8]) -> Option<Pointer> {
        if value.len() != Self::ENCODED || value[0] != POINTER_TAG {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(Pointer {
            file: u64_at(1),
            offset: u64_at(9),
            len: u32::from_be_bytes([value[17], value[18], value[19], value[20]]),
        })
    }

    fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

struct PayloadFile {
    file: Arc<File>,
    /// Bytes written (the next entry's offset).
    written: u64,
    /// Bytes made durable by an `fdatasync`.
    synced: u64,
    /// Live entries in the file.
    live: u64,
    /// Bytes of the live entries.
    live_bytes: u64,
    /// Its live entries were moved to a newer file once ([`Payloads::sparse_file`]).
    relocated: bool,
}

#[derive(Default)]
struct State {
    files: BTreeMap<u64, PayloadFile>,
    /// The file appends go to, if any.
    active: Option<u64>,
    next_id: u64,
    /// A file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Files left without live entries (not the active one), not yet seen by a commit.
    emptied: Vec<u64>,
    /// Files to delete once the commit whose token is at or above the number succeeds.
    doomed: Vec<(u64, u64)>,
    /// Tokens of commits started.
    commits: u64,
    /// Files handed out by [`Payloads::sparse_file`].
    relocations: u64,
}

/// The payload files of one buffer (see the module docs).
pub(crate) struct Payloads {
    dir: PathBuf,
    syncer: Arc<dyn FileSync>,
    /// File id → bytes durable, in the buffer's database.
    synced: sled::Tree,
    state: Mutex<State>,
    /// Serialises the `fdatasync`s of a commit with those of an append with ledger records, so
    /// that a file's `synced` only grows.
    sync_lock: Mutex<()>,
    /// The first failed `fdatasync`: set once, never cleared, as in [`DurableSled`] (a retry
    /// that succeeds proves nothing).
    ///
    /// [`DurableSled`]: weir_catalog::sled_durable::DurableSled
    failure: OnceLock<String>,
}

fn file_name(id: u64) -> String {
    format!("{id:016x}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// What opening found: each file's live entries and their bytes, from the pointers in sled.
pub(crate) type LiveCounts = HashMap<u64, (u64, u64)>;

impl Payloads {
    /// Opens the payload files of the buffer at `buffer_dir`. `live` counts the pointers sled
    /// holds per file: a file with none is deleted, every other one `fdatasync`ed (an earlier
    /// run may have died before it was) and recorded durable at its length by the next commit.
    /// `named` is the highest file id other pointers name (those moved aside as corrupt).
    pub fn open(
        buffer_dir: &Path,
        syncer: Arc<dyn FileSync>,
        synced: sled::Tree,
        live: &LiveCounts,
        named: Option<u64>,
    ) -> io::Result<Payloads> {
        let dir = buffer_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let mut state = State {
            // Past every id a pointer or a record names, even of a file that is gone: a new
            // file must never take the name stale pointers point into.
            next_id: live
                .keys()
                .copied()
                .chain(Self::recorded(&synced).into_keys())
                .chain(named)
                .max()
                .map_or(0, |id| id + 1),
            ..State::default()
        };
        let mut deleted = 0usize;
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            let Some(id) = item.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            state.next_id = state.next_id.max(id + 1);
            let path = item.path();
            let (count, live_bytes) = live.get(&id).copied().unwrap_or((0, 0));
            if count == 0 {
                std::fs::remove_file(&path)?;
                let _ = synced.remove(id.to_be_bytes());
                deleted += 1;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            syncer.sync_data(&file, &path)?;
            let len = file.metadata()?.len();
            // Durable with the commit that ends the buffer's opening. Never lowered: a file
            // shorter than its record lost durable bytes, whose entries are corruption.
            let recorded = synced
                .get(id.to_be_bytes())
                .map_err(io::Error::other)?
                .and_then(|v| u64_value(&v))
                .unwrap_or(0);
            if len > recorded {
                synced
                    .insert(id.to_be_bytes(), &len.to_be_bytes())
                    .map_err(io::Error::other)?;
            }
            state.files.insert(
                id,
                PayloadFile {
                    file: Arc::new(file),
                    written: len,
                    synced: len,
                    live: count,
                    live_bytes,
                    relocated: false,
                },
            );
        }
        // Records of files gone that nothing points into any more (deleted before their
        // record was removed durably). The record of a file pointers still name is kept: its
        // entries stay corruption, moved aside when read, at every later open too.
        for item in synced.iter() {
            let (k, _) = item.map_err(io::Error::other)?;
            if let Some(id) = u64_value(&k) {
                if !state.files.contains_key(&id) && !live.contains_key(&id) {
                    synced.remove(k).map_err(io::Error::other)?;
                }
            }
        }
        syncer.sync_dir(&dir)?;
        syncer.sync_dir(buffer_dir)?;
        if deleted > 0 {
            debug!(
                files = deleted,
                "deleted payload files without live entries"
            );
        }
        Ok(Payloads {
            dir,
            syncer,
            synced,
            state: Mutex::new(state),
            sync_lock: Mutex::new(()),
            failure: OnceLock::new(),
        })
    }

    /// How far the last commits recorded each file durable (read before [`Payloads::open`]).
    pub fn recorded(synced: &sled::Tree) -> HashMap<u64, u64> {
        synced
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((u64_value(&k)?, u64_value(&v)?)))
            .collect()
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `values` and returns where each went. On an error nothing written here is
    /// live (its bytes are garbage no pointer names).
    pub fn write(&self, values: &[Vec<u8>]) -> io::Result<Vec<Pointer>> {
        if let Some(reason) = self.failure.get() {
            return Err(io::Error::other(format!(
                "payload files refuse writes until reopened: {reason}"
            )));
        }
        let mut state = self.lock();
        let mut out = Vec::with_capacity(values.len());
        for value in values {
            match self.write_one(&mut state, value) {
                Ok(p) => out.push(p),
                Err(e) => {
                    for p in &out {
                        Self::release_locked(&mut state, p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn write_one(&self, state: &mut State, value: &[u8]) -> io::Result<Pointer> {
        let len = u32::try_from(value.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry larger than 4 GiB"))?;
        let full =
            |f: &PayloadFile| f.written > 0 && f.written + u64::from(len) > PAYLOAD_FILE_BYTES;
        let roll = match state.active.and_then(|id| state.files.get(&id)) {
            None => true,
            Some(f) => full(f),
        };
        if roll {
            self.retire_active(state);
            let id = state.next_id;
            let path = self.path(id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            state.next_id += 1;
            state.dir_dirty = true;
            state.files.insert(
                id,
                PayloadFile {
                    file: Arc::new(file),
                    written: 0,
                    synced: 0,
                    live: 0,
                    live_bytes: 0,
                    relocated: false,
                },
            );
            state.active = Some(id);
        }
        let id = state
            .active
            .ok_or_else(|| io::Error::other("no active payload file"))?;
        let f = state
            .files
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("active payload file missing"))?;
        // Positional writes: after a failed one the next entry simply overwrites its bytes.
        f.file.write_all_at(value, f.written)?;
        let p = Pointer {
            file: id,
            offset: f.written,
            len,
        };
        f.written += u64::from(len);
        f.live += 1;
        f.live_bytes += u64::from(len);
        Ok(p)
    }

    /// Stops appending to the active file; it is deleted later if it holds nothing live.
    fn retire_active(&self, state: &mut State) {
        if let Some(id) = state.active.take() {
            if state.files.get(&id).is_some_and(|f| f.live == 0) {
                state.emptied.push(id);
            }
        }
    }

    /// Reads an entry's bytes.
    pub fn read(&self, p: Pointer) -> io::Result<Vec<u8>> {
        let (file, written) = self
            .lock()
            .files
            .get(&p.file)
            .map(|f| (f.file.clone(), f.written))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("payload file {} is missing", file_name(p.file)),
                )
            })?;
        if p.end() > written {
            return Err(past_end(p, written));
        }
        let mut buf = vec![0u8; p.len as usize];
        file.read_exact_at(&mut buf, p.offset)?;
        Ok(buf)
    }

    /// An entry pointing at `p` was removed from sled.
    pub fn release(&self, p: &Pointer) {
        Self::release_locked(&mut self.lock(), p);
    }

    fn release_locked(state: &mut State, p: &Pointer) {
        if let Some(f) = state.files.get_mut(&p.file) {
            f.live = f.live.saturating_sub(1);
            f.live_bytes = f.live_bytes.saturating_sub(u64::from(p.len));
            if f.live == 0 && state.active != Some(p.file) {
                state.emptied.push(p.file);
            }
        }
    }

    /// `fdatasync` of every file with bytes not yet durable, and of the directory if a file is
    /// new. Returns the files synced, with their new durable length.
    fn sync_files(&self) -> Result<Vec<(u64, u64)>, String> {
        if let Some(reason) = self.failure.get() {
            return Err(reason.clone());
        }
        self.sync_files_once().inspect_err(|reason| {
            let _ = self.failure.set(reason.clone());
        })
    }

    fn sync_files_once(&self) -> Result<Vec<(u64, u64)>, String> {
        let (todo, dir_dirty) = {
            let mut state = self.lock();
            let todo: Vec<(u64, Arc<File>, u64)> = state
                .files
                .iter()
                .filter(|(_, f)| f.synced < f.written)
                .map(|(id, f)| (*id, f.file.clone(), f.written))
                .collect();
            (todo, std::mem::take(&mut state.dir_dirty))
        };
        // (A failure leaves dir_dirty cleared, but it is final: nothing is synced again.)
        for (id, file, _) in &todo {
            let path = self.path(*id);
            self.syncer
                .sync_data(file, &path)
                .map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))?;
        }
        if dir_dirty {
            self.syncer
                .sync_dir(&self.dir)
                .map_err(|e| format!("fsync of directory {} failed: {e}", self.dir.display()))?;
        }
        let done: Vec<(u64, u64)> = {
            let mut state = self.lock();
            todo.into_iter()
                .filter_map(|(id, _, len)| {
                    let f = state.files.get_mut(&id)?;
                    f.synced = f.synced.max(len);
                    Some((id, f.synced))
                })
                .collect()
        };
        // Recorded in sled after the sync: a record that is durable is true.
        for &(id, len) in &done {
            self.synced
                .insert(id.to_be_bytes(), &len.to_be_bytes())
                .map_err(|e| format!("cannot record payload file {id:x} durable: {e}"))?;
        }
        Ok(done)
    }

    /// Makes every byte written so far durable (and records it), before an append inserts
    /// pointers that carry ledger records (see the module docs), and for the periodic sync.
    pub fn sync_now(&self) -> Result<(), String> {
        let _g = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sync_files().map(|_| ())
    }
}

impl Payloads {
    /// The first failed `fdatasync`, if any (final until reopened).
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Whether bytes were written that no `fdatasync` covers yet.
    pub fn has_unsynced(&self) -> bool {
        self.lock().files.values().any(|f| f.synced < f.written)
    }

    /// A file whose live entries should move to the active file, so that a few entries the
    /// flusher cannot remove yet do not keep whole files on disk: only once the files hold
    /// more than twice the live bytes plus two files' worth ([`PAYLOAD_FILE_BYTES`]), which a
    /// flusher draining in order never reaches (its garbage is the file it is draining), and
    /// then the one with the smallest share live, if under half, not handed out before. So the
    /// files hold at most about twice the live bytes plus two files (plus the files waiting
    /// for the next commit to be deleted).
    pub fn sparse_file(&self) -> Option<u64> {
        let mut state = self.lock();
        let active = state.active;
        let (mut disk, mut live) = (0u64, 0u64);
        for f in state.files.values() {
            disk += f.written;
            live += f.live_bytes;
        }
        if disk <= 2 * live + 2 * PAYLOAD_FILE_BYTES {
            return None;
        }
        let (id, f) = state
            .files
            .iter_mut()
            .filter(|(id, f)| {
                Some(**id) != active && !f.relocated && f.live > 0 && f.live_bytes * 2 < f.written
            })
            // The smallest live share: live_bytes / written, compared without division.
            .min_by(|(_, a), (_, b)| {
                (u128::from(a.live_bytes) * u128::from(b.written))
                    .cmp(&(u128::from(b.live_bytes) * u128::from(a.written)))
            })?;
        f.relocated = true;
        let id = *id;
        state.relocations += 1;
        Some(id)
    }

    /// Files whose entries were moved so far.
    #[cfg(test)]
    pub fn relocations(&self) -> u64 {
        self.lock().relocations
    }
}

fn past_end(p: Pointer, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "entry of {} bytes at offset {} is past the end of payload file {} ({len} bytes)",
            p.len,
            p.offset,
            file_name(p.file)
        ),
    )
}

impl CommitHook for Payloads {
    fn before(&self) -> Result<u64, String> {
        let _g = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sync_files()?;
        let mut state = self.lock();
        state.commits += 1;
        let token = state.commits;
        // A drained active file is retired here, so an idle buffer keeps no payload file.
        if let Some(id) = state.active {
            if state
                .files
                .get(&id)
                .is_some_and(|f| f.live == 0 && f.written > 0)
            {
                self.retire_active(&mut state);
            }
        }
        let emptied = std::mem::take(&mut state.emptied);
        state
            .doomed
            .extend(emptied.into_iter().map(|id| (id, token)));
        Ok(token)
    }

    fn after(&self, token: u64) {
        let doomed: Vec<u64> = {
            let mut state = self.lock();
            let (now, later): (Vec<_>, Vec<_>) =
                state.doomed.iter().partition(|(_, t)| *t <= token);
            state.doomed = later;
            // A doomed file is never active again, so no entry lands in it any more.
            now.into_iter().map(|(id, _)| id).collect()
        };
        for id in doomed {
            let path = self.path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Kept in the map: the next open deletes it.
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot delete payload file");
                    continue;
                }
            }
            self.lock().files.remove(&id);
            let _ = self.synced.remove(id.to_be_bytes());
        }
    }
}

/// Whether a pointer's bytes were recorded durable by a commit (see the module docs).
pub(crate) fn recorded_durable(recorded: &HashMap<u64, u64>, p: &Pointer) -> bool {
    recorded.get(&p.file).is_some_and(|&len| p.end() <= len)
}

/// Reads an entry's bytes straight from its file, before [`Payloads::open`].
pub(crate) fn read_at_open(buffer_dir: &Path, p: &Pointer) -> io::Result<Vec<u8>> {
    let file = File::open(buffer_dir.join(DIR).join(file_name(p.file)))?;
    let len = file.metadata()?.len();
    if p.end() > len {
        return Err(past_end(*p, len));
    }
    let mut buf = vec![0u8; p.len as usize];
    file.read_exact_at(&mut buf, p.offset)?;
    Ok(buf)
}
