//! The parts the roles share (`weir run`, `weir agent`, `weir control-plane`,
//! `weir compactor`, `weir retention`): opening the lake and the index, the compactor, the
//! sweeper, heartbeats, and the control-plane and compactor services.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weir_control_plane::api::{ApiState, Auth};
use weir_control_plane::{
    AgentHeartbeat, Catalog, PgCatalog, PgConfig, RemoteCatalog, RemoteConfig, SledCatalog,
};
use weir_pipelines::buffer::{Buffer, Ledger};
use weir_pipelines::compactor::{Compactor, CompactorConfig};
use weir_pipelines::lake::{Lake, LakeRetry};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::parquet_writer::ParquetConfig;
use weir_pipelines::sweeper::{Sweeper, SweeperConfig};

use crate::config::{Config, IndexBackend, ValidConfig};

/// Makes a path absolute against the working directory.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// The machine's host name (the default agent id).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weir".into())
}

/// This process's agent id.
pub fn agent_id(cfg: &Config) -> String {
    cfg.agent.id.clone().unwrap_or_else(host_name)
}

/// Opens the lake of `lake.url` (default `{data_dir}/lake`).
pub fn open_lake(cfg: &Config, data_dir: &Path) -> Result<Lake> {
    let url = match &cfg.lake.url {
        Some(u) => u.clone(),
        None => format!("file://{}", data_dir.join("lake").display()),
    };
    let options = cfg
        .lake
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let retry = LakeRetry {
        max_retries: cfg.lake.max_retries,
        retry_timeout: cfg.lake.retry_timeout.0,
        ..LakeRetry::default()
    };
    Ok(Lake::open_with(&url, &options, retry)?)
}

/// The control plane `weir agent` and `weir compactor` talk to.
pub fn remote_catalog(cfg: &Config) -> Result<Arc<dyn Catalog>> {
    let Some(url) = &cfg.control_plane.url else {
        bail!("control_plane.url must be set for this role (the control plane's base URL)");
    };
    Ok(Arc::new(RemoteCatalog::new(&RemoteConfig {
        url: url.clone(),
        token: cfg.control_plane.token.clone(),
        timeout: cfg.control_plane.timeout.0,
    })?))
}

/// The index `weir run` embeds or `weir control-plane` serves.
pub async fn open_index(cfg: &Config, data_dir: &Path) -> Result<Arc<dyn Catalog>> {
    match cfg.control_plane.index {
        IndexBackend::Sled => {
            let path = data_dir.join("index");
            Ok(Arc::new(SledCatalog::open(&path).with_context(|| {
                format!("cannot open the segment index in {}", path.display())
            })?))
        }
        IndexBackend::Postgres => {
            let url = cfg
                .control_plane
                .postgres_url
                .clone()
                .context("control_plane.postgres_url must be set")?;
            let pg = PgCatalog::connect(&PgConfig {
                url,
                pool_size: cfg.control_plane.pool_size,
            })
            .await
            .context("cannot open the PostgreSQL index")?;
            Ok(Arc::new(pg))
        }
    }
}

/// A compactor configured from `[compaction]` and `[lake]`.
pub fn compactor(
    cfg: &Config,
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
) -> Compactor {
    Compactor::new(
        lake,
        catalog,
        metrics,
        CompactorConfig {
            agent_id: agent_id(cfg),
            target_bytes: cfg.lake.target_file_bytes.0,
            lease_ttl: cfg.compaction.lease_ttl.0,
            interval: cfg.compaction.interval.0,
            min_age: cfg.compaction.min_age.0,
            min_inputs: cfg.compaction.min_inputs,
            parquet: ParquetConfig {
                zstd_level: cfg.lake.zstd_level,
                row_group_rows: cfg.lake.row_group_rows,
            },
            read_batch_rows: 8192,
        },
    )
}

/// A sweeper configured from `[retention]` and `[compaction]`.
pub fn sweeper(
    cfg: &Config,
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    dry_run: bool,
) -> Sweeper {
    Sweeper::new(
        lake,
        catalog,
        metrics,
        SweeperConfig {
            policy: cfg.retention.policy(),
            interval: cfg.retention.interval.0,
            grace: cfg.compaction.grace.0,
            dry_run: dry_run || cfg.retention.dry_run,
        },
    )
}

/// Reports this agent to the fleet view every `interval` until `shutdown`.
pub async fn heartbeats(
    catalog: Arc<dyn Catalog>,
    buffer: Option<Arc<dyn Buffer>>,
    metrics: Metrics,
    agent_id: String,
    role: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let started_at = weir_control_plane::now_ns();
    loop {
        let stats = buffer.as_ref().map(|b| b.stats()).unwrap_or_default();
        let last = metrics.last_flush_seconds.get();
        let hb = AgentHeartbeat {
            agent_id: agent_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            role: role.into(),
            buffer_bytes: stats.bytes,
            buffer_entries: stats.entries,
            outbox: buffer
                .as_ref()
                .map(|b| b.ledger_len(Ledger::Outbox) as u64)
                .unwrap_or(0),
            last_flush_at: (last > 0).then(|| last.saturating_mul(1_000_000_000)),
            started_at,
        };
        if let Err(e) = catalog.heartbeat(&hb).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Resolves once SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received, shutting down"),
                _ = int.recv() => info!("SIGINT received, shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

#[derive(Clone)]
struct ServiceState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    catalog: Arc<dyn Catalog>,
}

async fn service_metrics(State(s): State<ServiceState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn service_ready(State(s): State<ServiceState>) -> impl IntoResponse {
    if !s.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_string(),
        );
    }
    match s.catalog.lookup(&[]).await {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

fn service_routes(state: ServiceState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                axum::Json(
                    serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
                )
            }),
        )
        .route("/livez", get(|| async { "alive\n" }))
        .route("/readyz", get(service_ready))
        .route("/metrics", get(service_metrics))
        .with_state(state)
}

/// `weir control-plane`: the index service (API, retention sweeper), until a signal.
pub async fn serve_control_plane(valid: ValidConfig) -> Result<()> {
    let cfg = &valid.config;
    if cfg.control_plane.tokens.is_empty() {
        bail!("weir control-plane needs at least one [[control_plane.tokens]] entry: every /v1 route is authenticated");
    }
    let address: SocketAddr = cfg.control_plane.address.parse().with_context(|| {
        format!(
            "control_plane.address = {:?} is not an address",
            cfg.control_plane.address
        )
    })?;
    let data_dir = absolute(&cfg.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on control_plane.address = {address}"))?;
    let catalog = open_index(cfg, &data_dir).await?;
    let lake = open_lake(cfg, &data_dir)?;
    let metrics = Metrics::new();
    let latency = HistogramVec::new(
        HistogramOpts::new("api_request_duration_seconds", "Control-plane API requests").buckets(
            vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        ),
        &["route", "method", "status"],
    )?;
    metrics.register(Box::new(latency.clone()))?;
    let ready = Arc::new(AtomicBool::new(true));
    let api = weir_control_plane::api::routes(
        ApiState {
            catalog: catalog.clone(),
            auth: Arc::new(Auth::new(cfg.control_plane.api_tokens())),
        },
        cfg.control_plane.max_request_bytes.0 as usize,
    );
    let app = api
        .merge(service_routes(ServiceState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            catalog: catalog.clone(),
        }))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let latency = latency.clone();
                async move {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "unmatched".into());
                    let method = req.method().to_string();
                    let started = std::time::Instant::now();
                    let resp = next.run(req).await;
                    latency
                        .with_label_values(&[&route, &method, resp.status().as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    resp
                }
            },
        ));
    let stop = CancellationToken::new();
    let sweeper = sweeper(cfg, lake, catalog.clone(), metrics.clone(), false);
    let sweeper_task = tokio::spawn(sweeper.run(stop.clone()));
    info!(address = %listener.local_addr()?, index = ?cfg.control_plane.index, "control plane listening");
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });
    shutdown_signal().await;
    ready.store(false, Ordering::Release);
    stop.cancel();
    let timeout = cfg.shutdown.timeout.0;
    if tokio::time::timeout(timeout, server).await.is_err() {
        warn!("API requests did not finish in time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sweeper_task).await;
    catalog.sync().await.context("final index sync failed")?;
    info!("control plane stopped");
    Ok(())
}

/// `weir compactor`: compaction only, against a remote control plane, until a signal.
pub async fn serve_compactor(valid: ValidConfig) -> Result<()> {
    let cfg = &valid.config;
    let data_dir = absolute(&cfg.data_dir)?;
    let catalog = remote_catalog(cfg)?;
    let lake = open_lake(cfg, &data_dir)?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(valid.admin)
        .await
        .with_context(|| format!("cannot listen on admin.address = {}", valid.admin))?;
    let ready = Arc::new(AtomicBool::new(true));
    let app = service_routes(ServiceState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        catalog: catalog.clone(),
    });
    let stop = CancellationToken::new();
    let compactor = compactor(cfg, lake, catalog.clone(), metrics.clone());
    let compactor_task = tokio::spawn(compactor.run(stop.clone()));
    let hb = tokio::spawn(heartbeats(
        catalog,
        None,
        metrics,
        agent_id(cfg),
        "compactor",
        cfg.control_plane.heartbeat_interval.0,
        stop.clone(),
    ));
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });
    info!("compactor running");
    shutdown_signal().await;
    ready.store(false, Ordering::Release);
    stop.cancel();
    // A merge in flight is abandoned: its lease expires and the plan is offered again.
    let _ = tokio::time::timeout(cfg.shutdown.timeout.0, compactor_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), hb).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    info!("compactor stopped");
    Ok(())
}

/// `weir retention`: one retention pass against the configured index; prints the segments
/// that expire (or would, with `dry_run`) as JSON lines.
pub async fn retention_once(valid: ValidConfig, dry_run: bool) -> Result<()> {
    let cfg = &valid.config;
    if cfg.retention.policy().is_empty() {
        bail!("no retention configured: set retention.default or [[retention.rules]]");
    }
    let data_dir = absolute(&cfg.data_dir)?;
    let catalog = open_index(cfg, &data_dir).await?;
    let lake = open_lake(cfg, &data_dir)?;
    let report = sweeper(cfg, lake, catalog.clone(), Metrics::new(), dry_run)
        .sweep(weir_control_plane::now_ns())
        .await?;
    catalog.sync().await?;
    for s in &report.expired {
        println!(
            "{}",
            serde_json::json!({
                "action": if dry_run || cfg.retention.dry_run { "would_delete" } else { "expired" },
                "segment": s.id, "tenant": s.tenant, "signal": s.signal,
                "object_key": s.object_key, "max_timestamp": s.max_timestamp, "rows": s.row_count,
            })
        );
    }
    for k in &report.deleted_objects {
        println!(
            "{}",
            serde_json::json!({"action": "deleted_object", "object_key": k})
        );
    }
    eprintln!(
        "{} segment(s) {}, {} object(s) deleted",
        report.expired.len(),
        if dry_run || cfg.retention.dry_run {
            "would expire"
        } else {
            "expired"
        },
        report.deleted_objects.len()
    );
    Ok(())
}
