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

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weir_pipelines::ingest::Ingest;

use weir_pipelines::{Batch, DecodeBudget};

use super::decode::ExportRequest;
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
        request: ExportRequest,
        size: usize,
    ) -> Result<Accepted, Status> {
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
            let decoded = request.to_arrow(received_at, &budget).map_err(|e| {
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

    /// The tonic services, with gzip and the message size limit.
    pub fn services(
        self,
        max_request_bytes: usize,
    ) -> (
        LogsServiceServer<OtlpGrpc>,
        MetricsServiceServer<OtlpGrpc>,
        TraceServiceServer<OtlpGrpc>,
    ) {
        let logs = LogsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_request_bytes);
        let metrics = MetricsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_request_bytes);
        let traces = TraceServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_request_bytes);
        (logs, metrics, traces)
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

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let tenant = tenant_header(&request);
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = self.handle(tenant, ExportRequest::Logs(req), size).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let tenant = tenant_header(&request);
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = self
            .handle(tenant, ExportRequest::Metrics(req), size)
            .await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = tenant_header(&request);
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = self
            .handle(tenant, ExportRequest::Traces(req), size)
            .await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: a.rejected as i64,
                error_message: a.error.unwrap_or_default(),
            }),
        }))
    }
}
