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
    /// When set, a retired segment's object is deleted only once the gate allows it too
    /// (the Iceberg publisher's: no unexpired snapshot lists it).
    pub gate: Option<Arc<dyn PurgeGate>>,
}

impl std::fmt::Debug for dyn PurgeGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PurgeGate")
    }
}

/// Who else may still reference a retired segment's object (the Iceberg publisher: a
/// snapshot that has not expired).
pub trait PurgeGate: Send + Sync {
    /// Whether the object of the retired segment `s` may be deleted at `now` (unix ns).
    fn may_purge(&self, s: &SegmentRecord, now: i64) -> bool;
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
        let before = now.saturating_sub(self.config.grace.as_nanos().min(i64::MAX as u128) as i64);
        loop {
            let garbage = self.catalog.garbage(before, 500).await?;
            if garbage.is_empty() {
                break;
            }
            // A batch the gate holds back entirely ends the pass (below); the next pass asks
            // again.
            let allowed: Vec<&SegmentRecord> = garbage
                .iter()
                .filter(|s| {
                    self.config
                        .gate
                        .as_ref()
                        .is_none_or(|g| g.may_purge(s, now))
                })
                .collect();
            let mut purged = Vec::new();
            for s in allowed {
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
