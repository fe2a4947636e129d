//! The sled index's transaction layer: the trees one change writes, in one sled transaction,
//! and the key encodings of its secondary trees (by tenant, signal and time; by retirement
//! time).

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use uuid::Uuid;

use super::storage;
use crate::faults::{FaultPoint, Faults};
use crate::{CatalogError, CompactionLease, SegmentRecord, SegmentState};

/// The trees of one change, inside its transaction.
pub(super) struct Tx<'a> {
    pub(super) segments: &'a TransactionalTree,
    pub(super) by_time: &'a TransactionalTree,
    pub(super) retired: &'a TransactionalTree,
    pub(super) leases: &'a TransactionalTree,
    pub(super) segment_leases: &'a TransactionalTree,
    pub(super) faults: &'a Faults,
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<CatalogError>>;

pub(super) fn abort(e: CatalogError) -> ConflictableTransactionError<CatalogError> {
    ConflictableTransactionError::Abort(e)
}

impl Tx<'_> {
    pub(super) fn put(&self, s: &SegmentRecord) -> TxResult<()> {
        let value = serde_json::to_vec(s).map_err(|e| abort(storage(e)))?;
        self.segments.insert(s.id.as_bytes(), value)?;
        Ok(())
    }

    pub(super) fn insert_active(&self, s: &SegmentRecord) -> TxResult<()> {
        let tkey = time_key(&s.tenant, &s.signal, Some(s.max_timestamp), Some(s.id));
        self.by_time.insert(tkey, &[])?;
        self.put(s)
    }

    pub(super) fn retire(
        &self,
        mut s: SegmentRecord,
        state: SegmentState,
        replaced_by: Option<Uuid>,
        at: i64,
    ) -> TxResult<()> {
        self.by_time.remove(time_key(
            &s.tenant,
            &s.signal,
            Some(s.max_timestamp),
            Some(s.id),
        ))?;
        s.state = state;
        s.replaced_by = replaced_by;
        s.retired_at = Some(at);
        self.retired.insert(retired_key(at, s.id), &[])?;
        self.segment_leases.remove(s.id.as_bytes())?;
        self.put(&s)
    }

    pub(super) fn put_lease(&self, id: Uuid, entry: &LeaseEntry) -> TxResult<()> {
        let value = serde_json::to_vec(entry).map_err(|e| abort(storage(e)))?;
        self.leases.insert(id.as_bytes(), value)?;
        Ok(())
    }

    pub(super) fn fault(&self, point: FaultPoint) -> TxResult<()> {
        self.faults.check(point).map_err(abort)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LeaseEntry {
    pub(super) lease: CompactionLease,
    pub(super) agent_id: String,
    pub(super) committed: bool,
    /// Expired without a commit and given up: a late commit is refused.
    #[serde(default)]
    pub(super) abandoned: bool,
    /// The abandoned lease's output is gone from the lake.
    #[serde(default)]
    pub(super) cleaned: bool,
}

fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1u64 << 63)).to_be_bytes()
}

pub(super) fn time_key(
    tenant: &str,
    signal: &str,
    max_ts: Option<i64>,
    id: Option<Uuid>,
) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + signal.len() + 26);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(signal.as_bytes());
    k.push(0);
    if let Some(ts) = max_ts {
        k.extend_from_slice(&ordered_i64(ts));
        if let Some(id) = id {
            k.extend_from_slice(id.as_bytes());
        }
    }
    k
}

pub(super) fn retired_key(at: i64, id: Uuid) -> Vec<u8> {
    let mut k = ordered_i64(at).to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}
