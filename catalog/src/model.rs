//! Compaction leases, agent heartbeats and retention policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CatalogError, SegmentRecord};

/// A compactor asking for work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Who asks (agent or compactor id).
    pub agent_id: String,
    /// How long the lease lasts, milliseconds (1 s to 1 h).
    pub ttl_ms: u64,
    /// Largest total size of a plan's inputs, bytes.
    pub target_bytes: u64,
    /// Fewest inputs worth merging (at least 2).
    #[serde(default = "default_min_inputs")]
    pub min_inputs: usize,
    /// Most inputs in one plan.
    #[serde(default = "default_max_inputs")]
    pub max_inputs: usize,
    /// Only segments created at least this long ago, milliseconds (lets a busy hour settle).
    #[serde(default)]
    pub min_age_ms: u64,
    /// Only this tenant's segments; every tenant the caller may compact when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only segments of this lake schema version (the compactor's own: during a rolling
    /// upgrade, old and new compactors each take the files they can merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

fn default_min_inputs() -> usize {
    2
}
fn default_max_inputs() -> usize {
    256
}

impl LeaseRequest {
    /// Checks the request's parameters.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.agent_id.is_empty() || self.agent_id.len() > 256 {
            return Err(CatalogError::Invalid(
                "agent_id must be 1 to 256 characters".into(),
            ));
        }
        if !(1_000..=3_600_000).contains(&self.ttl_ms) {
            return Err(CatalogError::Invalid(format!(
                "ttl_ms {} must be between 1000 and 3600000",
                self.ttl_ms
            )));
        }
        if self.target_bytes == 0 {
            return Err(CatalogError::Invalid(
                "target_bytes must be positive".into(),
            ));
        }
        if self.min_inputs < 2 || self.max_inputs < self.min_inputs {
            return Err(CatalogError::Invalid(format!(
                "need 2 <= min_inputs ({}) <= max_inputs ({})",
                self.min_inputs, self.max_inputs
            )));
        }
        if let Some(t) = &self.tenant {
            if !crate::segment::valid_tenant(t) {
                return Err(CatalogError::Invalid(format!("tenant {t:?} is not valid")));
            }
        }
        Ok(())
    }
}

/// A leased compaction plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionLease {
    /// Lease id, to commit with.
    pub lease_id: Uuid,
    /// Tenant of every input.
    pub tenant: String,
    /// Signal of every input.
    pub signal: String,
    /// Partition of every input.
    pub partition: String,
    /// Schema version of every input.
    pub schema_version: u32,
    /// The segments to merge, oldest first.
    pub inputs: Vec<SegmentRecord>,
    /// When the lease expires (unix ns); after that the inputs may be leased again.
    pub expires_at: i64,
}

impl CompactionLease {
    /// Where the compactor writes the merged file: the partition's path with the lease id as
    /// the segment id, so the control plane can find the output of an abandoned lease.
    pub fn output_key(&self) -> Result<String, CatalogError> {
        Ok(self.output()?.to_string())
    }

    /// The output's key, parsed ([`Self::output_key`]).
    pub fn output(&self) -> Result<crate::layout::SegmentKey, CatalogError> {
        let bad = |what: &str, value: &str| {
            CatalogError::Invalid(format!("lease {}: bad {what} {value:?}", self.lease_id))
        };
        Ok(crate::layout::SegmentKey::new(
            &self.tenant,
            weir_schema::Signal::parse(&self.signal).ok_or_else(|| bad("signal", &self.signal))?,
            crate::layout::Partition::parse(&self.partition)
                .ok_or_else(|| bad("partition", &self.partition))?,
            self.lease_id,
        ))
    }

    /// Checks a commit's outputs against the lease: same tenant, signal, partition and
    /// schema version, new ids, and exactly the inputs' rows.
    pub fn check_outputs(&self, outputs: &[SegmentRecord]) -> Result<(), CatalogError> {
        if outputs.is_empty() {
            return Err(CatalogError::Invalid(
                "a commit needs at least one output".into(),
            ));
        }
        for o in outputs {
            o.validate()?;
            if o.tenant != self.tenant
                || o.signal != self.signal
                || o.partition != self.partition
                || o.schema_version != self.schema_version
            {
                return Err(CatalogError::Invalid(format!(
                    "output {} is not in the lease's partition {}/{}/{} (schema {})",
                    o.id, self.tenant, self.signal, self.partition, self.schema_version
                )));
            }
            if self.inputs.iter().any(|i| i.id == o.id) {
                return Err(CatalogError::Invalid(format!(
                    "output {} reuses an input's id",
                    o.id
                )));
            }
        }
        let rows_in: u64 = self.inputs.iter().map(|s| s.row_count).sum();
        let rows_out: u64 = outputs.iter().map(|s| s.row_count).sum();
        if rows_in != rows_out {
            return Err(CatalogError::Invalid(format!(
                "outputs hold {rows_out} rows but the inputs hold {rows_in}"
            )));
        }
        Ok(())
    }
}

/// Most labels in a heartbeat.
pub const MAX_LABELS: usize = 16;

/// What an agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHeartbeat {
    /// Agent id: `agent.id`, else the persistent id of the agent's data directory.
    pub agent_id: String,
    /// Where the agent runs, for people reading the fleet view (`host.name`); at most
    /// [`MAX_LABELS`], keys of 1 to 64 characters, values of at most 256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Weir version.
    pub version: String,
    /// Role (`run`, `agent`, `compactor`).
    #[serde(default)]
    pub role: String,
    /// Live bytes in the buffer.
    #[serde(default)]
    pub buffer_bytes: u64,
    /// Live entries in the buffer.
    #[serde(default)]
    pub buffer_entries: u64,
    /// Segments waiting in the registration outbox.
    #[serde(default)]
    pub outbox: u64,
    /// When the agent last flushed a segment (unix ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_flush_at: Option<i64>,
    /// When the agent started (unix ns).
    #[serde(default)]
    pub started_at: i64,
}

impl AgentHeartbeat {
    /// Checks the heartbeat.
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.agent_id.is_empty() || self.agent_id.len() > 256 {
            return Err(CatalogError::Invalid(
                "agent_id must be 1 to 256 characters".into(),
            ));
        }
        if self.version.len() > 64 || self.role.len() > 64 {
            return Err(CatalogError::Invalid(
                "version and role are at most 64 characters".into(),
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(CatalogError::Invalid(format!(
                "at most {MAX_LABELS} labels"
            )));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return Err(CatalogError::Invalid(format!(
                    "label {k:?}: keys are 1 to 64 characters, values at most 256"
                )));
            }
        }
        Ok(())
    }
}

/// An agent as the fleet view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The last heartbeat.
    #[serde(flatten)]
    pub heartbeat: AgentHeartbeat,
    /// When it arrived (unix ns).
    pub last_seen: i64,
}

/// Retention of one tenant and/or signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    /// Tenant; every tenant when absent.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Signal; every signal when absent.
    #[serde(default)]
    pub signal: Option<String>,
    /// Keep rows this long, nanoseconds.
    pub max_age_ns: i64,
}

/// Retention policy: the most specific rule wins (tenant and signal, then tenant, then
/// signal, then the default). Without a matching rule, data is kept forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Default max age, nanoseconds.
    #[serde(default)]
    pub default_max_age_ns: Option<i64>,
    /// Specific rules.
    #[serde(default)]
    pub rules: Vec<RetentionRule>,
}

impl RetentionPolicy {
    /// The max age for a tenant and signal, if any.
    pub fn max_age(&self, tenant: &str, signal: &str) -> Option<i64> {
        let mut best: BTreeMap<u8, i64> = BTreeMap::new();
        for r in &self.rules {
            let t = r.tenant.as_deref().map(|t| t == tenant);
            let s = r.signal.as_deref().map(|s| s == signal);
            let rank = match (t, s) {
                (Some(false), _) | (_, Some(false)) => continue,
                (Some(true), Some(true)) => 0,
                (Some(true), None) => 1,
                (None, Some(true)) => 2,
                (None, None) => 3,
            };
            best.entry(rank).or_insert(r.max_age_ns);
        }
        best.values().next().copied().or(self.default_max_age_ns)
    }

    /// Whether a segment is past its retention at `now`.
    pub fn expired(&self, s: &SegmentRecord, now: i64) -> bool {
        self.max_age(&s.tenant, &s.signal)
            .is_some_and(|age| s.max_timestamp < now.saturating_sub(age))
    }

    /// Whether any rule applies at all.
    pub fn is_empty(&self) -> bool {
        self.default_max_age_ns.is_none() && self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_rule_wins() {
        let p = RetentionPolicy {
            default_max_age_ns: Some(100),
            rules: vec![
                RetentionRule {
                    tenant: None,
                    signal: Some("logs".into()),
                    max_age_ns: 50,
                },
                RetentionRule {
                    tenant: Some("a".into()),
                    signal: Some("logs".into()),
                    max_age_ns: 10,
                },
                RetentionRule {
                    tenant: Some("a".into()),
                    signal: None,
                    max_age_ns: 20,
                },
            ],
        };
        assert_eq!(p.max_age("a", "logs"), Some(10));
        assert_eq!(p.max_age("a", "traces"), Some(20));
        assert_eq!(p.max_age("b", "logs"), Some(50));
        assert_eq!(p.max_age("b", "metrics"), Some(100));
        assert_eq!(RetentionPolicy::default().max_age("a", "logs"), None);
    }
}
