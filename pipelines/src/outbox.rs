//! The registration outbox: segments that are in the lake but not yet acknowledged by the
//! control plane wait in a sled ledger beside the buffer, and are registered in batches with
//! exponential backoff. The flusher never waits for the control plane, so an agent keeps
//! accepting and flushing while it is down; registration is idempotent by segment id, so a
//! retry after a lost acknowledgement does not create a second entry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use weir_catalog::{Catalog, CatalogError, SegmentRecord};

use crate::buffer::{off_thread as blocking, Buffer, BufferError, Ledger};
use crate::metrics::Metrics;

/// Segments registered per request.
const BATCH: usize = 256;
/// Longest wait between attempts while the control plane is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Registers outboxed segments with the control plane. Clones share the ledger and the
/// wake-up, so a clone can push (reconciliation) while the original runs.
#[derive(Clone)]
pub struct Outbox {
    buffer: Arc<dyn Buffer>,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox over the buffer's ledger; `wake` is notified by the flusher.
    pub fn new(
        buffer: Arc<dyn Buffer>,
        catalog: Arc<dyn Catalog>,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Outbox {
        Outbox {
            buffer,
            catalog,
            metrics,
            wake,
        }
    }

    /// Segments waiting for registration.
    pub fn len(&self) -> usize {
        self.buffer.ledger_len(Ledger::Outbox)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of the segments waiting (reconciliation leaves them to the outbox).
    pub async fn pending(&self) -> Result<Vec<SegmentRecord>, BufferError> {
        let buffer = self.buffer.clone();
        let records = blocking(move || buffer.ledger_list(Ledger::Outbox)).await?;
        Ok(records
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Puts segments in the outbox (reconciliation) and wakes the sender.
    pub async fn push(&self, segments: Vec<SegmentRecord>) -> Result<(), BufferError> {
        let buffer = self.buffer.clone();
        blocking(move || {
            for s in &segments {
                let v = serde_json::to_vec(s).map_err(|e| BufferError::Storage(e.to_string()))?;
                buffer.ledger_put(Ledger::Outbox, s.id.as_bytes(), &v)?;
            }
            buffer.sync_all()
        })
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// One pass: registers up to a batch. Returns how many segments left the outbox, or the
    /// error that should delay the next attempt.
    pub async fn send_once(&self) -> Result<usize, CatalogError> {
        let buffer = self.buffer.clone();
        let records = blocking(move || buffer.ledger_list(Ledger::Outbox))
            .await
            .map_err(|e| CatalogError::Storage(e.to_string()))?;
        let mut batch = Vec::new();
        let mut unreadable = Vec::new();
        for (k, v) in records.into_iter().take(BATCH) {
            match serde_json::from_slice::<SegmentRecord>(&v) {
                Ok(s) => batch.push(s),
                Err(e) => {
                    error!(error = %e, "unreadable outbox record dropped");
                    unreadable.push(k);
                }
            }
        }
        if batch.is_empty() && unreadable.is_empty() {
            return Ok(0);
        }
        let mut done: Vec<Vec<u8>> = unreadable;
        match self.catalog.register(&batch).await {
            Ok(()) => {
                self.metrics.outbox.registered.inc_by(batch.len() as u64);
                done.extend(batch.iter().map(|s| s.id.as_bytes().to_vec()));
            }
            Err(
                e @ (CatalogError::Invalid(_)
                | CatalogError::Conflict(_)
                | CatalogError::TooLarge(_)),
            ) => {
                // One bad record must not hold back the others: register one by one.
                warn!(error = %e, "batch registration refused; registering one at a time");
                for s in &batch {
                    match self.catalog.register(std::slice::from_ref(s)).await {
                        Ok(()) => {
                            self.metrics.outbox.registered.inc();
                            done.push(s.id.as_bytes().to_vec());
                        }
                        Err(
                            e @ (CatalogError::Invalid(_)
                            | CatalogError::Conflict(_)
                            | CatalogError::TooLarge(_)),
                        ) => {
                            self.metrics.outbox.rejected.inc();
                            error!(error = %e, segment = %s.id, key = %s.object_key, "the control plane refused a segment; its object stays in the lake unindexed");
                            done.push(s.id.as_bytes().to_vec());
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => {
                self.metrics.outbox.retried.inc();
                return Err(e);
            }
        }
        let n = done.len();
        let buffer = self.buffer.clone();
        blocking(move || {
            for k in &done {
                buffer.ledger_remove(Ledger::Outbox, k)?;
            }
            // Not fsynced: a removal lost in a crash only re-sends an idempotent registration.
            Ok(())
        })
        .await
        .map_err(|e| CatalogError::Storage(e.to_string()))?;
        Ok(n)
    }

    /// Sends until `shutdown`, backing off while the control plane fails; one last pass at
    /// shutdown, bounded by `final_timeout`.
    pub async fn run(self, shutdown: CancellationToken, final_timeout: Duration) {
        let mut failures = 0u32;
        loop {
            let sent = self.send_once().await;
            self.metrics.outbox.segments.set(self.len() as i64);
            let wait = match sent {
                Ok(0) => {
                    failures = 0;
                    Duration::from_secs(5)
                }
                Ok(n) => {
                    if failures > 0 {
                        info!("control plane reachable again; outbox draining");
                    }
                    failures = 0;
                    debug!(segments = n, "registered");
                    Duration::ZERO
                }
                Err(e) => {
                    failures += 1;
                    let backoff =
                        Duration::from_millis(100u64.saturating_mul(1 << failures.min(9)))
                            .min(MAX_BACKOFF);
                    warn!(error = %e, waiting = self.len(), retry_in = ?backoff, "segment registration failed; the outbox keeps them");
                    backoff
                }
            };
            if wait.is_zero() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let drain = async {
            while let Ok(n) = self.send_once().await {
                if n == 0 {
                    break;
                }
            }
        };
        if tokio::time::timeout(final_timeout, drain).await.is_err() || !self.is_empty() {
            warn!(
                waiting = self.len(),
                "segments still await registration; they are sent on the next start"
            );
        }
        self.metrics.outbox.segments.set(self.len() as i64);
    }
}
