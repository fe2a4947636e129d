//! `weir iceberg rebuild`: every Iceberg table written afresh from the index.

use anyhow::{Context, Result};
use weir_pipelines::metrics::Metrics;

use super::{absolute, iceberg_publisher, open_index, open_lake};
use crate::config::ValidConfig;

/// Rebuilds every table's metadata; prints one JSON line per table.
pub async fn rebuild(valid: ValidConfig) -> Result<()> {
    let cfg = &valid.config;
    let data_dir = absolute(&cfg.data_dir)?;
    let catalog = open_index(cfg, &data_dir).await?;
    let lake = open_lake(cfg, &data_dir)?;
    let publisher = iceberg_publisher(cfg, &lake, &catalog, &Metrics::new())?
        .context("iceberg.enabled = false: there are no Iceberg tables to rebuild")?;
    let tables = publisher.rebuild_all().await?;
    catalog.sync().await?;
    for (tenant, signal) in &tables {
        println!(
            "{}",
            serde_json::json!({"action": "rebuilt", "namespace": tenant, "table": signal.as_str()})
        );
    }
    eprintln!("{} table(s) rebuilt", tables.len());
    Ok(())
}
