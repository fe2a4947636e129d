//! `weir compactor`: compaction only, against a remote control plane, until a signal.

use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tracing::info;
use weir_pipelines::metrics::Metrics;

use super::{
    absolute, compactor, heartbeats, identity, open_lake, remote_catalog, shutdown_signal,
    write_listen_file,
};
use crate::admin::{self, Admin};
use crate::config::ValidConfig;

/// Compacts until SIGTERM or SIGINT.
pub async fn serve(valid: ValidConfig) -> Result<()> {
    let cfg = &valid.config;
    let data_dir = absolute(&cfg.data_dir)?;
    let identity = identity(cfg, &data_dir)?;
    let catalog = remote_catalog(cfg)?;
    let lake = open_lake(cfg, &data_dir)?;
    let metrics = Metrics::new();
    let listener = admin::bind("admin.address", valid.admin).await?;
    let bound = listener.local_addr().unwrap_or(valid.admin);
    write_listen_file(&data_dir, &[("admin.address".into(), bound)])?;
    let admin = Admin {
        index: Some(catalog.clone()),
        ..Admin::new(metrics.clone())
    };
    let stop = CancellationToken::new();
    let agent_id = identity.id.clone();
    let compactor = compactor(cfg, lake, catalog.clone(), metrics.clone(), &agent_id);
    let compactor_task = tokio::spawn(compactor.run(stop.clone()));
    let hb = tokio::spawn(heartbeats(
        catalog,
        None,
        metrics,
        identity,
        "compactor",
        cfg.control_plane.heartbeat_interval.0,
        stop.clone(),
    ));
    let server = admin::serve(listener, admin.router(), stop.clone(), "admin");
    info!(%agent_id, "compactor running");
    shutdown_signal().await;
    admin.set_ready(false);
    stop.cancel();
    // A merge in flight is abandoned: its lease expires and the plan is offered again.
    let _ = tokio::time::timeout(cfg.shutdown.timeout.0, compactor_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), hb).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    info!("compactor stopped");
    Ok(())
}
