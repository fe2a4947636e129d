//! Reconciliation at start: objects this agent wrote to the lake that the index lacks are
//! registered (through the outbox).
//!
//! That happens when an agent's outbox was lost with its disk, or the index was restored from
//! an older backup. Only objects whose footer names this agent (`weir.agent_id`) are taken,
//! so agents sharing a lake never register each other's in-flight files, and compaction
//! outputs (footer `weir.compaction_lease`) are never taken: an output whose commit did not
//! happen must not reappear beside its inputs. The segment record is rebuilt from the footer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parquet::arrow::async_reader::AsyncFileReader;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;
use weir_catalog::layout::{
    self, FileFacts, SegmentKey, META_AGENT_ID, META_COMPACTION_LEASE, META_SIGNAL, META_TENANT,
};
use weir_catalog::{Catalog, CatalogError, SegmentRecord};

use crate::lake::{Lake, LakeObject};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Errors of reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The index failed.
    #[error("control plane: {0}")]
    Catalog(#[from] CatalogError),
    /// The lake failed.
    #[error("lake: {0}")]
    Lake(#[from] crate::lake::LakeError),
    /// The outbox failed.
    #[error("outbox: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
}

/// The key of a flushed segment (of the queryable lake or a dead-letter file, which the
/// index lists under its marker), if `key` is one.
fn segment_key(key: &str) -> Option<SegmentKey> {
    SegmentKey::parse(key).ok()
}

/// Rebuilds a segment record from an object's footer; `None` if the object is not this
/// agent's flushed segment.
async fn record_of(
    lake: &Lake,
    obj: &LakeObject,
    key: &SegmentKey,
    agent_id: &str,
) -> Option<SegmentRecord> {
    let mut reader = lake.parquet_reader(&obj.key, obj.size);
    let meta = match reader.get_metadata(None).await {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, key = %obj.key, "unreadable Parquet footer; object left alone");
            return None;
        }
    };
    let kv: HashMap<&str, &str> = meta
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv.value.as_deref().map(|v| (kv.key.as_str(), v)))
                .collect()
        })
        .unwrap_or_default();
    if kv.get(META_AGENT_ID) != Some(&agent_id) || kv.contains_key(META_COMPACTION_LEASE) {
        return None;
    }
    // The footer must agree with the key it was found under.
    if kv.get(META_TENANT) != Some(&key.tenant.as_str())
        || kv.get(META_SIGNAL) != Some(&key.signal.as_str())
    {
        warn!(key = %obj.key, "footer names another tenant or signal than its key; object left alone");
        return None;
    }
    let rows = u64::try_from(meta.file_metadata().num_rows()).ok()?;
    let facts = FileFacts::from_footer(&kv, rows, obj.size)?;
    let rec = layout::segment_record(key, facts, agent_id, obj.last_modified);
    rec.validate().ok()?;
    Some(rec)
}

/// Reconciliation of one agent's objects with the index.
pub struct Reconciler {
    /// The lake.
    pub lake: Lake,
    /// The index.
    pub catalog: Arc<dyn Catalog>,
    /// Where found segments go to be registered.
    pub outbox: Outbox,
    /// This agent: only objects whose footer names it are taken.
    pub agent_id: String,
    /// Counts what was registered.
    pub metrics: Metrics,
    /// Only objects written before this (the process's start, unix ns) are considered: what
    /// the running flusher writes reaches the index through the outbox, and taking it here
    /// too would race with it.
    pub written_before: i64,
}

impl Reconciler {
    /// Finds this agent's objects the index lacks and queues them in the outbox. Returns how
    /// many were queued. Call this after the flush journal was replayed.
    pub async fn once(&self) -> Result<usize, ReconcileError> {
        let (lake, outbox) = (&self.lake, &self.outbox);
        // The outbox first: a segment that leaves it afterwards is registered before the
        // lookup.
        let mut waiting: HashSet<Uuid> =
            outbox.pending().await?.into_iter().map(|s| s.id).collect();
        // Objects of flushes dropped at a restart (their rows were flushed again) are never
        // registered, even when a late upload made them appear.
        waiting.extend(outbox.dropped().await?);
        let objects = lake.list("").await?;
        let candidates: Vec<(SegmentKey, LakeObject)> = objects
            .into_iter()
            .filter(|o| o.last_modified < self.written_before)
            .filter_map(|o| segment_key(&o.key).map(|k| (k, o)))
            .filter(|(k, _)| !waiting.contains(&k.id))
            .collect();
        let mut missing = Vec::new();
        for chunk in candidates.chunks(1000) {
            let ids: Vec<Uuid> = chunk.iter().map(|(k, _)| k.id).collect();
            let known: HashSet<Uuid> = self
                .catalog
                .lookup(&ids)
                .await?
                .into_iter()
                .map(|s| s.id)
                .collect();
            for (key, obj) in chunk {
                if !known.contains(&key.id) {
                    if let Some(rec) = record_of(lake, obj, key, &self.agent_id).await {
                        missing.push(rec);
                    }
                }
            }
        }
        let n = missing.len();
        if n > 0 {
            for s in &missing {
                info!(segment = %s.id, key = %s.object_key, rows = s.row_count, "reconcile: registering an object the index lacks");
            }
            outbox.push(missing).await?;
            self.metrics.reconciled_segments.inc_by(n as u64);
        }
        Ok(n)
    }

    /// Reconciles once, after the flusher replayed its journal (`journal_replayed` turns
    /// true), retrying with backoff (1 s doubling to 60 s) while the control plane or the lake
    /// fails, until it succeeds or `shutdown`.
    pub async fn run(
        self,
        mut journal_replayed: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        // A journaled flush whose object is uploaded reaches the outbox through the replay;
        // taking it here first would register it with a record rebuilt from its footer.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = journal_replayed.wait_for(|done| *done) => if r.is_err() { return },
        }
        let mut wait = Duration::from_secs(1);
        loop {
            match self.once().await {
                Ok(n) => {
                    info!(registered = n, "reconciled the lake with the index");
                    return;
                }
                Err(e) => warn!(error = %e, retry_in = ?wait, "reconciliation failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let id = Uuid::now_v7();
        let key = format!("tenant=a/signal=logs/dt=2026-01-01/hour=03/{id}.parquet");
        assert_eq!(segment_key(&key).map(|k| k.id), Some(id));
        assert_eq!(
            segment_key(&key).map(|k| k.partition.path()).as_deref(),
            Some("dt=2026-01-01/hour=03")
        );
        let dead = segment_key(&format!("_dead_letter/{key}"));
        assert_eq!(
            dead.as_ref().map(|k| (k.id, k.dead_letter)),
            Some((id, true))
        );
        assert_eq!(segment_key("tenant=a/signal=logs/x.txt"), None);
    }
}
