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
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;
use weir_control_plane::{Catalog, CatalogError, SegmentRecord, SegmentState};
use weir_schema::{
    META_MAX_TIMESTAMP, META_MIN_TIMESTAMP, META_SCHEMA_VERSION, META_SIGNAL, META_TENANT,
};

use crate::compactor::META_COMPACTION_LEASE;
use crate::flusher::{DEAD_LETTER_PREFIX, META_AGENT_ID};
use crate::lake::{Lake, LakeObject};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::parquet_writer::META_SERVICES;

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

/// The segment id of a lake key `tenant=…/signal=…/dt=…/hour=…/{id}.parquet`.
fn segment_id(key: &str) -> Option<Uuid> {
    if key.starts_with(DEAD_LETTER_PREFIX) || !key.starts_with("tenant=") {
        return None;
    }
    let name = key.rsplit('/').next()?.strip_suffix(".parquet")?;
    Uuid::parse_str(name).ok()
}

fn partition_of(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [_, _, dt, hour, _] if dt.starts_with("dt=") && hour.starts_with("hour=") => {
            Some(format!("{dt}/{hour}"))
        }
        _ => None,
    }
}

/// Rebuilds a segment record from an object's footer; `None` if the object is not this
/// agent's flushed segment.
async fn record_of(
    lake: &Lake,
    obj: &LakeObject,
    id: Uuid,
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
    let rec = SegmentRecord {
        id,
        tenant: kv.get(META_TENANT)?.to_string(),
        signal: kv.get(META_SIGNAL)?.to_string(),
        object_key: obj.key.clone(),
        partition: partition_of(&obj.key)?,
        min_timestamp: kv.get(META_MIN_TIMESTAMP)?.parse().ok()?,
        max_timestamp: kv.get(META_MAX_TIMESTAMP)?.parse().ok()?,
        row_count: u64::try_from(meta.file_metadata().num_rows()).ok()?,
        bytes: obj.size,
        services: kv
            .get(META_SERVICES)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
        schema_version: kv.get(META_SCHEMA_VERSION)?.parse().ok()?,
        agent_id: agent_id.to_string(),
        created_at: obj.last_modified,
        state: SegmentState::Active,
        replaced_by: None,
        retired_at: None,
        purged_at: None,
    };
    rec.validate().ok()?;
    Some(rec)
}

/// Finds this agent's objects the index lacks and queues them in the outbox. Returns how
/// many were queued.
///
/// Only objects written before `written_before` (the process's start) are considered: what
/// the running flusher writes reaches the index through the outbox, and taking it here too
/// would race with it. Call this after the flush journal was replayed.
pub async fn reconcile(
    lake: &Lake,
    catalog: &dyn Catalog,
    outbox: &Outbox,
    agent_id: &str,
    metrics: &Metrics,
    written_before: i64,
) -> Result<usize, ReconcileError> {
    // The outbox first: a segment that leaves it afterwards is registered before the lookup.
    let waiting: HashSet<Uuid> = outbox.pending().await?.into_iter().map(|s| s.id).collect();
    let objects = lake.list("").await?;
    let candidates: Vec<(Uuid, LakeObject)> = objects
        .into_iter()
        .filter(|o| o.last_modified < written_before)
        .filter_map(|o| segment_id(&o.key).map(|id| (id, o)))
        .filter(|(id, _)| !waiting.contains(id))
        .collect();
    let mut missing = Vec::new();
    for chunk in candidates.chunks(1000) {
        let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        let known: HashSet<Uuid> = catalog
            .lookup(&ids)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        for (id, obj) in chunk {
            if !known.contains(id) {
                if let Some(rec) = record_of(lake, obj, *id, agent_id).await {
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
        metrics.reconciled_segments.inc_by(n as u64);
    }
    Ok(n)
}

/// Reconciles once, retrying with backoff (1 s doubling to 60 s) while the control plane or
/// the lake fails, until it succeeds or `shutdown`.
pub async fn run(
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    outbox: Outbox,
    agent_id: String,
    metrics: Metrics,
    written_before: i64,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        match reconcile(
            &lake,
            catalog.as_ref(),
            &outbox,
            &agent_id,
            &metrics,
            written_before,
        )
        .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let id = Uuid::now_v7();
        let key = format!("tenant=a/signal=logs/dt=2026-01-01/hour=03/{id}.parquet");
        assert_eq!(segment_id(&key), Some(id));
        assert_eq!(partition_of(&key).as_deref(), Some("dt=2026-01-01/hour=03"));
        assert_eq!(segment_id(&format!("_dead_letter/{key}")), None);
        assert_eq!(segment_id("tenant=a/signal=logs/x.txt"), None);
    }
}
