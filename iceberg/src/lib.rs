//! Weir's lake as Apache Iceberg tables.
//!
//! One namespace per tenant, one table per signal (`logs`, `metrics`, `traces`). The segment
//! index stays the source of truth: the [`Publisher`] derives Iceberg metadata from it
//! (metadata JSON, manifest lists and manifests, written under the lake's `metadata/`
//! prefix) and keeps each table's current metadata file in the index
//! ([`weir_catalog::IcebergPointer`], swapped with a compare-and-set as an Iceberg catalog
//! commits). Every change to the set of live files becomes a snapshot: registrations an
//! `append`, compaction commits a `replace`, retention a `delete`. [`rest`] serves the tables
//! over the Iceberg REST catalog API, read-only.
#![warn(missing_docs)]

mod publish;
pub mod rest;
pub mod table;

pub use publish::{IcebergMetrics, IcebergSettings, PublishReport, Publisher};

/// Errors of the Iceberg metadata.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// The lake schema has no Iceberg mapping, or a record does not fit it.
    #[error("iceberg schema: {0}")]
    Schema(String),
    /// Building or reading Iceberg metadata failed.
    #[error("iceberg metadata: {0}")]
    Metadata(#[from] iceberg::Error),
    /// Metadata JSON could not be read or written.
    #[error("iceberg metadata JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The index failed.
    #[error(transparent)]
    Catalog(#[from] weir_catalog::CatalogError),
    /// Another writer committed the table first; the next pass starts from its version.
    #[error("iceberg commit conflict: {0}")]
    Conflict(String),
    /// The lake failed.
    #[error(transparent)]
    Lake(#[from] weir_pipelines::lake::LakeError),
}
