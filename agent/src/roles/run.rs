//! `weir run`: the agent with its embedded control plane (a sled index in `data_dir`, the
//! retention sweeper, the index's read API on the admin port).

use anyhow::{Context, Result};

use super::data_path::{self, open_buffer, Index};
use super::open_index;
use super::reload::{ConfigSource, Signals};
use crate::config::ValidConfig;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration from `from`.
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    // First, so a SIGHUP while the stores open does not end the process.
    let signals = Signals::install().context("cannot install the signal handlers")?;
    let (data_dir, buffer) = open_buffer(&valid.config)?;
    let catalog = open_index(&valid.config, &data_dir).await?;
    let index = Index {
        catalog,
        embedded: true,
        role: "run",
    };
    data_path::serve(valid, index, buffer, from, signals).await
}
