//! What a pass commits: the table's active segments read consistently, the removed ones
//! classified (compaction inputs and their outputs, the rest retention), and the snapshots
//! that expire.

use super::*;

/// How many compactions of compactions between two passes are followed to find the output
/// that replaced a published segment; past that, the segment counts as deleted (`delete`)
/// and the output as new (`append`): the rows stay exact, only the operation is coarser.
pub(super) const MAX_CHAIN: usize = 16;

/// Segments listed per page when a table is compared with the index.
pub(super) const MAX_PAGE: usize = 10_000;

/// What one pass commits.
pub(super) struct Plan<'a> {
    pub(super) active: &'a [SegmentRecord],
    pub(super) added: &'a [&'a SegmentRecord],
    pub(super) outputs: &'a HashSet<Uuid>,
    pub(super) compacted: &'a HashSet<Uuid>,
    pub(super) removed_ids: &'a [Uuid],
    pub(super) schema: Schema,
    pub(super) spec: PartitionSpec,
    pub(super) parent: Option<i64>,
    pub(super) sequence: i64,
}

impl Publisher {
    pub(super) async fn active_segments(
        &self,
        tenant: &str,
        signal: Signal,
    ) -> Result<Vec<SegmentRecord>, IcebergError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .catalog
                .list(&SegmentQuery {
                    tenant: tenant.to_string(),
                    signal: Some(signal.as_str().to_string()),
                    from: None,
                    to: None,
                    service: None,
                    dead_letter: false,
                    limit: Some(MAX_PAGE),
                    cursor,
                })
                .await?;
            out.extend(page.segments);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The table's active segments as of one moment: when the listing differs from `live`,
    /// every listed segment is looked up again, and the table read again if one of them left
    /// the active set meanwhile (a compaction's input read before its commit beside its output
    /// read after would count rows twice).
    pub(super) async fn consistent_active(
        &self,
        tenant: &str,
        signal: Signal,
        live: &BTreeMap<Uuid, LiveFile>,
    ) -> Result<Vec<SegmentRecord>, IcebergError> {
        for _ in 0..3 {
            let active = self.active_segments(tenant, signal).await?;
            if active.len() == live.len() && active.iter().all(|s| live.contains_key(&s.id)) {
                return Ok(active);
            }
            let ids: Vec<Uuid> = active.iter().map(|s| s.id).collect();
            let mut still = true;
            for chunk in ids.chunks(1000) {
                let now = self.catalog.lookup(chunk).await?;
                if now.len() != chunk.len() || now.iter().any(|s| s.state != SegmentState::Active) {
                    still = false;
                    break;
                }
            }
            if still {
                return Ok(active);
            }
        }
        Err(IcebergError::Conflict(format!(
            "{tenant}.{signal}: the active segments changed while they were read, three times"
        )))
    }

    /// Classifies the removed segments: compaction inputs whose output (or its output, ...)
    /// is among the added, and those outputs. The rest of the removed are retention's.
    pub(super) async fn classify(
        &self,
        added: &[&SegmentRecord],
        removed_ids: &[Uuid],
    ) -> Result<(HashSet<Uuid>, HashSet<Uuid>), IcebergError> {
        let removed = self.catalog.lookup(removed_ids).await?;
        let added_ids: HashSet<Uuid> = added.iter().map(|s| s.id).collect();
        let mut outputs: HashSet<Uuid> = HashSet::new();
        let mut compacted: HashSet<Uuid> = HashSet::new();
        let mut next_of: HashMap<Uuid, Option<Uuid>> = removed
            .iter()
            .map(|s| {
                (
                    s.id,
                    (s.state == SegmentState::Compacted)
                        .then_some(s.replaced_by)
                        .flatten(),
                )
            })
            .collect();
        for s in &removed {
            // Follow the chain of outputs (an output compacted again before a pass).
            let mut at = next_of.get(&s.id).copied().flatten();
            for _ in 0..MAX_CHAIN {
                let Some(id) = at else { break };
                if added_ids.contains(&id) {
                    outputs.insert(id);
                    compacted.insert(s.id);
                    break;
                }
                let next = match next_of.get(&id) {
                    Some(n) => *n,
                    None => {
                        let r = self.catalog.lookup(&[id]).await?;
                        let n = r
                            .first()
                            .filter(|r| r.state == SegmentState::Compacted)
                            .and_then(|r| r.replaced_by);
                        next_of.insert(id, n);
                        n
                    }
                };
                at = next;
            }
        }
        Ok((outputs, compacted))
    }
}

/// Snapshots that stopped being current more than `max_age` before `now_ms` (never the
/// current one): a snapshot stops being current when its child is committed.
pub(super) fn expired_snapshots(
    metadata: &TableMetadata,
    now_ms: i64,
    max_age: Duration,
) -> Vec<i64> {
    let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let current = metadata.current_snapshot_id();
    let mut superseded_at: HashMap<i64, i64> = HashMap::new();
    for s in metadata.snapshots() {
        if let Some(p) = s.parent_snapshot_id() {
            let t = superseded_at.entry(p).or_insert(s.timestamp_ms());
            *t = (*t).min(s.timestamp_ms());
        }
    }
    metadata
        .snapshots()
        .filter(|s| Some(s.snapshot_id()) != current)
        .filter(|s| {
            superseded_at
                .get(&s.snapshot_id())
                .is_some_and(|t| *t < now_ms.saturating_sub(age))
        })
        .map(|s| s.snapshot_id())
        .collect()
}
