//! `weir agent`: the DaemonSet role, against a remote control plane at
//! `control_plane.url`.

use anyhow::Result;

use super::data_path::{self, open_buffer, Index};
use super::reload::ConfigSource;
use super::remote_catalog;
use crate::config::ValidConfig;

/// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration from `from`.
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    let (_, buffer) = open_buffer(&valid.config)?;
    let index = Index {
        catalog: remote_catalog(&valid.config)?,
        embedded: false,
        role: "agent",
    };
    data_path::serve(valid, index, buffer, from).await
}
