//! `weir retention`: one retention pass against the configured index; prints the segments
//! that expire (or would, with `dry_run`) as JSON lines.

use anyhow::{bail, Result};
use weir_pipelines::metrics::Metrics;

use super::{absolute, open_index, open_lake, sweeper};
use crate::config::ValidConfig;

/// Runs one retention pass.
pub async fn once(valid: ValidConfig, dry_run: bool) -> Result<()> {
    let cfg = &valid.config;
    if cfg.retention.policy().is_empty() {
        bail!("no retention configured: set retention.default or [[retention.rules]]");
    }
    let data_dir = absolute(&cfg.data_dir)?;
    let catalog = open_index(cfg, &data_dir).await?;
    let lake = open_lake(cfg, &data_dir)?;
    // With Iceberg tables (and not a dry run, which changes nothing), bring them up to the
    // index first: an object is deleted only once no unexpired snapshot lists it (the
    // publisher is the sweeper's gate); afterwards the tables drop what this pass retired.
    let publisher = match dry_run || cfg.retention.dry_run {
        true => None,
        false => super::iceberg_publisher(cfg, &lake, &catalog, &Metrics::new())?,
    };
    if let Some(p) = &publisher {
        p.publish_all().await?;
    }
    let gate = publisher
        .clone()
        .map(|p| p as std::sync::Arc<dyn weir_pipelines::sweeper::PurgeGate>);
    let report = sweeper(cfg, lake, catalog.clone(), Metrics::new(), dry_run, gate)
        .sweep(weir_catalog::now_ns())
        .await?;
    if let Some(p) = &publisher {
        p.publish_all().await?;
    }
    catalog.sync().await?;
    for s in &report.expired {
        println!(
            "{}",
            serde_json::json!({
                "action": if dry_run || cfg.retention.dry_run { "would_delete" } else { "expired" },
                "segment": s.id, "tenant": s.tenant, "signal": s.signal,
                "object_key": s.object_key, "max_timestamp": s.max_timestamp, "rows": s.row_count,
            })
        );
    }
    for k in &report.deleted_objects {
        println!(
            "{}",
            serde_json::json!({"action": "deleted_object", "object_key": k})
        );
    }
    eprintln!(
        "{} segment(s) {}, {} object(s) deleted",
        report.expired.len(),
        if dry_run || cfg.retention.dry_run {
            "would expire"
        } else {
            "expired"
        },
        report.deleted_objects.len()
    );
    Ok(())
}
