//! The lake's object layout, in one place: how object keys are built and parsed, which keys
//! the Parquet footers carry, and how a segment record is made from a written file.
//!
//! ```text
//! {lake prefix}/tenant={tenant}/signal={logs|metrics|traces}/dt={YYYY-MM-DD}/hour={HH}/{id}.parquet
//! {lake prefix}/_dead_letter/tenant=…/signal=…/dt=…/hour=…/{id}.parquet
//! ```
//!
//! `id` is the segment id (a UUIDv7) of a flushed file, or the lease id of a compaction
//! output (so the control plane can find what an abandoned compaction left behind). The
//! partition is the UTC hour of the rows' own timestamps. Every key the flusher, compactor,
//! reconciliation, sweeper and control plane handle is built by [`SegmentKey`] and checked by
//! [`SegmentKey::parse`]; the index refuses a record whose `object_key` is not the key its
//! tenant, signal, partition and id derive (so a tenant cannot register another tenant's
//! object).

use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;
use weir_schema::Signal;

use crate::{SegmentRecord, SegmentState};

pub use weir_schema::{
    META_MAX_TIMESTAMP, META_MIN_TIMESTAMP, META_SCHEMA_VERSION, META_SIGNAL, META_TENANT,
};

/// Prefix of dead-lettered objects (rows a transform failed on with
/// `on_error = "dead_letter"`), kept for operators with the reasons in their footer.
pub const DEAD_LETTER_PREFIX: &str = "_dead_letter/";

/// Footer key of the agent that wrote a file (reconciliation registers only its own).
pub const META_AGENT_ID: &str = "weir.agent_id";
/// Footer key of a compaction output's lease id (reconciliation never registers those).
pub const META_COMPACTION_LEASE: &str = "weir.compaction_lease";
/// Footer key of the dead-letter reasons (one per line).
pub const META_DEAD_LETTER: &str = "weir.dead_letter_reasons";
/// Footer key of the file's distinct `service_name` values (a JSON array).
pub const META_SERVICES: &str = "weir.services";

/// Nanoseconds in one hour.
pub const HOUR_NANOS: i64 = 3_600_000_000_000;

/// An hour partition of the lake: the UTC hour of the rows' own timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// Hours since the unix epoch.
    pub hour: i64,
}

impl Partition {
    /// The partition of a timestamp (unix nanoseconds).
    pub fn of(ts: i64) -> Partition {
        Partition {
            hour: ts.div_euclid(HOUR_NANOS),
        }
    }

    /// `dt=YYYY-MM-DD/hour=HH`.
    pub fn path(&self) -> String {
        let secs = self.hour.saturating_mul(3600);
        let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
        dt.format("dt=%Y-%m-%d/hour=%H").to_string()
    }

    /// Parses `dt=YYYY-MM-DD/hour=HH`; `None` for anything else.
    pub fn parse(path: &str) -> Option<Partition> {
        let (dt, hour) = path.split_once('/')?;
        let date = chrono::NaiveDate::parse_from_str(dt.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
        let hour = hour.strip_prefix("hour=")?;
        if hour.len() != 2 {
            return None;
        }
        let h: u32 = hour.parse().ok()?;
        let at = date.and_hms_opt(h, 0, 0)?.and_utc().timestamp();
        let p = Partition {
            hour: at.div_euclid(3600),
        };
        // Only the canonical spelling (zero-padded, as `path` writes it) is a partition.
        (p.path() == path).then_some(p)
    }
}

/// Why a key is not a segment key of the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object key {key:?} is not a lake segment key ({reason})")]
pub struct LayoutError {
    /// The key.
    pub key: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The parts of a segment's object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentKey {
    /// Tenant (`[A-Za-z0-9_-]{1,64}`).
    pub tenant: String,
    /// Signal.
    pub signal: Signal,
    /// Hour partition.
    pub partition: Partition,
    /// Segment id (or, for a compaction output, the lease id).
    pub id: Uuid,
    /// Whether the object lives under [`DEAD_LETTER_PREFIX`].
    pub dead_letter: bool,
}

impl SegmentKey {
    /// The key of a segment of the queryable lake.
    pub fn new(tenant: &str, signal: Signal, partition: Partition, id: Uuid) -> SegmentKey {
        SegmentKey {
            tenant: tenant.to_string(),
            signal,
            partition,
            id,
            dead_letter: false,
        }
    }

    /// The same segment under the dead-letter prefix when `dead_letter`.
    pub fn with_dead_letter(mut self, dead_letter: bool) -> SegmentKey {
        self.dead_letter = dead_letter;
        self
    }

    /// The key a segment record's tenant, signal, partition and id derive, under the
    /// dead-letter prefix when the record is a dead-letter file's (`None` when one of them is
    /// not valid).
    pub fn of_record(s: &SegmentRecord) -> Option<SegmentKey> {
        Some(
            SegmentKey::new(
                &s.tenant,
                Signal::parse(&s.signal)?,
                Partition::parse(&s.partition)?,
                s.id,
            )
            .with_dead_letter(s.is_dead_letter()),
        )
    }

    /// Parses a key relative to the lake's prefix.
    pub fn parse(key: &str) -> Result<SegmentKey, LayoutError> {
        let bad = |reason| LayoutError {
            key: key.to_string(),
            reason,
        };
        let (dead_letter, rest) = match key.strip_prefix(DEAD_LETTER_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, key),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [tenant, signal, dt, hour, file] = parts.as_slice() else {
            return Err(bad("expected tenant=/signal=/dt=/hour=/{id}.parquet"));
        };
        let tenant = tenant
            .strip_prefix("tenant=")
            .filter(|t| crate::valid_tenant(t))
            .ok_or_else(|| bad("bad tenant= segment"))?;
        let signal = signal
            .strip_prefix("signal=")
            .and_then(Signal::parse)
            .ok_or_else(|| bad("bad signal= segment"))?;
        let partition = Partition::parse(&format!("{dt}/{hour}"))
            .ok_or_else(|| bad("bad dt=/hour= segments"))?;
        let id = file
            .strip_suffix(".parquet")
            .and_then(|n| Uuid::parse_str(n).ok())
            .ok_or_else(|| bad("file name is not {uuid}.parquet"))?;
        let parsed = SegmentKey {
            tenant: tenant.to_string(),
            signal,
            partition,
            id,
            dead_letter,
        };
        // One spelling per segment: the UUID in its hyphenated lowercase form.
        if parsed.to_string() != key {
            return Err(bad("not in canonical form"));
        }
        Ok(parsed)
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dead_letter {
            f.write_str(DEAD_LETTER_PREFIX)?;
        }
        write!(
            f,
            "tenant={}/signal={}/{}/{}.parquet",
            self.tenant,
            self.signal.as_str(),
            self.partition.path(),
            self.id
        )
    }
}

/// What a written file holds, from its encoder or its footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// Rows in the file.
    pub rows: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Smallest row timestamp, unix nanoseconds.
    pub min_timestamp: i64,
    /// Largest row timestamp, unix nanoseconds.
    pub max_timestamp: i64,
    /// Distinct `service_name` values (sorted).
    pub services: Vec<String>,
    /// Lake schema version of the file.
    pub schema_version: u32,
}

impl FileFacts {
    /// The facts a footer's key-value metadata records, with the file's row count and size;
    /// `None` when a key is missing or unreadable.
    pub fn from_footer(kv: &HashMap<&str, &str>, rows: u64, bytes: u64) -> Option<FileFacts> {
        Some(FileFacts {
            rows,
            bytes,
            min_timestamp: kv.get(META_MIN_TIMESTAMP)?.parse().ok()?,
            max_timestamp: kv.get(META_MAX_TIMESTAMP)?.parse().ok()?,
            services: crate::bound_services(
                kv.get(META_SERVICES)
                    .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
                    .unwrap_or_default(),
            ),
            schema_version: kv.get(META_SCHEMA_VERSION)?.parse().ok()?,
        })
    }
}

/// The active segment record of a file written at `key`.
pub fn segment_record(
    key: &SegmentKey,
    facts: FileFacts,
    agent_id: &str,
    created_at: i64,
) -> SegmentRecord {
    SegmentRecord {
        id: key.id,
        tenant: key.tenant.clone(),
        signal: key.signal.as_str().to_string(),
        object_key: key.to_string(),
        partition: key.partition.path(),
        min_timestamp: facts.min_timestamp,
        max_timestamp: facts.max_timestamp,
        row_count: facts.rows,
        bytes: facts.bytes,
        services: facts.services,
        schema_version: facts.schema_version,
        agent_id: agent_id.to_string(),
        created_at,
        state: SegmentState::Active,
        replaced_by: None,
        retired_at: None,
        purged_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_round_trip() {
        assert_eq!(Partition::of(0).path(), "dt=1970-01-01/hour=00");
        let t = 1_767_229_200_000_000_000; // 2026-01-01T01:00:00Z
        assert_eq!(Partition::of(t).path(), "dt=2026-01-01/hour=01");
        assert_eq!(Partition::of(t - 1).path(), "dt=2026-01-01/hour=00");
        for p in [Partition::of(0), Partition::of(t), Partition::of(-1)] {
            assert_eq!(Partition::parse(&p.path()), Some(p));
        }
        for bad in [
            "dt=2026-01-01/hour=1",
            "dt=2026-1-01/hour=01",
            "dt=2026-01-01/hour=24",
            "dt=2026-01-01",
            "hour=01/dt=2026-01-01",
            "dt=2026-01-01/hour=01/x",
        ] {
            assert_eq!(Partition::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_round_trip_and_refuse_other_shapes() {
        let id = Uuid::now_v7();
        let p = Partition::of(1_767_229_200_000_000_000);
        let k = SegmentKey::new("a", Signal::Logs, p, id);
        let s = k.to_string();
        assert_eq!(
            s,
            format!("tenant=a/signal=logs/dt=2026-01-01/hour=01/{id}.parquet")
        );
        assert_eq!(SegmentKey::parse(&s), Ok(k.clone()));
        let dl = k.clone().with_dead_letter(true);
        assert_eq!(dl.to_string(), format!("{DEAD_LETTER_PREFIX}{s}"));
        assert_eq!(SegmentKey::parse(&dl.to_string()), Ok(dl));
        for bad in [
            format!("tenant=../signal=logs/dt=2026-01-01/hour=01/{id}.parquet"),
            format!("tenant=a/signal=spans/dt=2026-01-01/hour=01/{id}.parquet"),
            format!("tenant=a/signal=logs/dt=2026-01-01/hour=1/{id}.parquet"),
            format!("tenant=a/signal=logs/dt=2026-01-01/hour=01/{id}.csv"),
            format!("x/tenant=a/signal=logs/dt=2026-01-01/hour=01/{id}.parquet"),
            format!(
                "tenant=a/signal=logs/dt=2026-01-01/hour=01/{}.parquet",
                id.simple()
            ),
            "tenant=a/signal=logs/x.txt".to_string(),
        ] {
            assert!(SegmentKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_carry_the_derived_key() {
        let id = Uuid::now_v7();
        let k = SegmentKey::new("t", Signal::Traces, Partition::of(0), id);
        let facts = FileFacts {
            rows: 3,
            bytes: 10,
            min_timestamp: 1,
            max_timestamp: 2,
            services: vec!["api".into()],
            schema_version: 1,
        };
        let r = segment_record(&k, facts.clone(), "agent", 5);
        assert_eq!(r.object_key, k.to_string());
        assert_eq!(SegmentKey::of_record(&r), Some(k));
        assert!(r.validate().is_ok());
        let kv: HashMap<&str, &str> = [
            (META_MIN_TIMESTAMP, "1"),
            (META_MAX_TIMESTAMP, "2"),
            (META_SERVICES, r#"["api"]"#),
            (META_SCHEMA_VERSION, "1"),
        ]
        .into_iter()
        .collect();
        assert_eq!(FileFacts::from_footer(&kv, 3, 10), Some(facts));
    }
}
