//! The file-tailing engine behind `[sources.kubernetes_logs]` and `[sources.file]`.
//!
//! Files are found by glob patterns (rescanned every `rescan_interval`) and identified by
//! device and inode, checked against a CRC of their first 256 bytes, so a reused inode is a
//! new file and two files with the same first bytes are never confused. A file renamed away
//! (rotation) keeps being read through its open handle until it has not grown for
//! `rotate_wait`; a file that shrank, or whose first bytes changed (copytruncate), is read
//! again from 0; a deleted file still open is read to its end; compressed rotated files are
//! never read.
//!
//! Exactly once: the records of a round go to the buffer in one write together with the
//! read positions they advance (the buffer's checkpoints ledger, `Ingest::write_with_checkpoints`),
//! so they are durable in the same fsync. A restart resumes at the committed positions: a
//! line is either in the buffer with its position past it, or neither. Backpressure (a full
//! buffer, a busy transform) refuses the write, so nothing advances and the lines are read
//! again after a back-off; nothing is dropped.

pub mod engine;
mod files;
pub mod lines;
mod run;
pub mod settings;

pub use engine::{Describe, FileMeta, TailEngine};
pub use lines::Format;
pub use run::run;
pub use settings::{StartAt, TailSettings};

#[cfg(test)]
mod tests;
