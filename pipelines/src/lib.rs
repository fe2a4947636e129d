//! Weir's data path after the sources: the [`Batch`] model, OTLP → Arrow decoding, the durable
//! sled [`buffer`], Parquet encoding of the lake and the [`flusher`] that moves batches from the
//! buffer to object storage and registers every file in the control plane.
#![warn(missing_docs)]

pub mod batch;
pub mod budget;
pub mod buffer;
pub mod columns;
pub mod compactor;
pub mod flusher;
pub mod ingest;
pub mod lake;
pub mod logrows;
pub mod metricrows;
pub mod metrics;
pub mod otlp;
pub mod outbox;
pub mod parquet_writer;
pub mod reconcile;
pub mod sweeper;
pub mod units;

pub use batch::{Batch, Partition};
pub use budget::{DecodeBudget, OverBudget};
pub use parquet_writer::ParquetConfig;
pub use weir_schema::Signal;
