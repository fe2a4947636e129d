//! The agent's own metrics, exposed as Prometheus text on the admin port.
//!
//! One [`Metrics`] value is created at start and shared by every component, so each event is
//! counted in one place.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use weir_schema::Signal;

/// One handle per signal of a labelled metric, resolved once.
#[derive(Clone)]
pub struct BySignal<T> {
    logs: T,
    metrics: T,
    traces: T,
}

impl<T> BySignal<T> {
    fn new(mut f: impl FnMut(Signal) -> T) -> BySignal<T> {
        BySignal {
            logs: f(Signal::Logs),
            metrics: f(Signal::Metrics),
            traces: f(Signal::Traces),
        }
    }

    /// The handle of `signal`.
    pub fn get(&self, signal: Signal) -> &T {
        match signal {
            Signal::Logs => &self.logs,
            Signal::Metrics => &self.metrics,
            Signal::Traces => &self.traces,
        }
    }
}

/// Where a flush failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStage {
    /// Parquet encoding.
    Encode,
    /// Replaying or writing the flush journal.
    Journal,
    /// The object store.
    Upload,
    /// The buffer.
    Buffer,
    /// A blocking task.
    Task,
}

/// The flusher's metrics.
#[derive(Clone)]
pub struct FlushMetrics {
    /// Segments flushed, by signal.
    pub segments: BySignal<IntCounter>,
    /// Rows flushed, by signal.
    pub rows: BySignal<IntCounter>,
    /// Parquet bytes flushed, by signal.
    pub bytes: BySignal<IntCounter>,
    /// Partitions accumulating rows, by signal.
    pub pending_partitions: BySignal<IntGauge>,
    /// Bytes (in-memory Arrow) of the rows read from the buffer and not yet flushed, across
    /// every partition; bounded by `lake.max_pending_bytes`.
    pub pending_bytes: IntGauge,
    /// Time from the start of a flush to its registration.
    pub duration: Histogram,
    /// Unix seconds of the last segment flushed.
    pub last_flush_seconds: IntGauge,
    errors: [IntCounter; 5],
}

impl FlushMetrics {
    /// Failures at `stage`.
    pub fn errors(&self, stage: FlushStage) -> &IntCounter {
        &self.errors[stage as usize]
    }
}

/// Registrations sent from the outbox, by result.
#[derive(Clone)]
pub struct OutboxMetrics {
    /// Segments waiting for the control plane to acknowledge their registration.
    pub segments: IntGauge,
    /// Segments registered.
    pub registered: IntCounter,
    /// Attempts to retry later (control plane unreachable or failing).
    pub retried: IntCounter,
    /// Segments refused for good (kept in the buffer's refused ledger).
    pub rejected: IntCounter,
    /// Segments kept in the refused ledger: in the lake, not in the index.
    pub refused_segments: IntGauge,
}

/// Compactions, by result.
#[derive(Clone)]
pub struct CompactionMetrics {
    /// Committed.
    pub committed: IntCounter,
    /// The lease was lost before the commit.
    pub lease_lost: IntCounter,
    /// Failed otherwise.
    pub failed: IntCounter,
    /// Segments merged away by committed compactions.
    pub compacted_segments: IntCounter,
}

/// The metrics of one file-tailing source.
#[derive(Clone)]
pub struct TailHandles {
    /// Files followed.
    pub files: IntGauge,
    /// Bytes of the followed files not committed yet (size minus committed offset, summed).
    pub lag_bytes: IntGauge,
    /// 1 while batches are refused (full buffer, busy transform) and reading is paused.
    pub paused: IntGauge,
    /// Bytes read and committed.
    pub bytes: IntCounter,
    /// Records read and committed.
    pub lines: IntCounter,
    /// Files renamed away or deleted while followed.
    pub rotations: IntCounter,
    /// Files truncated (copytruncate) or rewritten from the start.
    pub truncations: IntCounter,
}

/// The file-tailing sources' metrics, labelled by source.
#[derive(Clone)]
pub struct TailMetrics {
    files: IntGaugeVec,
    lag_bytes: IntGaugeVec,
    paused: IntGaugeVec,
    bytes: IntCounterVec,
    lines: IntCounterVec,
    rotations: IntCounterVec,
    truncations: IntCounterVec,
    sources: std::sync::Arc<std::sync::Mutex<Vec<(String, TailHandles)>>>,
}

/// The state of one file-tailing source, for `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TailState {
    /// Files followed.
    pub files: i64,
    /// Bytes not committed yet.
    pub lag_bytes: i64,
    /// Reading is paused (writes refused).
    pub paused: bool,
    /// Records committed.
    pub lines: u64,
}

impl TailMetrics {
    /// The handles of `source` (created on first use).
    pub fn source(&self, source: &str) -> TailHandles {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, h)) = sources.iter().find(|(n, _)| n == source) {
            return h.clone();
        }
        let l = [source];
        let h = TailHandles {
            files: self.files.with_label_values(&l),
            lag_bytes: self.lag_bytes.with_label_values(&l),
            paused: self.paused.with_label_values(&l),
            bytes: self.bytes.with_label_values(&l),
            lines: self.lines.with_label_values(&l),
            rotations: self.rotations.with_label_values(&l),
            truncations: self.truncations.with_label_values(&l),
        };
        sources.push((source.to_string(), h.clone()));
        h
    }

    /// Every tailing source's state.
    pub fn states(&self) -> Vec<(String, TailState)> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .iter()
            .map(|(n, h)| {
                (
                    n.clone(),
                    TailState {
                        files: h.files.get(),
                        lag_bytes: h.lag_bytes.get(),
                        paused: h.paused.get() != 0,
                        lines: h.lines.get(),
                    },
                )
            })
            .collect()
    }
}

/// Every metric of the agent. Label sets are resolved once here; components get typed
/// handles, and the only labels chosen at run time are a source's name and refusal reason.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    received_records: IntCounterVec,
    received_bytes: IntCounterVec,
    rejected_requests: IntCounterVec,
    rejected_records: IntCounterVec,
    retimed_records: IntCounterVec,
    /// Live bytes in the buffer.
    pub buffer_bytes: IntGauge,
    /// Live entries in the buffer.
    pub buffer_entries: IntGauge,
    /// Entries that failed their checks and were moved aside.
    pub buffer_corrupt_entries: IntGauge,
    /// The flusher.
    pub flush: FlushMetrics,
    /// Whether the agent is shutting down (1) or serving (0).
    pub shutting_down: IntCounter,
    /// The registration outbox.
    pub outbox: OutboxMetrics,
    /// Compactions.
    pub compactions: CompactionMetrics,
    /// Segments removed from the index by retention.
    pub retention_expired: IntCounter,
    /// Objects deleted from the lake (compacted inputs and expired segments).
    pub objects_deleted: IntCounter,
    /// Objects registered by reconciliation at start.
    pub reconciled_segments: IntCounter,
    /// The file-tailing sources.
    pub tail: TailMetrics,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("weir".into()), None).expect("valid prefix");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            r.register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let flush_duration = Histogram::with_opts(
            HistogramOpts::new(
                "flush_duration_seconds",
                "Time to encode, upload and register one segment",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("static metric definition");
        r.register(Box::new(flush_duration.clone()))
            .expect("metric registered once");
        let pending = IntGaugeVec::new(
            Opts::new("pending_partitions", "Partitions accumulating rows"),
            &["signal"],
        )
        .expect("static metric definition");
        r.register(Box::new(pending.clone()))
            .expect("metric registered once");
        let shutting_down =
            IntCounter::new("shutdown_started", "1 once shutdown has begun").expect("static");
        r.register(Box::new(shutting_down.clone()))
            .expect("metric registered once");
        let flushed = |name: &str, help: &str| {
            let v = counter(&r, name, help, &["signal"]);
            BySignal::new(|sig| v.with_label_values(&[sig.as_str()]))
        };
        let flush_errors = counter(&r, "flush_errors_total", "Flush failures", &["stage"]);
        let outbox = counter(
            &r,
            "outbox_registrations_total",
            "Registration attempts from the outbox",
            &["result"],
        );
        let compactions = counter(&r, "compactions_total", "Compactions run", &["result"]);
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["source"])
                .expect("static metric definition");
            r.register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let tail = TailMetrics {
            files: gauge_vec("tail_files", "Files followed by a file source"),
            lag_bytes: gauge_vec(
                "tail_lag_bytes",
                "Bytes of followed files not committed to the buffer yet",
            ),
            paused: gauge_vec(
                "tail_paused",
                "1 while a file source's batches are refused and reading is paused",
            ),
            bytes: counter(
                &r,
                "tail_read_bytes_total",
                "File bytes read and committed",
                &["source"],
            ),
            lines: counter(
                &r,
                "tail_read_records_total",
                "Records read from files and committed",
                &["source"],
            ),
            rotations: counter(
                &r,
                "tail_rotations_total",
                "Followed files renamed away or deleted",
                &["source"],
            ),
            truncations: counter(
                &r,
                "tail_truncations_total",
                "Followed files truncated or rewritten from the start",
                &["source"],
            ),
            sources: Default::default(),
        };
        let single =
            |name: &str, help: &str| counter(&r, name, help, &[]).with_label_values(&[] as &[&str]);
        Metrics {
            received_records: counter(
                &r,
                "received_records_total",
                "Records accepted",
                &["source", "signal"],
            ),
            received_bytes: counter(
                &r,
                "received_bytes_total",
                "Request bytes accepted",
                &["source", "signal"],
            ),
            rejected_requests: counter(
                &r,
                "rejected_requests_total",
                "Requests refused",
                &["source", "reason"],
            ),
            rejected_records: counter(
                &r,
                "rejected_records_total",
                "Records refused in accepted requests",
                &["source", "signal"],
            ),
            retimed_records: counter(
                &r,
                "retimed_records_total",
                "Records whose own timestamps were outside buffer.late_window/future_window, stored at the time they were received",
                &["source"],
            ),
            buffer_bytes: gauge("buffer_bytes", "Live bytes in the durable buffer"),
            buffer_entries: gauge("buffer_entries", "Live entries in the durable buffer"),
            buffer_corrupt_entries: gauge(
                "buffer_corrupt_entries",
                "Buffer entries moved aside as corrupt",
            ),
            flush: FlushMetrics {
                segments: flushed(
                    "segments_flushed_total",
                    "Parquet segments written and registered",
                ),
                rows: flushed("rows_flushed_total", "Rows written to the lake"),
                bytes: flushed("flushed_bytes_total", "Parquet bytes written to the lake"),
                pending_partitions: BySignal::new(|sig| pending.with_label_values(&[sig.as_str()])),
                pending_bytes: gauge(
                    "flush_pending_bytes",
                    "In-memory bytes of rows read from the buffer and not flushed yet (bounded by lake.max_pending_bytes)",
                ),
                duration: flush_duration,
                last_flush_seconds: gauge("last_flush_seconds", "Unix time of the last flush"),
                errors: ["encode", "journal", "upload", "buffer", "task"]
                    .map(|stage| flush_errors.with_label_values(&[stage])),
            },
            shutting_down,
            outbox: OutboxMetrics {
                segments: gauge("outbox_segments", "Segments awaiting registration"),
                registered: outbox.with_label_values(&["ok"]),
                retried: outbox.with_label_values(&["retry"]),
                rejected: outbox.with_label_values(&["rejected"]),
                refused_segments: gauge(
                    "outbox_refused_segments",
                    "Segments the control plane refused for good, kept with their reason (in the lake, not in the index)",
                ),
            },
            compactions: CompactionMetrics {
                committed: compactions.with_label_values(&["committed"]),
                lease_lost: compactions.with_label_values(&["lease_lost"]),
                failed: compactions.with_label_values(&["failed"]),
                compacted_segments: single(
                    "compacted_segments_total",
                    "Segments merged away by compaction",
                ),
            },
            retention_expired: single(
                "retention_expired_segments_total",
                "Segments expired by retention",
            ),
            objects_deleted: single(
                "lake_objects_deleted_total",
                "Objects deleted from the lake",
            ),
            reconciled_segments: single(
                "reconciled_segments_total",
                "Lake objects registered at start because the index lacked them",
            ),
            tail,
            registry: r,
        }
    }

    /// Counts records and request bytes accepted from `source`.
    pub fn received(&self, source: &str, signal: Signal, records: u64, bytes: u64) {
        let labels = [source, signal.as_str()];
        self.received_records
            .with_label_values(&labels)
            .inc_by(records);
        self.received_bytes.with_label_values(&labels).inc_by(bytes);
    }

    /// Counts records `source` accepted without storing them, by kind (Datadog check runs).
    pub fn received_unstored(&self, source: &str, kind: &str, records: u64) {
        self.received_records
            .with_label_values(&[source, kind])
            .inc_by(records);
    }

    /// Counts a request `source` refused, and why (`malformed`, `buffer_full`, ...).
    pub fn rejected_request(&self, source: &str, reason: &str) {
        self.rejected_requests
            .with_label_values(&[source, reason])
            .inc();
    }

    /// Counts records refused inside an accepted request (OTLP partial success).
    pub fn rejected_records(&self, source: &str, signal: Signal, records: u64) {
        if records > 0 {
            self.rejected_records
                .with_label_values(&[source, signal.as_str()])
                .inc_by(records);
        }
    }

    /// Counts records stored at their receipt time because their own timestamps were
    /// outside the accepted window ([`crate::Batch::retime_outside`]).
    pub fn retimed_records(&self, source: &str, records: u64) {
        if records > 0 {
            self.retimed_records
                .with_label_values(&[source])
                .inc_by(records);
        }
    }

    /// Registers a collector of another component (transforms) in the same registry.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
