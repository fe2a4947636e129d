//! The embedded segment index on sled.
//!
//! Trees:
//! - `segments`: segment id (16 bytes, UUIDv7 so time-ordered) → the record as JSON;
//! - `segments_by_time`: `tenant 0x00 signal 0x00 max_timestamp(8, order-preserving) id(16)` →
//!   empty, for active segments only: the listing order, so a query for one tenant, signal and
//!   `from` bound is a range scan;
//! - `segments_retired`: `retired_at(8) id(16)` → empty, for retired segments whose object is
//!   not purged yet (the garbage queue);
//! - `leases`: lease id → the lease as JSON; `segment_leases`: segment id → lease id;
//! - `agents`: agent id → its last status as JSON;
//! - `iceberg`: `tenant 0x00 signal` → the table's [`IcebergPointer`] as JSON.
//!
//! Every change goes through one lock, so leases and commits are serialized: two compactors
//! can never be handed the same inputs, and a change reads a consistent view before it writes.
//!
//! # Atomicity and durability
//!
//! A change writes several records, often in several trees (a compaction commit: the outputs
//! in `segments` and `segments_by_time`, each input's record, listing key, garbage-queue key
//! and lease link, and the lease). Each change is one sled transaction over the trees
//! ([`SledCatalog::transact`]): sled logs it as one batch and recovery after a crash replays
//! it whole or not at all. So a crash can never leave a compaction's output active beside
//! inputs still active (rows listed twice), nor inputs compacted under a lease still open
//! (whose output the sweeper would then delete as an abandoned lease's leftover). Retention
//! retires expired segments in groups of [`EXPIRE_GROUP`], each group one transaction.
//!
//! A change is acknowledged (its call returns) only after a durable commit that covers it
//! ([`DurableSled`]: sled's own `flush()` is not durable on Linux), made after the lock is
//! released, so that concurrent changes share one commit. A call that changes nothing (an
//! idempotent retry) also waits for a commit of what is already there, which an earlier call
//! may still be committing. Heartbeats are the exception: the fleet view is refreshed every few
//! seconds, so they are written without a commit of their own. Once a commit has failed, the
//! index refuses every change until it is reopened (the process restarted).
//!
//! Fault points ([`crate::faults`]) sit between the writes of each change, inside its
//! transaction, for the conformance suite's crash cases.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sled::transaction::TransactionError;
use sled::Transactional;
use uuid::Uuid;
use weir_catalog::sled_durable::{DurableError, DurableSled, FileSync, OsSync};

use crate::faults::{FaultPoint, Faults};
use crate::plan::plan_inputs;
use crate::{
    AgentHeartbeat, AgentStatus, Catalog, CatalogError, CompactionLease, IcebergPointer,
    LeaseRequest, RetentionPolicy, SegmentPage, SegmentQuery, SegmentRecord, SegmentState,
};

/// Expired segments retired per transaction: bounds the memory and the time a retention pass
/// holds sled's transaction lock, while each segment still leaves the index whole.
const EXPIRE_GROUP: usize = 1024;

/// The embedded sled segment index.
#[derive(Clone)]
pub struct SledCatalog {
    durable: Arc<DurableSled>,
    segments: sled::Tree,
    by_time: sled::Tree,
    retired: sled::Tree,
    leases: sled::Tree,
    segment_leases: sled::Tree,
    agents: sled::Tree,
    iceberg: sled::Tree,
    write: Arc<Mutex<()>>,
    /// Changes applied so far: the group commit's positions.
    changes: Arc<AtomicU64>,
    faults: Faults,
}

mod iceberg;
mod tx;
use tx::{retired_key, time_key, LeaseEntry, Tx, TxResult};

fn storage<E: std::fmt::Display>(e: E) -> CatalogError {
    CatalogError::Storage(e.to_string())
}

impl SledCatalog {
    /// Opens (or creates) the index in a directory of its own.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        Self::open_with_sync(path, Arc::new(OsSync))
    }

    /// Opens the index with its fsyncs going through `syncer`: the fault point of tests that
    /// fail an fsync ([`SledCatalog::open`] passes the real one), as
    /// `SledBuffer::open_with_sync` is the buffer's.
    ///
    /// For fault-injection tests only: a no-op [`FileSync`] turns off durability.
    #[doc(hidden)]
    pub fn open_with_sync(path: &Path, syncer: Arc<dyn FileSync>) -> Result<Self, CatalogError> {
        let durable = DurableSled::open(path, sled::Config::new().cache_capacity(32 << 20), syncer)
            .map_err(from_durable)?;
        let db = durable.db();
        Ok(SledCatalog {
            segments: db.open_tree("segments")?,
            by_time: db.open_tree("segments_by_time")?,
            retired: db.open_tree("segments_retired")?,
            leases: db.open_tree("leases")?,
            segment_leases: db.open_tree("segment_leases")?,
            agents: db.open_tree("agents")?,
            iceberg: db.open_tree("iceberg")?,
            durable: Arc::new(durable),
            write: Arc::new(Mutex::new(())),
            changes: Arc::new(AtomicU64::new(0)),
            faults: Faults::default(),
        })
    }

    /// Uses these armed fault points (tests: [`crate::faults`]).
    #[doc(hidden)]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Applies one change in one sled transaction over the index's trees (see the module
    /// docs). The caller holds the write lock and has read what it needs; `f` only writes.
    fn transact<T>(&self, f: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T, CatalogError> {
        self.durable.check_usable().map_err(from_durable)?;
        let result = (
            &self.segments,
            &self.by_time,
            &self.retired,
            &self.leases,
            &self.segment_leases,
        )
            .transaction(|(segments, by_time, retired, leases, segment_leases)| {
                f(&Tx {
                    segments,
                    by_time,
                    retired,
                    leases,
                    segment_leases,
                    faults: &self.faults,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })?;
        self.changes.fetch_add(1, Ordering::AcqRel);
        Ok(result)
    }

    /// Waits for a durable commit of every change applied so far (call without the lock).
    fn durable(&self) -> Result<(), CatalogError> {
        let applied = self.changes.load(Ordering::Acquire);
        self.durable
            .sync_through(applied, || self.changes.load(Ordering::Acquire))
            .map_err(from_durable)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no partial sled state worth refusing.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &[u8]) -> Result<Option<SegmentRecord>, CatalogError> {
        match self.segments.get(id)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| CatalogError::Corrupt {
                    key: hex_id(id),
                    reason: e.to_string(),
                }),
        }
    }

    fn get_lease(&self, id: Uuid) -> Result<Option<LeaseEntry>, CatalogError> {
        match self.leases.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| CatalogError::Corrupt {
                    key: format!("lease {id}"),
                    reason: e.to_string(),
                }),
        }
    }

    /// Whether a segment is held by a live (unexpired, uncommitted) lease.
    fn leased(&self, id: Uuid, now: i64) -> Result<Option<Uuid>, CatalogError> {
        let Some(l) = self.segment_leases.get(id.as_bytes())? else {
            return Ok(None);
        };
        let lease = Uuid::from_slice(&l).map_err(storage)?;
        Ok(match self.get_lease(lease)? {
            Some(e) if !e.committed && e.lease.expires_at > now => Some(lease),
            _ => None,
        })
    }

    fn register_blocking(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        for s in segments {
            s.validate()?;
        }
        {
            let _g = self.lock();
            let mut new: Vec<&SegmentRecord> = Vec::with_capacity(segments.len());
            for s in segments {
                match self.get(s.id.as_bytes())? {
                    Some(existing) if same_registration(&existing, s) => {}
                    Some(_) => return Err(CatalogError::Conflict(s.id)),
                    // A batch that names a new id twice with different contents conflicts
                    // with itself.
                    None => match new.iter().find(|n| n.id == s.id) {
                        Some(n) if *n != s => return Err(CatalogError::Conflict(s.id)),
                        Some(_) => {}
                        None => new.push(s),
                    },
                }
            }
            if !new.is_empty() {
                self.transact(|tx| {
                    for s in &new {
                        tx.insert_active(s)?;
                        tx.fault(FaultPoint::RegisterPartway)?;
                    }
                    Ok(())
                })?;
            }
        }
        self.durable()
    }

    /// Active segments in listing order, from a start key, while `prefix` matches.
    fn scan_active(
        &self,
        prefix: &[u8],
        start: Vec<u8>,
    ) -> impl Iterator<Item = Result<SegmentRecord, CatalogError>> + '_ {
        let prefix = prefix.to_vec();
        self.by_time
            .range(start..)
            .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .filter_map(move |item| match item {
                Err(e) => Some(Err(e.into())),
                Ok((k, _)) if k.len() < 16 => None,
                Ok((k, _)) => self.get(&k[k.len() - 16..]).transpose(),
            })
    }

    fn list_blocking(&self, q: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        q.validate()?;
        let limit = q.page_size()?;
        let prefix = match &q.signal {
            Some(sig) => time_key(&q.tenant, sig, None, None),
            None => {
                let mut p = q.tenant.as_bytes().to_vec();
                p.push(0);
                p
            }
        };
        let mut start = prefix.clone();
        if let (Some(sig), Some(from)) = (&q.signal, q.from) {
            start = time_key(&q.tenant, sig, Some(from), None);
        }
        if let Some(cursor) = &q.cursor {
            let c = hex::decode(cursor)
                .map_err(|_| CatalogError::Invalid(format!("cursor {cursor:?} is not valid")))?;
            if !c.starts_with(&prefix) {
                return Err(CatalogError::Invalid(format!(
                    "cursor {cursor:?} does not belong to this query"
                )));
            }
            let mut after = c;
            after.push(0);
            if after > start {
                start = after;
            }
        }
        let mut segments = Vec::new();
        let mut next_cursor = None;
        for seg in self.scan_active(&prefix, start) {
            let seg = seg?;
            if !q.matches(&seg) {
                continue;
            }
            if segments.len() == limit {
                next_cursor = segments.last().map(|s: &SegmentRecord| {
                    hex::encode(time_key(
                        &s.tenant,
                        &s.signal,
                        Some(s.max_timestamp),
                        Some(s.id),
                    ))
                });
                break;
            }
            segments.push(seg);
        }
        Ok(SegmentPage {
            segments,
            next_cursor,
        })
    }

    fn lease_blocking(&self, req: &LeaseRequest) -> Result<Option<CompactionLease>, CatalogError> {
        req.validate()?;
        let now = crate::now_ns();
        let created_before = now.saturating_sub((req.min_age_ms as i64).saturating_mul(1_000_000));
        let lease = {
            let _g = self.lock();
            self.plan_and_lease(req, now, created_before)?
        };
        if lease.is_some() {
            self.durable()?;
        }
        Ok(lease)
    }

    fn plan_and_lease(
        &self,
        req: &LeaseRequest,
        now: i64,
        created_before: i64,
    ) -> Result<Option<CompactionLease>, CatalogError> {
        let prefix = match &req.tenant {
            Some(t) => {
                let mut p = t.as_bytes().to_vec();
                p.push(0);
                p
            }
            None => Vec::new(),
        };
        // Group the candidates by partition, then plan the partition with the oldest data.
        type Group = (String, String, String, u32);
        let mut groups: std::collections::BTreeMap<Group, Vec<SegmentRecord>> = Default::default();
        for seg in self.scan_active(&prefix, prefix.clone()) {
            let seg = seg?;
            if seg.bytes >= req.target_bytes
                || seg.is_dead_letter()
                || seg.created_at > created_before
                || req.schema_version.is_some_and(|v| v != seg.schema_version)
                || self.leased(seg.id, now)?.is_some()
            {
                continue;
            }
            groups
                .entry((
                    seg.tenant.clone(),
                    seg.signal.clone(),
                    seg.partition.clone(),
                    seg.schema_version,
                ))
                .or_default()
                .push(seg);
        }
        let mut plans: Vec<(Group, Vec<SegmentRecord>)> = groups
            .into_iter()
            .filter_map(|(g, mut c)| {
                c.sort_by_key(|s| (s.min_timestamp, s.id));
                let plan = plan_inputs(&c, req);
                (!plan.is_empty()).then_some((g, plan))
            })
            .collect();
        plans.sort_by_key(|(_, p)| p.iter().map(|s| s.min_timestamp).min());
        let Some(((tenant, signal, partition, schema_version), inputs)) = plans.into_iter().next()
        else {
            return Ok(None);
        };
        let lease = CompactionLease {
            lease_id: Uuid::now_v7(),
            tenant,
            signal,
            partition,
            schema_version,
            inputs,
            expires_at: now.saturating_add((req.ttl_ms as i64).saturating_mul(1_000_000)),
        };
        let entry = LeaseEntry {
            lease: lease.clone(),
            agent_id: req.agent_id.clone(),
            committed: false,
            abandoned: false,
            cleaned: false,
        };
        self.transact(|tx| {
            tx.put_lease(lease.lease_id, &entry)?;
            tx.fault(FaultPoint::LeaseRecorded)?;
            for s in &lease.inputs {
                tx.segment_leases
                    .insert(s.id.as_bytes(), lease.lease_id.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(Some(lease))
    }

    fn commit_blocking(
        &self,
        lease_id: Uuid,
        outputs: &[SegmentRecord],
    ) -> Result<(), CatalogError> {
        {
            let _g = self.lock();
            self.commit_locked(lease_id, outputs)?;
        }
        self.durable()
    }

    fn commit_locked(&self, lease_id: Uuid, outputs: &[SegmentRecord]) -> Result<(), CatalogError> {
        let lost = |reason: &str| CatalogError::LeaseLost {
            lease: lease_id,
            reason: reason.into(),
        };
        let Some(mut entry) = self.get_lease(lease_id)? else {
            return Err(lost("unknown lease"));
        };
        if entry.committed {
            // A retried commit of the same outputs succeeds; anything else is refused.
            let known = outputs
                .iter()
                .map(|o| self.get(o.id.as_bytes()))
                .collect::<Result<Vec<_>, _>>()?;
            if known
                .iter()
                .zip(outputs)
                .all(|(k, o)| k.as_ref().is_some_and(|k| same_registration(k, o)))
            {
                return Ok(());
            }
            return Err(lost("already committed"));
        }
        if entry.abandoned {
            return Err(lost("expired and abandoned; its output is deleted"));
        }
        entry.lease.check_outputs(outputs)?;
        let mut inputs = Vec::with_capacity(entry.lease.inputs.len());
        for i in &entry.lease.inputs {
            let held = self
                .segment_leases
                .get(i.id.as_bytes())?
                .is_some_and(|l| l.as_ref() == lease_id.as_bytes());
            let current = self.get(i.id.as_bytes())?;
            match current {
                Some(s) if held && s.state == SegmentState::Active => inputs.push(s),
                _ => return Err(lost(&format!("input {} was re-leased or retired", i.id))),
            }
        }
        for o in outputs {
            if self.get(o.id.as_bytes())?.is_some() {
                return Err(CatalogError::Conflict(o.id));
            }
        }
        let now = crate::now_ns();
        let first = outputs[0].id;
        entry.committed = true;
        // One transaction: the swap is one unit for readers, and for recovery after a crash.
        self.transact(|tx| {
            for o in outputs {
                tx.insert_active(o)?;
            }
            tx.fault(FaultPoint::CommitOutputsWritten)?;
            for s in &inputs {
                tx.retire(s.clone(), SegmentState::Compacted, Some(first), now)?;
            }
            tx.fault(FaultPoint::CommitInputsRetired)?;
            tx.put_lease(lease_id, &entry)
        })
    }

    fn expire_blocking(
        &self,
        policy: &RetentionPolicy,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        if policy.is_empty() {
            return Ok(Vec::new());
        }
        let expired = {
            let _g = self.lock();
            let mut expired = Vec::new();
            for seg in self.scan_active(&[], Vec::new()) {
                let seg = seg?;
                if policy.expired(&seg, now) {
                    expired.push(seg);
                }
            }
            if !dry_run {
                for group in expired.chunks(EXPIRE_GROUP) {
                    self.transact(|tx| {
                        for s in group {
                            tx.retire(s.clone(), SegmentState::Deleted, None, now)?;
                            tx.fault(FaultPoint::ExpirePartway)?;
                        }
                        Ok(())
                    })?;
                }
            }
            expired
        };
        if !dry_run {
            self.durable()?;
        }
        Ok(expired)
    }

    fn abandon_blocking(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<CompactionLease>, CatalogError> {
        let out = {
            let _g = self.lock();
            // In lease order: (entry, newly abandoned).
            let mut found: Vec<(LeaseEntry, bool)> = Vec::new();
            for item in self.leases.iter() {
                let (k, v) = item?;
                let mut e: LeaseEntry =
                    serde_json::from_slice(&v).map_err(|e| CatalogError::Corrupt {
                        key: format!("lease {}", hex::encode(&k)),
                        reason: e.to_string(),
                    })?;
                if e.committed || e.cleaned {
                    continue;
                }
                let newly = !e.abandoned;
                if newly {
                    if e.lease.expires_at >= before {
                        continue;
                    }
                    e.abandoned = true;
                }
                found.push((e, newly));
                if found.len() >= limit {
                    break;
                }
            }
            // Durable before the sweeper deletes their outputs: a late commit of an
            // abandoned lease must never find it open again after a crash.
            if found.iter().any(|(_, newly)| *newly) {
                self.transact(|tx| {
                    for (e, _) in found.iter().filter(|(_, newly)| *newly) {
                        tx.put_lease(e.lease.lease_id, e)?;
                    }
                    Ok(())
                })?;
            }
            found.into_iter().map(|(e, _)| e.lease).collect()
        };
        self.durable()?;
        Ok(out)
    }

    fn prune_leases_blocking(&self, before: i64) -> Result<u64, CatalogError> {
        let n = {
            let _g = self.lock();
            let mut finished = Vec::new();
            for item in self.leases.iter() {
                let (k, v) = item?;
                let Ok(e) = serde_json::from_slice::<LeaseEntry>(&v) else {
                    continue;
                };
                if (e.committed || e.cleaned) && e.lease.expires_at < before {
                    finished.push(k);
                }
            }
            if !finished.is_empty() {
                self.transact(|tx| {
                    for k in &finished {
                        tx.leases.remove(k)?;
                    }
                    Ok(())
                })?;
            }
            finished.len() as u64
        };
        self.durable()?;
        Ok(n)
    }

    fn cleaned_blocking(&self, ids: &[Uuid]) -> Result<(), CatalogError> {
        {
            let _g = self.lock();
            let mut cleaned = Vec::new();
            for id in ids {
                if let Some(mut e) = self.get_lease(*id)? {
                    if e.abandoned {
                        e.cleaned = true;
                        cleaned.push((*id, e));
                    }
                }
            }
            if !cleaned.is_empty() {
                self.transact(|tx| {
                    for (id, e) in &cleaned {
                        tx.put_lease(*id, e)?;
                    }
                    Ok(())
                })?;
            }
        }
        self.durable()
    }

    fn garbage_blocking(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        let mut out = Vec::new();
        for item in self
            .retired
            .range(..retired_key(before.saturating_add(1), Uuid::nil()))
        {
            let (k, _) = item?;
            if out.len() >= limit {
                break;
            }
            if k.len() != 24 {
                continue;
            }
            if let Some(s) = self.get(&k[8..])? {
                if s.purged_at.is_none() {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    fn purge_blocking(&self, ids: &[Uuid], at: i64) -> Result<(), CatalogError> {
        {
            let _g = self.lock();
            let mut purged = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(mut s) = self.get(id.as_bytes())? else {
                    continue;
                };
                if s.state == SegmentState::Active {
                    return Err(CatalogError::Invalid(format!(
                        "segment {id} is active; only retired segments can be purged"
                    )));
                }
                if s.purged_at.is_none() {
                    s.purged_at = Some(at);
                    purged.push(s);
                }
            }
            if !purged.is_empty() {
                self.transact(|tx| {
                    for s in &purged {
                        if let Some(r) = s.retired_at {
                            tx.retired.remove(retired_key(r, s.id))?;
                        }
                        tx.put(s)?;
                    }
                    Ok(())
                })?;
            }
        }
        self.durable()
    }
}

/// Every value of a tree whose values are JSON records, in key order.
fn json_values<T: serde::de::DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, CatalogError> {
    tree.iter()
        .map(|r| {
            let (k, v) = r?;
            serde_json::from_slice(&v).map_err(|e| CatalogError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Whether a stored record and a registration are the same segment (a retried register
/// after a commit or retention changed its state is still the same segment).
pub(crate) fn same_registration(stored: &SegmentRecord, new: &SegmentRecord) -> bool {
    let mut s = stored.clone();
    s.state = new.state;
    s.replaced_by = new.replaced_by;
    s.retired_at = new.retired_at;
    s.purged_at = new.purged_at;
    &s == new
}

fn from_durable(e: DurableError) -> CatalogError {
    match e {
        DurableError::Failed(reason) => CatalogError::Storage(format!(
            "the index refuses changes until it is reopened (restart the process): {reason}"
        )),
        other => CatalogError::Storage(format!("index: {other}")),
    }
}

fn hex_id(id: &[u8]) -> String {
    Uuid::from_slice(id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| hex::encode(id))
}

impl SledCatalog {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(SledCatalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, CatalogError> {
        // After a failed fsync the trees in memory may hold changes the disk does not: no
        // answer (a listing, a lookup, the sweeper's garbage) may come from them, or the
        // sweeper could delete objects of a retirement a restart will not have.
        self.durable.check_usable().map_err(from_durable)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(storage)?
    }
}

#[async_trait]
impl Catalog for SledCatalog {
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        let segments = segments.to_vec();
        self.run(move |c| c.register_blocking(&segments)).await
    }

    async fn list(&self, query: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        let query = query.clone();
        self.run(move |c| c.list_blocking(&query)).await
    }

    async fn lookup(&self, ids: &[Uuid]) -> Result<Vec<SegmentRecord>, CatalogError> {
        let ids = ids.to_vec();
        self.run(move |c| {
            let mut out = Vec::new();
            for id in ids {
                out.extend(c.get(id.as_bytes())?);
            }
            Ok(out)
        })
        .await
    }

    fn failure(&self) -> Option<String> {
        self.durable.failure()
    }

    async fn sync(&self) -> Result<(), CatalogError> {
        // A commit of everything, heartbeats included (they have no commit of their own).
        self.run(|c| c.durable.commit().map_err(from_durable)).await
    }

    async fn lease_compaction(
        &self,
        request: &LeaseRequest,
    ) -> Result<Option<CompactionLease>, CatalogError> {
        let request = request.clone();
        self.run(move |c| c.lease_blocking(&request)).await
    }

    async fn commit_compaction(
        &self,
        lease: Uuid,
        outputs: &[SegmentRecord],
    ) -> Result<(), CatalogError> {
        let outputs = outputs.to_vec();
        self.run(move |c| c.commit_blocking(lease, &outputs)).await
    }

    async fn heartbeat(&self, hb: &AgentHeartbeat) -> Result<(), CatalogError> {
        hb.validate()?;
        let status = AgentStatus {
            heartbeat: hb.clone(),
            last_seen: crate::now_ns(),
        };
        self.run(move |c| {
            c.agents.insert(
                status.heartbeat.agent_id.as_bytes(),
                serde_json::to_vec(&status).map_err(storage)?,
            )?;
            Ok(())
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentStatus>, CatalogError> {
        let mut agents: Vec<AgentStatus> = self.run(|c| json_values(&c.agents)).await?;
        agents.sort_by_key(|a| std::cmp::Reverse(a.last_seen));
        Ok(agents)
    }

    async fn expire(
        &self,
        policy: &RetentionPolicy,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        let policy = policy.clone();
        self.run(move |c| c.expire_blocking(&policy, now, dry_run))
            .await
    }

    async fn garbage(
        &self,
        retired_before: i64,
        limit: usize,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        self.run(move |c| c.garbage_blocking(retired_before, limit))
            .await
    }

    async fn abandon_expired_leases(
        &self,
        expired_before: i64,
        limit: usize,
    ) -> Result<Vec<CompactionLease>, CatalogError> {
        self.run(move |c| c.abandon_blocking(expired_before, limit))
            .await
    }

    async fn mark_leases_cleaned(&self, leases: &[Uuid]) -> Result<(), CatalogError> {
        let ids = leases.to_vec();
        self.run(move |c| c.cleaned_blocking(&ids)).await
    }

    async fn prune_leases(&self, expired_before: i64) -> Result<u64, CatalogError> {
        self.run(move |c| c.prune_leases_blocking(expired_before))
            .await
    }

    async fn active_tables(&self) -> Result<Vec<(String, String)>, CatalogError> {
        self.run(|c| c.active_tables_blocking()).await
    }

    async fn iceberg_tables(&self) -> Result<Vec<IcebergPointer>, CatalogError> {
        self.run(|c| c.iceberg_tables_blocking()).await
    }

    async fn swap_iceberg_table(
        &self,
        expected: Option<u64>,
        new: &IcebergPointer,
    ) -> Result<bool, CatalogError> {
        let new = new.clone();
        self.run(move |c| c.swap_iceberg_blocking(expected, &new))
            .await
    }

    async fn mark_purged(&self, ids: &[Uuid], at: i64) -> Result<(), CatalogError> {
        let ids = ids.to_vec();
        self.run(move |c| c.purge_blocking(&ids, at)).await
    }
}
