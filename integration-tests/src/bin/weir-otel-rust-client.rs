//! A second real OTLP client for the end-to-end tests: the Rust OpenTelemetry SDK with the
//! `opentelemetry-otlp` gRPC (tonic, gzip) exporters. It sends logs, spans and metrics to
//! `--endpoint` and prints what it sent as JSON, so the test can compare it with the lake.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

#[derive(Parser)]
struct Args {
    /// gRPC endpoint, like http://127.0.0.1:4317.
    #[arg(long)]
    endpoint: String,
    /// Tenant sent as x-scope-orgid metadata.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Log records to send.
    #[arg(long, default_value_t = 50)]
    logs: usize,
}

const SEVERITIES: [(Severity, &str); 4] = [
    (Severity::Info, "INFO"),
    (Severity::Warn, "WARN"),
    (Severity::Error, "ERROR"),
    (Severity::Debug, "DEBUG"),
];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        "x-scope-orgid",
        args.tenant
            .parse()
            .context("tenant is not valid metadata")?,
    );
    let resource = Resource::builder()
        .with_service_name("rust-client")
        .with_attributes([KeyValue::new("deployment.environment", "test")])
        .build();

    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(&args.endpoint)
        .with_metadata(metadata.clone())
        .with_compression(Compression::Gzip)
        .build()?;
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&args.endpoint)
        .with_metadata(metadata.clone())
        .with_compression(Compression::Gzip)
        .build()?;
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(&args.endpoint)
        .with_metadata(metadata)
        .with_compression(Compression::Gzip)
        .build()?;

    let logs = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(log_exporter)
        .build();
    let traces = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();
    let metrics = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(metric_exporter)
        .build();

    let logger = logs.logger("rust.client");
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    for i in 0..args.logs {
        let (sev, text) = SEVERITIES[i % SEVERITIES.len()];
        let mut rec = logger.create_log_record();
        rec.set_timestamp(UNIX_EPOCH + std::time::Duration::from_nanos(base + i as u64));
        rec.set_severity_number(sev);
        rec.set_severity_text(text);
        rec.set_body(AnyValue::from(format!("rust log {i}")));
        rec.add_attribute("i", i as i64);
        rec.add_attribute("kind", "rust");
        logger.emit(rec);
    }

    let tracer = traces.tracer("rust.client");
    let mut parent = tracer.start("rust.parent");
    let parent_ctx = parent.span_context().clone();
    parent.set_attribute(KeyValue::new("job", "e2e"));
    let cx = opentelemetry::Context::current().with_remote_span_context(parent_ctx.clone());
    let mut child = tracer.start_with_context("rust.child", &cx);
    child.add_event("checkpoint", vec![KeyValue::new("step", 1)]);
    let child_ctx = child.span_context().clone();
    child.end();
    parent.end();

    let meter = metrics.meter("rust.client");
    let counter = meter.u64_counter("rust.requests").build();
    counter.add(3, &[KeyValue::new("route", "/a")]);
    counter.add(4, &[KeyValue::new("route", "/a")]);
    let hist = meter.f64_histogram("rust.latency").with_unit("ms").build();
    hist.record(5.0, &[]);
    hist.record(15.0, &[]);
    meter.f64_gauge("rust.temp").build().record(7.5, &[]);

    // Flush and shut down on a blocking thread: the SDK's processors block while the tonic
    // exporters run on this runtime.
    tokio::task::spawn_blocking(move || -> Result<()> {
        logs.force_flush()?;
        traces.force_flush()?;
        metrics.force_flush()?;
        logs.shutdown()?;
        traces.shutdown()?;
        metrics.shutdown()?;
        Ok(())
    })
    .await??;

    println!(
        "{}",
        serde_json::json!({
            "logs": args.logs,
            "trace_id": parent_ctx.trace_id().to_string(),
            "parent_span_id": parent_ctx.span_id().to_string(),
            "child_span_id": child_ctx.span_id().to_string(),
            "first_log_time": base,
        })
    );
    Ok(())
}
