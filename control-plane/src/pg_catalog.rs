//! The PostgreSQL segment index, for control planes with several replicas.
//!
//! Migrations live in `control-plane/migrations/` and are applied on start under an advisory
//! lock, each in its own transaction, tracked in `weir_schema_migrations`. Leases take their
//! inputs with `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent lessees (on any replica) get
//! disjoint inputs; a commit locks the lease and its inputs and swaps them for the outputs in
//! one transaction.

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use crate::faults::{FaultPoint, Faults};
use crate::plan::plan_inputs;
use crate::sled_catalog::same_registration as same_segment;
use crate::{
    AgentHeartbeat, AgentStatus, Catalog, CatalogError, CompactionLease, IcebergPointer,
    LeaseRequest, RetentionPolicy, SegmentPage, SegmentQuery, SegmentRecord, SegmentState,
};

/// Migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "segments",
        include_str!("../migrations/0001_segments.sql"),
    ),
    (
        2,
        "abandoned_leases",
        include_str!("../migrations/0002_abandoned_leases.sql"),
    ),
    (
        3,
        "iceberg_tables",
        include_str!("../migrations/0003_iceberg_tables.sql"),
    ),
];

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x0077_6569_726d_6967; // "weirmig"

/// Connection settings of the PostgreSQL index.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/db` (or key=value form).
    pub url: String,
    /// Most connections in the pool.
    pub pool_size: usize,
}

/// The PostgreSQL segment index.
#[derive(Clone)]
pub struct PgCatalog {
    pool: Pool,
    faults: Faults,
}

const COLUMNS: &str = "id, tenant, signal, object_key, partition, min_timestamp, max_timestamp, \
    row_count, bytes, services, schema_version, agent_id, created_at, state, replaced_by, \
    retired_at, purged_at";

fn db(e: tokio_postgres::Error) -> CatalogError {
    match e.as_db_error() {
        // A value PostgreSQL cannot take (class 22: a NUL in text, a number out of range) or
        // one past a limit (54000: an index entry too large): the request's fault, never
        // retryable as it is.
        Some(d) if d.code().code().starts_with("22") || d.code().code() == "54000" => {
            CatalogError::Invalid(format!("postgres: {} ({})", d.message(), d.code().code()))
        }
        Some(d) => {
            CatalogError::Storage(format!("postgres: {} ({})", d.message(), d.code().code()))
        }
        None if e.is_closed() => CatalogError::Unavailable(format!("postgres: {e}")),
        None => CatalogError::Storage(format!("postgres: {e}")),
    }
}

fn record(row: &Row) -> Result<SegmentRecord, CatalogError> {
    let id: Uuid = row.try_get(0).map_err(db)?;
    let corrupt = |reason: String| CatalogError::Corrupt {
        key: id.to_string(),
        reason,
    };
    let state: String = row.try_get(13).map_err(db)?;
    let state = match state.as_str() {
        "active" => SegmentState::Active,
        "compacted" => SegmentState::Compacted,
        "deleted" => SegmentState::Deleted,
        other => return Err(corrupt(format!("unknown state {other:?}"))),
    };
    let unsigned = |i: usize| -> Result<u64, CatalogError> {
        let v: i64 = row.try_get(i).map_err(db)?;
        u64::try_from(v).map_err(|_| corrupt(format!("negative value in column {i}")))
    };
    let schema_version: i32 = row.try_get(10).map_err(db)?;
    Ok(SegmentRecord {
        id,
        tenant: row.try_get(1).map_err(db)?,
        signal: row.try_get(2).map_err(db)?,
        object_key: row.try_get(3).map_err(db)?,
        partition: row.try_get(4).map_err(db)?,
        min_timestamp: row.try_get(5).map_err(db)?,
        max_timestamp: row.try_get(6).map_err(db)?,
        row_count: unsigned(7)?,
        bytes: unsigned(8)?,
        services: row.try_get(9).map_err(db)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt("negative schema_version".into()))?,
        agent_id: row.try_get(11).map_err(db)?,
        created_at: row.try_get(12).map_err(db)?,
        state,
        replaced_by: row.try_get(14).map_err(db)?,
        retired_at: row.try_get(15).map_err(db)?,
        purged_at: row.try_get(16).map_err(db)?,
    })
}

fn i64_of(v: u64, what: &str) -> Result<i64, CatalogError> {
    i64::try_from(v).map_err(|_| CatalogError::Invalid(format!("{what} {v} is too large")))
}

async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    s: &SegmentRecord,
) -> Result<bool, CatalogError> {
    let n = tx
        .execute(
            "INSERT INTO weir_segments (id, tenant, signal, object_key, partition, min_timestamp, \
             max_timestamp, row_count, bytes, services, schema_version, agent_id, created_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'active') \
             ON CONFLICT (id) DO NOTHING",
            &[
                &s.id,
                &s.tenant,
                &s.signal,
                &s.object_key,
                &s.partition,
                &s.min_timestamp,
                &s.max_timestamp,
                &i64_of(s.row_count, "row_count")?,
                &i64_of(s.bytes, "bytes")?,
                &s.services,
                &(s.schema_version as i32),
                &s.agent_id,
                &s.created_at,
            ],
        )
        .await
        .map_err(db)?;
    Ok(n == 1)
}

impl PgCatalog {
    /// Connects, and applies the migrations the database lacks.
    pub async fn connect(config: &PgConfig) -> Result<Self, CatalogError> {
        let pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| CatalogError::Invalid(format!("postgres url: {e}")))?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| CatalogError::Invalid(format!("postgres pool: {e}")))?;
        let catalog = PgCatalog {
            pool,
            faults: Faults::default(),
        };
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// Uses these armed fault points (tests: [`crate::faults`]).
    #[doc(hidden)]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, CatalogError> {
        self.pool
            .get()
            .await
            .map_err(|e| CatalogError::Unavailable(format!("postgres: {e}")))
    }

    async fn migrate(&self) -> Result<(), CatalogError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS weir_schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())",
                )
                .await
                .map_err(db)?;
            for (version, name, sql) in MIGRATIONS {
                let tx = client.transaction().await.map_err(db)?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM weir_schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await
                    .map_err(db)?;
                if done.is_none() {
                    tx.batch_execute(sql).await.map_err(|e| {
                        CatalogError::Storage(format!("migration {version} ({name}): {e}"))
                    })?;
                    tx.execute(
                        "INSERT INTO weir_schema_migrations (version, name) VALUES ($1, $2)",
                        &[version, name],
                    )
                    .await
                    .map_err(db)?;
                    tracing::info!(version, name, "applied index migration");
                }
                tx.commit().await.map_err(db)?;
            }
            Ok::<_, CatalogError>(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        result
    }

    async fn try_lease(
        &self,
        req: &LeaseRequest,
        now: i64,
    ) -> Result<Option<CompactionLease>, CatalogError> {
        let cutoff = now.saturating_sub((req.min_age_ms as i64).saturating_mul(1_000_000));
        let target = i64_of(req.target_bytes, "target_bytes")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let groups = tx
            .query(
                "SELECT tenant, signal, partition, schema_version FROM weir_segments \
                 WHERE state = 'active' AND bytes < $1 AND created_at <= $2 \
                   AND (lease_id IS NULL OR lease_expires_at <= $3) \
                   AND NOT starts_with(object_key, '_dead_letter/') \
                   AND ($4::text IS NULL OR tenant = $4) \
                   AND ($6::integer IS NULL OR schema_version = $6) \
                 GROUP BY tenant, signal, partition, schema_version \
                 HAVING count(*) >= $5 ORDER BY min(min_timestamp) LIMIT 16",
                &[
                    &target,
                    &cutoff,
                    &now,
                    &req.tenant,
                    &(req.min_inputs as i64),
                    &req.schema_version.map(|v| v as i32),
                ],
            )
            .await
            .map_err(db)?;
        for g in groups {
            let (tenant, signal, partition, schema_version): (String, String, String, i32) = (
                g.try_get(0).map_err(db)?,
                g.try_get(1).map_err(db)?,
                g.try_get(2).map_err(db)?,
                g.try_get(3).map_err(db)?,
            );
            let rows = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM weir_segments \
                         WHERE tenant = $1 AND signal = $2 AND partition = $3 AND schema_version = $4 \
                           AND state = 'active' AND bytes < $5 AND created_at <= $6 \
                           AND (lease_id IS NULL OR lease_expires_at <= $7) \
                           AND NOT starts_with(object_key, '_dead_letter/') \
                         ORDER BY min_timestamp, id FOR UPDATE SKIP LOCKED"
                    ),
                    &[&tenant, &signal, &partition, &schema_version, &target, &cutoff, &now],
                )
                .await
                .map_err(db)?;
            let candidates = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
            let inputs = plan_inputs(&candidates, req);
            if inputs.is_empty() {
                continue;
            }
            let lease = CompactionLease {
                lease_id: Uuid::now_v7(),
                tenant,
                signal,
                partition,
                schema_version: schema_version as u32,
                expires_at: now.saturating_add((req.ttl_ms as i64).saturating_mul(1_000_000)),
                inputs,
            };
            let ids: Vec<Uuid> = lease.inputs.iter().map(|s| s.id).collect();
            tx.execute(
                "INSERT INTO weir_compaction_leases (id, agent_id, tenant, signal, partition, \
                 schema_version, inputs, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &lease.lease_id,
                    &req.agent_id,
                    &lease.tenant,
                    &lease.signal,
                    &lease.partition,
                    &schema_version,
                    &ids,
                    &lease.expires_at,
                    &now,
                ],
            )
            .await
            .map_err(db)?;
            self.faults.check(FaultPoint::LeaseRecorded)?;
            tx.execute(
                "UPDATE weir_segments SET lease_id = $1, lease_expires_at = $2 WHERE id = ANY($3)",
                &[&lease.lease_id, &lease.expires_at, &ids],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(Some(lease));
        }
        tx.commit().await.map_err(db)?;
        Ok(None)
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        for s in segments {
            s.validate()?;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        for s in segments {
            if !insert(&tx, s).await? {
                let row = tx
                    .query_one(
                        &format!("SELECT {COLUMNS} FROM weir_segments WHERE id = $1"),
                        &[&s.id],
                    )
                    .await
                    .map_err(db)?;
                if !same_segment(&record(&row)?, s) {
                    return Err(CatalogError::Conflict(s.id));
                }
            }
            self.faults.check(FaultPoint::RegisterPartway)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn list(&self, q: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        q.validate()?;
        let limit = q.page_size()?;
        let (c_signal, c_ts, c_id) = match &q.cursor {
            None => (None, None, None),
            Some(c) => {
                let bad = || CatalogError::Invalid(format!("cursor {c:?} is not valid"));
                let mut parts = c.splitn(3, '.');
                let (Some(sig), Some(ts), Some(id)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                (
                    Some(sig.to_string()),
                    Some(ts.parse::<i64>().map_err(|_| bad())?),
                    Some(Uuid::parse_str(id).map_err(|_| bad())?),
                )
            }
        };
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM weir_segments \
                     WHERE state = 'active' AND tenant = $1 \
                       AND ($2::text IS NULL OR signal = $2) \
                       AND ($3::bigint IS NULL OR max_timestamp >= $3) \
                       AND ($4::bigint IS NULL OR min_timestamp <= $4) \
                       AND ($5::text IS NULL OR services && ARRAY[$5::text, '*']) \
                       AND ($6::text IS NULL OR (signal, max_timestamp, id) > ($6::text, $7::bigint, $8::uuid)) \
                       AND starts_with(object_key, '_dead_letter/') = $10 \
                     ORDER BY signal, max_timestamp, id LIMIT $9"
                ),
                &[
                    &q.tenant,
                    &q.signal,
                    &q.from,
                    &q.to,
                    &q.service,
                    &c_signal,
                    &c_ts,
                    &c_id,
                    &(limit as i64 + 1),
                    &q.dead_letter,
                ],
            )
            .await
            .map_err(db)?;
        let mut segments = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if segments.len() > limit {
            segments.truncate(limit);
            segments
                .last()
                .map(|s| format!("{}.{}.{}", s.signal, s.max_timestamp, s.id))
        } else {
            None
        };
        Ok(SegmentPage {
            segments,
            next_cursor,
        })
    }

    async fn lookup(&self, ids: &[Uuid]) -> Result<Vec<SegmentRecord>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM weir_segments WHERE id = ANY($1) ORDER BY id"),
                &[&ids],
            )
            .await
            .map_err(db)?;
        rows.iter().map(record).collect()
    }

    async fn sync(&self) -> Result<(), CatalogError> {
        // Every write is a committed transaction.
        Ok(())
    }

    async fn lease_compaction(
        &self,
        req: &LeaseRequest,
    ) -> Result<Option<CompactionLease>, CatalogError> {
        req.validate()?;
        self.try_lease(req, crate::now_ns()).await
    }

    async fn commit_compaction(
        &self,
        lease_id: Uuid,
        outputs: &[SegmentRecord],
    ) -> Result<(), CatalogError> {
        let lost = |reason: String| CatalogError::LeaseLost {
            lease: lease_id,
            reason,
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(l) = tx
            .query_opt(
                "SELECT tenant, signal, partition, schema_version, inputs, expires_at, committed_at, \
                 abandoned_at FROM weir_compaction_leases WHERE id = $1 FOR UPDATE",
                &[&lease_id],
            )
            .await
            .map_err(db)?
        else {
            return Err(lost("unknown lease".into()));
        };
        let committed: Option<i64> = l.try_get(6).map_err(db)?;
        if committed.is_some() {
            let known = self
                .lookup(&outputs.iter().map(|o| o.id).collect::<Vec<_>>())
                .await?;
            let same = outputs.len() == known.len()
                && outputs
                    .iter()
                    .all(|o| known.iter().any(|k| same_segment(k, o)));
            return if same {
                Ok(())
            } else {
                Err(lost("already committed".into()))
            };
        }
        let abandoned: Option<i64> = l.try_get(7).map_err(db)?;
        if abandoned.is_some() {
            return Err(lost("expired and abandoned; its output is deleted".into()));
        }
        let input_ids: Vec<Uuid> = l.try_get(4).map_err(db)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS}, lease_id FROM weir_segments WHERE id = ANY($1) \
                     ORDER BY min_timestamp, id FOR UPDATE"
                ),
                &[&input_ids],
            )
            .await
            .map_err(db)?;
        let mut inputs = Vec::with_capacity(rows.len());
        for row in &rows {
            let s = record(row)?;
            let holder: Option<Uuid> = row.try_get(17).map_err(db)?;
            if s.state != SegmentState::Active || holder != Some(lease_id) {
                return Err(lost(format!("input {} was re-leased or retired", s.id)));
            }
            inputs.push(s);
        }
        if inputs.len() != input_ids.len() {
            return Err(lost("an input is missing from the index".into()));
        }
        let schema_version: i32 = l.try_get(3).map_err(db)?;
        let lease = CompactionLease {
            lease_id,
            tenant: l.try_get(0).map_err(db)?,
            signal: l.try_get(1).map_err(db)?,
            partition: l.try_get(2).map_err(db)?,
            schema_version: schema_version as u32,
            inputs,
            expires_at: l.try_get(5).map_err(db)?,
        };
        lease.check_outputs(outputs)?;
        for o in outputs {
            if !insert(&tx, o).await? {
                return Err(CatalogError::Conflict(o.id));
            }
        }
        self.faults.check(FaultPoint::CommitOutputsWritten)?;
        let now = crate::now_ns();
        tx.execute(
            "UPDATE weir_segments SET state = 'compacted', replaced_by = $2, retired_at = $3, \
             lease_id = NULL, lease_expires_at = NULL WHERE id = ANY($1)",
            &[&input_ids, &outputs[0].id, &now],
        )
        .await
        .map_err(db)?;
        self.faults.check(FaultPoint::CommitInputsRetired)?;
        tx.execute(
            "UPDATE weir_compaction_leases SET committed_at = $2 WHERE id = $1",
            &[&lease_id, &now],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn heartbeat(&self, hb: &AgentHeartbeat) -> Result<(), CatalogError> {
        hb.validate()?;
        let status = serde_json::to_value(hb).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO weir_agents (agent_id, status, last_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent_id) DO UPDATE SET status = EXCLUDED.status, last_seen = EXCLUDED.last_seen",
                &[&hb.agent_id, &status, &crate::now_ns()],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentStatus>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT agent_id, status, last_seen FROM weir_agents ORDER BY last_seen DESC",
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0).map_err(db)?;
                let status: serde_json::Value = r.try_get(1).map_err(db)?;
                Ok(AgentStatus {
                    heartbeat: serde_json::from_value(status).map_err(|e| {
                        CatalogError::Corrupt {
                            key: format!("agent {id}"),
                            reason: e.to_string(),
                        }
                    })?,
                    last_seen: r.try_get(2).map_err(db)?,
                })
            })
            .collect()
    }

    async fn expire(
        &self,
        policy: &RetentionPolicy,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        if policy.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let pairs = tx
            .query(
                "SELECT DISTINCT tenant, signal FROM weir_segments WHERE state = 'active'",
                &[],
            )
            .await
            .map_err(db)?;
        let mut out = Vec::new();
        for p in pairs {
            let (tenant, signal): (String, String) =
                (p.try_get(0).map_err(db)?, p.try_get(1).map_err(db)?);
            let Some(age) = policy.max_age(&tenant, &signal) else {
                continue;
            };
            let cutoff = now.saturating_sub(age);
            let rows = if dry_run {
                let sql = format!(
                    "SELECT {COLUMNS} FROM weir_segments WHERE state = 'active' AND tenant = $1 \
                     AND signal = $2 AND max_timestamp < $3"
                );
                tx.query(&sql, &[&tenant, &signal, &cutoff]).await
            } else {
                let sql = format!(
                    "UPDATE weir_segments SET state = 'deleted', retired_at = $4, lease_id = NULL, \
                     lease_expires_at = NULL WHERE state = 'active' AND tenant = $1 AND signal = $2 \
                     AND max_timestamp < $3 RETURNING {COLUMNS}"
                );
                tx.query(&sql, &[&tenant, &signal, &cutoff, &now]).await
            }
            .map_err(db)?;
            for r in &rows {
                out.push(record(r)?);
            }
            if !dry_run && !rows.is_empty() {
                self.faults.check(FaultPoint::ExpirePartway)?;
            }
        }
        tx.commit().await.map_err(db)?;
        out.sort_by_key(|s| (s.max_timestamp, s.id));
        Ok(out)
    }

    async fn garbage(
        &self,
        retired_before: i64,
        limit: usize,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM weir_segments WHERE state <> 'active' AND purged_at IS NULL \
                     AND retired_at <= $1 ORDER BY retired_at, id LIMIT $2"
                ),
                &[&retired_before, &(limit as i64)],
            )
            .await
            .map_err(db)?;
        rows.iter().map(record).collect()
    }

    async fn abandon_expired_leases(
        &self,
        expired_before: i64,
        limit: usize,
    ) -> Result<Vec<CompactionLease>, CatalogError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE weir_compaction_leases SET abandoned_at = $2 \
                 WHERE committed_at IS NULL AND abandoned_at IS NULL AND expires_at < $1",
                &[&expired_before, &crate::now_ns()],
            )
            .await
            .map_err(db)?;
        let rows = client
            .query(
                "SELECT id, tenant, signal, partition, schema_version, expires_at \
                 FROM weir_compaction_leases WHERE abandoned_at IS NOT NULL AND cleaned_at IS NULL \
                 ORDER BY id LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let schema_version: i32 = r.try_get(4).map_err(db)?;
                Ok(CompactionLease {
                    lease_id: r.try_get(0).map_err(db)?,
                    tenant: r.try_get(1).map_err(db)?,
                    signal: r.try_get(2).map_err(db)?,
                    partition: r.try_get(3).map_err(db)?,
                    schema_version: schema_version as u32,
                    inputs: Vec::new(),
                    expires_at: r.try_get(5).map_err(db)?,
                })
            })
            .collect()
    }

    async fn mark_leases_cleaned(&self, leases: &[Uuid]) -> Result<(), CatalogError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE weir_compaction_leases SET cleaned_at = $2 \
                 WHERE id = ANY($1) AND abandoned_at IS NOT NULL",
                &[&leases, &crate::now_ns()],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn prune_leases(&self, expired_before: i64) -> Result<u64, CatalogError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM weir_compaction_leases WHERE expires_at < $1 \
                 AND (committed_at IS NOT NULL OR cleaned_at IS NOT NULL)",
                &[&expired_before],
            )
            .await
            .map_err(db)
    }

    async fn active_tables(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT tenant, signal FROM weir_segments \
                 WHERE state = 'active' AND NOT starts_with(object_key, '_dead_letter/') \
                 ORDER BY tenant, signal",
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }

    async fn iceberg_tables(&self) -> Result<Vec<IcebergPointer>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, signal, version, metadata_key, updated_at \
                 FROM weir_iceberg_tables ORDER BY tenant, signal",
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let version: i64 = r.try_get(2).map_err(db)?;
                Ok(IcebergPointer {
                    tenant: r.try_get(0).map_err(db)?,
                    signal: r.try_get(1).map_err(db)?,
                    version: u64::try_from(version).map_err(|_| CatalogError::Corrupt {
                        key: "weir_iceberg_tables".into(),
                        reason: format!("negative version {version}"),
                    })?,
                    metadata_key: r.try_get(3).map_err(db)?,
                    updated_at: r.try_get(4).map_err(db)?,
                })
            })
            .collect()
    }

    async fn swap_iceberg_table(
        &self,
        expected: Option<u64>,
        new: &IcebergPointer,
    ) -> Result<bool, CatalogError> {
        new.validate()?;
        let version = i64::try_from(new.version)
            .map_err(|_| CatalogError::Invalid(format!("version {} too large", new.version)))?;
        let client = self.client().await?;
        let changed = match expected {
            None => client
                .execute(
                    "INSERT INTO weir_iceberg_tables \
                     (tenant, signal, version, metadata_key, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, signal) DO NOTHING",
                    &[
                        &new.tenant,
                        &new.signal,
                        &version,
                        &new.metadata_key,
                        &new.updated_at,
                    ],
                )
                .await
                .map_err(db)?,
            Some(old) => {
                let old = i64::try_from(old)
                    .map_err(|_| CatalogError::Invalid(format!("version {old} too large")))?;
                client
                    .execute(
                        "UPDATE weir_iceberg_tables SET version = $3, metadata_key = $4, \
                         updated_at = $5 WHERE tenant = $1 AND signal = $2 AND version = $6",
                        &[
                            &new.tenant,
                            &new.signal,
                            &version,
                            &new.metadata_key,
                            &new.updated_at,
                            &old,
                        ],
                    )
                    .await
                    .map_err(db)?
            }
        };
        Ok(changed == 1)
    }

    async fn mark_purged(&self, ids: &[Uuid], at: i64) -> Result<(), CatalogError> {
        let client = self.client().await?;
        let active = client
            .query_opt(
                "SELECT id FROM weir_segments WHERE id = ANY($1) AND state = 'active' LIMIT 1",
                &[&ids],
            )
            .await
            .map_err(db)?;
        if let Some(r) = active {
            let id: Uuid = r.try_get(0).map_err(db)?;
            return Err(CatalogError::Invalid(format!(
                "segment {id} is active; only retired segments can be purged"
            )));
        }
        client
            .execute(
                "UPDATE weir_segments SET purged_at = $2 WHERE id = ANY($1) AND purged_at IS NULL",
                &[&ids, &at],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}
