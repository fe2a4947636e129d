//! Weir's control plane: the index of every Parquet file (segment) written to the lake.
//!
//! The [`Catalog`] trait is the one interface to the index. `weir run` embeds a
//! [`SledCatalog`]; later roles put a PostgreSQL catalog or a remote client behind the same
//! trait. Writes are idempotent by segment id, so an agent can retry a registration after a
//! crash without creating a second entry.
#![warn(missing_docs)]

pub mod api;
mod segment;
mod sled_catalog;

pub use segment::{
    valid_tenant as segment_valid_tenant, SegmentQuery, SegmentRecord, SegmentState,
};
pub use sled_catalog::SledCatalog;

use async_trait::async_trait;

/// Errors of the segment index.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The storage engine behind the index failed.
    #[error("index storage error: {0}")]
    Storage(String),
    /// A stored record could not be decoded.
    #[error("corrupt index record {key}: {reason}")]
    Corrupt {
        /// Key of the record.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A request was invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A segment id was registered twice with different contents.
    #[error("segment {0} is already registered with different contents")]
    Conflict(uuid::Uuid),
}

impl From<sled::Error> for CatalogError {
    fn from(e: sled::Error) -> Self {
        CatalogError::Storage(e.to_string())
    }
}

/// A page of segments and the cursor of the next page, if any.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SegmentPage {
    /// The segments of this page, oldest `max_timestamp` first.
    pub segments: Vec<SegmentRecord>,
    /// Opaque cursor to pass back for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The segment index.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Registers segments. Idempotent: registering a segment id again with the same contents
    /// succeeds without a second entry.
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError>;

    /// Lists active segments that match the query, ordered by their largest timestamp.
    async fn list(&self, query: &SegmentQuery) -> Result<SegmentPage, CatalogError>;

    /// Flushes the index to stable storage.
    async fn sync(&self) -> Result<(), CatalogError>;
}
