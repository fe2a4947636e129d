//! The sweeper's gate: which retired segments no unexpired snapshot lists any more.

use super::*;

/// What the sweeper's gate reads: per table, the segments a snapshot that has not expired
/// may list. Kept apart from the tables' state so the gate never waits for a pass.
#[derive(Default)]
pub(super) struct Refs {
    pub(super) tables: HashMap<(String, String), TableRefs>,
    /// The tables the last pass found to publish, and when (unix ns) it listed them.
    pub(super) listed: HashSet<(String, String)>,
    pub(super) listed_at: i64,
}

pub(super) struct TableRefs {
    pub(super) live: HashSet<Uuid>,
    pub(super) removed: HashMap<Uuid, i64>,
    /// Start (unix ns) of the last pass that brought this table up to the index.
    pub(super) checked_at: i64,
}

impl Publisher {
    /// Records what a table's snapshots list after a pass brought it up to the index.
    pub(super) fn note_refs(
        &self,
        tenant: &str,
        signal: Signal,
        state: &TableState,
        checked_at: i64,
    ) {
        let refs = TableRefs {
            live: state.live.keys().copied().collect(),
            removed: state.removed.clone(),
            checked_at,
        };
        self.refs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .tables
            .insert((tenant.to_string(), signal.to_string()), refs);
    }
}

impl PurgeGate for Publisher {
    /// A retired segment's object may go once no snapshot in the committed metadata lists
    /// it: its table was brought up to the index after the segment was retired, the current
    /// snapshot does not list it, and the commit that expired the last snapshot listing it
    /// is done (`snapshot_max_age` after it was replaced, at the next pass). A table this publisher could not load or publish holds back every
    /// retirement since; a table that was never published (dead letters only, say) holds
    /// back nothing retired before the last pass listed the tables.
    fn may_purge(&self, s: &SegmentRecord, _now: i64) -> bool {
        let Some(retired_at) = s.retired_at else {
            return false;
        };
        let refs = self.refs.read().unwrap_or_else(|e| e.into_inner());
        let key = (s.tenant.clone(), s.signal.clone());
        match refs.tables.get(&key) {
            // `removed` is what the committed metadata still lists in an unexpired snapshot:
            // an entry leaves it only with the commit that expires that snapshot, so no
            // reader can load metadata naming a deleted object.
            Some(t) => {
                t.checked_at > retired_at
                    && !t.live.contains(&s.id)
                    && !t.removed.contains_key(&s.id)
            }
            None => !refs.listed.contains(&key) && refs.listed_at > retired_at,
        }
    }
}
