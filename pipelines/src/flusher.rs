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
//! On start, [`Flusher::recover`] replays the journal: a record whose object exists goes to
//! the outbox and its entries are removed; a record whose object does not exist is dropped
//! and its entries are flushed again. A crash anywhere therefore neither loses rows nor
//! registers them twice, an object is never written for rows that are flushed again under
//! another id, and flushing never waits for the control plane.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;
use weir_control_plane::{SegmentRecord, SegmentState};
use weir_schema::{Signal, SCHEMA_VERSION};

use crate::buffer::{Buffer, BufferError, Ledger};
use crate::lake::Lake;
use crate::metrics::Metrics;
use crate::parquet_writer::{encode_parquet, ParquetConfig};
use crate::Partition;

/// Settings of the flusher.
#[derive(Debug, Clone)]
pub struct FlusherConfig {
    /// Flush a partition once its rows take this many bytes in memory (uncompressed Arrow).
    pub flush_bytes: u64,
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
            max_file_age: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            parquet: ParquetConfig::default(),
            agent_id: "weir".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    tenant: String,
    signal: Signal,
    partition: Partition,
    /// Rows a transform failed on (`on_error = "dead_letter"`).
    dead_letter: bool,
}

/// Prefix of dead-lettered objects in the lake. They are kept for operators with the
/// transform errors in their footer (`weir.dead_letter_reasons`), and are not registered in
/// the index: they are not part of the queryable lake.
pub const DEAD_LETTER_PREFIX: &str = "_dead_letter/";
/// Footer key of the agent that wrote a file (reconciliation registers only its own).
pub const META_AGENT_ID: &str = "weir.agent_id";
/// Footer key of the dead-letter reasons (one per line).
pub const META_DEAD_LETTER: &str = "weir.dead_letter_reasons";

struct Pending {
    batches: Vec<RecordBatch>,
    /// Distinct dead-letter reasons (dead-letter partitions only).
    reasons: std::collections::BTreeSet<String>,
    seqs: Vec<u64>,
    bytes: u64,
    since: Instant,
    retry_at: Option<Instant>,
    failures: u32,
}

/// The journal record of a flush in progress.
#[derive(Debug, Serialize, Deserialize)]
struct JournalRecord {
    segment: SegmentRecord,
    seqs: Vec<u64>,
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
    fn stage(&self) -> &'static str {
        match self {
            FlushError::Encode(_) => "encode",
            FlushError::Buffer(_) => "buffer",
            FlushError::Lake(_) => "upload",
            FlushError::Task(_) => "task",
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
                self.commit_flush(&rec.segment, rec.seqs).await?;
                info!(%segment, "recovered a segment written before a restart");
            } else {
                let buffer = self.buffer.clone();
                blocking(move || buffer.ledger_remove(Ledger::FlushJournal, &id)).await?;
                info!(%segment, "dropped an interrupted flush; its rows will be flushed again");
            }
        }
        Ok(())
    }

    /// Runs until `shutdown`, then makes one last attempt to flush everything (bounded by
    /// `final_flush_timeout`); whatever is not flushed stays in the buffer for the next start.
    pub async fn run(mut self, shutdown: CancellationToken, final_flush_timeout: Duration) {
        if let Err(e) = self.recover().await {
            error!(error = %e, "flush journal recovery failed; will retry on next start");
        }
        loop {
            if let Err(e) = self.poll().await {
                error!(error = %e, "reading the buffer failed");
            }
            self.flush_due(false).await;
            self.update_gauges();
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
                .pending_partitions
                .with_label_values(&[signal.as_str()])
                .set(n as i64);
        }
    }

    /// Reads new buffer entries into the per-partition accumulators, stopping once a
    /// partition is due by size so that sustained load cannot pile up unflushed rows.
    async fn poll(&mut self) -> Result<(), FlushError> {
        loop {
            if self
                .pending
                .values()
                .any(|p| p.bytes >= self.config.flush_bytes)
            {
                return Ok(());
            }
            let buffer = self.buffer.clone();
            let after = self.last_seq;
            let entries = blocking(move || buffer.read(after, 64)).await?;
            if entries.is_empty() {
                return Ok(());
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

    async fn flush_due(&mut self, all: bool) {
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
        due.sort();
        for key in due {
            let Some(mut p) = self.pending.remove(&key) else {
                continue;
            };
            let started = Instant::now();
            match self.flush_one(&key, &mut p).await {
                Ok(seg) => {
                    self.metrics
                        .flush_duration
                        .observe(started.elapsed().as_secs_f64());
                    let signal = key.signal.as_str();
                    self.metrics
                        .segments_flushed
                        .with_label_values(&[signal])
                        .inc();
                    self.metrics
                        .rows_flushed
                        .with_label_values(&[signal])
                        .inc_by(seg.row_count);
                    self.metrics
                        .bytes_flushed
                        .with_label_values(&[signal])
                        .inc_by(seg.bytes);
                    self.metrics
                        .last_flush_seconds
                        .set(chrono::Utc::now().timestamp());
                    info!(segment = %seg.id, tenant = %seg.tenant, signal, rows = seg.row_count, bytes = seg.bytes, key = %seg.object_key, "flushed segment");
                }
                Err(e) => {
                    self.metrics
                        .flush_errors
                        .with_label_values(&[e.stage()])
                        .inc();
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
    }

    /// After the upload: outbox the segment, remove its entries and its journal record, in
    /// one fsync.
    async fn commit_flush(
        &self,
        segment: &SegmentRecord,
        seqs: Vec<u64>,
    ) -> Result<(), FlushError> {
        let buffer = self.buffer.clone();
        let id = segment.id;
        let outboxed = if segment.object_key.starts_with(DEAD_LETTER_PREFIX) {
            None
        } else {
            Some(serde_json::to_vec(segment).map_err(|e| FlushError::Task(e.to_string()))?)
        };
        blocking(move || {
            if let Some(record) = outboxed {
                buffer.ledger_put(Ledger::Outbox, id.as_bytes(), &record)?;
            }
            buffer.remove(&seqs)?;
            buffer.ledger_remove(Ledger::FlushJournal, id.as_bytes())?;
            buffer.sync_all()
        })
        .await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    async fn flush_one(&self, key: &Key, p: &mut Pending) -> Result<SegmentRecord, FlushError> {
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
        let id = Uuid::now_v7();
        let mut object_key = Lake::object_key(&key.tenant, key.signal, key.partition, id);
        if key.dead_letter {
            object_key.insert_str(0, DEAD_LETTER_PREFIX);
        }
        let segment = SegmentRecord {
            id,
            tenant: key.tenant.clone(),
            signal: key.signal.as_str().into(),
            object_key,
            partition: key.partition.path(),
            min_timestamp: summary.min_timestamp,
            max_timestamp: summary.max_timestamp,
            row_count: summary.rows,
            bytes: bytes.len() as u64,
            services: summary.services,
            schema_version: SCHEMA_VERSION,
            agent_id: self.config.agent_id.clone(),
            created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            state: SegmentState::Active,
            replaced_by: None,
            retired_at: None,
            purged_at: None,
        };
        let journal = serde_json::to_vec(&JournalRecord {
            segment: segment.clone(),
            seqs: p.seqs.clone(),
        })
        .map_err(|e| FlushError::Task(e.to_string()))?;
        let buffer = self.buffer.clone();
        blocking(move || {
            buffer.ledger_put(Ledger::FlushJournal, id.as_bytes(), &journal)?;
            buffer.sync_all()
        })
        .await?;
        if let Err(e) = self.lake.put(&segment.object_key, bytes).await {
            let buffer = self.buffer.clone();
            blocking(move || buffer.ledger_remove(Ledger::FlushJournal, id.as_bytes())).await?;
            return Err(e.into());
        }
        debug!(segment = %id, "uploaded");
        self.commit_flush(&segment, p.seqs.clone()).await?;
        Ok(segment)
    }
}
