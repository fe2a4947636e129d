//! The roles of the one binary, one module each: `weir run` ([`run`]), `weir agent`
//! ([`agent`]), both on the agent's data path ([`data_path`]); `weir control-plane`
//! ([`control_plane`]); `weir compactor` ([`compactor`]); `weir retention` ([`retention`]).
//! This module holds the factories they share: the lake, the index, the compactor, the
//! sweeper, heartbeats and the shutdown signal.

pub mod agent;
pub mod compactor;
pub mod control_plane;
pub mod data_path;
pub mod iceberg;
pub mod identity;
pub mod preflight;
pub mod reload;
pub mod retention;
pub mod run;
pub mod sources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;
use weir_catalog::{AgentHeartbeat, Catalog};
use weir_control_plane::{PgCatalog, PgConfig, RemoteCatalog, RemoteConfig, SledCatalog};
use weir_pipelines::buffer::{Buffer, Ledger};
use weir_pipelines::compactor::{Compactor, CompactorConfig};
use weir_pipelines::lake::{Lake, LakeRetry};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::parquet_writer::ParquetConfig;
use weir_pipelines::sweeper::{Sweeper, SweeperConfig};

use crate::config::{Config, IndexBackend};

/// Makes a path absolute against the working directory.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// Writes the addresses this process bound, by configuration key, to `{data_dir}/listen.json`
/// (`{"admin.address": "127.0.0.1:8686", ...}`; the real port when the key asked for port 0),
/// replacing the file atomically (a reader sees the old file or the new one, never a part),
/// for operators and test harnesses that start a role on port 0. Every role that listens
/// writes it once all its sockets are bound, before it serves.
pub fn write_listen_file(data_dir: &Path, bound: &[(String, SocketAddr)]) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = bound
        .iter()
        .map(|(k, a)| (k.clone(), serde_json::Value::String(a.to_string())))
        .collect();
    let path = data_dir.join("listen.json");
    let tmp = data_dir.join("listen.json.tmp");
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::Value::Object(map).to_string()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// This process's identity: `agent.id`, else the persistent id of `data_dir`
/// ([`identity`]).
pub fn identity(cfg: &Config, data_dir: &Path) -> Result<identity::Identity> {
    identity::resolve(cfg.agent.id.as_deref(), data_dir)
        .context("cannot establish this agent's id (set agent.id, or fix data_dir)")
}

/// Opens the lake of `lake.url` (default `{data_dir}/lake`).
pub fn open_lake(cfg: &Config, data_dir: &Path) -> Result<Lake> {
    let url = match &cfg.lake.url {
        Some(u) => u.clone(),
        None => format!("file://{}", data_dir.join("lake").display()),
    };
    let options = cfg
        .lake
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let retry = LakeRetry {
        max_retries: cfg.lake.max_retries,
        retry_timeout: cfg.lake.retry_timeout.0,
        ..LakeRetry::default()
    };
    Ok(Lake::open_with(&url, &options, retry)?)
}

/// The control plane `weir agent` and `weir compactor` talk to.
pub fn remote_catalog(cfg: &Config) -> Result<Arc<dyn Catalog>> {
    let Some(url) = &cfg.control_plane.url else {
        bail!("control_plane.url must be set for this role (the control plane's base URL)");
    };
    Ok(Arc::new(RemoteCatalog::new(&RemoteConfig {
        url: url.clone(),
        token: cfg.control_plane.token.clone(),
        timeout: cfg.control_plane.timeout.0,
    })?))
}

/// The index `weir run` embeds or `weir control-plane` serves.
pub async fn open_index(cfg: &Config, data_dir: &Path) -> Result<Arc<dyn Catalog>> {
    match cfg.control_plane.index {
        IndexBackend::Sled => {
            let path = data_dir.join("index");
            Ok(Arc::new(SledCatalog::open(&path).with_context(|| {
                format!("cannot open the segment index in {}", path.display())
            })?))
        }
        IndexBackend::Postgres => {
            let url = cfg
                .control_plane
                .postgres_url
                .clone()
                .context("control_plane.postgres_url must be set")?;
            let pg = PgCatalog::connect(&PgConfig {
                url,
                pool_size: cfg.control_plane.pool_size,
            })
            .await
            .context("cannot open the PostgreSQL index")?;
            Ok(Arc::new(pg))
        }
    }
}

/// A compactor configured from `[compaction]` and `[lake]`, leasing as `agent_id`.
pub fn compactor(
    cfg: &Config,
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    agent_id: &str,
) -> Compactor {
    Compactor::new(
        lake,
        catalog,
        metrics,
        CompactorConfig {
            agent_id: agent_id.to_string(),
            target_bytes: cfg.lake.target_file_bytes.0,
            lease_ttl: cfg.compaction.lease_ttl.0,
            interval: cfg.compaction.interval.0,
            min_age: cfg.compaction.min_age.0,
            min_inputs: cfg.compaction.min_inputs,
            parquet: ParquetConfig {
                zstd_level: cfg.lake.zstd_level,
                row_group_rows: cfg.lake.row_group_rows,
            },
            read_batch_rows: 8192,
            memory_bytes: usize::try_from(cfg.compaction.memory.0).unwrap_or(usize::MAX),
            max_inputs: weir_pipelines::compactor::max_inputs_for(
                usize::try_from(cfg.compaction.memory.0).unwrap_or(usize::MAX),
            ),
        },
    )
}

/// The Iceberg publisher of a control plane, when `iceberg.enabled`.
pub fn iceberg_publisher(
    cfg: &Config,
    lake: &Lake,
    catalog: &Arc<dyn Catalog>,
    metrics: &Metrics,
) -> Result<Option<Arc<weir_iceberg::Publisher>>> {
    if !cfg.iceberg.enabled {
        return Ok(None);
    }
    let counters = weir_iceberg::IcebergMetrics::new(metrics)
        .context("cannot register the Iceberg publisher's metrics")?;
    Ok(Some(Arc::new(
        weir_iceberg::Publisher::new(
            catalog.clone(),
            lake.clone(),
            weir_iceberg::IcebergSettings {
                interval: cfg.iceberg.interval.0,
                snapshot_max_age: cfg.iceberg.snapshot_max_age.0,
                keep_metadata_files: cfg.iceberg.keep_metadata_files,
            },
        )
        .with_metrics(counters),
    )))
}

/// A sweeper configured from `[retention]` and `[compaction]`; with `gate` (the Iceberg
/// publisher), an object is deleted only once no unexpired snapshot lists it.
pub fn sweeper(
    cfg: &Config,
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    dry_run: bool,
    gate: Option<Arc<dyn weir_pipelines::sweeper::PurgeGate>>,
) -> Sweeper {
    Sweeper::new(
        lake,
        catalog,
        metrics,
        SweeperConfig {
            policy: cfg.retention.policy(),
            interval: cfg.retention.interval.0,
            grace: cfg.compaction.grace.0,
            dry_run: dry_run || cfg.retention.dry_run,
            gate,
        },
    )
}

/// Reports this agent to the fleet view every `interval` until `shutdown`.
pub async fn heartbeats(
    catalog: Arc<dyn Catalog>,
    buffer: Option<Arc<dyn Buffer>>,
    metrics: Metrics,
    identity: identity::Identity,
    role: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let started_at = weir_catalog::now_ns();
    loop {
        let stats = buffer.as_ref().map(|b| b.stats()).unwrap_or_default();
        let last = metrics.flush.last_flush_seconds.get();
        let hb = AgentHeartbeat {
            agent_id: identity.id.clone(),
            labels: identity.labels.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            role: role.into(),
            buffer_bytes: stats.bytes,
            buffer_entries: stats.entries,
            outbox: buffer
                .as_ref()
                .map(|b| b.ledger_len(Ledger::Outbox) as u64)
                .unwrap_or(0),
            last_flush_at: (last > 0).then(|| last.saturating_mul(1_000_000_000)),
            started_at,
        };
        if let Err(e) = catalog.heartbeat(&hb).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
