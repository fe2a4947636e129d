//! The agent's data path, shared by `weir run` (embedded index) and `weir agent` (remote
//! control plane): sources → ingest (transforms, buffer) → flusher → lake → outbox → index,
//! with reconciliation, compaction, retention and heartbeats beside it.
//!
//! Start: the buffer, index and lake open; every source is built (its sockets bound) before
//! any serves, so a port conflict stops the start before anything runs. Shutdown (SIGTERM or
//! SIGINT, or a source that fails): `/readyz` turns 503, the sources stop accepting and
//! finish their in-flight requests, the flusher makes a last flush attempt, the outbox a last
//! registration, the buffer is fsynced, and the process exits, all within `shutdown.timeout`.
//!
//! Reload (SIGHUP, [`super::reload`]): a configuration that loads, validates and passes the
//! role's checks is applied without a restart and without dropping accepted data: new
//! transform pipelines are built first (a module that fails refuses the reload before
//! anything changed); changed sources are stopped (their in-flight requests finish) and
//! started again with their new configuration (a source whose new address cannot be bound
//! is started again on its old one and the reload is refused); API keys and the index's read
//! tokens, `buffer.max_bytes`, `buffer.max_partitions_per_request`, `buffer.late_window` and
//! `buffer.future_window` apply to the next request; the compactor and the sweeper restart
//! with new `[compaction]`, `[retention]` and `lake.target_file_bytes`; `listen.json` is
//! rewritten. Every other changed key is named in a
//! warning and applies at the next restart ([`APPLIED`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use weir_catalog::Catalog;
use weir_control_plane::api::Auth;
use weir_pipelines::buffer::{Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::flusher::{Flusher, FlusherConfig};
use weir_pipelines::ingest::{Ingest, IngestSettings};
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::outbox::Outbox;
use weir_pipelines::parquet_writer::ParquetConfig;
use weir_sources::auth::ApiKeys;
use weir_sources::{SourceContext, ValidSource};
use weir_transforms::{Limits, PipelineSpec, Pipelines, StepMetrics, StepSpec};

use super::identity::Identity;
use super::reload::{Changes, ConfigSource, ReloadMetrics, Signal, Signals};
use super::sources::{ReplaceError, RunningSources};
use super::{absolute, compactor, heartbeats, identity, open_lake, sweeper, write_listen_file};
use crate::admin::{self, Admin};
use crate::config::{Config, PipelineConfig, ValidConfig};

/// How the data path reaches its index.
pub struct Index {
    /// The index.
    pub catalog: Arc<dyn Catalog>,
    /// The index is this process's own (`weir run`): the admin port serves its read API and
    /// the retention sweeper runs here.
    pub embedded: bool,
    /// Role name in heartbeats (`run`, `agent`).
    pub role: &'static str,
}

/// Opens the data directory and the buffer in it.
pub fn open_buffer(cfg: &Config) -> Result<(PathBuf, Arc<dyn Buffer>)> {
    let data_dir = absolute(&cfg.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let path = data_dir.join("buffer");
    let buffer = SledBuffer::open(&SledBufferConfig {
        path: path.clone(),
        max_bytes: cfg.buffer.max_bytes.0,
    })
    .with_context(|| format!("cannot open the buffer in {}", path.display()))?;
    Ok((data_dir, Arc::new(buffer)))
}

/// The transforms crate's view of the validated `[[pipelines]]`.
fn pipeline_specs(cfg: &[PipelineConfig]) -> Vec<PipelineSpec> {
    cfg.iter()
        .map(|p| PipelineSpec {
            name: p.name.clone(),
            sources: p.sources.clone(),
            signals: p
                .signals
                .iter()
                .filter_map(|s| weir_schema::Signal::parse(s))
                .collect(),
            steps: p
                .transforms
                .iter()
                .map(|t| StepSpec {
                    name: t.name.clone(),
                    module: t.module.clone(),
                    config: t.config.to_string(),
                    limits: Limits {
                        max_memory: t.max_memory.0 as usize,
                        timeout: t.timeout.0,
                        max_output_bytes: t.max_output_bytes.0 as usize,
                        recycle_after_calls: t.recycle_after_calls,
                        recycle_memory: t.recycle_memory.0 as usize,
                        max_instances: t.max_instances,
                        instance_wait: t.instance_wait.0,
                    },
                    on_error: t.on_error,
                })
                .collect(),
        })
        .collect()
}

/// The keys a reload applies on the data path (everything under them); other changed keys
/// wait for a restart.
pub const APPLIED: &[&str] = &[
    "sources",
    "pipelines",
    "auth",
    "buffer.max_bytes",
    "buffer.max_partitions_per_request",
    "buffer.late_window",
    "buffer.future_window",
    "compaction",
    "retention",
    "lake.target_file_bytes",
    "control_plane.tokens",
];

/// Keys `weir run` never reads (a remote control plane's, and the control plane's own
/// listener): changing them needs nothing.
const UNUSED_BY_RUN: &[&str] = &[
    "control_plane.url",
    "control_plane.token",
    "control_plane.timeout",
    "control_plane.address",
    "control_plane.max_request_bytes",
    "control_plane.max_connections",
    "control_plane.header_read_timeout",
    "control_plane.idle_timeout",
];

/// Keys `weir agent` never reads (the control plane's own): changing them needs nothing.
const UNUSED_BY_AGENT: &[&str] = &[
    "retention",
    "iceberg",
    "control_plane.tokens",
    "control_plane.address",
    "control_plane.index",
    "control_plane.postgres_url",
    "control_plane.pool_size",
    "control_plane.max_request_bytes",
    "control_plane.max_connections",
    "control_plane.header_read_timeout",
    "control_plane.idle_timeout",
];

/// The transforms and limits `Ingest` applies: the pipelines of `[[pipelines]]` (built and
/// their modules compiled here, so call it off the async threads) and the hours bound.
/// `step_metrics` are the transforms' metrics, registered at the first build.
fn ingest_settings(
    cfg: &Config,
    step_metrics: StepMetrics,
) -> Result<IngestSettings, weir_transforms::PipelineError> {
    let processor: Option<Arc<dyn weir_pipelines::ingest::BatchProcessor>> =
        if cfg.pipelines.is_empty() {
            None
        } else {
            let pipelines = Pipelines::with_metrics(
                pipeline_specs(&cfg.pipelines),
                step_metrics,
                Duration::from_secs(1),
            )?;
            info!(
                pipelines = cfg.pipelines.len(),
                "transform pipelines loaded"
            );
            Some(Arc::new(pipelines))
        };
    Ok(IngestSettings {
        processor,
        max_partitions: cfg.buffer.max_partitions_per_request,
        window: cfg.buffer.window(),
    })
}

/// The flusher, the outbox and the background work, with their stop tokens.
struct Background {
    flusher: JoinHandle<()>,
    stop_flusher: CancellationToken,
    outbox: JoinHandle<()>,
    stop_outbox: CancellationToken,
    tasks: JoinSet<()>,
    stop_tasks: CancellationToken,
    /// The compactor's and the sweeper's own tokens (under `stop_tasks`): a reload stops them
    /// and starts them again with new settings.
    compactor: Option<CancellationToken>,
    sweeper: Option<CancellationToken>,
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    agent_id: String,
    embedded: bool,
    /// The Iceberg publisher, the sweeper's gate.
    gate: Option<Arc<dyn weir_pipelines::sweeper::PurgeGate>>,
}

impl Background {
    fn start(
        cfg: &Config,
        identity: &Identity,
        index: &Index,
        buffer: &Arc<dyn Buffer>,
        lake: &Lake,
        metrics: &Metrics,
        wake: Arc<Notify>,
    ) -> Result<Background> {
        // The embedded index's Iceberg tables (a remote control plane publishes its own).
        let publisher = match index.embedded {
            true => super::iceberg_publisher(cfg, lake, &index.catalog, metrics)?,
            false => None,
        };
        let catalog = &index.catalog;
        let agent_id = identity.id.clone();
        let timeout = cfg.shutdown.timeout.0;
        let outbox_wake = Arc::new(Notify::new());
        let flusher = Flusher::new(
            buffer.clone(),
            lake.clone(),
            metrics.clone(),
            FlusherConfig {
                flush_bytes: cfg.lake.flush_bytes.0,
                max_pending_bytes: cfg.lake.max_pending_bytes.0,
                max_file_age: cfg.lake.max_file_age.0,
                poll_interval: Duration::from_millis(250).min(cfg.lake.max_file_age.0),
                parquet: ParquetConfig {
                    zstd_level: cfg.lake.zstd_level,
                    row_group_rows: cfg.lake.row_group_rows,
                },
                agent_id: agent_id.clone(),
            },
            wake,
            outbox_wake.clone(),
        );
        let journal_replayed = flusher.journal_replayed();
        let stop_flusher = CancellationToken::new();
        let flusher = tokio::spawn(flusher.run(stop_flusher.clone(), timeout / 2));

        let outbox = Outbox::new(
            buffer.clone(),
            catalog.clone(),
            metrics.clone(),
            outbox_wake,
        );
        let stop_tasks = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Reconciliation waits for the flusher's journal replay before it looks at the lake.
        let reconciler = weir_pipelines::reconcile::Reconciler {
            lake: lake.clone(),
            catalog: catalog.clone(),
            outbox: outbox.clone(),
            agent_id: agent_id.clone(),
            metrics: metrics.clone(),
            written_before: weir_catalog::now_ns(),
        };
        tasks.spawn(reconciler.run(journal_replayed, stop_tasks.clone()));
        let stop_outbox = CancellationToken::new();
        let outbox = {
            let stop = stop_outbox.clone();
            tokio::spawn(async move { outbox.run(stop, timeout / 4).await })
        };
        tasks.spawn(heartbeats(
            catalog.clone(),
            Some(buffer.clone()),
            metrics.clone(),
            identity.clone(),
            index.role,
            cfg.control_plane.heartbeat_interval.0,
            stop_tasks.clone(),
        ));
        let mut background = Background {
            flusher,
            stop_flusher,
            outbox,
            stop_outbox,
            tasks,
            stop_tasks,
            compactor: None,
            sweeper: None,
            lake: lake.clone(),
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            agent_id,
            embedded: index.embedded,
            gate: publisher
                .clone()
                .map(|p| p as Arc<dyn weir_pipelines::sweeper::PurgeGate>),
        };
        if let Some(p) = publisher {
            background.tasks.spawn(p.run(background.stop_tasks.clone()));
        }
        background.start_compactor(cfg);
        background.start_sweeper(cfg);
        Ok(background)
    }

    /// Starts the compactor when `compaction.enabled`.
    fn start_compactor(&mut self, cfg: &Config) {
        if !cfg.compaction.enabled {
            return;
        }
        let c = compactor(
            cfg,
            self.lake.clone(),
            self.catalog.clone(),
            self.metrics.clone(),
            &self.agent_id,
        );
        let stop = self.stop_tasks.child_token();
        self.tasks.spawn(c.run(stop.clone()));
        self.compactor = Some(stop);
    }

    /// Starts the retention sweeper of an embedded index.
    fn start_sweeper(&mut self, cfg: &Config) {
        if !self.embedded {
            return;
        }
        let s = sweeper(
            cfg,
            self.lake.clone(),
            self.catalog.clone(),
            self.metrics.clone(),
            false,
            self.gate.clone(),
        );
        let stop = self.stop_tasks.child_token();
        self.tasks.spawn(s.run(stop.clone()));
        self.sweeper = Some(stop);
    }

    /// Applies a reload: the compactor and the sweeper whose settings changed stop (a merge
    /// or sweep in progress finishes first, beside the new one: compactors lease distinct
    /// work, and a sweep is idempotent) and start again with the new settings.
    fn reconfigure(&mut self, cfg: &Config, changes: &Changes) {
        if changes.any("compaction") || changes.any("lake.target_file_bytes") {
            if let Some(stop) = self.compactor.take() {
                stop.cancel();
            }
            self.start_compactor(cfg);
            info!(
                enabled = cfg.compaction.enabled,
                "compactor restarted with the new configuration"
            );
        }
        if self.embedded && (changes.any("retention") || changes.any("compaction.grace")) {
            if let Some(stop) = self.sweeper.take() {
                stop.cancel();
            }
            self.start_sweeper(cfg);
            info!("retention sweeper restarted with the new configuration");
        }
    }

    /// Stops the background work; the flusher and then the outbox get until `deadline`.
    async fn stop(mut self, deadline: Instant) {
        self.stop_tasks.cancel();
        self.stop_flusher.cancel();
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.flusher).await.is_err() {
            warn!("flusher did not stop in time");
        }
        // The outbox gets one last chance to register what the final flush wrote.
        self.stop_outbox.cancel();
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.outbox).await.is_err() {
            warn!("outbox did not stop in time; its segments are registered on the next start");
        }
        let tasks = &mut self.tasks;
        if tokio::time::timeout(Duration::from_secs(1), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// The running data path: what a reload changes.
struct Live {
    /// The configuration applied last.
    cfg: Config,
    role: &'static str,
    data_dir: PathBuf,
    buffer: Arc<dyn Buffer>,
    ingest: Ingest,
    step_metrics: StepMetrics,
    keys: ApiKeys,
    /// The TLS files of the running sources, as they were when they started.
    tls: TlsStamps,
    /// Who may read the embedded index on the admin port (`weir run`).
    index_auth: Option<Arc<Auth>>,
    admin_bound: (String, SocketAddr),
    sources: RunningSources,
    background: Background,
    reloads: ReloadMetrics,
}

impl Live {
    /// Rewrites `listen.json` after a reload moved sources; a failure is logged (the file
    /// is for operators and harnesses, the agent goes on).
    fn write_listen_file(&self) {
        let mut bound = self.sources.bound();
        bound.insert(self.admin_bound.0.clone(), self.admin_bound.1);
        let bound: Vec<(String, SocketAddr)> = bound.into_iter().collect();
        if let Err(e) = write_listen_file(&self.data_dir, &bound) {
            warn!(error = %format!("{e:#}"), "cannot rewrite listen.json after the reload");
        }
    }

    /// Reads the configuration again and applies it; a configuration that fails is refused
    /// and the running one stays. An error only when the agent cannot go on (a source lost:
    /// its new configuration and its old one both failed to start).
    async fn reload(&mut self, from: &ConfigSource) -> Result<()> {
        let new = match from.load() {
            Ok(v) => v,
            Err(problems) => {
                self.reloads.refused(&problems);
                return Ok(());
            }
        };
        let changes = Changes::between(&self.cfg, &new.config);
        // Sources whose section changed, and those whose TLS files changed on disk (a
        // certificate rotated in place: the same paths, new contents).
        let tls = tls_stamps(&new.config.sources);
        let mut names = self.cfg.sources.changed(&new.config.sources);
        for (name, stamps) in &tls {
            if self.tls.get(name) != Some(stamps) && !names.contains(name) {
                info!(
                    source = name,
                    "TLS files changed; the source restarts to read them"
                );
                names.push(name);
            }
        }
        if changes.is_empty() && names.is_empty() {
            info!("configuration reloaded: nothing changed");
            self.reloads.applied();
            return Ok(());
        }
        // Transforms first: a module that does not load refuses the reload before anything
        // changed. Only a change of `[[pipelines]]` rebuilds them.
        let settings = if changes.any("pipelines") {
            let (cfg, m) = (new.config.clone(), self.step_metrics.clone());
            match tokio::task::spawn_blocking(move || ingest_settings(&cfg, m)).await {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    self.reloads.refused(&[e.to_string()]);
                    return Ok(());
                }
                Err(e) => {
                    self.reloads
                        .refused(&[format!("loading the transforms failed: {e}")]);
                    return Ok(());
                }
            }
        } else if changes.any("buffer.max_partitions_per_request")
            || changes.any("buffer.late_window")
            || changes.any("buffer.future_window")
        {
            Some(IngestSettings {
                processor: self.ingest.settings().processor.clone(),
                max_partitions: new.config.buffer.max_partitions_per_request,
                window: new.config.buffer.window(),
            })
        } else {
            None
        };
        // The changed sources stop and their replacements bind; they start serving only
        // after the settings they share are in place.
        let prepared = if names.is_empty() {
            None
        } else {
            // A rollback binds the addresses the sources hold now, also where their
            // configuration asks for port 0 (a new port would surprise every client).
            let (old, _) = pin_ports(&self.cfg.sources, &self.sources.bound()).validate();
            let pick = |v: Vec<Box<dyn ValidSource>>| -> Vec<Box<dyn ValidSource>> {
                v.into_iter()
                    .filter(|s| names.contains(&s.name()))
                    .collect()
            };
            let result = self
                .sources
                .prepare(&names, pick(new.sources), pick(old))
                .await;
            match result {
                Ok(p) => Some(p),
                Err(e) => {
                    self.write_listen_file();
                    if let Some(s) = settings {
                        drop_off_thread(Arc::new(s));
                    }
                    return match e {
                        ReplaceError::RolledBack(e) => {
                            self.reloads.refused(&[e]);
                            Ok(())
                        }
                        ReplaceError::Lost(e) => {
                            self.reloads.refused(std::slice::from_ref(&e));
                            Err(anyhow::anyhow!(
                                "a source could not be started again after a reload: {e}"
                            ))
                        }
                    };
                }
            }
        };
        let cfg = new.config;
        if let Some(s) = settings {
            drop_off_thread(self.ingest.reconfigure(s));
        }
        if changes.any("auth") {
            self.keys.replace(cfg.auth.api_keys.clone());
        }
        if let Some(auth) = &self.index_auth {
            auth.replace(cfg.admin_tokens());
        }
        if changes.any("buffer.max_bytes") {
            self.buffer.set_max_bytes(cfg.buffer.max_bytes.0);
        }
        if let Some(p) = prepared {
            self.sources.start_prepared(p);
            self.write_listen_file();
        }
        self.background.reconfigure(&cfg, &changes);
        let unused: &[&str] = if self.role == "agent" {
            UNUSED_BY_AGENT
        } else {
            UNUSED_BY_RUN
        };
        changes.log_applied(APPLIED, unused);
        self.reloads.applied();
        self.cfg = cfg;
        self.tls = tls;
        Ok(())
    }
}

/// `sources` with every listen address that asks for port 0 replaced by the address its
/// source bound (`bound`, by key path `sources.<name>.<key>`).
fn pin_ports(
    sources: &weir_sources::SourcesConfig,
    bound: &BTreeMap<String, SocketAddr>,
) -> weir_sources::SourcesConfig {
    let Ok(mut value) = serde_json::to_value(sources) else {
        return sources.clone();
    };
    for (key, addr) in bound {
        let mut path = key.split('.');
        let (Some("sources"), Some(source), Some(field), None) =
            (path.next(), path.next(), path.next(), path.next())
        else {
            continue;
        };
        let Some(slot) = value.get_mut(source).and_then(|s| s.get_mut(field)) else {
            continue;
        };
        let asks_port_0 = slot
            .as_str()
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .is_some_and(|a| a.port() == 0);
        if asks_port_0 {
            *slot = serde_json::Value::String(addr.to_string());
        }
    }
    serde_json::from_value(value).unwrap_or_else(|_| sources.clone())
}

/// Drops replaced ingest settings on a blocking thread: the transform pipelines' drop joins
/// their watcher thread.
fn drop_off_thread(settings: Arc<IngestSettings>) {
    tokio::task::spawn_blocking(move || drop(settings));
}

/// What a source's TLS files looked like when it started (path, modification time, size),
/// for the sources that read TLS files: a reload restarts a source whose files changed.
type TlsStamps = BTreeMap<&'static str, Vec<(PathBuf, Option<std::time::SystemTime>, Option<u64>)>>;

fn tls_stamps(s: &weir_sources::SourcesConfig) -> TlsStamps {
    let stamp = |p: &PathBuf| {
        let m = std::fs::metadata(p).ok();
        (
            p.clone(),
            m.as_ref().and_then(|m| m.modified().ok()),
            m.map(|m| m.len()),
        )
    };
    [
        ("fluent", s.fluent.enabled, &s.fluent.tls),
        ("syslog", s.syslog.enabled, &s.syslog.tls),
    ]
    .into_iter()
    .filter_map(|(name, enabled, tls)| match (enabled, tls) {
        (true, Some(t)) => Some((name, vec![stamp(&t.cert_file), stamp(&t.key_file)])),
        _ => None,
    })
    .collect()
}

/// Runs the data path until a signal (or a source failure), then shuts down in order;
/// SIGHUP reloads the configuration from `from`.
pub async fn serve(
    valid: ValidConfig,
    index: Index,
    buffer: Arc<dyn Buffer>,
    from: ConfigSource,
    mut signals: Signals,
) -> Result<()> {
    let ValidConfig {
        config: cfg,
        admin: admin_address,
        sources,
        ..
    } = valid;
    let data_dir = absolute(&cfg.data_dir)?;
    // After the buffer is open: its lock makes this process the only one on data_dir, so
    // the id is created once.
    let identity = identity(&cfg, &data_dir)?;
    let metrics = Metrics::new();
    let reloads = ReloadMetrics::new(&metrics).context("cannot register the reload metrics")?;
    let lake = open_lake(&cfg, &data_dir)?;
    let stats = buffer.stats();
    info!(data_dir = %data_dir.display(), agent_id = %identity.id, lake = %lake.url(), buffered_bytes = stats.bytes, buffered_entries = stats.entries, "starting weir");

    let wake = Arc::new(Notify::new());
    let step_metrics = StepMetrics::new(&metrics)?;
    let ingest = Ingest::new(
        buffer.clone(),
        cfg.buffer.ack,
        metrics.clone(),
        wake.clone(),
    );
    // Replaces the defaults, which hold no transforms.
    drop(ingest.reconfigure(ingest_settings(&cfg, step_metrics.clone())?));
    let admin_listener = admin::bind("admin.address", admin_address).await?;
    let admin_bound = (
        "admin.address".to_string(),
        admin_listener.local_addr().unwrap_or(admin_address),
    );
    let keys = ApiKeys::new(cfg.auth.api_keys.clone());
    let ctx = SourceContext {
        ingest: ingest.clone(),
        metrics: metrics.clone(),
        keys: keys.clone(),
        shutdown: CancellationToken::new(),
    };
    let timeout = cfg.shutdown.timeout.0;
    let running = RunningSources::start(sources, ctx, timeout / 2)?;

    let admin = Admin {
        buffer: Some(buffer.clone()),
        // `weir run`'s own index: its failure is this process's (health and liveness).
        index: index.embedded.then(|| index.catalog.clone()),
        ..Admin::new(metrics.clone())
    };
    admin.set_ready(false);
    let mut app = admin.router();
    let index_auth = index
        .embedded
        .then(|| Arc::new(Auth::new(cfg.admin_tokens())));
    if let Some(auth) = &index_auth {
        app = app.merge(weir_control_plane::api::segment_routes(
            index.catalog.clone(),
            auth.clone(),
        ));
        if cfg.iceberg.enabled {
            app = app.merge(weir_iceberg::rest::routes(weir_iceberg::rest::RestState {
                catalog: index.catalog.clone(),
                lake: lake.clone(),
                auth: auth.clone(),
            }));
        }
    }
    let stop_admin = CancellationToken::new();
    let admin_task = admin::serve(
        admin_listener,
        app,
        stop_admin.clone(),
        "admin",
        cfg.admin.limits(),
        admin::Counted {
            source: "admin",
            metrics: metrics.clone(),
        },
    );

    let background = Background::start(&cfg, &identity, &index, &buffer, &lake, &metrics, wake)?;
    let mut live = Live {
        tls: tls_stamps(&cfg.sources),
        cfg,
        role: index.role,
        data_dir,
        buffer: buffer.clone(),
        ingest,
        step_metrics,
        keys,
        index_auth,
        admin_bound,
        sources: running,
        background,
        reloads,
    };
    let mut bound = live.sources.bound();
    bound.insert(live.admin_bound.0.clone(), live.admin_bound.1);
    write_listen_file(&live.data_dir, &bound.into_iter().collect::<Vec<_>>())?;
    admin.set_ready(true);
    info!("weir is ready");

    let failed = loop {
        let event = tokio::select! {
            s = signals.next() => Ok(s),
            e = live.sources.failed() => Err(e),
        };
        match event {
            Ok(Signal::Stop) => break None,
            Ok(Signal::Reload) => {
                if let Err(e) = live.reload(&from).await {
                    error!(error = %format!("{e:#}"), "shutting down");
                    break Some(e);
                }
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "source failed, shutting down");
                break Some(e);
            }
        }
    };

    let Live {
        sources,
        background,
        ..
    } = live;
    let deadline = Instant::now() + timeout;
    admin.set_ready(false);
    metrics.shutting_down.inc();
    sources.shutdown(timeout / 2).await;
    background.stop(deadline).await;
    let b = buffer.clone();
    tokio::task::spawn_blocking(move || b.sync_all())
        .await
        .context("final buffer sync task failed")?
        .context("final buffer sync failed")?;
    index
        .catalog
        .sync()
        .await
        .context("final index sync failed")?;
    stop_admin.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    let stats = buffer.stats();
    info!(
        buffered_bytes = stats.bytes,
        buffered_entries = stats.entries,
        "weir stopped"
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_keeps_the_ports_bound() {
        let mut sources = weir_sources::SourcesConfig::default();
        sources.otlp.http_address = "127.0.0.1:0".into();
        sources.otlp.grpc_address = "127.0.0.1:4317".into();
        let bound = BTreeMap::from([
            (
                "sources.otlp.http_address".to_string(),
                "127.0.0.1:40001".parse().unwrap(),
            ),
            (
                "sources.otlp.grpc_address".to_string(),
                "127.0.0.1:4317".parse().unwrap(),
            ),
            ("admin.address".to_string(), "127.0.0.1:1".parse().unwrap()),
        ]);
        let pinned = pin_ports(&sources, &bound);
        assert_eq!(pinned.otlp.http_address, "127.0.0.1:40001");
        assert_eq!(pinned.otlp.grpc_address, "127.0.0.1:4317");
        assert_eq!(pinned.loki, sources.loki);
    }
}
