//! `weir compactor`: compaction only, against a remote control plane, until a signal; SIGHUP
//! reloads `[compaction]`.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::info;
use weir_pipelines::metrics::Metrics;

use super::reload::{serve_reloads, ConfigSource, ReloadMetrics, Signals};
use super::{
    absolute, compactor, heartbeats, identity, open_lake, remote_catalog, write_listen_file,
};
use crate::admin::{self, Admin};
use crate::config::ValidConfig;

/// What a reload applies on the compactor (it restarts with the new settings).
const APPLIED: &[&str] = &["compaction", "lake.target_file_bytes"];

/// What the compactor never reads.
const UNUSED: &[&str] = &[
    "sources",
    "pipelines",
    "auth",
    "buffer",
    "retention",
    "iceberg",
    "control_plane.tokens",
    "control_plane.address",
    "control_plane.index",
    "control_plane.postgres_url",
    "control_plane.pool_size",
    "control_plane.max_request_bytes",
    "control_plane.max_connections",
    "control_plane.header_read_timeout",
    "control_plane.idle_timeout",
];

/// Compacts until SIGTERM or SIGINT; SIGHUP reloads `[compaction]` from `from`.
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let cfg = &valid.config;
    let data_dir = absolute(&cfg.data_dir)?;
    let identity = identity(cfg, &data_dir)?;
    let catalog = remote_catalog(cfg)?;
    let lake = open_lake(cfg, &data_dir)?;
    let metrics = Metrics::new();
    let reloads = ReloadMetrics::new(&metrics).context("cannot register the reload metrics")?;
    let listener = admin::bind("admin.address", valid.admin).await?;
    let bound = listener.local_addr().unwrap_or(valid.admin);
    write_listen_file(&data_dir, &[("admin.address".into(), bound)])?;
    let admin = Admin {
        index: Some(catalog.clone()),
        ..Admin::new(metrics.clone())
    };
    let stop = CancellationToken::new();
    let agent_id = identity.id.clone();
    let mut compactors = tokio::task::JoinSet::new();
    let start = |cfg: &crate::config::Config, set: &mut tokio::task::JoinSet<()>| {
        let token = stop.child_token();
        let c = compactor(
            cfg,
            lake.clone(),
            catalog.clone(),
            metrics.clone(),
            &agent_id,
        );
        set.spawn(c.run(token.clone()));
        token
    };
    let mut compactor_stop = start(cfg, &mut compactors);
    let hb = tokio::spawn(heartbeats(
        catalog.clone(),
        None,
        metrics.clone(),
        identity,
        "compactor",
        cfg.control_plane.heartbeat_interval.0,
        stop.clone(),
    ));
    let server = admin::serve(
        listener,
        admin.router(),
        stop.clone(),
        "admin",
        cfg.admin.limits(),
        admin::Counted {
            source: "admin",
            metrics: metrics.clone(),
        },
    );
    info!(%agent_id, "compactor running");
    let running = valid.config.clone();
    serve_reloads(
        &mut signals,
        &from,
        &reloads,
        running,
        (APPLIED, UNUSED),
        |new, changes| {
            if changes.any("compaction") || changes.any("lake.target_file_bytes") {
                // A merge in progress finishes beside the new compactor (each leases its own).
                compactor_stop.cancel();
                compactor_stop = start(new, &mut compactors);
            }
        },
    )
    .await;
    admin.set_ready(false);
    stop.cancel();
    // A merge in flight is abandoned: its lease expires and the plan is offered again.
    let _ = tokio::time::timeout(cfg.shutdown.timeout.0, async {
        while compactors.join_next().await.is_some() {}
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), hb).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    info!("compactor stopped");
    Ok(())
}
