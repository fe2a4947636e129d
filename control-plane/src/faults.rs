//! Fault injection for the conformance suite: a test arms a point inside one of the index's
//! multi-write changes, and the next change that reaches it fails there, as if the process had
//! died between two of its writes. The suite then reopens the index and checks that none of
//! the change is visible (every change is all or nothing), then retries it.
//!
//! Production code never arms a point; an unarmed check is one uncontended lock.

use std::sync::{Arc, Mutex};

use crate::CatalogError;

/// A point between two writes of one index change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    /// A registration of several segments: after the first segment is written.
    RegisterPartway,
    /// A lease: after the lease record is written, before its inputs are marked leased.
    LeaseRecorded,
    /// A compaction commit: after the outputs are written, before the inputs are retired.
    CommitOutputsWritten,
    /// A compaction commit: after the inputs are retired, before the lease is marked
    /// committed.
    CommitInputsRetired,
    /// A retention pass: after the first expired segment (or group of them) is retired.
    ExpirePartway,
}

/// Armed fault points of one index handle; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Option<FaultPoint>>>);

impl Faults {
    /// Makes the next change that reaches `point` fail there (once).
    pub fn arm(&self, point: FaultPoint) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
    }

    /// Fails if `point` is armed, and disarms it.
    pub(crate) fn check(&self, point: FaultPoint) -> Result<(), CatalogError> {
        let mut armed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(CatalogError::Storage(format!(
                "injected fault at {point:?}"
            )));
        }
        Ok(())
    }
}
