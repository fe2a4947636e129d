//! The one path every source takes to hand a decoded batch to the buffer.
//!
//! `Ingest::write` splits a batch by hour partition and into entries below the buffer's entry
//! size, appends them all-or-nothing, waits for durability as `buffer.ack` says, counts the
//! records and wakes the flusher. It blocks: sources call it from a blocking task together
//! with their decoding.

use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::buffer::{split_for_entries, AckMode, Buffer, BufferError, JournalEntry, Ledger};
use crate::metrics::Metrics;
use crate::Batch;

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The buffer is full: the client should retry later.
    #[error("{0}; retry later")]
    Full(BufferError),
    /// The request can never fit the buffer.
    #[error("{0}")]
    TooLarge(BufferError),
    /// Storage failed.
    #[error("{0}")]
    Storage(BufferError),
    /// The batch could not be split.
    #[error("cannot partition batch: {0}")]
    Partition(String),
    /// A transform had no capacity for the batch in time: the client should retry later
    /// (like [`IngestError::Full`]; the batch is neither transformed nor stored).
    #[error("{0}; retry later")]
    Busy(String),
    /// The request's records fall in more hours than one request may (each hour is a
    /// buffer entry, a file and a registration of its own); never retryable as it is.
    #[error("the request's records fall in more than buffer.max_partitions_per_request ({max}) hours ({hours} counted before stopping); send them in requests of fewer hours")]
    TooManyPartitions {
        /// Distinct hours (tenant, signal and hour partitions) of the request.
        hours: usize,
        /// The limit.
        max: usize,
    },
}

/// A processor that cannot take a batch now (every instance of a transform stayed busy):
/// the request is refused as retryable rather than passed on untransformed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Overloaded(pub String);

impl From<BufferError> for IngestError {
    fn from(e: BufferError) -> Self {
        match e {
            BufferError::Full { .. } => IngestError::Full(e),
            BufferError::TooLarge { .. } => IngestError::TooLarge(e),
            other => IngestError::Storage(other),
        }
    }
}

/// Something that rewrites batches before they are buffered: the transform pipelines.
/// Implemented by the transforms crate; `Ingest` calls it on the request's blocking task, so
/// the client's acknowledgement covers the transformed batch.
pub trait BatchProcessor: Send + Sync + 'static {
    /// The batches to buffer in place of `batch` (none: everything was dropped). A batch
    /// with `dead_letter` set goes to the lake's dead-letter prefix. [`Overloaded`] refuses
    /// the whole batch for now.
    fn process(&self, batch: Batch) -> Result<Vec<Batch>, Overloaded>;
}

/// Shared handle to the buffer for the sources.
#[derive(Clone)]
pub struct Ingest {
    buffer: Arc<dyn Buffer>,
    ack: AckMode,
    metrics: Metrics,
    wake: Arc<Notify>,
    /// Shared by every clone, so a reload ([`Ingest::reconfigure`]) reaches every source.
    settings: Arc<RwLock<Arc<IngestSettings>>>,
}

/// What a configuration reload may change on a running [`Ingest`].
#[derive(Clone)]
pub struct IngestSettings {
    /// The transforms batches go through before the buffer (none: straight in).
    pub processor: Option<Arc<dyn BatchProcessor>>,
    /// Hours one client request may span ([`Ingest::write_request`]).
    pub max_partitions: usize,
    /// The times around receipt the records of gathered batches may carry
    /// ([`Ingest::write_gathered`]).
    pub window: TimeWindow,
}

/// How far before and after its receipt a record's own timestamp may lie in a batch
/// gathered from many senders ([`Ingest::write_gathered`]); a record outside is stored at
/// its receipt time with its own timestamp kept in an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// How old a record may be (`buffer.late_window`, default [`DEFAULT_LATE_WINDOW`]).
    pub late: std::time::Duration,
    /// How far ahead of the agent's clock a record may be (`buffer.future_window`, default
    /// [`DEFAULT_FUTURE_WINDOW`]).
    pub future: std::time::Duration,
}

/// Default of `buffer.late_window`: a week, so a sender replaying a few days' backlog keeps
/// its timestamps.
pub const DEFAULT_LATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Default of `buffer.future_window`: an hour of clock skew.
pub const DEFAULT_FUTURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for TimeWindow {
    fn default() -> Self {
        TimeWindow {
            late: DEFAULT_LATE_WINDOW,
            future: DEFAULT_FUTURE_WINDOW,
        }
    }
}

/// Hours one write may span by default (three days): a client's request of records from more
/// hours is refused (400) instead of becoming a buffer entry, a file and a registration per
/// hour.
pub const DEFAULT_MAX_PARTITIONS: usize = 72;

impl Ingest {
    /// A handle over a buffer; `wake` is notified after each append.
    pub fn new(
        buffer: Arc<dyn Buffer>,
        ack: AckMode,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Ingest {
        Ingest {
            buffer,
            ack,
            metrics,
            wake,
            settings: Arc::new(RwLock::new(Arc::new(IngestSettings {
                processor: None,
                max_partitions: DEFAULT_MAX_PARTITIONS,
                window: TimeWindow::default(),
            }))),
        }
    }

    /// Replaces the transforms and limits for every clone of this handle (at start, and on a
    /// configuration reload). A write already past its settings finishes with the old ones.
    /// Returns the settings replaced: dropping them may join a transform watcher thread, so
    /// drop them off the async threads.
    #[must_use = "drop the replaced settings off the async threads"]
    pub fn reconfigure(&self, mut settings: IngestSettings) -> Arc<IngestSettings> {
        settings.max_partitions = settings.max_partitions.max(1);
        let mut guard = self.settings.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *guard, Arc::new(settings))
    }

    /// The settings writes use now.
    pub fn settings(&self) -> Arc<IngestSettings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Writes a batch to the buffer and returns once it is acknowledged under `buffer.ack`.
    /// `request_bytes` is counted as received. Empty batches are accepted without a write.
    pub fn write(&self, batch: Batch, request_bytes: usize) -> Result<(), IngestError> {
        self.write_with_checkpoints(batch, request_bytes, &[])
    }

    /// Writes one client request like [`Ingest::write`], refusing it whole when its records
    /// fall in more hours than `max_partitions` (each hour is a buffer entry, a file and a
    /// registration of its own). The hours are counted first, before transforms and the
    /// split, so the refusal costs no more than reading the timestamps. For the protocols
    /// whose request is one client's (OTLP, Loki, Datadog, remote write); sources that gather
    /// many senders' or files' records into one batch use [`Ingest::write`].
    pub fn write_request(&self, batch: Batch, request_bytes: usize) -> Result<(), IngestError> {
        if let Some(ts) = batch.timestamps() {
            let max = self.settings().max_partitions;
            let mut seen = std::collections::HashSet::new();
            // Consecutive rows mostly share an hour: only a change of hour is looked up.
            let mut last = None;
            for &t in ts.values() {
                let p = crate::Partition::of(t);
                if last == Some(p) {
                    continue;
                }
                last = Some(p);
                seen.insert(p);
                if seen.len() > max {
                    self.metrics
                        .rejected_request(&batch.source, "too_many_hours");
                    return Err(IngestError::TooManyPartitions {
                        hours: seen.len(),
                        max,
                    });
                }
            }
        }
        self.write(batch, request_bytes)
    }

    /// Writes a batch gathered from many senders' messages (syslog, Fluent forward) like
    /// [`Ingest::write`], after re-timing its records whose own timestamps lie outside the
    /// settings' [`TimeWindow`] around the batch's receipt ([`Batch::retime_outside`]). Such
    /// a batch is never refused for its hours (one sender's clock must not cost another
    /// sender's records), so the window is what bounds its partitions: at most
    /// `(late + future) / 1h + 2` hours, each a buffer entry, a file and a registration.
    pub fn write_gathered(
        &self,
        mut batch: Batch,
        request_bytes: usize,
    ) -> Result<(), IngestError> {
        let window = self.settings().window;
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let retimed = batch
            .retime_outside(nanos(window.late), nanos(window.future))
            .map_err(|e| IngestError::Partition(e.to_string()))?;
        let source = (retimed > 0).then(|| batch.source.clone());
        self.write(batch, request_bytes)?;
        if let Some(source) = source {
            self.metrics.retimed_records(&source, retimed as u64);
        }
        Ok(())
    }

    /// Writes a batch like [`Ingest::write`] together with the read positions it advances
    /// (`checkpoints`, records of [`Ledger::Checkpoints`]): both go into the buffer in one
    /// atomic write and are durable after the same sync, so a file source that resumes from
    /// its checkpoints after a crash neither skips nor repeats a line. When the transforms
    /// drop every row the checkpoints are still written (the lines were consumed).
    pub fn write_with_checkpoints(
        &self,
        batch: Batch,
        request_bytes: usize,
        checkpoints: &[JournalEntry],
    ) -> Result<(), IngestError> {
        let source = batch.source.clone();
        let signal = batch.signal;
        let rows = batch.num_rows() as u64;
        let settings = self.settings();
        let batches = match (&settings.processor, rows) {
            (Some(p), 1..) => p.process(batch).map_err(|e| {
                self.metrics.rejected_request(&source, "busy");
                IngestError::Busy(e.0)
            })?,
            _ => vec![batch],
        };
        let mut entries = Vec::new();
        for batch in batches.into_iter().filter(|b| b.num_rows() > 0) {
            let parts = batch
                .split_by_partition()
                .map_err(|e| IngestError::Partition(e.to_string()))?;
            for (p, b) in parts {
                for piece in split_for_entries(b) {
                    entries.push((p, piece));
                }
            }
        }
        if !entries.is_empty() || !checkpoints.is_empty() {
            let seq = self
                .buffer
                .append_with(&entries, Ledger::Checkpoints, checkpoints)
                .inspect_err(|e| {
                    let reason = match e {
                        BufferError::Full { .. } => "buffer_full",
                        BufferError::TooLarge { .. } => "too_large",
                        _ => "storage",
                    };
                    self.metrics.rejected_request(&source, reason);
                })?;
            if let (Some(seq), AckMode::Durable) = (seq, self.ack) {
                self.buffer
                    .sync(seq)
                    .inspect_err(|_| self.metrics.rejected_request(&source, "storage"))?;
            }
            if seq.is_some() {
                self.wake.notify_one();
            }
        }
        self.metrics
            .received(&source, signal, rows, request_bytes as u64);
        Ok(())
    }

    /// Every checkpoint record whose id starts with `prefix` (a file source's name), in id
    /// order.
    pub fn checkpoints(&self, prefix: &[u8]) -> Result<Vec<JournalEntry>, BufferError> {
        Ok(self
            .buffer
            .ledger_list(Ledger::Checkpoints)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }

    /// Removes checkpoint records (of files gone for good); durable with the next commit.
    pub fn remove_checkpoints(&self, ids: &[Vec<u8>]) -> Result<(), BufferError> {
        for id in ids {
            self.buffer.ledger_remove(Ledger::Checkpoints, id)?;
        }
        Ok(())
    }

    /// Counts a refused request.
    pub fn reject(&self, source: &str, reason: &str) {
        self.metrics.rejected_request(source, reason);
    }
}
