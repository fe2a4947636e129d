//! The publisher: derives each table's Iceberg metadata from the segment index.
//!
//! Every `interval` it compares, for each tenant and signal, the active segments in the index
//! with the live files of the table's current snapshot, and commits what changed as new
//! snapshots in one metadata version:
//! 1. `append`: segments registered since (flushes, and compaction outputs whose inputs were
//!    never published);
//! 2. `replace`: compaction commits (inputs out, outputs in, the same rows; `overwrite` when
//!    some inputs were never published, so the rows differ);
//! 3. `delete`: segments retired by retention.
//!
//! Each snapshot writes one manifest listing every live file (added ones `ADDED`, the others
//! `EXISTING` with their original snapshot and sequence numbers, removed ones `DELETED`) and
//! one manifest list; the metadata JSON is written last, then the index's pointer is swapped
//! from the version it was read at. A writer that lost the swap (another control-plane
//! replica committed first) deletes what it wrote and starts again from the new version.
//!
//! Snapshots expire `snapshot_max_age` after they stopped being current; their manifest
//! lists and manifests are deleted once the metadata that drops them is committed. The
//! publisher is the sweeper's [`PurgeGate`]: it knows, per table, the segments the current
//! snapshot lists and those only older snapshots list (with when they stopped being current),
//! so an object is deleted only after the last snapshot that lists it expired.
//!
//! The active set is read in pages; a compaction committing meanwhile could put its input
//! (read first) and output (read later) in one snapshot. Before committing, the publisher
//! looks the listed segments up again and reads the table again if any left the active set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, FormatVersion, Manifest, ManifestList, ManifestListWriter, ManifestWriterBuilder,
    Operation, PartitionSpec, Schema, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata, TableMetadataBuilder, MAIN_BRANCH,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;
use weir_catalog::{Catalog, IcebergPointer, SegmentQuery, SegmentRecord, SegmentState};
use weir_pipelines::lake::Lake;
use weir_pipelines::sweeper::PurgeGate;
use weir_schema::Signal;

use crate::table;
use crate::IcebergError;

/// Settings of the publisher (`[iceberg]`).
#[derive(Debug, Clone)]
pub struct IcebergSettings {
    /// How often the index is compared with the tables.
    pub interval: Duration,
    /// How long a snapshot stays readable after it stopped being current.
    pub snapshot_max_age: Duration,
    /// Metadata JSON files kept besides the current one.
    pub keep_metadata_files: u64,
}

impl Default for IcebergSettings {
    fn default() -> Self {
        IcebergSettings {
            interval: Duration::from_secs(30),
            snapshot_max_age: Duration::from_secs(15 * 60),
            keep_metadata_files: 10,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Tables with a new metadata version.
    pub committed: usize,
    /// Snapshots written.
    pub snapshots: usize,
    /// Snapshots expired.
    pub expired: usize,
    /// The operations of the snapshots written, in order.
    pub operations: Vec<String>,
}

/// The publisher's metrics (`weir_iceberg_*`).
#[derive(Clone)]
pub struct IcebergMetrics {
    commits: prometheus::IntCounterVec,
    snapshots: prometheus::IntCounterVec,
    published: prometheus::IntGauge,
}

impl IcebergMetrics {
    /// Registers the metrics with the process's registry.
    pub fn new(metrics: &weir_pipelines::metrics::Metrics) -> Result<Self, prometheus::Error> {
        let commits = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "iceberg_commits_total",
                "Iceberg table commits: committed, conflict (another writer first), failed",
            ),
            &["result"],
        )?;
        let snapshots = prometheus::IntCounterVec::new(
            prometheus::Opts::new("iceberg_snapshots_total", "Iceberg snapshots written"),
            &["operation"],
        )?;
        let published = prometheus::IntGauge::new(
            "iceberg_published_seconds",
            "Unix time up to which every table reflects the index (start of the last complete pass)",
        )?;
        metrics.register(Box::new(commits.clone()))?;
        metrics.register(Box::new(snapshots.clone()))?;
        metrics.register(Box::new(published.clone()))?;
        Ok(IcebergMetrics {
            commits,
            snapshots,
            published,
        })
    }
}

/// A live file of a table's current snapshot.
#[derive(Debug, Clone)]
struct LiveFile {
    file: DataFile,
    snapshot_id: i64,
    sequence: i64,
    file_sequence: i64,
}

/// What the publisher knows of one table: the metadata its pointer names, its live files by
/// segment id, and the segments only older snapshots list, with when (unix ms) the snapshot
/// that removed them was committed (the older snapshot expires `snapshot_max_age` later).
struct TableState {
    pointer: IcebergPointer,
    metadata: TableMetadata,
    live: BTreeMap<Uuid, LiveFile>,
    removed: HashMap<Uuid, i64>,
}

/// What the sweeper's gate reads: per table, the segments a snapshot that has not expired
/// may list. Kept apart from the tables' state so the gate never waits for a pass.
#[derive(Default)]
struct Refs {
    tables: HashMap<(String, String), TableRefs>,
    /// The tables the last pass found to publish, and when (unix ns) it listed them.
    listed: HashSet<(String, String)>,
    listed_at: i64,
}

struct TableRefs {
    live: HashSet<Uuid>,
    removed: HashMap<Uuid, i64>,
    /// Start (unix ns) of the last pass that brought this table up to the index.
    checked_at: i64,
}

/// Derives the lake's Iceberg metadata from the index.
pub struct Publisher {
    catalog: Arc<dyn Catalog>,
    lake: Lake,
    settings: IcebergSettings,
    tables: tokio::sync::Mutex<HashMap<(String, Signal), TableState>>,
    published_through: AtomicI64,
    refs: std::sync::RwLock<Refs>,
    metrics: Option<IcebergMetrics>,
}

/// How many compactions of compactions between two passes are followed to find the output
/// that replaced a published segment; past that, the segment counts as deleted (`delete`)
/// and the output as new (`append`): the rows stay exact, only the operation is coarser.
const MAX_CHAIN: usize = 16;

/// Segments listed per page when a table is compared with the index.
const MAX_PAGE: usize = 10_000;

fn metadata_dir(tenant: &str, signal: Signal) -> String {
    format!("metadata/tenant={tenant}/signal={signal}")
}

fn segment_id(path: &str) -> Option<Uuid> {
    let name = path.rsplit('/').next()?;
    Uuid::parse_str(name.strip_suffix(".parquet")?).ok()
}

fn now_ms() -> i64 {
    weir_catalog::now_ns() / 1_000_000
}

/// A fresh positive snapshot id.
fn snapshot_id() -> i64 {
    let v = Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64);
    v as i64
}

impl Publisher {
    /// A publisher over this index and lake.
    pub fn new(catalog: Arc<dyn Catalog>, lake: Lake, settings: IcebergSettings) -> Self {
        Publisher {
            catalog,
            lake,
            settings,
            tables: tokio::sync::Mutex::new(HashMap::new()),
            published_through: AtomicI64::new(0),
            refs: std::sync::RwLock::new(Refs::default()),
            metrics: None,
        }
    }

    /// Counts commits and snapshots in `metrics`.
    pub fn with_metrics(mut self, metrics: IcebergMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The start (unix ns) of the last pass that brought every table up to the index: every
    /// segment retired before it has left the current snapshots. 0 before the first.
    pub fn published_through(&self) -> i64 {
        self.published_through.load(Ordering::Acquire)
    }

    /// Records what a table's snapshots list after a pass brought it up to the index.
    fn note_refs(&self, tenant: &str, signal: Signal, state: &TableState, checked_at: i64) {
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

    /// Publishes every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // A pass cut short by shutdown leaves at most unreferenced metadata files: the
            // pointer swap is the commit.
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.publish_all() => r,
            };
            match pass {
                Ok(r) if r != PublishReport::default() => {
                    info!(
                        tables = r.committed,
                        snapshots = r.snapshots,
                        expired = r.expired,
                        "iceberg metadata published"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "iceberg publish failed; retrying at the next interval")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    /// The tables there are: those with active segments and those with metadata, ordered.
    async fn table_names(
        &self,
        pointers: &[IcebergPointer],
    ) -> Result<Vec<(String, Signal)>, IcebergError> {
        let mut names: Vec<(String, Signal)> = self
            .catalog
            .active_tables()
            .await?
            .into_iter()
            .chain(
                pointers
                    .iter()
                    .map(|p| (p.tenant.clone(), p.signal.clone())),
            )
            .filter_map(|(t, s)| Signal::parse(&s).map(|s| (t, s)))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// One pass over every table: the tables with active segments and those with metadata.
    pub async fn publish_all(&self) -> Result<PublishReport, IcebergError> {
        let started = weir_catalog::now_ns();
        let pointers = self.catalog.iceberg_tables().await?;
        let names = self.table_names(&pointers).await?;
        let listed: HashSet<(String, String)> = names
            .iter()
            .map(|(t, s)| (t.clone(), s.to_string()))
            .collect();
        let by_name: HashMap<(String, Signal), IcebergPointer> = pointers
            .into_iter()
            .filter_map(|p| Signal::parse(&p.signal).map(|s| ((p.tenant.clone(), s), p)))
            .collect();
        let mut report = PublishReport::default();
        let mut all_ok = true;
        for (tenant, signal) in names {
            let pointer = by_name.get(&(tenant.clone(), signal)).cloned();
            match self.publish_table(&tenant, signal, pointer).await {
                Ok(r) => {
                    report.committed += r.committed;
                    report.snapshots += r.snapshots;
                    report.expired += r.expired;
                    report.operations.extend(r.operations);
                }
                Err(e) => {
                    all_ok = false;
                    warn!(%tenant, %signal, error = %e, "iceberg table not published");
                }
            }
        }
        {
            let mut refs = self.refs.write().unwrap_or_else(|e| e.into_inner());
            refs.listed = listed;
            refs.listed_at = started;
        }
        if all_ok {
            self.published_through.fetch_max(started, Ordering::AcqRel);
            if let Some(m) = &self.metrics {
                m.published.set(started / 1_000_000_000);
            }
        }
        Ok(report)
    }

    async fn active_segments(
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
    async fn consistent_active(
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

    /// Loads a table's state from the metadata its pointer names: the live files of the
    /// current snapshot, and the files each snapshot removed (its manifest's `DELETED`
    /// entries), which the snapshots before it still list.
    async fn load(&self, pointer: IcebergPointer) -> Result<TableState, IcebergError> {
        let bytes = self.lake.get(&pointer.metadata_key).await?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes)?;
        let current = metadata.current_snapshot_id();
        let mut live = BTreeMap::new();
        let mut removed: HashMap<Uuid, i64> = HashMap::new();
        for snap in metadata.snapshots() {
            let is_current = Some(snap.snapshot_id()) == current;
            let list_key = self.key_of(snap.manifest_list())?;
            let list = ManifestList::parse_with_version(
                &self.lake.get(&list_key).await?,
                FormatVersion::V2,
            )?;
            for m in list.entries() {
                let manifest =
                    Manifest::parse_avro(&self.lake.get(&self.key_of(&m.manifest_path)?).await?)?;
                for e in manifest.entries() {
                    let Some(id) = segment_id(e.file_path()) else {
                        return Err(IcebergError::Schema(format!(
                            "data file {} is not a lake segment",
                            e.file_path()
                        )));
                    };
                    if !e.is_alive() {
                        // Removed by this snapshot: listed still by its parent, if that one
                        // has not expired (is still in the metadata).
                        let parent_kept = snap
                            .parent_snapshot_id()
                            .is_some_and(|p| metadata.snapshot_by_id(p).is_some());
                        if parent_kept {
                            let at = removed.entry(id).or_insert(snap.timestamp_ms());
                            *at = (*at).max(snap.timestamp_ms());
                        }
                        continue;
                    }
                    if !is_current {
                        continue;
                    }
                    // An entry written as ADDED inherits its snapshot and sequence numbers
                    // from the manifest's entry in the list (assigned at commit).
                    let inherited = m.sequence_number;
                    live.insert(
                        id,
                        LiveFile {
                            file: e.data_file().clone(),
                            snapshot_id: e.snapshot_id().unwrap_or(m.added_snapshot_id),
                            sequence: e.sequence_number().unwrap_or(inherited),
                            file_sequence: e.file_sequence_number.unwrap_or(inherited),
                        },
                    );
                }
            }
        }
        Ok(TableState {
            pointer,
            metadata,
            live,
            removed,
        })
    }

    /// The lake key of a URI this publisher wrote.
    fn key_of(&self, uri: &str) -> Result<String, IcebergError> {
        let base = format!("{}/", self.lake.url().trim_end_matches('/'));
        uri.strip_prefix(&base)
            .map(str::to_string)
            .ok_or_else(|| IcebergError::Schema(format!("{uri} is not under the lake {base}")))
    }

    fn uri(&self, key: &str) -> String {
        table::object_uri(self.lake.url(), key)
    }

    /// Brings one table up to the index; one metadata version for everything that changed.
    pub async fn publish_table(
        &self,
        tenant: &str,
        signal: Signal,
        pointer: Option<IcebergPointer>,
    ) -> Result<PublishReport, IcebergError> {
        let started = weir_catalog::now_ns();
        let mut tables = self.tables.lock().await;
        let name = (tenant.to_string(), signal);
        // A cached state of another version than the index's (another replica committed, or
        // a commit of ours failed) is read again.
        if tables
            .get(&name)
            .is_some_and(|s| Some(s.pointer.version) != pointer.as_ref().map(|p| p.version))
        {
            tables.remove(&name);
        }
        if !tables.contains_key(&name) {
            if let Some(p) = pointer.clone() {
                let state = self.load(p).await?;
                tables.insert(name.clone(), state);
            }
        }
        let state = tables.get(&name);
        let expected = pointer.as_ref().map(|p| p.version);
        let result = self.commit(tenant, signal, state, expected).await;
        let outcome = match &result {
            Ok(Some(_)) => Some("committed"),
            Ok(None) => None,
            Err(IcebergError::Conflict(_)) => Some("conflict"),
            Err(_) => Some("failed"),
        };
        if let (Some(m), Some(outcome)) = (&self.metrics, outcome) {
            m.commits.with_label_values(&[outcome]).inc();
        }
        match result {
            Ok(Some((new_state, report))) => {
                if let Some(m) = &self.metrics {
                    for op in &report.operations {
                        m.snapshots.with_label_values(&[op.as_str()]).inc();
                    }
                }
                self.note_refs(tenant, signal, &new_state, started);
                tables.insert(name, new_state);
                Ok(report)
            }
            Ok(None) => {
                if let Some(state) = tables.get(&name) {
                    self.note_refs(tenant, signal, state, started);
                }
                Ok(PublishReport::default())
            }
            Err(e) => {
                tables.remove(&name);
                Err(e)
            }
        }
    }

    /// Commits what changed since `state` (`None`: the table written afresh) over the
    /// pointer at version `expected`.
    async fn commit(
        &self,
        tenant: &str,
        signal: Signal,
        state: Option<&TableState>,
        expected: Option<u64>,
    ) -> Result<Option<(TableState, PublishReport)>, IcebergError> {
        let now = now_ms();
        let empty = BTreeMap::new();
        let live = state.map(|s| &s.live).unwrap_or(&empty);
        let active = self.consistent_active(tenant, signal, live).await?;
        let active_ids: HashSet<Uuid> = active.iter().map(|s| s.id).collect();
        let added: Vec<&SegmentRecord> = active
            .iter()
            .filter(|s| !live.contains_key(&s.id))
            .collect();
        let removed_ids: Vec<Uuid> = live
            .keys()
            .filter(|id| !active_ids.contains(id))
            .copied()
            .collect();
        let expired = state
            .map(|s| expired_snapshots(&s.metadata, now, self.settings.snapshot_max_age))
            .unwrap_or_default();
        if added.is_empty() && removed_ids.is_empty() && expired.is_empty() && state.is_some() {
            return Ok(None);
        }

        // Classify the removed: compaction inputs whose output (or its output, ...) is among
        // the added, and the rest (retention).
        let removed = self.catalog.lookup(&removed_ids).await?;
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

        let schema = table::schema(signal)?;
        let (mut builder, current_schema, spec, parent, sequence) = match state {
            Some(s) => (
                TableMetadataBuilder::new_from_metadata(
                    s.metadata.clone(),
                    Some(self.uri(&s.pointer.metadata_key)),
                ),
                s.metadata.current_schema().clone(),
                s.metadata.default_partition_spec().as_ref().clone(),
                s.metadata.current_snapshot_id(),
                s.metadata.last_sequence_number(),
            ),
            None => {
                let spec = table::partition_spec(signal, &schema)?;
                let order = table::sort_order(signal, &schema)?;
                let location = self.uri(&format!("tenant={tenant}/signal={signal}"));
                let fresh = TableMetadataBuilder::new(
                    schema.clone(),
                    spec,
                    order,
                    location,
                    FormatVersion::V2,
                    HashMap::new(),
                )?
                .build()?
                .metadata;
                let mapping = table::name_mapping(fresh.current_schema());
                let props = HashMap::from([
                    (
                        "schema.name-mapping.default".to_string(),
                        mapping.to_string(),
                    ),
                    (
                        "write.parquet.compression-codec".to_string(),
                        "zstd".to_string(),
                    ),
                    (
                        "write.metadata.previous-versions-max".to_string(),
                        self.settings.keep_metadata_files.to_string(),
                    ),
                    ("weir.tenant".to_string(), tenant.to_string()),
                    ("weir.signal".to_string(), signal.to_string()),
                ]);
                let spec = fresh.default_partition_spec().as_ref().clone();
                let schema = fresh.current_schema().clone();
                (
                    TableMetadataBuilder::new_from_metadata(fresh, None).set_properties(props)?,
                    schema,
                    spec,
                    None,
                    0,
                )
            }
        };

        let mut live: BTreeMap<Uuid, LiveFile> = live.clone();
        let mut written: Vec<String> = Vec::new();
        let result = self
            .write_snapshots(
                tenant,
                signal,
                now,
                &mut live,
                &mut written,
                Plan {
                    active: &active,
                    added: &added,
                    outputs: &outputs,
                    compacted: &compacted,
                    removed_ids: &removed_ids,
                    schema: current_schema.as_ref().clone(),
                    spec,
                    parent,
                    sequence,
                },
            )
            .await;
        let snapshots = match result {
            Ok(s) => s,
            Err(e) => {
                self.delete_all(&written).await;
                return Err(e);
            }
        };
        let report = PublishReport {
            committed: 1,
            snapshots: snapshots.len(),
            expired: expired.len(),
            operations: snapshots
                .iter()
                .map(|s| s.summary().operation.as_str().to_string())
                .collect(),
        };
        for snap in snapshots {
            let id = snap.snapshot_id();
            builder = builder.add_snapshot(snap)?.set_ref(
                MAIN_BRANCH,
                SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
            )?;
        }
        if !expired.is_empty() {
            builder = builder.remove_snapshots(&expired);
        }
        let metadata = builder.build()?.metadata;
        let version = expected.unwrap_or(0) + 1;
        let dir = metadata_dir(tenant, signal);
        let metadata_key = format!("{dir}/{version:05}-{}.metadata.json", Uuid::now_v7());
        if let Err(e) = self
            .lake
            .put(&metadata_key, serde_json::to_vec(&metadata)?)
            .await
        {
            self.delete_all(&written).await;
            return Err(e.into());
        }
        written.push(metadata_key.clone());
        let pointer = IcebergPointer {
            tenant: tenant.to_string(),
            signal: signal.to_string(),
            version,
            metadata_key,
            updated_at: weir_catalog::now_ns(),
        };
        match self.catalog.swap_iceberg_table(expected, &pointer).await {
            Ok(true) => {}
            Ok(false) => {
                self.delete_all(&written).await;
                return Err(IcebergError::Conflict(format!(
                    "{tenant}.{signal}: another writer committed version {version} first"
                )));
            }
            Err(e) => {
                // The swap may have happened (an answer lost): leave the files; a metadata
                // file the pointer does not name is never read.
                return Err(e.into());
            }
        }
        // Committed: what the new metadata no longer names can go.
        if let Some(old) = state {
            let mut gone: Vec<String> = Vec::new();
            for snap in old.metadata.snapshots() {
                if expired.contains(&snap.snapshot_id()) {
                    if let Ok(list_key) = self.key_of(snap.manifest_list()) {
                        if let Ok(bytes) = self.lake.get(&list_key).await {
                            if let Ok(list) =
                                ManifestList::parse_with_version(&bytes, FormatVersion::V2)
                            {
                                gone.extend(
                                    list.entries()
                                        .iter()
                                        .filter_map(|m| self.key_of(&m.manifest_path).ok()),
                                );
                            }
                        }
                        gone.push(list_key);
                    }
                }
            }
            let kept: HashSet<&str> = metadata
                .metadata_log()
                .iter()
                .map(|l| l.metadata_file.as_str())
                .collect();
            let mut old_files: Vec<String> = old
                .metadata
                .metadata_log()
                .iter()
                .map(|l| l.metadata_file.clone())
                .collect();
            old_files.push(self.uri(&old.pointer.metadata_key));
            gone.extend(
                old_files
                    .iter()
                    .filter(|f| !kept.contains(f.as_str()))
                    .filter_map(|f| self.key_of(f).ok()),
            );
            self.delete_all(&gone).await;
        }
        // The files this commit removed stay listed by the snapshot before it until that one
        // expires; entries of expired snapshots are forgotten.
        let age_ms = i64::try_from(self.settings.snapshot_max_age.as_millis()).unwrap_or(i64::MAX);
        let mut removed: HashMap<Uuid, i64> = state
            .map(|s| s.removed.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, at)| at.saturating_add(age_ms) >= now)
            .collect();
        for id in &removed_ids {
            removed.insert(*id, now);
        }
        Ok(Some((
            TableState {
                pointer,
                metadata,
                live,
                removed,
            },
            report,
        )))
    }

    /// `weir iceberg rebuild`: writes every table afresh from the index (one `append` of its
    /// active segments, a new table history) over its current pointer, then deletes the
    /// table's older metadata files. For metadata lost or damaged in the lake; a reader of an
    /// older snapshot loses it. Returns the tables rebuilt.
    pub async fn rebuild_all(&self) -> Result<Vec<(String, Signal)>, IcebergError> {
        let pointers = self.catalog.iceberg_tables().await?;
        let names = self.table_names(&pointers).await?;
        for (tenant, signal) in &names {
            self.rebuild_table(tenant, *signal).await?;
        }
        Ok(names)
    }

    async fn rebuild_table(&self, tenant: &str, signal: Signal) -> Result<(), IcebergError> {
        let mut tables = self.tables.lock().await;
        tables.remove(&(tenant.to_string(), signal));
        let dir = metadata_dir(tenant, signal);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let old: Vec<String> = self
                .lake
                .list(&dir)
                .await?
                .into_iter()
                .map(|o| o.key)
                .collect();
            let expected = self
                .catalog
                .iceberg_tables()
                .await?
                .into_iter()
                .find(|p| p.tenant == tenant && p.signal == signal.as_str())
                .map(|p| p.version);
            match self.commit(tenant, signal, None, expected).await {
                Ok(state) => {
                    if let Some((state, _)) = state {
                        tables.insert((tenant.to_string(), signal), state);
                    }
                    self.delete_all(&old).await;
                    return Ok(());
                }
                Err(IcebergError::Conflict(_)) if attempt < 5 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn delete_all(&self, keys: &[String]) {
        for k in keys {
            if let Err(e) = self.lake.delete(k).await {
                warn!(key = %k, error = %e, "iceberg: could not delete a metadata file; it stays unreferenced");
            }
        }
    }

    /// Writes the manifests and manifest lists of a pass's snapshots (append, replace,
    /// delete, each when it has files), updating `live`; returns the snapshots in order.
    #[allow(clippy::too_many_arguments)]
    async fn write_snapshots(
        &self,
        tenant: &str,
        signal: Signal,
        now: i64,
        live: &mut BTreeMap<Uuid, LiveFile>,
        written: &mut Vec<String>,
        plan: Plan<'_>,
    ) -> Result<Vec<Snapshot>, IcebergError> {
        let dir = metadata_dir(tenant, signal);
        let by_id: HashMap<Uuid, &SegmentRecord> = plan.active.iter().map(|s| (s.id, s)).collect();
        let appends: Vec<Uuid> = plan
            .added
            .iter()
            .map(|s| s.id)
            .filter(|id| !plan.outputs.contains(id))
            .collect();
        let mut outs: Vec<Uuid> = plan.outputs.iter().copied().collect();
        outs.sort();
        let mut ins: Vec<Uuid> = plan.compacted.iter().copied().collect();
        ins.sort();
        let mut deletes: Vec<Uuid> = plan
            .removed_ids
            .iter()
            .copied()
            .filter(|id| !plan.compacted.contains(id))
            .collect();
        deletes.sort();
        let in_rows: u64 = ins
            .iter()
            .filter_map(|id| live.get(id))
            .map(|f| f.file.record_count())
            .sum();
        let out_rows: u64 = outs
            .iter()
            .filter_map(|id| by_id.get(id))
            .map(|s| s.row_count)
            .sum();
        let compaction_op = if in_rows == out_rows {
            Operation::Replace
        } else {
            Operation::Overwrite
        };
        let schema = Arc::new(plan.schema);
        let mut parent = plan.parent;
        let mut sequence = plan.sequence;
        let mut snapshots = Vec::new();
        for (op, add, remove) in [
            (Operation::Append, appends, Vec::new()),
            (compaction_op, outs, ins),
            (Operation::Delete, Vec::new(), deletes),
        ] {
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            let id = snapshot_id();
            sequence += 1;
            let io = FileIO::new_with_memory();
            let manifest_key = format!("{dir}/{}-m0.avro", Uuid::now_v7());
            let manifest_uri = self.uri(&manifest_key);
            let mut w = ManifestWriterBuilder::new(
                io.new_output(&manifest_uri)?,
                Some(id),
                schema.clone(),
                plan.spec.clone(),
            )
            .build_v2_data();
            let (mut added_rows, mut deleted_rows) = (0u64, 0u64);
            for (sid, f) in live.iter() {
                if remove.contains(sid) {
                    w.add_delete_file(f.file.clone(), f.sequence, Some(f.file_sequence))?;
                    deleted_rows += f.file.record_count();
                } else {
                    w.add_existing_file(
                        f.file.clone(),
                        f.snapshot_id,
                        f.sequence,
                        Some(f.file_sequence),
                    )?;
                }
            }
            let mut new_files = Vec::new();
            for sid in &add {
                let Some(s) = by_id.get(sid) else { continue };
                let file = table::data_file(signal, &schema, self.lake.url(), s)?;
                added_rows += file.record_count();
                w.add_file(file.clone(), sequence)?;
                new_files.push((*sid, file));
            }
            let manifest = w.write_manifest_file().await?;
            self.lake
                .put(&manifest_key, io.new_input(&manifest_uri)?.read().await?)
                .await?;
            written.push(manifest_key);

            let list_key = format!("{dir}/snap-{id}-{}.avro", Uuid::now_v7());
            let list_uri = self.uri(&list_key);
            let mut lw = ManifestListWriter::v2(
                io.new_output(&list_uri)?.writer().await?,
                id,
                parent,
                sequence,
            );
            lw.add_manifests(std::iter::once(manifest))?;
            lw.close().await?;
            self.lake
                .put(&list_key, io.new_input(&list_uri)?.read().await?)
                .await?;
            written.push(list_key);

            for sid in &remove {
                live.remove(sid);
            }
            for (sid, file) in new_files {
                live.insert(
                    sid,
                    LiveFile {
                        file,
                        snapshot_id: id,
                        sequence,
                        file_sequence: sequence,
                    },
                );
            }
            let total_rows: u64 = live.values().map(|f| f.file.record_count()).sum();
            let summary = Summary {
                operation: op,
                additional_properties: HashMap::from([
                    ("added-data-files".into(), add.len().to_string()),
                    ("deleted-data-files".into(), remove.len().to_string()),
                    ("added-records".into(), added_rows.to_string()),
                    ("deleted-records".into(), deleted_rows.to_string()),
                    ("total-data-files".into(), live.len().to_string()),
                    ("total-records".into(), total_rows.to_string()),
                    ("total-delete-files".into(), "0".into()),
                    ("total-position-deletes".into(), "0".into()),
                    ("total-equality-deletes".into(), "0".into()),
                ]),
            };
            snapshots.push(
                Snapshot::builder()
                    .with_snapshot_id(id)
                    .with_parent_snapshot_id(parent)
                    .with_sequence_number(sequence)
                    .with_timestamp_ms(now)
                    .with_manifest_list(list_uri)
                    .with_summary(summary)
                    .with_schema_id(schema.schema_id())
                    .build(),
            );
            parent = Some(id);
        }
        Ok(snapshots)
    }
}

/// What one pass commits.
struct Plan<'a> {
    active: &'a [SegmentRecord],
    added: &'a [&'a SegmentRecord],
    outputs: &'a HashSet<Uuid>,
    compacted: &'a HashSet<Uuid>,
    removed_ids: &'a [Uuid],
    schema: Schema,
    spec: PartitionSpec,
    parent: Option<i64>,
    sequence: i64,
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

/// Snapshots that stopped being current more than `max_age` before `now_ms` (never the
/// current one): a snapshot stops being current when its child is committed.
fn expired_snapshots(metadata: &TableMetadata, now_ms: i64, max_age: Duration) -> Vec<i64> {
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
