//! OTLP/gRPC: the logs, metrics and trace `Export` services, gzip accepted.
//!
//! Statuses follow the OTLP spec: `INVALID_ARGUMENT` for a request that cannot be mapped,
//! `RESOURCE_EXHAUSTED` with `RetryInfo` (retryable) when the buffer is full,
//! `UNAVAILABLE` when the agent cannot store data, partial success in the response when
//! records were refused. Messages above `sources.otlp.max_request_bytes` (after gzip) are
//! refused by tonic with `OUT_OF_RANGE` naming the limit, which clients do not retry. A
//! request whose rows would be over `sources.otlp.max_row_bytes` is refused whole with
//! `RESOURCE_EXHAUSTED` without `RetryInfo`: the gRPC peer of OTLP/HTTP's 413 in the one
//! refusal table ([`Refusal::TooLarge`]), which the OTLP spec makes non-retryable when no
//! `RetryInfo` says the server may recover (`INVALID_ARGUMENT` would call a well-formed
//! request malformed).
//!
//! The services take the message's bytes undecoded ([`RawCodec`]) and decode them like
//! OTLP/HTTP's protobuf bodies ([`decode_to_arrow`]): logs and spans straight from the wire
//! into the builders under the row budget, only after the request has its decode permit. A
//! prost decode in tonic, before any of our checks, turned 16 MiB of empty log records (two
//! bytes each on the wire) into some 2 GB of structs, for as many requests as arrived at once.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio::sync::Semaphore;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf,
    Encoder,
};
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::{Batch, DecodeBudget, Signal};

use super::decode::{decode_to_arrow, Encoding};
use super::http::ROW_LIMIT_KEY;
use crate::auth::ApiKeys;
use crate::http::{Accepted, HttpLimits, Refusal};
use crate::{now_nanos, TENANT_HEADER};

/// Source name in metrics and buffer entries.
pub const SOURCE: &str = "otlp_grpc";

/// The three OTLP services over one ingest handle.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Ingest,
    retry_after: Duration,
    keys: ApiKeys,
    budget: DecodeBudget,
    decodes: Arc<Semaphore>,
    request_timeout: Duration,
}

impl OtlpGrpc {
    /// Services writing to `ingest`; the rows of one request may take `max_row_bytes`, at
    /// most `limits.max_concurrent_decodes` requests are decoded at once, and one that waits
    /// longer than `limits.request_timeout` for its turn gets `UNAVAILABLE` (retryable).
    pub fn new(ingest: Ingest, keys: ApiKeys, limits: &HttpLimits) -> OtlpGrpc {
        OtlpGrpc {
            ingest,
            retry_after: limits.retry_after,
            keys,
            budget: DecodeBudget::new(limits.max_row_bytes, ROW_LIMIT_KEY),
            decodes: Arc::new(Semaphore::new(limits.max_concurrent_decodes.max(1))),
            request_timeout: limits.request_timeout,
        }
    }

    async fn handle(
        &self,
        tenant_header: (Option<Vec<u8>>, Option<String>),
        signal: Signal,
        body: Bytes,
    ) -> Result<Accepted, Status> {
        let size = body.len();
        let received_at = now_nanos();
        let (org_id, key) = tenant_header;
        let tenant = self
            .keys
            .tenant(key.as_deref(), org_id.as_deref())
            .map_err(|e| {
                self.ingest.reject(SOURCE, e.reason());
                status(Refusal::of_auth(&e), e.to_string(), self.retry_after)
            })?;
        let decodes = self.decodes.clone();
        let permit = tokio::time::timeout(self.request_timeout, decodes.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                self.ingest.reject(SOURCE, "busy");
                status(
                    Refusal::Unavailable,
                    format!(
                        "no decoder free within request_timeout ({}): max_concurrent_decodes requests are being decoded",
                        humantime::format_duration(self.request_timeout)
                    ),
                    self.retry_after,
                )
            })?;
        let ingest = self.ingest.clone();
        let budget = self.budget;
        let result = tokio::task::spawn_blocking(move || {
            let decoded = decode_to_arrow(signal, Encoding::Protobuf, &body, received_at, &budget);
            drop(body);
            let decoded = decoded.map_err(|e| {
                let (refusal, reason, message) = e.refusal();
                ingest.reject(SOURCE, reason);
                (refusal, message)
            })?;
            // The rows are built: the permit bounds decoding, not the buffer write, so
            // concurrent writes still share a group-commit fsync.
            drop(permit);
            ingest
                .metrics()
                .rejected_records(SOURCE, decoded.signal, decoded.rejected);
            if let Some(records) = decoded.records {
                let batch = Batch::new(tenant, decoded.signal, SOURCE, received_at, records);
                ingest
                    .write_request(batch, size)
                    .map_err(|e| (Refusal::of_ingest(&e), e.to_string()))?;
            }
            Ok(Accepted {
                rejected: decoded.rejected,
                error: decoded.error,
                headers: Vec::new(),
            })
        })
        .await
        .map_err(|e| Status::unavailable(format!("request task failed: {e}")))?;
        result.map_err(|(refusal, m)| status(refusal, m, self.retry_after))
    }

    /// The three Export services, with gzip and the message size limit.
    pub fn services(
        self,
        max_request_bytes: usize,
    ) -> (
        ExportServer<LogsExport>,
        ExportServer<MetricsExport>,
        ExportServer<TracesExport>,
    ) {
        let otlp = Arc::new(self);
        (
            ExportServer::new(otlp.clone(), max_request_bytes),
            ExportServer::new(otlp.clone(), max_request_bytes),
            ExportServer::new(otlp, max_request_bytes),
        )
    }
}

/// One OTLP `Export` service: its gRPC name, signal and response.
pub trait ExportKind: Send + Sync + 'static {
    /// The gRPC service name (`opentelemetry.proto.collector.logs.v1.LogsService`).
    const NAME: &'static str;
    /// The full path of its one method.
    const PATH: &'static str;
    /// The signal of its requests.
    const SIGNAL: Signal;
    /// Its response message.
    type Response: prost::Message + Send + 'static;
    /// The response to an accepted request (partial success when records were refused).
    fn respond(a: Accepted) -> Self::Response;
}

/// `LogsService/Export`.
pub struct LogsExport;

impl ExportKind for LogsExport {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
    type Response = ExportLogsServiceResponse;
    fn respond(a: Accepted) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }
    }
}

/// `MetricsService/Export`.
pub struct MetricsExport;

impl ExportKind for MetricsExport {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const SIGNAL: Signal = Signal::Metrics;
    type Response = ExportMetricsServiceResponse;
    fn respond(a: Accepted) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }
    }
}

/// `TraceService/Export`.
pub struct TracesExport;

impl ExportKind for TracesExport {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Traces;
    type Response = ExportTraceServiceResponse;
    fn respond(a: Accepted) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }
    }
}

/// A gRPC codec that hands the service the request message's bytes (after gRPC framing and
/// gzip, within the message size limit) and encodes the response with prost.
pub struct RawCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<R: prost::Message + Send + 'static> Codec for RawCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// The request message's bytes, as they are.
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A response message, encoded with prost.
pub struct ResponseEncoder<R>(PhantomData<fn() -> R>);

impl<R: prost::Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

/// The tower service of one OTLP `Export` service, routed by tonic under its name.
pub struct ExportServer<K> {
    otlp: Arc<OtlpGrpc>,
    max_request_bytes: usize,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ExportServer<K> {
    fn clone(&self) -> Self {
        ExportServer {
            otlp: self.otlp.clone(),
            max_request_bytes: self.max_request_bytes,
            kind: PhantomData,
        }
    }
}

impl<K: ExportKind> ExportServer<K> {
    fn new(otlp: Arc<OtlpGrpc>, max_request_bytes: usize) -> Self {
        ExportServer {
            otlp,
            max_request_bytes,
            kind: PhantomData,
        }
    }
}

impl<K: ExportKind> NamedService for ExportServer<K> {
    const NAME: &'static str = K::NAME;
}

impl<K: ExportKind, B> Service<http::Request<B>> for ExportServer<K>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != K::PATH {
            let path = req.uri().path().to_string();
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("no method {path}")).into_http())
            });
        }
        let method = ExportMethod::<K>(self.otlp.clone(), PhantomData);
        let max = self.max_request_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec::<K::Response>::default())
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// The `Export` method: the request's bytes to [`OtlpGrpc::handle`].
struct ExportMethod<K>(Arc<OtlpGrpc>, PhantomData<fn() -> K>);

impl<K: ExportKind> UnaryService<Bytes> for ExportMethod<K> {
    type Response = K::Response;
    type Future = BoxFuture<Response<K::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let otlp = self.0.clone();
        Box::pin(async move {
            let tenant = tenant_header(&request);
            let a = otlp.handle(tenant, K::SIGNAL, request.into_inner()).await?;
            Ok(Response::new(K::respond(a)))
        })
    }
}

/// The gRPC status of a refusal (the table in [`Refusal::grpc_code`]); a full buffer carries
/// `RetryInfo` so that exporters retry after `retry_after`.
fn status(refusal: Refusal, message: String, retry_after: Duration) -> Status {
    if refusal == Refusal::Full {
        Status::with_error_details(
            refusal.grpc_code(),
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        )
    } else {
        Status::new(refusal.grpc_code(), message)
    }
}

fn tenant_header<T>(req: &Request<T>) -> (Option<Vec<u8>>, Option<String>) {
    let md = req.metadata();
    let org = md.get(TENANT_HEADER).map(|v| v.as_bytes().to_vec());
    let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let key = text("authorization")
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
                .map(str::to_string)
        })
        .or_else(|| text("x-api-key"));
    (org, key)
}
