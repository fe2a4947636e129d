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

/// Most service names a segment record lists: a file with more (a client sending a distinct
/// `service.name` per record) lists [`MANY_SERVICES`] instead, so its record stays small
/// enough to register.
pub const MAX_SERVICES: usize = 256;
/// Most bytes of service names a segment record lists (the same fallback past it).
pub const MAX_SERVICES_BYTES: usize = 16 * 1024;
/// Longest service name a segment record lists; a longer one (or one holding a NUL, which
/// PostgreSQL cannot store) makes the record list [`MANY_SERVICES`].
pub const MAX_SERVICE_NAME_BYTES: usize = 256;
/// The `services` entry of a file with too many services to list: it matches every service
/// filter (a reader filtering on a service still reads the file).
pub const MANY_SERVICES: &str = "*";

/// A file's distinct service names as a segment record lists them: sorted, or
/// `[MANY_SERVICES]` when there are more than [`MAX_SERVICES`] or [`MAX_SERVICES_BYTES`], when
/// one is longer than [`MAX_SERVICE_NAME_BYTES`] or holds a NUL, or when one already stands
/// for many (compacting such a file).
pub fn bound_services<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut set = std::collections::BTreeSet::new();
    let mut bytes = 0usize;
    for name in names {
        let name = name.as_ref();
        if name == MANY_SERVICES || name.len() > MAX_SERVICE_NAME_BYTES || name.contains('\0') {
            return vec![MANY_SERVICES.to_string()];
        }
        if !set.contains(name) {
            bytes += name.len();
            if set.len() == MAX_SERVICES || bytes > MAX_SERVICES_BYTES {
                return vec![MANY_SERVICES.to_string()];
            }
            set.insert(name.to_string());
        }
    }
    set.into_iter().collect()
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
    /// Distinct `service_name` values in the file (sorted), or [`MANY_SERVICES`] alone when
    /// they are more than a record lists ([`bound_services`]).
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
    /// Whether the file holds rows a transform failed on (`on_error = "dead_letter"`), kept
    /// under the lake's dead-letter prefix: indexed, listed only on request
    /// ([`SegmentQuery::dead_letter`]), never compacted, expired like any segment.
    pub fn is_dead_letter(&self) -> bool {
        self.object_key
            .starts_with(crate::layout::DEAD_LETTER_PREFIX)
    }

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
        let service_bytes: usize = self.services.iter().map(String::len).sum();
        if self.services.len() > MAX_SERVICES
            || service_bytes > MAX_SERVICES_BYTES
            || self
                .services
                .iter()
                .any(|s| s.len() > MAX_SERVICE_NAME_BYTES || s.contains('\0'))
        {
            return Err(CatalogError::Invalid(format!(
                "segment {}: services must be at most {MAX_SERVICES} names of at most {MAX_SERVICE_NAME_BYTES} bytes ({MAX_SERVICES_BYTES} in all), without NUL; list [\"*\"] for more",
                self.id
            )));
        }
        if self.agent_id.contains('\0') {
            return Err(CatalogError::Invalid(format!(
                "segment {}: agent_id holds a NUL",
                self.id
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
    /// List the dead-letter files (rows a transform failed on) instead of the lake's.
    #[serde(default)]
    pub dead_letter: bool,
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
            && s.is_dead_letter() == self.dead_letter
            && self.signal.as_ref().is_none_or(|sig| &s.signal == sig)
            && self.from.is_none_or(|from| s.max_timestamp >= from)
            && self.to.is_none_or(|to| s.min_timestamp <= to)
            && self
                .service
                .as_ref()
                .is_none_or(|svc| s.services.iter().any(|x| x == svc || x == MANY_SERVICES))
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

    /// A file with 100,000 distinct services still gets a record small enough to register,
    /// and that record still matches a filter on any of them.
    #[test]
    fn services_are_bounded() {
        assert_eq!(bound_services(["b", "a", "b"]), ["a", "b"]);
        let many: Vec<String> = (0..100_000).map(|i| format!("svc-{i}")).collect();
        assert_eq!(bound_services(&many), [MANY_SERVICES]);
        let just: Vec<String> = many[..MAX_SERVICES].to_vec();
        assert_eq!(bound_services(&just).len(), MAX_SERVICES);
        let long = vec!["x".repeat(MAX_SERVICES_BYTES + 1)];
        assert_eq!(bound_services(&long), [MANY_SERVICES]);
        assert_eq!(bound_services(["a", MANY_SERVICES]), [MANY_SERVICES]);
        assert_eq!(bound_services(["a", "b\0"]), [MANY_SERVICES]);
        let long = "y".repeat(MAX_SERVICE_NAME_BYTES + 1);
        assert_eq!(bound_services(["a", long.as_str()]), [MANY_SERVICES]);

        let mut record = SegmentRecord {
            id: Uuid::now_v7(),
            tenant: "t".into(),
            signal: "logs".into(),
            object_key: String::new(),
            partition: "dt=2026-01-01/hour=00".into(),
            min_timestamp: 0,
            max_timestamp: 0,
            row_count: 100_000,
            bytes: 1,
            services: bound_services(&many),
            schema_version: 1,
            agent_id: "a".into(),
            created_at: 0,
            state: SegmentState::Active,
            replaced_by: None,
            retired_at: None,
            purged_at: None,
        };
        assert!(serde_json::to_vec(&record).unwrap().len() < 1024);
        let q = SegmentQuery {
            tenant: "t".into(),
            service: Some("svc-77".into()),
            ..Default::default()
        };
        assert!(q.matches(&record));
        record.services = vec!["other".into()];
        assert!(!q.matches(&record));
    }
}
