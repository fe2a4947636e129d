//! The contract of Weir's segment index, shared by the data path and the control plane.
//!
//! The [`Catalog`] trait is the one interface to the index: the flusher's outbox registers
//! segments through it, compactors lease and commit through it, the sweeper applies retention
//! through it. Its implementations (sled, PostgreSQL, the HTTP client) live in
//! `weir-control-plane`; this crate holds only the trait, its records ([`SegmentRecord`],
//! [`CompactionLease`], ...), [`CatalogError`], and the lake's object [`layout`], so that the
//! data path does not pull in a database driver, an HTTP server or an HTTP client. Writes are
//! idempotent by segment id, so an agent can retry a registration after a crash without
//! creating a second entry.
//!
//! Two sled helpers live here too, because both sled users (the agent's buffer in
//! `weir-pipelines` and the embedded index in `weir-control-plane`) depend on this crate and on
//! nothing else in common: [`open_sled`], and [`sled_durable`], the durable commit of a sled
//! database (sled's own `flush()` is not durable on Linux).
#![warn(missing_docs)]

pub mod layout;
mod model;
mod segment;
pub mod sled_durable;

pub use model::{
    AgentHeartbeat, AgentStatus, CompactionLease, LeaseRequest, RetentionPolicy, RetentionRule,
    MAX_LABELS,
};
pub use segment::{
    bound_services, valid_tenant, SegmentQuery, SegmentRecord, SegmentState, MANY_SERVICES,
    MAX_SERVICES, MAX_SERVICES_BYTES, MAX_SERVICE_NAME_BYTES,
};

use async_trait::async_trait;
use uuid::Uuid;

/// Errors of the segment index.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The storage engine behind the index failed.
    #[error("index storage error: {0}")]
    Storage(String),
    /// The control plane could not be reached (retry later).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt index record {key}: {reason}")]
    Corrupt {
        /// Key of the record.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A request was invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A segment id was registered twice with different contents.
    #[error("segment {0} is already registered with different contents")]
    Conflict(Uuid),
    /// A compaction lease is unknown, already committed, or its inputs were re-leased.
    #[error("compaction lease {lease}: {reason}")]
    LeaseLost {
        /// The lease.
        lease: Uuid,
        /// Why it cannot be committed.
        reason: String,
    },
    /// A request body is above the configured limit.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The caller's token is missing or unknown.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The caller's token has no right to this tenant or action.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// This index cannot do what was asked (a remote control plane has no Iceberg pointers).
    #[error("not supported by this index: {0}")]
    Unsupported(String),
}

impl CatalogError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CatalogError::Storage(_) | CatalogError::Unavailable(_)
        )
    }
}

impl From<sled::Error> for CatalogError {
    fn from(e: sled::Error) -> Self {
        CatalogError::Storage(e.to_string())
    }
}

/// Where the current Iceberg metadata of one table (a tenant's signal) is: the index keeps
/// this pointer, the metadata itself is in the lake. Swapped with a compare-and-set on
/// `version` ([`Catalog::swap_iceberg_table`]), as an Iceberg catalog commits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IcebergPointer {
    /// Tenant (the Iceberg namespace).
    pub tenant: String,
    /// Signal (the Iceberg table).
    pub signal: String,
    /// Number of the metadata file, 1 for the first; each commit adds one.
    pub version: u64,
    /// Key of the metadata JSON inside the lake.
    pub metadata_key: String,
    /// When the pointer was last swapped, unix nanoseconds.
    pub updated_at: i64,
}

impl IcebergPointer {
    /// Checks the pointer names a tenant's signal and a metadata key under the lake.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !valid_tenant(&self.tenant) || weir_schema::Signal::parse(&self.signal).is_none() {
            return Err(CatalogError::Invalid(format!(
                "no Iceberg table {:?}.{:?}",
                self.tenant, self.signal
            )));
        }
        if self.version == 0
            || self.metadata_key.is_empty()
            || self.metadata_key.starts_with('/')
            || self.metadata_key.split('/').any(|p| p == "..")
        {
            return Err(CatalogError::Invalid(format!(
                "bad Iceberg pointer version {} key {:?}",
                self.version, self.metadata_key
            )));
        }
        Ok(())
    }
}

/// A page of segments and the cursor of the next page, if any.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SegmentPage {
    /// The segments of this page, oldest `max_timestamp` first.
    pub segments: Vec<SegmentRecord>,
    /// Opaque cursor to pass back for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Opens a sled database, waiting up to two seconds for its file lock: a database dropped a
/// moment ago in this process can still be held by sled's background flush thread.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    loop {
        match config.open() {
            // sled reports the lock conflict as ErrorKind::Other with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempts < 100 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The current time as unix nanoseconds.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The segment index.
///
/// Every method that changes the index returns success only once the change is durable (it
/// survives a crash and a power cut) and applies it whole or not at all, so a caller may act
/// on it at once: an agent drops a registered segment from its outbox, the sweeper deletes
/// the objects of what it retired. [`Catalog::heartbeat`] is the exception: a lost heartbeat is
/// replaced by the next one.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Registers active segments. Idempotent: registering a segment id again with the same
    /// contents succeeds without a second entry; different contents are a conflict.
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError>;

    /// Lists active segments that match the query, ordered by their largest timestamp.
    async fn list(&self, query: &SegmentQuery) -> Result<SegmentPage, CatalogError>;

    /// The records of these ids in any state; unknown ids are left out.
    async fn lookup(&self, ids: &[Uuid]) -> Result<Vec<SegmentRecord>, CatalogError>;

    /// Makes everything written so far durable, heartbeats included (at shutdown).
    async fn sync(&self) -> Result<(), CatalogError>;

    /// Why this index stopped answering for good (a failed fsync of an embedded index: only
    /// a restart, which reopens it from disk, brings it back). `None` while it works, and
    /// for indexes whose failures are not final (PostgreSQL, a remote control plane).
    fn failure(&self) -> Option<String> {
        None
    }

    /// Plans and leases one compaction: small active segments of one partition (same
    /// tenant, signal, hour and schema version), none leased by a live lease, together at
    /// most `target_bytes`. `None` when there is nothing to compact.
    async fn lease_compaction(
        &self,
        request: &LeaseRequest,
    ) -> Result<Option<CompactionLease>, CatalogError>;

    /// Commits a compaction in one transaction: the lease's inputs become `compacted`
    /// (replaced by the first output) and the outputs become active. Fails with
    /// [`CatalogError::LeaseLost`] if the lease is unknown, committed, or any input was
    /// re-leased or is no longer active; the outputs must hold exactly the inputs' rows.
    async fn commit_compaction(
        &self,
        lease: Uuid,
        outputs: &[SegmentRecord],
    ) -> Result<(), CatalogError>;

    /// Records an agent's heartbeat.
    async fn heartbeat(&self, heartbeat: &AgentHeartbeat) -> Result<(), CatalogError>;

    /// The fleet: every agent that sent a heartbeat, most recent first.
    async fn agents(&self) -> Result<Vec<AgentStatus>, CatalogError>;

    /// Retention: active segments whose newest row is older than their policy's cutoff at
    /// `now` leave the index (state `deleted`), unless `dry_run`. Returns the segments.
    async fn expire(
        &self,
        policy: &RetentionPolicy,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<SegmentRecord>, CatalogError>;

    /// Segments whose objects may be deleted: retired (compacted or deleted) at or before
    /// `retired_before` and not yet purged. At most `limit`.
    async fn garbage(
        &self,
        retired_before: i64,
        limit: usize,
    ) -> Result<Vec<SegmentRecord>, CatalogError>;

    /// Marks segments' objects as deleted from the lake.
    async fn mark_purged(&self, ids: &[Uuid], at: i64) -> Result<(), CatalogError>;

    /// Abandons uncommitted leases that expired before `expired_before` (they can no longer
    /// be committed) and returns the abandoned leases whose output is not cleaned up yet, at
    /// most `limit`. A compactor writes its output under the lease id
    /// ([`CompactionLease::output_key`]), so the sweeper can delete what a compactor that died
    /// after its upload left behind.
    async fn abandon_expired_leases(
        &self,
        expired_before: i64,
        limit: usize,
    ) -> Result<Vec<CompactionLease>, CatalogError>;

    /// Records that abandoned leases' outputs are gone from the lake.
    async fn mark_leases_cleaned(&self, leases: &[Uuid]) -> Result<(), CatalogError>;

    /// Forgets finished leases (committed, or abandoned and cleaned) that expired before
    /// `expired_before`; returns how many. A retried commit of a forgotten lease gets
    /// [`CatalogError::LeaseLost`], which is why the sweeper keeps a day of history.
    async fn prune_leases(&self, expired_before: i64) -> Result<u64, CatalogError>;

    /// The (tenant, signal) pairs that have active lake segments (dead letters aside),
    /// ordered: the Iceberg tables there are to publish.
    async fn active_tables(&self) -> Result<Vec<(String, String)>, CatalogError> {
        Err(CatalogError::Unsupported("listing tables".into()))
    }

    /// Every Iceberg table's pointer, ordered by tenant and signal.
    async fn iceberg_tables(&self) -> Result<Vec<IcebergPointer>, CatalogError> {
        Err(CatalogError::Unsupported("Iceberg table pointers".into()))
    }

    /// Sets a table's pointer to `new` if its version is still `expected` (`None`: the table
    /// has no pointer yet), durably; `Ok(false)` when another writer moved it first.
    async fn swap_iceberg_table(
        &self,
        expected: Option<u64>,
        new: &IcebergPointer,
    ) -> Result<bool, CatalogError> {
        let _ = (expected, new);
        Err(CatalogError::Unsupported("Iceberg table pointers".into()))
    }
}
