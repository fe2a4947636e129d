//! Building the OTLP source: the gRPC server and the HTTP routes on their addresses.

use tonic::transport::Server;

use super::config::ValidOtlp;
use super::grpc::OtlpGrpc;
use super::http::{router, OtlpHttp};
use crate::contract::{BuildError, Claim, RunningSource, ServeError, SourceContext, ValidSource};
use crate::http::{serve_router, HttpSource};
use crate::listen::bind_tcp;

impl ValidSource for ValidOtlp {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn claims(&self) -> Vec<Claim> {
        self.grpc.iter().chain(&self.http).cloned().collect()
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let cfg = &self.config;
        let max_request_bytes = cfg.max_request_bytes.0 as usize;
        let mut running = RunningSource::new("otlp");
        if let Some(claim) = &self.grpc {
            let (listener, bound) = bind_tcp(claim, "OTLP/gRPC")?;
            let (logs, metrics, traces) = OtlpGrpc::new(
                ctx.ingest.clone(),
                cfg.retry_after.0,
                ctx.keys.clone(),
                cfg.max_row_bytes(),
            )
            .services(max_request_bytes);
            let stop = ctx.shutdown.clone();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            running.serve(&claim.key, bound, async move {
                Server::builder()
                    .add_service(logs)
                    .add_service(metrics)
                    .add_service(traces)
                    .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
                    .await
                    .map_err(|e| ServeError::Server {
                        what: "OTLP/gRPC",
                        message: e.to_string(),
                    })
            });
        }
        if let Some(claim) = &self.http {
            let source = HttpSource::new(OtlpHttp, ctx, cfg.http_limits());
            serve_router(&mut running, ctx, claim, "OTLP/HTTP", router(source))?;
        }
        Ok(running)
    }
}
