//! The segment record and the segment query.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::CatalogError;

/// State of a segment in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// Readable: part of the lake's current view.
    Active,
    /// Replaced by a compacted segment (see `replaced_by`); its object is deleted later.
    Compacted,
    /// Removed by retention.
    Deleted,
}

/// One Parquet file of the lake, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRecord {
    /// Time-ordered UUIDv7; also the object's file name.
    pub id: Uuid,
    /// Tenant the rows belong to.
    pub tenant: String,
    /// `logs`, `metrics` or `traces`.
    pub signal: String,
    /// Object key inside the lake (Hive path).
    pub object_key: String,
    /// Partition, `dt=YYYY-MM-DD/hour=HH`.
    pub partition: String,
    /// Smallest row timestamp, unix nanoseconds.
    pub min_timestamp: i64,
    /// Largest row timestamp, unix nanoseconds.
    pub max_timestamp: i64,
    /// Rows in the file.
    pub row_count: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Distinct `service_name` values in the file (sorted).
    pub services: Vec<String>,
    /// Lake schema version of the file.
    pub schema_version: u32,
    /// Agent that wrote the file.
    pub agent_id: String,
    /// When the segment was created, unix nanoseconds.
    pub created_at: i64,
    /// Current state.
    pub state: SegmentState,
    /// For a compacted segment, the segment that replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<Uuid>,
    /// When the segment left the active view (compaction commit or retention), unix ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    /// When the segment's object was deleted from the lake, unix ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<i64>,
}

impl SegmentRecord {
    /// Checks the record before it enters the index.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !valid_tenant(&self.tenant) {
            return Err(CatalogError::Invalid(format!(
                "tenant {:?} must match [A-Za-z0-9_-]{{1,64}}",
                self.tenant
            )));
        }
        if !matches!(self.signal.as_str(), "logs" | "metrics" | "traces") {
            return Err(CatalogError::Invalid(format!(
                "signal {:?} must be logs, metrics or traces",
                self.signal
            )));
        }
        if self.min_timestamp > self.max_timestamp {
            return Err(CatalogError::Invalid(format!(
                "segment {}: min_timestamp {} is after max_timestamp {}",
                self.id, self.min_timestamp, self.max_timestamp
            )));
        }
        if self.state != SegmentState::Active
            || self.replaced_by.is_some()
            || self.retired_at.is_some()
            || self.purged_at.is_some()
        {
            return Err(CatalogError::Invalid(format!(
                "segment {}: only active segments can be registered",
                self.id
            )));
        }
        let Some(derived) = crate::layout::SegmentKey::of_record(self) else {
            return Err(CatalogError::Invalid(format!(
                "segment {}: partition {:?} must be dt=YYYY-MM-DD/hour=HH",
                self.id, self.partition
            )));
        };
        // The key is exactly the one the layout derives: a tenant can only register objects
        // under its own prefix, so it never reads (or has swept) another tenant's files.
        if self.object_key != derived.to_string() {
            return Err(CatalogError::Invalid(format!(
                "segment {}: object_key {:?} must be {:?} (the lake layout of its tenant, signal, partition and id)",
                self.id, self.object_key, derived.to_string()
            )));
        }
        Ok(())
    }
}

/// Whether a tenant name is valid: `[A-Za-z0-9_-]{1,64}` (tenants become path segments).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A query for segments. Time bounds select segments whose `[min, max]` range overlaps
/// `[from, to]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentQuery {
    /// Tenant (required).
    pub tenant: String,
    /// Signal; every signal when absent.
    #[serde(default)]
    pub signal: Option<String>,
    /// Lower time bound, unix nanoseconds, inclusive.
    #[serde(default)]
    pub from: Option<i64>,
    /// Upper time bound, unix nanoseconds, inclusive.
    #[serde(default)]
    pub to: Option<i64>,
    /// Only segments that contain this service.
    #[serde(default)]
    pub service: Option<String>,
    /// Page size (default 1000, at most 10000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Cursor from a previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Default page size of segment listings.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size of segment listings.
pub const MAX_LIMIT: usize = 10_000;

impl SegmentQuery {
    /// The page size of the query.
    pub fn page_size(&self) -> Result<usize, CatalogError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(0) => Err(CatalogError::Invalid("limit must be at least 1".into())),
            Some(n) if n > MAX_LIMIT => Err(CatalogError::Invalid(format!(
                "limit {n} is above the maximum of {MAX_LIMIT}"
            ))),
            Some(n) => Ok(n),
        }
    }

    /// Whether a segment matches the query's filters.
    pub fn matches(&self, s: &SegmentRecord) -> bool {
        s.state == SegmentState::Active
            && s.tenant == self.tenant
            && self.signal.as_ref().is_none_or(|sig| &s.signal == sig)
            && self.from.is_none_or(|from| s.max_timestamp >= from)
            && self.to.is_none_or(|to| s.min_timestamp <= to)
            && self
                .service
                .as_ref()
                .is_none_or(|svc| s.services.iter().any(|x| x == svc))
    }

    /// Checks the query's parameters.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !valid_tenant(&self.tenant) {
            return Err(CatalogError::Invalid(format!(
                "tenant {:?} must match [A-Za-z0-9_-]{{1,64}}",
                self.tenant
            )));
        }
        if let Some(sig) = &self.signal {
            if !matches!(sig.as_str(), "logs" | "metrics" | "traces") {
                return Err(CatalogError::Invalid(format!(
                    "signal {sig:?} must be logs, metrics or traces"
                )));
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(CatalogError::Invalid(format!(
                    "from ({from}) is after to ({to})"
                )));
            }
        }
        self.page_size().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        assert!(valid_tenant("default"));
        assert!(valid_tenant("team-a_1"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("../etc"));
        assert!(!valid_tenant("a/b"));
        assert!(!valid_tenant(&"x".repeat(65)));
    }
}
