//! The flusher: buffer → sorted Parquet per (tenant, signal, hour) → object store → index.
//!
//! Exactly-once, crash-safe protocol for one segment:
//! 1. encode the partition's rows as one sorted Parquet file;
//! 2. write a journal record (segment record + the buffer entries it covers) and fsync it;
//! 3. upload the object;
//! 4. put the segment in the outbox, remove the covered entries, drop the journal record,
//!    and fsync all three together;
//! 5. the outbox ([`crate::outbox`]) registers the segment with the control plane (idempotent
//!    by id), retrying with backoff while it is unreachable.
//!
//! A flush that fails after its journal record is written keeps its id and its rows: the
//! retry uploads the same rows to the same key and commits the same segment (rows read in the
//! meantime wait for the next flush), so an upload that failed ambiguously (the object exists
//! after all) or a failed commit never leaves the same rows under two ids.
//!
//! On start, [`Flusher::run`] first replays the journal ([`Flusher::recover`], retried until it
//! succeeds; nothing is flushed before, so journaled rows are never flushed again under another
//! id), then reports it through [`Flusher::journal_replayed`]: a record whose object exists goes to
//! the outbox and its entries are removed; a record whose object does not exist is dropped
//! and its entries are flushed again. A crash anywhere therefore neither loses rows nor
//! registers them twice, an object is never written for rows that are flushed again under
//! another id, and flushing never waits for the control plane.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;
use weir_catalog::layout::{self, SegmentKey, META_AGENT_ID, META_DEAD_LETTER};
use weir_catalog::SegmentRecord;
use weir_schema::Signal;

use crate::buffer::{Buffer, BufferError, Ledger};
use crate::lake::Lake;
use crate::metrics::{FlushStage, Metrics};
use crate::parquet_writer::{encode_parquet, ParquetConfig};
use crate::Partition;

/// Settings of the flusher.
#[derive(Debug, Clone)]
pub struct FlusherConfig {
    /// Flush a partition once its rows take this many bytes in memory (uncompressed Arrow).
    pub flush_bytes: u64,
    /// Most bytes of rows held in memory across every partition: reading the buffer stops
    /// there, and the largest partitions are flushed early until half of it is left. So a
    /// restart over a full buffer of many small partitions streams it instead of loading it.
    pub max_pending_bytes: u64,
    /// Flush a partition once its oldest rows are this old.
    pub max_file_age: Duration,
    /// How often the buffer is polled when no append wakes the flusher.
    pub poll_interval: Duration,
    /// Parquet writer settings.
    pub parquet: ParquetConfig,
    /// Agent id written in every segment record.
    pub agent_id: String,
}

impl Default for FlusherConfig {
    fn default() -> Self {
        FlusherConfig {
            flush_bytes: 64 << 20,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_file_age: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            parquet: ParquetConfig::default(),
            agent_id: "weir".into(),
        }
    }
}

/// Default bound on the rows the flusher holds in memory, across partitions.
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    tenant: String,
    signal: Signal,
    partition: Partition,
    /// Rows a transform failed on (`on_error = "dead_letter"`).
    dead_letter: bool,
}

struct Pending {
    batches: Vec<RecordBatch>,
    /// Distinct dead-letter reasons (dead-letter partitions only).
    reasons: std::collections::BTreeSet<String>,
    seqs: Vec<u64>,
    bytes: u64,
    since: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    /// The flush in progress: once its journal record is written, its id and the first
    /// `batches` batches (and seqs) are fixed, so a retry (after a failed or ambiguous upload,
    /// or a failed commit) rewrites and re-registers the same object instead of writing the
    /// same rows under a second id. Rows read meanwhile wait for the next flush.
    sealed: Option<Sealed>,
}

/// A journaled flush: retries upload exactly these bytes and commit exactly this record.
struct Sealed {
    /// How many of the partition's first batches (and seqs) it holds.
    batches: usize,
    /// The segment record written in the journal.
    segment: SegmentRecord,
    /// The encoded file (shared with the upload, not copied).
    bytes: bytes::Bytes,
}

/// How long a dropped flush's tombstone is kept ([`Ledger::FlushDropped`]).
const DROPPED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tombstone of a flush dropped at a restart.
#[derive(Debug, Serialize, Deserialize)]
struct Dropped {
    object_key: String,
    dropped_at: i64,
}

/// The journal record of a flush in progress.
#[derive(Debug, Serialize, Deserialize)]
struct JournalRecord {
    segment: SegmentRecord,
    seqs: Vec<u64>,
    /// Whether the segment holds dead-lettered rows. Written for earlier versions' replay;
    /// the record's key tells (a dead-letter file is registered under its prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter: Option<bool>,
}

/// Errors of one flush.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Encoding failed.
    #[error("encode: {0}")]
    Encode(#[from] crate::parquet_writer::EncodeError),
    /// The buffer failed.
    #[error("buffer: {0}")]
    Buffer(#[from] BufferError),
    /// The object store failed.
    #[error("upload: {0}")]
    Lake(#[from] crate::lake::LakeError),
    /// A blocking task failed.
    #[error("task: {0}")]
    Task(String),
}

impl FlushError {
    fn stage(&self) -> FlushStage {
        match self {
            FlushError::Encode(_) => FlushStage::Encode,
            FlushError::Buffer(_) => FlushStage::Buffer,
            FlushError::Lake(_) => FlushStage::Upload,
            FlushError::Task(_) => FlushStage::Task,
        }
    }
}

/// Moves batches from the buffer to the lake.
pub struct Flusher {
    buffer: Arc<dyn Buffer>,
    lake: Lake,
    metrics: Metrics,
    config: FlusherConfig,
    wake: Arc<Notify>,
    outbox_wake: Arc<Notify>,
    pending: HashMap<Key, Pending>,
    last_seq: Option<u64>,
    replayed: watch::Sender<bool>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
) -> Result<T, FlushError> {
    Ok(crate::buffer::off_thread(f).await?)
}

impl Flusher {
    /// A flusher over a buffer and a lake. `wake` is notified by appends; the flusher
    /// notifies `outbox_wake` when it puts a segment in the outbox.
    pub fn new(
        buffer: Arc<dyn Buffer>,
        lake: Lake,
        metrics: Metrics,
        config: FlusherConfig,
        wake: Arc<Notify>,
        outbox_wake: Arc<Notify>,
    ) -> Flusher {
        Flusher {
            buffer,
            lake,
            metrics,
            config,
            wake,
            outbox_wake,
            pending: HashMap::new(),
            last_seq: None,
            replayed: watch::Sender::new(false),
        }
    }

    /// Turns true once the flush journal of a previous run is replayed (reconciliation waits
    /// for it).
    pub fn journal_replayed(&self) -> watch::Receiver<bool> {
        self.replayed.subscribe()
    }

    /// Replays the journal, retrying with backoff (1 s doubling to 30 s) until it succeeds;
    /// false if `shutdown` came first.
    async fn replay_journal(&self, shutdown: &CancellationToken) -> bool {
        let mut wait = Duration::from_secs(1);
        loop {
            match self.recover().await {
                Ok(()) => {
                    self.replayed.send_replace(true);
                    return true;
                }
                Err(e) => {
                    self.metrics.flush.errors(FlushStage::Journal).inc();
                    error!(error = %e, retry_in = ?wait, "flush journal recovery failed; nothing is flushed until it succeeds");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Replays the flush journal left by a previous run (see the module docs).
    pub async fn recover(&self) -> Result<(), FlushError> {
        let buffer = self.buffer.clone();
        let records = blocking(move || buffer.ledger_list(Ledger::FlushJournal)).await?;
        for (id, value) in records {
            let rec: JournalRecord = match serde_json::from_slice(&value) {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "unreadable flush journal record dropped; its entries will be flushed again");
                    let buffer = self.buffer.clone();
                    blocking(move || buffer.ledger_remove(Ledger::FlushJournal, &id)).await?;
                    continue;
                }
            };
            let segment = rec.segment.id;
            if self.lake.exists(&rec.segment.object_key).await? {
                // Dead-letter files are registered too, under their marker (the prefix of
                // their key); a record the index refuses is kept in the outbox's refused
                // ledger with the reason.
                self.commit_flush(&rec.segment, rec.seqs).await?;
                info!(%segment, "recovered a segment written before a restart");
            } else {
                // Its rows are flushed again under another id. The interrupted upload may
                // still land (a PUT that hung past the crash): the tombstone, durable before
                // the journal record goes, keeps reconciliation from registering that object,
                // so the rows are never indexed twice.
                let buffer = self.buffer.clone();
                let tombstone = serde_json::to_vec(&Dropped {
                    object_key: rec.segment.object_key.clone(),
                    dropped_at: weir_catalog::now_ns(),
                })
                .map_err(|e| FlushError::Task(e.to_string()))?;
                blocking(move || {
                    buffer.ledger_put(Ledger::FlushDropped, &id, &tombstone)?;
                    buffer.ledger_remove(Ledger::FlushJournal, &id)?;
                    buffer.sync_all()
                })
                .await?;
                info!(%segment, "dropped an interrupted flush; its rows will be flushed again");
            }
        }
        self.prune_dropped().await
    }

    /// Forgets tombstones older than [`DROPPED_KEPT`]: no upload hangs that long.
    async fn prune_dropped(&self) -> Result<(), FlushError> {
        let buffer = self.buffer.clone();
        let cutoff = weir_catalog::now_ns().saturating_sub(DROPPED_KEPT.as_nanos() as i64);
        blocking(move || {
            for (id, v) in buffer.ledger_list(Ledger::FlushDropped)? {
                let old = serde_json::from_slice::<Dropped>(&v)
                    .map(|d| d.dropped_at < cutoff)
                    .unwrap_or(false);
                if old {
                    buffer.ledger_remove(Ledger::FlushDropped, &id)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs until `shutdown`, then makes one last attempt to flush everything (bounded by
    /// `final_flush_timeout`); whatever is not flushed stays in the buffer for the next start.
    pub async fn run(mut self, shutdown: CancellationToken, final_flush_timeout: Duration) {
        if !self.replay_journal(&shutdown).await {
            return;
        }
        loop {
            let more = match self.poll().await {
                Ok(more) => more,
                Err(e) => {
                    error!(error = %e, "reading the buffer failed");
                    false
                }
            };
            let flushed = self.flush_due(false).await;
            self.update_gauges();
            // Reading stopped at a bound, not at the buffer's end (a backlog: after a burst, a
            // restart, an outage), and a flush made room: go on at once instead of waiting for
            // an append or the poll interval, which would leave the core idle while the buffer
            // drains. (When flushes fail, their backoff paces the loop as before.)
            if more && flushed > 0 && !shutdown.is_cancelled() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {
                    // Let a burst of appends land before reading them.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        let final_flush = async {
            if let Err(e) = self.poll().await {
                error!(error = %e, "reading the buffer failed");
            }
            self.flush_due(true).await;
        };
        if tokio::time::timeout(final_flush_timeout, final_flush)
            .await
            .is_err()
        {
            warn!("final flush timed out; unflushed rows stay in the buffer for the next start");
        }
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let s = self.buffer.stats();
        self.metrics.buffer_bytes.set(s.bytes as i64);
        self.metrics.buffer_entries.set(s.entries as i64);
        self.metrics
            .buffer_corrupt_entries
            .set(self.buffer.corrupt_entries() as i64);
        for signal in Signal::ALL {
            let n = self.pending.keys().filter(|k| k.signal == signal).count();
            self.metrics
                .flush
                .pending_partitions
                .get(signal)
                .set(n as i64);
        }
        self.metrics
            .flush
            .pending_bytes
            .set(self.pending_bytes() as i64);
    }

    /// Reads new buffer entries into the per-partition accumulators, stopping once a
    /// partition is due by size so that sustained load cannot pile up unflushed rows. Returns
    /// whether it stopped at such a bound (the buffer may hold more) rather than at its end.
    async fn poll(&mut self) -> Result<bool, FlushError> {
        loop {
            if self
                .pending
                .values()
                .any(|p| p.bytes >= self.config.flush_bytes)
                || self.pending_bytes() >= self.config.max_pending_bytes
            {
                return Ok(true);
            }
            let buffer = self.buffer.clone();
            let after = self.last_seq;
            let entries = blocking(move || buffer.read(after, 64)).await?;
            if entries.is_empty() {
                return Ok(false);
            }
            for e in entries {
                self.last_seq = Some(e.seq);
                let key = Key {
                    tenant: e.batch.tenant.clone(),
                    signal: e.batch.signal,
                    partition: e.partition,
                    dead_letter: e.batch.dead_letter.is_some(),
                };
                let p = self.pending.entry(key).or_insert_with(|| Pending {
                    batches: Vec::new(),
                    reasons: Default::default(),
                    seqs: Vec::new(),
                    bytes: 0,
                    since: Instant::now(),
                    retry_at: None,
                    failures: 0,
                    sealed: None,
                });
                p.bytes += e.batch.records.get_array_memory_size() as u64;
                if let Some(reason) = e.batch.dead_letter {
                    if p.reasons.len() < 100 {
                        p.reasons.insert(reason);
                    }
                }
                p.batches.push(e.batch.records);
                p.seqs.push(e.seq);
            }
        }
    }

    /// Bytes of rows held across every partition.
    fn pending_bytes(&self) -> u64 {
        self.pending.values().map(|p| p.bytes).sum()
    }

    /// Flushes the partitions that are due; returns how many flushes succeeded.
    async fn flush_due(&mut self, all: bool) -> usize {
        let mut succeeded = 0;
        let now = Instant::now();
        let mut due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now) || all)
            .filter(|(_, p)| {
                all || p.bytes >= self.config.flush_bytes
                    || now.duration_since(p.since) >= self.config.max_file_age
            })
            .map(|(k, _)| k.clone())
            .collect();
        // Over the memory bound: the largest partitions too, until half of it is left.
        let mut held = self.pending_bytes();
        if !all && held >= self.config.max_pending_bytes {
            held -= due
                .iter()
                .filter_map(|k| self.pending.get(k))
                .map(|p| p.bytes)
                .sum::<u64>();
            let mut rest: Vec<(&Key, &Pending)> = self
                .pending
                .iter()
                .filter(|(k, p)| p.retry_at.is_none_or(|t| t <= now) && !due.contains(k))
                .collect();
            rest.sort_by_key(|(_, p)| std::cmp::Reverse(p.bytes));
            let mut early = Vec::new();
            for (k, p) in rest {
                if held < self.config.max_pending_bytes / 2 {
                    break;
                }
                held = held.saturating_sub(p.bytes);
                early.push(k.clone());
            }
            due.extend(early);
        }
        due.sort();
        for key in due {
            let Some(mut p) = self.pending.remove(&key) else {
                continue;
            };
            let started = Instant::now();
            match self.flush_one(&key, &mut p).await {
                Ok((seg, flushed)) => {
                    succeeded += 1;
                    let m = &self.metrics.flush;
                    m.duration.observe(started.elapsed().as_secs_f64());
                    m.segments.get(key.signal).inc();
                    m.rows.get(key.signal).inc_by(seg.row_count);
                    m.bytes.get(key.signal).inc_by(seg.bytes);
                    m.last_flush_seconds.set(chrono::Utc::now().timestamp());
                    let signal = key.signal.as_str();
                    info!(segment = %seg.id, tenant = %seg.tenant, signal, rows = seg.row_count, bytes = seg.bytes, key = %seg.object_key, "flushed segment");
                    if flushed < p.batches.len() {
                        // Rows read while a retried flush was sealed: they are the next one.
                        p.batches.drain(..flushed);
                        p.seqs.drain(..flushed);
                        p.bytes = p
                            .batches
                            .iter()
                            .map(|b| b.get_array_memory_size() as u64)
                            .sum();
                        p.sealed = None;
                        p.failures = 0;
                        p.retry_at = None;
                        self.pending.insert(key, p);
                    }
                }
                Err(e) => {
                    self.metrics.flush.errors(e.stage()).inc();
                    p.failures += 1;
                    let backoff =
                        Duration::from_millis(200u64.saturating_mul(1 << p.failures.min(8)))
                            .min(Duration::from_secs(30));
                    p.retry_at = Some(Instant::now() + backoff);
                    warn!(error = %e, tenant = %key.tenant, signal = %key.signal, retry_in = ?backoff, "flush failed; rows stay in the buffer");
                    self.pending.insert(key, p);
                    if all {
                        // During shutdown, one failure means the store is unreachable: stop.
                        break;
                    }
                }
            }
        }
        succeeded
    }

    /// After the upload: outbox the segment (a dead-letter file's too: the index lists it
    /// under its marker), remove its entries and its journal record, in one fsync.
    async fn commit_flush(
        &self,
        segment: &SegmentRecord,
        seqs: Vec<u64>,
    ) -> Result<(), FlushError> {
        let buffer = self.buffer.clone();
        let id = segment.id;
        let record = serde_json::to_vec(segment).map_err(|e| FlushError::Task(e.to_string()))?;
        blocking(move || {
            buffer.ledger_put(Ledger::Outbox, id.as_bytes(), &record)?;
            buffer.remove(&seqs)?;
            buffer.ledger_remove(Ledger::FlushJournal, id.as_bytes())?;
            buffer.sync_all()
        })
        .await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Flushes the pending rows of a partition (the sealed ones, when a flush is being
    /// retried); returns the segment and how many of `p`'s batches it holds.
    async fn flush_one(
        &self,
        key: &Key,
        p: &mut Pending,
    ) -> Result<(SegmentRecord, usize), FlushError> {
        if let Some(sealed) = &p.sealed {
            // A retry: the same bytes to the same key, the same record committed, whatever
            // the first attempt left behind.
            let seqs = p.seqs[..sealed.batches].to_vec();
            self.lake
                .put(&sealed.segment.object_key, sealed.bytes.clone())
                .await?;
            debug!(segment = %sealed.segment.id, "uploaded (retry)");
            self.commit_flush(&sealed.segment, seqs).await?;
            return Ok((sealed.segment.clone(), sealed.batches));
        }
        let id = Uuid::now_v7();
        let count = p.batches.len();
        let seqs = p.seqs.clone();
        let (cfg, signal, tenant, batches) = (
            self.config.parquet.clone(),
            key.signal,
            key.tenant.clone(),
            p.batches.clone(),
        );
        let mut extra: Vec<(String, String)> =
            vec![(META_AGENT_ID.into(), self.config.agent_id.clone())];
        if key.dead_letter {
            let reasons = p.reasons.iter().cloned().collect::<Vec<_>>().join("\n");
            extra.push((META_DEAD_LETTER.to_string(), reasons));
        }
        let (bytes, summary) = tokio::task::spawn_blocking(move || {
            encode_parquet(&cfg, signal, &tenant, &batches, &extra)
        })
        .await
        .map_err(|e| FlushError::Task(e.to_string()))??;
        let object = SegmentKey::new(&key.tenant, key.signal, key.partition, id)
            .with_dead_letter(key.dead_letter);
        let segment = layout::segment_record(
            &object,
            summary.into_facts(bytes.len() as u64),
            &self.config.agent_id,
            weir_catalog::now_ns(),
        );
        let journal = serde_json::to_vec(&JournalRecord {
            segment: segment.clone(),
            seqs: seqs.clone(),
            dead_letter: Some(key.dead_letter),
        })
        .map_err(|e| FlushError::Task(e.to_string()))?;
        let buffer = self.buffer.clone();
        blocking(move || {
            buffer.ledger_put(Ledger::FlushJournal, id.as_bytes(), &journal)?;
            buffer.sync_all()
        })
        .await?;
        // From here on the rows belong to this id: a failed or ambiguous upload (the object
        // may exist after an error), or a failed commit, is retried under it, and the journal
        // record stays, so a restart finds the object by its key.
        let bytes = bytes::Bytes::from(bytes);
        p.sealed = Some(Sealed {
            batches: count,
            segment: segment.clone(),
            bytes: bytes.clone(),
        });
        self.lake.put(&segment.object_key, bytes).await?;
        debug!(segment = %id, "uploaded");
        self.commit_flush(&segment, seqs).await?;
        Ok((segment, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{SledBuffer, SledBufferConfig};
    use crate::logrows::{LogFields, LogsBuilder};
    use crate::Batch;

    fn open_buffer(dir: &std::path::Path) -> Arc<dyn Buffer> {
        Arc::new(
            SledBuffer::open(&SledBufferConfig {
                path: dir.join("buffer"),
                max_bytes: 1 << 30,
            })
            .unwrap(),
        )
    }

    /// One batch of `rows` log rows in hour `hour`.
    fn hour_batch(hour: i64, rows: usize) -> (Partition, Batch) {
        let mut b = LogsBuilder::with_capacity(0);
        let ts = hour * 3_600_000_000_000;
        let body = "x".repeat(200);
        for _ in 0..rows {
            b.append(
                &LogFields {
                    timestamp: ts,
                    observed: ts,
                    severity_number: 9,
                    severity_text: None,
                    body: Some(&body),
                    trace_id: None,
                    span_id: None,
                    flags: 0,
                    event_name: None,
                    service_name: Some("api"),
                    scope_name: None,
                },
                None,
                0,
                |_| {},
                |_| {},
            );
        }
        let batch = Batch::new("acme", Signal::Logs, "test", 0, b.finish().unwrap());
        (Partition { hour }, batch)
    }

    /// A restart over a buffer of many small partitions (none due by size or age) reads it
    /// a bounded amount at a time: reading stops at `max_pending_bytes`, and the largest
    /// partitions are flushed early down to half of it, until the buffer is drained.
    #[tokio::test]
    async fn a_buffer_of_many_partitions_is_streamed_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = open_buffer(dir.path());
        for hour in 0..200 {
            let seq = buffer.append(&[hour_batch(480_000 + hour, 50)]).unwrap();
            buffer.sync(seq).unwrap();
        }
        let one = hour_batch(0, 50).1.records.get_array_memory_size() as u64;
        let budget = one * 20;
        let lake = Lake::open("memory://", &HashMap::new()).unwrap();
        let mut f = Flusher::new(
            buffer.clone(),
            lake.clone(),
            Metrics::new(),
            FlusherConfig {
                flush_bytes: 1 << 30,
                max_pending_bytes: budget,
                max_file_age: Duration::from_secs(3600),
                ..FlusherConfig::default()
            },
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        let held = |f: &Flusher| f.pending.values().map(|p| p.seqs.len()).sum::<usize>();
        let mut rounds = 0;
        // Until every entry was read (the last ones wait in memory for their age).
        while buffer.stats().entries as usize > held(&f) {
            rounds += 1;
            assert!(rounds < 100, "the buffer was not read through");
            f.poll().await.unwrap();
            // At most one read of 64 entries past the bound.
            assert!(
                f.pending_bytes() <= budget + 64 * one,
                "{} bytes held, bound {budget}",
                f.pending_bytes()
            );
            f.flush_due(false).await;
            assert!(f.pending_bytes() < budget, "{}", f.pending_bytes());
        }
        assert!(rounds > 1, "read in one go");
        f.flush_due(true).await;
        assert_eq!(buffer.stats().entries, 0);
        assert_eq!(lake.list("").await.unwrap().len(), 200);
    }

    /// A backlog (after a burst, a restart, an outage) drains flush after flush, without
    /// waiting for an append or the poll interval between them: here the interval is an hour
    /// and nothing appends, so only the backlog rule can drain it.
    #[tokio::test]
    async fn a_backlog_drains_without_waiting_between_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = open_buffer(dir.path());
        for _ in 0..320 {
            let seq = buffer.append(&[hour_batch(480_000, 10)]).unwrap();
            buffer.sync(seq).unwrap();
        }
        let one = hour_batch(0, 10).1.records.get_array_memory_size() as u64;
        let lake = Lake::open("memory://", &HashMap::new()).unwrap();
        let f = Flusher::new(
            buffer.clone(),
            lake.clone(),
            Metrics::new(),
            FlusherConfig {
                // Due at once: each read of 64 entries is one flush, five in all.
                flush_bytes: one * 4,
                max_file_age: Duration::from_secs(3600),
                poll_interval: Duration::from_secs(3600),
                ..FlusherConfig::default()
            },
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(f.run(shutdown.clone(), Duration::from_secs(30)));
        let drained = async {
            while buffer.stats().entries > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(60), drained).await;
        let flushed = lake.list("").await.unwrap().len();
        shutdown.cancel();
        run.await.unwrap();
        assert!(
            done.is_ok(),
            "the backlog stopped draining after {flushed} flushes, {} entries left",
            buffer.stats().entries
        );
        assert!(flushed >= 5, "{flushed} files");
    }
}
