//! `weir control-plane`: the index service (API, retention sweeper), until a signal; SIGHUP
//! reloads its tokens and retention.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weir_control_plane::api::{ApiState, Auth};
use weir_pipelines::metrics::Metrics;

use super::reload::{serve_reloads, ConfigSource, ReloadMetrics, Signals};
use super::{absolute, open_index, open_lake, sweeper, write_listen_file};
use crate::admin::{self, Admin};
use crate::config::ValidConfig;

/// Records the latency of an API request by route, method and status.
async fn record_latency(State(latency): State<HistogramVec>, req: Request, next: Next) -> Response {
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

/// What a reload applies on the control plane: its API tokens, and retention (the sweeper
/// restarts with the new policy).
const APPLIED: &[&str] = &["control_plane.tokens", "retention", "compaction.grace"];

/// What the control plane never reads.
const UNUSED: &[&str] = &[
    "sources",
    "pipelines",
    "auth",
    "buffer",
    "agent",
    "admin",
    "compaction.enabled",
    "compaction.interval",
    "compaction.min_age",
    "compaction.min_inputs",
    "control_plane.url",
    "control_plane.token",
    "control_plane.timeout",
    "control_plane.heartbeat_interval",
];

/// Serves the control plane until SIGTERM or SIGINT; SIGHUP reloads the tokens and retention
/// from `from` (the start-up checks, which require tokens, have run in `main`).
pub async fn serve(valid: ValidConfig, from: ConfigSource) -> Result<()> {
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let cfg = &valid.config;
    let address: SocketAddr = cfg.control_plane.address.parse().with_context(|| {
        format!(
            "control_plane.address = {:?} is not an address",
            cfg.control_plane.address
        )
    })?;
    let data_dir = absolute(&cfg.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let listener = admin::bind("control_plane.address", address).await?;
    // The API and the admin routes share this one address.
    let bound = listener.local_addr().unwrap_or(address);
    // After the index is open: a sled index's lock makes this the only process on data_dir,
    // so a second one started by mistake cannot overwrite the live file before it fails.
    let catalog = open_index(cfg, &data_dir).await?;
    write_listen_file(&data_dir, &[("control_plane.address".into(), bound)])?;
    let lake = open_lake(cfg, &data_dir)?;
    let metrics = Metrics::new();
    let reloads = ReloadMetrics::new(&metrics).context("cannot register the reload metrics")?;
    let admin = Admin {
        index: Some(catalog.clone()),
        ..Admin::new(metrics.clone())
    };
    let auth = Arc::new(Auth::new(cfg.control_plane.api_tokens()));
    let api = weir_control_plane::api::routes(
        ApiState {
            catalog: catalog.clone(),
            auth: auth.clone(),
        },
        cfg.control_plane.max_request_bytes.0 as usize,
    );
    let latency = HistogramVec::new(
        HistogramOpts::new("api_request_duration_seconds", "Control-plane API requests").buckets(
            vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        ),
        &["route", "method", "status"],
    )?;
    metrics.register(Box::new(latency.clone()))?;
    let publisher = super::iceberg_publisher(cfg, &lake, &catalog, &metrics)?;
    let mut api = api;
    if publisher.is_some() {
        api = api.merge(weir_iceberg::rest::routes(weir_iceberg::rest::RestState {
            catalog: catalog.clone(),
            lake: lake.clone(),
            auth: auth.clone(),
        }));
    }
    let app = api
        .merge(admin.router())
        .layer(axum::middleware::from_fn_with_state(
            latency,
            record_latency,
        ));
    let stop = CancellationToken::new();
    let mut sweepers = tokio::task::JoinSet::new();
    let start_sweeper = |cfg: &crate::config::Config, sweepers: &mut tokio::task::JoinSet<()>| {
        let token = stop.child_token();
        let gate = publisher
            .clone()
            .map(|p| p as Arc<dyn weir_pipelines::sweeper::PurgeGate>);
        let s = sweeper(
            cfg,
            lake.clone(),
            catalog.clone(),
            metrics.clone(),
            false,
            gate,
        );
        sweepers.spawn(s.run(token.clone()));
        token
    };
    let mut sweeper_stop = start_sweeper(cfg, &mut sweepers);
    if let Some(p) = &publisher {
        sweepers.spawn(p.clone().run(stop.child_token()));
    }
    info!(index = ?cfg.control_plane.index, "control plane starting");
    let server = admin::serve(
        listener,
        app,
        stop.clone(),
        "control plane",
        cfg.control_plane.limits(),
        admin::Counted {
            source: "control_plane",
            metrics: metrics.clone(),
        },
    );
    let running = valid.config.clone();
    serve_reloads(
        &mut signals,
        &from,
        &reloads,
        running,
        (APPLIED, UNUSED),
        |new, changes| {
            if changes.any("control_plane.tokens") {
                auth.replace(new.control_plane.api_tokens());
            }
            if changes.any("retention") || changes.any("compaction.grace") {
                // A sweep in progress finishes beside the new sweeper (sweeps are idempotent).
                sweeper_stop.cancel();
                sweeper_stop = start_sweeper(new, &mut sweepers);
            }
        },
    )
    .await;
    admin.set_ready(false);
    stop.cancel();
    if tokio::time::timeout(cfg.shutdown.timeout.0, server)
        .await
        .is_err()
    {
        warn!("API requests did not finish in time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while sweepers.join_next().await.is_some() {}
    })
    .await;
    catalog.sync().await.context("final index sync failed")?;
    info!("control plane stopped");
    Ok(())
}
