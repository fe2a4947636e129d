//! Compaction planning shared by the index backends.

use weir_catalog::{LeaseRequest, SegmentRecord};

/// Chooses a plan among one partition's candidates (sorted oldest first), files already at
/// `target_bytes` left out: the first run of consecutive candidates, from the oldest start
/// that has one, of at least `min_inputs` files whose total stays within `target_bytes`
/// (longest from that start, at most `max_inputs`). Starting later when the oldest cannot
/// pair matters: an earlier compaction's output just under the target is the oldest file of
/// its partition, and a plan only from the start would leave every file after it
/// uncompacted for good.
pub fn plan_inputs(candidates: &[SegmentRecord], req: &LeaseRequest) -> Vec<SegmentRecord> {
    let eligible: Vec<&SegmentRecord> = candidates
        .iter()
        .filter(|c| c.bytes < req.target_bytes)
        .collect();
    for start in 0..eligible.len() {
        let mut total = 0u64;
        let mut len = 0;
        for c in &eligible[start..] {
            if total + c.bytes > req.target_bytes || len == req.max_inputs {
                break;
            }
            total += c.bytes;
            len += 1;
        }
        if len >= req.min_inputs.max(1) {
            return eligible[start..start + len]
                .iter()
                .map(|c| (*c).clone())
                .collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_catalog::SegmentState;

    fn seg(i: i64, bytes: u64) -> SegmentRecord {
        SegmentRecord {
            id: uuid::Uuid::now_v7(),
            tenant: "t".into(),
            signal: "logs".into(),
            object_key: format!("k{i}"),
            partition: "dt=2026-01-01/hour=00".into(),
            min_timestamp: i,
            max_timestamp: i + 1,
            row_count: 1,
            bytes,
            services: vec![],
            schema_version: 1,
            agent_id: "a".into(),
            created_at: 0,
            state: SegmentState::Active,
            replaced_by: None,
            retired_at: None,
            purged_at: None,
        }
    }

    fn req(target: u64) -> LeaseRequest {
        LeaseRequest {
            agent_id: "c".into(),
            ttl_ms: 1,
            target_bytes: target,
            min_inputs: 2,
            max_inputs: 256,
            min_age_ms: 0,
            tenant: None,
            schema_version: None,
        }
    }

    #[test]
    fn an_earlier_output_near_the_target_does_not_block_the_partition() {
        // The oldest candidate is a compaction output of 400 bytes: with any file after it
        // the run is over the target, so the plan must start after it.
        let c = vec![seg(0, 400), seg(1, 100), seg(2, 100), seg(3, 100)];
        let plan = plan_inputs(&c, &req(450));
        assert_eq!(
            plan.iter().map(|s| s.min_timestamp).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn the_first_run_that_fits_wins_and_large_files_are_skipped() {
        let c = vec![seg(0, 100), seg(1, 1000), seg(2, 100), seg(3, 300)];
        let plan = plan_inputs(&c, &req(450));
        assert_eq!(
            plan.iter().map(|s| s.min_timestamp).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(plan_inputs(&[seg(0, 400), seg(1, 100)], &req(450)).is_empty());
    }
}
