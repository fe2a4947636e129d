//! `weir agent`: the DaemonSet role, against a remote control plane at
//! `control_plane.url`.

use anyhow::{Context, Result};

use super::data_path::{self, open_buffer, Index};
use super::reload::{ConfigSource, Signals};
use super::remote_catalog;
use crate::config::ValidConfig;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration from `from`.
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    // First, so a SIGHUP while the stores open does not end the process.
    let signals = Signals::install().context("cannot install the signal handlers")?;
    let (_, buffer) = open_buffer(&valid.config)?;
    let index = Index {
        catalog: remote_catalog(&valid.config)?,
        embedded: false,
        role: "agent",
    };
    data_path::serve(valid, index, buffer, from, signals).await
}
