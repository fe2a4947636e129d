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

mod gate;
mod plan;
mod write;

use gate::Refs;
use plan::{expired_snapshots, Plan};

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
}
