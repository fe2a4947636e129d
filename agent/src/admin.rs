//! The admin endpoints every role serves: `/healthz`, `/livez`, `/readyz` and `/metrics`
//! (Prometheus text). Roles merge their own routes on top (the segment index of `weir run`,
//! the control-plane API). [`serve`] bounds the listener's connections as the sources' are
//! (`max_connections`, `idle_timeout`, `header_read_timeout`) and the time to read a request's
//! body (`request_timeout`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;
use weir_catalog::Catalog;
use weir_pipelines::buffer::Buffer;
use weir_pipelines::metrics::Metrics;
use weir_sources::conn::{Acceptor, ConnLimits};
use weir_sources::http::{check_header_read_timeout, serve_connections};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    /// The process's metrics.
    pub metrics: Metrics,
    /// True while the role serves; false once shutdown began.
    pub ready: Arc<AtomicBool>,
    /// The buffer of agent roles: health details and the buffer gauges.
    pub buffer: Option<Arc<dyn Buffer>>,
    /// An index that must answer for the role to be ready (control plane, compactor, and
    /// `weir run`'s own); a failed fsync of a sled index also fails `/livez` and `/healthz`.
    pub index: Option<Arc<dyn Catalog>>,
}

impl Admin {
    /// Admin state for a role, ready from the start.
    pub fn new(metrics: Metrics) -> Admin {
        Admin {
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
            buffer: None,
            index: None,
        }
    }

    /// Marks the role ready or not (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The health, readiness and metrics routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }
}

impl Admin {
    /// Why the buffer stopped acknowledging writes, if it did.
    fn buffer_failure(&self) -> Option<String> {
        self.buffer.as_ref().and_then(|b| b.failure())
    }

    /// Why the index stopped answering, if it did (a failed fsync of the sled index).
    fn index_failure(&self) -> Option<String> {
        self.index.as_ref().and_then(|i| i.failure())
    }
}

async fn healthz(State(s): State<Admin>) -> impl IntoResponse {
    let failure = s.buffer_failure();
    let index_failure = s.index_failure();
    let status = match (failure.as_ref().or(index_failure.as_ref()), s.is_ready()) {
        (Some(_), _) => "failed",
        (None, true) => "ok",
        (None, false) => "shutting_down",
    };
    let mut body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(buffer) = &s.buffer {
        let stats = buffer.stats();
        body["buffer"] = serde_json::json!({
            "bytes": stats.bytes,
            "entries": stats.entries,
            "corrupt_entries": buffer.corrupt_entries(),
            "failure": failure,
        });
        // Segments the control plane refused for good: in the lake, not in the index. Counts
        // only (the gauges the outbox keeps): the reasons name tenants and keys, so they are
        // in the agent's log, not on this unauthenticated route.
        let refused = s.metrics.outbox.refused_segments.get();
        body["outbox"] = serde_json::json!({
            "waiting": s.metrics.outbox.segments.get(),
            "refused": refused,
        });
        if refused > 0 && status == "ok" {
            body["status"] = "degraded".into();
        }
    }
    if let Some(reason) = &index_failure {
        body["index"] = serde_json::json!({ "failure": reason });
    }
    let tail = s.metrics.tail.states();
    if !tail.is_empty() {
        body["tail"] = serde_json::json!(tail
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>());
    }
    Json(body)
}

/// Alive unless the buffer (or the sled index) stopped after a failed fsync: then only a restart
/// (which reopens it and replays what is on disk) brings the agent back, so the liveness
/// probe says so.
async fn livez(State(s): State<Admin>) -> impl IntoResponse {
    if let Some(reason) = s.index_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: the index stopped after a failed fsync ({reason}); restart to reopen it\n"),
        );
    }
    match s.buffer_failure() {
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: the buffer stopped after a failed fsync ({reason}); restart to reopen it\n"),
        ),
        None => (StatusCode::OK, "alive\n".to_string()),
    }
}

async fn readyz(State(s): State<Admin>) -> impl IntoResponse {
    if let Some(reason) = s.buffer_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the buffer stopped after a failed fsync ({reason})\n"),
        );
    }
    if !s.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_string(),
        );
    }
    match &s.index {
        Some(index) => match index.lookup(&[]).await {
            Ok(_) => (StatusCode::OK, "ready\n".to_string()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
        },
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(State(s): State<Admin>) -> impl IntoResponse {
    if let Some(buffer) = &s.buffer {
        let stats = buffer.stats();
        s.metrics.buffer_bytes.set(stats.bytes as i64);
        s.metrics.buffer_entries.set(stats.entries as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// A bound listener for `key`.
pub async fn bind(key: &str, address: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {key} = {address}"))
}

/// How an admin or API listener bounds its connections: as every source's listener does
/// (`weir_sources::conn`), `max_connections` and `idle_timeout`, and an HTTP/1
/// `header_read_timeout`; and, as the HTTP sources do, a `request_timeout` on reading a
/// request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Open connections and their idle bound.
    pub conn: ConnLimits,
    /// Longest wait for a request's headers.
    pub header_read_timeout: Duration,
    /// Longest wait for a request's body, from the end of its headers.
    pub request_timeout: Duration,
}

impl ListenerLimits {
    /// The limits of the four keys.
    pub fn new(
        max_connections: usize,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        request_timeout: Duration,
    ) -> ListenerLimits {
        ListenerLimits {
            conn: ConnLimits {
                max_connections,
                idle_timeout,
            },
            header_read_timeout,
            request_timeout,
        }
    }

    /// Checks `{prefix}.max_connections`, `{prefix}.idle_timeout`,
    /// `{prefix}.header_read_timeout` and `{prefix}.request_timeout` as the sources' are
    /// checked.
    pub fn check(&self, problems: &mut Vec<String>, prefix: &str) {
        self.conn.check(problems, prefix);
        check_header_read_timeout(problems, prefix, self.header_read_timeout);
        if self.request_timeout.is_zero() {
            problems.push(format!("{prefix}.request_timeout must be above 0"));
        }
    }
}

/// Where a listener counts the connections it refuses: `weir_rejected_requests_total` with
/// `source` (`admin`, `control_plane`, also the prefix of the listener's keys) and the reason
/// (`too_many_connections`, `idle_timeout`, `accept_error`, `timeout`).
pub struct Counted {
    /// The `source` label.
    pub source: &'static str,
    /// The process's metrics.
    pub metrics: Metrics,
}

/// Serves `app` on `listener` within `limits` until `stop`, then stops accepting and lets
/// in-flight requests finish.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
    what: &'static str,
    limits: ListenerLimits,
    counted: Counted,
) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        info!(%address, max_connections = limits.conn.max_connections, "{what} listening");
    }
    let bound = BodyBound {
        timeout: limits.request_timeout,
        source: counted.source,
        metrics: counted.metrics.clone(),
    };
    let app = app.layer(axum::middleware::from_fn_with_state(bound, bound_body));
    let acceptor = Acceptor::new(listener, counted.source, counted.metrics, limits.conn);
    tokio::spawn(serve_connections(
        acceptor,
        app,
        limits.header_read_timeout,
        stop,
    ))
}

/// What [`bound_body`] bounds a request's body with.
#[derive(Clone)]
struct BodyBound {
    timeout: Duration,
    source: &'static str,
    metrics: Metrics,
}

/// Bounds the time to read a request's body to `request_timeout` from the end of its headers:
/// the body's stream ends in an error at the deadline (so an extractor reading it, such as the
/// API's `Json` bodies read before the token is checked, gives up), and the answer is 408,
/// counted as `reason="timeout"`, with the connection closed. Without this a client trickling
/// a body byte by byte (each byte resetting the idle timer) would hold a connection forever.
async fn bound_body(
    State(bound): State<BodyBound>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::{Body, HttpBody};
    use futures::StreamExt;

    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now() + bound.timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let flag = timed_out.clone();
    let timed = futures::stream::unfold(Some(body.into_data_stream()), move |stream| {
        let flag = flag.clone();
        async move {
            let mut stream = stream?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(stream))),
                Ok(None) => None,
                Err(_) => {
                    flag.store(true, Ordering::Relaxed);
                    Some((
                        Err(axum::Error::new("request body timed out (request_timeout)")),
                        None,
                    ))
                }
            }
        }
    });
    let response = next
        .run(axum::extract::Request::from_parts(
            parts,
            Body::from_stream(timed),
        ))
        .await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    bound.metrics.rejected_request(bound.source, "timeout");
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        format!(
            "request body not received within {}.request_timeout ({})\n",
            bound.source,
            humantime::format_duration(bound.timeout)
        ),
    )
        .into_response()
}
