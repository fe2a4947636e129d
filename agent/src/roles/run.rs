//! `weir run`: the agent with its embedded control plane (a sled index in `data_dir`, the
//! retention sweeper, the index's read API on the admin port).

use anyhow::Result;

use super::data_path::{self, open_buffer, Index};
use super::open_index;
use super::reload::ConfigSource;
use crate::config::ValidConfig;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration from `from`.
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    let (data_dir, buffer) = open_buffer(&valid.config)?;
    let catalog = open_index(&valid.config, &data_dir).await?;
    let index = Index {
        catalog,
        embedded: true,
        role: "run",
    };
    data_path::serve(valid, index, buffer, from).await
}
