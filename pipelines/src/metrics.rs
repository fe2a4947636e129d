//! The agent's own metrics, exposed as Prometheus text on the admin port.
//!
//! One [`Metrics`] value is created at start and shared by every component, so each event is
//! counted in one place.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of the agent.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records accepted, by source and signal.
    pub received_records: IntCounterVec,
    /// Request bytes accepted (after decompression), by source and signal.
    pub received_bytes: IntCounterVec,
    /// Requests refused, by source and reason.
    pub rejected_requests: IntCounterVec,
    /// Records refused inside otherwise accepted requests (partial success), by source.
    pub rejected_records: IntCounterVec,
    /// Live bytes in the buffer.
    pub buffer_bytes: IntGauge,
    /// Live entries in the buffer.
    pub buffer_entries: IntGauge,
    /// Entries that failed their checks and were moved aside.
    pub buffer_corrupt_entries: IntGauge,
    /// Segments flushed, by signal.
    pub segments_flushed: IntCounterVec,
    /// Rows flushed, by signal.
    pub rows_flushed: IntCounterVec,
    /// Parquet bytes flushed, by signal.
    pub bytes_flushed: IntCounterVec,
    /// Flush errors, by stage (encode, journal, upload, register, buffer).
    pub flush_errors: IntCounterVec,
    /// Time from the start of a flush to its registration.
    pub flush_duration: Histogram,
    /// Partitions waiting to be flushed.
    pub pending_partitions: IntGaugeVec,
    /// Whether the agent is shutting down (1) or serving (0).
    pub shutting_down: IntCounter,
    /// Segments waiting for the control plane to acknowledge their registration.
    pub outbox_segments: IntGauge,
    /// Registrations sent from the outbox, by result (ok, retry, rejected).
    pub outbox_registrations: IntCounterVec,
    /// Unix seconds of the last segment flushed.
    pub last_flush_seconds: IntGauge,
    /// Compactions by result (committed, lease_lost, failed).
    pub compactions: IntCounterVec,
    /// Segments merged away by committed compactions.
    pub compacted_segments: IntCounter,
    /// Segments removed from the index by retention.
    pub retention_expired: IntCounter,
    /// Objects deleted from the lake (compacted inputs and expired segments).
    pub objects_deleted: IntCounter,
    /// Objects registered by reconciliation at start.
    pub reconciled_segments: IntCounter,
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
            buffer_bytes: gauge("buffer_bytes", "Live bytes in the durable buffer"),
            buffer_entries: gauge("buffer_entries", "Live entries in the durable buffer"),
            buffer_corrupt_entries: gauge(
                "buffer_corrupt_entries",
                "Buffer entries moved aside as corrupt",
            ),
            segments_flushed: counter(
                &r,
                "segments_flushed_total",
                "Parquet segments written and registered",
                &["signal"],
            ),
            rows_flushed: counter(
                &r,
                "rows_flushed_total",
                "Rows written to the lake",
                &["signal"],
            ),
            bytes_flushed: counter(
                &r,
                "flushed_bytes_total",
                "Parquet bytes written to the lake",
                &["signal"],
            ),
            flush_errors: counter(&r, "flush_errors_total", "Flush failures", &["stage"]),
            flush_duration,
            pending_partitions: pending,
            shutting_down,
            outbox_segments: gauge("outbox_segments", "Segments awaiting registration"),
            outbox_registrations: counter(
                &r,
                "outbox_registrations_total",
                "Registration attempts from the outbox",
                &["result"],
            ),
            last_flush_seconds: gauge("last_flush_seconds", "Unix time of the last flush"),
            compactions: counter(&r, "compactions_total", "Compactions run", &["result"]),
            compacted_segments: counter(
                &r,
                "compacted_segments_total",
                "Segments merged away by compaction",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            retention_expired: counter(
                &r,
                "retention_expired_segments_total",
                "Segments expired by retention",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            objects_deleted: counter(
                &r,
                "lake_objects_deleted_total",
                "Objects deleted from the lake",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            reconciled_segments: counter(
                &r,
                "reconciled_segments_total",
                "Lake objects registered at start because the index lacked them",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            registry: r,
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
