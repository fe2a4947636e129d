//! `weir run`: the agent with its embedded control plane, wired from a validated config.
//!
//! Shutdown (SIGTERM or SIGINT): `/readyz` turns 503, the sources stop accepting connections
//! and finish their in-flight requests, the flusher makes a last flush attempt, the buffer is
//! fsynced, and the process exits 0, all within `shutdown.timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use weir_control_plane::Catalog;
use weir_pipelines::buffer::{Buffer, SledBuffer, SledBufferConfig};
use weir_pipelines::flusher::{Flusher, FlusherConfig};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::metrics::Metrics;
use weir_pipelines::outbox::Outbox;
use weir_pipelines::parquet_writer::ParquetConfig;
use weir_transforms::{Limits, PipelineSpec, Pipelines, StepSpec};

use crate::admin::{self, AdminState};
use crate::config::ValidConfig;
use crate::roles::{
    absolute, agent_id, heartbeats, open_index, open_lake, remote_catalog, shutdown_signal, sweeper,
};
use crate::sources::auth::ApiKeys;
use crate::sources::datadog;
use crate::sources::fluent::FluentService;
use crate::sources::loki;
use crate::sources::otlp::{grpc::OtlpGrpc, http};
use crate::sources::syslog::SyslogService;
use crate::sources::tls;

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} = {addr}"))
}

async fn bind_opt(key: &str, addr: Option<SocketAddr>) -> Result<Option<TcpListener>> {
    match addr {
        Some(a) => Ok(Some(bind(key, a).await?)),
        None => Ok(None),
    }
}

/// Serves an HTTP source until `stop`, then lets in-flight requests finish.
fn spawn_http(
    sources: &mut JoinSet<Result<()>>,
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
    what: &'static str,
) {
    sources.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .with_context(|| format!("{what} server failed"))
    });
}

/// The transforms crate's view of the validated `[[pipelines]]`.
fn pipeline_specs(cfg: &[crate::config::PipelineConfig]) -> Vec<PipelineSpec> {
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
                    },
                    on_error: t.on_error,
                })
                .collect(),
        })
        .collect()
}

/// Which agent role runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `weir run`: the embedded control plane (sled index, retention sweeper).
    Run,
    /// `weir agent`: a remote control plane at `control_plane.url`.
    Agent,
}

/// Runs the agent until a shutdown signal.
pub async fn run(valid: ValidConfig, role: Role) -> Result<()> {
    let cfg = &valid.config;
    let data_dir = absolute(&cfg.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let metrics = Metrics::new();
    let buffer: Arc<dyn Buffer> = Arc::new(
        SledBuffer::open(&SledBufferConfig {
            path: data_dir.join("buffer"),
            max_bytes: cfg.buffer.max_bytes.0,
        })
        .with_context(|| {
            format!(
                "cannot open the buffer in {}",
                data_dir.join("buffer").display()
            )
        })?,
    );
    let catalog: Arc<dyn Catalog> = match role {
        Role::Run => open_index(cfg, &data_dir).await?,
        Role::Agent => remote_catalog(cfg)?,
    };
    let lake = open_lake(cfg, &data_dir)?;
    let lake_url = lake.url().to_string();
    let stats = buffer.stats();
    info!(data_dir = %data_dir.display(), lake = %lake_url, buffered_bytes = stats.bytes, buffered_entries = stats.entries, "starting weir");

    let wake = Arc::new(Notify::new());
    let mut ingest = Ingest::new(
        buffer.clone(),
        cfg.buffer.ack,
        metrics.clone(),
        wake.clone(),
    );
    if !cfg.pipelines.is_empty() {
        let pipelines = Pipelines::new(
            pipeline_specs(&cfg.pipelines),
            &metrics,
            Duration::from_secs(1),
        )?;
        info!(
            pipelines = cfg.pipelines.len(),
            "transform pipelines loaded"
        );
        ingest = ingest.with_processor(Arc::new(pipelines));
    }
    let ready = Arc::new(AtomicBool::new(false));

    // Bind everything first: a port conflict fails the start before anything runs.
    let admin_listener = bind("admin.address", valid.admin).await?;
    let http_listener = bind_opt("sources.otlp.http_address", valid.otlp_http).await?;
    let grpc_listener = bind_opt("sources.otlp.grpc_address", valid.otlp_grpc).await?;

    let datadog_listener = bind_opt("sources.datadog.address", valid.datadog).await?;
    let fluent_listener = bind_opt("sources.fluent.address", valid.fluent).await?;
    let loki_listener = bind_opt("sources.loki.address", valid.loki).await?;
    let syslog_tcp = bind_opt("sources.syslog.tcp_address", valid.syslog_tcp).await?;
    let syslog_udp =
        match valid.syslog_udp {
            Some(a) => Some(tokio::net::UdpSocket::bind(a).await.with_context(|| {
                format!("cannot listen on sources.syslog.udp_address = {a} (udp)")
            })?),
            None => None,
        };

    let api_keys = ApiKeys::new(cfg.auth.api_keys.clone());
    let stop_sources = CancellationToken::new();
    let stop_flusher = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let mut sources = JoinSet::new();

    if let Some(listener) = http_listener {
        info!(address = %listener.local_addr()?, "OTLP/HTTP listening");
        let app = http::router(http::HttpState {
            ingest: ingest.clone(),
            max_request_bytes: cfg.sources.otlp.max_request_bytes.0 as usize,
            retry_after: cfg.sources.otlp.retry_after.0,
            keys: api_keys.clone(),
        });
        spawn_http(
            &mut sources,
            listener,
            app,
            stop_sources.clone(),
            "OTLP/HTTP",
        );
    }
    if let Some(listener) = grpc_listener {
        info!(address = %listener.local_addr()?, "OTLP/gRPC listening");
        let (logs, metrics_svc, traces) = OtlpGrpc::new(
            ingest.clone(),
            cfg.sources.otlp.retry_after.0,
            api_keys.clone(),
        )
        .services(cfg.sources.otlp.max_request_bytes.0 as usize);
        let stop = stop_sources.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        sources.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(logs)
                .add_service(metrics_svc)
                .add_service(traces)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
                .await
                .context("OTLP/gRPC server failed")
        });
    }

    if let Some(listener) = datadog_listener {
        info!(address = %listener.local_addr()?, "Datadog intake listening");
        let app = datadog::router(datadog::DatadogState {
            ingest: ingest.clone(),
            keys: api_keys.clone(),
            max_request_bytes: cfg.sources.datadog.max_request_bytes.0 as usize,
            retry_after: cfg.sources.datadog.retry_after.0,
        });
        spawn_http(
            &mut sources,
            listener,
            app,
            stop_sources.clone(),
            "Datadog intake",
        );
    }
    if let Some(listener) = fluent_listener {
        info!(address = %listener.local_addr()?, "Fluent forward listening");
        let tls = cfg
            .sources
            .fluent
            .tls
            .as_ref()
            .map(|t| tls::acceptor(t, "sources.fluent.tls"))
            .transpose()?;
        let svc = FluentService::new(ingest.clone(), &cfg.sources.fluent, tls);
        let stop = stop_sources.clone();
        sources.spawn(async move {
            svc.serve(listener, stop)
                .await
                .context("Fluent forward server failed")
        });
    }
    if let Some(listener) = loki_listener {
        info!(address = %listener.local_addr()?, "Loki push listening");
        let app = loki::router(loki::LokiState {
            ingest: ingest.clone(),
            max_request_bytes: cfg.sources.loki.max_request_bytes.0 as usize,
            retry_after: cfg.sources.loki.retry_after.0,
            keys: api_keys.clone(),
        });
        spawn_http(
            &mut sources,
            listener,
            app,
            stop_sources.clone(),
            "Loki push",
        );
    }
    if syslog_tcp.is_some() || syslog_udp.is_some() {
        let tls = cfg
            .sources
            .syslog
            .tls
            .as_ref()
            .map(|t| tls::acceptor(t, "sources.syslog.tls"))
            .transpose()?;
        let svc = SyslogService::new(ingest.clone(), &cfg.sources.syslog, tls);
        if let Some(listener) = syslog_tcp {
            info!(address = %listener.local_addr()?, "syslog/TCP listening");
            let (svc, stop) = (svc.clone(), stop_sources.clone());
            sources.spawn(async move {
                svc.serve_tcp(listener, stop)
                    .await
                    .context("syslog/TCP server failed")
            });
        }
        if let Some(socket) = syslog_udp {
            info!(address = %socket.local_addr()?, "syslog/UDP listening");
            let stop = stop_sources.clone();
            sources.spawn(async move {
                svc.serve_udp(socket, stop)
                    .await
                    .context("syslog/UDP server failed")
            });
        }
    }

    let admin_app = admin::router(
        AdminState {
            metrics: metrics.clone(),
            buffer: buffer.clone(),
            ready: ready.clone(),
        },
        (role == Role::Run).then(|| catalog.clone()),
        weir_control_plane::api::Auth::new(cfg.control_plane.api_tokens()),
    );
    info!(address = %admin_listener.local_addr()?, "admin listening");
    let stop = stop_admin.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin_app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });

    let agent_id = agent_id(cfg);
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
    // Replay the flush journal before reconciliation looks at the lake.
    if let Err(e) = flusher.recover().await {
        error!(error = %e, "flush journal recovery failed; will retry in the flusher");
    }
    let timeout = cfg.shutdown.timeout.0;
    let stop = stop_flusher.clone();
    let flusher_task = tokio::spawn(async move { flusher.run(stop, timeout / 2).await });

    let outbox = Outbox::new(
        buffer.clone(),
        catalog.clone(),
        metrics.clone(),
        outbox_wake,
    );
    let stop_outbox = CancellationToken::new();
    let stop_background = CancellationToken::new();
    let mut background = JoinSet::new();
    background.spawn(weir_pipelines::reconcile::run(
        lake.clone(),
        catalog.clone(),
        outbox.clone(),
        agent_id.clone(),
        metrics.clone(),
        weir_control_plane::now_ns(),
        stop_background.clone(),
    ));
    let outbox_task = {
        let stop = stop_outbox.clone();
        tokio::spawn(async move { outbox.run(stop, timeout / 4).await })
    };
    if cfg.compaction.enabled {
        let c = crate::roles::compactor(cfg, lake.clone(), catalog.clone(), metrics.clone());
        background.spawn(c.run(stop_background.clone()));
    }
    if role == Role::Run {
        let s = sweeper(cfg, lake.clone(), catalog.clone(), metrics.clone(), false);
        background.spawn(s.run(stop_background.clone()));
    }
    background.spawn(heartbeats(
        catalog.clone(),
        Some(buffer.clone()),
        metrics.clone(),
        agent_id.clone(),
        if role == Role::Run { "run" } else { "agent" },
        cfg.control_plane.heartbeat_interval.0,
        stop_background.clone(),
    ));
    ready.store(true, Ordering::Release);
    info!("weir is ready");

    // Run until a signal, or until a source fails.
    let mut failed = None;
    tokio::select! {
        _ = shutdown_signal() => {}
        Some(res) = sources.join_next() => {
            let err = match res {
                Ok(Ok(())) => anyhow::anyhow!("a source stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a source task failed: {e}"),
            };
            error!(error = %err, "source failed, shutting down");
            failed = Some(err);
        }
    }

    let deadline = Instant::now() + timeout;
    ready.store(false, Ordering::Release);
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
    stop_background.cancel();
    stop_flusher.cancel();
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, flusher_task).await.is_err() {
        warn!("flusher did not stop in time");
    }
    // The outbox gets one last chance to register what the final flush wrote.
    stop_outbox.cancel();
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, outbox_task).await.is_err() {
        warn!("outbox did not stop in time; its segments are registered on the next start");
    }
    if tokio::time::timeout(Duration::from_secs(1), async {
        while background.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        background.abort_all();
    }
    let b = buffer.clone();
    tokio::task::spawn_blocking(move || b.sync_all())
        .await
        .context("final buffer sync task failed")?
        .context("final buffer sync failed")?;
    catalog.sync().await.context("final index sync failed")?;
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
