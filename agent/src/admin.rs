//! Admin HTTP endpoints on every role: `/healthz`, `/livez`, `/readyz`, `/metrics` and the
//! segment index's `GET /v1/segments`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use weir_control_plane::Catalog;
use weir_pipelines::buffer::Buffer;
use weir_pipelines::metrics::Metrics;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The agent's metrics.
    pub metrics: Metrics,
    /// The buffer (for health details).
    pub buffer: Arc<dyn Buffer>,
    /// True while the agent accepts data.
    pub ready: Arc<AtomicBool>,
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    let stats = s.buffer.stats();
    let ready = s.ready.load(Ordering::Acquire);
    Json(serde_json::json!({
        "status": if ready { "ok" } else { "shutting_down" },
        "version": env!("CARGO_PKG_VERSION"),
        "buffer": { "bytes": stats.bytes, "entries": stats.entries, "corrupt_entries": s.buffer.corrupt_entries() },
    }))
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let stats = s.buffer.stats();
    s.metrics.buffer_bytes.set(stats.bytes as i64);
    s.metrics.buffer_entries.set(stats.entries as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// The admin router, with the read API of the embedded index when there is one (`weir run`;
/// a `weir agent` does not expose its remote control plane). `auth` guards the `/v1` routes
/// when `[[control_plane.tokens]]` are configured.
pub fn router(
    state: AdminState,
    catalog: Option<Arc<dyn Catalog>>,
    auth: weir_control_plane::api::Auth,
) -> Router {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(|| async { "alive\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match catalog {
        Some(c) => r.merge(weir_control_plane::api::segment_routes(c, auth)),
        None => r,
    }
}
