//! The one request path of the HTTP sources (OTLP/HTTP, Loki, Datadog):
//!
//! 1. content type → the protocol's [`Protocol::Format`] (415 otherwise);
//! 2. API key and `X-Scope-OrgID` → tenant (401/403/400);
//! 3. `Content-Encoding` among the protocol's codings (415 otherwise);
//! 4. the body, read up to `max_request_bytes` (413) within `request_timeout` (408);
//! 5. decompression (bounded by the same limit) and decoding, off the async threads, at most
//!    `max_concurrent_decodes` at once (a request that waits longer than `request_timeout`
//!    for its turn gets 503); the rows of one request are bounded by `max_row_bytes` (413
//!    when a value sent once is copied to so many rows that they would be larger);
//! 6. the buffer write, whose fate becomes the response: success in the protocol's shape, or
//!    a [`Refusal`] mapped once to HTTP and OTLP/gRPC statuses ([`Refusal::status`],
//!    [`Refusal::grpc_code`]), with `Retry-After` on retryable ones.
//!
//! Each protocol supplies only its formats, its decoder, its success response and its error
//! body shape ([`ErrorBody`]).

pub mod body;
mod config;
pub mod error;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use weir_pipelines::ingest::{Ingest, IngestError};
use weir_pipelines::{Batch, DecodeBudget, OverBudget, Signal};

use crate::auth::{ApiKeys, AuthError};
use crate::conn::{Acceptor, ConnLimits};
use crate::contract::{BuildError, Claim, RunningSource, ServeError, SourceContext, ValidSource};
use crate::listen::bind_tcp;
use crate::{now_nanos, TENANT_HEADER};
pub use body::{BodyError, Coding};
pub use config::{HttpSourceConfig, HttpSourceKind};
pub use error::{ErrorBody, SourceError};

/// Why a request was refused, independent of the protocol. The one table from a refusal to
/// HTTP and gRPC statuses lives here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed (400 / INVALID_ARGUMENT).
    BadRequest,
    /// No API key (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// The key has no rights (403 / PERMISSION_DENIED).
    Forbidden,
    /// The body took longer than `request_timeout` (408 / DEADLINE_EXCEEDED).
    Timeout,
    /// The body is over the limit, its rows are over the request's budget, or it can never
    /// fit the buffer (413 / RESOURCE_EXHAUSTED without retry).
    TooLarge,
    /// Unknown content type or encoding (415 / INVALID_ARGUMENT).
    Unsupported,
    /// The buffer is full: retry later (429 / RESOURCE_EXHAUSTED with RetryInfo).
    Full,
    /// The agent cannot store data now (503 / UNAVAILABLE).
    Unavailable,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Full => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code (`google.rpc.Code`), as OTLP maps them.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Refusal::BadRequest | Refusal::Unsupported => tonic::Code::InvalidArgument,
            Refusal::Unauthenticated => tonic::Code::Unauthenticated,
            Refusal::Forbidden => tonic::Code::PermissionDenied,
            Refusal::Timeout => tonic::Code::DeadlineExceeded,
            Refusal::TooLarge | Refusal::Full => tonic::Code::ResourceExhausted,
            Refusal::Unavailable => tonic::Code::Unavailable,
        }
    }

    /// Whether the client should retry later (and gets `Retry-After`).
    pub fn retryable(self) -> bool {
        matches!(self, Refusal::Full | Refusal::Unavailable)
    }

    /// The refusal of a buffer write.
    pub fn of_ingest(e: &IngestError) -> Refusal {
        match e {
            IngestError::Full(_) | IngestError::Busy(_) => Refusal::Full,
            IngestError::TooLarge(_) => Refusal::TooLarge,
            IngestError::TooManyPartitions { .. } => Refusal::BadRequest,
            _ => Refusal::Unavailable,
        }
    }

    /// The refusal of a failed authentication.
    pub fn of_auth(e: &AuthError) -> Refusal {
        match e {
            AuthError::Missing => Refusal::Unauthenticated,
            AuthError::Invalid | AuthError::WrongTenant(_) => Refusal::Forbidden,
            AuthError::BadTenant(_) => Refusal::BadRequest,
        }
    }

    /// The refusal of a body that could not be read.
    pub fn of_body(e: &BodyError) -> Refusal {
        match e {
            BodyError::TooLarge(_) => Refusal::TooLarge,
            BodyError::Invalid(_) => Refusal::BadRequest,
            BodyError::Unsupported(_) => Refusal::Unsupported,
        }
    }
}

/// Why a decoder refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    /// The body is malformed; the message names the problem (400 / INVALID_ARGUMENT).
    #[error("{0}")]
    Malformed(String),
    /// Its rows would be over the request's budget (413 / RESOURCE_EXHAUSTED).
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
}

impl From<String> for DecodeFailure {
    fn from(message: String) -> DecodeFailure {
        DecodeFailure::Malformed(message)
    }
}

impl From<&str> for DecodeFailure {
    fn from(message: &str) -> DecodeFailure {
        DecodeFailure::Malformed(message.to_string())
    }
}

impl DecodeFailure {
    /// The refusal, the reason it is counted under, and the message.
    pub fn refusal(self) -> (Refusal, &'static str, String) {
        match self {
            DecodeFailure::Malformed(m) => (Refusal::BadRequest, "malformed", m),
            DecodeFailure::OverBudget(e) => {
                (Refusal::TooLarge, "too_many_row_bytes", e.to_string())
            }
        }
    }
}

/// A decoded request, ready for the buffer.
#[derive(Debug)]
pub struct Decoded {
    /// Signal of the rows.
    pub signal: Signal,
    /// The rows; `None` when the request carries nothing to store.
    pub records: Option<RecordBatch>,
    /// Records refused inside the request (OTLP partial success).
    pub rejected: u64,
    /// Why the first one was refused.
    pub error: Option<String>,
    /// Headers of the success response that depend on the request (remote write 2.0's
    /// written counts).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Things received that are not rows, by kind (remote write samples, stale markers), counted
    /// in `weir_received_records_total{signal=<kind>}` once the request is accepted.
    pub counted: Vec<(&'static str, u64)>,
}

impl Decoded {
    /// Rows of one signal, none refused.
    pub fn rows(signal: Signal, records: RecordBatch) -> Decoded {
        Decoded {
            signal,
            records: Some(records),
            rejected: 0,
            error: None,
            headers: Vec::new(),
            counted: Vec::new(),
        }
    }
}

/// What a request's decoder reports as refused inside an accepted request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Records refused.
    pub rejected: u64,
    /// Why the first one was refused.
    pub error: Option<String>,
    /// Headers for the success response ([`Decoded::headers`]).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// One HTTP protocol: everything that differs between OTLP/HTTP, Loki and Datadog.
pub trait Protocol: Send + Sync + 'static {
    /// Which endpoint a route serves (`/v1/logs`, `/api/v2/series`, ...).
    type Endpoint: Copy + Send + Sync + 'static;
    /// The body format chosen by content type.
    type Format: Copy + Send + Sync + 'static;

    /// Source name in metrics and buffer entries.
    const SOURCE: &'static str;
    /// Key of the body limit, named in messages.
    const LIMIT_KEY: &'static str;
    /// Key of the limit on a request's rows ([`HttpLimits::max_row_bytes`]), named in messages.
    const ROW_LIMIT_KEY: &'static str;

    /// The body format of a request; the error names what is supported (415).
    fn format(&self, endpoint: Self::Endpoint, headers: &HeaderMap)
        -> Result<Self::Format, String>;

    /// The shape of error bodies (`format` is `None` until the content type is known).
    fn error_body(&self, format: Option<Self::Format>) -> ErrorBody;

    /// Whether the protocol's senders retry only 5xx (Prometheus remote write retries 429
    /// only when configured to): then a full buffer and a slow body are 503 instead of 429
    /// and 408, so that the default sender retries instead of dropping the data.
    fn retries_only_5xx(&self) -> bool {
        false
    }

    /// The content codings accepted besides identity, and the coding of a body that names
    /// none (Loki's protobuf bodies are snappy blocks without a `Content-Encoding`).
    fn codings(
        &self,
        endpoint: Self::Endpoint,
        format: Self::Format,
    ) -> (&'static [Coding], Coding);

    /// The API key of a request, when the protocol has its own header or query parameter
    /// besides `Authorization: Bearer` and `X-API-Key`.
    fn api_key<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Cow<'a, str>> {
        let _ = query;
        ApiKeys::key_from_headers(headers, &[]).map(Cow::Borrowed)
    }

    /// Decodes a (decompressed) body. Blocking: runs off the async threads. The error is
    /// a 400 whose message names the problem, or a 413 when the rows are over `budget`
    /// (checked while they are built, after each record).
    fn decode(
        &self,
        endpoint: Self::Endpoint,
        format: Self::Format,
        body: &[u8],
        received_at: i64,
        budget: &DecodeBudget,
    ) -> Result<Decoded, DecodeFailure>;

    /// The success response.
    fn respond(
        &self,
        endpoint: Self::Endpoint,
        format: Self::Format,
        signal: Signal,
        accepted: Accepted,
    ) -> Response;
}

/// Limits of an HTTP source.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest body, compressed or decompressed.
    pub max_request_bytes: usize,
    /// Largest size of the rows one request decodes to.
    pub max_row_bytes: usize,
    /// Longest wait for a request's body, and for its turn to be decoded.
    pub request_timeout: Duration,
    /// Requests decoded at once.
    pub max_concurrent_decodes: usize,
    /// `Retry-After` on retryable refusals.
    pub retry_after: Duration,
    /// Open connections and their idle bound.
    pub conn: ConnLimits,
    /// Longest wait for a request's headers (HTTP/1), counted from the connection's first
    /// bytes or the end of the previous response: a slower client, or a keep-alive connection
    /// idle that long, is closed (a connection that sends nothing is left to the idle timeout).
    pub header_read_timeout: Duration,
}

impl HttpLimits {
    /// Checks the limits of the source at `prefix` (`sources.loki`).
    pub fn check(&self, problems: &mut Vec<String>, prefix: &str) {
        crate::contract::at_least(
            problems,
            &format!("{prefix}.max_request_bytes"),
            self.max_request_bytes as u64,
            1024,
            "1KiB",
        );
        if self.request_timeout.is_zero() {
            problems.push(format!("{prefix}.request_timeout must be above 0"));
        }
        if self.max_concurrent_decodes == 0 {
            problems.push(format!(
                "{prefix}.max_concurrent_decodes must be at least 1"
            ));
        }
        check_header_read_timeout(problems, prefix, self.header_read_timeout);
        self.conn.check(problems, prefix);
    }
}

/// Checks `{prefix}.header_read_timeout`: at least 1s.
pub fn check_header_read_timeout(problems: &mut Vec<String>, prefix: &str, timeout: Duration) {
    if timeout < Duration::from_secs(1) {
        problems.push(format!("{prefix}.header_read_timeout must be at least 1s"));
    }
}

/// An HTTP source: a protocol and what its requests go through.
pub struct HttpSource<P: Protocol> {
    /// The protocol.
    pub protocol: P,
    /// Where batches go.
    pub ingest: Ingest,
    /// API keys → tenants.
    pub keys: ApiKeys,
    /// Limits.
    pub limits: HttpLimits,
    decodes: Arc<Semaphore>,
    /// Bytes of bodies held (being read, waiting for a decoder, decoded), in
    /// [`body::BODY_UNIT`]s: [`body_budget`] of them.
    bodies: Arc<Semaphore>,
}

/// Bytes of request bodies one HTTP source holds at once (being read, waiting for a decoder,
/// being decoded): four bodies of `max_request_bytes` per decoder. Past it, reading bodies
/// waits (TCP backpressure) until a decode ends, so slow large bodies on many connections are
/// not all held in memory at once (each is still bounded by `request_timeout`).
pub fn body_budget(limits: &HttpLimits) -> usize {
    limits
        .max_request_bytes
        .saturating_mul(4)
        .saturating_mul(limits.max_concurrent_decodes.max(1))
}

/// The default of `max_row_bytes` (OTLP, Loki, Datadog, Fluent): 8 × the request (or frame)
/// limit, within 1 MiB ..= 1 GiB.
pub fn default_max_row_bytes(max_request_bytes: u64) -> u64 {
    max_request_bytes
        .saturating_mul(8)
        .clamp(1 << 20, weir_pipelines::budget::MAX_DECODE_BUDGET)
}

/// Checks a `max_row_bytes` key: at least 1 MiB (as remote write's), at most 1 GiB (so that
/// one string column of a request's rows stays far from the 2 GiB its offsets can address).
pub(crate) fn check_row_bytes(problems: &mut Vec<String>, key: &str, value: u64) {
    crate::contract::at_least(problems, key, value, 1 << 20, "1MiB");
    if value > weir_pipelines::budget::MAX_DECODE_BUDGET {
        problems.push(format!(
            "{key} = {} is above 1GiB (one string column of a batch must stay under 2GiB)",
            weir_pipelines::units::ByteSize(value)
        ));
    }
}

/// The default of `header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `request_timeout` of the HTTP sources (and of the admin and API listeners).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of `max_concurrent_decodes`, sized from memory: a quarter of the memory the
/// agent may use (the cgroup's `memory.max`, else `MemTotal`) divided by what one decode may
/// hold at once (the body as received and decompressed, 2 × `max_request_bytes`, plus its
/// rows, `max_row_bytes`), at least 1 and at most two per core. So a burst of large bodies
/// waits for its turn instead of holding every decoded body in memory at the same time: with
/// the defaults (16 MiB bodies, 128 MiB of rows) a decode may hold 160 MiB, and a 1 GiB
/// container decodes one request at a time.
pub fn max_concurrent_decodes(max_request_bytes: usize, max_row_bytes: usize) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4);
    decodes_for_memory(memory_bytes(), max_request_bytes, max_row_bytes, cores)
}

/// [`max_concurrent_decodes`] for `memory` bytes (unknown: two per core).
fn decodes_for_memory(
    memory: Option<u64>,
    max_request_bytes: usize,
    max_row_bytes: usize,
    cores: usize,
) -> usize {
    let Some(memory) = memory else {
        return cores.max(1);
    };
    let per_decode = (max_request_bytes as u64)
        .saturating_mul(2)
        .saturating_add(max_row_bytes as u64)
        .max(1);
    let fit = (memory / 4 / per_decode).min(usize::MAX as u64) as usize;
    fit.clamp(1, cores.max(1))
}

/// The memory the agent may use: the cgroup v2 limit when there is one, else `MemTotal`;
/// read once.
fn memory_bytes() -> Option<u64> {
    static MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(|| {
        let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb.saturating_mul(1024))
        });
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        match (cgroup, total) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        }
    })
}

impl<P: Protocol> HttpSource<P> {
    /// A source for `protocol` writing to `ctx`'s ingest handle.
    pub fn new(protocol: P, ctx: &SourceContext, limits: HttpLimits) -> Arc<HttpSource<P>> {
        let decodes = Arc::new(Semaphore::new(limits.max_concurrent_decodes.max(1)));
        let units = body_budget(&limits)
            .div_ceil(body::BODY_UNIT)
            .clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(HttpSource {
            protocol,
            ingest: ctx.ingest.clone(),
            keys: ctx.keys.clone(),
            limits,
            decodes,
            bodies: Arc::new(Semaphore::new(units)),
        })
    }

    /// A refusal in the protocol's error shape; a non-empty `reason` is counted for the
    /// source (buffer refusals are counted by `Ingest` and pass `""`).
    pub fn refuse(
        &self,
        format: Option<P::Format>,
        refusal: Refusal,
        reason: &str,
        message: String,
    ) -> SourceError {
        let refusal = match refusal {
            Refusal::Full | Refusal::Timeout if self.protocol.retries_only_5xx() => {
                Refusal::Unavailable
            }
            other => other,
        };
        let e = SourceError::new(
            &self.ingest,
            P::SOURCE,
            self.protocol.error_body(format),
            refusal,
            reason,
            message,
        );
        if refusal.retryable() {
            e.with_retry_after(self.limits.retry_after)
        } else {
            e
        }
    }

    fn body_refusal(&self, format: Option<P::Format>, e: BodyError) -> SourceError {
        let reason = match e {
            BodyError::TooLarge(_) => "too_large",
            BodyError::Invalid(_) => "decompress",
            BodyError::Unsupported(_) => "content_encoding",
        };
        self.refuse(format, Refusal::of_body(&e), reason, e.to_string())
    }

    /// Authenticates a request and names its tenant.
    pub fn tenant(
        &self,
        format: Option<P::Format>,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<String, SourceError> {
        let key = self.protocol.api_key(headers, query);
        self.keys
            .tenant(
                key.as_deref(),
                headers.get(TENANT_HEADER).map(|v| v.as_bytes()),
            )
            .map_err(|e| self.refuse(format, Refusal::of_auth(&e), e.reason(), e.to_string()))
    }
}

/// Serves one request of `endpoint` through the whole path (see the module docs).
pub async fn serve_request<P: Protocol>(
    src: Arc<HttpSource<P>>,
    endpoint: P::Endpoint,
    req: Request,
) -> Result<Response, SourceError> {
    let received_at = now_nanos();
    let (parts, body) = req.into_parts();
    let format = src
        .protocol
        .format(endpoint, &parts.headers)
        .map_err(|m| src.refuse(None, Refusal::Unsupported, "content_type", m))?;
    let fmt = Some(format);
    let tenant = src.tenant(fmt, &parts.headers, parts.uri.query())?;
    let (accepted, implicit) = src.protocol.codings(endpoint, format);
    let mut coding =
        body::coding(&parts.headers, accepted).map_err(|e| src.body_refusal(fmt, e))?;
    if coding == Coding::Identity {
        coding = implicit;
    }
    let limit = src.limits.max_request_bytes;
    let budget = DecodeBudget::new(src.limits.max_row_bytes, P::ROW_LIMIT_KEY);
    let read = body::read_within(
        &parts.headers,
        Body::new(body),
        limit,
        P::LIMIT_KEY,
        &src.bodies,
    );
    let (raw, held) = match tokio::time::timeout(src.limits.request_timeout, read).await {
        Ok(r) => r.map_err(|e| src.body_refusal(fmt, e))?,
        Err(_) => {
            return Err(src.refuse(
                fmt,
                Refusal::Timeout,
                "timeout",
                format!(
                    "request body not received within request_timeout ({})",
                    humantime::format_duration(src.limits.request_timeout)
                ),
            ))
        }
    };
    // Decoding holds the decompressed body: at most `max_concurrent_decodes` at once. The
    // permit is released before the buffer write, so concurrent writes still share a
    // group-commit fsync.
    let decodes = src.decodes.clone();
    let permit = match tokio::time::timeout(src.limits.request_timeout, decodes.acquire_owned())
        .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(src.refuse(
                fmt,
                Refusal::Unavailable,
                "busy",
                format!(
                    "no decoder free within request_timeout ({}): max_concurrent_decodes requests are being decoded",
                    humantime::format_duration(src.limits.request_timeout)
                ),
            ))
        }
    };
    let task_src = src.clone();
    let result = tokio::task::spawn_blocking(move || {
        let src = task_src;
        let (body, decoded) = {
            let _permit = permit;
            let _held = held;
            let body = body::decode(raw, coding, limit, P::LIMIT_KEY)
                .map_err(|e| src.body_refusal(fmt, e))?;
            let decoded = src
                .protocol
                .decode(endpoint, format, &body, received_at, &budget)
                .map_err(|e| {
                    let (refusal, reason, message) = e.refusal();
                    src.refuse(fmt, refusal, reason, message)
                })?;
            (body.len(), decoded)
        };
        src.ingest
            .metrics()
            .rejected_records(P::SOURCE, decoded.signal, decoded.rejected);
        if let Some(records) = decoded.records {
            let batch = Batch::new(tenant, decoded.signal, P::SOURCE, received_at, records);
            src.ingest
                .write_request(batch, body)
                .map_err(|e| src.refuse(fmt, Refusal::of_ingest(&e), "", e.to_string()))?;
        }
        for (kind, n) in decoded.counted {
            src.ingest.metrics().received_unstored(P::SOURCE, kind, n);
        }
        Ok::<_, SourceError>((
            decoded.signal,
            Accepted {
                rejected: decoded.rejected,
                error: decoded.error,
                headers: decoded.headers,
            },
        ))
    })
    .await
    .map_err(|e| {
        src.refuse(
            fmt,
            Refusal::Unavailable,
            "internal",
            format!("request task failed: {e}"),
        )
    })?;
    let (signal, accepted) = result?;
    Ok(src.protocol.respond(endpoint, format, signal, accepted))
}

/// Binds a claimed address and serves `router` until the context's shutdown, then lets
/// in-flight requests finish. Connections are bounded as every listener's
/// ([`crate::conn`]: `max_connections`, `idle_timeout`, accept errors backed off), and
/// HTTP/1 request headers must arrive within `header_read_timeout` (the body's bound,
/// `request_timeout`, is [`serve_request`]'s). Failures are counted under `source`.
pub fn serve_router(
    running: &mut RunningSource,
    ctx: &SourceContext,
    claim: &Claim,
    what: &'static str,
    source: &'static str,
    limits: &HttpLimits,
    router: axum::Router,
) -> Result<(), BuildError> {
    let (listener, bound): (TcpListener, _) = bind_tcp(claim, what)?;
    let stop = ctx.shutdown.clone();
    let acceptor = Acceptor::new(listener, source, ctx.ingest.metrics().clone(), limits.conn);
    let header_read_timeout = limits.header_read_timeout;
    running.serve(&claim.key, bound, async move {
        serve_connections(acceptor, router, header_read_timeout, stop).await;
        Ok::<(), ServeError>(())
    });
    Ok(())
}

/// The accept loop of an HTTP listener (the HTTP sources, the admin port, the control plane's
/// API): HTTP/1 and HTTP/2 (prior knowledge) on each connection, within the acceptor's
/// `max_connections` and `idle_timeout`, and HTTP/1 headers within `header_read_timeout`.
/// Once `stop` fires it stops accepting, asks every connection to close after its request in
/// flight, and returns when they have.
pub async fn serve_connections(
    mut acceptor: Acceptor,
    router: axum::Router,
    header_read_timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut conns = tokio::task::JoinSet::new();
    while let Some((io, peer)) = acceptor.accept(&stop).await {
        while conns.try_join_next().is_some() {}
        let (builder, stop) = (builder.clone(), stop.clone());
        let service = TowerToHyperService::new(router.clone());
        conns.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection closed");
            }
        });
    }
    // Stop listening now, then let in-flight requests finish.
    drop(acceptor);
    while conns.join_next().await.is_some() {}
}

/// A validated HTTP source with one listen address (Loki, Datadog): its claim, its limits,
/// and how its routes are made.
pub struct ValidHttp {
    /// Source name (`[sources.<name>]`).
    pub name: &'static str,
    /// What it is, in logs (`Loki push`).
    pub what: &'static str,
    /// The listen address, if set.
    pub address: Option<Claim>,
    /// Limits.
    pub limits: HttpLimits,
    /// The routes, given the context and limits.
    pub router: fn(&SourceContext, HttpLimits) -> axum::Router,
}

impl ValidHttp {
    /// Checks the settings every HTTP source has: the address (`{prefix}.address`) and a body
    /// limit of at least 1 KiB (`{prefix}.max_request_bytes`).
    pub fn check(
        problems: &mut Vec<String>,
        prefix: &str,
        address: &str,
        limits: &HttpLimits,
    ) -> Option<Claim> {
        let claim = crate::contract::claim(problems, &format!("{prefix}.address"), address, false);
        limits.check(problems, prefix);
        claim
    }
}

impl ValidSource for ValidHttp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn claims(&self) -> Vec<Claim> {
        self.address.iter().cloned().collect()
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let mut running = RunningSource::new(self.name);
        if let Some(claim) = &self.address {
            let router = (self.router)(ctx, self.limits.clone());
            serve_router(
                &mut running,
                ctx,
                claim,
                self.what,
                self.name,
                &self.limits,
                router,
            )?;
        }
        Ok(running)
    }
}
