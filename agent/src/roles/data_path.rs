//! The agent's data path, shared by `weir run` (embedded index) and `weir agent` (remote
//! control plane): sources → ingest (transforms, buffer) → flusher → lake → outbox → index,
//! with reconciliation, compaction, retention and heartbeats beside it.
//!
//! Start: the buffer, index and lake open; every source is built (its sockets bound) before
//! any serves, so a port conflict stops the start before anything runs. Shutdown (SIGTERM or
//! SIGINT, or a source that fails): `/readyz` turns 503, the sources stop accepting and
//! finish their in-flight requests, the flusher makes a last flush attempt, the outbox a last
//! registration, the buffer is fsynced, and the process exits, all within `shutdown.timeout`.

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
use weir_pipelines::buffer::{Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::flusher::{Flusher, FlusherConfig};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::lake::Lake;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::outbox::Outbox;
use weir_pipelines::parquet_writer::ParquetConfig;
use weir_sources::auth::ApiKeys;
use weir_sources::{ServeError, SourceContext, ValidSource};
use weir_transforms::{Limits, PipelineSpec, Pipelines, StepSpec};

use super::identity::Identity;
use super::{
    absolute, compactor, heartbeats, identity, open_lake, shutdown_signal, sweeper,
    write_listen_file,
};
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

/// The ingest handle of the sources: transforms (when `[[pipelines]]` are configured), then
/// the buffer, whose appends wake the flusher.
fn ingest(
    cfg: &Config,
    buffer: &Arc<dyn Buffer>,
    metrics: &Metrics,
    wake: Arc<Notify>,
) -> Result<Ingest> {
    let ingest = Ingest::new(buffer.clone(), cfg.buffer.ack, metrics.clone(), wake)
        .with_max_partitions(cfg.buffer.max_partitions_per_request);
    if cfg.pipelines.is_empty() {
        return Ok(ingest);
    }
    let pipelines = Pipelines::new(
        pipeline_specs(&cfg.pipelines),
        metrics,
        Duration::from_secs(1),
    )?;
    info!(
        pipelines = cfg.pipelines.len(),
        "transform pipelines loaded"
    );
    Ok(ingest.with_processor(Arc::new(pipelines)))
}

/// The addresses this process listens on, by configuration key (the real port when the key
/// asked for port 0).
type Bound = Vec<(String, SocketAddr)>;

/// Builds every source (binding its sockets), then starts them all.
fn start_sources(
    sources: Vec<Box<dyn ValidSource>>,
    ctx: &SourceContext,
    bound: &mut Bound,
) -> Result<JoinSet<Result<(), ServeError>>> {
    let mut running = Vec::with_capacity(sources.len());
    for source in sources {
        let name = source.name();
        running.push(
            source
                .build(ctx)
                .with_context(|| format!("cannot start source {name}"))?,
        );
    }
    let mut tasks = JoinSet::new();
    for r in running {
        bound.extend(r.bound);
        for task in r.tasks {
            tasks.spawn(task);
        }
    }
    Ok(tasks)
}

/// The flusher, the outbox and the background work, with their stop tokens.
struct Background {
    flusher: JoinHandle<()>,
    stop_flusher: CancellationToken,
    outbox: JoinHandle<()>,
    stop_outbox: CancellationToken,
    tasks: JoinSet<()>,
    stop_tasks: CancellationToken,
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
    ) -> Background {
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
        if cfg.compaction.enabled {
            let c = compactor(
                cfg,
                lake.clone(),
                catalog.clone(),
                metrics.clone(),
                &agent_id,
            );
            tasks.spawn(c.run(stop_tasks.clone()));
        }
        if index.embedded {
            let s = sweeper(cfg, lake.clone(), catalog.clone(), metrics.clone(), false);
            tasks.spawn(s.run(stop_tasks.clone()));
        }
        tasks.spawn(heartbeats(
            catalog.clone(),
            Some(buffer.clone()),
            metrics.clone(),
            identity.clone(),
            index.role,
            cfg.control_plane.heartbeat_interval.0,
            stop_tasks.clone(),
        ));
        Background {
            flusher,
            stop_flusher,
            outbox,
            stop_outbox,
            tasks,
            stop_tasks,
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

/// Waits for a shutdown signal or a source that stops; the error of a failed source.
async fn until_stopped(sources: &mut JoinSet<Result<(), ServeError>>) -> Option<anyhow::Error> {
    tokio::select! {
        _ = shutdown_signal() => None,
        Some(res) = sources.join_next() => {
            let err = match res {
                Ok(Ok(())) => anyhow::anyhow!("a source stopped unexpectedly"),
                Ok(Err(e)) => e.into(),
                Err(e) => anyhow::anyhow!("a source task failed: {e}"),
            };
            error!(error = %err, "source failed, shutting down");
            Some(err)
        }
    }
}

/// Runs the data path until a signal (or a source failure), then shuts down in order.
pub async fn serve(valid: ValidConfig, index: Index, buffer: Arc<dyn Buffer>) -> Result<()> {
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
    let lake = open_lake(&cfg, &data_dir)?;
    let stats = buffer.stats();
    info!(data_dir = %data_dir.display(), agent_id = %identity.id, lake = %lake.url(), buffered_bytes = stats.bytes, buffered_entries = stats.entries, "starting weir");

    let wake = Arc::new(Notify::new());
    let ingest = ingest(&cfg, &buffer, &metrics, wake.clone())?;
    let admin_listener = admin::bind("admin.address", admin_address).await?;
    let mut bound: Bound = vec![(
        "admin.address".into(),
        admin_listener.local_addr().unwrap_or(admin_address),
    )];
    let stop_sources = CancellationToken::new();
    let ctx = SourceContext {
        ingest,
        metrics: metrics.clone(),
        keys: ApiKeys::new(cfg.auth.api_keys.clone()),
        shutdown: stop_sources.clone(),
    };
    let mut sources = start_sources(sources, &ctx, &mut bound)?;
    write_listen_file(&data_dir, &bound)?;

    let admin = Admin {
        buffer: Some(buffer.clone()),
        // `weir run`'s own index: its failure is this process's (health and liveness).
        index: index.embedded.then(|| index.catalog.clone()),
        ..Admin::new(metrics.clone())
    };
    admin.set_ready(false);
    let mut app = admin.router();
    if index.embedded {
        app = app.merge(weir_control_plane::api::segment_routes(
            index.catalog.clone(),
            weir_control_plane::api::Auth::new(cfg.admin_tokens()),
        ));
    }
    let stop_admin = CancellationToken::new();
    let admin_task = admin::serve(admin_listener, app, stop_admin.clone(), "admin");

    let background = Background::start(&cfg, &identity, &index, &buffer, &lake, &metrics, wake);
    admin.set_ready(true);
    info!("weir is ready");

    let failed = until_stopped(&mut sources).await;

    let timeout = cfg.shutdown.timeout.0;
    let deadline = Instant::now() + timeout;
    admin.set_ready(false);
    metrics.shutting_down.inc();
    stop_sources.cancel();
    let drained = tokio::time::timeout(timeout / 2, async {
        while sources.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("in-flight requests did not finish in time; aborting them");
        sources.abort_all();
    }
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
