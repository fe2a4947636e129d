//! The file source: tails host log files matched by glob patterns (`include`, minus
//! `exclude`), one record per line, or per group of lines when `multiline_start` is set (a
//! line matching it starts a record, the others are appended; an unfinished group is emitted
//! after `tail.merge_timeout` without new lines). With `parse_timestamp`, a leading RFC 3339
//! or `YYYY-MM-DD HH:MM:SS[.f]` (UTC) timestamp becomes the record's time. Records carry
//! `log.file.path` and `log.file.name`.
//!
//! Reading, rotation, truncation and exactly-once checkpoints: see [`crate::tail`].

pub mod config;
mod service;

pub use config::{FileConfig, ValidFile};

/// Source name of its batches and metrics.
pub const SOURCE: &str = "file";
