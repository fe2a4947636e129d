//! `weir agent`: the DaemonSet role, against a remote control plane at
//! `control_plane.url`.

use anyhow::Result;

use super::data_path::{self, open_buffer, Index};
use super::remote_catalog;
use crate::config::ValidConfig;

/// Runs until SIGTERM or SIGINT.
pub async fn serve(valid: ValidConfig) -> Result<()> {
    let (_, buffer) = open_buffer(&valid.config)?;
    let index = Index {
        catalog: remote_catalog(&valid.config)?,
        embedded: false,
        role: "agent",
    };
    data_path::serve(valid, index, buffer).await
}
