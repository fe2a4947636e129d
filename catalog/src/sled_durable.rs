//! Durable commits of a sled 0.34 database, shared by the agent's buffer and the embedded
//! segment index: what a caller is told is written must survive a power cut, not only a crash
//! of the process.
//!
//! What sled 0.34 writes, and does not make durable (measured with strace, and read in sled's
//! `pagecache/iobuf.rs`, `logger.rs`, `flusher.rs` and `blob_io.rs`):
//! - its log, in the data file `db`, with `pwrite` and `sync_file_range`: not a durable commit
//!   on Linux (no metadata, no device cache flush). sled fsyncs `db` only from a background
//!   thread, every 500 ms.
//! - every log message over a quarter of the segment size as a file of its own under `blobs/`,
//!   named by its log sequence number, written once and never fsynced. Such a message is a
//!   large value, but also a whole leaf node: sled rewrites a page whole after about ten
//!   updates, and a leaf holds up to 16 entries, so a few entries of a few hundred KiB spill
//!   although each is far below the threshold. sled writes a blob before the log message that
//!   points to it.
//!
//! So a durable commit is, in this order:
//! 1. `Db::flush()`: the log up to now is written, and so is every blob it points to;
//! 2. `fdatasync` of every blob file not synced before at its current size (remembering the
//!    name and size of what was synced: sled writes a blob once, front to back, and never
//!    rewrites it, so a blob caught while sled was still writing it has grown by the commit
//!    that covers it), then `fsync` of `blobs/` if a name was new;
//! 3. `fdatasync` of `db`, through a descriptor opened with the database, so that a writeback
//!    error on it is reported here.
//!
//! An owner keeping files of its own beside the database (the agent's buffer keeps its entries'
//! bytes in payload files) joins a [`CommitHook`]: it runs first in every commit, so those files
//! are durable before the log that points into them, and is told when the commit succeeded.
//!
//! Opening makes one such commit, which also covers blobs left by an earlier run, and fsyncs
//! `conf` and the directories (`blobs/`, the database's, its parent), so that the names are
//! durable too. Concurrent [`DurableSled::sync_through`] calls are grouped: one caller (the
//! leader) commits everything written so far while the others wait for it (group commit).
//!
//! Atomicity is sled's: a `Batch` or a multi-tree transaction is logged as one unit, and
//! recovery stops before a batch whose end did not reach the disk, so a commit covers each
//! such change whole or not at all.
//!
//! A failed commit is final ("fsyncgate"): Linux reports a writeback error once and may have
//! dropped the dirty pages, so a retry that succeeds proves nothing. The leader and every
//! caller waiting on its commit fail, and from then on every commit fails with
//! [`DurableError::Failed`], which names the failed call, until the database is reopened (the
//! process restarted), which recovers what is really on disk. Callers refuse writes too
//! ([`DurableSled::check_usable`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tracing::{debug, error};

/// How files are made durable: the operating system's `fdatasync`/`fsync`, or in tests a
/// double that records the files or fails on demand (fault injection).
pub trait FileSync: Send + Sync + 'static {
    /// `fdatasync` of an open file; `path` names it.
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// `fsync` of a directory, so the entries created in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Work the database's owner joins to every durable commit after the database is open
/// ([`DurableSled::set_hook`]): the agent's buffer keeps its entries' bytes in files of its
/// own, and those must be durable before the sled log that points into them is.
pub trait CommitHook: Send + Sync + 'static {
    /// Runs first in each commit, before sled's log is written. An error fails the commit
    /// (for good, as any failed commit). The result is handed to [`CommitHook::after`].
    fn before(&self) -> Result<u64, String>;
    /// Runs after a commit whose [`CommitHook::before`] returned `token` succeeded. Commits
    /// may run concurrently: everything written to sled before that `before` is durable.
    fn after(&self, token: u64);
}

/// The real [`FileSync`].
pub struct OsSync;

impl FileSync for OsSync {
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Errors of durable commits.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// A durable commit failed: nothing written since the last good commit may be
    /// acknowledged, now or later, until the database is reopened. The message names the
    /// failed call.
    #[error("{0}")]
    Failed(String),
    /// Opening the database, or its first commit, failed.
    #[error("{0}")]
    Open(String),
    /// A thread panicked while holding the group-commit state.
    #[error("sled commit state poisoned by a panic")]
    Poisoned,
}

#[derive(Default)]
struct GroupState {
    /// Every write whose position is below this is durable.
    synced_below: u64,
    /// A leader is committing.
    in_progress: bool,
}

/// A sled database and the means to commit it durably (see the module docs).
pub struct DurableSled {
    db: sled::Db,
    path: PathBuf,
    data_file: File,
    syncer: Arc<dyn FileSync>,
    /// The blob files fsynced so far (those that still exist), with the size each had when it
    /// was: a blob that sled was still writing then has grown since, and is synced again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// The first failed commit: set once, never cleared.
    failure: OnceLock<String>,
    group: Mutex<GroupState>,
    group_done: Condvar,
    hook: OnceLock<Arc<dyn CommitHook>>,
}

impl DurableSled {
    /// Opens (or creates) the database `config` describes in the directory `path`, waiting
    /// for its lock ([`crate::open_sled`]), and makes what an earlier run left durable.
    pub fn open(
        path: &Path,
        config: sled::Config,
        syncer: Arc<dyn FileSync>,
    ) -> Result<DurableSled, DurableError> {
        let open_failed = |e: &dyn std::fmt::Display| {
            DurableError::Open(format!("cannot open {}: {e}", path.display()))
        };
        std::fs::create_dir_all(path).map_err(|e| open_failed(&e))?;
        let db = crate::open_sled(&config.path(path)).map_err(|e| open_failed(&e))?;
        let data_file = File::open(path.join("db")).map_err(|e| open_failed(&e))?;
        let durable = DurableSled {
            db,
            path: path.to_path_buf(),
            data_file,
            syncer,
            synced_blobs: Mutex::new(HashMap::new()),
            failure: OnceLock::new(),
            group: Mutex::new(GroupState::default()),
            group_done: Condvar::new(),
            hook: OnceLock::new(),
        };
        durable.sync_at_open()?;
        Ok(durable)
    }

    /// The database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Joins `hook` to every later commit (once; a second hook is refused).
    pub fn set_hook(&self, hook: Arc<dyn CommitHook>) -> Result<(), DurableError> {
        self.hook
            .set(hook)
            .map_err(|_| DurableError::Open("a commit hook is already set".into()))
    }

    /// How this database's files are made durable (for files its owner keeps beside it).
    pub fn syncer(&self) -> Arc<dyn FileSync> {
        self.syncer.clone()
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the group-commit positions at `position`: writes below it are durable (those
    /// an earlier run left, made durable at open).
    pub fn set_synced_below(&self, position: u64) {
        let mut g = self.group.lock().unwrap_or_else(|p| p.into_inner());
        g.synced_below = g.synced_below.max(position);
    }

    /// The first failed commit, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Fails once a commit has failed (see the module docs).
    pub fn check_usable(&self) -> Result<(), DurableError> {
        match self.failure.get() {
            Some(reason) => Err(DurableError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// A durable commit of everything written so far; a failure is final.
    pub fn commit(&self) -> Result<(), DurableError> {
        self.check_usable()?;
        let hook = self.hook.get();
        let committed = match hook.map(|h| h.before()).transpose() {
            Ok(token) => self.commit_once().map(|()| token),
            Err(reason) => Err(reason),
        };
        match committed {
            Ok(token) => {
                if let (Some(hook), Some(token)) = (hook, token) {
                    hook.after(token);
                }
                Ok(())
            }
            Err(reason) => {
                if self.failure.set(reason.clone()).is_ok() {
                    error!(path = %self.path.display(), %reason,
                        "sled commit failed: nothing more is acknowledged until it is reopened");
                }
                Err(DurableError::Failed(
                    self.failure.get().cloned().unwrap_or(reason),
                ))
            }
        }
    }

    /// Makes every write below `target_below` durable, grouping concurrent callers: if no
    /// commit is running, this caller leads one that covers every write below `covering()`
    /// (read just before it starts); otherwise it waits for the running one and checks again.
    /// Positions are the caller's own (the buffer's sequence numbers, the index's count of
    /// changes); `covering()` must not count a write before it is in sled.
    pub fn sync_through(
        &self,
        target_below: u64,
        covering: impl FnOnce() -> u64,
    ) -> Result<(), DurableError> {
        let mut state = self.group.lock().map_err(|_| DurableError::Poisoned)?;
        loop {
            // A failed commit fails every caller waiting on it: none of them may take over
            // and acknowledge after a retry.
            self.check_usable()?;
            if state.synced_below >= target_below {
                return Ok(());
            }
            if !state.in_progress {
                break;
            }
            state = self
                .group_done
                .wait(state)
                .map_err(|_| DurableError::Poisoned)?;
        }
        // Leader: cover everything written so far, for every waiter at once.
        state.in_progress = true;
        drop(state);
        let covering = covering();
        let result = self.commit();
        let mut state = self.group.lock().map_err(|_| DurableError::Poisoned)?;
        state.in_progress = false;
        if result.is_ok() {
            state.synced_below = state.synced_below.max(covering);
        }
        self.group_done.notify_all();
        result
    }

    /// Makes what an earlier run left durable (it may have been killed before fsyncing, and
    /// sled fsyncs no blob), and the names of sled's files.
    fn sync_at_open(&self) -> Result<(), DurableError> {
        self.commit_once().map_err(DurableError::Open)?;
        let conf = self.path.join("conf");
        if let Ok(f) = File::open(&conf) {
            self.syncer.sync_data(&f, &conf).map_err(|e| {
                DurableError::Open(format!("fdatasync of {} failed: {e}", conf.display()))
            })?;
        }
        let blobs = self.path.join("blobs");
        let parent = self.path.parent().filter(|p| !p.as_os_str().is_empty());
        for dir in [Some(blobs.as_path()), Some(self.path.as_path()), parent]
            .into_iter()
            .flatten()
        {
            if dir.is_dir() {
                self.syncer.sync_dir(dir).map_err(|e| {
                    DurableError::Open(format!("fsync of directory {} failed: {e}", dir.display()))
                })?;
            }
        }
        Ok(())
    }

    /// `flush()`, the new blob files and their directory, then the data file (in this order:
    /// see the module docs). The error names the call that failed.
    fn commit_once(&self) -> Result<(), String> {
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
            debug!(blobs = synced_now, path = %self.path.display(), "fsynced sled blob files");
        }
        *synced = present;
        Ok(())
    }
}
