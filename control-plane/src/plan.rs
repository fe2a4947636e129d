//! Compaction planning shared by the index backends.

use weir_catalog::{LeaseRequest, SegmentRecord};

/// Chooses a plan among one partition's candidates (sorted oldest first): the longest run
/// from the start whose total size stays within `target_bytes`.
pub fn plan_inputs(candidates: &[SegmentRecord], req: &LeaseRequest) -> Vec<SegmentRecord> {
    let mut plan = Vec::new();
    let mut total = 0u64;
    for c in candidates {
        if c.bytes >= req.target_bytes {
            continue;
        }
        if total + c.bytes > req.target_bytes || plan.len() == req.max_inputs {
            break;
        }
        total += c.bytes;
        plan.push(c.clone());
    }
    if plan.len() >= req.min_inputs {
        plan
    } else {
        Vec::new()
    }
}
