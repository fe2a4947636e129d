//! The sweeper: applies retention and deletes the objects of retired segments.
//!
//! Order matters: a segment leaves the index first (retention marks it `deleted`, a
//! compaction commit marks its inputs `compacted`), and its object is deleted only after
//! `grace`, so a query that listed the segment just before can still read it. An object is
//! marked purged in the index only after its deletion succeeded; a failed deletion is
//! retried on the next pass.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weir_catalog::{Catalog, CatalogError, RetentionPolicy, SegmentRecord};

use crate::lake::Lake;
use crate::metrics::Metrics;

/// Settings of the sweeper.
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// Retention per tenant and signal.
    pub policy: RetentionPolicy,
    /// How often it runs.
    pub interval: Duration,
    /// How long a retired segment's object is kept before deletion.
    pub grace: Duration,
    /// Report what retention would delete, and change nothing.
    pub dry_run: bool,
    /// When set, objects are deleted only if retired before this time (unix ns) too: the
    /// Iceberg publisher's horizon, before which no unexpired snapshot lists a retired
    /// segment ([`PurgeHorizon`]).
    pub horizon: Option<PurgeHorizon>,
}

/// A time (unix ns) before which retired segments may be deleted, moved forward by whoever
/// still references them (the Iceberg publisher). Starts at 0: nothing is deleted until the
/// first move.
#[derive(Debug, Clone, Default)]
pub struct PurgeHorizon(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl PurgeHorizon {
    /// The horizon.
    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Moves the horizon forward to `at` (never back).
    pub fn advance(&self, at: i64) {
        self.0.fetch_max(at, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What one pass did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Segments that left the index by retention (or would, in a dry run).
    pub expired: Vec<SegmentRecord>,
    /// Objects deleted from the lake.
    pub deleted_objects: Vec<String>,
    /// Keys where abandoned compactions would have written (deleted if present).
    pub abandoned_outputs: Vec<String>,
    /// Finished leases forgotten.
    pub pruned_leases: u64,
}

/// How long finished leases are remembered (a retried commit within it is answered as the
/// first was).
const LEASE_HISTORY_NS: i64 = 24 * 3_600 * 1_000_000_000;

/// Applies retention and deletes retired objects.
pub struct Sweeper {
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    config: SweeperConfig,
}

impl Sweeper {
    /// A sweeper over a lake and its index.
    pub fn new(
        lake: Lake,
        catalog: Arc<dyn Catalog>,
        metrics: Metrics,
        config: SweeperConfig,
    ) -> Self {
        Sweeper {
            lake,
            catalog,
            metrics,
            config,
        }
    }

    /// One pass at `now` (unix ns).
    pub async fn sweep(&self, now: i64) -> Result<SweepReport, CatalogError> {
        let expired = self
            .catalog
            .expire(&self.config.policy, now, self.config.dry_run)
            .await?;
        for s in &expired {
            if self.config.dry_run {
                info!(segment = %s.id, tenant = %s.tenant, signal = %s.signal, key = %s.object_key, max_timestamp = s.max_timestamp, rows = s.row_count, "retention dry run: would delete");
            } else {
                info!(segment = %s.id, tenant = %s.tenant, signal = %s.signal, key = %s.object_key, "retention: segment expired");
            }
        }
        let mut report = SweepReport {
            expired,
            deleted_objects: Vec::new(),
            abandoned_outputs: Vec::new(),
            pruned_leases: 0,
        };
        if self.config.dry_run {
            return Ok(report);
        }
        self.metrics
            .retention_expired
            .inc_by(report.expired.len() as u64);
        let mut before =
            now.saturating_sub(self.config.grace.as_nanos().min(i64::MAX as u128) as i64);
        if let Some(h) = &self.config.horizon {
            before = before.min(h.get());
        }
        loop {
            let garbage = self.catalog.garbage(before, 500).await?;
            if garbage.is_empty() {
                break;
            }
            let mut purged = Vec::new();
            for s in &garbage {
                match self.lake.delete(&s.object_key).await {
                    Ok(()) => {
                        purged.push(s.id);
                        report.deleted_objects.push(s.object_key.clone());
                    }
                    Err(e) => {
                        warn!(error = %e, key = %s.object_key, "could not delete a retired object; will retry")
                    }
                }
            }
            if purged.is_empty() {
                break;
            }
            self.catalog.mark_purged(&purged, now).await?;
            self.metrics.objects_deleted.inc_by(purged.len() as u64);
            if garbage.len() < 500 {
                break;
            }
        }
        // Outputs of compactions that expired without a commit (the compactor died after
        // uploading): the lease is abandoned first, so a late commit is refused, then the
        // object goes.
        let abandoned = self.catalog.abandon_expired_leases(before, 500).await?;
        let mut cleaned = Vec::new();
        for l in &abandoned {
            let key = match l.output_key() {
                Ok(k) => k,
                Err(e) => {
                    warn!(error = %e, lease = %l.lease_id, "abandoned lease names no lake key; nothing to delete");
                    cleaned.push(l.lease_id);
                    continue;
                }
            };
            match self.lake.delete(&key).await {
                Ok(()) => {
                    cleaned.push(l.lease_id);
                    report.abandoned_outputs.push(key);
                }
                Err(e) => {
                    warn!(error = %e, %key, "could not delete an abandoned compaction output; will retry")
                }
            }
        }
        if !cleaned.is_empty() {
            self.catalog.mark_leases_cleaned(&cleaned).await?;
        }
        report.pruned_leases = self
            .catalog
            .prune_leases(now.saturating_sub(LEASE_HISTORY_NS))
            .await?;
        Ok(report)
    }

    /// Sweeps every `interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.sweep(weir_catalog::now_ns()).await {
                warn!(error = %e, "sweep failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}
