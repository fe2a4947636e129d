//! Weir's control plane: the index of every Parquet file (segment) written to the lake,
//! compaction leases, the agent fleet view and retention.
//!
//! The [`Catalog`] trait and its records live in `weir-catalog`; this crate implements it.
//! `weir run` embeds a [`SledCatalog`]; `weir control-plane` serves a [`SledCatalog`] or a
//! [`PgCatalog`] over the HTTP API in [`api`]; `weir agent` talks to it through
//! [`RemoteCatalog`]. The conformance suite in `tests/conformance/` runs against every
//! implementation.
#![warn(missing_docs)]

pub mod api;
mod client;
#[doc(hidden)]
pub mod faults;
mod pg_catalog;
mod plan;
mod sled_catalog;

pub use client::{RemoteCatalog, RemoteConfig};
pub use pg_catalog::{PgCatalog, PgConfig};
pub use sled_catalog::SledCatalog;
pub use weir_catalog::*;
