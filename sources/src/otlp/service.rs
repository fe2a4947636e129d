//! Building the OTLP source: the gRPC server and the HTTP routes on their addresses.

use std::time::Duration;

use tonic::transport::Server;

use super::config::ValidOtlp;
use super::grpc::{self, OtlpGrpc};
use super::http::{router, OtlpHttp};
use crate::conn::Acceptor;
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
        let limits = cfg.http_limits();
        if let Some(claim) = &self.grpc {
            let (listener, bound) = bind_tcp(claim, "OTLP/gRPC")?;
            let (logs, metrics, traces) =
                OtlpGrpc::new(ctx.ingest.clone(), ctx.keys.clone(), &limits)
                    .services(max_request_bytes);
            let stop = ctx.shutdown.clone();
            // Accept errors backed off and counted, `max_connections`, `idle_timeout`.
            let incoming = Acceptor::new(listener, grpc::SOURCE, ctx.ingest.metrics().clone(), limits.conn)
                .into_stream(stop.clone());
            let concurrency = limits.max_concurrent_decodes;
            let timeout = limits.request_timeout.saturating_mul(2);
            running.serve(&claim.key, bound, async move {
                Server::builder()
                    // One connection's requests wait past this many (their messages unread).
                    .concurrency_limit_per_connection(concurrency)
                    // A request not answered in time (a message trickled in) is cancelled.
                    .timeout(timeout)
                    // Pings find dead peers; a live exporter's answers keep it from idling.
                    .http2_keepalive_interval(Some(Duration::from_secs(60)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
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
            let source = HttpSource::new(OtlpHttp, ctx, limits.clone());
            let (what, name) = ("OTLP/HTTP", super::http::SOURCE);
            serve_router(
                &mut running,
                ctx,
                claim,
                what,
                name,
                &limits,
                router(source),
            )?;
        }
        Ok(running)
    }
}
