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

/// A segment the control plane refused for good, as the refused ledger keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// The segment record (or the unreadable outbox record, as text).
    pub record: serde_json::Value,
    /// The control plane's answer.
    pub reason: String,
    /// When it was refused, unix nanoseconds.
    pub refused_at: i64,
}

impl Refused {
    fn new(record: serde_json::Value, reason: String) -> Refused {
        Refused {
            record,
            reason,
            refused_at: weir_catalog::now_ns(),
        }
    }
}

/// Refusals a segment itself may cause, which retrying the same request cannot change:
/// invalid, conflicting (another record under its id), too large. A token the control plane
/// does not know (401) or that lacks a tenant or the write scope (403) is retried with
/// backoff instead: it is fixed on the control plane (tokens reload on SIGHUP), and then the
/// same segments register without a restart of the agents. Since each tenant is sent on its
/// own, a tenant the token may not write holds back no other.
fn refused_for_good(e: &CatalogError) -> bool {
    matches!(
        e,
        CatalogError::Invalid(_) | CatalogError::Conflict(_) | CatalogError::TooLarge(_)
    )
}

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

    /// The segments waiting, or refused and kept (reconciliation leaves them to the outbox:
    /// a record it rebuilt from the footer would conflict with the one kept).
    pub async fn pending(&self) -> Result<Vec<SegmentRecord>, BufferError> {
        let buffer = self.buffer.clone();
        let (waiting, refused) = blocking(move || {
            Ok((
                buffer.ledger_list(Ledger::Outbox)?,
                buffer.ledger_list(Ledger::OutboxRefused)?,
            ))
        })
        .await?;
        let refused = refused.into_iter().filter_map(|(_, v)| {
            serde_json::from_slice::<Refused>(&v)
                .ok()
                .and_then(|r| serde_json::from_value(r.record).ok())
        });
        Ok(waiting
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .chain(refused)
            .collect())
    }

    /// The ids of segments whose flush was dropped at a restart (the flusher's tombstones):
    /// their objects, should their upload land late, are never registered.
    pub async fn dropped(&self) -> Result<std::collections::HashSet<uuid::Uuid>, BufferError> {
        let buffer = self.buffer.clone();
        let records = blocking(move || buffer.ledger_list(Ledger::FlushDropped)).await?;
        Ok(records
            .into_iter()
            .filter_map(|(k, _)| uuid::Uuid::from_slice(&k).ok())
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

    /// One pass: registers up to a batch, one request per tenant (so a tenant the control
    /// plane refuses, or fails on, holds back no other). A batch refused for something one of
    /// its segments may cause (invalid, conflicting, too large, forbidden) is registered one
    /// segment at a time, and each segment refused for good moves to the refused ledger with
    /// its reason ([`Ledger::OutboxRefused`]). Returns how many segments left the outbox, or
    /// the error that should delay the next attempt when none did.
    pub async fn send_once(&self) -> Result<usize, CatalogError> {
        let buffer = self.buffer.clone();
        let records = blocking(move || buffer.ledger_list(Ledger::Outbox))
            .await
            .map_err(|e| CatalogError::Storage(e.to_string()))?;
        // Up to a batch per tenant, from the whole ledger: a tenant whose segments fail
        // (retried) cannot fill a shared window and starve the others.
        let mut by_tenant: std::collections::BTreeMap<String, Vec<SegmentRecord>> =
            Default::default();
        let mut refused: Vec<(Vec<u8>, Refused)> = Vec::new();
        for (k, v) in records {
            match serde_json::from_slice::<SegmentRecord>(&v) {
                Ok(s) => {
                    let batch = by_tenant.entry(s.tenant.clone()).or_default();
                    if batch.len() < BATCH {
                        batch.push(s);
                    }
                }
                Err(e) => {
                    error!(error = %e, "unreadable outbox record moved to the refused ledger");
                    refused.push((
                        k,
                        Refused::new(
                            serde_json::Value::String(String::from_utf8_lossy(&v).into()),
                            format!("unreadable outbox record: {e}"),
                        ),
                    ));
                }
            }
        }
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut failed = None;
        for (tenant, batch) in by_tenant {
            match self.catalog.register(&batch).await {
                Ok(()) => {
                    self.metrics.outbox.registered.inc_by(batch.len() as u64);
                    done.extend(batch.iter().map(|s| s.id.as_bytes().to_vec()));
                }
                Err(e) if refused_for_good(&e) => {
                    warn!(error = %e, %tenant, "batch registration refused; registering one at a time");
                    for s in &batch {
                        match self.catalog.register(std::slice::from_ref(s)).await {
                            Ok(()) => {
                                self.metrics.outbox.registered.inc();
                                done.push(s.id.as_bytes().to_vec());
                            }
                            Err(CatalogError::Conflict(id)) if self.same_object(s).await => {
                                // The index holds this file under its id already (a record
                                // rebuilt by reconciliation differs in created_at): done.
                                debug!(segment = %id, "already registered with another record of the same object");
                                done.push(s.id.as_bytes().to_vec());
                            }
                            Err(e) if refused_for_good(&e) => {
                                self.metrics.outbox.rejected.inc();
                                error!(error = %e, segment = %s.id, key = %s.object_key, "the control plane refused a segment; it is kept in the refused ledger (its object stays in the lake, unindexed) and sent again at the next start");
                                let record =
                                    serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
                                refused.push((
                                    s.id.as_bytes().to_vec(),
                                    Refused::new(record, e.to_string()),
                                ));
                            }
                            Err(e) => {
                                failed.get_or_insert(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    self.metrics.outbox.retried.inc();
                    failed.get_or_insert(e);
                }
            }
        }
        let n = done.len() + refused.len();
        if n == 0 {
            return match failed {
                Some(e) => Err(e),
                None => Ok(0),
            };
        }
        let buffer = self.buffer.clone();
        blocking(move || {
            for (k, r) in &refused {
                let v = serde_json::to_vec(r).map_err(|e| BufferError::Storage(e.to_string()))?;
                buffer.ledger_put(Ledger::OutboxRefused, k, &v)?;
                buffer.ledger_remove(Ledger::Outbox, k)?;
            }
            for k in &done {
                buffer.ledger_remove(Ledger::Outbox, k)?;
            }
            // A refused segment's move is made durable; a removal after a registration need
            // not be: lost in a crash, it only re-sends an idempotent registration.
            if !refused.is_empty() {
                buffer.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| CatalogError::Storage(e.to_string()))?;
        self.metrics
            .outbox
            .refused_segments
            .set(self.buffer.ledger_len(Ledger::OutboxRefused) as i64);
        Ok(n)
    }

    /// Whether the index holds `s`'s object under its id (a 409 then means done).
    async fn same_object(&self, s: &SegmentRecord) -> bool {
        match self.catalog.lookup(std::slice::from_ref(&s.id)).await {
            Ok(found) => found.iter().any(|f| f.object_key == s.object_key),
            Err(_) => false,
        }
    }

    /// Segments refused for good, with their reasons, at most `max`.
    pub fn refused(buffer: &dyn Buffer, max: usize) -> Vec<Refused> {
        buffer
            .ledger_list(Ledger::OutboxRefused)
            .unwrap_or_default()
            .into_iter()
            .take(max)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// Puts the segments refused earlier back in the outbox (at start: the control plane's
    /// tokens or limits may have changed since). Unreadable records stay where they are.
    pub async fn requeue_refused(&self) -> Result<usize, BufferError> {
        let buffer = self.buffer.clone();
        let n = blocking(move || {
            let mut n = 0;
            for (k, v) in buffer.ledger_list(Ledger::OutboxRefused)? {
                let Ok(r) = serde_json::from_slice::<Refused>(&v) else {
                    continue;
                };
                let Ok(segment) = serde_json::from_value::<SegmentRecord>(r.record) else {
                    continue;
                };
                let v = serde_json::to_vec(&segment)
                    .map_err(|e| BufferError::Storage(e.to_string()))?;
                buffer.ledger_put(Ledger::Outbox, &k, &v)?;
                buffer.ledger_remove(Ledger::OutboxRefused, &k)?;
                n += 1;
            }
            if n > 0 {
                buffer.sync_all()?;
            }
            Ok(n)
        })
        .await?;
        self.metrics
            .outbox
            .refused_segments
            .set(self.buffer.ledger_len(Ledger::OutboxRefused) as i64);
        if n > 0 {
            info!(
                segments = n,
                "segments the control plane refused before are sent again"
            );
        }
        Ok(n)
    }

    /// Sends until `shutdown`, backing off while the control plane fails; one last pass at
    /// shutdown, bounded by `final_timeout`.
    pub async fn run(self, shutdown: CancellationToken, final_timeout: Duration) {
        if let Err(e) = self.requeue_refused().await {
            warn!(error = %e, "cannot put refused segments back in the outbox");
        }
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
