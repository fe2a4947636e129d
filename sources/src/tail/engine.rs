//! The tailing engine shared by the file sources: finds files, follows them through rotation
//! and truncation, reads new lines fairly across files, and commits each batch of records
//! together with the read positions it advances (one atomic buffer write, one fsync).
//!
//! A round ([`TailEngine::round`]) runs on a blocking thread: rescan the include patterns
//! when due, read up to `max_read_bytes` from each file that grew (in turn, starting after the
//! file where the last round stopped), write a batch whenever `max_batch_bytes` of records
//! are staged, and close the rotated files that are read to their end. Nothing advances
//! unless its batch was written: a refused write (full buffer, busy transform) leaves every
//! position where it was, and the next round reads the same lines again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::logrows::{LogFields, LogsBuilder};
use weir_pipelines::metrics::TailHandles;
use weir_pipelines::{Batch, Signal};

use super::files::{
    find_by_inode, fingerprint, fixed_prefix, is_compressed, last_byte, lossy_path, read_full,
};
use super::lines::{Assembler, Format, Framer, Record, Stream};
use super::settings::{StartAt, TailSettings};
use crate::now_nanos;

/// Bytes at the start of a file that identify it together with its device and inode.
const FINGERPRINT_BYTES: u64 = 256;

/// What a source says about one file: whether to read it and what its records carry.
pub trait Describe: Send + 'static {
    /// The file's metadata, or `None` to leave it unread (an excluded pod).
    fn describe(&self, path: &Path) -> Option<FileMeta>;
}

/// Attributes every record of a file carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileMeta {
    /// Resource attributes (`k8s.pod.name`, ...).
    pub resource: Vec<(String, String)>,
    /// Record attributes besides `log.file.path` and `log.iostream`, which the engine adds.
    pub attributes: Vec<(String, String)>,
    /// `service.name`.
    pub service_name: Option<String>,
}

/// A file's identity: device and inode (checked against a fingerprint of its first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    dev: u64,
    ino: u64,
}

impl FileKey {
    pub(super) fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// A read position, as committed: where to resume and in which skip state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The file's path when it was last read (stored as UTF-8, lossily: it is only where
    /// to look for the file after a restart).
    #[serde(with = "lossy_path")]
    path: PathBuf,
    offset: u64,
    /// Discarding the rest of a cut line.
    skip_line: bool,
    /// Discarding the rest of a cut record.
    skip_record: bool,
    /// The stream whose pieces are discarded (`stdout`, `stderr`), when not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skip_stream: Option<String>,
    /// The file is in docker's json-file format (detected from its first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docker: Option<bool>,
    /// CRC32C of the first `fp_len` bytes.
    fp_crc: u32,
    fp_len: u64,
}

struct Tracked {
    pos: Position,
    file: Option<File>,
    /// Size at the last look.
    size: u64,
    last_growth: Instant,
    /// Renamed away or deleted (no longer at a path the patterns match) since then.
    rotated: Option<Instant>,
    meta: Arc<FileMeta>,
    /// An unfinished record has waited at the end of the file since then.
    pending_since: Option<Instant>,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Some file has more to read than its share of this round: go again without waiting.
    pub more: bool,
    /// Records written.
    pub records: u64,
}

/// Records read but not written yet, and the positions they advance.
struct Staged {
    rows: LogsBuilder,
    bytes: usize,
    lines_bytes: u64,
    positions: Vec<(FileKey, Position, u64)>,
    finished: Vec<FileKey>,
}

/// The engine of one file source.
pub struct TailEngine {
    pub(super) source: &'static str,
    tenant: String,
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    format: Format,
    pub(super) s: TailSettings,
    describe: Box<dyn Describe>,
    ingest: Ingest,
    metrics: TailHandles,
    files: BTreeMap<FileKey, Tracked>,
    /// Every checkpoint in the buffer's ledger (loaded at the first round, then kept current).
    checkpoints: HashMap<FileKey, Position>,
    /// Checkpoints of files not seen since then.
    gone_since: HashMap<FileKey, Instant>,
    loaded: bool,
    /// No checkpoint at all when loaded: a first start (where `start_at = "end"` applies).
    fresh: bool,
    /// Files the source excludes now (kept from checkpoint expiry: they still exist).
    excluded: HashSet<FileKey>,
    /// Files present at the first scan that the source held back then.
    held_at_start: HashSet<FileKey>,
    last_rescan: Option<Instant>,
    /// A watched directory changed: rescan at the next round.
    pub(super) rescan_due: bool,
    open_files: usize,
    cursor: Option<FileKey>,
    buf: Vec<u8>,
    staged: Staged,
}

impl TailEngine {
    /// An engine for `source`, reading the files `include` matches (minus `exclude`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: &'static str,
        tenant: String,
        include: Vec<String>,
        exclude: Vec<glob::Pattern>,
        format: Format,
        settings: TailSettings,
        describe: Box<dyn Describe>,
        ingest: Ingest,
    ) -> TailEngine {
        let metrics = ingest.metrics().tail.source(source);
        let chunk = settings
            .max_read_bytes
            .0
            .max(settings.max_line_bytes.0 + 1)
            .min(64 << 20) as usize;
        TailEngine {
            source,
            tenant,
            include,
            exclude,
            format,
            s: settings,
            describe,
            ingest,
            metrics,
            files: BTreeMap::new(),
            checkpoints: HashMap::new(),
            gone_since: HashMap::new(),
            loaded: false,
            fresh: false,
            excluded: HashSet::new(),
            held_at_start: HashSet::new(),
            last_rescan: None,
            rescan_due: false,
            open_files: 0,
            cursor: None,
            buf: vec![0; chunk],
            staged: Staged {
                rows: LogsBuilder::default(),
                bytes: 0,
                lines_bytes: 0,
                positions: Vec::new(),
                finished: Vec::new(),
            },
        }
    }

    fn checkpoint_id(&self, key: FileKey) -> Vec<u8> {
        format!("{}/{}:{}", self.source, key.dev, key.ino).into_bytes()
    }

    fn parse_id(&self, id: &[u8]) -> Option<FileKey> {
        let s = std::str::from_utf8(id).ok()?;
        let (dev, ino) = s
            .strip_prefix(self.source)?
            .strip_prefix('/')?
            .split_once(':')?;
        Some(FileKey {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
        })
    }

    /// One round (blocking). An error is a refused write: nothing advanced, retry later.
    pub fn round(&mut self) -> Result<RoundOutcome, IngestError> {
        if !self.loaded {
            self.load_checkpoints();
        }
        let now = Instant::now();
        let first = self.last_rescan.is_none();
        if !self.loaded {
            return Ok(RoundOutcome::default());
        }
        if self.rescan_due
            || self
                .last_rescan
                .is_none_or(|t| now.duration_since(t) >= self.s.rescan_interval.0)
        {
            self.rescan(first);
            self.last_rescan = Some(now);
            self.rescan_due = false;
        }
        let mut outcome = RoundOutcome::default();
        // Fair turns: start after the file where the last round stopped.
        let keys: Vec<FileKey> = match self.cursor {
            Some(c) => self
                .files
                .range((Bound::Excluded(c), Bound::Unbounded))
                .chain(self.files.range(..=c))
                .map(|(k, _)| *k)
                .collect(),
            None => self.files.keys().copied().collect(),
        };
        let result = (|| {
            for key in keys {
                if self.read_file(key) {
                    outcome.more = true;
                }
                self.cursor = Some(key);
                if self.staged.bytes >= self.s.max_batch_bytes.0 as usize {
                    outcome.records += self.commit()?;
                }
            }
            outcome.records += self.commit()?;
            Ok(outcome)
        })();
        // Also while writes are refused: the lag is what an operator looks at then.
        self.update_gauges();
        result
    }

    fn load_checkpoints(&mut self) {
        match self
            .ingest
            .checkpoints(format!("{}/", self.source).as_bytes())
        {
            Ok(list) => {
                for (id, value) in list {
                    match (
                        self.parse_id(&id),
                        serde_json::from_slice::<Position>(&value),
                    ) {
                        (Some(key), Ok(pos)) => {
                            self.checkpoints.insert(key, pos);
                        }
                        _ => warn!(
                            source = self.source,
                            id = %String::from_utf8_lossy(&id),
                            "unreadable checkpoint ignored"
                        ),
                    }
                }
                info!(
                    source = self.source,
                    checkpoints = self.checkpoints.len(),
                    "file checkpoints loaded"
                );
                self.loaded = true;
                self.fresh = self.checkpoints.is_empty();
            }
            Err(e) => {
                warn!(source = self.source, error = %e, "cannot read file checkpoints; retrying")
            }
        }
    }

    /// Expands the patterns: new files are tracked, files no longer at a matched path are
    /// marked rotated, checkpoints of files gone for `checkpoint_grace` are removed.
    fn rescan(&mut self, first: bool) {
        if !self.loaded {
            return;
        }
        let now = Instant::now();
        let mut seen: BTreeMap<FileKey, PathBuf> = BTreeMap::new();
        for pattern in &self.include {
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    warn!(source = self.source, pattern, error = %e, "bad include pattern");
                    continue;
                }
            };
            for path in paths.flatten() {
                if is_compressed(&path) || self.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                let Ok(m) = std::fs::metadata(&path) else {
                    continue;
                };
                if m.is_file() {
                    seen.entry(FileKey::of(&m)).or_insert(path);
                }
            }
        }
        let mut dropped = Vec::new();
        self.excluded.clear();
        for (key, path) in &seen {
            if let Some(t) = self.files.get_mut(key) {
                t.pos.path.clone_from(path);
                t.rotated = None;
                // What a source knows of a file can change (a pod's labels arrive from the
                // API): new metadata applies from now on, and an excluded file stops being
                // read (its checkpoint stays, so reading resumes there if it is included again).
                match self.describe.describe(path) {
                    Some(meta) if *t.meta != meta => t.meta = Arc::new(meta),
                    Some(_) => {}
                    None => {
                        dropped.push(*key);
                        self.excluded.insert(*key);
                    }
                }
                continue;
            }
            let Some(meta) = self.describe.describe(path) else {
                self.excluded.insert(*key);
                if first {
                    self.held_at_start.insert(*key);
                }
                continue;
            };
            // A file held back at the first scan (a pod the API did not know yet) was there
            // at the start: `start_at` applies to it as to the others.
            let at_start = first || self.held_at_start.remove(key);
            self.track(*key, path.clone(), meta, at_start, false);
        }
        for key in dropped {
            if let Some(t) = self.files.remove(&key) {
                if t.file.is_some() {
                    self.open_files -= 1;
                }
                info!(source = self.source, path = %t.pos.path.display(), "file excluded: no longer read");
            }
        }
        // Files no longer at a matched path: renamed (rotation) or deleted.
        let mut lost = Vec::new();
        for (key, t) in self.files.iter_mut() {
            if seen.contains_key(key) || t.rotated.is_some() {
                continue;
            }
            t.rotated = Some(now);
            self.metrics.rotations.inc();
            if t.file.is_none() {
                match find_by_inode(&t.pos.path, *key) {
                    Some(p) => t.pos.path = p,
                    None => lost.push(*key),
                }
            }
            debug!(source = self.source, path = %t.pos.path.display(), "file rotated away");
        }
        for key in lost {
            if let Some(t) = self.files.remove(&key) {
                warn!(
                    source = self.source,
                    path = %t.pos.path.display(),
                    unread = t.size.saturating_sub(t.pos.offset),
                    "file removed before it was read to its end and no handle was open (max_open_files reached)"
                );
            }
        }
        if first {
            // Files that were being read when the agent stopped and have been rotated away
            // since: find them beside their old path and read them to their end.
            let orphans: Vec<(FileKey, Position)> = self
                .checkpoints
                .iter()
                .filter(|(k, _)| !self.files.contains_key(k))
                .map(|(k, p)| (*k, p.clone()))
                .collect();
            for (key, pos) in orphans {
                if let Some(path) = find_by_inode(&pos.path, key) {
                    if let Some(meta) = self.describe.describe(&pos.path) {
                        self.track(key, path, meta, false, true);
                    }
                }
            }
        }
        // Checkpoints of files gone for longer than the grace period.
        let mut expired = Vec::new();
        for key in self.checkpoints.keys() {
            if self.files.contains_key(key) || self.excluded.contains(key) {
                self.gone_since.remove(key);
                continue;
            }
            let since = *self.gone_since.entry(*key).or_insert(now);
            if now.duration_since(since) >= self.s.checkpoint_grace.0 {
                expired.push(*key);
            }
        }
        if !expired.is_empty() {
            let ids: Vec<Vec<u8>> = expired.iter().map(|k| self.checkpoint_id(*k)).collect();
            match self.ingest.remove_checkpoints(&ids) {
                Ok(()) => {
                    for k in expired {
                        self.checkpoints.remove(&k);
                        self.gone_since.remove(&k);
                    }
                }
                Err(e) => warn!(source = self.source, error = %e, "cannot remove old checkpoints"),
            }
        }
    }

    /// Starts following a file: from its checkpoint if it has one (and its first bytes are
    /// still the same), else from where `start_at` and `ignore_older` say.
    fn track(&mut self, key: FileKey, path: PathBuf, meta: FileMeta, first: bool, rotated: bool) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                debug!(source = self.source, path = %path.display(), error = %e, "cannot open");
                return;
            }
        };
        let Ok(m) = file.metadata() else { return };
        if FileKey::of(&m) != key {
            return; // replaced between the listing and the open: the next scan sees it
        }
        let size = m.len();
        let resumed = self.checkpoints.get(&key).and_then(|ck| {
            let same = ck.offset <= size && fingerprint(&file, ck.fp_len) == Some(ck.fp_crc);
            same.then(|| ck.clone())
        });
        let pos = match resumed {
            Some(mut pos) => {
                pos.path = path;
                pos
            }
            None => {
                let old = m
                    .modified()
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                let skip_old = self
                    .s
                    .ignore_older
                    .is_some_and(|limit| old.is_some_and(|o| o > limit.0));
                // A file with a checkpoint that no longer matches is a new file: read it all.
                let known = self.checkpoints.contains_key(&key);
                let from_end = !known
                    && ((first && self.fresh && self.s.start_at == StartAt::End) || skip_old);
                let offset = if from_end { size } else { 0 };
                // Starting at the end of an unfinished line: skip the rest of it.
                let skip_line = offset > 0 && last_byte(&file, offset) != Some(b'\n');
                let fp_len = FINGERPRINT_BYTES.min(size);
                Position {
                    path,
                    offset,
                    skip_line,
                    skip_record: false,
                    skip_stream: None,
                    docker: None,
                    fp_crc: fingerprint(&file, fp_len).unwrap_or(0),
                    fp_len,
                }
            }
        };
        let keep_open = self.open_files < self.s.max_open_files;
        if keep_open {
            self.open_files += 1;
        }
        let now = Instant::now();
        self.files.insert(
            key,
            Tracked {
                pos,
                file: keep_open.then_some(file),
                size,
                last_growth: now,
                rotated: rotated.then_some(now),
                meta: Arc::new(meta),
                pending_since: None,
            },
        );
    }

    /// Reads one file's share. Returns whether it has more to read than its share.
    fn read_file(&mut self, key: FileKey) -> bool {
        let now = Instant::now();
        let Some(t) = self.files.get_mut(&key) else {
            return false;
        };
        // The file to read: the open handle, or the path (if it is still this file).
        let opened;
        let file = match &t.file {
            Some(f) => f,
            None => match File::open(&t.pos.path) {
                Ok(f) if f.metadata().is_ok_and(|m| FileKey::of(&m) == key) => {
                    opened = f;
                    &opened
                }
                _ => return false, // gone or replaced: the next rescan decides
            },
        };
        let Ok(m) = file.metadata() else { return false };
        let size = m.len();
        let mut pos = t.pos.clone();
        if size != t.size {
            if size > t.size {
                t.last_growth = now;
            }
            t.pending_since = None;
        }
        // Truncated (copytruncate), or rewritten from the start: read it again from 0.
        let replaced = size < pos.offset
            || (size != t.size
                && pos.fp_len > 0
                && fingerprint(file, pos.fp_len) != Some(pos.fp_crc));
        if replaced {
            self.metrics.truncations.inc();
            info!(source = self.source, path = %pos.path.display(), size, offset = pos.offset, "file truncated or replaced: reading it from the start");
            pos.offset = 0;
            pos.skip_line = false;
            pos.skip_record = false;
            pos.skip_stream = None;
            pos.docker = None;
            pos.fp_len = 0;
            pos.fp_crc = crc32c::crc32c(&[]);
        } else {
            // When replaced, the size is taken in only with the new position (a refused
            // write must see the file as replaced again).
            t.size = size;
        }
        if pos.fp_len < FINGERPRINT_BYTES && size > pos.fp_len {
            pos.fp_len = FINGERPRINT_BYTES.min(size);
            pos.fp_crc = fingerprint(file, pos.fp_len).unwrap_or(0);
        }
        let rotated_done = t
            .rotated
            .is_some_and(|r| now.duration_since(r.max(t.last_growth)) >= self.s.rotate_wait.0);
        let timed_out = t
            .pending_since
            .is_some_and(|p| now.duration_since(p) >= self.s.merge_timeout.0);
        if pos.offset >= size && !rotated_done && !replaced {
            return false;
        }
        let mut framer = Framer::new(self.s.max_line_bytes.0 as usize, pos.skip_line);
        let mut asm = Assembler::new(
            self.format.clone(),
            self.s.max_line_bytes.0 as usize,
            pos.skip_record,
            pos.skip_stream.as_deref().and_then(Stream::parse),
        )
        .with_detected(pos.docker);
        let budget = self.s.max_read_bytes.0;
        let start = pos.offset;
        let mut at = pos.offset;
        let mut records: Vec<Record> = Vec::new();
        let mut more = false;
        let mut failed = false;
        let mut whole_line = false;
        while at < size {
            let read_so_far = at - start;
            if read_so_far >= budget * 4 && asm.has_pending() {
                // A record whose pieces span more than a reader may hold back (it would be
                // read again from its start every round): emit it cut, skip its rest.
                asm.cut_pending(&mut |r| records.push(r));
            }
            if read_so_far >= budget && !asm.has_pending() {
                more = true;
                break;
            }
            // This file's share of the round, but a whole line at least (when the share
            // holds no complete line, read again with the whole buffer).
            let share = if whole_line {
                self.buf.len() as u64
            } else {
                budget.saturating_sub(read_so_far).max(8 << 10)
            };
            let want = (size - at).min(self.buf.len() as u64).min(share) as usize;
            let n = match read_full(file, &mut self.buf[..want], at) {
                Ok(n) => n,
                Err(e) => {
                    warn!(source = self.source, path = %pos.path.display(), error = %e, "read failed");
                    failed = true;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let final_read = rotated_done && at + n as u64 >= size;
            let used = framer.frame(&self.buf[..n], at, final_read, |line| {
                asm.feed(&line, &mut |r| records.push(r));
            });
            at += used as u64;
            if used == 0 {
                if !whole_line && at + (n as u64) < size {
                    whole_line = true;
                    continue;
                }
                break; // an unterminated line at the end: wait for its newline
            }
            whole_line = false;
        }
        if failed && records.is_empty() {
            return false;
        }
        let at_end = at >= size;
        if asm.has_pending() && at_end {
            if rotated_done || timed_out {
                asm.flush(&mut |r| records.push(r));
                t.pending_since = None;
            } else if t.pending_since.is_none() {
                t.pending_since = Some(now);
            }
        }
        let new = if asm.has_pending() {
            Position {
                offset: asm.safe_offset(at),
                skip_line: false,
                skip_record: false,
                ..pos.clone()
            }
        } else {
            Position {
                offset: at,
                skip_line: framer.skipping,
                skip_record: asm.skipping,
                skip_stream: asm.skip_stream.map(|s| s.as_str().to_string()),
                ..pos.clone()
            }
        };
        let new = Position {
            docker: asm.detected_docker().or(new.docker),
            ..new
        };
        let meta = t.meta.clone();
        let finished = rotated_done && new.offset >= size && !more;
        let path = new.path.to_string_lossy().into_owned();
        let staged = &mut self.staged;
        let observed = now_nanos();
        for r in &records {
            append_record(&mut staged.rows, r, &meta, &path, observed, self.source);
            staged.bytes += r.body.len() + 128;
        }
        staged.lines_bytes += new.offset.saturating_sub(start);
        if new != t.pos || replaced {
            staged.positions.push((key, new, size));
        }
        if finished {
            staged.finished.push(key);
        }
        more
    }

    /// Writes the staged records with their positions. Returns the records written.
    fn commit(&mut self) -> Result<u64, IngestError> {
        let staged = &mut self.staged;
        if staged.positions.is_empty() && staged.finished.is_empty() && staged.rows.is_empty() {
            return Ok(0);
        }
        let rows = staged.rows.len() as u64;
        let records = staged.rows.finish();
        let positions = std::mem::take(&mut staged.positions);
        let finished = std::mem::take(&mut staged.finished);
        let lines_bytes = std::mem::take(&mut staged.lines_bytes);
        staged.bytes = 0;
        let records = records.map_err(|e| IngestError::Partition(e.to_string()))?;
        let checkpoints: Vec<(Vec<u8>, Vec<u8>)> = positions
            .iter()
            .map(|(k, p, _)| {
                let value = serde_json::to_vec(p).map_err(|e| {
                    IngestError::Partition(format!("cannot encode a checkpoint: {e}"))
                })?;
                Ok((self.checkpoint_id(*k), value))
            })
            .collect::<Result<_, IngestError>>()?;
        let batch = Batch::new(
            self.tenant.clone(),
            Signal::Logs,
            self.source,
            now_nanos(),
            records,
        );
        if let Err(e) =
            self.ingest
                .write_with_checkpoints(batch, lines_bytes as usize, &checkpoints)
        {
            self.metrics.paused.set(1);
            return Err(e);
        }
        self.metrics.paused.set(0);
        self.metrics.lines.inc_by(rows);
        self.metrics.bytes.inc_by(lines_bytes);
        for (key, pos, size) in positions {
            self.checkpoints.insert(key, pos.clone());
            if let Some(t) = self.files.get_mut(&key) {
                t.pos = pos;
                t.size = size;
            }
        }
        for key in finished {
            if let Some(t) = self.files.remove(&key) {
                if t.file.is_some() {
                    self.open_files -= 1;
                }
                debug!(source = self.source, path = %t.pos.path.display(), "rotated file read to its end and closed");
            }
        }
        Ok(rows)
    }

    fn update_gauges(&self) {
        self.metrics.files.set(self.files.len() as i64);
        let lag: u64 = self
            .files
            .values()
            .map(|t| t.size.saturating_sub(t.pos.offset))
            .sum();
        self.metrics.lag_bytes.set(lag as i64);
    }

    /// Files followed now.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// The directories worth watching: each followed file's, and each include pattern's
    /// fixed prefix (where new files and directories appear), up to `max_open_files`.
    pub(super) fn watch_dirs(&self) -> HashSet<PathBuf> {
        let mut dirs: HashSet<PathBuf> = self
            .include
            .iter()
            .filter_map(|p| fixed_prefix(p))
            .collect();
        for t in self.files.values() {
            if dirs.len() >= self.s.max_open_files {
                break;
            }
            if let Some(d) = t.pos.path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        dirs
    }
}

fn append_record(
    rows: &mut LogsBuilder,
    r: &Record,
    meta: &FileMeta,
    path: &str,
    observed: i64,
    scope: &str,
) {
    let fields = LogFields {
        timestamp: r.time.unwrap_or(observed),
        observed,
        body: Some(&r.body),
        service_name: meta.service_name.as_deref(),
        scope_name: Some(scope),
        ..Default::default()
    };
    rows.append(
        &fields,
        None,
        0,
        |res| {
            for (k, v) in &meta.resource {
                res.entry(k, Some(v));
            }
        },
        |a| {
            a.entry("log.file.path", Some(path));
            if let Some(s) = r.stream {
                a.entry("log.iostream", Some(s.as_str()));
            }
            for (k, v) in &meta.attributes {
                a.entry(k, Some(v));
            }
            if r.truncated {
                a.entry("log.record.truncated", Some("true"));
            }
            if r.partial {
                a.entry("log.record.partial", Some("true"));
            }
            if let Some(e) = r.parse_error {
                a.entry("log.parse_error", Some(e));
            }
        },
    );
}
